"""Scale construction: the relations index per student, its reliability, and centred age.

The one place where model inputs are rescaled: ``index`` (standardized item mean) and
``age_c`` (age minus the sample mean); the constants go to the run record.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from omlbayes.constants import ITEM_COLUMNS, MIN_ITEMS
from omlbayes.data import exactsum
from omlbayes.errors import InputError

EXCLUSION_TOO_FEW_ITEMS = "fewer than {k} of 6 items answered"


@dataclass(frozen=True)
class ScaledSurvey:
    """The survey with ``index_raw`` (item mean) and ``index`` (standardized) columns."""

    frame: pd.DataFrame
    exclusions: dict[str, int]
    raw_mean: float  # standardization constants, kept for the run record
    raw_sd: float
    min_items: int
    age_mean: float = float("nan")  # the centre of ``age_c`` (nan when there is no age)


def build_index(
    frame: pd.DataFrame, *, min_items: int = MIN_ITEMS, items: tuple[str, ...] = ITEM_COLUMNS
) -> ScaledSurvey:
    """Mean of the answered items where at least ``min_items`` are answered, standardized.

    Rows with fewer answered items are excluded and counted, never silently dropped.
    Standardization is over all remaining students, waves and school types.
    """
    if not 1 <= min_items <= len(items):
        raise InputError(f"min_items must be between 1 and {len(items)}, got {min_items}")
    keep, raw = raw_index(frame, min_items=min_items, items=items)
    if not keep.any():
        raise InputError(
            f"no student answered at least {min_items} of the {len(items)} items; "
            "check the item columns or lower min_items"
        )
    kept = frame.loc[keep].copy()
    # exact sums (omlbayes.data.exactsum): the same constants, bit for bit, as a streamed pass
    raw_values = raw.to_numpy(dtype="float64")
    raw_mean, raw_sd = exactsum.mean_sd(
        len(raw_values), exactsum.total(raw_values), exactsum.total(raw_values * raw_values)
    )
    if not raw_sd > 0:
        raise InputError("the index has no variation: every student has the same item mean")
    kept["index_raw"] = raw
    kept["index"] = (raw - raw_mean) / raw_sd
    age_mean = float("nan")
    if "age" in kept.columns:
        kept["age_c"], age_mean = center(kept["age"])
    n_excluded = int((~keep).sum())
    exclusions = {EXCLUSION_TOO_FEW_ITEMS.format(k=min_items): n_excluded} if n_excluded else {}
    return ScaledSurvey(kept, exclusions, raw_mean, raw_sd, min_items, age_mean)


def raw_index(
    frame: pd.DataFrame, *, min_items: int = MIN_ITEMS, items: tuple[str, ...] = ITEM_COLUMNS
) -> tuple[pd.Series, pd.Series]:
    """Which rows have at least ``min_items`` answers, and their item mean (unstandardized).

    Per row, so a streamed pass over parts gives the same values as one pass over the file.
    """
    answers = frame[list(items)].astype("float64")
    keep = answers.notna().sum(axis=1) >= min_items
    return keep, answers.loc[keep].mean(axis=1)


def center(values: pd.Series) -> tuple[pd.Series, float]:
    """``values`` minus their mean (over the analysed students), and that mean."""
    x = values.astype("float64")
    try:  # exact (the streamed pass's bits); a column with gaps falls back to pandas' mean
        mean = exactsum.mean(len(x), exactsum.total(x.to_numpy()))
    except (ValueError, ZeroDivisionError):
        mean = float(x.mean())
    return x - mean, mean


def cronbach_alpha(items: pd.DataFrame) -> float:
    """Cronbach's alpha on complete cases: k/(k-1) * (1 - sum item var / var of the sum)."""
    complete = items.dropna().astype("float64").to_numpy()
    k = complete.shape[1]
    item_var = complete.var(axis=0, ddof=1).sum()
    total_var = complete.sum(axis=1).var(ddof=1)
    return float(k / (k - 1) * (1.0 - item_var / total_var))


def mcdonald_omega(items: pd.DataFrame) -> float:
    """McDonald's omega (total) of a one-factor model fitted to the item correlations.

    Loadings by iterated principal-axis factoring on complete cases:
    omega = (sum l)^2 / ((sum l)^2 + sum(1 - l^2)).
    """
    return omega_from_corr(np.corrcoef(items.dropna().astype("float64").to_numpy(), rowvar=False))


def omega_from_corr(corr: np.ndarray) -> float:
    """McDonald's omega from the item correlation matrix (see :func:`mcdonald_omega`)."""
    communality = 1.0 - 1.0 / np.diag(np.linalg.inv(corr))  # squared multiple correlations
    for _ in range(500):
        reduced = corr.copy()
        np.fill_diagonal(reduced, communality)
        eigval, eigvec = np.linalg.eigh(reduced)
        loadings = eigvec[:, -1] * np.sqrt(max(eigval[-1], 0.0))
        new = loadings**2
        if np.max(np.abs(new - communality)) < 1e-10:
            break
        communality = new
    loadings = np.abs(loadings)
    common = loadings.sum() ** 2
    return float(common / (common + np.sum(1.0 - loadings**2)))


def alpha_from_cov(cov: np.ndarray) -> float:
    """Cronbach's alpha from the complete-case item covariance matrix (ddof=1)."""
    k = cov.shape[0]
    return float(k / (k - 1) * (1.0 - np.trace(cov) / cov.sum()))


def item_total_from_cov(cov: np.ndarray, names: tuple[str, ...]) -> pd.Series:
    """Corrected item-total correlations from the item covariance matrix."""
    row = cov.sum(axis=1)
    total = cov.sum()
    with_rest = row - np.diag(cov)
    rest_var = total - 2.0 * row + np.diag(cov)
    r = with_rest / np.sqrt(np.diag(cov) * rest_var)
    return pd.Series({name: float(v) for name, v in zip(names, r, strict=True)})


def item_total_correlations(items: pd.DataFrame) -> pd.Series:
    """Corrected item-total correlation: each item against the sum of the other items."""
    complete = items.dropna().astype("float64")
    total = complete.sum(axis=1)
    return pd.Series(
        {name: float(np.corrcoef(complete[name], total - complete[name])[0, 1]) for name in items}
    )


def reliability(
    frame: pd.DataFrame, *, by: str | None = "wave", items: tuple[str, ...] = ITEM_COLUMNS
) -> pd.DataFrame:
    """Alpha, omega and n (complete cases) overall and per level of ``by``."""
    rows = [("all", frame)]
    if by is not None:
        rows += [(str(lvl), sub) for lvl, sub in frame.groupby(by, observed=True)]
    records = []
    for label, sub in rows:
        answers = sub[list(items)]
        records.append(
            {
                "group": label,
                "n_complete": int(answers.dropna().shape[0]),
                "alpha": cronbach_alpha(answers),
                "omega": mcdonald_omega(answers),
            }
        )
    return pd.DataFrame.from_records(records)
