"""Collapsible structure from one spec line: three-way cells, a residual SD per group."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from omlbayes.backends.collapsed import fit_collapsed
from omlbayes.criticism import predictive
from omlbayes.data.scale import build_index
from omlbayes.errors import SpecError
from omlbayes.model import estimands
from omlbayes.model.design import build_layout, grouped_stats, residual_groups
from omlbayes.model.spec import load_spec
from omlbayes.simulate.survey import simulate_survey


@pytest.fixture(scope="module")
def survey() -> pd.DataFrame:
    frame = build_index(simulate_survey(n_students=3000, n_schools=30, seed=4).frame).frame
    return frame.assign(age_c=frame["age"] - frame["age"].mean())


def test_variant_specs_load():
    assert load_spec("school_by_wave").school_by_wave
    three = load_spec("three_way")
    assert ("wave", "gender", "school_type") in three.group
    by_type = load_spec("residual_by_type")
    assert by_type.residual_sd_by == "school_type"
    assert "school_type" in by_type.columns


def test_three_way_cells_enter_the_cross_breakdowns(survey):
    spec = load_spec("three_way")
    layout = build_layout(survey, spec)
    gcomp = estimands.gcomp_weights(survey, layout, spec)
    term = "1|wave:gender:school_type"
    target = (
        (gcomp["breakdown"] == "gender x school_type")
        & (gcomp["wave"] == "2018")
        & (gcomp["group"].str.startswith("girl"))
    )
    index = int(np.flatnonzero(target.to_numpy())[0])
    group = str(gcomp["group"][index].item())
    school_type = [lv for lv in layout.levels["school_type"] if group.endswith(lv)][0]
    weights = gcomp["weights"].isel(target=index).to_series()
    pooled = gcomp["pooled"].to_series()
    cell = f"{term}[2018:girl:{school_type}]"
    # every student is moved into this one cell: its weight is 1 minus its pooled share
    assert weights[cell] == pytest.approx(1.0 - pooled[cell])
    others = [c for c in weights.index if c.startswith(f"{term}[") and c != cell]
    np.testing.assert_allclose(weights[others], -pooled[others], atol=1e-12)


def _heteroscedastic_frame(seed: int = 0) -> tuple[pd.DataFrame, dict[str, float]]:
    rng = np.random.default_rng(seed)
    truth = {"a": 0.5, "b": 1.0, "c": 2.0}
    n = 3000
    school = rng.integers(0, 30, n)
    kind = rng.choice(list(truth), n)
    sd = np.array([truth[k] for k in kind])
    y = 0.3 + rng.normal(0, 0.5, 30)[school] + rng.normal(size=n) * sd
    frame = pd.DataFrame({"y": y, "school_id": [f"s{k:02d}" for k in school], "kind": kind})
    return frame, truth


def test_residual_sd_per_group_is_recovered():
    frame, truth = _heteroscedastic_frame()
    spec = dataclasses.replace(
        load_spec("flagship"),
        response="y",
        common=(),
        group=(("school_id",),),
        school_by_wave=False,
        residual_sd_by="kind",
        breakdowns=(),
        wave_contrasts=(),
    ).with_sampler(draws=400, tune=400, chains=2)
    layout = build_layout(frame, spec)
    stats = grouped_stats(frame, layout, "y", by="kind")
    tree, _, facts = fit_collapsed(stats, layout, spec, seed=3, progressbar=False)
    assert facts["kernel"] == "sparse" and facts["residual_sd_by"] == "kind"
    post = tree["posterior"].to_dataset()
    sigma = post["sigma"]
    assert sigma.dims == ("chain", "draw", "kind__sigma_dim")
    means = sigma.mean(("chain", "draw")).to_series()
    sds = sigma.std(("chain", "draw")).to_series()
    for level, value in truth.items():
        assert abs(means[level] - value) < 4 * sds[level], (level, means[level], value)
    # predictive draws use each row's own residual SD
    rows = frame.iloc[:600]
    reps = predictive.posterior_predictive(rows, layout, post, draws=200, seed=1)
    spread = pd.Series(reps.std(axis=0)).groupby(rows["kind"].to_numpy()).mean()
    assert spread["a"] < spread["b"] < spread["c"]


def test_bad_kernel_and_residual_keys_are_refused(tmp_path: Path):
    source = Path(load_spec("flagship").source)
    base = source.read_text()
    shutil.copytree(source.parent / "findings", tmp_path / "findings")  # the spec names one
    bad_kernel = tmp_path / "k.toml"
    bad_kernel.write_text(base.replace("chains = 4", 'chains = 4\nkernel = "fast"'))
    with pytest.raises(SpecError, match="kernel 'fast' unknown"):
        load_spec(bad_kernel)
    bad_by = tmp_path / "r.toml"
    bad_by.write_text(base.replace("school_by_wave = false", "residual_sd_by = 3"))
    with pytest.raises(SpecError, match="residual_sd_by must be a column name"):
        load_spec(bad_by)


def test_residual_column_missing_from_data_is_one_clear_error(survey):
    spec = dataclasses.replace(load_spec("flagship"), residual_sd_by="no_such_column")
    with pytest.raises(SpecError, match="no_such_column"):
        build_layout(survey, spec)


def test_a_column_with_one_level_is_one_clear_error_with_the_fix(survey):
    one_type = survey[survey["school_type"] == survey["school_type"].iloc[0]]
    level = str(one_type["school_type"].iloc[0])
    with pytest.raises(SpecError, match=f"'school_type' has one level \\('{level}'\\)"):
        build_layout(one_type, load_spec("full"))
    with pytest.raises(SpecError, match="remove the residual_sd_by key"):
        residual_groups(one_type, "school_type")
