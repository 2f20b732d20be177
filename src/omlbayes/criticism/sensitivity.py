"""Prior sensitivity by power-scaling (arviz-stats ``psense``), from per-draw totals only.

The joint posterior of a Gaussian run is p(theta) p(beta) p(u | tau) p(y | b, theta), with
theta = (sigma, the group SDs tau), beta the common effects and u the group cells. The
"prior" that is power-scaled is p(theta) p(beta): the spec's priors (the cells' Normal(0,
tau) is part of the hierarchical model, not a prior choice). The likelihood is the
conditional one, log p(y | b, theta), which the sufficient statistics give exactly per
draw:  sum_g -n_g/2 log(2 pi s2_g) - (y_g'y_g - 2 b'W_g'y_g + b'W_g'W_g b) / (2 s2_g).

Both are saved in posterior.nc as per-draw totals: ``log_prior`` (per prior component) and
``log_likelihood_total`` (one total), no student rows. The totals are deliberately not in a
``log_likelihood`` group: ArviZ's ``loo`` would read one total as one observation (elpd SE 0,
Pareto k > 1); the run's LOO is ``loo.json`` (``Run.loo()``). :func:`power_scaling_tree` puts
them where ``arviz_stats.psense_summary`` looks, in memory only.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import xarray as xr

from omlbayes.model.design import DesignLayout, GroupedStats, variance_names
from omlbayes.model.spec import ModelSpec

LOG_LIKELIHOOD_VAR = "y"
# The group of the per-draw log-likelihood totals in posterior.nc (not ArviZ's pointwise
# ``log_likelihood``, which runs saved before this name held; ``likelihood_totals`` reads both).
LOG_LIKELIHOOD_TOTAL = "log_likelihood_total"
LEGACY_GROUP = "log_likelihood"
TOTAL_NOTE = (
    "log p(y | b, theta) summed over all students, one value per draw: for prior power-scaling "
    "(psense), not pointwise, so not for az.loo; the run's LOO is loo.json (omlbayes Run.loo())"
)
SENSITIVITY_CSV = "prior_sensitivity.csv"
# psense's default threshold on the CJS distance per unit of log alpha
THRESHOLD = 0.05


def log_prior_draws(posterior: xr.Dataset, layout: DesignLayout, spec: ModelSpec) -> xr.Dataset:
    """Per-draw log prior density of each spec prior: sigma, each group SD, each common term."""
    out = {}
    sigma = posterior["sigma"]
    extra = [d for d in sigma.dims if d not in ("chain", "draw")]
    out["sigma"] = xr.DataArray(
        spec.prior_for("sigma", "sigma").logpdf(sigma.to_numpy()), dims=sigma.dims
    ).sum(extra)
    for term in layout.terms:
        if term.kind == "group":
            name = f"{term.name}_sigma"
            out[name] = xr.DataArray(
                spec.prior_for(term.name, "group_sigma").logpdf(posterior[name].to_numpy()),
                dims=posterior[name].dims,
            )
            continue
        kind = "Intercept" if term.kind == "intercept" else "common"
        values = posterior[term.name]
        dense = spec.prior_for(term.name, kind).logpdf(values.to_numpy())
        out[term.name] = xr.DataArray(dense, dims=values.dims).sum(
            [d for d in values.dims if d not in ("chain", "draw")]
        )
    return xr.Dataset(out, coords={"chain": posterior["chain"], "draw": posterior["draw"]})


def coefficient_matrix(posterior: xr.Dataset, layout: DesignLayout) -> np.ndarray:
    """(chain, draw, p) coefficients in the layout's order."""
    parts = []
    for term in layout.terms:
        values = posterior[term.name].transpose("chain", "draw", ...).to_numpy()
        parts.append(values[..., None] if values.ndim == 2 else values)
    return np.concatenate(parts, axis=-1)


def log_likelihood_total(
    posterior: xr.Dataset, stats: GroupedStats, layout: DesignLayout
) -> xr.Dataset:
    """log p(y | b, theta) per draw, from the sufficient statistics (one total, no rows)."""
    coef = coefficient_matrix(posterior, layout)
    n_chain, n_draw, p = coef.shape
    flat = coef.reshape(-1, p)
    sigma = posterior["sigma"].transpose("chain", "draw", ...).to_numpy().reshape(flat.shape[0], -1)
    total = np.zeros(flat.shape[0])
    for g in range(stats.n_groups):
        s2 = sigma[:, g if sigma.shape[1] > 1 else 0] ** 2
        quad = (
            stats.yty[g]
            - 2.0 * flat @ stats.wty[g]
            + np.einsum("dp,dp->d", flat @ stats.wtw[g].T, flat)
        )
        total += -0.5 * stats.n[g] * np.log(2.0 * np.pi * s2) - 0.5 * quad / s2
    return xr.Dataset(
        {LOG_LIKELIHOOD_VAR: (("chain", "draw"), total.reshape(n_chain, n_draw))},
        coords={"chain": posterior["chain"], "draw": posterior["draw"]},
        attrs={"note": TOTAL_NOTE},
    )


def likelihood_totals(tree: xr.DataTree) -> xr.Dataset | None:
    """The per-draw log-likelihood totals of a fitted tree, or None: the
    ``log_likelihood_total`` group (or a ``log_likelihood`` group of per-draw totals only, as
    runs saved before that name hold)."""
    if LOG_LIKELIHOOD_TOTAL in tree.children:
        return tree[LOG_LIKELIHOOD_TOTAL].to_dataset()
    if LEGACY_GROUP in tree.children:
        data = tree[LEGACY_GROUP].to_dataset()
        if data.data_vars and all(set(v.dims) <= {"chain", "draw"} for v in data.values()):
            return data
    return None


def power_scaling_tree(tree: xr.DataTree, posterior: xr.Dataset | None = None) -> xr.DataTree:
    """The tree ``arviz_stats.psense_summary`` takes: ``posterior`` (default: the tree's),
    ``log_prior`` and the totals as ``log_likelihood``. For power-scaling only: never save
    it, and never give it to ``az.loo`` (one total is not one value per student)."""
    totals = likelihood_totals(tree)
    if totals is None or "log_prior" not in tree.children:
        raise ValueError("no per-draw log_prior and log-likelihood totals in this tree")
    return xr.DataTree.from_dict(
        {
            "/posterior": tree["posterior"].to_dataset() if posterior is None else posterior,
            "/log_prior": tree["log_prior"].to_dataset(),
            "/log_likelihood": totals,
        }
    )


def add_power_scaling_groups(
    tree: xr.DataTree, stats: GroupedStats, layout: DesignLayout, spec: ModelSpec
) -> None:
    """Attach ``log_prior`` and ``log_likelihood_total`` (per-draw totals) to a fitted tree."""
    posterior = tree["posterior"].to_dataset()
    tree["log_prior"] = xr.DataTree(log_prior_draws(posterior, layout, spec))
    tree[LOG_LIKELIHOOD_TOTAL] = xr.DataTree(log_likelihood_total(posterior, stats, layout))


def power_scaled_weights(tree: xr.DataTree, alpha: float, *, group: str = "prior") -> np.ndarray:
    """PSIS-smoothed normalised weights (chain, draw) of the posterior with the prior (or
    likelihood) raised to the power ``alpha``."""
    from arviz_stats.psense import _get_power_scale_weights

    lower, _ = _get_power_scale_weights(
        power_scaling_tree(tree), alphas=(alpha, alpha), group=group, sample_dims=["chain", "draw"]
    )
    return lower.transpose("chain", "draw").to_numpy()


def prior_sensitivity(tree: xr.DataTree, contrasts: xr.DataArray | None = None) -> pd.DataFrame:
    """``psense_summary`` per hyper-parameter (and per given contrast), one row each:
    the prior and likelihood sensitivity (CJS distance per unit log alpha) and a diagnosis."""
    from arviz_stats import psense_summary

    posterior = tree["posterior"].to_dataset()
    hyper = variance_names(posterior.data_vars)
    data = {name: posterior[name] for name in hyper}
    labels = {}
    if contrasts is not None:
        for k in range(contrasts.sizes["contrast"]):
            one = contrasts.isel(contrast=k)
            name = f"contrast_{k}"
            labels[name] = (
                f"{one['breakdown'].item()}: {one['group'].item()} "
                f"{one['wave'].item()} vs {one['reference'].item()}"
            )
            data[name] = one.drop_vars([c for c in one.coords if c not in ("chain", "draw")])
    work = power_scaling_tree(tree, xr.Dataset(data))
    # psense_summary logs a generic pointer to ArviZ's docs when a row is flagged; the flags
    # are in the table itself (and the report), so keep the terminal to our own lines.
    psense_log = logging.getLogger(psense_summary.__module__)
    level = psense_log.level
    psense_log.setLevel(logging.ERROR)
    try:
        table = psense_summary(work, threshold=THRESHOLD, round_to=4)
    finally:
        psense_log.setLevel(level)
    table.index = [labels.get(str(i).split("[")[0], str(i)) for i in table.index]
    table.index.name = "quantity"
    return table
