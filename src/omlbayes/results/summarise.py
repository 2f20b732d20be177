"""Posterior draws -> tidy tables (effects.csv, contrasts.csv, summary.csv)."""

from __future__ import annotations

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr

from omlbayes.criticism import mcmc_stats
from omlbayes.errors import SpecError
from omlbayes.model.estimands import contrast_terms
from omlbayes.results.options import OutputOptions, draw_interval

SAMPLE_DIMS = ("chain", "draw")

EFFECT_COLUMNS = ["breakdown", "group", "wave", "mean", "lower", "upper", "n"]
CONTRAST_COLUMNS = [
    "breakdown",
    "group",
    "wave",
    "reference",
    "reference_group",
    "kind",
    "mean",
    "lower",
    "upper",
    "p_direction",
]


def interval(draws: xr.DataArray, *, options: OutputOptions) -> tuple[np.ndarray, np.ndarray]:
    """The run's interval over (chain, draw), for every other coordinate of ``draws``."""
    other = [d for d in draws.dims if d not in SAMPLE_DIMS]
    values = draws.transpose(*other, *SAMPLE_DIMS).to_numpy()
    return draw_interval(values, options.interval, options.prob, axis=(-2, -1))


def p_direction(draws: xr.DataArray) -> np.ndarray:
    """Probability of direction: the posterior mass on the side of the median's sign."""
    positive = (draws > 0).mean(["chain", "draw"]).to_numpy()
    return np.maximum(positive, 1.0 - positive)


def effects_table(
    effects: xr.DataArray,
    n: np.ndarray,
    *,
    options: OutputOptions,
    empty_share: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per target; cells with fewer than ``options.min_cell_n`` students are
    suppressed. ``empty_share`` (g-computation): the share of students a target places in
    cells nobody was observed in; ``extrapolated`` marks the targets where it is above 0."""
    lower, upper = interval(effects, options=options)
    table = pd.DataFrame(
        {
            "breakdown": effects["breakdown"].to_numpy(),
            "group": effects["group"].to_numpy(),
            "wave": effects["wave"].to_numpy(),
            "mean": effects.mean(["chain", "draw"]).to_numpy(),
            "lower": lower,
            "upper": upper,
            "n": np.asarray(n, dtype=np.int64),
        }
    )
    table = suppress_small_cells(table, min_cell_n=options.min_cell_n)
    share = np.zeros(len(table)) if empty_share is None else np.asarray(empty_share, float)
    table["empty_cell_share"] = np.round(share, 4)
    table["extrapolated"] = share > 0
    return table


def suppress_small_cells(table: pd.DataFrame, *, min_cell_n: int) -> pd.DataFrame:
    """Blank estimates and counts of cells under the disclosure threshold, and mark them."""
    small = table["n"] < min_cell_n
    out = table.copy()
    out["n"] = out["n"].astype("Int64").mask(small)
    out.loc[small, ["mean", "lower", "upper"]] = np.nan
    out["suppressed"] = small.to_numpy()
    return out


def contrasts_table(
    contrasts: xr.DataArray,
    *,
    options: OutputOptions,
    suppressed: set[tuple[str, str, str]] = frozenset(),
) -> pd.DataFrame:
    """One row per contrast; a contrast touching a suppressed cell is suppressed too."""
    lower, upper = interval(contrasts, options=options)
    table = pd.DataFrame(
        {
            "breakdown": contrasts["breakdown"].to_numpy(),
            "group": contrasts["group"].to_numpy(),
            "wave": contrasts["wave"].to_numpy(),
            "reference": contrasts["reference"].to_numpy(),
            "reference_group": contrasts["reference_group"].to_numpy(),
            "kind": contrasts["kind"].to_numpy(),
            "mean": contrasts.mean(["chain", "draw"]).to_numpy(),
            "lower": lower,
            "upper": upper,
            "p_direction": p_direction(contrasts),
        }
    )
    hidden = touches_cells(table, suppressed)
    table.loc[hidden, ["mean", "lower", "upper", "p_direction"]] = np.nan
    table["suppressed"] = hidden
    return table


def touches_cells(contrasts: pd.DataFrame, cells: set[tuple[str, str, str]]) -> np.ndarray:
    """Which contrasts use any cell (breakdown, group, wave) among ``cells``."""
    kinds = contrasts["kind"] if "kind" in contrasts else [""] * len(contrasts)
    return np.array(
        [
            any(
                cell in cells
                for _, cell in contrast_terms(b, str(g), str(w), str(rg), str(r), str(k))
            )
            for b, g, w, rg, r, k in zip(
                contrasts.breakdown,
                contrasts.group,
                contrasts.wave,
                contrasts.reference_group,
                contrasts.reference,
                kinds,
                strict=True,
            )
        ],
        dtype=bool,
    )


def parameter_summary(posterior: xr.Dataset, *, options: OutputOptions) -> pd.DataFrame:
    """ArviZ summary, index = parameter names as Bambi names them."""
    return summary_table(parameter_summary_dataset(posterior, options=options))


def parameter_summary_dataset(posterior: xr.Dataset, *, options: OutputOptions) -> xr.Dataset:
    """ArviZ summary as a Dataset (dim ``summary``: mean, sd, interval, ess_bulk, ess_tail,
    r_hat, mcse). Its R-hat and ESS serve the diagnostics gate too
    (``diagnose.check(..., summary=...)``): with thousands of coefficients they are the
    costly part, and computing them once halves it."""
    stats = az.summary(
        posterior,
        kind="stats",
        ci_prob=options.prob,
        ci_kind=options.interval,
        round_to="none",
        fmt="xarray",
    )
    # ArviZ's numbers, computed for all parameters at once (mcmc_stats; 3x faster at 5,000)
    return xr.concat([stats, mcmc_stats.diagnostics(posterior)], dim="summary")


def summary_table(summary: xr.Dataset) -> pd.DataFrame:
    """The summary Dataset as ArviZ's wide table (one row per parameter)."""
    from arviz_base import dataset_to_dataframe

    return dataset_to_dataframe(summary, sample_dims=["summary"]).T


def summarise_draws(
    draws: xr.DataArray,
    *,
    options: OutputOptions | None = None,
    interval: str | None = None,
    prob: float | None = None,
) -> pd.DataFrame | pd.Series:
    """Posterior summary of any draws over (chain, draw): mean, SD, the interval (the run's
    options, or ``interval``/``prob``), P(> 0) and the probability of direction. One row
    per coordinate of the other dims (a Series for a scalar quantity)."""
    options = options or OutputOptions()
    if interval is not None or prob is not None:
        options = OutputOptions(
            interval=interval or options.interval,
            prob=options.prob if prob is None else prob,
            min_cell_n=options.min_cell_n,
            lang=options.lang,
        )
    missing = [d for d in SAMPLE_DIMS if d not in draws.dims]
    if missing:
        raise SpecError(f"summarise: the draws lack the dim(s) {', '.join(missing)}")
    lower, upper = interval_of(draws, options=options)
    other = [d for d in draws.dims if d not in SAMPLE_DIMS]
    positive = (draws > 0).where(draws.notnull()).mean(SAMPLE_DIMS)
    columns = {
        "mean": draws.mean(SAMPLE_DIMS).transpose(*other).to_numpy(),
        "sd": draws.std(SAMPLE_DIMS, ddof=1).transpose(*other).to_numpy(),
        "lower": lower,
        "upper": upper,
        "p_positive": positive.transpose(*other).to_numpy(),
    }
    columns["p_direction"] = np.maximum(columns["p_positive"], 1.0 - columns["p_positive"])
    label = f"{options.interval}{options.percent}"
    if not other:
        out = pd.Series({k: float(v) for k, v in columns.items()})
        out.attrs["interval"] = label
        return out
    index = (
        pd.MultiIndex.from_product([draws[d].to_numpy() for d in other], names=other)
        if len(other) > 1
        else pd.Index(draws[other[0]].to_numpy(), name=other[0])
    )
    out = pd.DataFrame({k: np.ravel(v) for k, v in columns.items()}, index=index)
    out.attrs["interval"] = label
    return out


def interval_of(draws: xr.DataArray, *, options: OutputOptions) -> tuple[np.ndarray, np.ndarray]:
    """:func:`interval` for draws with any other dims (NaN draws give NaN bounds)."""
    other = [d for d in draws.dims if d not in SAMPLE_DIMS]
    values = draws.transpose(*other, *SAMPLE_DIMS).to_numpy()
    if values.ndim == 2:  # one quantity
        lo, hi = draw_interval(values.reshape(-1), options.interval, options.prob)
        return np.asarray(lo), np.asarray(hi)
    return draw_interval(values, options.interval, options.prob, axis=(-2, -1))
