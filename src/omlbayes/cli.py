"""Command-line glue: argument namespace -> workflow call -> terminal summary."""

from __future__ import annotations

import argparse
import sys

from omlbayes import workflow
from omlbayes.constants import MIN_CELL_N_FLOOR
from omlbayes.diagnose import verdict_line
from omlbayes.errors import DiagnosticsFailed, SpecError
from omlbayes.spec import load_spec


def _options(args: argparse.Namespace) -> workflow.RunOptions:
    if args.min_cell_n < MIN_CELL_N_FLOOR:
        raise SpecError(f"--min-cell-n must be at least {MIN_CELL_N_FLOOR} (disclosure control)")
    if not 0 < args.prob < 1:
        raise SpecError(f"--prob must be between 0 and 1, got {args.prob}")
    return workflow.RunOptions(
        seed=args.seed,
        out_dir=args.out or workflow.DEFAULT_OUT,
        lang=args.lang,
        interval=args.interval,
        prob=args.prob,
        min_cell_n=args.min_cell_n,
        progressbar=not args.no_progress,
        name=args.name,
    )


def run_fit(args: argparse.Namespace) -> int:
    options = _options(args)
    if args.replot:
        workflow.summarise_run(args.replot, options=options)
        print(f"redrawn: {args.replot}")
        return 0
    spec = load_spec(args.model)
    spec = workflow.with_overrides(
        spec,
        backend=args.backend,
        sampler=args.sampler,
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        kernel=getattr(args, "kernel", None),
    )
    if args.formula:
        from omlbayes import generic

        result = generic.fit_formula_run(
            args.formula,
            data=args.data,
            family=args.family or "gaussian",
            spec=spec,
            options=options,
        )
    else:
        if args.family and args.family != spec.family:
            raise SpecError("--family applies to --formula runs; the survey models set their own")
        spec = workflow.with_school_by_wave(spec, args.school_by_wave)
        result = workflow.fit_survey_run(
            spec, data=args.data or workflow.DEFAULT_DATA, column_map=args.columns, options=options
        )
    print_summary(result)
    if not result.diagnostics["passed"]:
        message = f"{verdict_line(result.diagnostics)}; run folder: {result.path}"
        if not args.allow_failed:
            raise DiagnosticsFailed(message + " (use --allow-failed to exit 0)")
        print(f"WARNING: {message}", file=sys.stderr)
    return 0


def print_summary(result: workflow.RunResult) -> None:
    print()
    print("=" * 72)
    print(verdict_line(result.diagnostics))
    if len(result.headline):
        print("Main contrasts (overall, SD units, 95% interval, probability of direction):")
        for row in result.headline.itertuples():
            print(
                f"  {row.wave} vs {row.reference}: {row.mean:+.3f} "
                f"[{row.lower:+.3f}, {row.upper:+.3f}]  P(direction) = {row.p_direction:.3f}"
            )
    print(f"Run folder: {result.path}")
    print("=" * 72)
