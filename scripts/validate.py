#!/usr/bin/env python
"""Statistical validation -> outputs/validation/validation.md (tables and plots).

Runs recovery/coverage, SBC, REML agreement on mlmRev data, a three-level check and a
many-groups check (Chem97),
and the graded model's latent recovery and two-route cross-check
(see src/omlbayes/validation/studies.py). Parts can run separately (--only) and in parallel
processes; each writes its CSV under outputs/validation/, and --report (also run at the
end of a full run) assembles validation.md from whatever CSVs are there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omlbayes.validation import studies as validation

PARTS = ("recovery", "recovery_hard", "sbc", "sbc_folded", "reml", "three_level", "many_groups")
PARTS += ("estimands",)  # both estimands, every kind of contrast, the default as users run it
PARTS += ("agreement", "sbc_default")  # the default's sampler: a long reference; its SBC
PARTS += ("graded_recovery", "graded_crosscheck")  # the graded model's statistical tier


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--only", choices=PARTS, action="append", help="run only these parts")
    p.add_argument("--report", action="store_true", help="only assemble validation.md")
    p.add_argument("--out", type=Path, default=validation.OUT)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--sbc-sims", type=int, default=validation.SBC_SIMS)
    p.add_argument(
        "--hard-models",
        nargs="+",
        default=list(validation.HARD_MODELS),
        help="models of the harder recovery study, the default model first",
    )
    p.add_argument(
        "--crosscheck-size",
        type=int,
        nargs=2,
        metavar=("STUDENTS", "SCHOOLS"),
        help="graded cross-check survey size (default 1500 16; the plain model costs about "
        "n x 4 microseconds CPU per gradient)",
    )
    p.add_argument("--quick", action="store_true", help="one seed, small sizes (smoke run)")
    p.add_argument(
        "--reuse-reference",
        action="store_true",
        help="agreement: keep the reference runs in the work folder that a refit would "
        "repeat (same data, seed, settings and spec; their commit is in the fits table)",
    )
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from omlbayes.pipeline.cli import configure_logging

    configure_logging()
    if not args.report:
        parts = args.only or PARTS
        validation.run_parts(
            parts,
            out=args.out,
            seeds=tuple(args.seeds),
            sbc_sims=args.sbc_sims,
            quick=args.quick,
            hard_models=tuple(args.hard_models),
            crosscheck_size=tuple(args.crosscheck_size) if args.crosscheck_size else None,
            reuse_reference=args.reuse_reference,
        )
    verdict = validation.write_report(args.out)
    print(f"{args.out / 'validation.md'}: {'PASS' if verdict else 'not passed (see its Verdict)'}")
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
