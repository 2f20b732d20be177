"""One source for every default of the project."""

from __future__ import annotations

CI_PROB = 0.95  # we report 95% intervals; ArviZ's own default is 0.89
CI_KIND = "eti"  # "eti" or "hdi"
MIN_ITEMS = 4  # an index needs at least this many of the six items answered
ITEM_MIN, ITEM_MAX = 1, 5
ITEM_COLUMNS = tuple(f"item_{k}" for k in range(1, 7))
MIN_CELL_N = 10  # disclosure control: cells with fewer students are suppressed
MIN_CELL_N_FLOOR = 5  # the threshold may be configured, never below this
AGE_RANGE = (10.0, 22.0)  # ages outside this range are impossible for grade-3 students

# Diagnostics gate (diagnose.py)
RHAT_MAX = 1.01
ESS_BULK_MIN = 400
# The early stop's ESS margin over the gate's minimum (criticism/diagnose.py)
EARLY_STOP_ESS_MARGIN = 1.25
# The posterior coordinate naming each draw's proposal in an importance-sampled run: its
# ESS counts proposals, not draws (backends/importance.py, criticism/mcmc_stats.py)
PROPOSAL_COORD = "proposal"
ESS_TAIL_MIN = 400
BFMI_MIN = 0.3
MAX_DIVERGENCES = 0

# Plain-language thresholds for probability of direction (report findings)
PD_VERY_LIKELY = 0.975
PD_LIKELY = 0.90

# The model a run fits when none is named (models/<name>.toml). `full` gives every output a
# run writes a term of its own (school x wave, three-way cells for the cross breakdowns, a
# residual SD per school type); on surveys with that structure the flagship's intervals are
# too narrow (docs/models.md "The default model, and the evidence"; validation.md section 1b).
DEFAULT_MODEL = "full"

DEFAULT_SEED = 20221
EXIT_USER_ERROR = 2
EXIT_DIAGNOSTICS_FAILED = 3

# Waves whose label starts with this are the covid-split 2020 waves (marked in figures).
COVID_WAVE_PREFIX = "2020"
