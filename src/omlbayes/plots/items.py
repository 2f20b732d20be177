"""Figure 1: the answers to the six statements as a diverging stacked bar chart."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from omlbayes import labels
from omlbayes.constants import ITEM_MAX, ITEM_MIN
from omlbayes.errors import SpecError

# Diverging palette (ColorBrewer RdBu, 5 classes) with a grey neutral middle.
ANSWER_COLOURS = {1: "#ca0020", 2: "#f4a582", 3: "#d9d9d9", 4: "#92c5de", 5: "#0571b0"}
LABEL_MIN_PERCENT = 4.0  # segments narrower than this get no number inside


def plot_item_distribution(table: pd.DataFrame, *, lang: str) -> Figure:
    """Diverging stacked bars of the answers per item, centred on the neutral answer.

    Parameters
    ----------
    table : pandas.DataFrame
        ``descriptives.item_distribution`` output: ``item`` and ``pct_1 .. pct_5`` per row.
    lang : {"nl", "en"}
        Language of item wording, answer labels and axis texts.

    Returns
    -------
    matplotlib.figure.Figure
        Items top to bottom in table order; disagree to the left of zero, agree to the
        right, the neutral share split evenly over both sides.
    """
    labels.check_lang(lang)
    answers = list(range(ITEM_MIN, ITEM_MAX + 1))
    pct_cols = [f"pct_{a}" for a in answers]
    missing = [c for c in ("item", *pct_cols) if c not in table.columns]
    if missing:
        raise SpecError(
            f"plot_item_distribution: table lacks column(s) {', '.join(missing)}; "
            "pass the output of descriptives.item_distribution"
        )
    neutral = (ITEM_MIN + ITEM_MAX) // 2
    shares = table[pct_cols].to_numpy(dtype=float)
    n_items = len(table)

    fig = Figure(figsize=(9.0, 1.0 + 0.62 * n_items), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(n_items)
    # Left edge of each row: everything below neutral plus half the neutral share.
    left = -(shares[:, : neutral - ITEM_MIN].sum(axis=1) + shares[:, neutral - ITEM_MIN] / 2)
    for j, answer in enumerate(answers):
        width = shares[:, j]
        bars = ax.barh(
            y,
            width,
            left=left,
            height=0.7,
            color=ANSWER_COLOURS.get(answer, "#999999"),
            edgecolor="white",
            linewidth=0.6,
            label=labels.ANSWER_TEXT[lang][answer],
        )
        dark = answer in (answers[0], answers[-1])
        texts = [f"{w:.0f}" if w >= LABEL_MIN_PERCENT else "" for w in width]
        ax.bar_label(
            bars,
            labels=texts,
            label_type="center",
            fontsize=8,
            color="white" if dark else "#222222",
        )
        left = left + width

    item_text = labels.ITEM_TEXT[lang]
    ax.set_yticks(
        y,
        [textwrap.fill(item_text.get(str(item), str(item)), 34) for item in table["item"]],
        fontsize=9,
    )
    ax.invert_yaxis()  # first item on top, as in the questionnaire
    ax.axvline(0, color="#333333", linewidth=0.8, zorder=0)  # hidden behind the neutral bar
    extent = float(np.nanmax(np.abs(np.r_[left, left - shares.sum(axis=1)])))
    limit = 1.03 * extent
    step = 20 if extent > 40 else 10
    ticks = np.arange(-(extent // step) * step, extent + 1e-9, step)
    ax.set_xlim(-limit, limit)
    ax.set_xticks(ticks, [f"{abs(t):.0f}" for t in ticks])
    ax.set_xlabel(labels.PERCENT_TEXT[lang])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="y", length=0)
    fig.suptitle(labels.ITEM_FIGURE_TITLE[lang], x=0.01, ha="left", fontsize=11)
    fig.legend(
        *ax.get_legend_handles_labels(),
        loc="outside lower center",
        ncols=len(answers),
        frameon=False,
        fontsize=8.5,
        handlelength=1.2,
        columnspacing=1.2,
    )
    return fig
