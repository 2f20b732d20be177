"""Exact fast fitting of Gaussian multilevel models by collapsing the linear effects.

Given the variance parameters theta = (sigma, one SD per group term), every coefficient
b (common effects and group cells) is jointly Gaussian a priori, b ~ N(0, Lambda), and
y | b ~ N(W b, sigma^2 I). So b integrates out in closed form:

    log p(y | theta) = -n/2 log(2 pi sigma^2) - 1/2 log|Lambda| - 1/2 log|P|
                       - 1/(2 sigma^2) (y'y - (W'y)' M^-1 (W'y)),
    M = W'W + sigma^2 Lambda^-1,  P = M / sigma^2,

which depends on the data only through W'W, W'y and y'y. NUTS samples the few variance
parameters (no funnels, a cost per gradient independent of the number of students), and
each draw of b comes from its exact conditional N(M^-1 W'y, sigma^2 M^-1). The result is
the same posterior as the plain model, not an approximation.

Two kernels compute log p(y | theta): a dense one (LAPACK, O(p^3) per gradient, best for a
few hundred coefficients) and a sparse one (``sparse.py``: a sparse Cholesky factor and
selected inverse with a dense trailing block, whose cost follows the fill of the factor,
not p^3). :func:`choose_kernel` picks the one with the lower predicted cost (and times them
where that is cheap, for the record); the spec can force one
(``kernel = "dense" | "sparse"`` under ``[sampler]``). A residual SD per level of one column
(``residual_sd_by``) keeps the model collapsible, with statistics per level; the sparse
kernel handles it.

Group SDs are sampled on the log scale by default. The SD of a term with many cells whose
posterior piles up against zero has, on that scale, a long left tail that NUTS crosses
slowly, and every cell of the term inherits the slow mixing. Such an SD can be sampled
*folded*, tau = |w|, with w from the symmetric density whose half is the SD's prior (so tau
keeps exactly its prior): the density of w is smooth through zero. Under ``[sampler]``,
``sd_parameterization = "auto"`` folds an SD where :func:`folded_terms` finds that case
before sampling (posterior mode and profile at zero), ``"folded"`` folds every SD whose prior
allows it, ``"log"`` (the default) none.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pymc as pm
import pytensor.tensor as pt
import xarray as xr
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

from omlbayes import constants as C
from omlbayes.backends import density, heap, importance
from omlbayes.backends.density import CollapsedDensity
from omlbayes.backends.marginal import MarginalLoglik
from omlbayes.backends.proposal import ScannedCopula
from omlbayes.backends.sampling import (
    COLLAPSED_MAX_TREE_DEPTH,
    TARGET_ACCEPT,
    Plan,
    derived_seed,
    sample_nutpie,
)
from omlbayes.backends.sparse import (
    SparseMarginalLoglik,
    SparsePattern,
    sparse_conditional_draws,
    sparse_marginal_loglik,
)
from omlbayes.errors import SpecError
from omlbayes.model.design import (
    SIGMA_DIM_SUFFIX,
    DesignLayout,
    GroupedStats,
    SufficientStats,
    variance_names,
)
from omlbayes.model.spec import ModelSpec

MARGINAL = "marginal_loglik"
# Below this many coefficients the dense kernel takes well under a millisecond: no analysis.
DENSE_ALWAYS_P = 150
# Above this a dense evaluation takes seconds, so it is not even timed.
DENSE_TIMING_MAX_P = 3000
# An optimistic single-thread LAPACK rate (flop/s) for the dense kernel's ~p^3 flops: when
# the sparse kernel already beats that prediction tenfold, the dense one is not timed.
DENSE_FLOPS_PER_S = 2e10
# The sparse kernel's fixed cost per call; the rest of its predicted seconds comes from its
# symbolic analysis (``SparsePattern.predicted_s``: scalar loop counts, the grouped matrix
# products and the dense tail). The choice between kernels compares these predictions, not
# timings, so that the same data and seed always pick the same kernel and give the same
# numbers.
SPARSE_OVERHEAD_S = 5e-5
# With one residual SD, auto takes the sparse kernel only when its predicted cost is below
# the dense kernel's by this factor: near parity the dense kernel (plain LAPACK, no symbolic
# analysis) is kept, so a change of the sparse cost model does not flip the choice for small
# models (the flagship, p = 276: predicted 1.05 ms dense, 0.92 ms sparse).
SPARSE_MARGIN = 1.5
# Gradients per NUTS draw assumed by the cost estimate: these posteriors over a few variance
# parameters take trajectories of depth 3-4 (the flagship averages about 2^3.5 steps).
GRADIENTS_PER_DRAW = 15
# Auto mode refuses a fit whose sampling is expected to take longer than this.
MAX_EXPECTED_SAMPLING_S = 3 * 3600.0
# Draws per chain an importance-sampled fit keeps (resampled): the early stop's usual 500
IMPORTANCE_DRAWS = 500
FOLDED_SUFFIX = "_folded"  # the signed w behind tau = |w|; dropped from the posterior
# Auto mode folds the SD of a term with at least FOLD_MIN_CELLS cells when its posterior
# density at zero (other parameters re-optimized) is within BOUNDARY_DROP nats of the peak,
# i.e. at least e^-3 = 5% of it. Many cells bound such an SD sharply from above, so its
# posterior piles up against zero and spans orders of magnitude on the log scale, which
# NUTS crosses slowly (national bench survey, 4,200 school x wave cells at zero: folded,
# sampling took 142 s instead of 221 s and that SD's bulk ESS rose from 1,259 to 2,754). The
# SD of a term with few cells has a long right tail that the log scale suits: folding the
# 8-cell parent_edu x gender SD of the flagship (drop 0.8) cost 63% more sampling time and
# halved the smallest ESS.
BOUNDARY_DROP = 3.0
FOLD_MIN_CELLS = 100
# "Zero" for the profile: this fraction of the SD's prior scale (the likelihood depends on
# tau^2, so the difference to exactly zero is ~1e-8 of the prior variance).
PROFILE_ZERO = 1e-4


@dataclass
class KernelChoice:
    """Which kernel evaluates the marginal likelihood, and the measurements behind it."""

    kernel: str  # "dense" | "sparse"
    reason: str
    pattern: SparsePattern | None = None
    facts: dict = field(default_factory=dict)


def _fixed_prior_variances(layout: DesignLayout, spec: ModelSpec) -> np.ndarray:
    """Prior variances of the common coefficients (their priors must be zero-mean Normals)."""
    out = []
    for term in layout.terms:
        if term.kind == "group":
            continue
        kind = "Intercept" if term.kind == "intercept" else "common"
        prior = spec.prior_for(term.name, kind)
        if prior.dist != "Normal" or prior.params["mu"] != 0.0:
            raise SpecError(
                f"the collapsed backend needs Normal(mu=0, sigma) priors on common effects; "
                f"{term.name} has {prior}; use --backend bambi"
            )
        out += [prior.params["sigma"] ** 2] * term.size
    return np.asarray(out)


def _prior_log_var(layout: DesignLayout, spec: ModelSpec) -> np.ndarray:
    """log prior variances at the group SDs' prior scales: a typical point for timing."""
    fixed_var = _fixed_prior_variances(layout, spec)
    group = [
        np.full(t.size, 2.0 * np.log(spec.prior_for(t.name, "group_sigma").scale))
        for t in layout.group_terms
    ]
    return np.concatenate([np.log(fixed_var), *group])


def _time_call(fn, *, budget_s: float = 0.3, max_reps: int = 20) -> float:
    """Seconds per call: the best of a few calls (after one warm-up call)."""
    fn()
    best, spent, reps = np.inf, 0.0, 0
    while reps < 3 or (spent < budget_s and reps < max_reps):
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        best, spent, reps = min(best, dt), spent + dt, reps + 1
    return float(best)


def _dense_seconds(stats: SufficientStats, log_var: np.ndarray) -> float:
    """One dense evaluation's linear algebra: factor, solve, triangular inverse."""
    m = stats.wtw + np.diag(np.exp(-log_var))

    def once():
        chol, _ = lapack.dpotrf(m, lower=1, clean=1)
        lapack.dpotrs(chol, stats.wty, lower=1)
        inv, _ = lapack.dtrtri(chol, lower=1)
        np.einsum("ij,ij->j", inv, inv)

    with threadpool_limits(1, user_api="blas"):
        return _time_call(once, max_reps=3)


def sparse_inputs(stats: GroupedStats, pattern: SparsePattern) -> dict[str, np.ndarray]:
    """The sparse kernel's data inputs (also the names of the model's ``pm.Data``)."""
    return {
        "wtw_data": np.stack([pattern.values(a) for a in stats.wtw]),
        "wty": np.asarray(stats.wty, dtype=np.float64),
        "yty": np.asarray(stats.yty, dtype=np.float64),
        "n_obs": np.asarray(stats.n, dtype=np.float64),
        "sparse_pattern": pattern.packed,
    }


def _term_blocks(layout: DesignLayout) -> list[np.ndarray]:
    """Coefficient indices per term; the common effects form one block (the dense part)."""
    blocks, common = [], []
    for term, sl in zip(layout.terms, layout.slices().values(), strict=True):
        idx = np.arange(sl.start, sl.stop)
        if term.kind == "group":
            blocks.append(idx)
        else:
            common.append(idx)
    return [np.concatenate(common), *blocks] if common else blocks


def choose_kernel(
    stats: GroupedStats, layout: DesignLayout, spec: ModelSpec, *, cores: int | None = None
) -> KernelChoice:
    """Dense or sparse, by the predicted cost per gradient (deterministic); one evaluation of
    each is also timed where that is cheap, for the record and the cost gate.

    Raises ``SpecError`` in auto mode when the expected sampling time exceeds
    ``MAX_EXPECTED_SAMPLING_S`` (the message gives the estimate and how to force the fit).
    """
    requested = spec.sampler.kernel
    p, n_groups = layout.n_coef, stats.n_groups
    facts: dict = {"kernel_requested": requested, "p": p, "residual_groups": n_groups}
    if requested == "dense" and n_groups > 1:
        raise SpecError(
            "the dense kernel has one residual SD; residual_sd_by needs kernel = 'sparse' "
            "(or 'auto')"
        )
    log_var = _prior_log_var(layout, spec)
    facts["dense_flops"] = float(p) ** 3
    if requested == "dense" or (requested == "auto" and n_groups == 1 and p <= DENSE_ALWAYS_P):
        choice = KernelChoice(
            "dense",
            "asked for" if requested == "dense" else f"p = {p} <= {DENSE_ALWAYS_P}: dense",
        )
        if p <= DENSE_TIMING_MAX_P or requested == "dense":
            facts["dense_s_per_gradient"] = _dense_seconds(stats.pooled(), log_var)
        choice.facts = facts
        _check_cost(choice, float(p) ** 3 / DENSE_FLOPS_PER_S, spec, cores)
        return choice
    t = time.perf_counter()
    pattern = SparsePattern.build(stats.pattern(), _term_blocks(layout))
    inputs = sparse_inputs(stats, pattern)
    log_s2 = np.zeros(n_groups)
    facts.update(
        sparse_analysis_s=time.perf_counter() - t,
        sparse_ordering=pattern.ordering,
        sparse_ordering_flops=pattern.candidates,
        sparse_flops=pattern.factor_flops,
        sparse_nnz_factor=pattern.nnz_factor,
        sparse_tail_start=pattern.tail_start,
        sparse_tail_groups=pattern.n_groups,
        sparse_supernodes=pattern.n_supernodes,
    )
    with threadpool_limits(1, user_api="blas"):  # as in sampling: one BLAS thread per chain
        facts["sparse_s_per_gradient"] = _time_call(
            lambda: sparse_marginal_loglik(
                log_s2,
                log_var,
                inputs["wtw_data"],
                inputs["wty"],
                inputs["yty"],
                inputs["n_obs"],
                inputs["sparse_pattern"],
            )
        )
    dense_predicted = float(p) ** 3 / DENSE_FLOPS_PER_S
    facts["dense_s_predicted"] = dense_predicted
    clearly_sparse = 10.0 * facts["sparse_s_per_gradient"] < dense_predicted
    if requested == "auto" and n_groups == 1 and p <= DENSE_TIMING_MAX_P and not clearly_sparse:
        facts["dense_s_per_gradient"] = _dense_seconds(stats.pooled(), log_var)
    sparse_predicted = SPARSE_OVERHEAD_S + pattern.predicted_s
    facts["sparse_s_predicted"] = sparse_predicted
    if requested == "sparse":
        choice = KernelChoice("sparse", "asked for", pattern)
    elif n_groups == 1 and dense_predicted < SPARSE_MARGIN * sparse_predicted:
        choice = KernelChoice(
            "dense",
            f"predicted dense {dense_predicted * 1e3:.3g} ms < {SPARSE_MARGIN:g} x sparse "
            f"{sparse_predicted * 1e3:.3g} ms per gradient (from p^3 and the sparse cost model)",
        )
    else:
        why = (
            "one residual SD per group needs it"
            if n_groups > 1
            else f"predicted sparse {sparse_predicted * 1e3:.3g} ms per gradient vs dense "
            f"{dense_predicted * 1e3:.3g} ms (from the sparse cost model and p^3)"
        )
        choice = KernelChoice("sparse", why, pattern)
    choice.facts = facts
    # predicted, not timed: a loaded machine must not refuse a fit an idle one would run
    predicted = sparse_predicted if choice.kernel == "sparse" else dense_predicted
    _check_cost(choice, predicted, spec, cores)
    return choice


def _check_cost(choice: KernelChoice, seconds: float, spec: ModelSpec, cores) -> None:
    """Record the expected sampling time (from the predicted seconds per gradient); refuse
    (auto mode) a fit that cannot finish."""
    settings = spec.sampler
    parallel = max(1, min(settings.chains, cores or os.cpu_count() or 1))
    gradients = settings.chains * (settings.tune + settings.draws) * GRADIENTS_PER_DRAW
    expected = seconds * gradients / parallel
    choice.facts["expected_sampling_s"] = expected
    if settings.kernel == "auto" and expected > MAX_EXPECTED_SAMPLING_S:
        raise SpecError(
            f"this fit would take about {expected / 3600:.1f} h to sample ({seconds:.3g} s per "
            f"gradient with the faster kernel, {choice.kernel}, x ~{gradients:,} gradients on "
            f"{parallel} core(s)); no faster path exists for this design; to run it anyway "
            f'set kernel = "{choice.kernel}" under [sampler] (or --kernel {choice.kernel})'
        )


def _group_sd(name: str, prior, folded: bool) -> pt.TensorVariable:
    """The SD ``name`` with its spec prior: a plain (log-transformed) variable, or |w|."""
    if not folded:
        return prior.pymc(name)
    dist, params = prior.twin()
    w = getattr(pm, dist)(f"{name}{FOLDED_SUFFIX}", **params)
    return pm.Deterministic(name, pt.abs(w))


def foldable(spec: ModelSpec, term_name: str) -> bool:
    """Whether this term's SD prior has a smooth symmetric twin (``Prior.twin``)."""
    return spec.prior_for(term_name, "group_sigma").foldable


def build_model(
    stats: SufficientStats | GroupedStats,
    layout: DesignLayout,
    spec: ModelSpec,
    choice: KernelChoice | None = None,
    folded: frozenset[str] = frozenset(),
) -> pm.Model:
    """The collapsed PyMC model: only sigma and the group SDs are free parameters.

    ``SufficientStats`` (or a dense ``choice``) gives the dense kernel; a sparse ``choice``
    the sparse one, with one residual SD per group of ``GroupedStats``. The group terms named
    in ``folded`` have their SD sampled folded (tau = |w|).
    """
    if spec.family != "gaussian":
        raise SpecError("the collapsed backend fits Gaussian models only; use --backend bambi")
    sparse = choice is not None and choice.kernel == "sparse"
    if isinstance(stats, GroupedStats) and not sparse:
        if stats.n_groups > 1:
            raise SpecError("one residual SD per group needs the sparse kernel")
        stats = stats.pooled()
    fixed_var = _fixed_prior_variances(layout, spec)
    group_terms = layout.group_terms
    coords = {}
    if sparse and stats.n_groups > 1:
        coords[_sigma_dim(spec)] = list(stats.groups)
    with pm.Model(coords=coords) as model:
        if coords:
            sigma = spec.prior_for("sigma", "sigma").pymc("sigma", dims=_sigma_dim(spec))
        else:
            sigma = spec.prior_for("sigma", "sigma").pymc("sigma")
        taus = [
            _group_sd(f"{t.name}_sigma", spec.prior_for(t.name, "group_sigma"), t.name in folded)
            for t in group_terms
        ]
        sizes = [t.size for t in group_terms]
        log_var = pt.concatenate(
            [pt.log(pt.as_tensor(fixed_var))]
            + [pt.repeat(2.0 * pt.log(tau), size) for tau, size in zip(taus, sizes, strict=True)]
        )
        if sparse:
            data = [pm.Data(k, v) for k, v in sparse_inputs(stats, choice.pattern).items()]
            log_s2 = 2.0 * pt.log(pt.atleast_1d(sigma))
            loglik, _, _ = SparseMarginalLoglik()(log_s2, log_var, *data)
        else:
            data = [
                pm.Data(name, value)
                for name, value in (
                    ("wtw", stats.wtw),
                    ("wty", stats.wty),
                    ("yty", np.asarray(stats.yty)),
                    ("n_obs", np.asarray(float(stats.n))),
                )
            ]
            loglik, _, _ = MarginalLoglik()(2.0 * pt.log(sigma), log_var, *data)
        pm.Potential(MARGINAL, loglik)
    return model


def build_density(
    stats: SufficientStats | GroupedStats,
    layout: DesignLayout,
    spec: ModelSpec,
    choice: KernelChoice | None = None,
    folded: frozenset[str] = frozenset(),
) -> CollapsedDensity:
    """The model of :func:`build_model` as compiled code nutpie samples (``density.py``):
    the same density, without a graph to compile per run."""
    if spec.family != "gaussian":
        raise SpecError("the collapsed backend fits Gaussian models only; use --backend bambi")
    sparse = choice is not None and choice.kernel == "sparse"
    if isinstance(stats, SufficientStats):
        stats = GroupedStats.from_pooled(stats)
    if stats.n_groups > 1 and not sparse:
        raise SpecError("one residual SD per group needs the sparse kernel")
    terms = layout.group_terms
    priors = [spec.prior_for("sigma", "sigma")] * stats.n_groups
    priors += [spec.prior_for(t.name, "group_sigma") for t in terms]
    codes = np.array([density.prior_code(p) for p in priors])
    shared = {
        "n_sigma": stats.n_groups,
        "folded": np.array([t.name in folded for t in terms], dtype=np.bool_),
        "family": codes[:, 0].astype(np.int64),
        "pa": codes[:, 1].astype(np.float64),
        "pb": codes[:, 2].astype(np.float64),
        "fixed_log_var": np.log(_fixed_prior_variances(layout, spec)),
        "term_size": np.array([t.size for t in terms], dtype=np.int64),
    }
    if sparse:
        shared.update(sparse_inputs(stats, choice.pattern))
    else:
        pooled = stats.pooled()
        shared.update(
            wtw=np.ascontiguousarray(pooled.wtw),
            wty=np.asarray(pooled.wty, dtype=np.float64),
            yty=np.array([float(pooled.yty)]),
            n_obs=np.array([float(pooled.n)]),
        )
    many = stats.n_groups > 1
    return CollapsedDensity(
        kernel="sparse" if sparse else "dense",
        names=("sigma", *(f"{t.name}_sigma" for t in terms)),
        sigma_groups=tuple(stats.groups) if many else (),
        sigma_dim=_sigma_dim(spec) if many else None,
        folded=tuple(bool(v) for v in shared["folded"]),
        scales=np.array([p.scale for p in priors]),
        shared=shared,
    )


def boundary_drops(
    density: CollapsedDensity, terms: list[str]
) -> tuple[dict[str, dict], np.ndarray]:
    """Per group term in ``terms``, of a log-scale ``density`` (nothing folded): its SD's
    posterior mode and how far the log posterior density drops when the SD is set to zero,
    the other parameters re-optimized; and every SD at that mode (the density's order).

    Densities are on the SD scale (no log-transform Jacobian), where an SD whose data allow
    zero has its mode at or near zero. The search runs over the variances (tau^2, bounded
    below by ``(PROFILE_ZERO * prior scale)^2``), where the gradient does not vanish at zero
    as it does on the log scale (there an SD that strays towards zero never comes back).
    Deterministic: L-BFGS-B from the priors' scales.
    """
    from scipy.optimize import minimize

    if any(density.folded):
        raise ValueError("boundary_drops needs a density of log-scale SDs only")

    def neg(var: np.ndarray) -> tuple[float, np.ndarray]:
        u = 0.5 * np.log(var)  # the density's log-SD coordinates
        value, grad = density.logp(u)
        if not np.isfinite(value):
            return np.inf, np.zeros_like(var)
        # without the log-scale Jacobian (+u per coordinate): the density of the SDs
        return -(value - float(u.sum())), -(grad - 1.0) / (2.0 * var)

    floor = (PROFILE_ZERO * density.scales) ** 2

    def optimum(fn, x: np.ndarray, lower: np.ndarray):
        # tight tolerances and one restart: L-BFGS's default relative tolerance stops early
        # on these flat surfaces
        bounds = [(lo, None) for lo in lower]
        for _ in range(2):
            res = minimize(fn, x, jac=True, method="L-BFGS-B", bounds=bounds, options=_LBFGS)
            x = res.x
        return res

    n_sigma = density.n_dim - len(density.folded)
    index = {term: density.names.index(f"{term}_sigma") - 1 + n_sigma for term in terms}

    def profile(term: str) -> float:
        i = index[term]
        fixed = _fixed_at(neg, mode.x, i, floor[i])
        return optimum(fixed, np.delete(mode.x, i), np.delete(floor, i)).fun

    with threadpool_limits(1, user_api="blas"):  # as in sampling: one BLAS thread
        mode = optimum(neg, density.scales**2, floor)
        # an SD whose mode is at its floor already is the profile's optimum (the mode is a
        # local optimum with that SD held there): its drop is 0 without a search
        away = [term for term in terms if mode.x[index[term]] > floor[index[term]]]
        # the profiles are independent: one thread each (the kernel releases the GIL)
        with ThreadPoolExecutor(max(1, len(os.sched_getaffinity(0)))) as pool:
            searched = dict(zip(away, pool.map(profile, away), strict=True))
    profiles = {term: searched.get(term, mode.fun) for term in terms}
    out = {term: {"mode": float(np.sqrt(mode.x[index[term]]))} for term in terms}
    # a profile above the mode's value means the mode search stopped short: the best of all
    # optima found is the reference
    best = min([mode.fun, *profiles.values()])
    for name, value in profiles.items():
        out[name]["drop"] = float(value - best)
    return out, np.sqrt(mode.x)


def _fixed_at(fn, x: np.ndarray, i: int, value: float):
    """``fn`` of the coordinates other than ``i``, with ``x[i]`` held at ``value``."""
    free = np.arange(x.size) != i

    def restricted(z: np.ndarray) -> tuple[float, np.ndarray]:
        full = x.copy()
        full[i], full[free] = value, z
        f, grad = fn(full)
        return f, grad[free]

    return restricted


_LBFGS = {"ftol": 1e-14, "gtol": 1e-8, "maxiter": 2000}


def folded_terms(
    stats: GroupedStats, layout: DesignLayout, spec: ModelSpec, choice: KernelChoice | None
) -> tuple[frozenset[str], dict]:
    """The group terms whose SD is sampled folded, and the facts behind the choice."""
    setting = spec.sampler.sd_parameterization
    can_fold = [t.name for t in layout.group_terms if foldable(spec, t.name)]
    facts: dict = {"sd_parameterization": setting}
    folded: frozenset[str] = frozenset()
    if setting == "folded":
        folded = frozenset(can_fold)
    elif setting == "auto":
        sizes = {t.name: t.size for t in layout.group_terms}
        candidates = [name for name in can_fold if sizes[name] >= FOLD_MIN_CELLS]
        if candidates:
            t = time.perf_counter()
            drops, mode_sds = boundary_drops(build_density(stats, layout, spec, choice), candidates)
            facts["sd_boundary_s"] = time.perf_counter() - t
            facts["sd_boundary"] = drops
            facts["sd_mode"] = [float(v) for v in mode_sds]
            folded = frozenset(name for name in candidates if drops[name]["drop"] < BOUNDARY_DROP)
    facts["folded_sds"] = [t.name for t in layout.group_terms if t.name in folded]
    if setting != "log":  # say which SDs no setting can fold (their prior has no smooth twin)
        facts["unfoldable_sds"] = [t.name for t in layout.group_terms if t.name not in can_fold]
    return folded, facts


def _without_folded(posterior: xr.Dataset) -> xr.Dataset:
    """The posterior without the signed w of folded SDs (tau = |w| is the parameter)."""
    return posterior.drop_vars([v for v in posterior.data_vars if v.endswith(FOLDED_SUFFIX)])


def _sigma_dim(spec: ModelSpec) -> str:
    return f"{spec.residual_sd_by}{SIGMA_DIM_SUFFIX}"


def _coefficient_dataset(coef: np.ndarray, layout: DesignLayout, posterior) -> xr.Dataset:
    out = {}
    for term, sl in zip(layout.terms, layout.slices().values(), strict=True):
        values = coef[:, :, sl]
        if term.coords:
            out[term.name] = xr.DataArray(
                values,
                dims=("chain", "draw", term.dim),
                coords={term.dim: list(term.coords)},
            )
        else:
            out[term.name] = xr.DataArray(values[:, :, 0], dims=("chain", "draw"))
    return xr.Dataset(out, coords={"chain": posterior["chain"], "draw": posterior["draw"]})


class CoefficientDraws:
    """Exact conditional draws of every coefficient, one per posterior draw of the variance
    parameters, extended draw by draw: chain c's noise comes from its own stream in draw
    order, so the first K draws are the same whether they are drawn at once or at
    checkpoints (``backends/sampling.py``)."""

    def __init__(self, stats, layout: DesignLayout, spec: ModelSpec, choice, *, seed: int):
        self.layout, self.choice = layout, choice
        self.sparse = choice is not None and choice.kernel == "sparse"
        self.stats = (
            stats if self.sparse else (stats.pooled() if isinstance(stats, GroupedStats) else stats)
        )
        self.log_fixed = np.log(_fixed_prior_variances(layout, spec))
        self.inputs = sparse_inputs(stats, choice.pattern) if self.sparse else None
        self.seed = seed
        self.rngs: list[np.random.Generator] = []
        self.parts: list[list[np.ndarray]] = []
        self.done = 0

    def extend(self, posterior: xr.Dataset) -> np.ndarray:
        """The coefficients (chain, draw, p) of every draw of ``posterior``, computing only
        the draws not done yet."""
        sigma = posterior["sigma"].to_numpy()
        n_chain, n_draw = sigma.shape[:2]
        if not self.rngs:
            self.rngs = [
                np.random.default_rng(derived_seed(self.seed, f"coefficients/{c}"))
                for c in range(n_chain)
            ]
            self.parts = [[] for _ in range(n_chain)]
        new = slice(self.done, n_draw)
        if n_draw > self.done:
            log_s2 = 2.0 * np.log(sigma[:, new].reshape(n_chain, n_draw - self.done, -1))
            log_tau2 = [
                2.0 * np.log(posterior[f"{t.name}_sigma"].to_numpy()[:, new])
                for t in self.layout.group_terms
            ]
            noise = [
                rng.standard_normal((n_draw - self.done, self.layout.n_coef)) for rng in self.rngs
            ]
            workers = max(1, min(n_chain, len(os.sched_getaffinity(0))))
            # chains in parallel threads (the kernels release the GIL); the noise is drawn
            # above in this thread, so the numbers do not depend on the threads
            with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
                jobs = [
                    pool.submit(self._chain, log_s2[c], [lt[c] for lt in log_tau2], noise[c])
                    for c in range(n_chain)
                ]
                for c, job in enumerate(jobs):
                    self.parts[c].append(job.result())
            self.done = n_draw
        return np.stack([np.concatenate(p)[:n_draw] for p in self.parts])

    def _chain(self, log_s2: np.ndarray, log_tau2: list[np.ndarray], noise: np.ndarray):
        n_draw = log_s2.shape[0]
        log_var = np.concatenate(
            [np.broadcast_to(self.log_fixed, (n_draw, self.log_fixed.size))]
            + [
                np.repeat(lt[:, None], t.size, axis=1)
                for lt, t in zip(log_tau2, self.layout.group_terms, strict=True)
            ],
            axis=1,
        )
        if self.sparse:
            return sparse_conditional_draws(
                np.ascontiguousarray(log_s2),
                np.ascontiguousarray(log_var),
                self.inputs["wtw_data"],
                self.inputs["wty"],
                self.inputs["sparse_pattern"],
                noise,
            )
        out = np.empty((n_draw, self.layout.n_coef))
        for d in range(n_draw):
            s2 = math.exp(log_s2[d, 0])
            m = self.stats.wtw + np.diag(s2 / np.exp(log_var[d]))
            chol, info = lapack.dpotrf(m, lower=1, clean=1)
            if info != 0:
                raise FloatingPointError(f"Cholesky failed at draw {d}")
            mean, _ = lapack.dpotrs(chol, self.stats.wty, lower=1)
            # b = mean + sigma L^-T z has covariance sigma^2 M^-1
            offset, _ = lapack.dtrtrs(chol, noise[d], lower=1, trans=1)
            out[d] = mean + math.sqrt(s2) * offset
        return out

    def dataset(self, posterior: xr.Dataset) -> xr.Dataset:
        return _coefficient_dataset(self.extend(posterior), self.layout, posterior)


def draw_coefficients(
    posterior: xr.Dataset,
    stats: SufficientStats | GroupedStats,
    layout: DesignLayout,
    spec: ModelSpec,
    *,
    seed: int,
    choice: KernelChoice | None = None,
) -> xr.Dataset:
    """Exact conditional draws of every coefficient, one per posterior draw of theta."""
    return CoefficientDraws(stats, layout, spec, choice, seed=seed).dataset(posterior)


def fit_collapsed(
    stats: SufficientStats | GroupedStats,
    layout: DesignLayout,
    spec: ModelSpec,
    *,
    seed: int,
    progressbar: bool = True,
    gate: Callable[[xr.DataTree], dict] | None = None,
) -> tuple[xr.DataTree, dict[str, float], dict]:
    """Sample the variance parameters with NUTS, then draw the coefficients exactly.

    With ``gate`` (a check of a whole posterior: the diagnostics gate with a margin),
    sampling stops at the first checkpoint whose draws pass it (``backends/sampling.py``).
    Returns the posterior tree, timings, and the fit facts for run.json (kernel chosen,
    why, the measurements behind the choice, and the draws taken).
    """
    settings = spec.sampler
    if settings.sampler == "numpyro":
        raise SpecError(
            "the collapsed backend samples with nutpie or pymc (its likelihood is a numba "
            "kernel, not JAX); for numpyro/GPU use --backend bambi --sampler numpyro"
        )
    if isinstance(stats, SufficientStats):
        stats = GroupedStats.from_pooled(stats)
    if spec.residual_sd_by is not None and stats.n_groups == 1:
        raise SpecError("residual_sd_by: statistics were computed without residual groups")
    heap.pin_thresholds()  # before the kernel's first evaluations (its choice, the mode)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    choice = choose_kernel(stats, layout, spec)
    timings["kernel_choice_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    folded, sd_facts = folded_terms(stats, layout, spec, choice)
    timings["sd_parameterization_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    coefficients = CoefficientDraws(stats, layout, spec, choice, seed=seed)
    if settings.sampler == "pymc":  # PyMC's own NUTS on the reference model, all draws
        model = build_model(stats, layout, spec, choice, folded)
        with threadpool_limits(1, user_api="blas"):
            dt = pm.sample(
                model=model,
                draws=settings.draws,
                tune=settings.tune,
                chains=settings.chains,
                cores=min(settings.chains, os.cpu_count() or 1),
                random_seed=derived_seed(seed, "nuts"),
                nuts_sampler="pymc",
                progressbar=progressbar,
                compute_convergence_checks=False,
                target_accept=TARGET_ACCEPT,
            )
        sampled = {"draws_kept": settings.draws, "stopped_early": False}
    else:
        density = build_density(stats, layout, spec, choice, folded)
        check = None
        if gate is not None:

            def check(head: xr.DataTree) -> dict:
                posterior = _posterior(head, spec)
                head["posterior"] = xr.DataTree(
                    xr.merge([coefficients.dataset(posterior), posterior])
                )
                return gate(head)

        proposal = density.approximation(near_sds=sd_facts.get("sd_mode"))
        dt, tried = None, None
        if settings.importance:

            def with_coefficients(tree: xr.DataTree) -> xr.DataTree:
                posterior = _posterior(tree, spec)
                fresh = CoefficientDraws(stats, layout, spec, choice, seed=seed)
                tree["posterior"] = xr.DataTree(xr.merge([fresh.dataset(posterior), posterior]))
                return tree

            dt, tried = _sample_importance(
                density,
                proposal,
                settings,
                seed=seed,
                gate=gate,
                with_coefficients=with_coefficients,
            )
        if dt is not None:
            sampled = tried
        else:
            model, starts = density.nutpie_model(proposal=proposal)
            dt, sampled = sample_nutpie(
                model,
                Plan.of(settings, early_stop=gate is not None),
                seed=derived_seed(seed, "nuts"),
                progressbar=progressbar,
                check=check,
                max_tree_depth=COLLAPSED_MAX_TREE_DEPTH,
            )
            sampled["chain_starts"] = starts
            if settings.importance:  # why importance sampling did not serve
                sampled["importance_tried"] = tried
    timings["sample_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    if sampled.get("method") != "importance":  # its checked tree has the coefficients
        posterior = _posterior(dt, spec)
        dt["posterior"] = xr.DataTree(xr.merge([coefficients.dataset(posterior), posterior]))
    timings["conditional_draws_s"] = time.perf_counter() - t1
    facts = {
        "kernel": choice.kernel,
        "kernel_reason": choice.reason,
        **choice.facts,
        **sd_facts,
        "sampling": sampled,
    }
    if spec.residual_sd_by is not None:
        facts["residual_sd_by"] = spec.residual_sd_by
    return dt, timings, facts


def _sample_importance(density, proposal, settings, *, seed: int, gate, with_coefficients):
    """(tree, facts) of importance sampling (``backends/importance.py``) checked by ``gate``
    (the run's early stop), or (None, facts) where it fails. ``with_coefficients(tree)``
    adds the coefficients' draws to a tree of the variance parameters."""
    draws = min(IMPORTANCE_DRAWS, settings.draws)  # --draws: the most per chain, as for NUTS
    ess_target = max(C.ESS_BULK_MIN, C.ESS_TAIL_MIN) * C.EARLY_STOP_ESS_MARGIN
    if proposal is None:
        return None, {"reason": "no posterior mode was found for the approximation"}
    if gate is None:
        return None, {"reason": "no gate to check its draws (the early stop is off)"}
    if settings.chains * draws < ess_target:
        return None, {"reason": f"{settings.chains} x {draws} draws cannot reach the gate's ESS"}
    checked: dict = {}

    def check(points: np.ndarray, index: np.ndarray) -> dict:
        tree = importance_tree(density, points, index)
        first = gate(tree)  # the variance parameters alone: cheap, and most often binding
        if not first["passed"]:
            return first
        checked["tree"] = with_coefficients(tree)
        return gate(checked["tree"])

    with threadpool_limits(1, user_api="blas"):
        result = importance.sample(
            density.log_density,
            ScannedCopula.of(proposal),
            check,
            chains=settings.chains,
            draws=draws,
            seed=derived_seed(seed, "importance"),
            workers=len(os.sched_getaffinity(0)),
            ess_target=ess_target,
        )
    if not result.passed:
        return None, result.facts
    return checked["tree"], result.facts


def importance_tree(density, draws: np.ndarray, proposal: np.ndarray) -> xr.DataTree:
    """The posterior group of resampled draws (chain, draw, coordinate), each draw's
    proposal as the coordinate ``proposal`` (the draws' ESS counts proposals)."""
    n_chain, n_draw, _ = draws.shape
    sds = density.sd_values(draws)
    n_sigma = max(len(density.sigma_groups), 1)
    coords = {"chain": np.arange(n_chain), "draw": np.arange(n_draw)}
    if density.sigma_groups:
        data = {"sigma": (("chain", "draw", density.sigma_dim), sds[..., :n_sigma])}
        coords[density.sigma_dim] = list(density.sigma_groups)
    else:
        data = {"sigma": (("chain", "draw"), sds[..., 0])}
    for k, name in enumerate(density.names[1:]):
        data[name] = (("chain", "draw"), sds[..., n_sigma + k])
    posterior = xr.Dataset(data, coords=coords)
    posterior = posterior.assign_coords({C.PROPOSAL_COORD: (("chain", "draw"), proposal)})
    return xr.DataTree.from_dict({"/posterior": posterior})


def _posterior(tree: xr.DataTree, spec: ModelSpec) -> xr.Dataset:
    """The sampled variance parameters (folded SDs as tau = |w|, coords as strings)."""
    posterior = _without_folded(tree["posterior"].to_dataset())
    posterior = posterior[variance_names(posterior.data_vars)]
    if spec.residual_sd_by is not None:  # netCDF wants str coordinates
        dim = _sigma_dim(spec)
        posterior = posterior.assign_coords({dim: posterior[dim].astype(str)})
    return posterior


class CollapsedRefitter:
    """Refits of one design to many data sets, sampled as a run samples (the compiled
    density, its SD parameterization chosen per data set, ``sample_nutpie`` with early
    stopping when ``gate`` is given): simulation-based calibration and recovery studies."""

    def __init__(self, stats: SufficientStats, layout: DesignLayout, spec: ModelSpec, *, gate=None):
        if spec.residual_sd_by:
            # refits take one pooled set of statistics: a residual SD per group would be
            # silently fitted as one SD, so it is refused
            raise ValueError(
                f"CollapsedRefitter fits one residual SD; spec {spec.name!r} has a residual SD "
                f"per {spec.residual_sd_by!r} group: set residual_sd_by=None for the study"
            )
        self.layout, self.spec, self.gate = layout, spec, gate

    def fit(self, stats: SufficientStats, *, seed: int) -> xr.DataTree:
        # the compiled density needs no compiling per data set: built (and, under "auto",
        # its SD parameterization chosen) for each one, as a run does
        grouped = GroupedStats.from_pooled(stats)
        folded, sd_facts = folded_terms(grouped, self.layout, self.spec, None)
        density = build_density(stats, self.layout, self.spec, None, folded)
        coefficients = CoefficientDraws(stats, self.layout, self.spec, None, seed=seed)
        check = None
        if self.gate is not None:

            def check(head: xr.DataTree) -> dict:
                posterior = _posterior(head, self.spec)
                head["posterior"] = xr.DataTree(
                    xr.merge([coefficients.dataset(posterior), posterior])
                )
                return self.gate(head)

        tree, _ = sample_nutpie(
            density.nutpie_model(near_sds=sd_facts.get("sd_mode"))[0],
            Plan.of(self.spec.sampler, early_stop=self.gate is not None),
            seed=derived_seed(seed, "nuts"),
            check=check,
            max_tree_depth=COLLAPSED_MAX_TREE_DEPTH,
        )
        posterior = _posterior(tree, self.spec)
        tree["posterior"] = xr.DataTree(xr.merge([coefficients.dataset(posterior), posterior]))
        return tree
