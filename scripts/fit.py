#!/usr/bin/env python
"""Fit a model and write a run folder under outputs/.

With no arguments: the default model (models/full.toml) on the shipped synthetic OML data.
`--formula` switches to generic mode: any Bambi formula on any table.
`--replot RUN` redraws the tables and figures of a saved run without refitting.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omlbayes import constants as C
from omlbayes.errors import DiagnosticsFailed, ProjectError
from omlbayes.model.spec import KERNELS, SD_PARAMETERIZATIONS


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--data",
        type=Path,
        help="survey file (.csv .parquet .sav .dta), or a folder or glob of Parquet/CSV parts "
        "(read in a streamed pass); default: shipped data",
    )
    p.add_argument(
        "--engine",
        choices=("local", "dask"),
        default="local",
        help="data pass over a folder/glob of parts: in this process, or on Dask",
    )
    p.add_argument("--scheduler", help="Dask scheduler address (default: a LocalCluster)")
    p.add_argument(
        "--batch-rows",
        type=int,
        help="rows per batch when reading parts (default 250000): bounds the memory of the pass",
    )
    p.add_argument(
        "--columns", type=Path, help="column map (TOML) for a real file's names and codes"
    )
    p.add_argument(
        "--model", help=f"model spec: a name in models/ or a path (default {C.DEFAULT_MODEL})"
    )
    p.add_argument("--list-models", action="store_true", help="list the model specs and exit")
    p.add_argument("--formula", help="generic mode: a Bambi formula, e.g. 'y ~ x + (1|school)'")
    p.add_argument("--family", help="generic mode: response family (default gaussian)")
    p.add_argument(
        "--backend", choices=("collapsed", "bambi"), help="fitting path (default from spec)"
    )
    p.add_argument("--sampler", choices=("nutpie", "pymc", "numpyro"))
    p.add_argument("--draws", type=int)
    p.add_argument("--tune", type=int)
    p.add_argument("--chains", type=int)
    p.add_argument(
        "--kernel",
        choices=KERNELS,
        help="collapsed backend's linear algebra (default auto: the lower predicted cost)",
    )
    p.add_argument(
        "--sd-parameterization",
        choices=SD_PARAMETERIZATIONS,
        help="collapsed backend: group SDs on the log scale (default from spec, usually log), "
        "folded (tau = |w|), or auto: folded where a term of 100+ cells has its SD at zero",
    )
    p.add_argument(
        "--no-early-stop",
        action="store_true",
        help="take all --draws per chain (default: stop at the first checkpoint whose draws "
        "pass the diagnostics gate with a margin)",
    )
    p.add_argument("--seed", type=int, default=C.DEFAULT_SEED)
    p.add_argument("--out", type=Path, help="folder for run folders (default outputs/)")
    p.add_argument("--name", help="run folder name (default: timestamp_model)")
    p.add_argument("--lang", choices=("nl", "en"), help="report language (default nl)")
    p.add_argument(
        "--interval", choices=("eti", "hdi"), help=f"interval kind (default {C.CI_KIND})"
    )
    p.add_argument("--prob", type=float, help=f"interval probability (default {C.CI_PROB})")
    p.add_argument("--min-cell-n", type=int, help=f"disclosure threshold (default {C.MIN_CELL_N})")
    p.add_argument("--school-by-wave", action="store_true", help="add a school x wave term")
    p.add_argument("--allow-failed", action="store_true", help="exit 0 even if diagnostics fail")
    p.add_argument("--no-progress", action="store_true", help="no sampler progress bar")
    p.add_argument("--replot", type=Path, metavar="RUN", help="redo tables and figures of RUN")
    loud = p.add_mutually_exclusive_group()
    loud.add_argument("--quiet", action="store_true", help="only warnings and the summary")
    loud.add_argument("--verbose", action="store_true", help="also debugging detail")
    args = p.parse_args(argv)
    args.model_given = args.model is not None
    args.model = args.model or C.DEFAULT_MODEL
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        from omlbayes.pipeline import cli

        if args.list_models:
            return cli.list_models()
        return cli.run_fit(args)
    except DiagnosticsFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return C.EXIT_DIAGNOSTICS_FAILED
    except ProjectError as err:
        print(f"error: {err}", file=sys.stderr)
        return C.EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: no run folder was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
