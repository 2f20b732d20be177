"""ArviZ's convergence diagnostics, vectorised over parameters.

``arviz_stats.summary`` computes R-hat, ESS and MCSE one parameter at a time in Python
(about 4 ms each); a run with thousands of school x wave cells spends most of its summary
there. These functions compute the same numbers (rank-normalised split R-hat, bulk and tail
ESS, MCSE of the mean and of the SD, with ArviZ's definitions, tail quantiles and edge
cases) for all parameters at once: ranks, FFT autocovariances and moments as array
operations, only Geyer's initial-sequence loop per parameter, in numba. The test suite
checks them against ``arviz_stats`` itself.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import xarray as xr
from arviz_base import rcParams
from scipy import sparse, stats
from scipy.fftpack import next_fast_len

from omlbayes.constants import PROPOSAL_COORD

DIAGNOSTICS = ("ess_bulk", "ess_tail", "r_hat", "mcse_mean", "mcse_sd")
_BLOM = 3 / 8  # rank offset of the normal scores (Blom 1958), as ArviZ
_CHUNK = 512  # parameters per block: bounds the FFT's memory at thousands of parameters


# Arrays are (parameter, chain, draw): each parameter's draws contiguous, so sorts and FFTs
# run along the last axis.


def _split(x: np.ndarray) -> np.ndarray:
    """(k, chain, draw) -> (k, 2 chain, draw // 2): first and last halves as chains."""
    half = x.shape[2] // 2
    return np.concatenate([x[:, :, :half], x[:, :, x.shape[2] - half :]], axis=1)


def _z_scale(x: np.ndarray) -> np.ndarray:
    """Normal scores of the ranks over chains and draws, per parameter."""
    k, m, n = x.shape
    ranks = stats.rankdata(x.reshape(k, m * n), method="average", axis=1)
    return stats.norm.ppf((ranks - _BLOM) / (m * n - 2 * _BLOM + 1)).reshape(k, m, n)


def _rhat(x: np.ndarray) -> np.ndarray:
    n = x.shape[2]
    between = n * np.var(np.mean(x, axis=2), axis=1, ddof=1)
    within = np.mean(np.var(x, axis=2, ddof=1), axis=1)
    return np.sqrt((between / within + n - 1) / n)


@numba.njit(cache=True, error_model="numpy")  # x / 0 -> inf or nan, as in numpy
def _geyer(acov_mean, mean_var, var_plus, n_chain, n_draw):
    """ESS per parameter from the chain-averaged autocovariances (parameter x lag), by
    Geyer's initial positive and monotone sequences, as ArviZ's ``_ess``."""
    k = acov_mean.shape[0]
    out = np.empty(k)
    rho = np.zeros(n_draw)
    for j in range(k):
        rho[:] = 0.0
        rho_even = 1.0
        rho[0] = rho_even
        rho_odd = 1.0 - (mean_var[j] - acov_mean[j, 1]) / var_plus[j]
        rho[1] = rho_odd
        t = 1
        while t < n_draw - 3 and (rho_even + rho_odd) > 0.0:
            rho_even = 1.0 - (mean_var[j] - acov_mean[j, t + 1]) / var_plus[j]
            rho_odd = 1.0 - (mean_var[j] - acov_mean[j, t + 2]) / var_plus[j]
            if (rho_even + rho_odd) >= 0:
                rho[t + 1] = rho_even
                rho[t + 2] = rho_odd
            t += 2
        max_t = t - 2
        if rho_even > 0:
            rho[max_t + 1] = rho_even
        t = 1
        while t <= max_t - 2:
            if (rho[t + 1] + rho[t + 2]) > (rho[t - 1] + rho[t]):
                rho[t + 1] = (rho[t - 1] + rho[t]) / 2.0
                rho[t + 2] = rho[t + 1]
            t += 2
        size = n_chain * n_draw
        total = 0.0
        for i in range(max_t + 1):
            total += rho[i]
        tau = -1.0 + 2.0 * total + (rho[max_t + 1] if max_t + 1 < n_draw else 0.0)
        tau = max(tau, 1.0 / np.log10(size))
        out[j] = size / tau
        for i in range(n_draw):
            if np.isnan(rho[i]):
                out[j] = np.nan
                break
    return out


def _ess(x: np.ndarray) -> np.ndarray:
    """ESS of each parameter of x (k, chain, draw), ArviZ's ``_ess`` (not relative)."""
    x = np.asarray(x, dtype=float)
    _, m, n = x.shape
    centred = x - x.mean(axis=2, keepdims=True)
    size = next_fast_len(2 * n)
    spectrum = np.fft.rfft(centred, n=size, axis=2)
    spectrum *= np.conjugate(spectrum)
    acov = np.fft.irfft(spectrum, n=size, axis=2)[:, :, :n] / n
    mean_var = np.mean(acov[:, :, 0], axis=1) * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if m > 1:
        var_plus = var_plus + np.var(x.mean(axis=2), axis=1, ddof=1)
    out = _geyer(np.ascontiguousarray(acov.mean(axis=1)), mean_var, var_plus, m, n)
    constant = (x.max(axis=(1, 2)) - x.min(axis=(1, 2))) < np.finfo(float).resolution
    out[constant] = m * n
    return out


def cluster_ess(x: np.ndarray, clusters: sparse.csr_matrix) -> np.ndarray:
    """ESS of each parameter of x (k, chain, draw) whose draws repeat their importance
    proposals: ``clusters`` (draws x proposals, one-hot, draws in chain-major order).
    n times the draws' variance over the variance of their mean with each proposal's draws
    as one cluster, sum_c (sum_{i in c} (x_i - mean))^2 / n^2: the importance weights'
    variance plus the resampling's (a draw whose proposal no other draw shares counts 1)."""
    flat = x.reshape(x.shape[0], -1)
    centred = flat - flat.mean(axis=1, keepdims=True)
    spread = (centred**2).sum(axis=1)
    sums = np.asarray(clusters.T @ centred.T).T
    out = flat.shape[1] * spread / (sums**2).sum(axis=1)
    out[spread == 0] = flat.shape[1]  # a constant parameter, as ArviZ
    return out


def one_hot(proposal: np.ndarray) -> sparse.csr_matrix:
    """Draws x proposals (one-hot) of proposal indices (chain, draw), chain-major."""
    ids = np.unique(proposal.ravel(), return_inverse=True)[1]
    n = ids.size
    return sparse.csr_matrix((np.ones(n), (np.arange(n), ids)), shape=(n, ids.max() + 1))


def proposal_clusters(posterior: xr.Dataset) -> sparse.csr_matrix | None:
    """The clusters of importance-resampled draws (their ``proposal`` coordinate), for
    :func:`cluster_ess`; None for draws of a Markov chain."""
    if PROPOSAL_COORD not in posterior.coords:
        return None
    return one_hot(posterior[PROPOSAL_COORD].transpose("chain", "draw").to_numpy())


def _diagnostics_block(
    x: np.ndarray, tail_prob: float, clusters: sparse.csr_matrix | None = None
) -> np.ndarray:
    """(5, k): ess_bulk, ess_tail, r_hat, mcse_mean, mcse_sd of x (k, chain, draw); with
    ``clusters`` (importance-resampled draws) every ESS is :func:`cluster_ess`."""
    k, n_chain, n_draw = x.shape
    out = np.full((len(DIAGNOSTICS), k), np.nan)
    valid = ~np.isnan(x).any(axis=(1, 2))  # ArviZ gives NaN for a parameter with any NaN
    if n_draw < 4 or not valid.any():
        return out
    x = x[valid]
    if clusters is None:

        def ess(y: np.ndarray) -> np.ndarray:
            return _ess(_split(y))

    else:

        def ess(y: np.ndarray) -> np.ndarray:
            return cluster_ess(y, clusters)

    flat = x.reshape(x.shape[0], -1)
    split = _split(x)
    z_split = _z_scale(split)
    ess_bulk = _ess(z_split) if clusters is None else cluster_ess(_z_scale(x), clusters)
    tails = []
    for prob in sorted((tail_prob, 1 - tail_prob)):
        quantile = np.quantile(flat, prob, axis=1, method="linear")
        tails.append(ess((x <= quantile[:, None, None]).astype(float)))
    ess_tail = np.minimum(*tails)
    if n_chain >= 2:
        median = np.median(split.reshape(split.shape[0], -1), axis=1)
        folded = np.abs(split - median[:, None, None])
        r_hat = np.maximum(_rhat(z_split), _rhat(_z_scale(folded)))
    else:
        r_hat = np.full(x.shape[0], np.nan)
    mcse_mean = np.std(flat, axis=1, ddof=1) / np.sqrt(ess(x))
    centred = x - flat.mean(axis=1)[:, None, None]
    squared = centred**2
    evar = squared.reshape(x.shape[0], -1).mean(axis=1)
    fourth = (squared**2).reshape(x.shape[0], -1).mean(axis=1)
    mcse_sd = np.sqrt((fourth - evar**2) / ess(squared) / evar / 4)
    out[:, valid] = np.stack([ess_bulk, ess_tail, r_hat, mcse_mean, mcse_sd])
    return out


def diagnostics(posterior: xr.Dataset, *, tail_prob: float | None = None) -> xr.Dataset:
    """R-hat, ESS and MCSE of every variable, as ``arviz_stats.summary``'s diagnostics rows
    (dim ``summary``: ess_bulk, ess_tail, r_hat, mcse_mean, mcse_sd). ``tail_prob``: the
    tail ESS's quantile (and 1 - it), by default ArviZ's ``stats.ci_prob`` as ArviZ does."""
    prob = float(rcParams["stats.ci_prob"] if tail_prob is None else tail_prob)
    clusters = proposal_clusters(posterior)
    with np.errstate(divide="ignore", invalid="ignore"):  # constant parameters, as ArviZ
        return _diagnostics(posterior, prob, clusters)


def _diagnostics(posterior: xr.Dataset, prob: float, clusters) -> xr.Dataset:
    out = {}
    for name, da in posterior.data_vars.items():
        da = da.transpose("chain", "draw", ...)
        rest = da.dims[2:]
        values = da.to_numpy().astype(float)
        per_parameter = values.reshape(values.shape[0], values.shape[1], -1).transpose(2, 0, 1)
        blocks = [
            np.ascontiguousarray(per_parameter[i : i + _CHUNK])
            for i in range(0, max(per_parameter.shape[0], 1), _CHUNK)
        ]
        if len(blocks) > 1:  # sorts and FFTs release the GIL: blocks in parallel threads
            with ThreadPoolExecutor(min(len(blocks), len(os.sched_getaffinity(0)))) as pool:
                parts = list(pool.map(lambda b: _diagnostics_block(b, prob, clusters), blocks))
        else:
            parts = [_diagnostics_block(blocks[0], prob, clusters)]
        result = np.concatenate(parts, axis=1)
        out[name] = xr.DataArray(
            result.reshape((len(DIAGNOSTICS), *values.shape[2:])),
            dims=("summary", *rest),
            coords={d: da.coords[d] for d in rest if d in da.coords},
        )
    return xr.Dataset(out).assign_coords(summary=list(DIAGNOSTICS))
