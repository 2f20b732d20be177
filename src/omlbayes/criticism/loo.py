"""Leave-one-out cross-validation of a collapsed Gaussian run, without student rows saved.

Given the variance parameters theta, the coefficients b are Gaussian with posterior
precision P = sum_g W_g'W_g / s2_g + diag(1 / lam) and mean bhat = P^-1 r. Removing student
i (design row w_i, residual variance s2_i) is a rank-one downdate, so with

    v_i = w_i' P^-1 w_i,   h_i = v_i / s2_i,   r_i = y_i - w_i' bhat

Sherman-Morrison gives y_i | y_-i, theta ~ Normal(y_i - r_i / (1 - h_i), s2_i / (1 - h_i))
exactly (with one residual SD, P = M / sigma^2 and h_i = w_i' M^-1 w_i). This holds for a
residual SD per group as well: s2_i is the variance of student i's group.

The posterior over theta is then reweighted to theta | y_-i with the importance ratios
1 / p(y_i | y_-i, theta), smoothed by PSIS (arviz-stats), so the LOO density integrates
over the hyper-parameters; Pareto k says where that reweighting is unreliable.

Only the entries of P^-1 on the pattern of W'W are needed for v_i; the sparse selected
inverse (``backends/sparse.py``) gives exactly those, for either kernel. Up to
``LOO_EXACT_MAX`` students every student is used; above it a simple random subsample of that
many (seeded by the data's hash, so two runs on the same data share it) stands for all N, its
pointwise values scaled by N / m: the total is then the usual estimate N * mean, and the
SE the arviz formula gives, sqrt(m * var(scaled)) = N * sd / sqrt(m), is exactly the
data SE and the subsampling error together (N sd^2 + N^2 sd^2 / m (1 - m / N)); the same
holds for paired differences in ``arviz.compare``. The cost is then bounded in N. The
hyper-parameter draws are thinned to ``max_draws``; the students are processed in chunks so
memory stays flat.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from threadpoolctl import threadpool_limits

from omlbayes.backends import psis
from omlbayes.backends.sparse import loo_loglik_grouped
from omlbayes.criticism import mcmc_stats
from omlbayes.errors import RunError
from omlbayes.model.design import DesignLayout, GroupedStats, design_matrix
from omlbayes.model.spec import ModelSpec

LOO_JSON = "loo.json"
# Thinned hyper-parameter draws used for LOO (all chains together): PSIS needs a few hundred.
LOO_DRAWS = 400
LOO_CHUNK_ROWS = 50_000
# Above this many students LOO uses a seeded simple random subsample of this size (cost and
# loo.json size bounded in N; the subsampling error is part of the reported SE).
LOO_EXACT_MAX = 50_000
# PSIS fits a Pareto tail to the largest 20% of the ratios: below this many draws it cannot.
MIN_DRAWS = 100


def thin(posterior: xr.Dataset, max_draws: int) -> xr.Dataset:
    """Every k-th draw of each chain, so that at most ``max_draws`` remain in all."""
    n_chain, n_draw = posterior.sizes["chain"], posterior.sizes["draw"]
    step = max(1, math.ceil(n_chain * n_draw / max_draws))
    return posterior.isel(draw=slice(None, None, step))


def hyper_arrays(
    posterior: xr.Dataset, layout: DesignLayout, spec: ModelSpec
) -> tuple[np.ndarray, np.ndarray]:
    """(log residual variances (S, G), log prior variances of b (S, p)), one row per draw."""
    from omlbayes.backends.collapsed import _fixed_prior_variances

    sigma = posterior["sigma"].to_numpy()
    n_samples = sigma.shape[0] * sigma.shape[1]
    log_s2 = 2.0 * np.log(sigma.reshape(n_samples, -1))
    fixed_var = _fixed_prior_variances(layout, spec)
    parts = [np.broadcast_to(np.log(fixed_var), (n_samples, fixed_var.size))]
    for term in layout.group_terms:
        tau = posterior[f"{term.name}_sigma"].to_numpy().reshape(n_samples)
        parts.append(np.repeat(2.0 * np.log(tau)[:, None], term.size, axis=1))
    return np.ascontiguousarray(log_s2), np.ascontiguousarray(np.concatenate(parts, axis=1))


def _loo_loglik_threads(log_s2: np.ndarray, log_lam: np.ndarray, *rest) -> tuple:
    """:func:`sparse.loo_loglik_grouped` with the draws split over one thread per usable core
    (the kernel releases the GIL; every draw is computed on its own, so the numbers do not
    depend on the split)."""
    n_draws = log_s2.shape[0]
    workers = max(1, min(n_draws, len(os.sched_getaffinity(0))))
    bounds = np.linspace(0, n_draws, workers + 1).astype(int)
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        parts = [
            pool.submit(loo_loglik_grouped, log_s2[a:b], log_lam[a:b], *rest)
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        results = [part.result() for part in parts]
    return tuple(np.concatenate([r[k] for r in results]) for k in range(3))


def _logsumexp_rows(a: np.ndarray) -> np.ndarray:
    top = a.max(axis=0)
    return top + np.log(np.exp(a - top).sum(axis=0))


def _grouped_layout(chunk: pd.DataFrame, layout: DesignLayout, pattern) -> tuple:
    """The students of ``chunk`` grouped by their design row's indicator columns (see
    ``sparse.loo_loglik_grouped``): per pattern its permuted columns (the numeric ones
    last), their kind, and every pair's position in the selected inverse, weight and class;
    per student its pattern and multipliers."""
    w = design_matrix(chunk, layout).tocsr()
    w.sum_duplicates()
    w.sort_indices()
    n, p = w.shape
    slices = layout.slices()
    numeric = np.array(
        [slices[t.name].start for t in layout.terms if t.kind == "numeric"], dtype=np.int64
    )
    n_num = numeric.size
    is_num = np.zeros(p, dtype=bool)
    is_num[numeric] = True
    counts = np.diff(w.indptr)
    rows = np.repeat(np.arange(n), counts)
    keep = ~is_num[w.indices]
    ind_counts = np.bincount(rows[keep], minlength=n)
    k_ind = int(ind_counts.max()) if n else 0
    ind = np.full((n, k_ind), -1, dtype=np.int64)
    slot = np.arange(keep.sum()) - np.repeat(np.cumsum(ind_counts) - ind_counts, ind_counts)
    ind[rows[keep], slot] = w.indices[keep]
    x = np.zeros((n, n_num))
    for j, c in enumerate(numeric):
        x[:, j] = np.asarray(w[:, c].todense()).ravel()
    patterns, student_pattern = np.unique(ind, axis=0, return_inverse=True)
    n_pat = patterns.shape[0]
    k_nz = k_ind + n_num
    inv_perm = np.empty(p, dtype=np.int64)
    inv_perm[pattern.perm] = np.arange(p)
    cols = np.zeros((n_pat, k_nz), dtype=np.int64)
    kind = np.full((n_pat, k_nz), -2, dtype=np.int64)  # -2: padding
    present = patterns >= 0
    cols[:, :k_ind] = np.where(present, inv_perm[np.maximum(patterns, 0)], 0)
    kind[:, :k_ind] = np.where(present, -1, -2)
    cols[:, k_ind:] = inv_perm[numeric]
    kind[:, k_ind:] = np.arange(n_num)
    upper = pattern.upper
    keys = upper.indices.astype(np.int64) + p * np.repeat(
        np.arange(p, dtype=np.int64), np.diff(upper.indptr)
    )
    apos = pattern.panel_positions()  # aligned with upper's entries
    first, second = np.triu_indices(k_nz)
    a, b = cols[:, first], cols[:, second]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    q = np.minimum(np.searchsorted(keys, lo + p * hi), keys.size - 1)
    live = (kind[:, first] > -2) & (kind[:, second] > -2)
    if np.any(keys[q[live]] != (lo + p * hi)[live]):
        raise RuntimeError("a design pair lies outside the pattern of W'W")
    coef = np.where(live, np.where(first == second, 1.0, 2.0), 0.0)
    # pair classes: 0 indicator x indicator; 1 + j indicator x numeric j; then numeric pairs
    ka, kb = kind[:, first], kind[:, second]
    upper_j, upper_l = np.triu_indices(n_num)
    num_pairs = {
        (int(a_), int(b_)): 1 + n_num + m
        for m, (a_, b_) in enumerate(zip(upper_j, upper_l, strict=True))
    }
    cls = np.zeros(ka.shape, dtype=np.int64)
    one = (ka == -1) ^ (kb == -1)
    cls[one] = 1 + np.maximum(ka, kb)[one]
    both = (ka >= 0) & (kb >= 0)
    for (j, k2), c in num_pairs.items():
        cls[both & (np.minimum(ka, kb) == j) & (np.maximum(ka, kb) == k2)] = c
    n_class = 1 + n_num + len(num_pairs)
    mult = np.ones((n, n_class))
    mult[:, 1 : 1 + n_num] = x
    for (j, k2), c in num_pairs.items():
        mult[:, c] = x[:, j] * x[:, k2]
    mean_mult = np.ones((n, 1 + n_num))
    mean_mult[:, 1:] = x
    positions = np.where(live, apos[q], 0)
    if positions.size and positions.max() > np.iinfo(np.int32).max:
        raise RuntimeError("the selected inverse has more entries than int32 indexes")
    # the kernel streams these three per pattern pair and draw: the narrowest exact types
    # (coefficients 0, 1, 2; a handful of classes) read a third of the bytes of 64-bit ones
    return (
        cols, kind, positions.astype(np.int32), coef.astype(np.float32), cls.astype(np.int8),
        n_class, student_pattern.astype(np.int64).ravel(), mult, mean_mult,
    )  # fmt: skip


def conditional_loo(
    frame: pd.DataFrame,
    layout: DesignLayout,
    spec: ModelSpec,
    stats: GroupedStats,
    posterior: xr.Dataset,
    *,
    max_draws: int = LOO_DRAWS,
    chunk_rows: int = LOO_CHUNK_ROWS,
    max_students: int = LOO_EXACT_MAX,
    sample_key: str = "",
):
    """PSIS-LOO over the hyper-parameters of exact conditional LOO densities: every
    student, or above ``max_students`` a subsample seeded by ``sample_key`` (the data's
    hash), scaled to all N (module docstring).

    Returns arviz-stats' ``ELPDDataLOO`` (pointwise) and a dict of facts for ``loo.json``.
    """
    from arviz_stats.loo.loo_helper import _get_r_eff
    from arviz_stats.utils import ELPDDataLOO

    from omlbayes.backends.collapsed import _term_blocks, sparse_inputs
    from omlbayes.backends.sparse import SparsePattern
    from omlbayes.model.design import _codes

    hyper_names = ["sigma", *(f"{t.name}_sigma" for t in layout.group_terms)]
    thinned = thin(posterior[hyper_names], max_draws)
    log_s2, log_lam = hyper_arrays(thinned, layout, spec)
    n_chain, n_draw = thinned.sizes["chain"], thinned.sizes["draw"]
    pattern = SparsePattern.build(stats.pattern(), _term_blocks(layout))  # the fit's, cached
    inputs = sparse_inputs(stats, pattern)
    by = spec.residual_sd_by
    # one relative efficiency of the thinned draws for every chunk
    clusters = mcmc_stats.proposal_clusters(thinned)
    if clusters is not None:  # importance-resampled: the ESS counts proposals
        values = [v.to_numpy().reshape(n_chain, n_draw, -1) for v in thinned.data_vars.values()]
        stacked = np.concatenate(values, axis=2).transpose(2, 0, 1)
        reff = float(mcmc_stats.cluster_ess(stacked, clusters).mean()) / (n_chain * n_draw)
    else:
        reff = _get_r_eff(xr.DataTree.from_dict({"/posterior": thinned}), n_chain * n_draw)
    tail = psis.tail_draws(n_chain * n_draw, float(reff))
    n_students = len(frame)
    if n_students > max_students:
        frame = frame.iloc[subsample_rows(n_students, max_students, sample_key)]
    weight = n_students / len(frame)  # N / m: 1 when every student is used
    elpd_i, pareto_k, loo_pit, p_loo = [], [], [], 0.0
    for start in range(0, len(frame), chunk_rows):
        chunk = frame.iloc[start : start + chunk_rows]
        grouped = _grouped_layout(chunk, layout, pattern)
        y = chunk[spec.response].to_numpy(dtype=np.float64)
        g = (
            np.zeros(len(chunk), dtype=np.int64)
            if by is None
            else _codes(chunk[by], stats.groups, by)
        )
        ll, within, cdf = _loo_loglik_threads(
            log_s2, log_lam, inputs["wtw_data"], inputs["wty"], inputs["sparse_pattern"],
            *grouped, y, g,
        )  # fmt: skip
        # PSIS-LOO as arviz-stats computes it, compiled over all students (psis.py)
        elpd, k_hat, pit = psis.psis_loo(np.ascontiguousarray(ll), cdf, tail)
        elpd_i.append(elpd)
        pareto_k.append(k_hat)
        loo_pit.append(pit)
        # p_loo = in-sample lpd - elpd_loo; the in-sample density integrates b out given
        # theta (arviz's own p would count only the hyper-parameters' share)
        lpd = _logsumexp_rows(within) - math.log(within.shape[0])
        p_loo += float(np.sum(lpd - elpd))
    good_k = psis.good_k(n_chain * n_draw)
    elpd_i = np.concatenate(elpd_i) * weight
    pareto_k = np.concatenate(pareto_k)
    n = elpd_i.size
    elpd = ELPDDataLOO(
        elpd=float(elpd_i.sum()),
        se=float(np.sqrt(n * np.var(elpd_i))),
        p=p_loo * weight,
        n_samples=n_chain * n_draw,
        n_data_points=n,
        scale="log",
        warning=bool(np.any(pareto_k > good_k)),
        good_k=float(good_k),
        elpd_i=xr.DataArray(elpd_i, dims=["student"]),
        pareto_k=xr.DataArray(pareto_k, dims=["student"]),
    )
    facts = {
        "method": (
            "exact leave-one-out given the hyper-parameters (Sherman-Morrison downdate of the "
            "collapsed Gaussian posterior; residual variance of the student's group), "
            "integrated over thinned hyper-parameter draws with PSIS (arviz-stats loo); "
            + (
                "all students, no subsampling"
                if weight == 1.0
                else f"a simple random subsample of {n:,} of the {n_students:,} students "
                "(seeded by the data's hash), pointwise values scaled by N / m; the SE "
                "includes the subsampling error"
            )
        ),
        "n_students": n_students,
        "n_subsample": n if weight != 1.0 else None,
        "subsampling_se": (
            float(n_students * np.std(elpd_i / weight) * math.sqrt((1 - n / n_students) / n))
            if weight != 1.0
            else 0.0
        ),
        "draws_used": n_chain * n_draw,
        "chains": n_chain,
        "thinning": int(posterior.sizes["draw"] // max(n_draw, 1)),
        "residual_sd_by": by,
        "loo_pit": pit_summary(np.concatenate(loo_pit)),
    }
    return elpd, facts


PIT_BINS = 20


def pit_summary(pit: np.ndarray) -> dict:
    """LOO-PIT values (uniform on [0, 1] for a calibrated predictive of continuous data):
    their histogram, the largest gap between their ECDF and the uniform one, and the
    Kolmogorov-Smirnov p-value. The index is a mean of Likert answers, so it takes a few
    dozen values: ties make the PIT slightly lumpy even for a right model, and at tens of
    thousands of students the KS test flags deviations too small to matter; read the
    ECDF gap (0.01 = one point of percentile) and the figure first."""
    from scipy import stats as sps

    pit = np.sort(pit)
    n = pit.size
    ecdf_gap = float(np.max(np.maximum(np.arange(1, n + 1) / n - pit, pit - np.arange(n) / n)))
    return {
        "n": int(n),
        "bins": PIT_BINS,
        "counts": np.histogram(pit, bins=PIT_BINS, range=(0, 1))[0].tolist(),
        "ecdf_max_gap": ecdf_gap,
        "ks_p": float(sps.kstwo.sf(ecdf_gap, n)),
        "share_below_0_025": float(np.mean(pit < 0.025)),
        "share_above_0_975": float(np.mean(pit > 0.975)),
    }


def pareto_k_counts(pareto_k: np.ndarray, good_k: float) -> dict[str, int]:
    return {
        f"k <= {good_k:.2f} (good)": int(np.sum(pareto_k <= good_k)),
        f"{good_k:.2f} < k <= 1 (bad)": int(np.sum((pareto_k > good_k) & (pareto_k <= 1.0))),
        "k > 1 (very bad)": int(np.sum(pareto_k > 1.0)),
    }


def subsample_rows(n: int, m: int, key: str) -> np.ndarray:
    """m of n row positions, sorted, drawn without replacement from a seed fixed by ``key``
    (the data's hash): the same data give the same subsample in every run."""
    seed = int.from_bytes(hashlib.sha256(f"loo-subsample:{key}".encode()).digest()[:8], "little")
    return np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False))


def pointwise_order(n: int, order_key: str) -> np.ndarray:
    """A permutation of the students fixed by ``order_key`` (the data's hash).

    The pointwise values are saved in this order, not in data row order, so a value cannot
    be read back to a row of the file; two runs on the same data share the order, which is
    all ``arviz.compare`` needs to pair them.
    """
    seed = int.from_bytes(hashlib.sha256(order_key.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).permutation(n)


def loo_payload(elpd, facts: dict, *, order_key: str) -> dict:
    """What ``loo.json`` holds: the summary, the method, and the pointwise values (rounded,
    with no identifiers, permuted by :func:`pointwise_order`) that ``arviz.compare`` needs for
    paired SEs."""
    k = elpd.pareto_k.to_numpy()
    order = pointwise_order(k.size, order_key)
    return {
        "elpd_loo": elpd.elpd,
        "se": elpd.se,
        "p_loo": elpd.p,
        "n": elpd.n_data_points,
        "n_samples": elpd.n_samples,
        "good_k": elpd.good_k,
        "pareto_k_counts": pareto_k_counts(k, elpd.good_k),
        "pareto_k_max": float(k.max()),
        "warning": elpd.warning,
        **facts,
        "pointwise_order": "permuted by a key derived from the data's hash (same data, same order)",
        "pointwise": {
            "elpd_i": np.round(elpd.elpd_i.to_numpy()[order], 6).tolist(),
            "pareto_k": np.round(k[order], 4).tolist(),
        },
    }


def write_loo(path: Path, elpd, facts: dict, *, order_key: str) -> None:
    path.write_text(json.dumps(loo_payload(elpd, facts, order_key=order_key)) + "\n")


def write_not_computed(path: Path, reason: str) -> None:
    """``loo.json`` of a run where LOO cannot be computed, saying why."""
    path.write_text(json.dumps({"computed": False, "reason": reason}) + "\n")


def _loo_json(path: Path | str) -> tuple[Path, dict]:
    path = Path(path)
    file = path / LOO_JSON if path.is_dir() else path
    if not file.is_file():
        raise RunError(f"{file.parent}: no {LOO_JSON} in this run (refit it to get LOO)")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RunError(f"{file}: not a valid {LOO_JSON} ({err}); refit the run") from None
    if raw.get("computed") is False:
        raise RunError(f"{file.parent}: no LOO in this run ({raw.get('reason', '')})")
    return file, raw


def subsample_scale(path: Path | str) -> float:
    """N / m of a run's pointwise LOO values: 1 when every student was used."""
    _, raw = _loo_json(path)
    m = raw.get("n_subsample")
    return float(raw["n_students"]) / float(m) if m else 1.0


def read_loo(path: Path | str, *, unscaled: bool = False):
    """An ``ELPDDataLOO`` rebuilt from a run folder's ``loo.json`` (for ``arviz.compare``).

    ``unscaled``: the pointwise values of a subsampled LOO without the N / m scaling (what
    stacking weights need; sums and SEs need the scaled ones).
    """
    from arviz_stats.utils import ELPDDataLOO

    file, raw = _loo_json(path)
    try:
        point = raw["pointwise"]
        scale = subsample_scale(path) if unscaled else 1.0
        elpd_i = np.asarray(point["elpd_i"], dtype=float) / scale
        return ELPDDataLOO(
            elpd=float(elpd_i.sum()) if unscaled else float(raw["elpd_loo"]),
            se=float(np.sqrt(elpd_i.size * np.var(elpd_i))) if unscaled else float(raw["se"]),
            p=float(raw["p_loo"]),
            n_samples=int(raw["n_samples"]),
            n_data_points=int(raw["n"]),
            scale="log",
            warning=bool(raw["warning"]),
            good_k=float(raw["good_k"]),
            elpd_i=xr.DataArray(elpd_i, dims=["student"]),
            pareto_k=xr.DataArray(np.asarray(point["pareto_k"], dtype=float), dims=["student"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise RunError(f"{file}: not a valid {LOO_JSON} ({err}); refit the run") from None
