"""Data for the sensitivity analyses the factsheet raises, as canonical survey files.

- ``exclude``: drop the rows with one level of a column (e.g. parental education
  "unknown" excluded instead of kept as its own category, the default);
- ``schools_in_all``: keep the rows of some waves only for schools surveyed in every one of
  them (e.g. the 2020 sub-waves restricted to the schools present in all three), other
  waves untouched.

The result is written as a canonical CSV (schema columns, declared levels as labels) that
``scripts/fit.py --data`` reads with the default column map; ``scripts/compare.py`` then puts
its contrasts next to the main run's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from omlbayes.errors import InputError


def exclude(frame: pd.DataFrame, column: str, level: str) -> pd.DataFrame:
    """The rows whose ``column`` is not ``level`` (the level is dropped from the categories)."""
    if column not in frame.columns:
        raise InputError(f"--exclude {column}={level}: no column {column!r} in the survey")
    values = frame[column].astype(str)
    if not (values == level).any():
        raise InputError(f"--exclude {column}={level}: no row has {column} = {level!r}")
    out = frame[values != level].copy()
    if isinstance(out[column].dtype, pd.CategoricalDtype):
        out[column] = out[column].cat.remove_categories([level])
    return out


def schools_in_all(frame: pd.DataFrame, waves: Sequence[str]) -> pd.DataFrame:
    """Rows of ``waves`` kept only for schools with students in every one of them."""
    present = set(frame["wave"].astype(str))
    missing = [w for w in waves if w not in present]
    if missing:
        raise InputError(f"--schools-in-all: wave(s) {', '.join(missing)} not in the survey")
    in_waves = frame["wave"].astype(str).isin(waves)
    seen = (
        frame[in_waves]
        .groupby("school_id", observed=True)["wave"]
        .agg(lambda w: set(w.astype(str)))
    )
    complete = set(seen[seen.map(lambda s: set(waves) <= s)].index)
    if not complete:
        raise InputError(f"--schools-in-all: no school has students in all of {', '.join(waves)}")
    keep = ~in_waves | frame["school_id"].isin(complete)
    return frame[keep].copy()


def write_canonical(frame: pd.DataFrame, path: Path) -> Path:
    """A canonical CSV, written to a temporary name and renamed (never half-written)."""
    if path.suffix.lower() != ".csv":
        raise InputError(f"{path}: the output must be a .csv file")
    if not path.parent.is_dir():
        raise InputError(f"{path}: folder {path.parent} does not exist; create it first")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        frame.to_csv(tmp, index=False, lineterminator="\n")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
