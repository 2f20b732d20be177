"""Write a synthetic OML survey and its truth file: ``python scripts/simulate.py``."""

from __future__ import annotations

import argparse
import sys

from omlbayes.constants import DEFAULT_SEED, EXIT_USER_ERROR
from omlbayes.errors import ProjectError
from omlbayes.simulate import simulate_survey, write_simulation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-students", type=int, default=40_000)
    parser.add_argument("--n-schools", type=int, default=80)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--out",
        default="data/oml_synthetic.csv",
        help="survey CSV; the truth goes to <stem>_truth.csv",
    )
    args = parser.parse_args(argv)
    try:
        sim = simulate_survey(n_students=args.n_students, n_schools=args.n_schools, seed=args.seed)
        survey, truth = write_simulation(sim, args.out)
    except ProjectError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(f"wrote {survey} ({len(sim.frame)} students) and {truth}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
