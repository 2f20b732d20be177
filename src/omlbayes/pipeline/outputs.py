"""Everything after the fit, from a :class:`~omlbayes.results.runs.Run`: the tables, the
forest figures, both reports and the school pages. A fit hands its run over in memory;
``--replot`` opens one from disk; either way each part of the run is read at most once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from omlbayes.labels import LANGS
from omlbayes.model import estimands
from omlbayes.plots.save import save_png
from omlbayes.report.page import write_report
from omlbayes.report.schools import write_school_pages
from omlbayes.results import disclosure, runs, summarise
from omlbayes.results.options import OutputOptions

MIN_PSIS_DRAWS = 100  # power-scaling (PSIS) needs a Pareto tail of at least 5 draws

Progress = Callable[[str], None]
log = logging.getLogger("omlbayes")


def write_outputs(
    run: runs.Run, *, progress: Progress = log.info, timings: dict[str, float] | None = None
) -> pd.DataFrame:
    """Tables, figures, both reports and the school pages of ``run``; the headline rows.

    ``timings`` (if given) receives the seconds of each of these stages.
    """
    timings = {} if timings is None else timings
    progress("summarising and drawing figures")
    t = time.perf_counter()
    headline = summarise_run(run)
    timings["summaries_figures_s"] = time.perf_counter() - t
    progress("writing report.html (both languages) and the school feedback pages")
    t = time.perf_counter()
    own = run.options.lang
    for lang in (own, *(other for other in LANGS if other != own)):
        write_report(run, lang=lang)
    timings["reports_s"] = time.perf_counter() - t
    t = time.perf_counter()
    write_school_pages(run, lang=own)
    timings["school_pages_s"] = time.perf_counter() - t
    return headline


def replot(path: Path | str, *, options: OutputOptions) -> runs.Run:
    """Redo the tables, figures, reports and school pages of a saved run with ``options``
    (the run record then says so), and audit the folder. No refit."""
    run = runs.open_run(path)
    if options != run.options:
        run = run.with_record(replace(run.record, options=options.to_dict()))
        runs.write_record(run.path, run.record)
    write_outputs(run)
    disclosure.audit(run.path, min_cell_n=run.options.min_cell_n)
    return run


def summarise_run(run: runs.Run) -> pd.DataFrame:
    """effects.csv, contrasts.csv, prior_sensitivity.csv and the forest figures of ``run``;
    returns the headline rows (the factsheet's overall comparisons)."""
    from omlbayes.plots.forest import write_forest_figures
    from omlbayes.plots.items import plot_item_distribution

    path, record, options = run.path, run.record, run.options
    gcomp = run.gcomp
    effects = run.effect_draws()
    effects_table = summarise.effects_table(effects, gcomp["n"].to_numpy(), options=options)
    effects_table.to_csv(path / "effects.csv", index=False)
    spec_waves = tuple(
        w for w in dict.fromkeys(gcomp["wave"].to_numpy()) if w != estimands.ALL_WAVES
    )
    present = set(spec_waves)
    wave_pairs = tuple(p for p in record.wave_pairs if set(p) <= present)
    skipped = [p for p in record.wave_pairs if not set(p) <= present]
    if skipped:
        log.info(
            "wave_contrasts naming waves the data lack are skipped: "
            + ", ".join(f"{w} vs {r}" for w, r in skipped)
        )
    contrast_defs = estimands.contrast_list(
        effects_table[["breakdown", "group"]], waves=spec_waves, wave_pairs=wave_pairs
    )
    suppressed = {
        (r.breakdown, r.group, r.wave) for r in effects_table.itertuples() if r.suppressed
    }
    contrast_values = estimands.contrast_draws(effects, contrast_defs)
    contrasts = summarise.contrasts_table(contrast_values, suppressed=suppressed, options=options)
    contrasts["model_implied"] = model_implied(contrasts, record.spec)
    contrasts.to_csv(path / "contrasts.csv", index=False)
    run.forget("effects.csv", "contrasts.csv")
    posterior = run.posterior
    n_draws = posterior.sizes["chain"] * posterior.sizes["draw"]
    if {"log_prior", "log_likelihood"} <= set(run.tree.children) and n_draws >= MIN_PSIS_DRAWS:
        from omlbayes.criticism import sensitivity

        headline = headline_contrasts(contrasts[~contrasts.suppressed], wave_pairs)
        sensitivity.prior_sensitivity(
            run.tree, contrast_values.isel(contrast=headline.index.to_numpy())
        ).to_csv(path / sensitivity.SENSITIVITY_CSV)
    figures = path / "figures"
    figures.mkdir(exist_ok=True)
    write_forest_figures(effects_table, figures, options=options, levels=record.levels)
    from omlbayes.pipeline.graded_run import write_latent_vs_index  # graded runs only

    write_latent_vs_index(run, contrast_defs, contrasts, suppressed=suppressed)
    items_csv = path / "items.csv"
    if items_csv.exists():
        import matplotlib.pyplot as plt

        fig = plot_item_distribution(pd.read_csv(items_csv), lang=options.lang)
        save_png(fig, figures / "fig1_items.png", bbox_inches="tight")
        plt.close(fig)
    return headline_contrasts(contrasts, wave_pairs)


def model_implied(contrasts: pd.DataFrame, spec: dict) -> np.ndarray:
    """Contrasts between waves within a cross breakdown 'a x b' that the model implies
    rather than estimates: no term (group or unpooled cells) holds wave, a and b together,
    so the cross's trend is a copy of the two-way terms'."""
    terms = [set(t) for t in spec.get("group", ())]
    terms += [set(str(c).split(":")) for c in spec.get("common", ()) if ":" in str(c)]
    supported = {
        b
        for b in dict.fromkeys(contrasts.breakdown)
        if " x " in b and any({"wave", *b.split(" x ")} <= t for t in terms)
    }
    cross = contrasts.breakdown.str.contains(" x ", regex=False)
    between_waves = contrasts.wave.astype(str) != contrasts.reference.astype(str)
    return (cross & between_waves & ~contrasts.breakdown.isin(supported)).to_numpy()


def headline_contrasts(contrasts: pd.DataFrame, wave_pairs) -> pd.DataFrame:
    """The overall factsheet comparisons, for the terminal summary."""
    overall = contrasts[(contrasts.breakdown == "overall") & (contrasts.kind != "between_groups")]
    keys = {(w, r) for w, r in wave_pairs}
    rows = overall[[(w, r) in keys for w, r in zip(overall.wave, overall.reference, strict=True)]]
    return rows.drop_duplicates(["wave", "reference"])
