"""Command-line glue: argument namespace -> workflow call -> terminal summary."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

from omlbayes.criticism.diagnose import verdict_line
from omlbayes.errors import DiagnosticsFailed, SpecError
from omlbayes.model.spec import load_spec
from omlbayes.pipeline import survey_run
from omlbayes.pipeline.outputs import replot
from omlbayes.resources import source_root
from omlbayes.results import disclosure, runs
from omlbayes.results.options import OutputOptions

OUTPUT_FLAGS = ("lang", "interval", "prob", "min_cell_n")


def configure_logging(*, quiet: bool = False, verbose: bool = False) -> None:
    """Progress lines on stderr: INFO by default, WARNING with --quiet, DEBUG with --verbose."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logger = logging.getLogger("omlbayes")
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[omlbayes] %(message)s"))
        logger.addHandler(handler)
    logger.propagate = False


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    """The flags the command line gave (the rest keep the options' own defaults)."""
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


def _options(args: argparse.Namespace) -> survey_run.RunOptions:
    # validates interval, prob, threshold and language (one line each)
    output = OutputOptions(**_given(args, OUTPUT_FLAGS))
    return survey_run.RunOptions(
        output=output,
        progressbar=not args.no_progress and not args.quiet,
        **_given(args, ("seed", "name", "engine", "scheduler", "batch_rows")),
        **({"out_dir": args.out} if args.out else {}),
    )


def _replot_options(args: argparse.Namespace) -> OutputOptions:
    """The run's options, with the output flags given on this command line."""
    run = runs.read_record(args.replot).output_options
    given = _given(args, OUTPUT_FLAGS)
    # the disclosure threshold may be raised on a replot, never lowered
    given["min_cell_n"] = disclosure.effective_min_cell_n(run.min_cell_n, args.min_cell_n)
    return replace(run, **given)


def run_fit(args: argparse.Namespace) -> int:
    configure_logging(quiet=args.quiet, verbose=args.verbose)
    if args.replot:
        replot(args.replot, options=_replot_options(args))
        print(f"redrawn: {args.replot}")
        return 0
    if getattr(args, "scheduler", None) and getattr(args, "engine", "local") != "dask":
        raise SpecError("--scheduler names a Dask scheduler: use it with --engine dask")
    if getattr(args, "batch_rows", None) is not None and args.batch_rows < 1:
        raise SpecError(f"--batch-rows must be at least 1 row, got {args.batch_rows}")
    options = _options(args)
    spec = load_spec(args.model)
    spec = survey_run.with_overrides(
        spec,
        backend=args.backend,
        sampler=args.sampler,
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        kernel=getattr(args, "kernel", None),
        sd_parameterization=getattr(args, "sd_parameterization", None),
        early_stop=False if getattr(args, "no_early_stop", False) else None,
        importance=getattr(args, "importance", None),
    )
    if args.formula:
        from omlbayes.pipeline import formula_run

        result = formula_run.fit_formula_run(
            args.formula,
            data=args.data,
            family=args.family or "gaussian",
            spec=spec,
            options=options,
            spec_priors=args.model_given,
        )
    else:
        if args.data is None and not survey_run.DEFAULT_DATA.is_file() and source_root() is None:
            raise SpecError(
                "no --data given, and the shipped synthetic survey is in the source repository, "
                "not in the installed package: pass --data FILE (or run from a checkout)"
            )
        if args.family and args.family != spec.family:
            raise SpecError("--family applies to --formula runs; the survey models set their own")
        spec = survey_run.with_school_by_wave(spec, args.school_by_wave)
        result = survey_run.fit_survey_run(
            spec,
            data=args.data or survey_run.DEFAULT_DATA,
            column_map=args.columns,
            options=options,
        )
    print_summary(result)
    if not result.diagnostics["passed"]:
        message = f"{verdict_line(result.diagnostics)}; run folder: {result.path}"
        if not args.allow_failed:
            raise DiagnosticsFailed(message + " (use --allow-failed to exit 0)")
        print(f"WARNING: {message}", file=sys.stderr)
    return 0


def list_models() -> int:
    """Print every spec in models/: its name and one-line description (the default marked)."""
    from omlbayes.constants import DEFAULT_MODEL
    from omlbayes.resources import models_dir

    specs = [load_spec(path) for path in sorted(models_dir().glob("*.toml"))]
    width = max(len(s.name) for s in specs)
    for spec in specs:
        mark = "*" if Path(spec.source).stem == DEFAULT_MODEL else " "
        print(f"{mark} {spec.name:<{width}}  {spec.description}")
    print("* the default (fitted when --model is not given)")
    return 0


def print_summary(result: survey_run.RunResult) -> None:
    print()
    print("=" * 72)
    print(verdict_line(result.diagnostics))
    if len(result.headline):
        units = "SD units of the latent trait" if result.scale == "latent" else "SD units"
        print(
            f"Main contrasts (overall, {units}, {result.output.interval_short('en')}, "
            "probability of direction):"
        )
        for row in result.headline.itertuples():
            print(
                f"  {row.wave} vs {row.reference}: {row.mean:+.3f} "
                f"[{row.lower:+.3f}, {row.upper:+.3f}]  P(direction) = {row.p_direction:.3f}"
            )
    print(f"Run folder: {result.path}")
    print("=" * 72)
