#!/usr/bin/env python
"""Write a survey subset for a sensitivity analysis (canonical CSV), then fit and compare it.

scripts/subset.py --out SUBSET.csv [--data SURVEY] [--exclude COL=LEVEL] [--schools-in-all W1,..]

  # "unknown" parental education excluded (the default model keeps it as its own category)
  python scripts/subset.py --out outputs/no_unknown.csv --exclude parent_edu=unknown
  # the 2020 sub-waves restricted to the schools present in all three
  python scripts/subset.py --out outputs/2020_all3.csv --schools-in-all 2020_0,2020_1,2020_2
  python scripts/fit.py --data outputs/2020_all3.csv --name sens_2020_all3
  python scripts/compare.py outputs/<main run> outputs/sens_2020_all3 --out outputs/cmp_2020
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omlbayes.errors import InputError, run_script


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, help="survey file (default: the shipped data)")
    p.add_argument("--columns", type=Path, help="column map of the survey file")
    p.add_argument("--out", type=Path, required=True, help="subset to write (.csv)")
    p.add_argument("--exclude", action="append", default=[], metavar="COLUMN=LEVEL")
    p.add_argument("--schools-in-all", metavar="W1,W2,...", help="waves every kept school has")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    from omlbayes.data import subsets
    from omlbayes.data.ingest import read_survey
    from omlbayes.pipeline import survey_run

    if not args.exclude and not args.schools_in_all:
        raise InputError("give --exclude COLUMN=LEVEL and/or --schools-in-all W1,W2,...")
    frame = read_survey(args.data or survey_run.DEFAULT_DATA, column_map=args.columns).frame
    for rule in args.exclude:
        column, sep, level = rule.partition("=")
        if not sep:
            raise InputError(f"--exclude {rule!r}: write it as COLUMN=LEVEL")
        frame = subsets.exclude(frame, column, level)
    if args.schools_in_all:
        frame = subsets.schools_in_all(frame, args.schools_in_all.split(","))
    path = subsets.write_canonical(frame, args.out)
    print(f"wrote {path} ({len(frame)} students)")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    return run_script(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
