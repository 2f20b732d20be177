"""Pareto-smoothed importance sampling LOO for many observations at once (compiled).

The same algorithm as ``arviz_stats`` (``psislw`` with the Zhang-Stephens generalized
Pareto fit and its weakly informative prior on k, then ``loo``'s log-sum-exp), compiled with
numba over all students in parallel: ArviZ's version loops over students in Python, which
cost a run more than the exact LOO densities themselves. ``tests/test_criticism.py``
holds it equal to ArviZ's.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_TINY = np.finfo(float).tiny
_EPS = np.finfo(float).eps


def tail_draws(n_draws: int, r_eff: float) -> int:
    """Draws in the Pareto tail, as ArviZ chooses them (right tail)."""
    if n_draws * r_eff > 225:
        return int(math.floor(3 * (n_draws / r_eff) ** 0.5))
    return int(math.floor(n_draws / 5))


@numba.njit(cache=True, nogil=True)
def _logsumexp(x):
    top = np.max(x)
    if not np.isfinite(top):
        return top
    return top + math.log(np.sum(np.exp(x - top)))


@numba.njit(cache=True, nogil=True)
def _gpdfit(x):
    """(k, sigma) of the generalized Pareto distribution fitted to sorted ``x`` (ArviZ's
    empirical Bayes estimate with a prior on k centred at 0.5)."""
    prior_bs, prior_k = 3.0, 10.0
    n = x.shape[0]
    m_est = 30 + int(n**0.5)
    xstar = x[int((n / 4 + 0.5) - 1)]
    if xstar <= x[0]:
        return np.nan, np.nan
    b = np.empty(m_est)
    for j in range(m_est):
        b[j] = (1.0 - math.sqrt(m_est / (j + 1 - 0.5))) / (prior_bs * xstar) + 1.0 / x[n - 1]
    len_scale = np.empty(m_est)
    for j in range(m_est):
        k = 0.0
        for i in range(n):
            k += math.log1p(-b[j] * x[i])
        k /= n
        len_scale[j] = n * (math.log(-b[j] / k) - k - 1.0)
    w = np.exp(len_scale - _logsumexp(len_scale))
    total, b_post = 0.0, 0.0
    for j in range(m_est):
        if w[j] >= 10 * _EPS:
            total += w[j]
    for j in range(m_est):
        if w[j] >= 10 * _EPS:
            b_post += b[j] * w[j] / total
    kappa = 0.0
    for i in range(n):
        kappa += math.log1p(-b_post * x[i])
    kappa /= n
    sigma = -kappa / b_post
    kappa = (n * kappa + prior_k * 0.5) / (n + prior_k)
    if math.isnan(kappa):
        return np.inf, np.nan
    return kappa, sigma


@numba.njit(cache=True, nogil=True)
def _psis_one(log_lik, n_tail):
    """Smoothed normalised log weights of one observation (ratios 1 / p(y_i | theta))."""
    s = log_lik.shape[0]
    lw = -log_lik.copy()
    lw -= np.max(lw)
    order = np.argsort(lw)
    tail = np.empty(n_tail)
    for t in range(n_tail):
        tail[t] = lw[order[s - n_tail + t]]
    cutoff_log = lw[order[s - n_tail - 1]]
    max_tail, min_tail = np.max(tail), np.min(tail)
    khat = np.nan
    if abs(max_tail - min_tail) >= _TINY:
        cutoff = math.exp(cutoff_log)
        khat, sigma = _gpdfit(np.exp(tail) - cutoff)
        if np.isfinite(khat) and sigma > 0:
            for t in range(n_tail):
                p = (t + 0.5) / n_tail
                if khat == 0:
                    q = cutoff - sigma * math.log1p(-p)
                else:
                    q = cutoff + sigma * math.expm1(-khat * math.log1p(-p)) / khat
                value = math.log(q)
                lw[order[s - n_tail + t]] = max_tail if value > max_tail else value
    lw -= _logsumexp(lw)
    return lw, khat


@numba.njit(cache=True, nogil=True, parallel=True)
def psis_loo(log_lik, cdf, n_tail):
    """Per observation (columns of the draws x observations ``log_lik``): elpd_loo_i, the
    Pareto k of its importance ratios, and its LOO-PIT: the draws' predictive CDF at the
    observation (``cdf``, same shape) averaged with the same smoothed weights."""
    n = log_lik.shape[1]
    elpd = np.empty(n)
    khat = np.empty(n)
    pit = np.empty(n)
    for i in numba.prange(n):
        column = np.ascontiguousarray(log_lik[:, i])
        lw, k = _psis_one(column, n_tail)
        elpd[i] = _logsumexp(lw + column)
        khat[i] = k
        pit[i] = min(1.0, np.sum(np.exp(lw) * cdf[:, i]))
    return elpd, khat, pit


def good_k(n_draws: int) -> float:
    """ArviZ's threshold for a reliable Pareto k at this many draws."""
    return float(min(1 - 1 / np.log10(n_draws), 0.7))
