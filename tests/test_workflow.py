"""End to end: scripts/fit.py on small data, the run-folder contract, errors, exact answers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
import xarray as xr
from conftest import fit_small, run_script

from omlbayes import constants
from omlbayes.model.design import build_layout
from omlbayes.model.estimands import effect_draws, gcomp_weights
from omlbayes.model.spec import load_spec

RUN_FILES = (
    "posterior.nc",
    "run.json",
    "diagnostics.json",
    "summary.csv",
    "effects.csv",
    "contrasts.csv",
    "table1.csv",
    "figures/fig2_wave.png",
    "figures/fig3_school_type.png",
    "figures/fig4_gender.png",
    "figures/fig5_parent_edu.png",
    "figures/fig6_region.png",
    "figures/fig1_items.png",
    "figures/rank_hyper.png",
    "figures/energy.png",
    "figures/ppc_index.png",
    "figures/prior_predictive.png",
)


def test_fit_cli_writes_the_whole_run_folder(small_run):
    path, result = small_run
    for name in RUN_FILES:
        assert (path / name).is_file(), f"missing {name}"
    assert "Run folder:" in result.stdout
    assert "[omlbayes] fitting flagship" in result.stderr  # stages are shown while it works
    diagnostics = json.loads((path / "diagnostics.json").read_text())
    assert set(diagnostics["checks"]) == {
        "r_hat_below_1_01",
        "ess_bulk_at_least_400",
        "ess_tail_at_least_400",
        "no_divergences",
        "bfmi_above_0_3",
        "ppc_index_by_wave_group",
        "ppc_school_wave_means",
        "ppc_residual_sd_by_school_type",
        "ppc_cell_dispersion",
    }
    assert diagnostics["thresholds"]["rhat_max"] == constants.RHAT_MAX


def test_run_tables_follow_the_contract(small_run):
    path, _ = small_run
    effects = pd.read_csv(path / "effects.csv")
    assert list(effects.columns[:7]) == [
        "breakdown",
        "group",
        "wave",
        "mean",
        "lower",
        "upper",
        "n",
    ]
    assert set(effects.breakdown) == {
        "overall",
        "school_type",
        "gender",
        "parent_edu",
        "region",
        "gender x school_type",
        "parent_edu x school_type",
        "parent_edu x gender",
        "region x school_type",
        "parent_edu x region",
    }
    shown = effects[~effects.suppressed]
    assert (shown.lower <= shown["mean"]).all() and (shown["mean"] <= shown.upper).all()
    assert (shown.n >= constants.MIN_CELL_N).all()  # disclosure control
    contrasts = pd.read_csv(path / "contrasts.csv")
    for col in ("breakdown", "group", "wave", "reference", "mean", "lower", "upper", "p_direction"):
        assert col in contrasts.columns
    pairs = set(zip(contrasts.wave, contrasts.reference, strict=True))
    assert {("2018", "2014"), ("2020_1", "2020_2"), ("2022", "2020_2")} <= pairs
    assert contrasts.p_direction.dropna().between(0.5, 1.0).all()
    # A gap change is the difference in differences of four adjusted means, and is hidden
    # exactly when one of its four cells is.
    cell = {(r.breakdown, r.group, r.wave): r for r in effects.itertuples()}
    gaps = contrasts[contrasts.kind == "gap_change"]
    assert {"gender", "gender x school_type", "region x school_type"} <= set(gaps.breakdown)
    for r in gaps.itertuples():
        four = [
            cell[(r.breakdown, r.group, r.wave)],
            cell[(r.breakdown, r.group, r.reference)],
            cell[(r.breakdown, r.reference_group, r.wave)],
            cell[(r.breakdown, r.reference_group, r.reference)],
        ]
        assert r.suppressed == any(c.suppressed for c in four)
        if not r.suppressed:
            dd = four[0].mean - four[1].mean - four[2].mean + four[3].mean
            assert r.mean == pytest.approx(dd, abs=1e-9)
    summary = pd.read_csv(path / "summary.csv", index_col=0)
    assert {"Intercept", "sigma", "1|school_id_sigma", "wave[2018]"} <= set(summary.index)
    assert {"eti95_lb", "eti95_ub", "ess_bulk", "r_hat"} <= set(summary.columns)


def test_saved_posterior_has_no_student_rows(small_run, small_survey):
    path, _ = small_run
    tree = xr.open_datatree(path / "posterior.nc")
    assert not {"observed_data", "constant_data"} & set(tree.children)
    # log_likelihood_total and log_prior hold per-draw totals only (for prior power-scaling);
    # no log_likelihood group, which az.loo would read as pointwise
    assert "log_likelihood" not in tree.children
    for group in ("log_likelihood_total", "log_prior"):
        for var in tree[group].to_dataset().data_vars.values():
            assert set(var.dims) == {"chain", "draw"}
    ids = set(pd.read_csv(small_survey, usecols=["student_id"]).student_id.astype(str))
    for name in ("summary.csv", "effects.csv", "contrasts.csv", "run.json", "schools.csv"):
        text = (path / name).read_text()
        assert not any(f",{i}," in text or f'"{i}"' in text for i in list(ids)[:200])


@pytest.mark.slow
def test_replot_redraws_from_disk_without_refitting(small_run, tmp_path):
    import shutil

    path = tmp_path / "small"  # a copy: other tests read the shared run in its own language
    shutil.copytree(small_run[0], path)
    before = pd.read_csv(path / "effects.csv")
    (path / "figures" / "fig2_wave.png").unlink()
    result = run_script("fit.py", "--replot", str(path), "--lang", "nl")
    assert result.returncode == 0, result.stderr
    assert (path / "figures" / "fig2_wave.png").is_file()
    pd.testing.assert_frame_equal(before, pd.read_csv(path / "effects.csv"))


@pytest.mark.slow
def test_same_seed_same_numbers(small_run, small_survey, tmp_path):
    path, _ = small_run
    again = fit_small(small_survey, tmp_path, "again")
    assert again.returncode == 0, again.stderr[-2000:]
    first = pd.read_csv(path / "summary.csv", index_col=0)
    second = pd.read_csv(tmp_path / "again" / "summary.csv", index_col=0)
    pd.testing.assert_frame_equal(first, second)
    pd.testing.assert_frame_equal(
        pd.read_csv(path / "contrasts.csv"), pd.read_csv(tmp_path / "again" / "contrasts.csv")
    )


def test_bad_input_one_line_error_no_folder(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("student_id,school_id\n1,2\n")
    result = run_script("fit.py", "--data", str(bad), "--out", str(tmp_path / "runs"))
    assert result.returncode == constants.EXIT_USER_ERROR
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "bad.csv" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_interrupted_run_leaves_no_folder(small_survey, tmp_path, monkeypatch):
    from omlbayes.pipeline import survey_run

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(survey_run, "_write_descriptives", boom)
    spec = load_spec("flagship").with_sampler(draws=20, tune=20, chains=1)
    with pytest.raises(KeyboardInterrupt):
        survey_run.fit_survey_run(
            spec,
            data=small_survey,
            options=survey_run.RunOptions(out_dir=tmp_path, progressbar=False, name="x"),
        )
    assert list(tmp_path.iterdir()) == []


def test_adjusted_means_equal_hand_computed_g_computation():
    """Known answer: with fixed coefficient values, each diamond is an exact weighted sum."""
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame(
        {
            "wave": pd.Categorical(
                rng.choice(["2014", "2016", "2018"], n), ["2014", "2016", "2018"]
            ),
            "gender": pd.Categorical(rng.choice(["boy", "girl"], n, p=[0.3, 0.7]), ["boy", "girl"]),
            "age_c": rng.normal(0, 1, n),
            "index": rng.normal(size=n),
        }
    )
    spec = load_spec("flagship")
    spec = type(spec)(
        **{
            **spec.__dict__,
            "common": ("wave", "gender", "age_c"),
            "group": (("wave", "gender"),),
            "breakdowns": ((), ("gender",)),
        }
    )
    layout = build_layout(frame, spec)
    gcomp = gcomp_weights(frame, layout, spec)
    b = {
        "Intercept": 0.3,
        "wave[2016]": -0.2,
        "wave[2018]": 0.5,
        "gender[girl]": -0.4,
        "age_c": 0.1,
        "1|wave:gender[2018:girl]": 0.25,
    }
    values = np.array([b.get(name, 0.0) for name in layout.coef_names])
    posterior = _constant_posterior(layout, values)
    eff = effect_draws(posterior, gcomp).isel(chain=0, draw=0)

    def predict(data):
        girl = (data.gender == "girl").astype(float)
        return (
            0.3
            - 0.2 * (data.wave == "2016")
            + 0.5 * (data.wave == "2018")
            - 0.4 * girl
            + 0.1 * data.age_c
            + 0.25 * ((data.wave == "2018") & (data.gender == "girl"))
        )

    pooled = predict(frame).mean()
    for target in range(eff.sizes["target"]):
        t = eff.isel(target=target)
        data = frame.copy()
        if str(t.wave.item()) != "all":
            data["wave"] = str(t.wave.item())
        if t.breakdown.item() == "gender":
            data["gender"] = t.group.item()
        expected = predict(data).mean() - pooled
        assert float(t) == pytest.approx(expected, abs=1e-12)


def test_collapsed_fit_recovers_ols_g_computation_exactly(tmp_path):
    """Closed form: with vague priors and a large sample the posterior mean of a diamond is
    the OLS g-computation, which statsmodels computes independently."""
    from omlbayes.backends.collapsed import fit_collapsed
    from omlbayes.model.design import sufficient_stats
    from omlbayes.model.spec import Prior

    rng = np.random.default_rng(1)
    n = 6000
    waves = ["2014", "2016", "2018"]
    frame = pd.DataFrame(
        {
            "wave": pd.Categorical(rng.choice(waves, n), waves),
            "gender": pd.Categorical(rng.choice(["boy", "girl"], n), ["boy", "girl"]),
            "age_c": rng.normal(0, 1, n),
        }
    )
    frame["index"] = (
        0.2 * (frame.wave == "2018")
        - 0.3 * (frame.gender == "girl")
        + 0.05 * frame.age_c
        + rng.normal(0, 1, n)
    )
    base = load_spec("flagship")
    spec = type(base)(
        **{
            **base.__dict__,
            "common": ("wave", "gender", "age_c"),
            "group": (("wave", "gender"),),
            "breakdowns": ((), ("gender",)),
            "priors": {
                **base.priors,
                "common": Prior("Normal", {"mu": 0.0, "sigma": 100.0}),
                "Intercept": Prior("Normal", {"mu": 0.0, "sigma": 100.0}),
                "group_sigma": Prior("HalfNormal", {"sigma": 1e-4}),
            },
        }
    )
    spec = spec.with_sampler(draws=300, tune=300, chains=2)
    layout = build_layout(frame, spec)
    tree, _, _ = fit_collapsed(
        sufficient_stats(frame, layout, "index"), layout, spec, seed=1, progressbar=False
    )
    eff = effect_draws(tree["posterior"].to_dataset(), gcomp_weights(frame, layout, spec))
    ols = smf.ols("index ~ C(wave) + C(gender) + age_c", data=frame).fit()
    pooled = ols.predict(frame).mean()
    for wave in waves:
        expected = ols.predict(frame.assign(wave=wave)).mean() - pooled
        got = eff.where((eff.breakdown == "overall") & (eff.wave == wave), drop=True)
        mcse = float(got.std()) / np.sqrt(got.size / 2)
        assert float(got.mean()) == pytest.approx(expected, abs=4 * mcse + 1e-3)


def _constant_posterior(layout, values) -> xr.Dataset:
    data = {}
    for term, sl in zip(layout.terms, layout.slices().values(), strict=True):
        v = values[sl].reshape(1, 1, -1)
        if term.coords:
            data[term.name] = xr.DataArray(
                v, dims=("chain", "draw", term.dim), coords={term.dim: list(term.coords)}
            )
        else:
            data[term.name] = xr.DataArray(v[:, :, 0], dims=("chain", "draw"))
        if term.kind == "group":
            data[f"{term.name}_sigma"] = xr.DataArray(np.ones((1, 1)), dims=("chain", "draw"))
    return xr.Dataset(data)
