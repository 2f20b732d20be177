"""Descriptive tables of the survey: sample composition (Table 1) and item answers (Figure 1).

Pure computation on the canonical survey frame; plots draw these tables, never the frame.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from omlbayes.constants import ITEM_COLUMNS, ITEM_MAX, ITEM_MIN
from omlbayes.errors import InputError

COMPOSITION_COLUMNS = ("gender", "school_type", "parent_edu", "region")
MISSING_LEVEL = "missing"  # shown as its own row so nothing is dropped silently
ALL = "all"


def _require(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    absent = [name for name in columns if name not in frame.columns]
    if absent:
        raise InputError(
            f"{what}: the survey frame lacks column(s) {', '.join(absent)}; "
            "read it with ingest.read_survey so it has the canonical columns"
        )


def _levels(values: pd.Series) -> list[str]:
    """Declared levels (the Categorical's order), else the sorted observed values."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return [str(cat) for cat in values.cat.categories]
    return sorted(str(v) for v in values.dropna().unique())


def _counts(values: pd.Series, levels: list[str], weights: pd.Series | None = None) -> pd.Series:
    """Count per declared level (zeros kept), plus a ``missing`` entry when any is absent.

    ``weights`` (one count per row, e.g. a table of counted patterns) replace the 1 per row.
    """
    if weights is None:
        counts = values.astype("string").value_counts()
        n_missing = int(values.isna().sum())
    else:
        counts = weights.groupby(values.astype("string").to_numpy(), dropna=True).sum()
        n_missing = int(weights[values.isna().to_numpy()].sum())
    counts = counts.reindex(levels, fill_value=0).astype("int64")
    if n_missing:
        counts[MISSING_LEVEL] = n_missing
    return counts


def composition_table(
    frame: pd.DataFrame, *, by_wave: bool = False, weight: str | None = None
) -> pd.DataFrame:
    """Table 1: the share (%) of each level of gender, school type, parental education, region.

    Parameters
    ----------
    frame : pandas.DataFrame
        The canonical survey frame (ordered Categoricals; levels in declared order).
    by_wave : bool, default False
        Add one percent column per wave (named by the wave label), and ``all``.
    weight : str, optional
        A column of counts: each row then stands for that many students (a table of
        counted patterns from a streamed pass gives the same table as the rows themselves).

    Returns
    -------
    pandas.DataFrame
        Columns ``variable, level, n, percent`` (``n`` and ``percent`` over all waves);
        with ``by_wave=True`` also one column per wave and ``all`` (= ``percent``).
        Levels keep their declared order; a level with no students has ``n = 0``; missing
        values get their own ``missing`` row, so each variable's percentages sum to 100.
    """
    _require(frame, COMPOSITION_COLUMNS, "composition_table")
    if by_wave:
        _require(frame, ("wave",), "composition_table(by_wave=True)")
        wave_text = frame["wave"].astype("object")
    weights = None if weight is None else frame[weight].reset_index(drop=True)
    parts = []
    for variable in COMPOSITION_COLUMNS:
        values = frame[variable].reset_index(drop=True)
        levels = _levels(values)
        counts = _counts(values, levels, weights)
        part = pd.DataFrame(
            {
                "variable": variable,
                "level": counts.index,
                "n": counts.to_numpy(),
                "percent": _percent(counts).to_numpy(),
            }
        )
        if by_wave:
            for wave in _levels(frame["wave"]):
                in_wave_rows = (wave_text == wave).to_numpy()
                in_wave = _counts(
                    values[in_wave_rows],
                    levels,
                    None if weights is None else weights[in_wave_rows],
                )
                part[wave] = _percent(in_wave.reindex(counts.index, fill_value=0)).to_numpy()
            part[ALL] = part["percent"]
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def _percent(counts: pd.Series) -> pd.Series:
    total = counts.sum()
    return 100.0 * counts / total if total else counts * np.nan


def item_distribution(
    frame: pd.DataFrame, *, items: tuple[str, ...] = ITEM_COLUMNS
) -> pd.DataFrame:
    """Per item the percentage of each answer among those who answered, with n and mean.

    Parameters
    ----------
    frame : pandas.DataFrame
        The canonical survey frame (items as nullable integers 1..5).
    items : tuple of str
        Item columns, in display order.

    Returns
    -------
    pandas.DataFrame
        One row per item: ``item, n, n_missing, mean, pct_1 .. pct_5``; the ``pct_*``
        columns of a row sum to 100.
    """
    _require(frame, items, "item_distribution")
    answers = range(ITEM_MIN, ITEM_MAX + 1)
    records = []
    for item in items:
        values = frame[item].astype("Float64")
        answered = values.dropna()
        outside = answered[~answered.isin(list(answers))]
        if len(outside):
            raise InputError(
                f"item_distribution: column {item!r} has value(s) "
                f"{', '.join(map(str, sorted(set(outside.tolist()))[:5]))} outside "
                f"{ITEM_MIN}..{ITEM_MAX}; validate the frame with ingest.read_survey first"
            )
        n = int(answered.size)
        row: dict[str, object] = {
            "item": item,
            "n": n,
            "n_missing": int(values.isna().sum()),
            "mean": float(answered.mean()) if n else np.nan,
        }
        for answer in answers:
            row[f"pct_{answer}"] = 100.0 * int((answered == answer).sum()) / n if n else np.nan
        records.append(row)
    return pd.DataFrame.from_records(records)
