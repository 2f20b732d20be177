"""The command lines: ``omlbayes fit|report|compare`` and the thin ``scripts/*.py``.

Each command is a parser and a ``main(argv, prog=...)`` returning the exit code; the
``omlbayes`` console command (``[project.scripts]``) dispatches to them by name and the
scripts call the same functions, so both take the same options and give the same codes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from omlbayes import __version__
from omlbayes import constants as C
from omlbayes.errors import DiagnosticsFailed, ProjectError, run_script
from omlbayes.model.spec import KERNELS, SD_PARAMETERIZATIONS

FIT_DOC = """Fit a model and write a run folder under outputs/.

With no arguments: the default model (models/full.toml) on the shipped synthetic OML data.
`--formula` switches to generic mode: any Bambi formula on any table.
`--replot RUN` redraws the tables and figures of a saved run without refitting.
"""
REPORT_DOC = """Write the HTML report of a run folder (and, with --schools, the per-school pages).

omlbayes report outputs/<run> [--lang nl|en] [--schools] [--min-cell-n N]
"""
COMPARE_DOC = """Compare fitted runs: LOO table (arviz.compare) and the same contrasts side by side.

omlbayes compare RUN_A RUN_B [RUN ...] --out DIR
writes DIR/comparison.csv, DIR/loo_comparison.csv, DIR/forest.png, DIR/comparison.html
"""


def fit_args(argv: list[str], *, prog: str | None = None) -> argparse.Namespace:
    """The options of ``fit`` (``scripts/fit.py``, ``omlbayes fit``)."""
    p = argparse.ArgumentParser(
        prog=prog, description=FIT_DOC, formatter_class=argparse.RawTextHelpFormatter
    )
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
        "--importance",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="collapsed backend: importance-sample the variance parameters from a split-t "
        "approximation (Pareto k and ESS gate), NUTS where the gate fails (default from spec)",
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


def fit_main(argv: list[str], *, prog: str | None = None) -> int:
    """``fit``: a run folder (or ``--replot``, ``--list-models``); exit 0, 2 or 3."""
    args = fit_args(argv, prog=prog)
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


def report_args(argv: list[str], *, prog: str | None = None) -> argparse.Namespace:
    """The options of ``report`` (``scripts/report.py``, ``omlbayes report``)."""
    p = argparse.ArgumentParser(
        prog=prog, description=REPORT_DOC, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("run", type=Path, metavar="RUN", help="run folder (outputs/<run>)")
    p.add_argument("--lang", choices=("nl", "en"), help="language (default: the run's)")
    p.add_argument("--schools", action="store_true", help="also write schools/ feedback pages")
    p.add_argument(
        "--min-cell-n",
        type=int,
        help=f"disclosure threshold (default: the run's; at least {C.MIN_CELL_N_FLOOR})",
    )
    return p.parse_args(argv)


def _report(args: argparse.Namespace) -> None:
    from omlbayes.report.page import write_report

    path = write_report(args.run, lang=args.lang, min_cell_n=args.min_cell_n)
    print(f"wrote {path}")
    if args.schools:
        from omlbayes.report.schools import write_school_pages

        pages = write_school_pages(args.run, lang=args.lang, min_cell_n=args.min_cell_n)
        print(f"wrote {len(pages)} pages in {args.run / 'schools'}")


def report_main(argv: list[str], *, prog: str | None = None) -> int:
    """``report``: the HTML report (and school pages) of a run folder; exit 0 or 2."""
    args = report_args(argv, prog=prog)
    return run_script(lambda: _report(args))


def compare_args(argv: list[str], *, prog: str | None = None) -> argparse.Namespace:
    """The options of ``compare`` (``scripts/compare.py``, ``omlbayes compare``)."""
    p = argparse.ArgumentParser(
        prog=prog, description=COMPARE_DOC, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run folders (two or more)")
    p.add_argument("--out", type=Path, required=True, help="folder for the comparison files")
    return p.parse_args(argv)


def _compare(args: argparse.Namespace) -> None:
    from omlbayes.report.compare import write_comparison

    print(f"wrote {write_comparison(args.runs, args.out)}")


def compare_main(argv: list[str], *, prog: str | None = None) -> int:
    """``compare``: runs side by side (LOO and the same contrasts); exit 0 or 2."""
    args = compare_args(argv, prog=prog)
    return run_script(lambda: _compare(args))


COMMANDS: dict[str, tuple[Callable[..., int], str]] = {
    "fit": (fit_main, "fit a model and write a run folder (or --replot one)"),
    "report": (report_main, "write the HTML report (and school pages) of a run folder"),
    "compare": (compare_main, "compare fitted runs: LOO and the same contrasts"),
}


def main(argv: list[str] | None = None) -> int:
    """``omlbayes COMMAND ...``: dispatch to a command; ``--help`` after it for its options."""
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(
        prog="omlbayes",
        description="Hierarchical Bayesian re-analysis of a school monitor's survey.",
        epilog="\n".join(f"  {name:<8} {text}" for name, (_, text) in COMMANDS.items()),
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("command", choices=tuple(COMMANDS), help="what to do (see below)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the command's options")
    p.add_argument("--version", action="version", version=f"omlbayes {__version__}")
    if argv and argv[0] in COMMANDS:  # the command parses its own options, --help included
        command, _ = COMMANDS[argv[0]]
        return command(argv[1:], prog=f"omlbayes {argv[0]}")
    p.parse_args(argv)  # --help, --version, or an error naming the commands (exit 2)
    return C.EXIT_USER_ERROR
