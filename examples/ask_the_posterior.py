#!/usr/bin/env python
"""Ask a fitted run two questions contrasts.csv does not hold, from its posterior draws.

    python examples/ask_the_posterior.py outputs/<run> [--out answers.csv]

1. Did the gender gap (girl minus boy) change between the first and the last wave?
   A difference in differences: (girl - boy in the last wave) - (girl - boy in the first).
2. Did the gap between the highest and the lowest school type (vwo minus vmbo_bk) change
   over the covid waves (2020_0 -> 2020_2)?
3. How did all students' index change over those waves, for a school like any other (the
   report's estimand) and in the schools the monitor surveyed (``schools="surveyed"``)?

Levels and waves are taken from the run, so it works on any monitor's levels: the named
ones where the run has them, otherwise the last level minus the first and the last two
waves. Every answer is computed draw by draw and summarised last, with the run's interval
(docs/api.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import xarray as xr

import omlbayes as ob
from omlbayes.errors import ProjectError


def pick_pair(levels: list[str], wanted: tuple[str, str]) -> tuple[str, str]:
    """``wanted`` (a, b) if the run has both levels, else (last level, first level)."""
    return wanted if set(wanted) <= set(levels) else (levels[-1], levels[0])


def pick_waves(waves: tuple[str, ...], wanted: tuple[str, str]) -> tuple[str, str]:
    """``wanted`` (from, to) if the run has both waves, else its last two waves."""
    return wanted if set(wanted) <= set(waves) else (waves[-2], waves[-1])


def change(
    means: xr.DataArray,
    waves: tuple[str, str],
    column: str | None = None,
    pair: tuple[str, str] | None = None,
) -> xr.DataArray:
    """Draws of the change from waves[0] to waves[1]: of the mean itself, or (``column``
    and ``pair`` = (a, b)) of the gap a - b: (a - b at waves[1]) - (a - b at waves[0])."""
    if column is not None and pair is not None:
        means = means.sel({column: pair[0]}) - means.sel({column: pair[1]})
    return means.sel(wave=waves[1]) - means.sel(wave=waves[0])


def answers(run: ob.Run) -> pd.DataFrame:
    """One row per question: what was asked, and the summary of its draws."""
    levels = run.record.levels
    gender = pick_pair(levels["gender"], ("girl", "boy"))
    types = pick_pair(levels["school_type"], ("vwo", "vmbo_bk"))
    first_last = (run.waves[0], run.waves[-1])
    covid = pick_waves(run.waves, ("2020_0", "2020_2"))
    asked = [
        ("gender", gender, first_last, run.adjusted_means("gender")),
        ("school_type", types, covid, run.adjusted_means("school_type")),
        (None, None, covid, run.adjusted_means()),
        (None, None, covid, run.adjusted_means(schools="surveyed")),
    ]
    rows = []
    for column, pair, waves, means in asked:
        summary = ob.summarise(change(means, waves, column, pair), options=run.options)
        what = f"{pair[0]} - {pair[1]}" if pair else "all students"
        rows.append(
            {
                "question": f"change of {what}, {waves[0]} -> {waves[1]}",
                "column": column or "overall",
                "group": pair[0] if pair else "",
                "reference_group": pair[1] if pair else "",
                "wave_from": waves[0],
                "wave_to": waves[1],
                "schools": means.attrs["schools"],
                "composition": means.attrs["composition"],
                **summary.to_dict(),
            }
        )
    table = pd.DataFrame(rows)
    table.attrs["interval"] = f"{run.options.interval}{run.options.percent}"
    return table


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run", type=Path, help="a run folder written by scripts/fit.py")
    p.add_argument("--out", type=Path, help="also write the answers as CSV")
    args = p.parse_args(argv)
    try:
        run = ob.open_run(args.run)
        table = answers(run)
    except ProjectError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{run}: {table.attrs['interval']} intervals, index in SD units")
    for row in table.itertuples():
        if pd.isna(row.mean):
            print(
                f"- {row.question} (schools={row.schools}): suppressed (a cell under the threshold)"
            )
            continue
        print(
            f"- {row.question} (schools={row.schools}, composition={row.composition}): "
            f"{row.mean:+.3f} [{row.lower:+.3f}, {row.upper:+.3f}], P(> 0) = {row.p_positive:.3f}"
        )
    if args.out:
        table.to_csv(args.out, index=False, float_format="%.12g")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
