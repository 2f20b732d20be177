"""The streamed pass over parts gives the same statistics and tables as the whole file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import fit_small, run_command

from omlbayes.data import scale, stream
from omlbayes.data.ingest import read_survey
from omlbayes.errors import InputError
from omlbayes.model import estimands
from omlbayes.model import stats as model_stats
from omlbayes.model.design import build_layout, grouped_stats
from omlbayes.model.spec import load_spec
from omlbayes.pipeline import passes

TOL = 1e-10


@pytest.fixture(scope="module")
def parts(small_survey, tmp_path_factory) -> tuple[Path, Path]:
    """The small survey as one CSV and as four Parquet parts of unequal size."""
    frame = pd.read_csv(small_survey)
    folder = tmp_path_factory.mktemp("parts")
    cuts = [0, 200, 650, 1100, len(frame)]
    for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
        frame.iloc[a:b].to_parquet(folder / f"part-{i:03d}.parquet", index=False)
    return small_survey, folder


def _in_memory(path: Path, spec):
    frame = scale.build_index(read_survey(path).frame).frame
    layout = build_layout(frame, spec)
    stats = grouped_stats(frame, layout, spec.response, by=spec.residual_sd_by)
    return frame, layout, stats


def _assert_stats_equal(a, b) -> None:
    assert a.groups == b.groups
    for x, y in zip(a.wtw, b.wtw, strict=True):
        diff = abs(x - y).max() if (x - y).nnz else 0.0
        assert diff <= TOL * max(1.0, abs(x).max())
    np.testing.assert_allclose(a.wty, b.wty, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(a.yty, b.yty, rtol=TOL, atol=TOL)
    np.testing.assert_array_equal(a.n, b.n)


@pytest.mark.parametrize("from_patterns", [True, False], ids=["one pass", "two passes"])
@pytest.mark.parametrize("model", ["flagship", "residual_by_type"])
def test_streamed_statistics_equal_in_memory(parts, model: str, from_patterns: bool) -> None:
    single, folder = parts
    spec = load_spec(model)
    frame, layout, stats = _in_memory(single, spec)
    streamed, s_layout, s_stats = passes.stream_pass(
        folder, spec, chunk_rows=97, from_patterns=from_patterns
    )
    assert s_layout == layout
    _assert_stats_equal(stats, s_stats)
    assert streamed.n_analysed == len(frame)
    whole = scale.build_index(read_survey(single).frame)
    assert streamed.raw_mean == pytest.approx(whole.raw_mean, rel=TOL)
    assert streamed.raw_sd == pytest.approx(whole.raw_sd, rel=TOL)
    assert streamed.age_mean == pytest.approx(whole.age_mean, rel=TOL)
    g_mem = estimands.gcomp_weights(frame, layout, spec)
    g_str = estimands.gcomp_weights(streamed.patterns, s_layout, spec, weight="n")
    np.testing.assert_allclose(g_str["weights"], g_mem["weights"], atol=TOL)
    np.testing.assert_allclose(g_str["pooled"], g_mem["pooled"], atol=TOL)
    np.testing.assert_array_equal(g_str["n"], g_mem["n"])
    assert list(g_str["group"].to_numpy()) == list(g_mem["group"].to_numpy())


def _assert_stats_identical(a, b) -> None:
    assert a.groups == b.groups
    for x, y in zip(a.wtw, b.wtw, strict=True):
        assert (x != y).nnz == 0
    np.testing.assert_array_equal(a.wty, b.wty)
    np.testing.assert_array_equal(a.yty, b.yty)
    np.testing.assert_array_equal(a.n, b.n)


@pytest.mark.parametrize("model", ["flagship", "residual_by_type"])
def test_file_parts_and_batches_give_identical_statistics(parts, model: str) -> None:
    """Exact sums: the file in memory, its parts, and its parts in batches smaller than a
    part give the same statistics bit for bit (what makes the draws the same)."""
    single, folder = parts
    spec = load_spec(model)
    survey = read_survey(single)
    scaled = scale.build_index(survey.frame)
    layout, stats, composition = model_stats.frame_prepared(scaled.frame, survey.levels, spec)
    gcomp = estimands.gcomp_weights(None, layout, spec, composition=composition)
    whole, w_layout, w_stats = passes.stream_pass(folder, spec)
    batched, b_layout, b_stats = passes.stream_pass(folder, spec, batch_rows=37)
    assert layout == w_layout == b_layout
    _assert_stats_identical(stats, w_stats)
    _assert_stats_identical(w_stats, b_stats)
    constants = ("raw_mean", "raw_sd", "age_mean")
    assert [getattr(scaled, c) for c in constants] == [getattr(whole, c) for c in constants]
    assert [getattr(batched, c) for c in constants] == [getattr(whole, c) for c in constants]
    pd.testing.assert_frame_equal(whole.pattern_sums, batched.pattern_sums)
    g_str = estimands.gcomp_weights(whole.patterns, w_layout, spec, weight="n")
    np.testing.assert_array_equal(g_str["weights"], gcomp["weights"])


def test_part_larger_than_the_batch(parts, tmp_path: Path) -> None:
    """One part read in batches of 97 rows (CSV and Parquet): the statistics, sample and
    tables of reading it whole; the two-pass statistics to 1e-10."""
    single, _ = parts
    spec = load_spec("flagship")
    frame = pd.read_csv(single)
    frame.to_parquet(tmp_path / "one.parquet", index=False)
    csv_folder = tmp_path / "csv"
    csv_folder.mkdir()
    frame.to_csv(csv_folder / "one.csv", index=False)
    with (csv_folder / "one.csv").open("a") as fh:
        fh.write(",,,,,,,,,,,,,\n\n")  # trailing blank rows are not rows
    for data in (tmp_path / "one.parquet", csv_folder):
        whole, _, w_stats = passes.stream_pass(data, spec, batch_rows=10**6)
        batched, _, b_stats = passes.stream_pass(data, spec, batch_rows=97)
        _assert_stats_identical(w_stats, b_stats)
        assert whole.n_read == batched.n_read == len(frame)
        assert whole.exclusions == batched.exclusions
        pd.testing.assert_frame_equal(whole.sample, batched.sample)
        for name, table in whole.tables().items():
            other = batched.tables()[name]
            if isinstance(table, pd.Series):
                pd.testing.assert_series_equal(table, other, rtol=TOL)
            else:
                pd.testing.assert_frame_equal(table, other, rtol=TOL, atol=TOL)
        _, _, two_w = passes.stream_pass(data, spec, batch_rows=10**6, from_patterns=False)
        _, _, two_b = passes.stream_pass(data, spec, batch_rows=97, from_patterns=False)
        _assert_stats_equal(two_w, two_b)
        _assert_stats_equal(w_stats, two_b)


def test_errors_in_a_later_batch_name_the_file_row(parts, tmp_path: Path) -> None:
    single, _ = parts
    frame = pd.read_csv(single)
    frame.loc[1000, "item_2"] = 9
    frame.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError, match=r"bad\.csv: column 'item_2' .* in row 1001 "):
        passes.stream_pass(tmp_path, load_spec("flagship"), batch_rows=300)
    twice = pd.concat([frame.iloc[:5], frame.iloc[600:700], frame.iloc[3:4]])
    twice["item_2"] = twice["item_2"].clip(upper=5)
    folder = tmp_path / "dup"
    folder.mkdir()
    twice.to_parquet(folder / "a.parquet", index=False)
    repeated = frame["student_id"].iloc[3]
    with pytest.raises(InputError, match=rf"repeats id '{repeated}' in other rows of this"):
        passes.stream_pass(folder, load_spec("flagship"), batch_rows=50)


def test_streamed_tables_equal_in_memory(parts) -> None:
    single, folder = parts
    spec = load_spec("flagship")
    frame, _, _ = _in_memory(single, spec)
    streamed, _, _ = passes.stream_pass(folder, spec)
    mine, theirs = streamed.tables(), stream.frame_tables(frame)
    for name in ("table1", "items", "reliability", "schools"):
        pd.testing.assert_frame_equal(
            mine[name].reset_index(drop=True),
            theirs[name].reset_index(drop=True),
            check_dtype=False,
            rtol=TOL,
            atol=TOL,
        )
    pd.testing.assert_series_equal(mine["item_total"], theirs["item_total"], rtol=TOL)
    sample = streamed.sample
    assert len(sample) == stream.SAMPLE_ROWS or len(sample) == len(frame)
    again, _, _ = passes.stream_pass(folder, spec)
    pd.testing.assert_frame_equal(again.sample, sample)  # same seed, same rows


def test_duplicate_id_across_parts_is_one_line(parts, tmp_path: Path) -> None:
    _, folder = parts
    first = pd.read_parquet(folder / "part-000.parquet")
    first.iloc[:5].to_parquet(tmp_path / "a.parquet", index=False)
    first.iloc[4:9].to_parquet(tmp_path / "b.parquet", index=False)
    repeated = first["student_id"].iloc[4]
    with pytest.raises(
        InputError, match=rf"b\.parquet: column 'student_id' repeats id '{repeated}'"
    ):
        passes.stream_pass(tmp_path, load_spec("flagship"))


def test_school_in_two_regions_across_parts(parts, tmp_path: Path) -> None:
    _, folder = parts
    a = pd.read_parquet(folder / "part-001.parquet")
    school = a["school_id"].iloc[0]
    b = a[a["school_id"] == school].copy()
    b["student_id"] = b["student_id"].astype(str) + "_b"
    regions = sorted(set(a["region"]) - {b["region"].iloc[0]})
    b["region"] = regions[0]
    a.to_parquet(tmp_path / "a.parquet", index=False)
    b.to_parquet(tmp_path / "b.parquet", index=False)
    with pytest.raises(InputError, match=rf"b\.parquet: column 'region': school '{school}'"):
        passes.stream_pass(tmp_path, load_spec("flagship"))


def test_bad_part_names_the_part(parts, tmp_path: Path) -> None:
    _, folder = parts
    frame = pd.read_parquet(folder / "part-002.parquet")
    frame.to_parquet(tmp_path / "a.parquet", index=False)
    bad = frame.iloc[:10].copy()
    bad["student_id"] = bad["student_id"].astype(str) + "_x"
    bad["item_3"] = bad["item_3"].astype("float64")
    bad.loc[bad.index[3], "item_3"] = 9.0
    bad.to_parquet(tmp_path / "b.parquet", index=False)
    with pytest.raises(InputError) as err:
        passes.stream_pass(tmp_path, load_spec("flagship"))
    message = str(err.value)
    assert message.startswith(str(tmp_path / "b.parquet")) and "\n" not in message


def test_bad_batch_size_is_one_line(parts, tmp_path: Path) -> None:
    _, folder = parts
    result = run_command("fit", "--data", str(folder), "--batch-rows", "0", "--out", str(tmp_path))
    assert result.returncode != 0
    assert "--batch-rows must be at least 1 row, got 0" in result.stderr
    assert "Traceback" not in result.stderr and not list(tmp_path.iterdir())


def test_no_parts_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no survey parts found"):
        stream.list_parts(tmp_path)


@pytest.mark.slow
def test_dask_statistics_equal_streamed_and_in_memory(parts) -> None:
    """Two worker processes on a LocalCluster: the same sums, bit for bit, as one process."""
    single, folder = parts
    spec = load_spec("residual_by_type")
    _, layout, stats = _in_memory(single, spec)
    local, l_layout, l_stats = passes.stream_pass(folder, spec, from_patterns=False)
    lines: list[str] = []
    remote, d_layout, d_stats = passes.dask_pass(
        folder, spec, n_workers=2, progress=lines.append, from_patterns=False
    )
    assert d_layout == l_layout == layout
    _assert_stats_equal(stats, d_stats)
    for a, b in zip(l_stats.wtw, d_stats.wtw, strict=True):
        assert (a != b).nnz == 0
    np.testing.assert_array_equal(l_stats.wty, d_stats.wty)
    np.testing.assert_array_equal(l_stats.yty, d_stats.yty)
    assert (remote.raw_mean, remote.raw_sd, remote.age_mean) == (
        local.raw_mean,
        local.raw_sd,
        local.age_mean,
    )
    pd.testing.assert_frame_equal(remote.sample, local.sample)
    assert any(line.startswith("pass 2: 4/4") for line in lines)
    # one pass (counted patterns, exact sums): bit for bit the statistics of the file
    _, _, one_pass = passes.dask_pass(folder, spec, n_workers=2, batch_rows=150)
    survey = read_survey(single)
    _, exact, _ = model_stats.frame_prepared(
        scale.build_index(survey.frame).frame, survey.levels, spec
    )
    _assert_stats_identical(exact, one_pass)


@pytest.mark.slow
def test_fit_of_parts_equals_fit_of_the_file(parts, small_run, tmp_path: Path) -> None:
    """scripts/fit.py on the parts: the file's tables, and the same posterior (same seed)."""
    single_run, _ = small_run
    _, folder = parts
    result = fit_small(folder, tmp_path, "parts")
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "parts"
    for name in ("table1.csv", "items.csv", "reliability.csv", "schools.csv", "item_total.csv"):
        pd.testing.assert_frame_equal(
            pd.read_csv(run / name), pd.read_csv(single_run / name), rtol=TOL, atol=TOL
        )
    # exact sums: the same statistics bit for bit, so the same seed gives the same draws
    mine = xr.open_datatree(run / "posterior.nc", engine="h5netcdf")["posterior"].to_dataset()
    theirs = xr.open_datatree(single_run / "posterior.nc", engine="h5netcdf")["posterior"]
    xr.testing.assert_identical(mine.load(), theirs.to_dataset().load())
    for name in ("effects.csv", "contrasts.csv", "summary.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(run / name), pd.read_csv(single_run / name))
    record = pd.read_json(run / "run.json", typ="series")
    assert record["data"]["engine"] == "streamed" and record["data"]["parts"] == 4
    assert record["data"]["batch_rows"] == 250_000
    assert (run / "figures" / "ppc_index.png").exists()


def test_exact_sums_do_not_depend_on_the_split() -> None:
    """Limb sums: any split and order gives the same bits; the constants are the exact ones."""
    from fractions import Fraction

    from omlbayes.data import exactsum

    rng = np.random.default_rng(5)
    x = rng.uniform(10.0, 22.0, 10_001)
    whole = exactsum.total(x)
    cut = rng.permutation(len(x))
    pieces = sum(exactsum.total(x[cut[a : a + 997]]) for a in range(0, len(x), 997))
    np.testing.assert_array_equal(exactsum.normalised(whole), exactsum.normalised(pieces))
    exact = sum(map(Fraction, x))
    assert exactsum.to_fraction(whole) == exact
    assert exactsum.to_float(whole[None])[0] == pytest.approx(float(exact), rel=1e-15)
    mean, sd = exactsum.mean_sd(len(x), whole, exactsum.total(x * x))
    assert mean == float(exact / len(x))
    assert sd == pytest.approx(x.std(ddof=1), rel=1e-12)
    with pytest.raises(ValueError, match="exactsum"):
        exactsum.limbs(np.array([1.0, 1e-30]))
