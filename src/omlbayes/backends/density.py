"""The collapsed posterior of the variance parameters as compiled code nutpie samples.

The collapsed model (``collapsed.build_model``, the PyMC reference) has only the residual
SD(s) and one SD per group term as free parameters; its density is their priors plus the
marginal likelihood kernel (dense or sparse). Written as cacheable numba functions,
it compiles once per machine (numba's cache) instead of once per run: PyMC/nutpie compile a
new graph around the kernel for every fit, which cost more than the sampling itself for
small models. nutpie calls it through ``nutpie.compiled_pyfunc`` (the kernels release the
GIL, so chains run in parallel threads). ``tests/test_density.py`` holds it equal to the
PyMC model's log density and gradient.

Unconstrained coordinates, as PyMC's: a residual SD or a group SD sampled on the log scale
is ``u = log tau`` (density ``p(tau) tau``); a folded group SD is ``w`` with ``tau = |w|``
and density ``p(|w|) / 2`` (the symmetric twin of its prior).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from omlbayes.backends.marginal import dense_marginal_loglik
from omlbayes.backends.proposal import SplitT, resampled_start
from omlbayes.backends.sparse import sparse_marginal_loglik, sparse_marginal_loglik_value

# Prior families of an SD (spec.PRIOR_DISTS); their parameters as (a, b).
HALF_NORMAL, HALF_STUDENT_T, HALF_CAUCHY, EXPONENTIAL = 0, 1, 2, 3
_FAMILY = {"HalfNormal": HALF_NORMAL, "HalfStudentT": HALF_STUDENT_T, "HalfCauchy": HALF_CAUCHY}
_FAMILY["Exponential"] = EXPONENTIAL
_LOG2 = math.log(2.0)
_LOG_PI = math.log(math.pi)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
# Proposals per chain start (importance-resampled from the split-t approximation)
START_PROPOSALS = 64


def prior_code(prior) -> tuple[int, float, float]:
    """(family, a, b) of a positive prior: HalfNormal(sigma=a), HalfStudentT(nu=a, sigma=b),
    HalfCauchy(beta=a), Exponential(lam=a)."""
    k = prior.params
    if prior.dist == "HalfNormal":
        return HALF_NORMAL, k["sigma"], 0.0
    if prior.dist == "HalfStudentT":
        return HALF_STUDENT_T, k["nu"], k["sigma"]
    if prior.dist == "HalfCauchy":
        return HALF_CAUCHY, k["beta"], 0.0
    if prior.dist == "Exponential":
        return EXPONENTIAL, k["lam"], 0.0
    raise ValueError(f"an SD needs a positive prior, got {prior}")


@numba.njit(cache=True, nogil=True)
def _half_logp(family, a, b, tau):
    """Log density of a positive prior at tau > 0 and its derivative in tau."""
    if family == HALF_NORMAL:
        return _LOG2 - _HALF_LOG_2PI - math.log(a) - 0.5 * (tau / a) ** 2, -tau / (a * a)
    if family == HALF_STUDENT_T:
        nu, s = a, b
        z = tau / s
        lp = (
            _LOG2
            + math.lgamma(0.5 * (nu + 1.0))
            - math.lgamma(0.5 * nu)
            - 0.5 * (math.log(nu) + _LOG_PI)
            - math.log(s)
            - 0.5 * (nu + 1.0) * math.log1p(z * z / nu)
        )
        return lp, -(nu + 1.0) * tau / (nu * s * s + tau * tau)
    if family == HALF_CAUCHY:
        lp = _LOG2 - _LOG_PI - math.log(a) - math.log1p((tau / a) ** 2)
        return lp, -2.0 * tau / (a * a + tau * tau)
    return math.log(a) - a * tau, -a  # Exponential


@numba.njit(cache=True, nogil=True)
def _variances(x, n_sigma, folded, fixed_log_var, term_size):
    """log residual variances (G,) and log prior variances of the coefficients (p,)."""
    log_s2 = 2.0 * x[:n_sigma]
    p = fixed_log_var.shape[0] + term_size.sum()
    log_lam = np.empty(p)
    log_lam[: fixed_log_var.shape[0]] = fixed_log_var
    k = fixed_log_var.shape[0]
    for t in range(term_size.shape[0]):
        v = x[n_sigma + t]
        value = math.log(v * v) if folded[t] else 2.0 * v
        for _ in range(term_size[t]):
            log_lam[k] = value
            k += 1
    return log_s2, log_lam


@numba.njit(cache=True, nogil=True)
def _combine(x, n_sigma, folded, family, pa, pb, term_size, ll, g_s2, g_lam):
    """Priors (with the log-scale Jacobian) plus the likelihood, and the gradient in x."""
    if not math.isfinite(ll):
        return -np.inf, np.zeros(x.shape[0])
    grad = np.zeros(x.shape[0])
    logp = ll
    for i in range(n_sigma):  # residual SDs: log scale
        tau = math.exp(x[i])
        lp, d = _half_logp(family[i], pa[i], pb[i], tau)
        logp += lp + x[i]
        grad[i] = d * tau + 1.0 + 2.0 * g_s2[i]
    k = g_lam.shape[0] - term_size.sum()
    for t in range(term_size.shape[0]):
        i = n_sigma + t
        g_term = 0.0
        for _ in range(term_size[t]):
            g_term += g_lam[k]
            k += 1
        v = x[i]
        if folded[t]:
            tau = abs(v)
            lp, d = _half_logp(family[i], pa[i], pb[i], tau)
            logp += lp - _LOG2
            grad[i] = d * math.copysign(1.0, v) + 2.0 * g_term / v
        else:
            tau = math.exp(v)
            lp, d = _half_logp(family[i], pa[i], pb[i], tau)
            logp += lp + v
            grad[i] = d * tau + 1.0 + 2.0 * g_term
    return logp, grad


# logp_sparse and logp_dense are plain Python around three compiled calls, not one compiled
# function: numba caches a function with every function it calls compiled in, checked
# against its own source file only, so a compiled caller here would keep running a stale
# copy of a kernel after backends/sparse.py or marginal.py change (and read a changed
# pattern wrongly). Each kernel is cached with its own file.


def logp_sparse(
    x, n_sigma, folded, family, pa, pb, fixed_log_var, term_size,
    wtw_data, wty, yty, n_obs, sparse_pattern,
):  # fmt: skip
    """The posterior log density and gradient with the sparse kernel."""
    log_s2, log_lam = _variances(x, n_sigma, folded, fixed_log_var, term_size)
    ll, g_s2, g_lam = sparse_marginal_loglik(
        log_s2, log_lam, wtw_data, wty, yty, n_obs, sparse_pattern
    )
    return _combine(x, n_sigma, folded, family, pa, pb, term_size, float(ll), g_s2, g_lam)


def logp_dense(
    x, n_sigma, folded, family, pa, pb, fixed_log_var, term_size, wtw, wty, yty, n_obs
):  # fmt: skip
    """The posterior log density and gradient with the dense kernel (one residual SD)."""
    log_s2, log_lam = _variances(x, n_sigma, folded, fixed_log_var, term_size)
    ll, g_s2, g_lam = dense_marginal_loglik(log_s2, log_lam, wtw, wty, yty, n_obs)
    return _combine(x, n_sigma, folded, family, pa, pb, term_size, float(ll), g_s2, g_lam)


def value_sparse(
    x, n_sigma, folded, family, pa, pb, fixed_log_var, term_size,
    wtw_data, wty, yty, n_obs, sparse_pattern,
):  # fmt: skip
    """The posterior log density alone with the sparse kernel (no selected inverse)."""
    log_s2, log_lam = _variances(x, n_sigma, folded, fixed_log_var, term_size)
    ll = sparse_marginal_loglik_value(log_s2, log_lam, wtw_data, wty, yty, n_obs, sparse_pattern)
    none_s2, none_lam = np.zeros(log_s2.shape[0]), np.zeros(log_lam.shape[0])
    return _combine(x, n_sigma, folded, family, pa, pb, term_size, float(ll), none_s2, none_lam)


def guarded_logp(fn, x: np.ndarray, shared: dict) -> tuple[float, np.ndarray]:
    """``fn(x, **shared)`` as (float, gradient), with a point where a variance underflows to
    zero (a log SD near -400 on a divergent trajectory, or a folded SD at exactly 0) given
    zero density instead of the kernel's ZeroDivisionError: the sampler then rejects the
    step as a divergence, where the exception would have killed every chain."""
    try:
        value, grad = fn(x, **shared)
    except ZeroDivisionError:
        return -math.inf, np.zeros(x.shape[0])
    return float(value), grad


@dataclass(frozen=True)
class CollapsedDensity:
    """The density's constants and data (``shared``), and the names of its parameters."""

    kernel: str  # "dense" | "sparse"
    names: tuple[str, ...]  # the posterior variables: "sigma", "<term>_sigma", ...
    sigma_groups: tuple[str, ...]  # residual groups ((): one residual SD, a scalar)
    sigma_dim: str | None
    folded: tuple[bool, ...]  # per group term
    scales: np.ndarray  # prior scale per coordinate (initial points)
    shared: dict

    @property
    def n_dim(self) -> int:
        return len(self.scales)

    def logp(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        fn = logp_sparse if self.kernel == "sparse" else logp_dense
        return guarded_logp(fn, np.ascontiguousarray(x, dtype=np.float64), self.shared)

    def log_density(self, x: np.ndarray) -> float:
        """The log density alone (-inf where not finite): the sparse kernel skips the
        selected inverse its gradient needs."""
        fn = value_sparse if self.kernel == "sparse" else logp_dense
        value = guarded_logp(fn, np.ascontiguousarray(x, dtype=np.float64), self.shared)[0]
        return value if math.isfinite(value) else -math.inf

    def values(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The SDs (the posterior's variables) at the unconstrained point ``x``."""
        n_sigma = max(len(self.sigma_groups), 1)
        sigma = np.exp(x[:n_sigma])
        out = {"sigma": sigma if self.sigma_groups else np.asarray(sigma[0])}
        for k, name in enumerate(self.names[1:]):
            v = x[n_sigma + k]
            out[name] = np.asarray(abs(v) if self.folded[k] else math.exp(v))
        return out

    @property
    def folded_mask(self) -> np.ndarray:
        """Per coordinate: a folded SD (sampled as w, tau = |w|) rather than a log SD."""
        n_sigma = max(len(self.sigma_groups), 1)
        return np.r_[np.zeros(n_sigma, bool), np.asarray(self.folded, bool)]

    def initial_point(self, seed: int, centre: np.ndarray | None = None) -> np.ndarray:
        """Near ``centre`` (a point of the sampler's coordinates; default: the priors'
        scales), each SD jittered by a factor within e^(+-1) (PyMC's jitter)."""
        rng = np.random.default_rng(seed)
        jitter = rng.uniform(-1.0, 1.0, self.n_dim)
        folded = self.folded_mask
        if centre is None:
            sds = self.scales
        else:  # a folded SD at zero would stay there: start it at 1% of its scale or more
            sds = np.where(folded, np.abs(centre), np.exp(np.where(folded, 0.0, centre)))
            sds = np.maximum(sds, 0.01 * self.scales)
        x = np.log(sds) + jitter
        x[folded] = sds[folded] * np.array([math.exp(j) for j in jitter[folded]])
        return x

    def posterior_mode(self, near_sds: np.ndarray | None = None) -> np.ndarray | None:
        """The density's maximum on the sampler's coordinates (L-BFGS, deterministic), from
        the SDs ``near_sds`` (e.g. the SD-scale mode the fold decision found; a log SD
        starts no lower than 1% of its prior scale) or the priors' scales; None where the
        search fails."""
        from scipy.optimize import minimize

        def neg(x: np.ndarray) -> tuple[float, np.ndarray]:
            value, grad = self.logp(x)
            if not np.isfinite(value):
                return np.inf, np.zeros_like(x)
            return -value, -grad

        sds = self.scales if near_sds is None else np.asarray(near_sds, dtype=np.float64)
        start = np.where(self.folded_mask, sds, np.log(np.maximum(sds, 0.01 * self.scales)))
        with threadpool_limits(1, user_api="blas"):
            res = minimize(neg, start, jac=True, method="L-BFGS-B", options={"maxiter": 500})
        return res.x if np.isfinite(res.fun) else None

    def approximation(self, near_sds: np.ndarray | None = None) -> SplitT | None:
        """The split-t approximation at the posterior mode (searched from ``near_sds``, see
        :meth:`posterior_mode`; ``backends/proposal.py``), or None where the search fails.
        Its scans evaluate the density alone (no gradient)."""
        centre = self.posterior_mode(near_sds)
        if centre is None:
            return None
        with threadpool_limits(1, user_api="blas"):
            workers = len(os.sched_getaffinity(0))
            return SplitT.fit(
                self.logp, centre, self.folded_mask, workers=workers, value=self.log_density
            )

    def sd_values(self, x: np.ndarray) -> np.ndarray:
        """The SDs at the points (rows) ``x``, in coordinate order."""
        return np.where(self.folded_mask, np.abs(x), np.exp(x))

    def nutpie_model(
        self, near_sds: np.ndarray | None = None, *, proposal: SplitT | None = None
    ) -> tuple[object, dict]:
        """The density as a nutpie model (``nutpie.sample`` takes it), and how its chains
        start (for the run record). Every chain starts at a point drawn from the posterior
        by importance resampling from a split-t approximation at the mode (searched from
        ``near_sds``, see :meth:`posterior_mode`; ``backends/proposal.py``): a chain
        started at the mode draws a skewed SD on the mode's side for hundreds of draws, and
        one started far out in a tail can spend its warm-up there while a checkpoint waits
        for it. Where the mode search fails, chains start at the priors' scales.

        nutpie samples ``y = x / unit``, ``unit`` the approximation's scale per coordinate
        (a constant Jacobian: the same posterior). Its first mass matrix is ``1 / |gradient|``
        at the start, which scales as ``unit`` where a variance scales as ``unit**2``: on ``x``
        a tightly known log SD (the residual SD of 40k students) got a step far too long for
        it, and the chain's first iterations ran at 0.003-0.01 step sizes and 500-1,000
        leapfrog steps each (bench/RESULTS.md)."""
        from nutpie.compiled_pyfunc import from_pyfunc

        if proposal is None:
            proposal = self.approximation(near_sds)
        unit = np.ones(self.n_dim)
        if proposal is None:
            starts = {"method": "priors' scales, each SD jittered by a factor within e^(+-1)"}

            def initial_point(seed) -> np.ndarray:
                return self.initial_point(seed)

        else:
            unit = np.sqrt(proposal.left * proposal.right)
            starts = {
                "method": "importance-resampled from a split Student-t approximation at the "
                "posterior mode (backends/proposal.py)",
                "proposals_per_chain": START_PROPOSALS,
                "coordinates": "each divided by the approximation's scale",
            }

            def value_only(x: np.ndarray) -> tuple[float, None]:
                return self.log_density(x), None

            def initial_point(seed) -> np.ndarray:
                rng = np.random.default_rng(seed)
                start = resampled_start(value_only, proposal, rng, START_PROPOSALS)
                return start / unit

        names = list(self.names)
        shapes = [(len(self.sigma_groups),) if self.sigma_groups else ()]
        shapes += [()] * (len(names) - 1)
        coords = {self.sigma_dim: list(self.sigma_groups)} if self.sigma_groups else {}
        dims = {"sigma": (self.sigma_dim,)} if self.sigma_groups else {}

        def make_logp():
            fn = logp_sparse if self.kernel == "sparse" else logp_dense

            def logp(y, **shared):
                value, grad = guarded_logp(fn, unit * y, shared)
                return value, unit * grad

            return logp

        def make_expand(seed1, seed2, chain):
            def expand(y, **shared):
                return self.values(unit * y)

            return expand

        model = from_pyfunc(
            ndim=self.n_dim,
            make_logp_fn=make_logp,
            make_expand_fn=make_expand,
            expanded_dtypes=[np.dtype("float64")] * len(names),
            expanded_shapes=shapes,
            expanded_names=names,
            coords=coords,
            dims=dims,
            shared_data=self.shared,
            make_initial_point_fn=initial_point,
        )
        return model, starts
