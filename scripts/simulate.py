"""Write a synthetic OML survey and its truth file: ``python scripts/simulate.py``.

The harder simulator (each option off by default; the truth file reflects them, and
``<stem>_truth_structure.json`` lists the SDs and the drawn three-way cells):
  --school-wave-sd 0.1                       school x wave variation (eta units)
  --residual-sd-by-type 0.9 1.1 1.0 0.8      residual SD per school type (vmbo_bk vmbo_gt havo vwo)
  --three-way-sd 0.07                        wave x gender x type and wave x parent_edu x type cells
  --school-wave-rho 0.6                      correlated school drift: AR(1) over the waves
  --student-df 4                             Student-t student residuals (heavier tails)
  --random-truth                             all of it, with the truth drawn from the seed
                                             (simulate.random_truth: the recovery study's truths)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from omlbayes.constants import DEFAULT_SEED, EXIT_USER_ERROR
from omlbayes.data import schema
from omlbayes.errors import ProjectError, SpecError
from omlbayes.simulate.survey import (
    SimulationParams,
    random_truth,
    simulate_survey,
    write_simulation,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n-students", type=int, default=40_000)
    parser.add_argument("--n-schools", type=int, default=80)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--out",
        default="data/oml_synthetic.csv",
        help="survey CSV; the truth goes to <stem>_truth.csv",
    )
    parser.add_argument("--school-wave-sd", type=float, default=0.0)
    parser.add_argument(
        "--residual-sd-by-type", type=float, nargs=len(schema.SCHOOL_TYPES), metavar="SD"
    )
    parser.add_argument("--three-way-sd", type=float, default=0.0)
    parser.add_argument("--school-wave-rho", type=float, default=0.0)
    parser.add_argument("--student-df", type=float, default=0.0)
    parser.add_argument("--random-truth", action="store_true")
    args = parser.parse_args(argv)
    try:
        harder = {
            "school_wave_sd": args.school_wave_sd,
            "three_way_sd": args.three_way_sd,
            "student_sd_by_school_type": dict(
                zip(schema.SCHOOL_TYPES, args.residual_sd_by_type or (), strict=False)
            ),
        }
        stress = {"school_wave_rho": args.school_wave_rho, "student_df": args.student_df}
        if args.random_truth:
            if args.school_wave_sd or args.three_way_sd or args.residual_sd_by_type:
                raise SpecError("--random-truth draws every SD itself; give no SD option with it")
            params = dataclasses.replace(random_truth(args.seed), **stress)
        else:
            params = SimulationParams(**harder, **stress)
        sim = simulate_survey(
            n_students=args.n_students, n_schools=args.n_schools, seed=args.seed, params=params
        )
        survey, truth = write_simulation(sim, args.out)
    except ProjectError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(f"wrote {survey} ({len(sim.frame)} students) and {truth}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
