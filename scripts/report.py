#!/usr/bin/env python
"""Write the HTML report of a run folder (and, with --schools, the per-school pages).

scripts/report.py outputs/<run> [--lang nl|en] [--schools] [--min-cell-n N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omlbayes import constants as C
from omlbayes.errors import run_script


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run", type=Path, metavar="RUN", help="run folder (outputs/<run>)")
    p.add_argument("--lang", choices=("nl", "en"), help="language (default: the run's)")
    p.add_argument("--schools", action="store_true", help="also write schools/ feedback pages")
    p.add_argument(
        "--min-cell-n",
        type=int,
        help=f"disclosure threshold (default: the run's; at least {C.MIN_CELL_N_FLOOR})",
    )
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    from omlbayes.report.page import write_report

    path = write_report(args.run, lang=args.lang, min_cell_n=args.min_cell_n)
    print(f"wrote {path}")
    if args.schools:
        from omlbayes.report.schools import write_school_pages

        pages = write_school_pages(args.run, lang=args.lang, min_cell_n=args.min_cell_n)
        print(f"wrote {len(pages)} pages in {args.run / 'schools'}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    return run_script(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
