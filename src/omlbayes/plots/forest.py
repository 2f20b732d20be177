"""Factsheet-style forest plots of the adjusted index per wave and subgroup (Figures 2-6).

Input is the effects table of the summarise stage (``effects.csv``): one row per
breakdown x group x wave with the posterior mean and interval of the covariate-adjusted
index as deviation from the pooled mean, in SD units. Nothing is computed here beyond
layout. Groups and waves are ordered by the run's declared levels (run record); the caption
names the run's interval and disclosure threshold (``OutputOptions``).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.transforms as mtransforms
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from omlbayes import labels
from omlbayes.constants import COVID_WAVE_PREFIX
from omlbayes.data import schema
from omlbayes.errors import SpecError
from omlbayes.plots.save import DPI, save_png
from omlbayes.results.options import OutputOptions

EFFECT_COLUMNS = ("breakdown", "group", "wave", "mean", "lower", "upper", "n")
BREAKDOWN_COLUMNS = tuple(c for c in schema.CATEGORICAL_COLUMNS if c != "wave")
OVERALL = "overall"
ALL = "all"

# Figure numbers of the factsheet; crosses ("figure not shown") get fig_cross_<a>_x_<b>.png.
FACTSHEET_FILES = {
    OVERALL: "fig2_wave.png",
    "school_type": "fig3_school_type.png",
    "gender": "fig4_gender.png",
    "parent_edu": "fig5_parent_edu.png",
    "region": "fig6_region.png",
}

# Colour-blind-safe qualitative palette (Okabe-Ito, without yellow), one colour per level.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#E69F00", "#000000")
SINGLE_COLOUR = "#1f3b73"
COVID_SHADE = "#fbe3c8"
MAX_PANEL_COLUMNS = 5
Levels = Mapping[str, Sequence[str]]


@dataclass(frozen=True)
class FigureSpec:
    """One forest figure: which breakdown it shows and the file it is saved to."""

    breakdown: str
    filename: str


def parse_breakdown(name: str, *, columns: Sequence[str] = BREAKDOWN_COLUMNS) -> tuple[str, ...]:
    """``"overall"`` -> ``()``; ``"gender x school_type"`` -> ``("gender", "school_type")``.

    Raises
    ------
    SpecError
        For an empty name, an unknown column, a repeated column or more than two factors.
    """
    if name == OVERALL:
        return ()
    parts = tuple(part.strip() for part in str(name).split(" x "))
    unknown = [p for p in parts if p not in columns]
    if unknown or len(parts) > 2 or len(set(parts)) != len(parts):
        raise SpecError(
            f"unknown breakdown {name!r}: use 'overall', one of {', '.join(columns)}, "
            "or two of them joined by ' x ' (e.g. 'gender x school_type')"
        )
    return parts


def figure_specs(
    breakdowns: Iterable[str], *, columns: Sequence[str] = BREAKDOWN_COLUMNS
) -> list[FigureSpec]:
    """File names of the forest figures for ``breakdowns``, in factsheet order.

    ``overall`` -> ``fig2_wave.png``; school type, gender, parental education and region
    -> ``fig3..fig6``; a cross ``a x b`` -> ``fig_cross_a_x_b.png``; any other single
    column -> ``fig_<column>.png``. Duplicates are listed once.
    """
    specs: dict[str, FigureSpec] = {}
    for name in breakdowns:
        parts = parse_breakdown(name, columns=columns)
        if name in FACTSHEET_FILES:
            filename = FACTSHEET_FILES[name]
        elif len(parts) == 2:
            filename = f"fig_cross_{parts[0]}_x_{parts[1]}.png"
        else:
            filename = f"fig_{parts[0]}.png"
        specs.setdefault(name, FigureSpec(name, filename))
    factsheet_rank = {name: k for k, name in enumerate(FACTSHEET_FILES)}
    order = list(specs)
    return sorted(
        specs.values(),
        key=lambda s: (
            factsheet_rank.get(s.breakdown, len(factsheet_rank)),
            order.index(s.breakdown),
        ),
    )


def _ordered(present: Iterable[str], declared: Sequence[str]) -> list[str]:
    """Declared levels that are present, then any others in order of appearance."""
    present = list(dict.fromkeys(present))
    return [v for v in declared if v in present] + [v for v in present if v not in declared]


def _wave_order(
    rows: pd.DataFrame, waves: Sequence[str] | None, breakdown: str, levels: Levels
) -> list[str]:
    present = list(dict.fromkeys(rows["wave"]))
    if waves is None:
        order = _ordered([w for w in present if w != ALL], levels.get("wave", ()))
        return order or [ALL]
    absent = [w for w in waves if w not in present]
    if absent:
        raise SpecError(
            f"plot_forest: breakdown {breakdown!r} has no rows for wave(s) "
            f"{', '.join(absent)}; present: {', '.join(present)}"
        )
    return list(waves)


def _wave_text(wave: str, lang: str) -> str:
    return labels.WAVE_ALL_TEXT[lang] if wave == ALL else labels.level(wave, lang)


def _covid_span(waves: Sequence[str]) -> tuple[int, int] | None:
    """First and last position of the contiguous run of 2020 waves, if any."""
    positions = [k for k, w in enumerate(waves) if str(w).startswith(COVID_WAVE_PREFIX)]
    if not positions:
        return None
    return positions[0], positions[-1]


def _check_effects(effects: pd.DataFrame) -> None:
    missing = [c for c in EFFECT_COLUMNS if c not in effects.columns]
    if missing:
        raise SpecError(
            f"plot_forest: effects table lacks column(s) {', '.join(missing)}; "
            f"expected {', '.join(EFFECT_COLUMNS)} (effects.csv of a run)"
        )


@dataclass(frozen=True)
class _Layout:
    """Which effects-table field goes to panels, y rows and colour series."""

    panels: list[str | None]
    panel_field: str | None
    rows: list[str]
    row_field: str
    series: list[str | None]
    series_field: str | None
    colour_field: str | None  # levels that get one colour each


def _layout(
    rows: pd.DataFrame, parts: tuple[str, ...], waves: list[str], levels: Levels
) -> _Layout:
    per_wave = waves != [ALL]
    if not parts:
        return _Layout([None], None, waves, "wave", [None], None, None)
    if len(parts) == 1:
        groups = _ordered(rows["group"], levels.get(parts[0], ()))
        if per_wave:
            return _Layout(groups, "group", waves, "wave", [None], None, "group")
        return _Layout([None], None, groups, "group", [None], None, "group")
    first = _ordered(rows["_a"], levels.get(parts[0], ()))
    second = _ordered(rows["_b"], levels.get(parts[1], ()))
    if per_wave:
        return _Layout(second, "_b", waves, "wave", first, "_a", "_a")
    return _Layout(second, "_b", first, "_a", [None], None, "_a")


def _draw_panel(
    ax: Axes,
    cells: pd.DataFrame,
    layout: _Layout,
    colours: dict[str, str],
    *,
    options: OutputOptions,
    show_n: bool,
) -> None:
    lang = options.lang
    n_series = len(layout.series)
    step = 0.8 / n_series if n_series > 1 else 0.0
    ax.axvline(0.0, color="#555555", linewidth=0.9, zorder=1)
    for k, series in enumerate(layout.series):
        offset = (k - (n_series - 1) / 2) * step
        # one interval collection and one marker line per colour instead of an artist per
        # row: building an artist per row was a large part of building a figure
        drawn: dict[str, list[tuple[float, float, float, float]]] = {}
        for y, row_value in enumerate(layout.rows):
            mask = cells[layout.row_field] == row_value
            if layout.series_field is not None:
                mask &= cells[layout.series_field] == series
            cell = cells[mask]
            if cell.empty:
                continue
            rec = cell.iloc[0]
            colour = (
                colours.get(str(rec[layout.colour_field]), SINGLE_COLOUR)
                if (layout.colour_field)
                else SINGLE_COLOUR
            )
            yy = y + offset
            if not np.isfinite(rec["mean"]):
                ax.text(
                    0.0,
                    yy,
                    options.suppressed_text(),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="#777777",
                    style="italic",
                )
                continue
            drawn.setdefault(colour, []).append((yy, rec["lower"], rec["upper"], rec["mean"]))
            if show_n and pd.notna(rec["n"]):
                ax.text(
                    1.01,
                    yy,
                    f"n = {int(rec['n']):,}".replace(",", "." if lang == "nl" else ","),
                    transform=mtransforms.blended_transform_factory(ax.transAxes, ax.transData),
                    ha="left",
                    va="center",
                    fontsize=7,
                    color="#666666",
                )
        for colour, points in drawn.items():
            yy, lower, upper, mean = (np.array(v, dtype=float) for v in zip(*points, strict=True))
            ax.hlines(yy, lower, upper, color=colour, linewidth=1.6, zorder=2)
            ax.plot(
                mean,
                yy,
                linestyle="none",
                marker="D",
                markersize=6 if n_series == 1 else 4.5,
                color=colour,
                markeredgecolor="white",
                markeredgewidth=0.6,
                zorder=3,
            )
    if n_series > 1:  # thin rules keep each wave's group of intervals together
        for y in range(1, len(layout.rows)):
            ax.axhline(y - 0.5, color="#dddddd", linewidth=0.6, zorder=0)
    if layout.row_field == "wave" and (span := _covid_span(layout.rows)) is not None:
        ax.axhspan(span[0] - 0.5, span[1] + 0.5, color=COVID_SHADE, zorder=0, linewidth=0)
    ax.grid(axis="x", color="#e5e5e5", linewidth=0.6, zorder=0)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="y", length=0)


def plot_forest(
    effects: pd.DataFrame,
    *,
    breakdown: str,
    options: OutputOptions | None = None,
    lang: str | None = None,
    levels: Levels | None = None,
    waves: Sequence[str] | None = None,
    title: str | None = None,
    caption: str | None = None,
) -> Figure:
    """Forest plot of one breakdown: diamond = posterior mean, line = the run's interval.

    Parameters
    ----------
    effects : pandas.DataFrame
        Columns ``breakdown, group, wave, mean, lower, upper, n`` (effects.csv).
    breakdown : str
        ``"overall"``, a column (``"gender"``) or a cross (``"gender x school_type"``).
    options : OutputOptions, optional
        The run's interval, threshold and language (default: the defaults, in ``lang``).
    lang : {"nl", "en"}, optional
        Language of every text in the figure (overrides ``options.lang``).
    levels : mapping, optional
        The run's declared levels per column (run record); groups and waves follow them,
        then any others in order of appearance.
    waves : sequence of str, optional
        Waves to show, top to bottom; default: those present in the table in declared
        order, or ``("all",)`` when the breakdown has only pooled rows.
    title, caption : str, optional
        Override the default title and the caption explaining the diamonds.

    Returns
    -------
    matplotlib.figure.Figure
        Per wave: one panel per group (single breakdown) or per level of the second factor
        with the first factor in colour (cross); waves top to bottom with the 2020 waves
        shaded. Pooled over waves (``"all"``): one row per group / first-factor level.
    """
    options = options or OutputOptions()
    if lang is not None:
        options = options.with_lang(lang)
    lang = options.lang
    levels = levels or {}
    _check_effects(effects)
    parts = parse_breakdown(breakdown)
    rows = effects[effects["breakdown"] == breakdown].copy()
    if rows.empty:
        present = ", ".join(dict.fromkeys(effects["breakdown"].astype(str)))
        raise SpecError(
            f"plot_forest: effects table has no rows for breakdown {breakdown!r}; "
            f"present: {present or 'none'}"
        )
    rows["wave"] = rows["wave"].astype(str)
    rows["group"] = rows["group"].astype(str)
    if len(parts) == 2:
        split = rows["group"].str.split(":", n=1, expand=True)
        if split.shape[1] != 2 or split.isna().any().any():
            raise SpecError(
                f"plot_forest: breakdown {breakdown!r} needs groups 'a:b' (e.g. 'boy:vwo'); "
                f"got {rows['group'].iloc[0]!r}"
            )
        rows["_a"], rows["_b"] = split[0], split[1]
    wave_order = _wave_order(rows, waves, breakdown, levels)
    rows = rows[rows["wave"].isin(wave_order)]
    layout = _layout(rows, parts, wave_order, levels)

    colour_levels = (
        _ordered(rows[layout.colour_field], levels.get(parts[0], ()))
        if layout.colour_field is not None
        else []
    )
    colours = {lvl: PALETTE[k % len(PALETTE)] for k, lvl in enumerate(colour_levels)}

    n_panels = len(layout.panels)
    ncols = min(n_panels, MAX_PANEL_COLUMNS)
    nrows = math.ceil(n_panels / ncols)
    n_series = len(layout.series)
    row_height = 0.3 if n_series == 1 else 0.13 * n_series + 0.14
    panel_height = row_height * len(layout.rows) + 0.45
    single_panel = n_panels == 1
    per_wave = wave_order != [ALL]
    panel_width = 5.0 if single_panel else (2.3 if per_wave else 1.9)
    width = min(13.0, 1.9 + ncols * panel_width + 0.6)
    caption_text = (
        caption
        if caption is not None
        else labels.FOREST_CAPTION[lang].format(
            interval=options.interval_short(),
            suppressed=options.suppressed_text(),
            n=options.min_cell_n,
        )
    )
    caption_lines = textwrap.wrap(caption_text, width=int(width * 16))
    legend_height = 0.5 if n_series > 1 else 0.0
    caption_height = 0.16 * len(caption_lines) + 0.12 + legend_height
    height = nrows * panel_height + 1.3 + caption_height + 0.3 * (len(layout.series) > 1)

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    # The caption gets its own subfigure so the layout engine never lets it overlap the
    # x label; its height is fixed in inches by the number of wrapped lines.
    body, foot = fig.subfigures(2, 1, height_ratios=(height - caption_height, caption_height))
    axes = body.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)

    finite = rows[["lower", "upper"]].to_numpy(dtype=float)
    extent = float(np.nanmax(np.abs(finite))) if np.isfinite(finite).any() else 0.1
    limit = max(0.1, 1.12 * extent)

    for k, panel in enumerate(layout.panels):
        ax = axes[k // ncols][k % ncols]
        cells = rows if layout.panel_field is None else rows[rows[layout.panel_field] == panel]
        _draw_panel(ax, cells, layout, colours, options=options, show_n=single_panel)
        if panel is not None:
            colour = colours.get(panel, "#222222") if layout.panel_field == "group" else "#222222"
            ax.set_title(labels.level(panel, lang), fontsize=10, color=colour)
    for k in range(n_panels, nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)

    first = axes[0][0]
    first.set_xlim(-limit, limit)
    first.set_ylim(len(layout.rows) - 0.5, -0.5)  # first row on top
    if layout.row_field == "wave":
        row_text = [_wave_text(w, lang) for w in layout.rows]
    else:
        row_text = [labels.level(v, lang) for v in layout.rows]
    first.set_yticks(range(len(layout.rows)), row_text, fontsize=9)
    for ax in axes.flat:
        ax.tick_params(axis="x", labelsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5 if single_panel else 4, symmetric=True))

    if layout.row_field == "wave" and (span := _covid_span(layout.rows)) is not None:
        last = axes[0][min(n_panels, ncols) - 1]
        last.text(
            1.03 if not single_panel else 1.13,
            (span[0] + span[1]) / 2,
            labels.COVID_BAND_TEXT[lang],
            transform=mtransforms.blended_transform_factory(last.transAxes, last.transData),
            rotation=270,
            ha="left",
            va="center",
            fontsize=8,
            color="#9a5b13",
        )
    if layout.series_field is not None:
        handles = [
            first.plot([], [], marker="D", linestyle="-", color=colours[s], markersize=5)[0]
            for s in layout.series
        ]
        # In the foot, above the caption: outside the panels, clear of title and x label.
        foot.legend(
            handles,
            [labels.level(s, lang) for s in layout.series],
            loc="upper center",
            ncols=min(len(handles), 5),
            frameon=False,
            fontsize=8.5,
            title=labels.column(parts[0], lang),
            title_fontsize=8.5,
        )

    if single_panel:
        first.set_xlabel(labels.SD_UNITS_TEXT[lang], fontsize=9)
    else:
        body.supxlabel(labels.SD_UNITS_TEXT[lang], fontsize=9)
    if title is None:
        what = labels.column(breakdown if parts else "wave", lang)
        if parts and per_wave:
            what = f"{labels.column('wave', lang)} × {what}"
        elif not per_wave:
            what = f"{what}, {labels.WAVE_ALL_TEXT[lang]}"
        title = f"{labels.INDEX_TEXT[lang]} — {what}"
    body.suptitle(title, x=0.01, ha="left", fontsize=11)
    foot.text(
        0.01,
        0.5 * (1 - legend_height / caption_height),
        "\n".join(caption_lines),
        ha="left",
        va="center",
        fontsize=7.5,
        color="#444444",
    )
    return fig


def write_forest_figures(
    effects: pd.DataFrame,
    out_dir: Path | str,
    *,
    options: OutputOptions | None = None,
    lang: str | None = None,
    levels: Levels | None = None,
) -> list[Path]:
    """Save one forest figure per breakdown in ``effects`` to ``out_dir``; return the paths.

    File names follow :func:`figure_specs` (``fig2_wave.png`` ... ``fig_cross_a_x_b.png``);
    each PNG carries its texts as metadata (``plots.save``).
    """
    options = options or OutputOptions()
    if lang is not None:
        options = options.with_lang(lang)
    _check_effects(effects)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for spec, fig in forest_figures(effects, options=options, levels=levels):
        path = out / spec.filename
        save_png(fig, path)
        paths.append(path)
    return paths


def forest_figures(
    effects: pd.DataFrame, *, options: OutputOptions, levels: Levels | None = None
) -> Iterator[tuple[FigureSpec, Figure]]:
    """Each breakdown's forest figure in ``effects``, in :func:`figure_specs`' order (the
    run's files and the report's redrawn figures both come from here)."""
    for spec in figure_specs(dict.fromkeys(effects["breakdown"].astype(str))):
        yield spec, plot_forest(effects, breakdown=spec.breakdown, options=options, levels=levels)
