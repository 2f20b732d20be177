"""Figures of the graded-response run: item answer checks and latent vs index contrasts.

Inputs are the run folder's tables (``item_ppc.csv``, ``latent_vs_index.csv``); nothing
is computed here beyond layout.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from omlbayes import labels
from omlbayes.plots.forest import PALETTE
from omlbayes.results.options import OutputOptions

TEXT = {
    "en": {
        "ppc_title": "Answers per item and wave: observed (dots) and replicated by the graded "
        "model (line: {interval})",
        "share": "share of answers",
        "answer": "answer {k}",
        "lvi_left": "Adjusted mean per wave (overall)",
        "lvi_right": "All wave contrasts (each breakdown and group)",
        "latent": "latent trait (graded model)",
        "index": "standardized index",
        "sd_units": "SD units",
        "x_index": "index model: contrast (SD of the index)",
        "y_latent": "graded model: contrast (SD of the latent trait)",
        "bars": "lines: {interval}",
    },
    "nl": {
        "ppc_title": "Antwoorden per item en meting: waargenomen (stippen) en nagebootst door het "
        "graded-responsmodel (lijn: {interval})",
        "share": "aandeel antwoorden",
        "answer": "antwoord {k}",
        "lvi_left": "Gecorrigeerd gemiddelde per meting (totaal)",
        "lvi_right": "Alle vergelijkingen tussen metingen (elke uitsplitsing en groep)",
        "latent": "latente eigenschap (graded-responsmodel)",
        "index": "gestandaardiseerde index",
        "sd_units": "SD-eenheden",
        "x_index": "indexmodel: verschil (SD van de index)",
        "y_latent": "graded-responsmodel: verschil (SD van de latente eigenschap)",
        "bars": "lijnen: {interval}",
    },
}


def _wave_label(wave: str, lang: str) -> str:
    return labels.level(wave, lang)


def plot_item_ppc(table: pd.DataFrame, *, options: OutputOptions) -> Figure:
    """One panel per item: the share of each answer per wave, observed against replicated
    (the table's bounds: the run's interval, named in the title)."""
    lang = options.lang
    t = TEXT[lang]
    rows = table[table["grouping"] == "wave"]
    items = list(dict.fromkeys(rows["item"]))
    waves = list(dict.fromkeys(rows["group"]))
    answers = sorted(rows["answer"].unique())
    n_cols = 3
    n_rows = int(np.ceil(len(items) / n_cols))
    fig = Figure(figsize=(4.2 * n_cols, 3.2 * n_rows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(n_rows, n_cols, sharey=True, squeeze=False)).ravel()
    x = np.arange(len(waves))
    width = 0.8 / len(answers)
    for ax, item in zip(axes, items, strict=False):
        sub = rows[rows["item"] == item]
        for k, answer in enumerate(answers):
            cells = sub[sub["answer"] == answer].set_index("group").reindex(waves)
            pos = x - 0.4 + width * (k + 0.5)
            colour = PALETTE[k % len(PALETTE)]
            ax.vlines(pos, cells["lower"], cells["upper"], color=colour, lw=3, alpha=0.45)
            ax.plot(
                pos,
                cells["observed"],
                "o",
                ms=3.5,
                color=colour,
                label=t["answer"].format(k=answer),
            )
        title = labels.ITEM_TEXT.get(lang, {}).get(item, item)
        ax.set_title("\n".join(textwrap.wrap(title, 52)), fontsize=8.5)  # whole, on 1-2 lines
        ax.set_xticks(
            x, [_wave_label(w, lang) for w in waves], rotation=35, ha="right", fontsize=7.5
        )
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(items) :]:
        ax.set_visible(False)
    for ax in axes[::n_cols]:
        ax.set_ylabel(t["share"])
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=len(answers), fontsize=8)
    fig.suptitle(t["ppc_title"].format(interval=options.interval_name()), fontsize=10)
    return fig


def plot_latent_vs_index(table: pd.DataFrame, *, options: OutputOptions) -> Figure:
    """Left: overall wave means on both scales; right: every wave contrast, latent vs index
    (bars: the table's bounds, the run's interval, named in the figure)."""
    lang = options.lang
    t = TEXT[lang]
    fig = Figure(figsize=(11.5, 4.6), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=(1.1, 1.0))
    first = table[(table["breakdown"] == "overall") & (table["kind"] == "vs_first")]
    waves = [first["reference"].iloc[0], *first["wave"]] if len(first) else []
    x = np.arange(len(waves))
    for offset, scale, colour in ((-0.12, "latent", PALETTE[0]), (0.12, "index", PALETTE[1])):
        mean = np.r_[0.0, first[f"{scale}_mean"].to_numpy()] if len(first) else np.array([])
        lower = np.r_[0.0, first[f"{scale}_lower"].to_numpy()] if len(first) else np.array([])
        upper = np.r_[0.0, first[f"{scale}_upper"].to_numpy()] if len(first) else np.array([])
        left.vlines(x + offset, lower, upper, color=colour, lw=2)
        left.plot(x + offset, mean, "D", color=colour, ms=5, label=t[scale])
    left.axhline(0, color="grey", lw=0.8)
    left.set_xticks(x, [_wave_label(w, lang) for w in waves], rotation=30, ha="right")
    left.set_ylabel(f"{t['sd_units']} (vs {_wave_label(waves[0], lang) if waves else ''})")
    left.set_title(t["lvi_left"], fontsize=10)
    left.legend(fontsize=8, loc="best")
    pairs = table[table["kind"].isin(["vs_previous", "spec_pair"]) & ~table["suppressed"]]
    pairs = pairs.dropna(subset=["latent_mean", "index_mean"])
    right.errorbar(
        pairs["index_mean"],
        pairs["latent_mean"],
        yerr=[
            pairs["latent_mean"] - pairs["latent_lower"],
            pairs["latent_upper"] - pairs["latent_mean"],
        ],
        fmt="o",
        ms=2.5,
        color=PALETTE[0],
        ecolor="#9bbbd9",
        elinewidth=0.4,
        alpha=0.6,
    )
    if len(pairs):
        lo = float(min(pairs["index_mean"].min(), pairs["latent_lower"].min()))
        hi = float(max(pairs["index_mean"].max(), pairs["latent_upper"].max()))
        right.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
        slope = float(np.polyfit(pairs["index_mean"], pairs["latent_mean"], 1)[0])
        right.text(0.03, 0.95, f"slope {slope:.2f}", transform=right.transAxes, va="top")
    right.set_xlabel(t["x_index"])
    right.set_ylabel(t["y_latent"])
    right.set_title(t["lvi_right"], fontsize=10)
    right.grid(alpha=0.3)
    fig.suptitle(t["bars"].format(interval=options.interval_name()), fontsize=9)
    return fig
