"""The model's sufficient statistics from a streamed pass: from the counted patterns alone
(no second pass) or from a second pass over the parts, per residual group."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from omlbayes.constants import MIN_CELL_N
from omlbayes.data.ingest import BATCH_ROWS, ColumnMap
from omlbayes.data.stream import (
    PATTERN_COLUMNS,
    StreamedSurvey,
    _standardised,
    analysed_batches,
    count_patterns,
    finish_patterns,
)
from omlbayes.model.composition import Composition
from omlbayes.model.design import (
    CHUNK_ROWS,
    DesignLayout,
    GroupedStats,
    build_layout,
    chunk_grouped_stats,
    design_matrix,
    residual_groups,
)
from omlbayes.model.spec import ModelSpec


def stats_from_patterns(
    survey: StreamedSurvey | PatternTotals,
    layout: DesignLayout,
    spec: ModelSpec,
    groups: tuple[str, ...],
) -> GroupedStats | None:
    """W'W, W'y, y'y and n from the counted patterns alone (no second pass), or None.

    Rows of one pattern share every categorical column of the design, so their design rows
    differ only in ``age_c``: W'W = A' diag(n) A plus the ``age_c`` row and column from the
    pattern sums of age_c and age_c^2, W'y from the sums of y and age_c * y, y'y from the
    sum of y^2, with centring and standardisation applied to the sums exactly. None when
    the model reads anything else (another numeric column, a column outside the patterns).
    """
    numeric = [t.columns[0] for t in layout.terms if t.kind == "numeric"]
    readable = set(PATTERN_COLUMNS)
    by = spec.residual_sd_by
    if (
        spec.response != "index"
        or not set(numeric) <= {"age_c"}
        or not set(layout.levels) <= readable
        or (by is not None and by not in readable)
    ):
        return None
    ps = survey.pattern_sums
    n = ps["n"].to_numpy(dtype=np.float64)
    a, m, sd = survey.age_mean, survey.raw_mean, survey.raw_sd
    age, raw = ps["age"].to_numpy(), ps["index_raw"].to_numpy()
    s_x = age - n * a
    s_xx = ps["age_sq"].to_numpy() - 2.0 * a * age + n * a * a
    s_y = (raw - n * m) / sd
    s_yy = (ps["index_raw_sq"].to_numpy() - 2.0 * m * raw + n * m * m) / sd**2
    s_xy = (ps["age_x_index_raw"].to_numpy() - m * age - a * raw + n * a * m) / sd
    design = design_matrix(ps.assign(age_c=0.0), layout).tocsr()
    p = layout.n_coef
    j = layout.slices()["age_c"].start if numeric else None
    code = np.zeros(len(ps), dtype=np.int64)
    if by is not None:
        code = pd.Index(groups).get_indexer(ps[by].astype("string"))
    wtw, wty = [], np.zeros((len(groups), p))
    yty, n_g = np.zeros(len(groups)), np.zeros(len(groups))
    for g in range(len(groups)):
        rows = np.flatnonzero(code == g)
        a_g = design[rows]
        block = a_g.T @ sp.diags(n[rows]) @ a_g
        wty[g] = a_g.T @ s_y[rows]
        if j is not None:
            cross = a_g.T @ s_x[rows]
            cross[j] = s_xx[rows].sum()
            e = sp.csc_matrix((np.ones(1), ([j], [0])), shape=(p, 1))
            col = sp.csc_matrix(cross.reshape(-1, 1))
            block = block + col @ e.T + e @ col.T - e @ sp.csc_matrix([[cross[j]]]) @ e.T
            wty[g, j] = s_xy[rows].sum()
        wtw.append(sp.csc_matrix(block))
        yty[g] = s_yy[rows].sum()
        n_g[g] = n[rows].sum()
    return GroupedStats(tuple(wtw), wty, yty, n_g, groups)


@dataclass(frozen=True)
class PatternTotals:
    """What :func:`stats_from_patterns` reads: the float pattern sums and the constants."""

    pattern_sums: pd.DataFrame
    raw_mean: float
    raw_sd: float
    age_mean: float


def frame_prepared(
    frame: pd.DataFrame, levels, spec: ModelSpec, *, min_cell_n: int = MIN_CELL_N
) -> tuple | None:
    """(layout, statistics, composition store) of analysed rows held in memory, summed
    exactly as the streamed pass sums its parts, or None when the counted patterns do not
    give the model's statistics (then the caller sums the rows).

    ``frame``: the analysed rows of ``scale.build_index`` (``index_raw``, ``age``), whose
    constants equal the exact ones here bit for bit. So one file and its parts give the
    same statistics, the same weights and, for the same seed, the same draws.
    """

    pattern_sums, constants = finish_patterns(count_patterns(frame), levels)
    totals = PatternTotals(
        pattern_sums, constants["raw_mean"], constants["raw_sd"], constants["age_mean"]
    )
    patterns = _standardised(pattern_sums, totals.raw_mean, totals.raw_sd, totals.age_mean)
    layout = build_layout(patterns, spec)
    groups = residual_groups(patterns, spec.residual_sd_by)
    stats = stats_from_patterns(totals, layout, spec, groups)
    if stats is None:
        return None
    return layout, stats, Composition.build(patterns, layout, min_cell_n=min_cell_n, weight="n")


def design_of(survey: StreamedSurvey, spec: ModelSpec) -> tuple[DesignLayout, tuple[str, ...]]:
    """The model's layout and residual groups from the levels present (the counted patterns)."""
    layout = build_layout(survey.patterns, spec)
    return layout, residual_groups(survey.patterns, spec.residual_sd_by)


def stats_part(
    path: Path | str,
    cmap: ColumnMap,
    survey: StreamedSurvey,
    layout: DesignLayout,
    spec: ModelSpec,
    groups: tuple[str, ...],
    *,
    chunk_rows: int = CHUNK_ROWS,
    batch_rows: int = BATCH_ROWS,
) -> GroupedStats:
    """Pass 2 of one part, batch by batch: W'W, W'y, y'y and n per residual group."""
    total = None
    for kept in analysed_batches(path, cmap, survey, batch_rows):
        for start in range(0, max(len(kept), 1), chunk_rows):
            part = chunk_grouped_stats(
                kept.iloc[start : start + chunk_rows],
                layout,
                spec.response,
                spec.residual_sd_by,
                groups,
            )
            total = part if total is None else total + part
    return total


def _sum_stats(parts: list[GroupedStats]) -> GroupedStats:
    total = parts[0]
    for s in parts[1:]:
        total = total + s
    return total
