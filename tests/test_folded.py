"""Folded group SDs (tau = |w|): the same posterior as the log scale, and when auto folds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from omlbayes.backends import collapsed
from omlbayes.errors import SpecError
from omlbayes.model.design import build_layout, grouped_stats
from omlbayes.model.spec import Prior, load_spec


def _two_terms(n: int = 6000, seed: int = 3) -> pd.DataFrame:
    """Two crossed factors of 150 levels: ``a`` with SD 0.3, ``b`` with SD 0 (no effect)."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 150, n), rng.integers(0, 150, n)
    x = rng.normal(size=n)
    y = 0.2 * x + rng.normal(0, 0.3, 150)[a] + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "a": [f"a{k}" for k in a], "b": [f"b{k}" for k in b]})


def _spec(**sampler):
    return dataclasses.replace(
        load_spec("flagship"),
        response="y",
        common=("x",),
        group=(("a",), ("b",)),
        school_by_wave=False,
        breakdowns=(),
        wave_contrasts=(),
    ).with_sampler(**sampler)


@pytest.fixture(scope="module")
def design():
    frame = _two_terms()
    spec = _spec()
    layout = build_layout(frame, spec)
    stats = grouped_stats(frame, layout, "y")
    return stats, layout, collapsed.choose_kernel(stats, layout, spec)


@pytest.mark.parametrize(
    "prior",
    [
        Prior("HalfNormal", {"sigma": 0.5}),
        # the other folded twins compile their own graphs (6-8 s each): the slow tier
        pytest.param(Prior("HalfStudentT", {"nu": 3.0, "sigma": 0.4}), marks=pytest.mark.slow),
        pytest.param(Prior("HalfCauchy", {"beta": 0.3}), marks=pytest.mark.slow),
    ],
)
def test_folded_sd_has_the_same_posterior_density(design, prior):
    # tau = |w| with w from the symmetric twin: density(w) = density_tau(|w|) / 2, so the
    # two models' log densities (SD scale, no Jacobian) differ by log 2 per folded SD
    stats, layout, choice = design
    spec = dataclasses.replace(_spec(), priors={**_spec().priors, "group_sigma": prior})
    log_model = collapsed.build_model(stats, layout, spec, choice)
    folded_model = collapsed.build_model(stats, layout, spec, choice, frozenset({"1|b"}))
    log_p = log_model.compile_logp(jacobian=False)
    folded_p = folded_model.compile_logp(jacobian=False)
    rng = np.random.default_rng(0)
    for _ in range(5):
        sigma, tau_a, tau_b = np.exp(rng.normal(-1.0, 1.0, 3))
        sign = rng.choice([-1.0, 1.0])
        at_log = {"sigma_log__": np.log(sigma), "1|a_sigma_log__": np.log(tau_a)}
        at_log["1|b_sigma_log__"] = np.log(tau_b)
        at_folded = {"sigma_log__": np.log(sigma), "1|a_sigma_log__": np.log(tau_a)}
        at_folded["1|b_sigma_folded"] = sign * tau_b
        assert float(folded_p(at_folded)) == pytest.approx(
            float(log_p(at_log)) - np.log(2.0), rel=1e-11
        )


def test_auto_folds_the_sd_at_zero_only(design):
    stats, layout, choice = design
    folded, facts = collapsed.folded_terms(stats, layout, _spec(sd_parameterization="auto"), choice)
    assert folded == {"1|b"}
    assert facts["folded_sds"] == ["1|b"]
    drops = facts["sd_boundary"]
    assert drops["1|b"]["drop"] < collapsed.BOUNDARY_DROP <= drops["1|a"]["drop"]
    assert drops["1|a"]["drop"] > 50  # 150 cells with SD 0.3: zero is far out
    assert 0.2 < drops["1|a"]["mode"] < 0.4
    # deterministic: the same data give the same choice and numbers
    again = collapsed.folded_terms(stats, layout, _spec(sd_parameterization="auto"), choice)[1]
    assert again["sd_boundary"] == drops
    assert collapsed.folded_terms(stats, layout, _spec(), choice)[0] == frozenset()
    every = collapsed.folded_terms(stats, layout, _spec(sd_parameterization="folded"), choice)
    assert every[0] == {"1|a", "1|b"}


def test_the_fold_decisions_mode_starts_the_samplers_mode_search(design):
    stats, layout, choice = design
    spec = _spec(sd_parameterization="auto")
    folded, facts = collapsed.folded_terms(stats, layout, spec, choice)
    # every SD at the SD-scale mode: the residual SD (1), a (0.3), b at its floor (no profile
    # searched: its drop is 0 by construction)
    sigma, tau_a, tau_b = facts["sd_mode"]
    assert sigma == pytest.approx(1.0, abs=0.05) and 0.2 < tau_a < 0.4
    assert tau_b == pytest.approx(collapsed.PROFILE_ZERO * 0.5)
    assert facts["sd_boundary"]["1|b"]["drop"] == 0.0
    density = collapsed.build_density(stats, layout, spec, choice, folded)
    from_priors = density.posterior_mode()
    from_fold_mode = density.posterior_mode(facts["sd_mode"])
    # the same optimum of the sampler's density from either start
    assert density.logp(from_fold_mode)[0] == pytest.approx(density.logp(from_priors)[0], abs=1e-4)
    assert np.exp(from_fold_mode[:2]) == pytest.approx(np.exp(from_priors[:2]), rel=0.02)


def test_few_cells_and_exponential_priors_stay_on_the_log_scale(design):
    stats, layout, choice = design
    exponential = Prior("Exponential", {"lam": 2.0})
    spec = _spec(sd_parameterization="folded")
    spec = dataclasses.replace(spec, priors={**spec.priors, "group_sigma": exponential})
    folded, facts = collapsed.folded_terms(stats, layout, spec, choice)
    assert folded == frozenset() and facts["unfoldable_sds"] == ["1|a", "1|b"]
    frame = _two_terms().assign(b=lambda d: d["b"].str[:2])  # b0..b9, b1x -> 10 levels
    small = _spec(sd_parameterization="auto")
    small_layout = build_layout(frame, small)
    small_stats = grouped_stats(frame, small_layout, "y")
    small_choice = collapsed.choose_kernel(small_stats, small_layout, small)
    folded, facts = collapsed.folded_terms(small_stats, small_layout, small, small_choice)
    assert "1|b" not in folded and "1|b" not in facts["sd_boundary"]


@pytest.mark.slow
def test_folded_fit_matches_the_log_scale_fit(design):
    stats, layout, _ = design
    fits = {}
    for setting in ("log", "folded"):
        spec = _spec(sd_parameterization=setting, draws=400, tune=400, chains=2)
        tree, _, facts = collapsed.fit_collapsed(stats, layout, spec, seed=5, progressbar=False)
        post = tree["posterior"].to_dataset()
        assert not [v for v in post.data_vars if v.endswith(collapsed.FOLDED_SUFFIX)]
        assert float(post["1|b_sigma"].min()) >= 0
        fits[setting] = post
    assert facts["folded_sds"] == ["1|a", "1|b"]
    for name in ("sigma", "1|a_sigma", "1|b_sigma", "x"):
        a, b = fits["log"][name].to_numpy().ravel(), fits["folded"][name].to_numpy().ravel()
        # two independent posterior samples of 800 draws: means within 5 Monte Carlo SEs
        se = np.sqrt(a.var() / 200 + b.var() / 200)  # ESS >= 200 of 800 draws, conservatively
        assert abs(a.mean() - b.mean()) < 5 * se, name


def test_refitter_chooses_the_parameterization_per_data_set(design):
    stats, layout, _ = design
    spec = _spec(sd_parameterization="auto", draws=200, tune=200, chains=2)
    tree = collapsed.CollapsedRefitter(stats.pooled(), layout, spec).fit(stats.pooled(), seed=3)
    post = tree["posterior"].to_dataset()
    # the refit reports natural-scale SDs whatever it sampled, and its coefficient draws
    assert not [v for v in post.data_vars if v.endswith(collapsed.FOLDED_SUFFIX)]
    assert float(post["1|b_sigma"].min()) >= 0 and "x" in post.data_vars


def test_unknown_parameterization_is_refused(tmp_path):
    from omlbayes.model.spec import check_sampler

    with pytest.raises(SpecError, match="sd_parameterization 'sqrt' unknown"):
        check_sampler(_spec(sd_parameterization="sqrt").sampler)


def test_refitter_refuses_a_residual_sd_per_group(design):
    """Refits pool the statistics: a spec with a residual SD per group is refused, not
    silently fitted with one SD."""
    stats, layout, _ = design
    grouped = dataclasses.replace(_spec(), residual_sd_by="b")
    with pytest.raises(ValueError, match="residual SD per 'b' group"):
        collapsed.CollapsedRefitter(stats.pooled(), layout, grouped)
