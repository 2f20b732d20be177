"""School feedback: one self-contained HTML page per school and per region.

The factsheet's schools get a private digital feedback; this is ours, from the run folder
alone. For school s in region r at wave w the adjusted index is

    effect(region = r, wave = w) + u[s] (+ u[s, w] when the model has a school x wave term)

as posterior draws (``estimands.effect_draws`` gives the region and overall effects;
``1|school_id`` and ``1|school_id:wave`` the school deviations), next to the region
(``effect(region = r, wave = w)``) and all schools together (``effect(overall, w)``, named
by the monitor's area when the column map gives one). Waves and regions follow the levels
saved in the run record. Ranks are
computed per draw, so their interval shows how uncertain a league-table place is. Every
interval is the run's kind and probability (``OutputOptions``).

Disclosure control (``disclosure.py``, the same policy as the report): a school x wave cell
with fewer than ``min_cell_n`` students (or a count the run already blanked) shows no
estimate and no rank, only the mark "n < min_cell_n". No student-level data is read or
written. Each school gets its own page whatever its id: the file name is the sanitised id
plus a short hash of the raw id, so ids that differ only in punctuation never share a file.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from omlbayes import labels
from omlbayes.errors import RunError
from omlbayes.model import estimands
from omlbayes.report.findings import fmt_number
from omlbayes.report.html import (
    CSS,
    document,
    esc,
    figure_html,
    figure_markup,
    suppressed_mark,
    table_html,
)
from omlbayes.report.page import report_options
from omlbayes.results import disclosure, runs
from omlbayes.results.options import OutputOptions

SCHOOLS_DIR = "schools"
SCHOOL_TERM = "1|school_id"
SCHOOL_WAVE_TERM = "1|school_id:wave"
ALL = estimands.ALL_WAVES
COLOURS = {"school": "#1f3b73", "region": "#D55E00", "province": "#7f7f7f"}

PAGE_CSS = CSS + "td a{color:#1f3b73}.legend span{margin-right:14px}"


@dataclass(frozen=True)
class Cell:
    """One school (or region, province) x wave: summary of the draws, or suppressed."""

    wave: str
    n: int | None  # None when suppressed or not surveyed
    status: str  # "shown" | "suppressed" | "not_surveyed"
    mean: float = float("nan")
    lower: float = float("nan")
    upper: float = float("nan")
    rank_low: int | None = None
    rank_high: int | None = None
    n_ranked: int | None = None  # schools ranked in this wave


@dataclass(frozen=True)
class SchoolFeedback:
    school: str
    region: str
    cells: tuple[Cell, ...]
    region_cells: tuple[Cell, ...]
    province_cells: tuple[Cell, ...]
    overall: Cell  # all waves: value and rank among all shown schools
    n_ranked: int


def _summary(draws: np.ndarray, options: OutputOptions) -> tuple[float, float, float]:
    """Mean and the run's interval over the flattened draws."""
    flat = draws.reshape(-1)
    lo, hi = options.bounds(flat)
    return float(flat.mean()), lo, hi


def _rank_interval(ranks: np.ndarray, options: OutputOptions) -> tuple[int, int, int]:
    flat = ranks.reshape(-1)
    lo, hi = options.bounds(flat)
    return int(np.floor(lo)), int(np.round(np.median(flat))), int(np.ceil(hi))


def ranks_per_draw(values: np.ndarray) -> np.ndarray:
    """Rank of each school (last axis) in each draw; 1 = highest value."""
    order = np.argsort(-values, axis=-1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, values.shape[-1] + 1), axis=-1)
    return ranks


class _Draws:
    """Draws of named cells (chain, draw) looked up by key in O(1): one index built once,
    so thousands of schools x waves cost no scan of the coordinates per lookup."""

    def __init__(self, values: np.ndarray, keys) -> None:
        self.values = values  # (chain, draw, cell)
        self.index: dict = {}
        for k, key in enumerate(keys):
            self.index.setdefault(key, k)  # the first match, as a scan would find

    def get(self, key) -> np.ndarray | None:
        k = self.index.get(key)
        return None if k is None else self.values[..., k]


def _targets(effects: xr.DataArray) -> _Draws:
    """Effect draws by (breakdown, group, wave)."""
    keys = zip(
        effects["breakdown"].to_numpy(),
        effects["group"].to_numpy(),
        effects["wave"].to_numpy(),
        strict=True,
    )
    values = effects.transpose("chain", "draw", "target").to_numpy()
    return _Draws(values, keys)


def _school_term(posterior: xr.Dataset, term: str) -> _Draws:
    """Draws of a school term's cells by coordinate label (no cells when absent)."""
    if term not in posterior:
        return _Draws(np.empty((0, 0, 0)), ())
    var = posterior[term]
    dim = next(d for d in var.dims if d not in ("chain", "draw"))
    return _Draws(var.transpose("chain", "draw", dim).to_numpy(), var[dim].to_numpy())


@dataclass(frozen=True)
class _SchoolValues:
    """The draws of every school's adjusted index, and which schools and waves are shown."""

    table: pd.DataFrame  # schools.csv with ``shown`` (not under the threshold) and numeric n
    waves: list[str]  # in declared order
    school_region: pd.Series  # school_id -> region
    ranked: list[str]  # schools with at least one shown wave (ranked over all waves)
    effects: _Draws
    value: Callable[[str, str, str], np.ndarray]  # (school, region, wave) -> (chain, draw)


def _school_values(
    posterior: xr.Dataset,
    gcomp: xr.Dataset,
    schools: pd.DataFrame,
    *,
    options: OutputOptions,
    levels: dict[str, list[str]],
    seed: int,
    effects: xr.DataArray | None,
) -> _SchoolValues:
    if SCHOOL_TERM not in posterior:
        raise RunError(f"the posterior has no {SCHOOL_TERM!r} term: no school feedback possible")
    if effects is None:
        effects = estimands.effect_draws(posterior, gcomp, seed=seed)
    effects = _targets(effects)
    school_draws = _school_term(posterior, SCHOOL_TERM)
    school_wave_draws = _school_term(posterior, SCHOOL_WAVE_TERM)
    table = schools.assign(
        school_id=schools["school_id"].astype(str),
        region=schools["region"].astype(str),
        wave=schools["wave"].astype(str),
    )
    n = pd.to_numeric(table["n"], errors="coerce")
    small = [disclosure.is_small(v, options.min_cell_n) for v in n]
    table["shown"] = ~np.asarray(small, dtype=bool) & ~table["suppressed"].astype(bool)
    table["n"] = n
    present_waves = set(table["wave"])
    gwaves = [w for w in dict.fromkeys(gcomp["wave"].to_numpy().astype(str)) if w != ALL]
    declared = list(levels.get("wave", ()))
    waves = [w for w in declared if w in gwaves] + [w for w in gwaves if w not in declared]
    waves = [w for w in waves if w in present_waves] or waves

    school_region = table.groupby("school_id", sort=True)["region"].first()
    shown_any = table.groupby("school_id")["shown"].any()
    surveyed = table.groupby("school_id", sort=False)["wave"].agg(list).to_dict()

    def value(school: str, region: str, wave: str) -> np.ndarray:
        """The region's adjusted mean plus the school's own deviation: its constant and, per
        wave, its school x wave deviation; over all waves that deviation's mean over the
        waves the school took part in."""
        base = effects.get(("region", region, wave))
        if base is None:
            raise RunError(f"the run has no region effect for {region!r} at wave {wave!r}")
        u = school_draws.get(school)
        if u is None:
            raise RunError(f"the posterior has no school effect for {school!r}")
        out = base + u
        own = [wave] if wave != ALL else surveyed.get(school, [])
        drift = [d for w in own if (d := school_wave_draws.get(f"{school}:{w}")) is not None]
        if drift:
            out = out + np.mean(drift, axis=0)
        return out

    ranked = [s for s in school_region.index if shown_any.get(s, False)]
    return _SchoolValues(table, waves, school_region, ranked, effects, value)


def school_feedback(
    posterior: xr.Dataset,
    gcomp: xr.Dataset,
    schools: pd.DataFrame,
    *,
    options: OutputOptions,
    levels: dict[str, list[str]],
    seed: int = 0,
    effects: xr.DataArray | None = None,
) -> list[SchoolFeedback]:
    """Every school's adjusted index per wave, its region's and the province's, with ranks.

    Parameters
    ----------
    posterior, gcomp : xarray.Dataset
        The run's ``posterior`` and ``gcomp`` groups.
    schools : pandas.DataFrame
        ``schools.csv``: school_id, region, wave, n (blank when under the run's threshold),
        suppressed.
    options : OutputOptions
        Interval kind and probability; school x wave cells with fewer than
        ``options.min_cell_n`` students (or blank counts) are suppressed.
    levels : dict
        The run's declared levels (run record): waves and regions keep their order.
    seed : int
        The run's seed (``effect_draws`` draws unsampled cells with it, as summarise did).
    effects : xarray.DataArray, optional
        The run's adjusted-mean draws when already computed (``Run.effect_draws``).
    """
    sv = _school_values(
        posterior, gcomp, schools, options=options, levels=levels, seed=seed, effects=effects
    )
    table, waves, school_region, ranked = sv.table, sv.waves, sv.school_region, sv.ranked
    effects, value = sv.effects, sv.value
    ids = list(school_region.index)

    # Ranks over all waves among schools with at least one shown wave; per wave among the
    # schools shown in that wave.
    overall_rank: dict[str, tuple[int, int, int]] = {}
    if ranked:
        stacked = np.stack([value(s, school_region[s], ALL) for s in ranked], axis=-1)
        ranks = ranks_per_draw(stacked)
        for k, s in enumerate(ranked):
            overall_rank[s] = _rank_interval(ranks[..., k], options)
    wave_rank: dict[tuple[str, str], tuple[int, int, int]] = {}
    wave_members: dict[str, int] = {}
    shown_cells = table[table["shown"]]
    for wave in waves:
        members = list(shown_cells.loc[shown_cells["wave"] == wave, "school_id"])
        if len(members) < 2:
            continue
        stacked = np.stack([value(s, school_region[s], wave) for s in members], axis=-1)
        ranks = ranks_per_draw(stacked)
        wave_members[wave] = len(members)
        for k, s in enumerate(members):
            wave_rank[(s, wave)] = _rank_interval(ranks[..., k], options)

    def context_cells(breakdown: str, group: str) -> tuple[Cell, ...]:
        cells = []
        for wave in (*waves, ALL):
            draws = effects.get((breakdown, group, wave))
            if draws is None:
                cells.append(Cell(wave, None, "not_surveyed"))
                continue
            m, lo, hi = _summary(draws, options)
            cells.append(Cell(wave, None, "shown", m, lo, hi))
        return tuple(cells)

    province = context_cells("overall", "all")
    region_cache: dict[str, tuple[Cell, ...]] = {}
    out = []
    rows_of = {s: rows.set_index("wave") for s, rows in table.groupby("school_id", sort=False)}
    for s in ids:
        region = school_region[s]
        if region not in region_cache:
            region_cache[region] = context_cells("region", region)
        rows = rows_of[s]
        cells = []
        for wave in waves:
            if wave not in rows.index:
                cells.append(Cell(wave, None, "not_surveyed"))
                continue
            row = rows.loc[wave]
            if not bool(row["shown"]):
                cells.append(Cell(wave, None, "suppressed"))
                continue
            m, lo, hi = _summary(value(s, region, wave), options)
            rank = wave_rank.get((s, wave))
            cells.append(
                Cell(
                    wave,
                    int(row["n"]),
                    "shown",
                    m,
                    lo,
                    hi,
                    rank[0] if rank else None,
                    rank[2] if rank else None,
                    wave_members.get(wave),
                )
            )
        if s in overall_rank:
            m, lo, hi = _summary(value(s, region, ALL), options)
            lo_r, med_r, hi_r = overall_rank[s]
            overall = Cell(ALL, med_r, "shown", m, lo, hi, lo_r, hi_r, len(ranked))
        else:
            overall = Cell(ALL, None, "suppressed")
        out.append(
            SchoolFeedback(
                s, region, tuple(cells), region_cache[region], province, overall, len(ranked)
            )
        )
    return out


def tiers(draws: np.ndarray, options: OutputOptions) -> np.ndarray:
    """Tiers of units that cannot be told apart; ``draws`` is (unit, sample), the units in
    order of their posterior mean, highest first. A new tier starts at the first unit the
    current tier's top unit is credibly above: the run's interval of their difference lies
    above 0. Tier 1 is the top one; within a tier no unit is credibly below its top unit."""
    out = np.empty(len(draws), dtype=np.int64)
    tier, top = 1, 0
    for k in range(len(draws)):
        if k > top and options.bounds(draws[top] - draws[k])[0] > 0:
            tier, top = tier + 1, k
        out[k] = tier
    return out


OVERVIEW_FIGURE = "schools_overview.png"


def schools_overview(
    posterior: xr.Dataset,
    gcomp: xr.Dataset,
    schools: pd.DataFrame,
    *,
    options: OutputOptions,
    levels: dict[str, list[str]],
    seed: int = 0,
    effects: xr.DataArray | None = None,
) -> pd.DataFrame:
    """Every ranked school's composition-adjusted index over all waves (the school pages'
    "all waves" value), its rank interval and its tier (:func:`tiers`); one row per school,
    highest mean first: school, region, mean, lower, upper, rank_low, rank_median,
    rank_high, tier. Schools with no wave at or above the disclosure threshold are left out,
    as on the pages. Arguments as :func:`school_feedback`."""
    sv = _school_values(
        posterior, gcomp, schools, options=options, levels=levels, seed=seed, effects=effects
    )
    columns = ["school", "region", "mean", "lower", "upper", "rank_low", "rank_median",
               "rank_high", "tier"]  # fmt: skip
    if not sv.ranked:
        return pd.DataFrame(columns=columns)
    stacked = np.stack([sv.value(s, sv.school_region[s], ALL) for s in sv.ranked], axis=-1)
    ranks = ranks_per_draw(stacked)
    rows = []
    for k, s in enumerate(sv.ranked):
        mean, lower, upper = _summary(stacked[..., k], options)
        rank_low, rank_median, rank_high = _rank_interval(ranks[..., k], options)
        rows.append([s, sv.school_region[s], mean, lower, upper, rank_low, rank_median,
                     rank_high, 0])  # fmt: skip
    table = pd.DataFrame(rows, columns=columns)
    order = np.argsort(-table["mean"].to_numpy(), kind="stable")
    table = table.iloc[order].reset_index(drop=True)
    flat = stacked.reshape(-1, len(sv.ranked)).T[order]
    table["tier"] = tiers(flat, options)
    return table


def overview_caption(
    table: pd.DataFrame, *, n_schools: int, options: OutputOptions, adjusted_for: tuple[str, ...]
) -> str:
    """The overview's caption: composition-adjusted, the run's interval, the tier rule."""
    lang = options.lang
    names = [labels.column(c.removesuffix("_c"), lang).lower() for c in adjusted_for]
    return labels.SCHOOL_TEXT[lang]["overview_caption"].format(
        covariates=", ".join(names),
        interval=options.interval_short(),
        shown=len(table),
        total=n_schools,
        n=options.min_cell_n,
    )


def overview_html(table: pd.DataFrame, png: bytes, *, caption: str, options: OutputOptions) -> str:
    """The overview on the index page: the figure, then one row per school by tier."""
    tx = labels.SCHOOL_TEXT[options.lang]
    interval = options.interval_short()

    def number(value: float) -> str:
        return fmt_number(value, lang=options.lang, sign=True)

    header = [
        esc(tx["tier_head"]),
        esc(tx["school"]),
        esc(tx["region"]),
        esc(tx["estimate"].format(interval=interval)),
        esc(tx["rank_head"].format(interval=interval)),
    ]
    rows = [
        [
            str(int(r.tier)),
            f"<a href='{school_file(r.school)}'>{esc(r.school)}</a>",
            esc(labels.level(r.region, options.lang)),
            esc(f"{number(r.mean)} ({number(r.lower)} – {number(r.upper)})"),
            esc(f"{r.rank_median} ({r.rank_low}–{r.rank_high} / {len(table)})"),
        ]
        for r in table.itertuples()
    ]
    return figure_html(png, caption=caption, name="schools_overview") + table_html(
        header, rows, numeric={0, 3, 4}, cls="overview"
    )


# ---------------------------------------------------------------------------------------
# Figures and pages.


def _wave_text(wave: str, lang: str) -> str:
    return labels.SCHOOL_TEXT[lang]["all_waves"] if wave == ALL else labels.level(wave, lang)


# Inline SVG, drawn here: hundreds of pages of a national run cost milliseconds each (a
# matplotlib figure costs about 0.1 s), and the figure stays sharp at any zoom and in print,
# its texts part of the page. Sizes in CSS px.
_SVG_WIDTH = 720
_SVG_ROW = 34
_SVG_TOP = 46
_SVG_BOTTOM = 84
_SVG_RIGHT = 18
_SVG_CHAR = 7.4  # px per character of the 13-px wave labels (a generous average)


def _svg_number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".").replace("-", "−") if value else "0"


def _x_ticks(limit: float) -> np.ndarray:
    """Round tick values on [-limit, limit]: steps of 1, 2, 2.5 or 5 x 10^k, 5-9 ticks."""
    raw = 2 * limit / 8
    power = 10.0 ** np.floor(np.log10(raw))
    step = next(m * power for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * power >= raw)
    k = int(np.floor(limit / step + 1e-9))
    return np.arange(-k, k + 1) * step


def forest_svg(
    series: list[tuple[str, str, tuple[Cell, ...]]], *, options: OutputOptions, title: str
) -> str:
    """A forest figure as inline SVG: waves top to bottom, one diamond + interval line per
    series, offset within the wave's row (``series``: (label, colour, cells), the cells of
    each series in the same wave order). Suppressed cells show the mark, never a value."""
    lang = options.lang
    waves = [c.wave for c in series[0][2]]
    wave_text = [_wave_text(w, lang) for w in waves]
    k = len(series)
    step = 0.22 if k > 1 else 0.0
    finite = [
        v for _, _, cells in series for c in cells for v in (c.lower, c.upper) if np.isfinite(v)
    ]
    limit = max(0.25, 1.1 * max((abs(v) for v in finite), default=0.25))
    left = 16 + _SVG_CHAR * max(len(t) for t in wave_text)
    right = _SVG_WIDTH - _SVG_RIGHT
    bottom = _SVG_TOP + _SVG_ROW * len(waves)  # the axis line
    height = bottom + _SVG_BOTTOM

    def x(value: float) -> float:
        return left + (value + limit) / (2 * limit) * (right - left)

    def y(row: float) -> float:
        return _SVG_TOP + _SVG_ROW * (row + 0.5)

    def diamond(cx: float, cy: float, colour: str, r: float = 5.5) -> str:
        return (
            f"<path d='M{cx:.1f} {cy - r:.1f}L{cx + r:.1f} {cy:.1f}L{cx:.1f} {cy + r:.1f}"
            f"L{cx - r:.1f} {cy:.1f}Z' fill='{colour}' stroke='#fff' stroke-width='0.8'/>"
        )

    parts = [
        f"<svg class='forest' viewBox='0 0 {_SVG_WIDTH} "
        f"{height}' width='{_SVG_WIDTH}' role='img' aria-label='{esc(title)}' "
        "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'>",
        f"<text x='2' y='18' font-size='15'>{esc(title)}</text>",
        f"<text x='{right}' y='38' font-size='11.5' fill='#555' text-anchor='end'>"
        + esc(labels.LINE_IS_TEXT[lang].format(interval=options.interval_short()))
        + "</text>",
    ]
    for tick in _x_ticks(limit):
        xt = x(tick)
        parts.append(
            f"<line x1='{xt:.1f}' x2='{xt:.1f}' y1='{_SVG_TOP}' y2='{bottom}' stroke='#e5e5e5'/>"
            f"<line x1='{xt:.1f}' x2='{xt:.1f}' y1='{bottom}' y2='{bottom + 5}' stroke='#000'/>"
            f"<text x='{xt:.1f}' y='{bottom + 19}' font-size='12.5' text-anchor='middle'>"
            f"{_svg_number(tick)}</text>"
        )
    parts.append(
        f"<line x1='{x(0):.1f}' x2='{x(0):.1f}' y1='{_SVG_TOP}' y2='{bottom}' stroke='#555'/>"
        f"<line x1='{left}' x2='{left}' y1='{_SVG_TOP}' y2='{bottom}' stroke='#000'/>"
        f"<line x1='{left}' x2='{right}' y1='{bottom}' y2='{bottom}' stroke='#000'/>"
        f"<text x='{(left + right) / 2:.1f}' y='{bottom + 38}' font-size='12.5' "
        f"text-anchor='middle'>{esc(labels.SCHOOL_TEXT[lang]['xlabel'])}</text>"
    )
    for row, text in enumerate(wave_text):
        parts.append(
            f"<text x='{left - 8:.1f}' y='{y(row) + 4.5:.1f}' font-size='13' "
            f"text-anchor='end'>{esc(text)}</text>"
        )
    legend = []
    for j, (name, colour, cells) in enumerate(series):
        offset = (j - (k - 1) / 2) * step
        shown = False
        for row, cell in enumerate(cells):
            cy = y(row + offset)
            if cell.status == "suppressed":
                parts.append(  # at the left edge, clear of the lines around zero
                    f"<text x='{left + 6:.1f}' y='{cy + 4:.1f}' font-size='11' fill='#777' "
                    f"font-style='italic'>{esc(options.suppressed_text())}</text>"
                )
            elif cell.status == "shown" and np.isfinite(cell.mean):
                shown = True
                parts.append(
                    f"<line x1='{x(cell.lower):.1f}' x2='{x(cell.upper):.1f}' y1='{cy:.1f}' "
                    f"y2='{cy:.1f}' stroke='{colour}' stroke-width='2.6'/>"
                    + diamond(x(cell.mean), cy, colour)
                )
        if shown:
            legend.append((name, colour))
    if legend:  # centred under the axis; each entry a diamond and its name
        widths = [26 + _SVG_CHAR * 0.95 * len(name) for name, _ in legend]
        lx = (left + right) / 2 - sum(widths) / 2
        for (name, colour), width in zip(legend, widths, strict=True):
            parts.append(
                diamond(lx + 6, bottom + 64, colour)
                + f"<text x='{lx + 18:.1f}' y='{bottom + 68.5:.1f}' font-size='12'>"
                f"{esc(name)}</text>"
            )
            lx += width
    parts.append("</svg>")
    return "".join(parts)


def safe_name(value: str) -> str:
    """A readable, file-system-safe stem of ``value`` plus a short hash of the raw value:
    unique per value (``"A/B"`` and ``"A_B"`` differ), the same in every run."""
    ascii_text = unicodedata.normalize("NFKD", str(value)).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", ascii_text).strip("_")[:40] or "x"
    digest = hashlib.sha256(str(value).encode("utf-8")).hexdigest()[:8]
    return f"{stem}-{digest}"


def school_file(school: str) -> str:
    return f"school-{safe_name(school)}.html"


def region_file(region: str) -> str:
    return f"region-{safe_name(region)}.html"


def _estimate_text(cell: Cell, lang: str) -> str:
    return (
        f"{fmt_number(cell.mean, lang=lang, sign=True)} "
        f"({fmt_number(cell.lower, lang=lang, sign=True)} – "
        f"{fmt_number(cell.upper, lang=lang, sign=True)})"
    )


def _page(title: str, body: str, *, lang: str) -> str:
    return document(title, body, lang=lang, css=PAGE_CSS)


def _banner(diagnostics: dict, lang: str) -> str:
    if diagnostics.get("passed"):
        return ""
    text = labels.SCHOOL_TEXT[lang]["diagnostics_failed"]
    return (
        "<div class='banner failed' role='alert' id='diagnostics-failed'>"
        f"<strong>{esc(text)}</strong></div>"
    )


def adjusted_text(adjusted_for: tuple[str, ...], lang: str) -> str:
    """What the values are adjusted for, named from the model's covariates."""
    names = [labels.column(c.removesuffix("_c"), lang).lower() for c in adjusted_for]
    return labels.SCHOOL_TEXT[lang]["adjusted"].format(covariates=", ".join(names))


def school_page(
    fb: SchoolFeedback,
    *,
    options: OutputOptions,
    diagnostics: dict,
    own_trend: bool = True,
    adjusted_for: tuple[str, ...] = (),
) -> str:
    """One school's page; ``own_trend`` False (no school x wave term in the model) says
    that the per-wave values follow the region's trend."""
    lang, min_cell_n = options.lang, options.min_cell_n
    tx = labels.SCHOOL_TEXT[lang]
    region = labels.level(fb.region, lang)
    title = tx["title"].format(school=fb.school)
    body = [_banner(diagnostics, lang), f"<h1>{esc(title)}</h1>"]
    intro = tx["intro"].format(
        region=region, interval=options.interval_short(), whole=options.whole()
    )
    body.append(f"<p>{esc(intro)}</p>")
    if not own_trend:
        body.append(f"<p class='model-implied'>{esc(tx['trend_from_region'])}</p>")
    body.append(f"<p class='adjusted'>{esc(adjusted_text(adjusted_for, lang))}</p>")
    body.append(f"<p>{esc(tx['all_waves_note'])}</p>")
    body.append(f"<p>{esc(tx['shrinkage'])}</p>")
    shown = [c for c in fb.cells if c.status == "shown"]
    if not shown:
        body.append(f"<p class='sup'>{esc(tx['all_suppressed'].format(n=min_cell_n))}</p>")
    else:
        o = fb.overall
        body.append(
            "<p class='rank'><strong>"
            + esc(
                tx["rank"].format(
                    low=o.rank_low,
                    high=o.rank_high,
                    n=fb.n_ranked,
                    median=o.n,
                    prob=options.percent_text(),
                )
            )
            + f"</strong> {esc(tx['rank_note'])}</p>"
        )
        school_cells = (*fb.cells, fb.overall)
        svg = forest_svg(
            [
                (fb.school, COLOURS["school"], school_cells),
                (region, COLOURS["region"], fb.region_cells),
                (options.whole_short(), COLOURS["province"], fb.province_cells),
            ],
            options=options,
            title=f"{labels.INDEX_TEXT[lang]} — {fb.school}",
        )
        body.append(figure_markup(svg, caption=title, name=school_file(fb.school)))
    estimate = tx["estimate"].format(interval=options.interval_short())
    rank_head = tx["rank_head"].format(interval=options.interval_short())
    rows = []
    region_by_wave = {c.wave: c for c in fb.region_cells}
    province_by_wave = {c.wave: c for c in fb.province_cells}
    for cell in (*fb.cells, fb.overall):
        if cell.status == "shown":
            n_text = f"<span class='n'>{cell.n}</span>" if cell.wave != ALL else ""
            est = esc(_estimate_text(cell, lang))
            rank = (
                f"{cell.rank_low}–{cell.rank_high} / {cell.n_ranked}"
                if cell.rank_low is not None
                else ""
            )
        elif cell.status == "suppressed":
            n_text, est, rank = suppressed_mark(options), "", ""
        else:
            n_text, est, rank = f"<span class='sup'>{esc(tx['not_surveyed'])}</span>", "", ""
        reg, prov = region_by_wave.get(cell.wave), province_by_wave.get(cell.wave)
        rows.append(
            [
                esc(_wave_text(cell.wave, lang)),
                n_text,
                est,
                esc(rank),
                esc(_estimate_text(reg, lang)) if reg and reg.status == "shown" else "",
                esc(_estimate_text(prov, lang)) if prov and prov.status == "shown" else "",
            ]
        )
    body.append(
        table_html(
            [
                tx["wave"],
                tx["n"],
                f"{esc(fb.school)}: {esc(estimate)}",
                esc(rank_head),
                f"{esc(region)}",
                esc(options.whole_short()),
            ],
            rows,
            numeric={1, 2, 3, 4, 5},
            cls="school",
        )
    )
    body.append(f"<p class='small'>{esc(tx['disclosure'].format(n=min_cell_n))}</p>")
    body.append(
        f"<p><a href='{region_file(fb.region)}'>{esc(region)}</a> · "
        f"<a href='index.html'>{esc(tx['back'])}</a></p>"
    )
    return _page(title, "".join(body), lang=lang)


def region_page(
    region: str,
    members: list[SchoolFeedback],
    *,
    options: OutputOptions,
    diagnostics: dict,
    adjusted_for: tuple[str, ...] = (),
) -> str:
    lang, min_cell_n = options.lang, options.min_cell_n
    tx = labels.SCHOOL_TEXT[lang]
    name = labels.level(region, lang)
    title = tx["region_title"].format(region=name)
    body = [_banner(diagnostics, lang), f"<h1>{esc(title)}</h1>"]
    first = members[0]
    svg = forest_svg(
        [
            (name, COLOURS["region"], first.region_cells),
            (options.whole_short(), COLOURS["province"], first.province_cells),
        ],
        options=options,
        title=f"{labels.INDEX_TEXT[lang]} — {name}",
    )
    body.append(figure_markup(svg, caption=title, name=region_file(region)))
    body.append(f"<p class='adjusted'>{esc(adjusted_text(adjusted_for, lang))}</p>")
    body.append(f"<p>{esc(tx['shrinkage'])}</p><h2>{esc(tx['schools_in_region'])}</h2>")
    rows = []
    for fb in sorted(members, key=lambda f: f.school):
        o = fb.overall
        link = f"<a href='{school_file(fb.school)}'>{esc(fb.school)}</a>"
        if o.status == "shown":
            rows.append(
                [
                    link,
                    esc(_estimate_text(o, lang)),
                    esc(f"{o.rank_low}–{o.rank_high} / {fb.n_ranked}"),
                ]
            )
        else:
            rows.append([link, suppressed_mark(options), ""])
    body.append(
        table_html(
            [
                tx["school"],
                f"{tx['all_waves']}: "
                + esc(tx["estimate"].format(interval=options.interval_short())),
                esc(tx["rank_head"].format(interval=options.interval_short())),
            ],
            rows,
            numeric={1, 2},
            cls="region",
        )
    )
    body.append(f"<p class='small'>{esc(tx['disclosure'].format(n=min_cell_n))}</p>")
    body.append(f"<p><a href='index.html'>{esc(tx['back'])}</a></p>")
    return _page(title, "".join(body), lang=lang)


def index_page(
    feedback: list[SchoolFeedback],
    *,
    options: OutputOptions,
    diagnostics: dict,
    region_order: tuple[str, ...] = (),
    adjusted_for: tuple[str, ...] = (),
    overview: str = "",
) -> str:
    """The schools' index page: ``overview`` (markup: the schools overview), then every
    region with its schools."""
    lang = options.lang
    tx = labels.SCHOOL_TEXT[lang]
    regions = list(dict.fromkeys(fb.region for fb in feedback))
    order = [r for r in region_order if r in regions] + [
        r for r in regions if r not in region_order
    ]
    body = [_banner(diagnostics, lang), f"<h1>{esc(tx['index_title'])}</h1>"]
    body.append(f"<p class='adjusted'>{esc(adjusted_text(adjusted_for, lang))}</p>")
    body.append(overview)
    for r in order:
        body.append(
            f"<h2><a href='{region_file(r)}'>{esc(labels.level(r, lang))}</a></h2><p>"
            + " · ".join(
                f"<a href='{school_file(fb.school)}'>{esc(fb.school)}</a>"
                for fb in sorted(feedback, key=lambda f: f.school)
                if fb.region == r
            )
            + "</p>"
        )
    return _page(tx["index_title"], "".join(body), lang=lang)


def write_school_pages(
    run: runs.Run | Path | str,
    *,
    lang: str | None = None,
    min_cell_n: int | None = None,
) -> list[Path]:
    """Write ``schools/`` in a run folder: index.html, one page per region and per school.

    Returns the paths written (index first, then regions, then schools).
    """
    run = runs.as_run(run)
    path, record = run.path, run.record
    options = report_options(record, lang=lang, min_cell_n=min_cell_n)
    if "gcomp" not in run.tree.children:
        raise RunError(f"{path}: this run has no adjusted-mean weights (a --formula run)")
    if not (path / "schools.csv").is_file():
        raise RunError(f"{path}: no schools.csv in this run")
    schools = run.table(
        "schools.csv",
        dtype={"school_id": str, "wave": str, "region": str},
        keep_default_na=False,
        na_values={"n": [""]},
    )
    feedback = school_feedback(
        run.posterior,
        run.gcomp,
        schools,
        options=options,
        levels=record.levels,
        seed=record.seed,
        effects=run.effect_draws(),
    )
    # the covariates every value is standardised over (wave is the page's own axis)
    adjusted_for = tuple(c for c in record.spec.get("common", ()) if c != "wave" and ":" not in c)
    files = [school_file(fb.school) for fb in feedback]
    if len(set(files)) != len(files):  # a hash collision: never let one page overwrite another
        raise RunError(f"{path}: two schools map to the same page name; rename one school id")
    overview = write_schools_overview(run, schools, options=options, adjusted_for=adjusted_for)
    out = path / SCHOOLS_DIR
    out.mkdir(exist_ok=True)
    written = []
    index = out / "index.html"
    index.write_text(
        index_page(
            feedback,
            options=options,
            diagnostics=run.diagnostics,
            region_order=tuple(record.levels.get("region", ())),
            adjusted_for=adjusted_for,
            overview=overview,
        ),
        encoding="utf-8",
    )
    written.append(index)
    for region in dict.fromkeys(fb.region for fb in feedback):
        members = [fb for fb in feedback if fb.region == region]
        page = out / region_file(region)
        page.write_text(
            region_page(
                region,
                members,
                options=options,
                diagnostics=run.diagnostics,
                adjusted_for=adjusted_for,
            ),
            encoding="utf-8",
        )
        written.append(page)
    own_trend = SCHOOL_WAVE_TERM in run.tree["posterior"].data_vars
    for fb in feedback:
        page = out / school_file(fb.school)
        page.write_text(
            school_page(
                fb,
                options=options,
                diagnostics=run.diagnostics,
                own_trend=own_trend,
                adjusted_for=adjusted_for,
            ),
            encoding="utf-8",
        )
        written.append(page)
    return written


def write_schools_overview(
    run: runs.Run,
    schools: pd.DataFrame,
    *,
    options: OutputOptions,
    adjusted_for: tuple[str, ...],
) -> str:
    """Write ``figures/schools_overview.png`` (the caterpillar of all schools' adjusted
    values, rank intervals and tiers) and return the index page's markup for it ("" when
    fewer than two schools are shown)."""
    import io

    from omlbayes.plots.save import save_png
    from omlbayes.plots.schools import plot_schools_overview

    record = run.record
    table = schools_overview(
        run.posterior,
        run.gcomp,
        schools,
        options=options,
        levels=record.levels,
        seed=record.seed,
        effects=run.effect_draws(),
    )
    if len(table) < 2:
        return ""
    n_schools = schools["school_id"].astype(str).nunique()
    caption = overview_caption(
        table, n_schools=n_schools, options=options, adjusted_for=adjusted_for
    )
    fig = plot_schools_overview(table, options=options, caption=caption)
    buffer = io.BytesIO()
    save_png(fig, buffer)
    png = buffer.getvalue()
    figures = run.path / "figures"
    figures.mkdir(exist_ok=True)
    (figures / OVERVIEW_FIGURE).write_bytes(png)
    return overview_html(table, png, caption=caption, options=options)
