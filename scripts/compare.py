#!/usr/bin/env python
"""Compare fitted runs: LOO table (arviz.compare) and the same contrasts side by side.

scripts/compare.py RUN_A RUN_B [RUN ...] --out DIR
writes DIR/comparison.csv, DIR/loo_comparison.csv, DIR/forest.png, DIR/comparison.html
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omlbayes.errors import run_script


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run folders (two or more)")
    p.add_argument("--out", type=Path, required=True, help="folder for the comparison files")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    from omlbayes.report.compare import write_comparison

    print(f"wrote {write_comparison(args.runs, args.out)}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    return run_script(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
