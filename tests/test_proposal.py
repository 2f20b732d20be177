"""The approximations of the SDs' posterior (the split-t that starts NUTS, the scanned
copula that importance sampling draws from) and the chain starts drawn through them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import digamma

from omlbayes.backends import proposal

A, B = 1.2, 30.0  # u = log tau, tau ~ Gamma(A, B): a log SD with a long left tail


def skewed_and_folded(x: np.ndarray) -> tuple[float, np.ndarray]:
    """Coordinate 0: log of a Gamma(A, B) variable (density exp(A u - B e^u)); coordinate
    1: a folded SD w, density symmetric with modes at +-1; coordinate 2 correlated with 0."""
    u, w, v = x
    value = A * u - B * np.exp(u) - 0.5 * ((abs(w) - 1.0) / 0.3) ** 2 - 0.5 * ((v - u) / 0.5) ** 2
    grad = np.array(
        [A - B * np.exp(u) + (v - u) / 0.25, -np.sign(w) * (abs(w) - 1.0) / 0.09, -(v - u) / 0.25]
    )
    return float(value), grad


def negative(x: np.ndarray) -> tuple[float, np.ndarray]:
    value, grad = skewed_and_folded(x)
    return -value, -grad


def fitted() -> proposal.SplitT:
    res = minimize(negative, np.array([-3.0, 0.8, -3.0]), jac=True, method="BFGS")
    return proposal.SplitT.fit(skewed_and_folded, res.x, np.array([False, True, False]))


def copula() -> proposal.ScannedCopula:
    return proposal.ScannedCopula.of(fitted())


@pytest.mark.parametrize("make", [fitted, copula], ids=["split-t", "copula"])
def test_the_proposal_density_is_the_density_of_its_draws(make):
    q = make()
    rng = np.random.default_rng(0)
    x = q.draw(rng, 200_000)
    # the folded coordinate takes both signs evenly
    assert abs(np.mean(x[:, 1] > 0) - 0.5) < 0.01
    # P(a box) from the draws against the integral of exp(logpdf) over that box
    lo, hi = q.centre - [0.5, 0.0, 0.5], q.centre + [0.3, 1.5, 0.3]
    inside = np.all((x > lo) & (x < hi), axis=1).mean()
    grids = [np.linspace(a, b, 41) for a, b in zip(lo, hi, strict=True)]
    mesh = np.stack(np.meshgrid(*grids, indexing="ij"), axis=-1).reshape(-1, 3)
    dens = np.exp(q.logpdf(mesh)).reshape(41, 41, 41)
    integral = np.trapezoid(np.trapezoid(np.trapezoid(dens, grids[2]), grids[1]), grids[0])
    assert integral == pytest.approx(inside, rel=0.02)


@pytest.mark.parametrize("shift", [0.0, 0.5])
def test_resampled_starts_follow_the_posterior_where_the_mode_does_not(shift):
    # shift: a proposal off-centre by 0.5 (its own draws' mean 0.59 too high); the
    # resampling corrects it
    at_mode = fitted()
    q = dataclasses.replace(at_mode, centre=at_mode.centre + [shift, 0.0, shift])
    rng = np.random.default_rng(1)
    starts = np.array(
        [proposal.resampled_start(skewed_and_folded, q, rng, 64) for _ in range(1500)]
    )
    truth = digamma(A) - np.log(B)  # E[log tau]
    se = starts[:, 0].std() / np.sqrt(len(starts))
    # SIR from 64 proposals is close to, not exactly, a posterior draw: 4 SEs and 2% of an SD
    assert abs(starts[:, 0].mean() - truth) < 4 * se + 0.02 * starts[:, 0].std()
    # the mode lies well to the right of the mean: starts there carry that bias
    assert at_mode.centre[0] - truth > 10 * se
    # the folded SD: both signs, |w| about its posterior mean (close to 1)
    assert 0.4 < np.mean(starts[:, 1] > 0) < 0.6
    assert abs(np.abs(starts[:, 1]).mean() - 1.0) < 0.05


def test_a_scanned_margin_is_a_density_with_exact_quantiles():
    for margin in copula().margins:
        t0, t1 = margin.tails
        grid = np.linspace(margin.knots[0] - 40 * t0, margin.knots[-1] + 40 * t1, 400_001)
        dens = np.exp(margin.logpdf(grid))
        cum = np.r_[0.0, np.cumsum((dens[1:] + dens[:-1]) / 2 * np.diff(grid))]
        assert cum[-1] == pytest.approx(1.0, abs=1e-6)
        at = grid[::4000]
        lower, upper = margin.cdf(at)
        np.testing.assert_allclose(lower, cum[::4000], atol=1e-6)
        np.testing.assert_allclose(lower + upper, 1.0, atol=1e-12)
        np.testing.assert_allclose(margin.ppf(lower, upper), at, atol=1e-4)


def test_the_copula_weighs_a_skewed_posterior_more_evenly_than_the_split_t():
    rng = np.random.default_rng(3)
    ess = {}
    for name, q in (("split-t", fitted()), ("copula", copula())):
        x = q.draw(rng, 20_000)
        target = np.array([skewed_and_folded(row)[0] for row in x])
        w = proposal.importance_weights(target, q.logpdf(x))
        ess[name] = 1.0 / np.sum(w**2)
    assert ess["copula"] > 1.1 * ess["split-t"], ess


def test_weights_need_one_finite_target_density():
    with pytest.raises(ValueError, match="finite"):
        proposal.importance_weights(np.full(10, -np.inf), np.zeros(10))


def test_many_folded_sds_keep_one_sign_in_the_proposal_and_flip_after_resampling():
    # 12 folded SDs: 4,096 sign patterns, beyond MAX_SIGN_PATTERNS
    n = 12

    def folded_modes(x):  # each coordinate symmetric with modes at +-1
        return float(-0.5 * np.sum(((np.abs(x) - 1.0) / 0.3) ** 2)), -np.sign(x) * (
            np.abs(x) - 1.0
        ) / 0.09

    q = proposal.SplitT.fit(folded_modes, np.ones(n), np.ones(n, dtype=bool))
    assert not q.symmetric
    rng = np.random.default_rng(2)
    starts = np.array([proposal.resampled_start(folded_modes, q, rng, 64) for _ in range(400)])
    assert 0.4 < np.mean(starts > 0) < 0.6  # both signs, every coordinate pooled
    assert abs(np.abs(starts).mean() - 1.0) < 0.05


def test_a_scan_that_rises_again_far_out_keeps_its_tail_short():
    # the log density falls from the mode, then rises again at the far left end (the scan
    # runs along a line on which other coordinates move too)
    knots = np.array([-5.0, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0])
    log_density = np.array([-27.0, -28.0, -8.0, -2.0, 0.0, -3.0, -12.0])
    margin = proposal.ScanMargin.of(knots, log_density, min_tail=0.3)
    assert margin.tails[0] <= knots[-1] - knots[0]
    assert margin.cum[0] < 1e-6  # no mass is sent far out beyond the scan
    lower, upper = margin.cdf(np.array([-5.0, 2.0]))
    assert lower[0] < 1e-6 and upper[1] < 1e-3
