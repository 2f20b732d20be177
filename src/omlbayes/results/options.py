"""The output options every stage after the fit takes, in one object.

Interval kind and probability, the disclosure threshold, the language, and the name and
area of the monitor the data come from. Every table, figure and sentence that names an
interval or a threshold is formatted from this object, so a setting cannot stop half-way
(``summary.csv``, ``effects.csv``, the forest captions, the report and the school pages
all state the run's own values).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from omlbayes import labels
from omlbayes.constants import CI_KIND, CI_PROB, MIN_CELL_N, MIN_CELL_N_FLOOR
from omlbayes.errors import SpecError

INTERVAL_KINDS = ("eti", "hdi")


@dataclass(frozen=True)
class OutputOptions:
    """What the outputs of a run show and say.

    ``monitor`` and ``area`` name the survey ("OnderwijsMonitor Limburg", "Limburg");
    empty strings name none, and the texts then say "all schools" instead of an area.
    """

    interval: str = CI_KIND
    prob: float = CI_PROB
    min_cell_n: int = MIN_CELL_N
    lang: str = "nl"
    monitor: str = ""
    area: str = ""

    def __post_init__(self) -> None:
        if self.interval not in INTERVAL_KINDS:
            raise SpecError(
                f"interval kind {self.interval!r} unknown; use one of {', '.join(INTERVAL_KINDS)}"
            )
        if not 0 < float(self.prob) < 1:
            raise SpecError(f"--prob must be between 0 and 1, got {self.prob}")
        if int(self.min_cell_n) < MIN_CELL_N_FLOOR:
            raise SpecError(
                f"--min-cell-n must be at least {MIN_CELL_N_FLOOR} (disclosure control), "
                f"got {self.min_cell_n}"
            )
        labels.check_lang(self.lang)

    # -- texts -----------------------------------------------------------------------
    @property
    def percent(self) -> str:
        """``0.9`` -> ``"90"``; ``0.955`` -> ``"95.5"``."""
        return f"{100 * float(self.prob):g}"

    def interval_name(self, lang: str | None = None) -> str:
        """``"90% interval (highest posterior density, HDI)"`` in ``lang``."""
        lang = lang or self.lang
        return labels.INTERVAL_TEXT[lang][self.interval].format(prob=self._pct(lang))

    def interval_short(self, lang: str | None = None) -> str:
        """``"90% interval"`` / ``"90%-interval"``."""
        lang = lang or self.lang
        return labels.INTERVAL_TEXT[lang]["short"].format(prob=self._pct(lang))

    def suppressed_text(self, lang: str | None = None) -> str:
        """The mark of a suppressed cell, ``"n < 20"``."""
        return labels.SUPPRESSED_TEXT[lang or self.lang].format(n=self.min_cell_n)

    def whole(self, lang: str | None = None) -> str:
        """The name of all schools together: the area when the config names one."""
        lang = lang or self.lang
        if self.area:
            return labels.AREA_TEXT[lang]["area"].format(area=self.area)
        return labels.AREA_TEXT[lang]["none"]

    def whole_short(self, lang: str | None = None) -> str:
        lang = lang or self.lang
        return self.area or labels.AREA_TEXT[lang]["none_short"]

    def percent_text(self, lang: str | None = None) -> str:
        """The probability in percent as written in ``lang`` (``"92,5"`` in Dutch)."""
        return self._pct(lang or self.lang)

    def _pct(self, lang: str) -> str:
        return self.percent.replace(".", ",") if lang == "nl" else self.percent

    # -- numbers ---------------------------------------------------------------------
    def bounds(self, draws: np.ndarray) -> tuple[float, float]:
        """The run's interval of all values of ``draws`` (a flat sample)."""
        return draw_interval(np.ravel(draws), self.interval, self.prob)

    # -- conversions -----------------------------------------------------------------
    def with_lang(self, lang: str) -> OutputOptions:
        return replace(self, lang=labels.check_lang(lang))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> OutputOptions:
        """From a run record's ``options`` (unknown keys, e.g. ``seed``, are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


def draw_interval(
    values: np.ndarray, kind: str, prob: float, *, axis: int | tuple[int, ...] = -1
) -> tuple[np.ndarray, np.ndarray]:
    """The one interval of the project: equal-tailed (``eti``) or highest-density (``hdi``)
    bounds holding ``prob`` of ``values`` over ``axis``, as ArviZ computes them.

    A 1-d sample may hold non-finite values (they are dropped); bounds are NaN when
    nothing is left.
    """
    from arviz_stats.base import array_stats

    if kind not in INTERVAL_KINDS:
        raise SpecError(f"interval kind {kind!r} unknown; use one of {', '.join(INTERVAL_KINDS)}")
    if not 0 < float(prob) < 1:
        raise SpecError(f"interval probability must be between 0 and 1, got {prob}")
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[np.isfinite(values)]
        if values.size == 0:
            return float("nan"), float("nan")
    compute = array_stats.eti if kind == "eti" else array_stats.hdi
    bounds = compute(values, prob, axis=axis)
    if bounds.ndim == 1:  # one interval: plain numbers
        return float(bounds[0]), float(bounds[1])
    return bounds[..., 0], bounds[..., 1]
