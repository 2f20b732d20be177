"""A synthetic OML survey, calibrated to the factsheet, with its known truth.

The generator (``simulate_survey``) writes students nested in schools nested in
regions, over the seven waves, in the canonical schema. Each student has a latent
trait ``theta = eta + u_school + e`` where ``eta`` is the linear predictor from the
covariates (wave, gender, school type, parental education, region, age and their
interactions, every number in ``SimulationParams``), ``u_school ~ N(0, school_sd^2)``
and ``e ~ N(0, student_sd^2)``. Item ``j`` is the ordinal cut of
``loading_j * theta + eps_j`` with item-specific cutpoints; a little MCAR missingness
is added last.

``true_effects`` gives the estimand the models target, computed analytically: the
expected standardized index with the covariates standardized to the pooled sample
(g-computation) for a new school, minus the pooled mean.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import ndtr

from omlbayes.constants import (
    DEFAULT_SEED,
    ITEM_COLUMNS,
    ITEM_MAX,
    ITEM_MIN,
    MIN_CELL_N,
    MIN_ITEMS,
)
from omlbayes.data import schema
from omlbayes.data.scale import build_index
from omlbayes.errors import SpecError

# The covariates of eta, in the axis order of the eta table.
COVARIATES = ("wave", "gender", "school_type", "parent_edu", "region")
_LEVELS: dict[str, tuple[str, ...]] = {
    "wave": schema.WAVES,
    "gender": schema.GENDERS,
    "school_type": schema.SCHOOL_TYPES,
    "parent_edu": schema.PARENT_EDU,
    "region": schema.REGIONS,
}
# Time index of each wave, for the composition drift (2020 waves share one year).
_WAVE_TIME = {"2014": 0, "2016": 1, "2018": 2, "2020_0": 3, "2020_1": 3, "2020_2": 3, "2022": 4}
WAVES_2020 = ("2020_0", "2020_1", "2020_2")


def _ro(table: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only (nested) mapping, so a frozen params object stays frozen."""
    return MappingProxyType({k: _ro(v) if isinstance(v, Mapping) else v for k, v in table.items()})


def _by_wave(*values: float) -> dict[str, float]:
    """Seven numbers in ``schema.WAVES`` order -> {wave: number}."""
    return dict(zip(schema.WAVES, values, strict=True))


def _table(table: Mapping[str, Any]) -> Any:
    return field(default_factory=lambda: _ro(table))


@dataclass(frozen=True)
class SimulationParams:
    """Every number of the generator; the defaults are calibrated to the OML factsheet.

    Effects are on eta, the latent scale (student SD 1); one eta unit is about 0.9 SD
    of the standardized index. Wave tables are deviations from ``wave_effect`` per
    level, roughly centred over Table 1 shares, so a level's wave profile is
    ``wave_effect + wave_by_<column>[level]`` (2018 is the reference, 0). The
    comments name the finding (factsheet README, "The findings") each table encodes.
    """

    # ---- composition (factsheet Table 1) -------------------------------------------
    # relative wave sizes: the three 2020 groups are each a third of a normal wave
    wave_weight: Mapping[str, float] = _table(_by_wave(1, 1, 1, 1 / 3, 1 / 3, 1 / 3, 1))
    gender_share: Mapping[str, float] = _table({"boy": 0.4956, "girl": 0.5044})
    school_type_share: Mapping[str, float] = _table(
        {"vmbo_bk": 0.2427, "vmbo_gt": 0.2733, "havo": 0.2537, "vwo": 0.2303}
    )
    parent_edu_share: Mapping[str, float] = _table(
        {"max_mbo": 0.3416, "hbo": 0.2583, "wo": 0.1404, "unknown": 0.2597}
    )
    region_share: Mapping[str, float] = _table(
        {
            "noord_limburg": 0.1991,
            "midden_limburg": 0.2363,
            "sittard_geleen": 0.1543,
            "maastricht_heuvelland": 0.1871,
            "parkstad_limburg": 0.2232,
        }
    )
    # share of girls per school type before re-centring to gender_share (more girls in havo/vwo)
    girl_share_by_school_type: Mapping[str, float] = _table(
        {"vmbo_bk": 0.45, "vmbo_gt": 0.50, "havo": 0.53, "vwo": 0.54}
    )
    # association of parental education with school type (a seed; raked to the shares)
    parent_edu_by_school_type_seed: Mapping[str, Mapping[str, float]] = _table(
        {
            "vmbo_bk": {"max_mbo": 0.50, "hbo": 0.12, "wo": 0.04, "unknown": 0.34},
            "vmbo_gt": {"max_mbo": 0.40, "hbo": 0.22, "wo": 0.08, "unknown": 0.30},
            "havo": {"max_mbo": 0.28, "hbo": 0.32, "wo": 0.15, "unknown": 0.25},
            "vwo": {"max_mbo": 0.15, "hbo": 0.38, "wo": 0.32, "unknown": 0.15},
        }
    )
    # composition drift per wave-year step (2014 -> 2022 is 4 steps), centred so the
    # pooled shares stay those of Table 1: vwo grows, unknown parental education grows
    vwo_share_drift: float = 0.004
    unknown_parent_edu_drift: float = 0.012
    # school profiles (types offered) of Limburg schools and their frequencies; the first
    # school of each region is a broad "scholengemeenschap" so every type exists there
    school_profiles: Mapping[str, tuple[str, ...]] = _table(
        {
            "scholengemeenschap": ("vmbo_bk", "vmbo_gt", "havo", "vwo"),
            "vmbo": ("vmbo_bk", "vmbo_gt"),
            "havo_vwo": ("havo", "vwo"),
            "gt_havo_vwo": ("vmbo_gt", "havo", "vwo"),
            "gymnasium": ("vwo",),
        }
    )
    school_profile_prob: Mapping[str, float] = _table(
        {
            "scholengemeenschap": 0.35,
            "vmbo": 0.25,
            "havo_vwo": 0.2,
            "gt_havo_vwo": 0.15,
            "gymnasium": 0.05,
        }
    )
    participation_prob: float = 0.8  # per normal wave
    participation_prob_2020: float = 0.75  # a participating school falls in one 2020 group
    school_size_sd: float = 0.5  # log-normal spread of school sizes
    # grade-3 students: vmbo slightly older
    age_mean_by_school_type: Mapping[str, float] = _table(
        {"vmbo_bk": 15.10, "vmbo_gt": 14.95, "havo": 14.85, "vwo": 14.75}
    )
    age_sd: float = 0.45
    age_bounds: tuple[float, float] = (13.5, 17.5)

    # ---- latent trait: eta main effects ------------------------------------------------
    intercept: float = -0.03  # centres the mean of all item answers at 2.99
    # findings 1-3: 2014 -> 2018 slight decline; 2020_1 > 2020_2; 2022 back at 2018
    wave_effect: Mapping[str, float] = _table(
        _by_wave(0.085, 0.060, 0.0, 0.045, 0.050, -0.075, 0.010)
    )
    gender_effect: Mapping[str, float] = _table({"boy": 0.0, "girl": -0.15})  # finding 6
    school_type_effect: Mapping[str, float] = _table(  # finding 4: vwo slightly better
        {"vmbo_bk": 0.01, "vmbo_gt": -0.05, "havo": -0.02, "vwo": 0.21}
    )
    parent_edu_effect: Mapping[str, float] = _table(
        {"max_mbo": 0.0, "hbo": 0.03, "wo": 0.04, "unknown": -0.06}
    )
    region_effect: Mapping[str, float] = _table(
        {
            "noord_limburg": 0.0,
            "midden_limburg": 0.02,
            "sittard_geleen": 0.0,
            "maastricht_heuvelland": -0.02,
            "parkstad_limburg": 0.01,
        }
    )
    age_slope: float = -0.05  # per year; older students slightly lower
    age_center: float = 15.0

    # ---- wave x group deviations (added to wave_effect) -------------------------------
    wave_by_school_type: Mapping[str, Mapping[str, float]] = _table(
        {
            # finding 5: flat, except a dip after the summer of 2020 (profile -0.25 there)
            "vmbo_bk": _by_wave(-0.065, -0.050, 0.0, -0.025, -0.010, -0.175, -0.010),
            # finding 5: no large changes
            "vmbo_gt": _by_wave(-0.035, -0.030, 0.0, -0.035, 0.010, 0.055, 0.0),
            "havo": _by_wave(-0.025, -0.030, 0.0, -0.035, 0.010, 0.055, 0.0),
            # finding 4: decline 2016 -> 2018, stable after, outlier up at 2020_0
            "vwo": _by_wave(0.135, 0.140, 0.0, 0.105, -0.030, 0.075, 0.010),
        }
    )
    wave_by_gender: Mapping[str, Mapping[str, float]] = _table(
        {
            # finding 7: boys rise slightly at 2020_0; both fall at 2020_2, girls more;
            # girls 2020_1 > 2020_0 and girls 2022 > 2020
            "boy": _by_wave(-0.005, 0.0, 0.0, 0.045, -0.020, 0.065, -0.030),
            "girl": _by_wave(0.005, 0.0, 0.0, -0.045, 0.020, -0.065, 0.030),
        }
    )
    wave_by_parent_edu: Mapping[str, Mapping[str, float]] = _table(
        {
            # finding 8: the 2014-2018 decline mainly among hbo/wo parents; all rise at
            # 2020_1 and fall at 2020_2; in 2022 all rise, most for max_mbo
            "max_mbo": _by_wave(-0.055, -0.040, 0.0, -0.005, 0.010, -0.015, 0.050),
            "hbo": _by_wave(0.065, 0.050, 0.0, 0.005, 0.010, 0.015, -0.020),
            "wo": _by_wave(0.085, 0.060, 0.0, 0.005, 0.010, 0.025, -0.020),
            "unknown": _by_wave(-0.035, -0.030, 0.0, -0.005, 0.0, -0.005, -0.030),
        }
    )
    wave_by_region: Mapping[str, Mapping[str, float]] = _table(
        {
            # finding 10: 2014-2018 decline only in sittard and maastricht; no 2020_1 vs
            # 2020_2 difference in noord and parkstad; 2022 up in noord, midden, parkstad
            # and slightly down in sittard and maastricht (vs 2020_2 and vs 2018)
            "noord_limburg": _by_wave(-0.085, -0.060, 0.0, -0.015, -0.070, 0.045, 0.050),
            "midden_limburg": _by_wave(-0.085, -0.050, 0.0, 0.005, 0.050, -0.095, 0.040),
            "sittard_geleen": _by_wave(0.165, 0.110, 0.0, 0.005, 0.050, 0.015, -0.090),
            "maastricht_heuvelland": _by_wave(0.165, 0.110, 0.0, 0.005, 0.050, 0.015, -0.090),
            "parkstad_limburg": _by_wave(-0.075, -0.050, 0.0, -0.005, -0.070, 0.045, 0.040),
        }
    )

    # ---- group x group effects (cells not listed are 0) -------------------------------
    # finding 6: boys better in every type, the largest gap in vwo
    gender_by_school_type: Mapping[str, Mapping[str, float]] = _table(
        {"girl": {"vmbo_bk": 0.06, "vwo": -0.10}}
    )
    # finding 9: in vmbo_bk the wo-parent group is the weakest
    parent_edu_by_school_type: Mapping[str, Mapping[str, float]] = _table(
        {"wo": {"vmbo_bk": -0.25}}
    )
    # finding 9: boys > girls at every parental-education level (gap varies a little)
    parent_edu_by_gender: Mapping[str, Mapping[str, float]] = _table(
        {"wo": {"girl": 0.03}, "unknown": {"girl": -0.03}}
    )
    # finding 11: vmbo_bk worst and vmbo_gt best in maastricht; vwo in noord below
    # midden/sittard/parkstad; vwo in maastricht below midden/parkstad
    region_by_school_type: Mapping[str, Mapping[str, float]] = _table(
        {
            "maastricht_heuvelland": {"vmbo_bk": -0.25, "vmbo_gt": 0.20, "vwo": -0.15},
            "noord_limburg": {"vwo": -0.20},
        }
    )
    # finding 12: unknown parental education scores lower in maastricht
    parent_edu_by_region: Mapping[str, Mapping[str, float]] = _table(
        {"unknown": {"maastricht_heuvelland": -0.15}}
    )

    # ---- random effects -------------------------------------------------------------
    school_sd: float = 0.18  # tau: an ICC of the standardized index of a few percent
    student_sd: float = 1.0

    # ---- the harder simulator (issue 13, item 7); every option off by default, so the
    # calibrated survey is unchanged. Each draws from its own seeded stream, so switching
    # one on leaves every other draw of the survey as it was.
    # school x wave variation: u[school, wave] ~ N(0, school_wave_sd^2)
    school_wave_sd: float = 0.0
    # correlated school drift (a stress the default model lacks: it treats a school's waves
    # as independent): u[school, .] is AR(1) over the waves in survey order with this
    # correlation between successive waves, stationary SD ``school_wave_sd``
    school_wave_rho: float = 0.0
    # heavier tails (a stress: the model's residuals are normal): the student residual is
    # Student-t with these degrees of freedom, scaled to the same SD; 0: normal
    student_df: float = 0.0
    # residual (student) SD per school type; empty: ``student_sd`` for every type
    student_sd_by_school_type: Mapping[str, float] = _table({})
    # three-way wave x group x group cells ~ N(0, three_way_sd^2) for each pair below
    three_way_sd: float = 0.0
    three_way_pairs: tuple[tuple[str, str], ...] = (
        ("gender", "school_type"),
        ("parent_edu", "school_type"),
    )

    # ---- measurement: item_j = cut(loading_j * theta + eps_j), eps_j ~ N(0, noise_sd_j^2)
    item_loadings: tuple[float, ...] = (0.90, 1.00, 0.95, 1.05, 1.00, 1.05)
    item_noise_sd: tuple[float, ...] = (0.84, 0.82, 0.84, 0.82, 0.80, 0.82)
    # cutpoints between answers 1|2, 2|3, 3|4, 4|5 per item, set so that the answers
    # 1..5 come out about (%): item_1 13/26/36/19/6, item_2 10/22/38/23/7,
    # item_3 14/25/35/20/6, item_4 6/16/40/30/8, item_5 8/20/42/24/6, item_6 6/15/40/30/9
    # (many neutral answers, mean of all answers 2.99)
    item_cutpoints: tuple[tuple[float, ...], ...] = (
        (-1.46, -0.40, 0.79, 1.90),
        (-1.75, -0.67, 0.64, 1.89),
        (-1.45, -0.41, 0.78, 1.96),
        (-2.17, -1.11, 0.36, 1.85),
        (-1.89, -0.82, 0.63, 1.98),
        (-2.17, -1.16, 0.32, 1.76),
    )
    item_missing_rate: tuple[float, ...] = (0.015, 0.020, 0.025, 0.015, 0.020, 0.025)
    # students who stop after the first 1-3 items (missing completely at random)
    breakoff_rate: float = 0.003

    def __post_init__(self) -> None:
        _validate(self)

    def residual_sd(self, school_type: str | None = None) -> float:
        """The residual (student) SD of a student of ``school_type`` (``None``: the common
        ``student_sd``)."""
        if school_type is None:
            return self.student_sd
        return self.student_sd_by_school_type.get(school_type, self.student_sd)

    def student_sds(self) -> np.ndarray:
        """Residual (student) SD per school type, in ``schema.SCHOOL_TYPES`` order."""
        return np.array([self.residual_sd(t) for t in schema.SCHOOL_TYPES])

    @property
    def harder(self) -> bool:
        """Whether any option of the harder simulator is on."""
        return bool(
            self.school_wave_sd > 0
            or self.three_way_sd > 0
            or bool(self.student_sd_by_school_type)
            or self.student_df > 0
        )

    def item_total_sd(
        self, school_type: str | None = None, *, school: bool = True, student: bool = True
    ) -> np.ndarray:
        """SD of ``loading_j * (u + u_sw + e) + eps_j`` per item: the probit scale given eta
        (for a student of ``school_type``; ``None``: the common ``student_sd``).
        ``school=False``: given the school's realized ``u + u_sw`` as well (``loading_j * e
        + eps_j``); ``student=False``: without the student residual ``e``."""
        lam = np.asarray(self.item_loadings)
        var_theta = self.residual_sd(school_type) ** 2 if student else 0.0
        if school:
            var_theta = self.school_sd**2 + self.school_wave_sd**2 + var_theta
        return np.sqrt(lam**2 * var_theta + np.asarray(self.item_noise_sd) ** 2)


def _check_keys(name: str, table: Mapping[str, Any], levels: tuple[str, ...]) -> None:
    unknown = sorted(set(table) - set(levels))
    if unknown:
        raise SpecError(
            f"SimulationParams.{name}: unknown level(s) {', '.join(unknown)}; "
            f"expected some of {', '.join(levels)}"
        )


def _validate(p: SimulationParams) -> None:
    """Check that every table names known levels and the item tables line up."""
    full = {
        "wave_weight": "wave",
        "gender_share": "gender",
        "school_type_share": "school_type",
        "parent_edu_share": "parent_edu",
        "region_share": "region",
        "girl_share_by_school_type": "school_type",
        "age_mean_by_school_type": "school_type",
        "wave_effect": "wave",
        "gender_effect": "gender",
        "school_type_effect": "school_type",
        "parent_edu_effect": "parent_edu",
        "region_effect": "region",
    }
    for name, col in full.items():
        table = getattr(p, name)
        if set(table) != set(_LEVELS[col]):
            raise SpecError(
                f"SimulationParams.{name} must give every {col} level "
                f"({', '.join(_LEVELS[col])}); got {', '.join(table)}"
            )
    for name, (outer, inner) in _INTERACTIONS.items():
        table = getattr(p, name)
        _check_keys(name, table, _LEVELS[outer])
        for sub in table.values():
            _check_keys(name, sub, _LEVELS[inner])
    n_items = len(ITEM_COLUMNS)
    for name in ("item_loadings", "item_noise_sd", "item_cutpoints", "item_missing_rate"):
        if len(getattr(p, name)) != n_items:
            raise SpecError(f"SimulationParams.{name} needs {n_items} entries, one per item")
    n_cuts = ITEM_MAX - ITEM_MIN
    for j, cuts in enumerate(p.item_cutpoints, start=1):
        if len(cuts) != n_cuts or np.any(np.diff(cuts) <= 0):
            raise SpecError(f"SimulationParams.item_cutpoints[item_{j}]: need {n_cuts} increasing")
    if set(p.school_profile_prob) != set(p.school_profiles):
        raise SpecError("SimulationParams.school_profile_prob must give each school profile")
    if not (p.school_sd >= 0 and p.student_sd > 0 and min(p.item_noise_sd) > 0):
        raise SpecError("SimulationParams: school_sd >= 0, student_sd > 0, noise_sd > 0 needed")
    _check_keys("student_sd_by_school_type", p.student_sd_by_school_type, schema.SCHOOL_TYPES)
    if not (p.school_wave_sd >= 0 and p.three_way_sd >= 0):
        raise SpecError("SimulationParams: school_wave_sd >= 0 and three_way_sd >= 0 needed")
    if not 0 <= p.school_wave_rho < 1:
        raise SpecError("SimulationParams.school_wave_rho must be in [0, 1)")
    if p.school_wave_rho > 0 and p.school_wave_sd == 0:
        raise SpecError("SimulationParams.school_wave_rho needs school_wave_sd > 0 (no drift)")
    if p.student_df != 0 and not p.student_df > 2:
        raise SpecError("SimulationParams.student_df must be 0 (normal) or above 2")
    if any(not v > 0 for v in p.student_sd_by_school_type.values()):
        raise SpecError("SimulationParams.student_sd_by_school_type: every SD must be > 0")
    for pair in p.three_way_pairs:
        if len(pair) != 2 or pair[0] == pair[1] or not set(pair) <= set(COVARIATES[1:]):
            raise SpecError(
                f"SimulationParams.three_way_pairs: {pair!r} must be two distinct columns "
                f"among {', '.join(COVARIATES[1:])}"
            )


# (outer column, inner column) of each interaction table: table[outer_level][inner_level]
_INTERACTIONS = {
    "wave_by_school_type": ("school_type", "wave"),
    "wave_by_gender": ("gender", "wave"),
    "wave_by_parent_edu": ("parent_edu", "wave"),
    "wave_by_region": ("region", "wave"),
    "gender_by_school_type": ("gender", "school_type"),
    "parent_edu_by_school_type": ("parent_edu", "school_type"),
    "parent_edu_by_gender": ("parent_edu", "gender"),
    "region_by_school_type": ("region", "school_type"),
    "parent_edu_by_region": ("parent_edu", "region"),
}


@dataclass(frozen=True, eq=False)
class Simulation:
    """A simulated survey (canonical schema) with the parameters and seed that made it."""

    frame: pd.DataFrame
    params: SimulationParams
    seed: int
    # each row's latent trait theta (same order as frame): the truth of the graded model
    latent: np.ndarray | None = field(default=None, repr=False)
    # the drawn three-way wave x group x group cells, added to ``eta_table(params)``
    # (broadcastable to its shape); None when ``params.three_way_sd`` is 0
    three_way: np.ndarray | None = field(default=None, repr=False)
    # the realized school effects (eta units): u_school[s] and u_school_wave[s, wave] of
    # school ``school_ids[s]`` (every wave, surveyed or not); the surveyed schools' truth
    school_ids: tuple[str, ...] = field(default=(), repr=False)
    u_school: np.ndarray | None = field(default=None, repr=False)
    u_school_wave: np.ndarray | None = field(default=None, repr=False)

    def eta(self) -> np.ndarray:
        """The eta table of this survey: ``eta_table(params)`` plus its three-way cells."""
        table = eta_table(self.params)
        return table if self.three_way is None else table + self.three_way


# Seeded streams of the harder simulator's draws, apart from the survey's own stream.
_STREAM_SCHOOL_WAVE, _STREAM_THREE_WAY = 1, 2


def three_way_cells(params: SimulationParams, seed: int) -> dict[tuple[str, str], np.ndarray]:
    """The drawn cells (wave x A x B arrays, eta units) of each pair in
    ``params.three_way_pairs``; empty when ``params.three_way_sd`` is 0."""
    if params.three_way_sd <= 0:
        return {}
    rng = np.random.default_rng([seed, _STREAM_THREE_WAY])
    return {
        (a, b): params.three_way_sd * rng.standard_normal([len(_LEVELS[c]) for c in ("wave", a, b)])
        for a, b in params.three_way_pairs
    }


def draw_three_way(params: SimulationParams, seed: int) -> np.ndarray | None:
    """Three-way wave x A x B cells ~ N(0, three_way_sd^2) for each pair of
    ``params.three_way_pairs``, as an addition to the eta table (None when the SD is 0)."""
    cells = three_way_cells(params, seed)
    if not cells:
        return None
    total = np.zeros(tuple(len(_LEVELS[c]) for c in COVARIATES))
    for (a, b), table in cells.items():
        dims = ("wave", a, b)
        order = sorted(range(3), key=lambda k: COVARIATES.index(dims[k]))
        view = [1] * len(COVARIATES)
        for k in order:
            view[COVARIATES.index(dims[k])] = len(_LEVELS[dims[k]])
        total = total + np.transpose(table, order).reshape(view)
    return total


def random_truth(seed: int, base: SimulationParams | None = None) -> SimulationParams:
    """A harder simulator with its truth drawn at random (the recovery study's truths).

    Stated distributions (eta units, student SD about 1):
    - every wave x group deviation (the four ``wave_by_*`` tables) ~ N(0, s_col^2),
      s_col ~ Uniform(0.02, 0.10) per table; ``wave_effect`` ~ N(0, 0.06^2), 2018 = 0;
    - ``school_sd`` ~ Uniform(0.10, 0.25); ``school_wave_sd`` ~ Uniform(0.05, 0.15);
    - residual SD per school type: exp(N(0, 0.15^2)) each (about 0.75 to 1.35);
    - ``three_way_sd`` ~ Uniform(0.03, 0.10) (the cells are drawn by ``draw_three_way``).
    The composition, group x group tables and measurement stay the calibrated ones.
    """
    base = SimulationParams() if base is None else base
    rng = np.random.default_rng([seed, 3])

    def wave_values() -> dict[str, float]:
        draws = rng.normal(0, 1, len(schema.WAVES))
        pairs = zip(schema.WAVES, draws, strict=True)
        return {w: 0.0 if w == "2018" else float(v) for w, v in pairs}

    changes: dict[str, Any] = {"wave_effect": _ro({w: 0.06 * v for w, v in wave_values().items()})}
    for name in ("wave_by_school_type", "wave_by_gender", "wave_by_parent_edu", "wave_by_region"):
        col = _INTERACTIONS[name][0]
        s = rng.uniform(0.02, 0.10)
        changes[name] = _ro(
            {lv: {w: s * v for w, v in wave_values().items()} for lv in _LEVELS[col]}
        )
    changes["school_sd"] = float(rng.uniform(0.10, 0.25))
    changes["school_wave_sd"] = float(rng.uniform(0.05, 0.15))
    changes["student_sd_by_school_type"] = _ro(
        {t: float(np.exp(rng.normal(0, 0.15))) for t in schema.SCHOOL_TYPES}
    )
    changes["three_way_sd"] = float(rng.uniform(0.03, 0.10))
    return dataclasses.replace(base, **changes)


# ------------------------------------------------------------------------------------
# eta


def eta_table(params: SimulationParams) -> np.ndarray:
    """Eta without the age term on the grid wave x gender x school_type x parent_edu x region."""
    shape = tuple(len(_LEVELS[c]) for c in COVARIATES)
    eta = np.full(shape, params.intercept, dtype="float64")

    def axis_vec(col: str, table: Mapping[str, float]) -> np.ndarray:
        vec = np.array([table.get(level, 0.0) for level in _LEVELS[col]])
        view = [1] * len(COVARIATES)
        view[COVARIATES.index(col)] = -1
        return vec.reshape(view)

    eta = eta + axis_vec("wave", params.wave_effect)
    eta = eta + axis_vec("gender", params.gender_effect)
    eta = eta + axis_vec("school_type", params.school_type_effect)
    eta = eta + axis_vec("parent_edu", params.parent_edu_effect)
    eta = eta + axis_vec("region", params.region_effect)
    for name, (outer, inner) in _INTERACTIONS.items():
        table = getattr(params, name)
        mat = np.array(
            [[table.get(a, {}).get(b, 0.0) for b in _LEVELS[inner]] for a in _LEVELS[outer]]
        )
        i_out, i_in = COVARIATES.index(outer), COVARIATES.index(inner)
        view = [1] * len(COVARIATES)
        view[i_out], view[i_in] = len(_LEVELS[outer]), len(_LEVELS[inner])
        if i_out > i_in:
            mat = mat.T
        eta = eta + mat.reshape(view)
    return eta


def expected_item_mean(
    eta: np.ndarray,
    params: SimulationParams,
    school_type: str | None = None,
    *,
    school: bool = True,
) -> np.ndarray:
    """E[mean of the six items | eta], integrating the school, student and item noise
    (``school=False``: ``eta`` includes the school's realized effects; student and item
    noise only).

    Item j given eta is an ordinal probit with SD ``params.item_total_sd(school_type)[j]``,
    so ``E[item_j | eta] = 1 + sum_k Phi((loading_j * eta - c_jk) / sd_j)``.
    """
    eta = np.asarray(eta, dtype="float64")
    lam = np.asarray(params.item_loadings)
    cuts = np.asarray(params.item_cutpoints)  # (items, cuts)
    total = np.zeros_like(eta)
    if params.student_df == 0:
        sd = params.item_total_sd(school_type, school=school)
        for j in range(len(lam)):
            z = (lam[j] * eta[..., None] - cuts[j]) / sd[j]
            total += ITEM_MIN + ndtr(z).sum(axis=-1)
        return total / len(lam)
    # t residual: the normal parts (school, item noise) in closed form, the residual by
    # quadrature over its midpoint quantiles
    from scipy.stats import t as student_t

    df = params.student_df
    nodes = student_t.ppf((np.arange(_T_NODES) + 0.5) / _T_NODES, df) * np.sqrt((df - 2) / df)
    sd = params.item_total_sd(school_type, school=school, student=False)
    shifted = eta[..., None] + params.residual_sd(school_type) * nodes  # (..., nodes)
    for j in range(len(lam)):
        z = (lam[j] * shifted[..., None] - cuts[j]) / sd[j]
        total += ITEM_MIN + ndtr(z).sum(axis=-1).mean(axis=-1)
    return total / len(lam)


def _student_residual(params: SimulationParams, rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-variance student residuals: normal, or Student-t with ``params.student_df``."""
    if params.student_df == 0:
        return rng.standard_normal(n)
    df = params.student_df
    return rng.standard_t(df, n) * np.sqrt((df - 2) / df)


# midpoint quantiles of the unit-variance t residual: E over it by quadrature
_T_NODES = 400


def draw_items(theta: np.ndarray, params: SimulationParams, rng: np.random.Generator) -> np.ndarray:
    """Answers 1..5 (int8, students x items) as ordinal cuts of ``loading * theta + eps``."""
    lam = np.asarray(params.item_loadings)
    noise = np.asarray(params.item_noise_sd)
    out = np.empty((theta.shape[0], len(lam)), dtype="int8")
    for j in range(len(lam)):
        ystar = lam[j] * theta + noise[j] * rng.standard_normal(theta.shape[0])
        out[:, j] = ITEM_MIN + np.searchsorted(params.item_cutpoints[j], ystar)
    return out


# ------------------------------------------------------------------------------------
# composition


def _largest_remainder(total: int, probs: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``total`` closest to ``total * probs``."""
    probs = np.asarray(probs, dtype="float64")
    raw = total * probs / probs.sum()
    counts = np.floor(raw).astype("int64")
    short = total - int(counts.sum())
    if short:
        order = np.argsort(-(raw - counts), kind="stable")
        counts[order[:short]] += 1
    return counts


def _rake(seed: np.ndarray, rows: np.ndarray, cols: np.ndarray, n_iter: int = 200) -> np.ndarray:
    """Iterative proportional fitting of ``seed`` to row and column margins."""
    table = seed.astype("float64").copy()
    for _ in range(n_iter):
        table *= (rows / table.sum(axis=1))[:, None]
        table *= (cols / table.sum(axis=0))[None, :]
    return table


def _shares(table: Mapping[str, float], col: str) -> np.ndarray:
    vec = np.array([table[level] for level in _LEVELS[col]], dtype="float64")
    return vec / vec.sum()


def _wave_compositions(params: SimulationParams) -> tuple[np.ndarray, np.ndarray]:
    """Per wave: p(school_type) (W, T) and p(parent_edu | school_type) (W, T, P).

    Linear drifts of the vwo share and of the unknown parental-education share,
    centred on the size-weighted mean wave so the pooled shares are Table 1's.
    """
    weights = _shares(params.wave_weight, "wave")
    time = np.array([_WAVE_TIME[w] for w in schema.WAVES], dtype="float64")
    time = time - np.sum(weights * time)
    types, edu = (
        _shares(params.school_type_share, "school_type"),
        _shares(params.parent_edu_share, "parent_edu"),
    )
    i_vwo, i_unknown = schema.SCHOOL_TYPES.index("vwo"), schema.PARENT_EDU.index("unknown")
    seed = np.array(
        [
            [params.parent_edu_by_school_type_seed[t][p] for p in schema.PARENT_EDU]
            for t in schema.SCHOOL_TYPES
        ]
    )
    p_type = np.empty((len(time), len(types)))
    p_edu = np.empty((len(time), len(types), len(edu)))
    for w, t in enumerate(time):
        tw = types.copy()
        tw[i_vwo] = types[i_vwo] + params.vwo_share_drift * t
        rest = np.arange(len(types)) != i_vwo
        tw[rest] = types[rest] * (1 - tw[i_vwo]) / (1 - types[i_vwo])
        ew = edu.copy()
        ew[i_unknown] = edu[i_unknown] + params.unknown_parent_edu_drift * t
        rest = np.arange(len(edu)) != i_unknown
        ew[rest] = edu[rest] * (1 - ew[i_unknown]) / (1 - edu[i_unknown])
        joint = _rake(seed, tw, ew)
        p_type[w] = tw
        p_edu[w] = joint / joint.sum(axis=1, keepdims=True)
    return p_type, p_edu


def _systematic_labels(
    cell: np.ndarray, cum_probs: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Labels per row whose counts within each cell are within 1 of ``size * p``.

    Rows must be sorted by ``cell``; ``cum_probs`` (rows x K) is the cumulative
    distribution of the label for each row (constant within a cell). Systematic
    sampling at a random offset per cell, over a random order of the cell's rows.
    """
    n = cell.shape[0]
    starts = np.flatnonzero(np.r_[True, cell[1:] != cell[:-1]])
    sizes = np.diff(np.r_[starts, n])
    cell_of_row = np.repeat(np.arange(starts.size), sizes)
    order = np.lexsort((rng.random(n), cell_of_row))  # random order within each cell
    rank = np.empty(n, dtype="int64")
    rank[order] = np.arange(n) - np.repeat(starts, sizes)
    offset = rng.random(starts.size)[cell_of_row]
    position = (rank + offset) / np.repeat(sizes, sizes)
    return (position[:, None] >= cum_probs[:, :-1]).sum(axis=1).astype("int64")


def _make_schools(
    n_schools: int, params: SimulationParams, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Schools: region code, offered types (S x T bool), participation (S x W bool), size."""
    n_regions = len(schema.REGIONS)
    per_region = np.maximum(
        _largest_remainder(n_schools, _shares(params.region_share, "region")), 1
    )
    while per_region.sum() > n_schools:  # only when forcing one school per region overshot
        per_region[np.argmax(per_region)] -= 1
    region = np.repeat(np.arange(n_regions), per_region)
    names = list(params.school_profiles)
    probs = np.array([params.school_profile_prob[k] for k in names], dtype="float64")
    profile = rng.choice(len(names), size=n_schools, p=probs / probs.sum())
    first = np.r_[True, region[1:] != region[:-1]]
    profile[first] = names.index("scholengemeenschap") if "scholengemeenschap" in names else 0
    offers = np.zeros((n_schools, len(schema.SCHOOL_TYPES)), dtype=bool)
    for s, k in enumerate(profile):
        for t in params.school_profiles[names[k]]:
            offers[s, schema.SCHOOL_TYPES.index(t)] = True
    participates = np.zeros((n_schools, len(schema.WAVES)), dtype=bool)
    normal = [i for i, w in enumerate(schema.WAVES) if w not in WAVES_2020]
    in_2020 = [schema.WAVES.index(w) for w in WAVES_2020]
    participates[:, normal] = rng.random((n_schools, len(normal))) < params.participation_prob
    joins_2020 = rng.random(n_schools) < params.participation_prob_2020
    group_2020 = rng.integers(0, len(in_2020), size=n_schools)
    participates[np.flatnonzero(joins_2020), np.asarray(in_2020)[group_2020[joins_2020]]] = True
    size = np.exp(params.school_size_sd * rng.standard_normal(n_schools))
    return region, offers, participates, size


# ------------------------------------------------------------------------------------
# the generator


def simulate_survey(
    *,
    n_students: int = 40_000,
    n_schools: int = 80,
    seed: int = DEFAULT_SEED,
    params: SimulationParams | None = None,
) -> Simulation:
    """Simulate an OML-like survey in the canonical schema.

    Parameters
    ----------
    n_students, n_schools
        Size of the survey over all waves; at least 5 schools (one per region).
    seed
        Seed of the numpy Generator: the same seed gives the same frame.
    params
        Generator parameters; ``None`` means the OML-calibrated defaults.

    Returns
    -------
    Simulation
        ``frame`` (categoricals in schema order, items ``Int64`` with missing values),
        ``params`` and ``seed``.
    """
    params = SimulationParams() if params is None else params
    if n_schools < len(schema.REGIONS):
        raise SpecError(
            f"n_schools must be at least {len(schema.REGIONS)} (one per region), got {n_schools}"
        )
    if n_students < 10 * n_schools:
        raise SpecError(
            f"n_students must be at least 10 per school ({10 * n_schools}), got {n_students}"
        )
    rng = np.random.default_rng(seed)
    n_w, n_t, n_r = len(schema.WAVES), len(schema.SCHOOL_TYPES), len(schema.REGIONS)

    region_of, offers, participates, size = _make_schools(n_schools, params, rng)
    u_school = params.school_sd * rng.standard_normal(n_schools)
    u_school_wave = np.zeros((n_schools, len(schema.WAVES)))
    if params.school_wave_sd > 0:
        stream = np.random.default_rng([seed, _STREAM_SCHOOL_WAVE])
        u_school_wave = params.school_wave_sd * stream.standard_normal(u_school_wave.shape)
        if params.school_wave_rho > 0:  # AR(1) over the waves, same stationary SD
            rho = params.school_wave_rho
            for w in range(1, u_school_wave.shape[1]):
                u_school_wave[:, w] = (
                    rho * u_school_wave[:, w - 1] + np.sqrt(1 - rho**2) * (u_school_wave[:, w])
                )
    three_way = draw_three_way(params, seed)

    # cell counts wave x region x type: exact to the (drifting) shares
    p_type, p_edu = _wave_compositions(params)
    p_region = _shares(params.region_share, "region")
    n_wave = _largest_remainder(n_students, _shares(params.wave_weight, "wave"))
    counts = np.stack(
        [
            _largest_remainder(int(n_wave[w]), np.outer(p_region, p_type[w]).ravel())
            for w in range(n_w)
        ]
    ).reshape(n_w, n_r, n_t)

    # students to schools: within each cell, by school size among the eligible schools
    cell_w, cell_r, cell_t = (axis.ravel() for axis in np.indices(counts.shape))
    cell_n = counts[cell_w, cell_r, cell_t]
    school = np.empty(n_students, dtype="int64")
    at = 0
    for w, r, t, m in zip(cell_w, cell_r, cell_t, cell_n, strict=True):
        if m == 0:
            continue
        offering = np.flatnonzero((region_of == r) & offers[:, t])
        eligible = offering[participates[offering, w]]
        if eligible.size == 0:  # no participating school offers it: one more takes part
            pick = rng.choice(offering)
            participates[pick, w] = True
            eligible = np.array([pick])
        weight = size[eligible] / size[eligible].sum()
        school[at : at + m] = np.sort(rng.choice(eligible, size=m, p=weight))
        at += m
    wave = np.repeat(cell_w, cell_n)
    region = np.repeat(cell_r, cell_n)
    stype = np.repeat(cell_t, cell_n)
    cell = np.repeat(np.arange(cell_n.size), cell_n)

    # gender and parental education: exact shares within each cell, random order
    girl = _shares(params.girl_share_by_school_type, "school_type")
    girl = girl + (
        params.gender_share["girl"] - float(_shares(params.school_type_share, "school_type") @ girl)
    )
    cum_gender = np.stack([1 - girl[stype], np.ones(n_students)], axis=1)
    gender = _systematic_labels(cell, cum_gender, rng)
    parent_edu = _systematic_labels(cell, np.cumsum(p_edu[wave, stype], axis=1), rng)
    age_mean = np.array([params.age_mean_by_school_type[t] for t in schema.SCHOOL_TYPES])
    age = np.round(
        np.clip(
            age_mean[stype] + params.age_sd * rng.standard_normal(n_students), *params.age_bounds
        ),
        1,
    )

    # latent trait and items
    table = eta_table(params) if three_way is None else eta_table(params) + three_way
    eta = table[wave, gender, stype, parent_edu, region]
    eta = eta + params.age_slope * (age - params.age_center)
    theta = (
        eta
        + u_school[school]
        + u_school_wave[school, wave]
        + params.student_sds()[stype] * _student_residual(params, rng, n_students)
    )
    answers = draw_items(theta, params, rng)
    missing = rng.random(answers.shape) < np.asarray(params.item_missing_rate)
    breakoff = rng.random(n_students) < params.breakoff_rate
    kept = rng.integers(1, MIN_ITEMS, size=n_students)  # items answered before stopping
    missing |= breakoff[:, None] & (np.arange(answers.shape[1])[None, :] >= kept[:, None])

    # rows ordered by wave, school, then at random; ids follow that order
    order = np.lexsort((rng.random(n_students), school, wave))
    width = len(str(n_students))
    school_width = len(str(n_schools))
    school_ids = np.array([f"school_{s + 1:0{school_width}d}" for s in range(n_schools)])
    frame = pd.DataFrame(
        {
            "student_id": [f"st{k:0{width}d}" for k in range(1, n_students + 1)],
            "school_id": school_ids[school[order]],
            "region": _categorical(region[order], "region"),
            "wave": _categorical(wave[order], "wave"),
            "gender": _categorical(gender[order], "gender"),
            "school_type": _categorical(stype[order], "school_type"),
            "parent_edu": _categorical(parent_edu[order], "parent_edu"),
            "age": age[order],
        }
    )
    for j, name in enumerate(ITEM_COLUMNS):
        frame[name] = pd.arrays.IntegerArray(
            answers[order, j].astype("int64"), missing[order, j].copy()
        )
    return Simulation(
        frame=frame,
        params=params,
        seed=seed,
        latent=theta[order],
        three_way=three_way,
        school_ids=tuple(school_ids),
        u_school=u_school,
        u_school_wave=u_school_wave,
    )


def _by_type(eta: np.ndarray, types: np.ndarray, grid: np.ndarray, curves: np.ndarray):
    """``curves[t]`` (tabulated on ``grid``) at each ``eta``, ``t`` its school type code."""
    out = np.empty_like(eta)
    for t in np.unique(types):
        at = types == t
        out[at] = np.interp(eta[at], grid, curves[t])
    return out


def _patterns(
    codes: dict[str, np.ndarray], age_term: np.ndarray, fixed: tuple[str, ...]
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Unique (free covariates, age term) patterns of the rows, with their counts."""
    free = [c for c in COVARIATES if c not in fixed]
    key = pd.DataFrame({**{c: codes[c] for c in free}, "_age": age_term})
    grouped = key.groupby(list(key.columns), sort=False).size().reset_index(name="_n")
    return (
        {c: grouped[c].to_numpy() for c in free},
        grouped["_age"].to_numpy(),
        grouped["_n"].to_numpy(dtype="float64"),
    )


def _categorical(codes: np.ndarray, column: str) -> pd.Categorical:
    # ordered categories in schema order, as ``ingest.read_survey`` returns them
    return pd.Categorical.from_codes(codes, categories=list(_LEVELS[column]), ordered=True)


# ------------------------------------------------------------------------------------
# the truth


def true_effects(
    sim: Simulation,
    *,
    breakdowns: tuple[tuple[str, ...], ...] | None = None,
    min_items: int = MIN_ITEMS,
) -> pd.DataFrame:
    """The true adjusted effect of every (breakdown, group, wave) target.

    For a target, every retained row (after ``scale.build_index`` with ``min_items``)
    gets ``wave := w`` (kept when ``w == "all"``) and the breakdown columns set to the
    group; the expected item mean for a new school is computed analytically, averaged
    over the rows and standardized with the sample's constants. The effect is that
    value minus the same for the pooled sample (no substitution), so overall/all is 0.

    Parameters
    ----------
    sim
        A simulation from ``simulate_survey``.
    breakdowns
        Column tuples; ``None`` means ``()`` (overall) and ``schema.SUBGROUP_BREAKDOWNS``.
    min_items
        The min-items rule of the index.

    Returns
    -------
    pandas.DataFrame
        Columns ``breakdown``, ``group``, ``wave`` (a wave or ``"all"``), ``value``
        (in SD units of the standardized index) and, when the simulation carries its
        latent trait, ``latent_value``: the same estimand for the latent trait theta (the
        graded model's scale), the g-computed mean of eta for a new school minus the
        pooled one, in SD units of theta over the retained students.
    """
    if breakdowns is None:
        breakdowns = ((), *schema.SUBGROUP_BREAKDOWNS)
    for cols in breakdowns:
        bad = [c for c in cols if c not in COVARIATES or c == "wave"]
        if bad or len(set(cols)) != len(cols):
            raise SpecError(
                f"true_effects: breakdown {cols!r} must use distinct columns among "
                f"{', '.join(c for c in COVARIATES if c != 'wave')}"
            )
    params = sim.params
    scaled = build_index(sim.frame, min_items=min_items)
    rows = scaled.frame
    codes = {c: rows[c].cat.codes.to_numpy().astype("int64") for c in COVARIATES}
    age_term = params.age_slope * (rows["age"].to_numpy(dtype="float64") - params.age_center)
    table = sim.eta()
    n_rows = len(rows)

    def patterns(fixed: tuple[str, ...]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        return _patterns(codes, age_term, fixed)

    # E[item mean | eta] is smooth in eta: tabulate it once on a fine grid (interpolation
    # error below 1e-6) instead of evaluating 24 normal CDFs per pattern and target
    lo = float(table.min() + age_term.min()) - 0.1
    hi = float(table.max() + age_term.max()) + 0.1
    grid = np.linspace(lo, hi, max(int((hi - lo) / 0.001), 2) + 1)
    # one curve per school type (the residual SD may differ by type)
    grid_mean = np.stack([expected_item_mean(grid, params, t) for t in schema.SCHOOL_TYPES])
    i_type = COVARIATES.index("school_type")

    def mean_index(fixed_codes: dict[str, int], pat: tuple) -> float:
        free_codes, age_part, weight = pat
        idx = tuple(fixed_codes[c] if c in fixed_codes else free_codes[c] for c in COVARIATES)
        eta = table[idx] + age_part
        types = np.broadcast_to(idx[i_type], eta.shape)
        return float(np.sum(weight * _by_type(eta, types, grid, grid_mean)) / n_rows)

    pooled = mean_index({}, patterns(()))
    latent_sd = None
    if sim.latent is not None:
        latent_sd = float(np.std(sim.latent[scaled.frame.index.to_numpy()], ddof=1))

    def mean_latent(fixed_codes: dict[str, int], pat: tuple) -> float:
        free_codes, age_part, weight = pat
        idx = tuple(fixed_codes[c] if c in fixed_codes else free_codes[c] for c in COVARIATES)
        return float(np.sum(weight * (table[idx] + age_part)) / n_rows)

    pooled_latent = mean_latent({}, patterns(()))
    records = []
    wave_targets = (*schema.WAVES, "all")
    for cols in breakdowns:
        cache: dict[bool, tuple] = {}
        for levels in itertools.product(*(_LEVELS[c] for c in cols)):
            for w in wave_targets:
                fixed = cols if w == "all" else (*cols, "wave")
                if (w == "all") not in cache:
                    cache[w == "all"] = patterns(fixed)
                pat = cache[w == "all"]
                fixed_codes = {c: _LEVELS[c].index(lv) for c, lv in zip(cols, levels, strict=True)}
                if w != "all":
                    fixed_codes["wave"] = schema.WAVES.index(w)
                value = (mean_index(fixed_codes, pat) - pooled) / scaled.raw_sd
                record = {
                    "breakdown": schema.breakdown_name(cols),
                    "group": schema.group_label(levels),
                    "wave": w,
                    "value": value,
                }
                if latent_sd is not None:
                    latent = mean_latent(fixed_codes, pat) - pooled_latent
                    record["latent_value"] = latent / latent_sd
                records.append(record)
    columns = ["breakdown", "group", "wave", "value"]
    return pd.DataFrame.from_records(
        records, columns=columns + (["latent_value"] if latent_sd is not None else [])
    )


def true_surveyed_effects(
    sim: Simulation,
    *,
    breakdowns: tuple[tuple[str, ...], ...] | None = None,
    min_items: int = MIN_ITEMS,
    min_cell_n: int = MIN_CELL_N,
) -> pd.DataFrame:
    """The true adjusted effect of every (breakdown, group, wave) target for the surveyed
    schools: the estimand of ``Run.adjusted_means(schools="surveyed")``.

    As ``true_effects``, but instead of a new school, each school's realized ``u_school +
    u_school_wave[wave]`` (``sim.u_school``, ``sim.u_school_wave``) weighted by its share of
    the retained students: school-wave cells under ``min_cell_n`` left out, and for a
    breakdown by a column constant within every school (region), the schools of the group
    only; the wave set moves each school to its deviation in that wave. The covariates
    are averaged over the retained rows as in ``true_effects`` and independently of the
    school, which is how the run's g-computation pairs them (exact in the linear terms).
    ``value`` is the expected index minus the observed students' expected index, in SD
    units of the standardized index: contrasts between targets are the estimands.
    """
    if sim.u_school is None or sim.u_school_wave is None:
        raise SpecError("true_surveyed_effects: the simulation carries no school effects")
    if breakdowns is None:
        breakdowns = ((), *schema.SUBGROUP_BREAKDOWNS)
    params = sim.params
    scaled = build_index(sim.frame, min_items=min_items)
    rows = scaled.frame
    codes = {c: rows[c].cat.codes.to_numpy().astype("int64") for c in COVARIATES}
    age_term = params.age_slope * (rows["age"].to_numpy(dtype="float64") - params.age_center)
    school_at = {s: k for k, s in enumerate(sim.school_ids)}
    school = rows["school_id"].astype(str).map(school_at).to_numpy()
    table = sim.eta()
    u_school, u_wave = sim.u_school, sim.u_school_wave
    # students per school and wave; cells under the threshold out, as the run's store has it
    counts = np.zeros(u_wave.shape)
    np.add.at(counts, (school, codes["wave"]), 1.0)
    counts[counts < min_cell_n] = 0.0
    per_school = counts.sum(axis=1)
    # a column is school-level where every school has one value of it
    constant = {c for c in COVARIATES[1:] if (rows.groupby(school)[c].nunique() <= 1).all()}
    level_of = {}
    for c in constant:  # each school's one value of it (-1: no retained student)
        level_of[c] = np.full(len(per_school), -1)
        level_of[c][school] = codes[c]
    own = table[tuple(codes[c] for c in COVARIATES)] + age_term
    shift = u_school[school] + u_wave[school, codes["wave"]]
    # E[item mean | eta + school effects] per school type, tabulated on a fine grid
    lo = float(table.min() + age_term.min() + (u_school[:, None] + u_wave).min()) - 0.1
    hi = float(table.max() + age_term.max() + (u_school[:, None] + u_wave).max()) + 0.1
    grid = np.linspace(lo, hi, max(int((hi - lo) / 0.001), 2) + 1)
    curve = np.stack(
        [expected_item_mean(grid, params, t, school=False) for t in schema.SCHOOL_TYPES]
    )
    i_type = COVARIATES.index("school_type")
    observed = float(_by_type(own + shift, codes["school_type"], grid, curve).mean())
    records = []
    for cols in breakdowns:
        pat_codes, pat_age, pat_n = _patterns(codes, age_term, (*cols, "wave"))
        weight = pat_n / pat_n.sum()
        for levels in itertools.product(*(_LEVELS[c] for c in cols)):
            fixed = {c: _LEVELS[c].index(lv) for c, lv in zip(cols, levels, strict=True)}
            keep = np.ones(len(per_school), dtype=bool)
            for c in constant & set(cols):
                keep &= level_of[c] == fixed[c]
            share = np.where(keep, per_school, 0.0)
            for w_code, w in enumerate(schema.WAVES):
                record = {
                    "breakdown": schema.breakdown_name(cols),
                    "group": schema.group_label(levels),
                    "wave": w,
                    "value": np.nan,
                }
                records.append(record)
                if share.sum() == 0:
                    continue  # no surveyed school of the group
                at = {**fixed, "wave": w_code}
                idx = tuple(at[c] if c in at else pat_codes[c] for c in COVARIATES)
                eta = table[idx] + pat_age  # one per pattern
                types = np.broadcast_to(idx[i_type], eta.shape)
                on = share > 0
                school_eta = u_school[on] + u_wave[on, w_code]
                grid_eta = eta[:, None] + school_eta[None, :]
                types = np.broadcast_to(types[:, None], grid_eta.shape)
                value = _by_type(grid_eta, types, grid, curve)
                mean = float(weight @ value @ (share[on] / share[on].sum()))
                record["value"] = (mean - observed) / scaled.raw_sd
    return pd.DataFrame.from_records(records, columns=["breakdown", "group", "wave", "value"])


# ------------------------------------------------------------------------------------
# files


def truth_path(survey_path: str | Path) -> Path:
    """``data/oml_synthetic.csv`` -> ``data/oml_synthetic_truth.csv``."""
    path = Path(survey_path)
    return path.with_name(f"{path.stem}_truth{path.suffix or '.csv'}")


def structure_truth(sim: Simulation) -> dict:
    """The harder simulator's random structure as data: the SDs, the residual SD per school
    type and every drawn three-way cell (``{pair: {wave: {a: {b: value}}}}``, eta units)."""
    p = sim.params
    out: dict[str, Any] = {
        "school_sd": p.school_sd,
        "school_wave_sd": p.school_wave_sd,
        "school_wave_rho": p.school_wave_rho,
        "student_df": p.student_df,
        "student_sd_by_school_type": dict(
            zip(schema.SCHOOL_TYPES, map(float, p.student_sds()), strict=True)
        ),
        "three_way_sd": p.three_way_sd,
        "three_way": {},
    }
    for (a, b), table in three_way_cells(p, sim.seed).items():
        out["three_way"][f"wave x {a} x {b}"] = {
            w: {
                la: {lb: round(float(table[iw, ia, ib]), 6) for ib, lb in enumerate(_LEVELS[b])}
                for ia, la in enumerate(_LEVELS[a])
            }
            for iw, w in enumerate(schema.WAVES)
        }
    return out


def write_simulation(sim: Simulation, path: str | Path) -> tuple[Path, Path]:
    """Write the survey CSV and its truth CSV (``<stem>_truth.csv``) next to it; with any
    option of the harder simulator on, also ``<stem>_truth_structure.json``
    (``structure_truth``).

    The files are written to temporary names first and renamed at the end, so a
    failure leaves no half-written output. Returns the survey and truth CSV paths.
    """
    path = Path(path)
    if path.suffix.lower() != ".csv":
        raise SpecError(f"{path}: the output must be a .csv file; pass --out <name>.csv")
    if not path.parent.is_dir():
        raise SpecError(f"{path}: folder {path.parent} does not exist; create it first")
    truth_file = truth_path(path)
    truth = true_effects(sim)
    tmp_survey = path.with_name(f".{path.name}.tmp")
    tmp_truth = truth_file.with_name(f".{truth_file.name}.tmp")
    structure_file = path.with_name(f"{path.stem}_truth_structure.json")
    tmp_structure = structure_file.with_name(f".{structure_file.name}.tmp")
    try:
        sim.frame.to_csv(tmp_survey, index=False, lineterminator="\n")
        truth.to_csv(tmp_truth, index=False, lineterminator="\n", float_format="%.6f")
        if sim.params.harder:
            tmp_structure.write_text(json.dumps(structure_truth(sim), indent=1) + "\n")
        tmp_survey.replace(path)
        tmp_truth.replace(truth_file)
        if sim.params.harder:
            tmp_structure.replace(structure_file)
    finally:
        tmp_survey.unlink(missing_ok=True)
        tmp_truth.unlink(missing_ok=True)
        tmp_structure.unlink(missing_ok=True)
    return path, truth_file
