"""The canonical survey schema: column names, types and the OML default levels.

Levels and their order are defaults for the OML data; a column map (``ingest``) may
declare others, so model code never hard-codes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omlbayes.constants import ITEM_COLUMNS

WAVES = ("2014", "2016", "2018", "2020_0", "2020_1", "2020_2", "2022")
GENDERS = ("boy", "girl")
SCHOOL_TYPES = ("vmbo_bk", "vmbo_gt", "havo", "vwo")
PARENT_EDU = ("max_mbo", "hbo", "wo", "unknown")
REGIONS = (
    "noord_limburg",
    "midden_limburg",
    "sittard_geleen",
    "maastricht_heuvelland",
    "parkstad_limburg",
)

CATEGORICAL_COLUMNS = ("region", "wave", "gender", "school_type", "parent_edu")
ID_COLUMNS = ("student_id", "school_id")
REQUIRED_COLUMNS = (*ID_COLUMNS, *CATEGORICAL_COLUMNS, "age", *ITEM_COLUMNS)

# Subgroup breakdowns of the factsheet: Figures 3-6 and the "figure not shown" crosses.
SUBGROUP_BREAKDOWNS: tuple[tuple[str, ...], ...] = (
    ("school_type",),
    ("gender",),
    ("parent_edu",),
    ("region",),
    ("gender", "school_type"),
    ("parent_edu", "school_type"),
    ("parent_edu", "gender"),
    ("region", "school_type"),
    ("parent_edu", "region"),
)


@dataclass(frozen=True)
class Levels:
    """Declared levels (in order) of each categorical column."""

    wave: tuple[str, ...] = WAVES
    gender: tuple[str, ...] = GENDERS
    school_type: tuple[str, ...] = SCHOOL_TYPES
    parent_edu: tuple[str, ...] = PARENT_EDU
    region: tuple[str, ...] = REGIONS
    extra: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def of(self, column: str) -> tuple[str, ...]:
        if column in self.extra:
            return self.extra[column]
        return getattr(self, column)


def breakdown_name(columns: tuple[str, ...]) -> str:
    """``("gender", "school_type")`` -> ``"gender x school_type"``; ``()`` -> ``"overall"``."""
    return " x ".join(columns) if columns else "overall"


def group_label(levels: tuple[str, ...]) -> str:
    """A cross-breakdown cell as a label, ``("boy", "vwo")`` -> ``"boy:vwo"``."""
    return ":".join(levels) if levels else "all"
