"""One disclosure policy for every output of a run: the report, the school pages, the tables.

A cell (a group x wave, a school x wave, a level of Table 1) with fewer than the run's
``min_cell_n`` students shows no estimate and no count, only the mark ``n < min_cell_n``;
every contrast touching such a cell is hidden too. The threshold may be raised for a
re-render, never lowered, never below ``MIN_CELL_N_FLOOR``. :func:`audit` checks a whole
run folder before it is published: no count under the threshold anywhere.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from omlbayes.constants import MIN_CELL_N, MIN_CELL_N_FLOOR
from omlbayes.errors import RunError, SpecError
from omlbayes.results.summarise import touches_cells


def is_small(n: object, min_cell_n: int) -> bool:
    """Whether a count must not be shown: missing (already blanked) or under the threshold."""
    return n is None or bool(pd.isna(n)) or int(n) < min_cell_n


def effective_min_cell_n(run_min_cell_n: int, requested: int | None) -> int:
    """The threshold of the run, raised (never lowered) by ``requested``; never below the floor."""
    if requested is not None and requested < MIN_CELL_N_FLOOR:
        raise SpecError(
            f"--min-cell-n must be at least {MIN_CELL_N_FLOOR} (disclosure control), "
            f"got {requested}"
        )
    return max(int(run_min_cell_n), requested or 0, MIN_CELL_N_FLOOR)


def suppress_counts(
    table: pd.DataFrame, *, min_cell_n: int, values: Sequence[str] = ()
) -> pd.DataFrame:
    """Blank ``n`` (and the ``values`` columns) of rows with fewer than ``min_cell_n``."""
    out = table.copy()
    small = pd.to_numeric(out["n"], errors="coerce").fillna(0) < min_cell_n
    out["n"] = out["n"].astype("Int64").mask(small)
    for col in values:
        out[col] = out[col].mask(small)
    return out


def resuppress(
    effects: pd.DataFrame, contrasts: pd.DataFrame, *, min_cell_n: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Suppress effect cells under a (stricter) threshold and every contrast touching one."""
    eff = effects.copy()
    small = eff["suppressed"].astype(bool) | eff["n"].isna() | (eff["n"].fillna(0) < min_cell_n)
    eff.loc[small, ["mean", "lower", "upper"]] = np.nan
    eff["n"] = eff["n"].astype("Int64").mask(small)
    eff["suppressed"] = small
    hidden_cells = {
        (r.breakdown, str(r.group), str(r.wave)) for r in eff[small].itertuples(index=False)
    }
    con = contrasts.copy()
    hidden = touches_cells(con, hidden_cells) | con["suppressed"].astype(bool).to_numpy()
    con.loc[hidden, ["mean", "lower", "upper", "p_direction"]] = np.nan
    con["suppressed"] = hidden
    return eff, con


# Audit of a run folder.

_COUNT_CLASS = re.compile(r"<(?:span|td)[^>]*class=['\"]n['\"][^>]*>\s*(\d+)\s*<")
COUNT_COLUMNS = ("n", "n_complete")


def disclosure_problems(
    run_dir: Path | str, *, student_ids: Iterable[str], min_cell_n: int = MIN_CELL_N
) -> list[str]:
    """Every place in a run folder's csv, html and json files that shows a student id or a
    cell count under ``min_cell_n``; empty when the folder is clean.

    Counts are the ``n``/``n_complete`` columns of the csv tables, ``"n"`` keys in json and
    the count cells (``class='n'``) of the html pages.
    """
    path = Path(run_dir)
    ids = sorted({str(s) for s in student_ids if str(s)}, key=len, reverse=True)
    id_pattern = (
        re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(map(re.escape, ids)) + r")(?![A-Za-z0-9_])")
        if ids
        else None
    )
    problems: list[str] = []
    for file in sorted(path.rglob("*")):
        if file.suffix not in (".csv", ".html", ".json") or not file.is_file():
            continue
        text = file.read_text(encoding="utf-8", errors="replace")
        rel = file.relative_to(path)
        if id_pattern is not None and (m := id_pattern.search(text)):
            problems.append(f"{rel}: student id {m.group(1)!r}")
        if file.suffix == ".csv":
            table = pd.read_csv(file)
            for col in COUNT_COLUMNS:
                if col in table.columns:
                    values = pd.to_numeric(table[col], errors="coerce").dropna()
                    small = values[values < min_cell_n]
                    if len(small):
                        problems.append(
                            f"{rel}: column {col} has count(s) {sorted(set(small))[:5]}"
                        )
        elif file.suffix == ".html":
            small = [int(v) for v in _COUNT_CLASS.findall(text) if int(v) < min_cell_n]
            if small:
                problems.append(f"{rel}: count cell(s) {sorted(set(small))[:5]}")
        else:
            small = _json_counts(json.loads(text), min_cell_n)
            if small:
                problems.append(f"{rel}: 'n' value(s) {small[:5]}")
    return problems


def _json_counts(obj: object, min_cell_n: int) -> list[int]:
    found: list[int] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "n" and isinstance(v, int | float) and v < min_cell_n:
                found.append(int(v))
            else:
                found += _json_counts(v, min_cell_n)
    elif isinstance(obj, list):
        for v in obj:
            found += _json_counts(v, min_cell_n)
    return found


def audit(run_dir: Path | str, *, min_cell_n: int, student_ids: Iterable[str] = ()) -> None:
    """Raise if a run folder shows a count under ``min_cell_n`` (or a student id) anywhere."""
    problems = disclosure_problems(run_dir, student_ids=student_ids, min_cell_n=min_cell_n)
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise RunError(
            f"disclosure audit failed, run not published: {'; '.join(problems[:3])}{more}"
        )
