"""Figures drawn from computed tables and saved posteriors; nothing here fits or samples."""

from omlbayes.plots.diagnostics import (
    plot_energy,
    plot_ppc_index,
    plot_prior_predictive,
    plot_rank_hyper,
)
from omlbayes.plots.forest import FigureSpec, figure_specs, plot_forest, write_forest_figures
from omlbayes.plots.items import plot_item_distribution

__all__ = [
    "FigureSpec",
    "figure_specs",
    "plot_energy",
    "plot_forest",
    "plot_item_distribution",
    "plot_ppc_index",
    "plot_prior_predictive",
    "plot_rank_hyper",
    "write_forest_figures",
]
