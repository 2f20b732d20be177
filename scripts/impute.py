#!/usr/bin/env python
"""Multiple imputation of "unknown" parental education, fitted and pooled (a sensitivity
analysis next to "own category" (the default) and "excluded" (scripts/subset.py)).

scripts/impute.py [--data SURVEY] [--imputations M] [--model NAME] [--out DIR] [--name NAME]

A multinomial logit of parent_edu given school, school type, region and wave, fitted on the
known rows, gives M completed data sets (each with its own draw of the logit's coefficients);
each is fitted with the model (collapsed backend) and the M posteriors' draws are pooled.
Writes a folder with contrasts.csv and effects.csv (the run's format), imputations.csv
(diagnostics and imputed shares per imputation) and run.json:

  python scripts/fit.py --name main
  python scripts/subset.py --out outputs/no_unknown.csv --exclude parent_edu=unknown
  python scripts/fit.py --data outputs/no_unknown.csv --name excluded
  python scripts/impute.py --imputations 5 --name imputed
  python scripts/compare.py outputs/main outputs/excluded outputs/imputed --out outputs/cmp_unknown
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omlbayes import constants as C
from omlbayes.errors import InputError, run_script


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, help="survey file (default: the shipped data)")
    p.add_argument("--columns", type=Path, help="column map of the survey file")
    p.add_argument("--imputations", type=int, default=5, help="number of imputations M (>= 2)")
    p.add_argument(
        "--model", default=C.DEFAULT_MODEL, help=f"model spec (default {C.DEFAULT_MODEL})"
    )
    p.add_argument("--draws", type=int, help="draws per chain of each fit")
    p.add_argument("--tune", type=int)
    p.add_argument("--chains", type=int)
    p.add_argument("--seed", type=int, default=C.DEFAULT_SEED)
    p.add_argument("--out", type=Path, help="folder for the result folder (default outputs/)")
    p.add_argument("--name", help="result folder name (default: timestamp_model_mi_parent_edu)")
    p.add_argument("--interval", choices=("eti", "hdi"), default=C.CI_KIND)
    p.add_argument("--prob", type=float, default=C.CI_PROB, help="interval probability")
    p.add_argument("--min-cell-n", type=int, default=C.MIN_CELL_N, help="disclosure threshold")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    from omlbayes.model.spec import load_spec
    from omlbayes.pipeline import imputation, survey_run
    from omlbayes.pipeline.cli import configure_logging

    if args.imputations < 2:  # before any work: one line, nothing written
        raise InputError(f"--imputations {args.imputations}: multiple imputation needs at least 2")
    configure_logging()
    from omlbayes.results.options import OutputOptions

    options = survey_run.RunOptions(  # one line if the interval, prob or threshold is invalid
        output=OutputOptions(interval=args.interval, prob=args.prob, min_cell_n=args.min_cell_n),
        seed=args.seed,
        out_dir=args.out or survey_run.DEFAULT_OUT,
        progressbar=False,
        name=args.name,
    )
    spec = survey_run.with_overrides(
        load_spec(args.model), draws=args.draws, tune=args.tune, chains=args.chains
    )
    path = imputation.multiple_imputation_run(
        spec,
        data=args.data or survey_run.DEFAULT_DATA,
        column_map=args.columns,
        options=options,
        m=args.imputations,
    )
    print(f"wrote {path}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    return run_script(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
