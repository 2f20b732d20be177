"""The diagnostics gate: R-hat, ESS bulk/tail, divergences, E-BFMI, as named pass/fail checks."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import arviz as az
import numpy as np
import xarray as xr

from omlbayes import constants as C
from omlbayes.model.design import variance_names

# The rows of an ArviZ summary Dataset the gate reads: R-hat, ESS bulk, ESS tail.
SUMMARY_DIAGNOSTICS = ("r_hat", "ess_bulk", "ess_tail")


@dataclass(frozen=True)
class Thresholds:
    rhat_max: float = C.RHAT_MAX
    ess_bulk_min: float = C.ESS_BULK_MIN
    ess_tail_min: float = C.ESS_TAIL_MIN
    bfmi_min: float = C.BFMI_MIN
    max_divergences: int = C.MAX_DIVERGENCES


def _extreme(values: xr.Dataset, *, largest: bool) -> tuple[float, str]:
    """The worst value over every variable and coordinate, with the parameter's name."""
    worst_value, worst_name = (-np.inf, "") if largest else (np.inf, "")
    for name, var in values.data_vars.items():
        arr = var.to_numpy()
        if arr.size == 0 or np.all(np.isnan(arr)):
            continue
        flat = np.nanargmax(arr) if largest else np.nanargmin(arr)
        value = float(arr.ravel()[flat])
        if (value > worst_value) if largest else (value < worst_value):
            label = name
            if var.dims:
                idx = np.unravel_index(flat, arr.shape)
                coords = [str(var[d].to_numpy()[i]) for d, i in zip(var.dims, idx, strict=True)]
                label = f"{name}[{', '.join(coords)}]"
            worst_value, worst_name = value, label
    if not worst_name:  # nothing computable (e.g. R-hat of a single chain)
        return float("nan"), ""
    return worst_value, worst_name


def check(
    dt: xr.DataTree, *, thresholds: Thresholds | None = None, summary: xr.Dataset | None = None
) -> dict:
    """Diagnostics of every posterior variable; ``passed`` is true only if every check is.

    ``summary``: the posterior's ArviZ summary as a Dataset
    (``summarise.parameter_summary_dataset``), whose R-hat and ESS are then used rather
    than computed a second time.
    """
    th = thresholds or Thresholds()
    posterior = dt["posterior"].to_dataset()
    n_chains = posterior.sizes["chain"]
    if summary is None and C.PROPOSAL_COORD in posterior.coords:  # importance-resampled
        from omlbayes.criticism import mcmc_stats

        summary = mcmc_stats.diagnostics(posterior)
    if summary is None:
        r_hats = az.rhat(posterior)
        bulk, tail = az.ess(posterior, method="bulk"), az.ess(posterior, method="tail")
    else:
        r_hats, bulk, tail = (summary.sel(summary=s, drop=True) for s in SUMMARY_DIAGNOSTICS)
    rhat, rhat_at = _extreme(r_hats, largest=True)
    ess_bulk, bulk_at = _extreme(bulk, largest=False)
    ess_tail, tail_at = _extreme(tail, largest=False)
    stats = dt["sample_stats"].to_dataset() if "sample_stats" in dt.children else xr.Dataset()
    divergences = int(stats["diverging"].sum()) if "diverging" in stats else 0
    bfmi = (
        np.atleast_1d(az.bfmi(stats["energy"]).to_numpy())
        if "energy" in stats
        else np.array([np.nan])
    )
    min_bfmi = float(np.nanmin(bfmi)) if np.isfinite(bfmi).any() else float("nan")
    checks = {
        "r_hat_below_1_01": bool(rhat <= th.rhat_max) if n_chains > 1 else False,
        "ess_bulk_at_least_400": bool(ess_bulk >= th.ess_bulk_min),
        "ess_tail_at_least_400": bool(ess_tail >= th.ess_tail_min),
        "no_divergences": divergences <= th.max_divergences,
        "bfmi_above_0_3": bool(np.isnan(min_bfmi) or min_bfmi >= th.bfmi_min),
    }
    return {
        "passed": all(checks.values()),
        "checks": checks,
        "max_r_hat": rhat,
        "max_r_hat_at": rhat_at,
        "min_ess_bulk": ess_bulk,
        "min_ess_bulk_at": bulk_at,
        "min_ess_tail": ess_tail,
        "min_ess_tail_at": tail_at,
        "divergences": divergences,
        "min_bfmi": min_bfmi,
        "chains": n_chains,
        "draws": int(posterior.sizes["draw"]),
        "thresholds": asdict(th),
        "note": "" if n_chains > 1 else "R-hat needs at least two chains",
        # draws without a Hamiltonian sampler's statistics (importance-resampled) cannot
        # diverge and have no energy: those checks hold trivially and say nothing
        "not_applicable": [] if "energy" in stats else list(HAMILTONIAN_CHECKS),
    }


HAMILTONIAN_CHECKS = ("no_divergences", "bfmi_above_0_3")


def verdict_line(diagnostics: dict) -> str:
    """One line for the terminal and the report."""
    d = diagnostics
    numbers = (
        f"max R-hat {d['max_r_hat']:.3f}, min ESS bulk {d['min_ess_bulk']:.0f}, "
        f"min ESS tail {d['min_ess_tail']:.0f}"
    )
    if not d.get("not_applicable"):
        numbers += f", divergences {d['divergences']}, min E-BFMI {d['min_bfmi']:.2f}"
    if d["passed"]:
        return f"diagnostics PASSED ({numbers})"
    failed = ", ".join(k for k, ok in d["checks"].items() if not ok)
    return (
        f"DIAGNOSTICS FAILED: {failed} ({numbers}); do not trust these results"
        + _mixing_advice(d)
        + _advice(d)
    )


_MIXING_CHECKS = ("r_hat_below_1_01", "ess_bulk_at_least_400", "ess_tail_at_least_400")


def _mixing_advice(d: dict) -> str:
    """For a failed R-hat or ESS check: where, and what to try (a group SD whose posterior
    sits near zero mixes slowly, and every coefficient of its term inherits that)."""
    if all(d["checks"].get(k, True) for k in _MIXING_CHECKS):
        return ""
    if d.get("chains", 2) < 2:
        return "; R-hat needs at least two chains (--chains)"
    return (
        f"; largest R-hat at {d.get('max_r_hat_at')}, smallest bulk ESS at "
        f"{d.get('min_ess_bulk_at')}: run more draws (--draws, --tune); a group SD whose "
        "posterior sits near zero mixes slowly (--sd-parameterization auto samples it folded "
        "where its term has many cells), and its term may not be needed"
    )


# what a failed predictive-check family says about the model, and which variant has the term
_MISSING_TERM = {
    "school_id x wave": "schools drift between waves: fit --model school_by_wave (or full)",
    "wave x ": "a cross breakdown's trend differs from its two-way terms': fit --model three_way "
    "(or full)",
}


def _advice(d: dict) -> str:
    """For a failed spread-of-cell-means check: the cells and the model variant with the term."""
    entry = d.get("ppc", {}).get("ppc_cell_dispersion")
    if not entry or entry["passed"]:
        return ""
    worst = entry["most_extreme"][0]["statistic"].removeprefix("dispersion ")
    hint = next((h for key, h in _MISSING_TERM.items() if worst.startswith(key)), "")
    return f"; cell means vary more than the model allows in {worst}" + (
        f": {hint}" if hint else ""
    )


# Early stopping (backends/sampling.py, backends/importance.py): the kept draws are exactly
# the checked ones, so they pass the gate by construction; the margin (C.EARLY_STOP_ESS_MARGIN)
# is for the noise of the ESS estimates.
EARLY_STOP_ESS_MARGIN = C.EARLY_STOP_ESS_MARGIN


def early_stop(tree: xr.DataTree, *, thresholds: Thresholds | None = None) -> dict:
    """Whether the draws so far can stop: first the variance parameters (cheap), then every
    variable as the gate sees it, with bulk and tail ESS ``EARLY_STOP_ESS_MARGIN`` times
    the gate's minimum."""
    from omlbayes.criticism import mcmc_stats

    th = thresholds or Thresholds()
    strict = Thresholds(
        rhat_max=th.rhat_max,
        ess_bulk_min=th.ess_bulk_min * EARLY_STOP_ESS_MARGIN,
        ess_tail_min=th.ess_tail_min * EARLY_STOP_ESS_MARGIN,
        bfmi_min=th.bfmi_min,
        max_divergences=th.max_divergences,
    )
    posterior = tree["posterior"].to_dataset()
    hyper = variance_names(posterior.data_vars)
    first = check(
        _only(tree, hyper), thresholds=strict, summary=mcmc_stats.diagnostics(posterior[hyper])
    )
    if not first["passed"]:
        return {"passed": False, "stage": "variance parameters", **_numbers(first)}
    full = check(tree, thresholds=strict, summary=mcmc_stats.diagnostics(posterior))
    return {"passed": full["passed"], "stage": "all parameters", **_numbers(full)}


def _only(tree: xr.DataTree, names: list[str]) -> xr.DataTree:
    out = {"/posterior": tree["posterior"].to_dataset()[names]}
    if "sample_stats" in tree.children:
        out["/sample_stats"] = tree["sample_stats"].to_dataset()
    return xr.DataTree.from_dict(out)


def _numbers(d: dict) -> dict:
    keys = ("max_r_hat", "min_ess_bulk", "min_ess_tail", "divergences")
    return {k: d[k] for k in keys}
