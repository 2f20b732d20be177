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
"""

from __future__ import annotations

import os
import time

import numpy as np
import pymc as pm
import pytensor.tensor as pt
import xarray as xr
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

from omlbayes.backends.marginal import MarginalLoglik
from omlbayes.backends.priors import pymc_prior
from omlbayes.design import DesignLayout, SufficientStats
from omlbayes.errors import SpecError
from omlbayes.spec import ModelSpec

MARGINAL = "marginal_loglik"
# Above nutpie's 0.8: with very large N the residual SD is pinned down far more tightly than
# the group SDs, and a slightly smaller step removes the rare divergence seen at 1M students.
TARGET_ACCEPT = 0.9


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


def build_model(stats: SufficientStats, layout: DesignLayout, spec: ModelSpec) -> pm.Model:
    """The collapsed PyMC model: only sigma and the group SDs are free parameters."""
    if spec.family != "gaussian":
        raise SpecError("the collapsed backend fits Gaussian models only; use --backend bambi")
    fixed_var = _fixed_prior_variances(layout, spec)
    group_terms = layout.group_terms
    with pm.Model() as model:
        sigma = pymc_prior("sigma", spec.prior_for("sigma", "sigma"))
        taus = [
            pymc_prior(f"{t.name}_sigma", spec.prior_for(t.name, "group_sigma"))
            for t in group_terms
        ]
        sizes = [t.size for t in group_terms]
        log_var = pt.concatenate(
            [pt.log(pt.as_tensor(fixed_var))]
            + [pt.repeat(2.0 * pt.log(tau), size) for tau, size in zip(taus, sizes, strict=True)]
        )
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


def draw_coefficients(
    posterior: xr.Dataset,
    stats: SufficientStats,
    layout: DesignLayout,
    spec: ModelSpec,
    *,
    seed: int,
) -> xr.Dataset:
    """Exact conditional draws of every coefficient, one per posterior draw of theta."""
    fixed_var = _fixed_prior_variances(layout, spec)
    sigma = posterior["sigma"].to_numpy()
    n_chain, n_draw = sigma.shape
    taus = [posterior[f"{t.name}_sigma"].to_numpy() for t in layout.group_terms]
    sizes = [t.size for t in layout.group_terms]
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n_chain, n_draw, layout.n_coef))
    coef = np.empty((n_chain, n_draw, layout.n_coef))
    with threadpool_limits(1, user_api="blas"):  # small matrices: threads only add overhead
        for c in range(n_chain):
            for d in range(n_draw):
                var = np.concatenate(
                    [fixed_var]
                    + [np.full(s, tau[c, d] ** 2) for tau, s in zip(taus, sizes, strict=True)]
                )
                m = stats.wtw + np.diag(sigma[c, d] ** 2 / var)
                chol, info = lapack.dpotrf(m, lower=1, clean=1)
                if info != 0:
                    raise FloatingPointError(f"Cholesky failed at chain {c}, draw {d}")
                mean, _ = lapack.dpotrs(chol, stats.wty, lower=1)
                # b = mean + sigma L^-T z has covariance sigma^2 M^-1
                offset, _ = lapack.dtrtrs(chol, noise[c, d], lower=1, trans=1)
                coef[c, d] = mean + sigma[c, d] * offset
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


def fit_collapsed(
    stats: SufficientStats,
    layout: DesignLayout,
    spec: ModelSpec,
    *,
    seed: int,
    progressbar: bool = True,
) -> tuple[xr.DataTree, dict[str, float]]:
    """Sample the variance parameters with NUTS, then draw the coefficients exactly."""
    if spec.sampler.sampler == "numpyro":
        raise SpecError(
            "the collapsed backend samples with nutpie or pymc (its likelihood is a numba "
            "kernel, not JAX); for numpyro/GPU use --backend bambi --sampler numpyro"
        )
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    model = build_model(stats, layout, spec)
    settings = spec.sampler
    # One BLAS thread per chain: nutpie runs chains in parallel threads, and a
    # multithreaded BLAS inside each of them oversubscribes the cores many times over.
    with threadpool_limits(1, user_api="blas"):
        dt = pm.sample(
            model=model,
            draws=settings.draws,
            tune=settings.tune,
            chains=settings.chains,
            cores=min(settings.chains, os.cpu_count() or 1),
            random_seed=seed,
            nuts_sampler=settings.sampler,
            progressbar=progressbar,
            compute_convergence_checks=False,
            target_accept=TARGET_ACCEPT,
        )
    timings["sample_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    posterior = dt["posterior"].to_dataset()
    coefs = draw_coefficients(posterior, stats, layout, spec, seed=seed + 1)
    dt["posterior"] = xr.DataTree(xr.merge([coefs, posterior]))
    timings["conditional_draws_s"] = time.perf_counter() - t1
    return dt, timings


class CollapsedRefitter:
    """One compiled model refitted to new data of the same layout (no recompilation).

    Simulation-based calibration and recovery studies fit hundreds of data sets with the
    same design; the statistics are ``pm.Data``, so nutpie swaps them in place.
    """

    def __init__(self, stats: SufficientStats, layout: DesignLayout, spec: ModelSpec):
        import nutpie

        self.layout, self.spec = layout, spec
        self.compiled = nutpie.compile_pymc_model(build_model(stats, layout, spec))

    def fit(self, stats: SufficientStats, *, seed: int) -> xr.DataTree:
        import nutpie

        compiled = self.compiled.with_data(
            wtw=stats.wtw,
            wty=stats.wty,
            yty=np.asarray(stats.yty),
            n_obs=np.asarray(float(stats.n)),
        )
        settings = self.spec.sampler
        with threadpool_limits(1, user_api="blas"):
            tree = nutpie.sample(
                compiled,
                draws=settings.draws,
                tune=settings.tune,
                chains=settings.chains,
                cores=min(settings.chains, os.cpu_count() or 1),
                seed=seed,
                progress_bar=False,
                target_accept=TARGET_ACCEPT,
            )
        posterior = tree["posterior"].to_dataset()
        coefs = draw_coefficients(posterior, stats, self.layout, self.spec, seed=seed + 1)
        tree["posterior"] = xr.DataTree(xr.merge([coefs, posterior]))
        return tree
