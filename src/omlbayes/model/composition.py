"""The composition an adjusted mean standardizes to, kept without student rows.

An adjusted mean sets some columns for every student (the wave, a breakdown's levels) and
keeps the others as the reference population has them. The model is linear and each term
reads a few columns, so the average over students needs, per term, only the distribution
of the term's columns that are not set: counts over small sets of columns, pooled or
within each wave. This module keeps exactly those counts (every subset of a term's columns,
with and without the wave), each cell under the disclosure threshold set to 0: its
students are left out of that one marginal, as the run's tables suppress them. The
reported adjusted means and every new question asked through the API are computed from
this one store, so a run folder answers them all and reproduces its own tables.

References (``reference=``): ``"pooled"`` (all students: the factsheet's "controlled
for"), ``"wave"`` (each wave's own students: the trend as observed, composition change
included), or a population table (post-stratification: its columns' distribution from
the table, the other columns' conditional distribution given them from the survey).
Schools: ``"any"`` (school terms at their mean, zero: a school like any other) or
``"surveyed"`` (each student keeps their school and its realized deviation; a breakdown
by a school-level column, school type or region, keeps the schools of that group).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd
import xarray as xr

from omlbayes.errors import SpecError
from omlbayes.model.design import DesignLayout

WAVE = "wave"
SCHOOL = "school_id"
REFERENCES = ("pooled", "wave")
SCHOOL_MODES = ("any", "surveyed")
_PREFIX = "n__"  # variable names in the stored group: n__<col>__<col>...
_SEP = "__"


@dataclass(frozen=True)
class Composition:
    """Disclosure-coarsened counts: ``tables[columns]`` (named dims, the levels as
    coordinates), sums of the numeric columns per wave, and students per school and wave
    with each school's school-level columns."""

    tables: dict[tuple[str, ...], xr.DataArray]
    numeric_sums: xr.Dataset  # per numeric column: sums over the students of each wave
    wave_counts: xr.DataArray  # students per wave (uncoarsened: waves hold thousands)
    schools: xr.DataArray  # (school_id, wave) counts, cells under the threshold set to 0
    school_levels: pd.DataFrame  # one row per school: its school-level columns
    min_cell_n: int
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    # -- building --------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        frame: pd.DataFrame,
        layout: DesignLayout,
        *,
        min_cell_n: int,
        weight: str | None = None,
    ) -> Composition:
        """From the analysed rows (or counted patterns with ``weight`` their counts and
        numeric columns their means)."""
        n = frame[weight].to_numpy(float) if weight else np.ones(len(frame))
        columns = _column_sets(layout)
        tables = {cols: _count(frame, cols, n, layout, min_cell_n) for cols in columns}
        numeric = [t.columns[0] for t in layout.terms if t.kind == "numeric"]
        waves = list(layout.levels[WAVE])
        codes = pd.Categorical(frame[WAVE].astype(str), categories=waves).codes
        wave_counts = np.bincount(codes, weights=n, minlength=len(waves))
        sums = {
            c: (
                WAVE,
                np.bincount(codes, weights=n * frame[c].to_numpy(float), minlength=len(waves)),
            )
            for c in numeric
        }
        schools = (
            _count(frame, (SCHOOL, WAVE), n, layout, min_cell_n)
            if SCHOOL in layout.levels
            else xr.DataArray(np.zeros((0, len(waves))), dims=(SCHOOL, WAVE))
        )
        return cls(
            tables,
            xr.Dataset(sums, coords={WAVE: waves}),
            xr.DataArray(wave_counts, dims=(WAVE,), coords={WAVE: waves}),
            schools,
            _school_levels(frame, layout),
            int(min_cell_n),
        )

    # -- storing ---------------------------------------------------------------------
    def to_dataset(self) -> xr.Dataset:
        """The group ``composition`` of posterior.nc."""
        out = {_PREFIX + _SEP.join(cols): table for cols, table in self.tables.items()}
        out.update({f"sum{_SEP}{c}": v for c, v in self.numeric_sums.data_vars.items()})
        out["n_wave"] = self.wave_counts
        out["n_school_wave"] = self.schools
        levels = self.school_levels
        for col in levels.columns:
            out[f"school{_SEP}{col}"] = xr.DataArray(
                levels[col].astype(str).to_numpy(), dims=(SCHOOL,)
            )
        ds = xr.Dataset(out)
        ds.attrs["min_cell_n"] = self.min_cell_n
        return ds

    @classmethod
    def from_dataset(cls, ds: xr.Dataset) -> Composition:
        tables = {
            tuple(name.removeprefix(_PREFIX).split(_SEP)): ds[name]
            for name in ds.data_vars
            if name.startswith(_PREFIX)
        }
        sums = {
            name.split(_SEP, 1)[1]: ds[name]
            for name in ds.data_vars
            if name.startswith(f"sum{_SEP}")
        }
        school_cols = [n.split(_SEP, 1)[1] for n in ds.data_vars if n.startswith(f"school{_SEP}")]
        schools = ds["n_school_wave"]
        levels = pd.DataFrame(
            {c: ds[f"school{_SEP}{c}"].to_numpy().astype(str) for c in school_cols},
            index=pd.Index(schools[SCHOOL].to_numpy().astype(str), name=SCHOOL)
            if SCHOOL in schools.coords
            else None,
        )
        return cls(
            tables,
            xr.Dataset(sums),
            ds["n_wave"],
            schools,
            levels,
            int(ds.attrs.get("min_cell_n", 0)),
        )

    @property
    def levels(self) -> dict[str, tuple[str, ...]]:
        """The levels present of every categorical column (and the schools)."""
        out = {
            cols[0]: tuple(str(v) for v in table[cols[0]].to_numpy())
            for cols, table in self.tables.items()
            if len(cols) == 1
        }
        if self.schools.sizes.get(SCHOOL):
            out[SCHOOL] = tuple(str(v) for v in self.schools[SCHOOL].to_numpy())
        return out

    # -- marginals -------------------------------------------------------------------
    def distribution(
        self, columns: tuple[str, ...], *, wave: str | None, reference: object
    ) -> xr.DataArray:
        """P(columns) under the reference; ``wave`` gives the students of that wave (the
        ``"wave"`` reference). Sums to 1 over the columns' levels (0s where nobody is)."""
        if not columns:
            return xr.DataArray(1.0)
        if isinstance(reference, pd.DataFrame):
            return self._poststratified(columns, reference)
        if wave is not None and WAVE not in columns:
            counts = self.table((*columns, WAVE)).sel({WAVE: wave}, drop=True)
        else:
            counts = self.table(columns)
        return _normalise(counts)

    def table(self, columns: tuple[str, ...]) -> xr.DataArray:
        """The stored counts over ``columns`` (in any order), dims in ``columns``' order."""
        for key, table in self.tables.items():
            if set(key) == set(columns):
                return table.transpose(*columns)
        raise SpecError(f"the run keeps no composition over {', '.join(columns)}")

    def array(self, columns: tuple[str, ...]) -> np.ndarray:
        """:meth:`table` as a numpy array (cached)."""
        key = ("array", columns)
        if key not in self._cache:
            self._cache[key] = self.table(columns).to_numpy()
        return self._cache[key]

    def probabilities(self, columns: tuple[str, ...], *, wave: str | None, reference: object):
        """:meth:`distribution` as a numpy array over ``columns`` (cached per question)."""
        ref = id(reference) if isinstance(reference, pd.DataFrame) else reference
        key = ("p", columns, wave, ref)
        if key not in self._cache:
            self._cache[key] = self.distribution(columns, wave=wave, reference=reference).to_numpy()
        return self._cache[key]

    def numeric_mean(self, column: str, *, wave: str | None) -> float:
        sums = self.numeric_sums[column]
        if wave is None:
            return float(sums.sum() / self.wave_counts.sum())
        return float(sums.sel({WAVE: wave}) / self.wave_counts.sel({WAVE: wave}))

    def _poststratified(self, columns: tuple[str, ...], population: pd.DataFrame) -> xr.DataArray:
        """P_population(columns in the table) x P_survey(other columns | those)."""
        given = tuple(c for c in columns if c in population.columns and c != "n")
        rest = tuple(c for c in columns if c not in given)
        if not given:
            return _normalise(self.table(columns))
        counts = population.groupby(list(given), observed=True)["n"].sum()
        levels = {c: self.table((c,))[c].to_numpy() for c in given}
        known = xr.DataArray(
            np.zeros(tuple(len(levels[c]) for c in given)),
            dims=given,
            coords={c: levels[c] for c in given},
        )
        for key, value in counts.items():
            key = key if isinstance(key, tuple) else (key,)
            if all(str(k) in set(map(str, levels[c])) for k, c in zip(key, given, strict=True)):
                known.loc[dict(zip(given, map(str, key), strict=True))] = float(value)
        p_given = _normalise(known)
        if not rest:
            return p_given.transpose(*columns)
        joint = self.table(columns)
        conditional = joint / joint.sum(rest).where(joint.sum(rest) > 0)
        return (p_given * conditional.fillna(0.0)).transpose(*columns)


def _normalise(counts: xr.DataArray) -> xr.DataArray:
    total = float(counts.sum())
    return counts / total if total > 0 else counts * 0.0


def _column_sets(layout: DesignLayout) -> list[tuple[str, ...]]:
    """Every subset of every term's non-school columns, with and without the wave, in the
    layout's column order."""
    order = [c for c in layout.levels if c != SCHOOL]
    sets: set[frozenset[str]] = set()
    for term in layout.terms:
        if term.kind not in ("categorical", "group", "cells"):
            continue
        cols = [c for c in term.columns if c != SCHOOL]
        for r in range(len(cols) + 1):
            for sub in combinations(cols, r):
                sets.add(frozenset(sub))
                sets.add(frozenset((*sub, WAVE)))
    return sorted(
        (tuple(c for c in order if c in s) for s in sets if s),
        key=lambda cols: (len(cols), cols),
    )


def _count(
    frame: pd.DataFrame,
    columns: tuple[str, ...],
    n: np.ndarray,
    layout: DesignLayout,
    min_cell_n: int,
) -> xr.DataArray:
    """Counts over ``columns`` (all declared levels), cells with 0 < n < min_cell_n set to 0."""
    levels = [list(layout.levels[c]) for c in columns]
    codes = [
        pd.Categorical(frame[c].astype(str), categories=lv).codes
        for c, lv in zip(columns, levels, strict=True)
    ]
    flat = (
        np.ravel_multi_index(codes, [len(lv) for lv in levels])
        if columns
        else np.zeros(len(frame), int)
    )
    counts = np.bincount(flat, weights=n, minlength=int(np.prod([len(lv) for lv in levels])))
    counts = np.where(counts < min_cell_n, 0.0, counts)
    return xr.DataArray(
        counts.reshape([len(lv) for lv in levels]),
        dims=columns,
        coords={c: lv for c, lv in zip(columns, levels, strict=True)},
    )


def _school_levels(frame: pd.DataFrame, layout: DesignLayout) -> pd.DataFrame:
    """Each school's value of the columns that are constant within every school."""
    if SCHOOL not in layout.levels:
        return pd.DataFrame()
    candidates = [c for c in layout.levels if c not in (SCHOOL, WAVE)]
    grouped = frame.groupby(frame[SCHOOL].astype(str), observed=True)
    constant = [c for c in candidates if (grouped[c].nunique() <= 1).all()]
    out = (
        grouped[constant].first().astype(str)
        if constant
        else pd.DataFrame(index=grouped.size().index)
    )
    return out.reindex([str(s) for s in layout.levels[SCHOOL]])


# --- weights -----------------------------------------------------------------------------


def weight_row(
    layout: DesignLayout,
    composition: Composition,
    setting: dict[str, str],
    *,
    reference: object = "pooled",
    schools: str = "any",
) -> tuple[np.ndarray, float]:
    """The g-computation row a . b of one adjusted mean: every student with ``setting``
    (column -> level; no wave key = each student's own wave), the other columns as the
    reference has them. Returns the row and the share of students it places in cells
    the store holds none in (empty, or under the disclosure threshold)."""
    if schools not in SCHOOL_MODES:
        raise SpecError(f"schools={schools!r}; use one of {', '.join(SCHOOL_MODES)}")
    if isinstance(reference, str) and reference not in REFERENCES:
        raise SpecError(f"composition={reference!r}; use one of {', '.join(REFERENCES)} or a table")
    wave = setting.get(WAVE) if isinstance(reference, str) and reference == "wave" else None
    parts, empty = [], 0.0
    for term in layout.terms:
        if term.kind == "intercept":
            parts.append(np.ones(1))
        elif term.kind == "numeric":
            parts.append(np.array([composition.numeric_mean(term.columns[0], wave=wave)]))
        elif SCHOOL in term.columns:
            parts.append(_school_part(term, layout, composition, setting, schools, wave))
        else:
            cells, miss = _term_cells(term, layout, composition, setting, wave, reference)
            parts.append(cells[1:] if term.kind == "categorical" else cells)
            if term.kind != "categorical":
                empty = max(empty, miss)
    return np.concatenate(parts), empty


def _term_cells(term, layout, composition, setting, wave, reference) -> tuple[np.ndarray, float]:
    """P(cell) over every cell of the term (flattened in the layout's order) and the share
    in cells without students."""
    cols = term.columns
    free = tuple(c for c in cols if c not in setting)
    p = composition.probabilities(free, wave=wave, reference=reference)
    full = np.zeros([len(layout.levels[c]) for c in cols])
    at = tuple(layout.levels[c].index(setting[c]) if c in setting else slice(None) for c in cols)
    full[at] = p
    cells = full.reshape(-1)
    observed = composition.array(cols).reshape(-1)
    return cells, float(cells[observed == 0].sum())


def _school_part(term, layout, composition, setting, schools, wave) -> np.ndarray:
    """School terms: zero for a school like any other; for the surveyed schools, each
    school's share of the reference's students (of the breakdown's schools where it sets a
    school-level column), at the wave set (or each student's own)."""
    out = np.zeros(term.size)
    if schools == "any":
        return out
    counts = composition.schools  # (school_id, wave)
    keep = np.ones(counts.sizes[SCHOOL], dtype=bool)
    for col, level in setting.items():
        if col in composition.school_levels.columns:
            keep &= composition.school_levels[col].to_numpy() == str(level)
    counts = counts.where(xr.DataArray(keep, dims=(SCHOOL,)), 0.0)
    if wave is not None:
        counts = counts.sel({WAVE: [wave]})
    total = float(counts.sum())
    if total == 0:
        return np.full(term.size, np.nan)  # no surveyed school of that group
    share = (counts / total).transpose(SCHOOL, WAVE)
    if term.columns == (SCHOOL,):
        return share.sum(WAVE).to_numpy()
    if term.columns == (SCHOOL, WAVE):
        at = setting.get(WAVE)
        full = share.reindex({WAVE: list(layout.levels[WAVE])}, fill_value=0.0)
        if at is not None:  # every student moved to wave ``at``: their school's cell there
            moved = xr.zeros_like(full)
            moved.loc[{WAVE: at}] = full.sum(WAVE)
            full = moved
        return full.to_numpy().reshape(-1)
    raise SpecError(f"term {term.name}: schools='surveyed' handles school and school x wave only")


def levels_of(composition: Composition, column: str) -> list[str]:
    return [str(v) for v in composition.table((column,))[column].to_numpy()]
