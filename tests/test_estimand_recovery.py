"""The estimand recovery study's scoring: its contrasts and the plumbing from a run to a row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import omlbayes as ob
from omlbayes.data import schema
from omlbayes.validation import estimand_recovery as study


def test_contrast_kinds_are_disjoint_and_their_algebra_right():
    waves, groups = ["a", "b", "c"], ["g0", "g1"]
    pairs = (("c", "a"), ("c", "b"), ("a", "c"))  # two already vs first / vs previous
    defs = study.contrast_defs(waves, groups, pairs)
    kinds = pd.Series([k for k, _, _ in defs]).value_counts().to_dict()
    assert kinds == {"vs_first": 4, "vs_previous": 2, "spec_pair": 2, "gap": 3, "gap_change": 2}
    means = np.array([[0.0, 1.0], [2.0, 4.0], [5.0, 9.0]])  # (wave, group)

    def value(plus, minus):
        return sum(means[c] for c in plus) - sum(means[c] for c in minus)

    found = {(k, plus, minus): value(plus, minus) for k, plus, minus in defs}
    # the gap g1 - g0 is 1, 2, 4 in waves a, b, c: its change since a is 1 in b and 3 in c
    changes = sorted(v for (k, _, _), v in found.items() if k == "gap_change")
    assert changes == [1.0, 3.0]
    spec = sorted(v for (k, _, _), v in found.items() if k == "spec_pair")
    assert spec == [-8.0, -5.0]  # a - c in g1 (1 - 9) and g0 (0 - 5)


def test_score_run_reads_every_estimand_kind_and_cell(default_run):
    # truth := the posterior mean of every adjusted mean, so each linear contrast's truth is
    # the mean of its own draws: a cell read from the wrong place breaks the identity
    run = ob.open_run(default_run)
    truths = {}
    for schools in study.ESTIMANDS:
        parts = []
        for columns in study.BREAKDOWNS:
            means = run.adjusted_means(columns, schools=schools).mean(("chain", "draw"))
            table = means.to_dataframe(name="value").reset_index()
            table["group"] = (
                table[list(columns)].astype(str).agg(":".join, axis=1) if columns else "all"
            )
            table["breakdown"] = schema.breakdown_name(columns)
            parts.append(table[["breakdown", "group", "wave", "value"]])
        truths[schools] = pd.concat(parts, ignore_index=True)
    rows = study.score_run(run, truths, seed=0)
    assert set(rows["estimand"]) == set(study.ESTIMANDS)
    assert set(rows["kind"]) == set(study.KINDS)
    assert rows["mean"].to_numpy() == pytest.approx(rows["truth"].to_numpy(), abs=1e-9)
    assert rows["cover_50"].all()
    assert (rows["min_n"] >= run.options.min_cell_n).all()
    # surveyed and any differ where the schools' realized deviations enter
    both = rows.pivot_table(index=["kind", "breakdown", "group", "wave", "reference"],
                            columns="estimand", values="mean")  # fmt: skip
    assert (both["any"] - both["surveyed"]).abs().max() > 1e-6


def test_verdict_needs_both_estimands_covered_and_calibrated():
    good = pd.DataFrame({"estimand": ["any", "surveyed"], "cover_80": [0.79, 0.83],
                         "cover_95": [0.94, 0.95]})  # fmt: skip
    assert study.verdict(good)
    assert not study.verdict(good.assign(cover_80=[0.79, 0.95]))  # too wide at 80%
    assert not study.verdict(good.assign(cover_95=[0.94, 0.85]))
    assert not study.verdict(good.iloc[:1])


def test_even_seeds_keep_the_drift_independent_and_odd_seeds_stress_it():
    for seed in (2, 4):
        assert study.stress_of(seed) == "none" and study.study_truth(seed).school_wave_rho == 0
    for seed in (1, 3):
        rho = study.study_truth(seed).school_wave_rho
        assert study.stress_of(seed) == "drift" and study.RHO_RANGE[0] <= rho <= study.RHO_RANGE[1]
    assert study.study_truth(3) == study.study_truth(3)  # drawn from the seed
    assert study.study_truth(17).student_df == study.TAILS_DF
    base = study.study_truth(2).intercept  # random_truth keeps the calibrated intercept
    assert study.study_truth(21).intercept == pytest.approx(base + study.CEILING_SHIFT)
    assert sorted(study.SEEDS) == list(range(1, 25))


@pytest.mark.slow
def test_school_scoring_reads_every_ranked_school_at_every_probability(default_run):
    from omlbayes.simulate.survey import simulate_survey

    run = ob.open_run(default_run)
    sim = simulate_survey(n_students=1500, n_schools=16, seed=11)  # the small survey
    # one eta unit is about 0.9 SD of the standardized index (SimulationParams' docstring)
    assert 0.7 < study.school_slope(sim) < 1.1
    rows = study.score_schools(run, sim, seed=0)
    assert set(rows["kind"]) == {"school_value", "school_rank"}
    assert set(rows["prob"]) == set(study.PROBS)
    ranks = rows[(rows["kind"] == "school_rank") & (rows["prob"] == 0.95)]
    assert sorted(ranks["truth"]) == list(range(1, len(ranks) + 1))  # a permutation
    assert set(ranks["school"]) <= set(sim.school_ids)
    values = rows[rows["kind"] == "school_value"].pivot(index="school", columns="prob")
    width = values["upper"] - values["lower"]
    assert (width[0.5] < width[0.8]).all() and (width[0.8] < width[0.95]).all()
    assert (values["truth"].nunique(axis=1) == 1).all()  # one truth per school
