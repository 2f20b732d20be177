"""The schools overview: a caterpillar of every school's composition-adjusted index with its
interval, its rank interval beside it, and bands for the tiers of schools that cannot be
told apart. Draws only: the table (``report.schools.schools_overview``) holds the numbers.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from omlbayes import labels
from omlbayes.errors import SpecError
from omlbayes.results.options import OutputOptions

OVERVIEW_COLUMNS = (
    "school",
    "mean",
    "lower",
    "upper",
    "rank_low",
    "rank_median",
    "rank_high",
    "tier",
)
COLOUR = "#1f3b73"
BAND = "#e8ecf4"
ROW_INCHES = 0.17
MAX_LABELLED = 150  # more schools than this: no school names on the axis (unreadable)


def plot_schools_overview(
    table: pd.DataFrame, *, options: OutputOptions, caption: str, title: str | None = None
) -> Figure:
    """Two panels sharing the schools (highest mean at the top): the value with its interval,
    and the rank interval with the most likely rank; tiers as alternating bands.

    ``table`` has :data:`OVERVIEW_COLUMNS`, ordered by mean (highest first); ``caption`` is
    drawn under the panels as given.
    """
    missing = [c for c in OVERVIEW_COLUMNS if c not in table.columns]
    if missing or table.empty:
        raise SpecError(f"schools overview: no schools, or columns missing: {missing}")
    tx = labels.SCHOOL_TEXT[options.lang]
    n = len(table)
    y = np.arange(n)
    width = 8.5
    caption_lines = textwrap.wrap(caption, width=int(width * 15.5))
    caption_inches = 0.15 * len(caption_lines) + 0.25
    panels_inches = max(2.0, ROW_INCHES * n) + 0.9
    fig = Figure(figsize=(width, panels_inches + caption_inches + 0.45), layout=None)
    height = fig.get_figheight()
    bottom = (caption_inches + 0.45) / height
    top = 1 - 0.45 / height
    left = 0.2 if n <= MAX_LABELLED else 0.06
    value_ax = fig.add_axes((left, bottom, 0.5 - left + 0.08, top - bottom))
    rank_ax = fig.add_axes((0.62, bottom, 0.3, top - bottom), sharey=value_ax)

    tiers = table["tier"].to_numpy()
    starts = np.flatnonzero(np.r_[True, tiers[1:] != tiers[:-1]])
    ends = np.r_[starts[1:], n]
    for k, (a, b) in enumerate(zip(starts, ends, strict=True)):
        for ax in (value_ax, rank_ax):
            if k % 2 == 0:
                ax.axhspan(a - 0.5, b - 0.5, color=BAND, zorder=0, linewidth=0)
        rank_ax.text(
            1.02, (a + b - 1) / 2, tx["overview_tier"].format(tier=int(tiers[a])),
            transform=rank_ax.get_yaxis_transform(), va="center", ha="left", fontsize=7,
        )  # fmt: skip

    value_ax.hlines(y, table["lower"], table["upper"], color=COLOUR, linewidth=1.2)
    value_ax.plot(table["mean"], y, "D", color=COLOUR, markersize=3.2)
    value_ax.axvline(0, color="#7f7f7f", linewidth=0.8, linestyle="--", zorder=1)
    value_ax.set_xlabel(tx["xlabel"], fontsize=8)
    value_ax.set_title(
        tx["overview_value_head"].format(interval=options.interval_short()), fontsize=9
    )

    rank_ax.hlines(y, table["rank_low"], table["rank_high"], color=COLOUR, linewidth=1.2)
    rank_ax.plot(table["rank_median"], y, "o", color=COLOUR, markersize=3.2, clip_on=False)
    rank_ax.set_xlim(0.5, n + 0.5)
    rank_ax.set_xlabel(tx["overview_rank_axis"], fontsize=8)
    rank_ax.set_title(
        tx["overview_rank_head"].format(interval=options.interval_short()), fontsize=9
    )
    rank_ax.tick_params(axis="y", left=False, labelleft=False)

    value_ax.set_ylim(n - 0.5, -0.5)  # the highest mean at the top
    if n <= MAX_LABELLED:
        value_ax.set_yticks(y, [str(s) for s in table["school"]], fontsize=7 if n <= 60 else 5)
    else:
        value_ax.set_yticks([])
    for ax in (value_ax, rank_ax):
        ax.tick_params(axis="x", labelsize=7)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    fig.suptitle(title or tx["overview_title"], fontsize=10, x=0.02, ha="left", y=1 - 0.1 / height)
    fig.text(0.02, 0.15 / height, "\n".join(caption_lines), fontsize=7.5, va="bottom", ha="left")
    return fig
