"""The design of a linear multilevel model, built sparse and streamed in chunks.

One layout serves both backends: coefficient names follow Bambi's (``wave[2016]``,
``1|wave:gender[2014:boy]``) so summaries read the same whichever path fitted them.
Group terms get a column for every combination of declared levels (not only the
observed ones): an empty cell's coefficient is then simply drawn from its prior, which
is what g-computation needs for a counterfactual cell.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from itertools import product

import numpy as np
import pandas as pd
import scipy.sparse as sp

from omlbayes.errors import SpecError
from omlbayes.model.spec import ModelSpec, group_term_name

CHUNK_ROWS = 200_000
# With ``residual_sd_by = col`` the posterior's ``sigma`` has the dim ``col + SIGMA_DIM_SUFFIX``.
SIGMA_DIM_SUFFIX = "__sigma_dim"


def variance_names(variables: Iterable[Hashable]) -> list[str]:
    """The variance parameters among posterior variables, in their order: the residual SD
    ``sigma`` and each group term's SD ``<term>_sigma`` (Bambi's names, both backends)."""
    return [str(v) for v in variables if v == "sigma" or str(v).endswith("_sigma")]


@dataclass(frozen=True)
class Term:
    """One model term: its Bambi variable name, kind, data columns and coordinates."""

    name: str
    kind: str  # "intercept" | "categorical" | "numeric" | "group" | "cells" (unpooled)
    columns: tuple[str, ...]
    coords: tuple[str, ...]  # coefficient labels; () for a scalar term
    dim: str | None

    @property
    def size(self) -> int:
        return max(len(self.coords), 1)

    def coef_names(self) -> list[str]:
        if not self.coords:
            return [self.name]
        return [f"{self.name}[{c}]" for c in self.coords]


@dataclass(frozen=True)
class DesignLayout:
    """The ordered terms of a model and the category levels its columns use."""

    terms: tuple[Term, ...]
    levels: dict[str, tuple[str, ...]]

    @property
    def n_coef(self) -> int:
        return sum(t.size for t in self.terms)

    @property
    def coef_names(self) -> list[str]:
        return [name for t in self.terms for name in t.coef_names()]

    def slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for t in self.terms:
            out[t.name] = slice(start, start + t.size)
            start += t.size
        return out

    @property
    def group_terms(self) -> tuple[Term, ...]:
        return tuple(t for t in self.terms if t.kind == "group")


def _levels(frame: pd.DataFrame, column: str) -> tuple[str, ...]:
    values = frame[column]
    if isinstance(values.dtype, pd.CategoricalDtype):
        present = set(values.dropna().unique())
        # declared order, restricted to levels present in the data (Bambi codes only those)
        return tuple(str(c) for c in values.cat.categories if c in present)
    return tuple(sorted(str(v) for v in values.dropna().unique()))


def build_layout(frame: pd.DataFrame, spec: ModelSpec) -> DesignLayout:
    """Lay out the coefficients of ``spec`` for the categories present in ``frame``."""
    missing = [c for c in spec.columns if c not in frame.columns]
    if missing:
        raise SpecError(f"model {spec.name}: data lack column(s) {', '.join(missing)}")

    def numeric(col: str) -> bool:
        return pd.api.types.is_numeric_dtype(frame[col]) and not isinstance(
            frame[col].dtype, pd.CategoricalDtype
        )

    categorical = {c for t in spec.group_terms for c in t}  # grouping: always levels
    categorical |= {c for t in spec.common if ":" in t for c in t.split(":")}
    categorical |= {c for c in spec.common if ":" not in c and not numeric(c)}
    return layout_for(spec, {c: _levels(frame, c) for c in categorical})


def layout_for(spec: ModelSpec, levels: dict[str, tuple[str, ...]]) -> DesignLayout:
    """The layout of ``spec`` for the levels present (a common column without levels is
    numeric): what :func:`build_layout` gives for data with those levels, e.g. rebuilt
    from a saved run."""
    used: dict[str, tuple[str, ...]] = {}
    terms = [Term("Intercept", "intercept", (), (), None)]
    for col in spec.common:
        if ":" in col:  # unpooled cells: every combination a fixed effect (Normal prior)
            cols = tuple(col.split(":"))
            for c in cols:
                used.setdefault(c, tuple(levels[c]))
            cells = tuple(":".join(combo) for combo in product(*(used[c] for c in cols)))
            terms.append(Term(col, "cells", cols, cells, f"{col}_dim"))
            continue
        if col not in levels:
            terms.append(Term(col, "numeric", (col,), (), None))
            continue
        used[col] = tuple(levels[col])
        if len(used[col]) < 2:
            raise SpecError(_one_level(spec, col, used[col]))
        terms.append(Term(col, "categorical", (col,), used[col][1:], f"{col}_dim"))
    for cols in spec.group_terms:
        for col in cols:
            used.setdefault(col, tuple(levels[col]))
        name = group_term_name(cols)
        cells = tuple(":".join(combo) for combo in product(*(used[c] for c in cols)))
        terms.append(Term(f"1|{name}", "group", cols, cells, f"{name}__factor_dim"))
    return DesignLayout(tuple(terms), used)


def _codes(values: pd.Series, levels: tuple[str, ...], column: str) -> np.ndarray:
    codes = pd.Index(levels).get_indexer(values.astype("string"))
    if (codes < 0).any():
        bad = values[codes < 0].iloc[0]
        raise SpecError(f"column {column!r} has level {bad!r} unknown to the fitted model")
    return codes.astype(np.int64)


def encode(frame: pd.DataFrame, layout: DesignLayout) -> dict[str, np.ndarray]:
    """Level codes of the categorical columns and values of the numeric ones."""
    out = {col: _codes(frame[col], lv, col) for col, lv in layout.levels.items()}
    for term in layout.terms:
        if term.kind == "numeric":
            out[term.columns[0]] = frame[term.columns[0]].to_numpy(dtype=np.float64)
    return out


def design_from_codes(
    encoded: dict[str, np.ndarray], n: int, layout: DesignLayout
) -> sp.csr_matrix:
    """The sparse design matrix from :func:`encode`'s arrays (each of length ``n``)."""
    rows, cols, vals = [], [], []
    start = 0
    for term in layout.terms:
        if term.kind in ("intercept", "numeric"):
            rows.append(np.arange(n))
            cols.append(np.full(n, start))
            vals.append(np.ones(n) if term.kind == "intercept" else encoded[term.columns[0]])
        else:
            cell = np.zeros(n, dtype=np.int64)
            for col in term.columns:
                cell = cell * len(layout.levels[col]) + encoded[col]
            if term.kind == "categorical":
                keep = cell > 0  # the first level is the reference
                rows.append(np.flatnonzero(keep))
                cols.append(start + cell[keep] - 1)
                vals.append(np.ones(int(keep.sum())))
            else:
                rows.append(np.arange(n))
                cols.append(start + cell)
                vals.append(np.ones(n))
        start += term.size
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n, layout.n_coef),
    )


def weighted_mean_row(
    encoded: dict[str, np.ndarray], weights: np.ndarray, layout: DesignLayout
) -> np.ndarray:
    """``weights @ design_from_codes(encoded)`` without building the matrix (weights sum to 1)."""
    parts = []
    for term in layout.terms:
        if term.kind == "intercept":
            parts.append(np.array([weights.sum()]))
        elif term.kind == "numeric":
            parts.append(np.array([weights @ encoded[term.columns[0]]]))
        else:
            cell = np.zeros(len(weights), dtype=np.int64)
            for col in term.columns:
                cell = cell * len(layout.levels[col]) + encoded[col]
            counts = np.bincount(
                cell, weights=weights, minlength=term.size + (term.kind == "categorical")
            )
            parts.append(counts[1:] if term.kind == "categorical" else counts)
    return np.concatenate(parts)


def design_matrix(frame: pd.DataFrame, layout: DesignLayout) -> sp.csr_matrix:
    """The sparse design matrix (rows of ``frame`` x coefficients of ``layout``)."""
    return design_from_codes(encode(frame, layout), len(frame), layout)


@dataclass(frozen=True)
class SufficientStats:
    """Everything a Gaussian linear model's likelihood needs: W'W, W'y, y'y and n."""

    wtw: np.ndarray
    wty: np.ndarray
    yty: float
    n: int


def sufficient_stats(
    frame: pd.DataFrame, layout: DesignLayout, response: str, *, chunk_rows: int = CHUNK_ROWS
) -> SufficientStats:
    """One pass over the data in chunks, so memory stays flat in the number of students."""
    p = layout.n_coef
    wtw, wty, yty = np.zeros((p, p)), np.zeros(p), 0.0
    for start in range(0, len(frame), chunk_rows):
        chunk = frame.iloc[start : start + chunk_rows]
        w = design_matrix(chunk, layout)
        y = chunk[response].to_numpy(dtype=np.float64)
        wtw += (w.T @ w).toarray()
        wty += w.T @ y
        yty += float(y @ y)
    return SufficientStats(wtw, wty, yty, len(frame))


@dataclass(frozen=True)
class GroupedStats:
    """Sufficient statistics per residual-variance group, with W'W sparse.

    Group g holds the rows whose ``by`` column has level ``groups[g]``; with no ``by``
    there is one group, ``("all",)``. Summing chunks (``+``) gives the whole data's.
    """

    wtw: tuple[sp.csc_matrix, ...]
    wty: np.ndarray  # (G, p)
    yty: np.ndarray  # (G,)
    n: np.ndarray  # (G,)
    groups: tuple[str, ...]

    def __add__(self, other: GroupedStats) -> GroupedStats:
        if self.groups != other.groups:
            raise ValueError("cannot add statistics of different residual groups")
        return GroupedStats(
            tuple(sp.csc_matrix(a + b) for a, b in zip(self.wtw, other.wtw, strict=True)),
            self.wty + other.wty,
            self.yty + other.yty,
            self.n + other.n,
            self.groups,
        )

    @property
    def n_groups(self) -> int:
        return len(self.groups)

    def pattern(self) -> sp.csc_matrix:
        """The summed W'W (its non-zeros are the pattern of every group's)."""
        total = self.wtw[0]
        for a in self.wtw[1:]:
            total = total + a
        return sp.csc_matrix(total)

    def pooled(self) -> SufficientStats:
        """One dense statistic for the whole data (the dense kernel's input)."""
        return SufficientStats(
            self.pattern().toarray(),
            self.wty.sum(axis=0),
            float(self.yty.sum()),
            int(self.n.sum()),
        )

    @classmethod
    def from_pooled(cls, stats: SufficientStats) -> GroupedStats:
        return cls(
            (sp.csc_matrix(stats.wtw),),
            stats.wty[None, :].copy(),
            np.array([float(stats.yty)]),
            np.array([float(stats.n)]),
            ("all",),
        )


def residual_groups(frame: pd.DataFrame, by: str | None) -> tuple[str, ...]:
    """Levels of the residual-SD grouping column (``("all",)`` without one)."""
    if by is None:
        return ("all",)
    if by not in frame.columns:
        raise SpecError(f"residual_sd_by: data lack column {by!r}")
    levels = _levels(frame, by)
    if len(levels) < 2:
        raise SpecError(
            f"residual_sd_by: column {by!r} has {_count(levels)} in the data, so there is one "
            "residual SD; remove the residual_sd_by key from the model spec (a copy of it, "
            "--model <path>)"
        )
    return levels


def _count(levels: tuple[str, ...]) -> str:
    return f"one level ({levels[0]!r})" if levels else "no levels"


def _one_level(spec: ModelSpec, col: str, levels: tuple[str, ...]) -> str:
    """The error for a column of the spec that the data give fewer than two levels."""
    return (
        f"model {spec.name}: column {col!r} has {_count(levels)} in the data, so its effects "
        f"cannot be estimated; fit a copy of the model spec without {col!r} (remove it from "
        "common, group, residual_sd_by and the breakdowns; --model <path>)"
    )


def chunk_grouped_stats(
    chunk: pd.DataFrame,
    layout: DesignLayout,
    response: str,
    by: str | None,
    groups: tuple[str, ...],
) -> GroupedStats:
    """The statistics of one chunk of rows (see :func:`grouped_stats`)."""
    w = design_matrix(chunk, layout)
    y = chunk[response].to_numpy(dtype=np.float64)
    code = np.zeros(len(chunk), dtype=np.int64) if by is None else _codes(chunk[by], groups, by)
    p = layout.n_coef
    wtw, wty = [], np.zeros((len(groups), p))
    yty, n = np.zeros(len(groups)), np.zeros(len(groups))
    for g in range(len(groups)):
        rows = np.flatnonzero(code == g)
        w_g, y_g = w[rows], y[rows]
        wtw.append(sp.csc_matrix(w_g.T @ w_g))
        wty[g] = w_g.T @ y_g
        yty[g] = float(y_g @ y_g)
        n[g] = rows.size
    return GroupedStats(tuple(wtw), wty, yty, n, groups)


def grouped_stats(
    frame: pd.DataFrame,
    layout: DesignLayout,
    response: str,
    *,
    by: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> GroupedStats:
    """One chunked pass: sparse W'W, W'y, y'y, n per level of ``by`` (memory flat in n)."""
    groups = residual_groups(frame, by)
    total = None
    for start in range(0, len(frame), chunk_rows):
        part = chunk_grouped_stats(
            frame.iloc[start : start + chunk_rows], layout, response, by, groups
        )
        total = part if total is None else total + part
    if total is None:
        raise SpecError("no rows to fit")
    return total
