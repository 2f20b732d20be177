"""The collapsed marginal likelihood Op: value, gradient, numba kernel, failure handling."""

from __future__ import annotations

import warnings

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from scipy.stats import multivariate_normal

from omlbayes.backends.marginal import MarginalLoglik, marginal_loglik
from omlbayes.model.design import SufficientStats


def _problem(seed: int = 0, n: int = 40, p: int = 6):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(n, p))
    y = rng.normal(size=n)
    stats = SufficientStats(wtw=w.T @ w, wty=w.T @ y, yty=float(y @ y), n=n)
    log_s2 = float(rng.normal(scale=0.3))
    log_lam = rng.normal(scale=0.5, size=p)
    return w, y, stats, log_s2, log_lam


def _numba_fn(stats: SufficientStats):
    log_s2 = pt.dscalar("log_s2")
    log_lam = pt.dvector("log_lam")
    data = (stats.wtw, stats.wty, np.asarray(stats.yty), np.asarray(float(stats.n)))
    outs = MarginalLoglik()(log_s2, log_lam, *(pt.constant(d) for d in data))
    with warnings.catch_warnings():
        # An object-mode fallback would warn; make that a failure.
        warnings.filterwarnings("error", message=".*object mode.*")
        return pytensor.function([log_s2, log_lam], outs, mode="NUMBA")


def test_value_matches_dense_multivariate_normal():
    w, y, stats, log_s2, log_lam = _problem()
    ll, _, _ = marginal_loglik(stats, log_s2, log_lam)
    cov = np.exp(log_s2) * np.eye(len(y)) + w @ np.diag(np.exp(log_lam)) @ w.T
    assert ll == pytest.approx(multivariate_normal(mean=np.zeros(len(y)), cov=cov).logpdf(y))


def test_gradient_matches_finite_differences():
    _, _, stats, log_s2, log_lam = _problem(seed=1)
    _, g_s2, g_lam = marginal_loglik(stats, log_s2, log_lam)
    h = 1e-5

    def f(s, lam):
        return marginal_loglik(stats, s, lam)[0]

    fd_s2 = (f(log_s2 + h, log_lam) - f(log_s2 - h, log_lam)) / (2 * h)
    fd_lam = np.array(
        [
            (f(log_s2, log_lam + h * e) - f(log_s2, log_lam - h * e)) / (2 * h)
            for e in np.eye(log_lam.size)
        ]
    )
    assert g_s2 == pytest.approx(fd_s2, rel=1e-6, abs=1e-7)
    np.testing.assert_allclose(g_lam, fd_lam, rtol=1e-6, atol=1e-7)


def test_numba_kernel_matches_perform():
    _, _, stats, _, _ = _problem(seed=2, n=60, p=9)
    fn = _numba_fn(stats)
    rng = np.random.default_rng(3)
    for _ in range(5):
        log_s2 = float(rng.normal())
        log_lam = rng.normal(scale=2.0, size=9)
        ll, g_s2, g_lam = fn(log_s2, log_lam)
        ref_ll, ref_g_s2, ref_g_lam = marginal_loglik(stats, log_s2, log_lam)
        assert float(ll) == pytest.approx(ref_ll, rel=1e-12)
        assert float(g_s2) == pytest.approx(ref_g_s2, rel=1e-10, abs=1e-10)
        np.testing.assert_allclose(g_lam, ref_g_lam, rtol=1e-10, atol=1e-10)


def test_not_positive_definite_gives_minus_inf():
    # A W'W that is not positive semidefinite cannot be made PD by a small diagonal shift.
    p = 4
    wtw = -10.0 * np.eye(p)
    stats = SufficientStats(wtw=wtw, wty=np.ones(p), yty=1.0, n=10)
    log_s2, log_lam = 0.0, np.zeros(p)
    ll, g_s2, g_lam = marginal_loglik(stats, log_s2, log_lam)
    assert ll == -np.inf and g_s2 == 0.0 and not g_lam.any()
    nll, ng_s2, ng_lam = _numba_fn(stats)(log_s2, log_lam)
    assert float(nll) == -np.inf and float(ng_s2) == 0.0 and not ng_lam.any()
