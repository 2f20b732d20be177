"""Generic mode (``--formula``): parsing, reading, exclusions, backend choice, a tiny fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from omlbayes.errors import InputError, SpecError
from omlbayes.model.spec import load_spec
from omlbayes.pipeline import formula_run, survey_run
from omlbayes.results import runs


def test_parse_formula_splits_terms():
    parsed = formula_run.parse_formula("y ~ x + g + (1 | school) + (1|district:school)")
    assert parsed.response == "y"
    assert parsed.common == ("x", "g")
    assert parsed.group == (("school",), ("district", "school"))
    assert parsed.collapsible() == (True, "")


@pytest.mark.parametrize(
    ("formula", "why"),
    [
        ("y ~ x + (x|school)", "not a random intercept"),
        ("y ~ x:z + (1|school)", "not a plain column name"),
        ("y ~ 0 + x", "no intercept"),
    ],
)
def test_non_collapsible_formulas_go_to_bambi(formula, why):
    parsed = formula_run.parse_formula(formula)
    ok, reason = parsed.collapsible()
    assert not ok and why in reason
    backend, _ = formula_run.choose_backend(parsed, "gaussian", load_spec("flagship"))
    assert backend == "bambi"


def test_backend_choice_respects_family_and_request():
    parsed = formula_run.parse_formula("y ~ x + (1|g)")
    spec = load_spec("flagship")
    assert formula_run.choose_backend(parsed, "gaussian", spec)[0] == "collapsed"
    assert formula_run.choose_backend(parsed, "bernoulli", spec)[0] == "bambi"
    assert formula_run.choose_backend(parsed, "gaussian", spec.with_sampler(backend="bambi"))[
        0
    ] == ("bambi")


@pytest.mark.parametrize("bad", ["y x", "y ~ a ~ b", "log(y) ~ x"])
def test_bad_formulas_raise(bad):
    with pytest.raises(SpecError):
        formula_run.parse_formula(bad)


def test_read_table_errors(tmp_path):
    parsed = formula_run.parse_formula("y ~ x + (1|g)")
    with pytest.raises(InputError, match="no such file"):
        formula_run.read_table(tmp_path / "nope.csv", parsed)
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(InputError, match="unknown file type"):
        formula_run.read_table(tmp_path / "t.xlsx", parsed)
    pd.DataFrame({"y": [1.0], "g": ["a"]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(InputError, match="x"):
        formula_run.read_table(tmp_path / "t.csv", parsed)


def test_missing_values_are_excluded_and_counted(tmp_path):
    frame = pd.DataFrame(
        {"y": [1.0, np.nan, 3.0, 4.0, np.nan], "x": [1, 2, np.nan, 4, np.nan], "g": list("aabbc")}
    )
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    table = formula_run.read_table(path, formula_run.parse_formula("y ~ x + (1|g)"))
    assert table.n_read == 5
    assert len(table.frame) == 2
    # each excluded row counted once, under its first missing formula column
    assert table.exclusions == {"missing_y": 2, "missing_x": 1}


def test_back_transform_is_the_inverse_of_the_standardization():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"y": rng.normal(10, 3, 50), "x": rng.normal(5, 2, 50), "g": ["a"] * 50})
    parsed = formula_run.parse_formula("y ~ x + (1|g)")
    z, st, group = formula_run._collapsed_frame(frame, parsed)
    assert group == (("g",),)
    # a linear fit on the standardized scale maps back to the raw-scale OLS fit
    a_z, b_z = np.polynomial.polynomial.polyfit(z["x"], z["y"], 1)
    from omlbayes.model.design import build_layout
    from omlbayes.model.spec import ModelSpec

    spec = ModelSpec("t", "", "y", "gaussian", ("x",), group, False, {}, (), ())
    layout = build_layout(z, spec)
    post = xr.Dataset(
        {
            "Intercept": (("chain", "draw"), [[a_z]]),
            "x": (("chain", "draw"), [[b_z]]),
            "1|g": (("chain", "draw", "g__factor_dim"), [[[0.0]]]),
            "1|g_sigma": (("chain", "draw"), [[0.1]]),
            "sigma": (("chain", "draw"), [[0.5]]),
        },
        coords={"chain": [0], "draw": [0], "g__factor_dim": ["a"]},
    )
    back = formula_run._back_transform(post, st, layout)
    a, b = np.polynomial.polynomial.polyfit(frame["x"], frame["y"], 1)
    assert back["x"].item() == pytest.approx(b)
    assert back["Intercept"].item() == pytest.approx(a)
    assert back["sigma"].item() == pytest.approx(0.5 * frame["y"].std())


def test_formula_run_writes_a_complete_folder(tmp_path):
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(12), 15)
    frame = pd.DataFrame(
        {
            "score": 50 + 5 * rng.standard_normal(12)[g] + 10 * rng.standard_normal(g.size),
            "hours": rng.normal(3, 1, g.size),
            "school": [f"s{k}" for k in g],
        }
    )
    frame.loc[0, "hours"] = np.nan
    data = tmp_path / "t.csv"
    frame.to_csv(data, index=False)
    # the default spec, as fit.py --formula without --model: its survey-only settings (terms,
    # one residual SD per school type) must not reach a table without those columns
    spec = load_spec(None).with_sampler(draws=200, tune=200, chains=2)
    assert spec.residual_sd_by is not None
    options = survey_run.RunOptions(seed=3, out_dir=tmp_path / "out", progressbar=False, name="g")
    result = formula_run.fit_formula_run(
        "score ~ hours + (1|school)", data=data, spec=spec, options=options, progress=lambda m: None
    )
    assert result.headline.empty
    names = {p.name for p in result.path.iterdir()}
    assert {"posterior.nc", "run.json", "diagnostics.json", "summary.csv", "figures"} <= names
    assert {p.name for p in (result.path / "figures").iterdir()} == {"rank_hyper.png", "energy.png"}
    record = runs.read_record(result.path)  # the one reader of run.json
    assert record.kind == "formula"
    assert record.fit["backend"] == "collapsed"
    assert record.data["exclusions"] == {"missing_hours": 1}
    assert record.data["n_analysed"] == len(frame) - 1
    assert record.output_options.prob == 0.95 and record.output_options.interval == "eti"
    summary = pd.read_csv(result.path / "summary.csv", index_col=0)
    assert {"Intercept", "hours", "1|school_sigma", "sigma"} <= set(summary.index)
    assert summary.loc["Intercept", "mean"] == pytest.approx(50, abs=6)  # raw scale
    tree = xr.open_datatree(result.path / runs.POSTERIOR, engine="h5netcdf")
    assert not set(tree.children) & set(runs.PRIVATE_GROUPS)
    assert not list((tmp_path / "out").glob(".staging*"))


@pytest.mark.parametrize(
    ("y", "model", "named", "error", "match"),
    [
        # a constant response: nothing to fit
        ([1.0, 1.0, 1.0], "flagship", False, InputError, "constant"),
        # a named model whose residual SD per school type a formula run cannot have
        ([1.0, 2.0, 3.0], "full", True, SpecError, "one residual SD.*residual_sd_by = 'school_"),
    ],
)
def test_failed_formula_run_leaves_no_folder(tmp_path, y, model, named, error, match):
    pd.DataFrame({"y": y, "g": list("abc")}).to_csv(tmp_path / "c.csv", index=False)
    options = survey_run.RunOptions(out_dir=tmp_path / "out", progressbar=False)
    with pytest.raises(error, match=match):
        formula_run.fit_formula_run(
            "y ~ (1|g)", data=tmp_path / "c.csv", spec=load_spec(model), options=options,
            spec_priors=named, progress=lambda m: None,
        )  # fmt: skip
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
