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
import xarray as xr

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
    effects_table = summarise.effects_table(
        effects,
        gcomp["n"].to_numpy(),
        options=options,
        empty_share=gcomp["empty_share"].to_numpy() if "empty_share" in gcomp else None,
    )
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
    contrasts["extrapolated"] = summarise.touches_cells(
        contrasts,
        {(r.breakdown, r.group, r.wave) for r in effects_table.itertuples() if r.extrapolated},
    )
    cross_part = three_way_part(run, contrast_defs)
    contrasts["model_implied"] = model_implied(contrasts, contrast_values, cross_part)
    contrasts.to_csv(path / "contrasts.csv", index=False)
    run.forget("effects.csv", "contrasts.csv")
    posterior = run.posterior
    n_draws = posterior.sizes["chain"] * posterior.sizes["draw"]
    from omlbayes.criticism import sensitivity

    has_totals = sensitivity.likelihood_totals(run.tree) is not None
    if "log_prior" in run.tree.children and has_totals and n_draws >= MIN_PSIS_DRAWS:
        headline = headline_contrasts(contrasts[~contrasts.suppressed], wave_pairs)
        sensitivity.prior_sensitivity(
            run.tree, contrast_values.isel(contrast=headline.index.to_numpy())
        ).to_csv(path / sensitivity.SENSITIVITY_CSV)
    figures = path / "figures"
    figures.mkdir(exist_ok=True)
    write_forest_figures(effects_table, figures, options=options, levels=record.levels)
    if "index_posterior" in run.tree.children:  # a graded run: latent next to index
        from omlbayes.pipeline.graded_run import write_latent_vs_index

        write_latent_vs_index(run, contrast_defs, contrasts, suppressed=suppressed)
    items_csv = path / "items.csv"
    if items_csv.exists():
        import matplotlib.pyplot as plt

        fig = plot_item_distribution(pd.read_csv(items_csv), lang=options.lang)
        save_png(fig, figures / "fig1_items.png", bbox_inches="tight")
        plt.close(fig)
    return headline_contrasts(contrasts, wave_pairs)


# A change between waves within a cross breakdown a x b is model-implied when the data do
# not separate it from the two-way terms: the wave x a x b term carries less than this
# share of the contrast's posterior variance and its own part's interval includes 0.
IMPLIED_VARIANCE_SHARE = 0.1


def three_way_part(run: runs.Run, defs: list[estimands.Contrast]) -> dict[int, np.ndarray]:
    """Per contrast between waves within a cross breakdown a x b: the draws of the part the
    cross's own terms (a wave x a x b group term, or unpooled cells) contribute; a contrast
    whose cross has no such term is absent (its part is 0)."""
    gcomp, posterior = run.gcomp, run.posterior
    coefs = list(gcomp["coef"].to_numpy())
    out: dict[int, np.ndarray] = {}
    by_cross: dict[str, list[int]] = {}
    for k, c in enumerate(defs):
        if " x " in c.breakdown and c.wave != c.reference:
            by_cross.setdefault(c.breakdown, []).append(k)
    for breakdown, members in by_cross.items():
        columns = {"wave", *breakdown.split(" x ")}
        own = [
            i
            for i, name in enumerate(coefs)
            if set(name.removeprefix("1|").split("[")[0].split(":")) == columns
        ]
        if not own:
            continue
        sub = gcomp.isel(coef=own)
        part = estimands.effect_draws(posterior, sub, seed=run.record.seed)
        draws = estimands.contrast_draws(part, [defs[k] for k in members]).to_numpy()
        for j, k in enumerate(members):
            out[k] = draws[..., j]
    return out


def implied_by_structure(contrasts: pd.DataFrame, spec: dict) -> np.ndarray:
    """Changes between waves within a cross breakdown 'a x b' for which no term (group or
    unpooled cells) holds wave, a and b together: the cross's trend is then a copy of the
    two-way terms' whatever the data say. (Runs judge the rest from the posterior, see
    :func:`model_implied`; a pooled multiple-imputation folder has this rule only.)"""
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


def model_implied(
    contrasts: pd.DataFrame, values: xr.DataArray, parts: dict[int, np.ndarray]
) -> np.ndarray:
    """Changes between waves within a cross breakdown that the data do not separate from
    the two-way terms (``IMPLIED_VARIANCE_SHARE``), judged from the posterior: the cross's
    trend is then a copy of the two-way terms', and the report states no finding on it."""
    draws = values.to_numpy()
    cross = contrasts.breakdown.str.contains(" x ", regex=False).to_numpy()
    between_waves = (contrasts.wave.astype(str) != contrasts.reference.astype(str)).to_numpy()
    implied = cross & between_waves
    for k in np.flatnonzero(implied):
        part = parts.get(int(k))
        if part is None:
            continue  # no term of the cross's own: structurally implied
        total = np.var(draws[..., k])
        lo, hi = np.quantile(part, [0.025, 0.975])
        separated = np.var(part) >= IMPLIED_VARIANCE_SHARE * total or lo > 0 or hi < 0
        implied[k] = not separated
    return implied


def headline_contrasts(contrasts: pd.DataFrame, wave_pairs) -> pd.DataFrame:
    """The overall factsheet comparisons, for the terminal summary."""
    overall = contrasts[(contrasts.breakdown == "overall") & (contrasts.kind != "between_groups")]
    keys = {(w, r) for w, r in wave_pairs}
    rows = overall[[(w, r) in keys for w, r in zip(overall.wave, overall.reference, strict=True)]]
    return rows.drop_duplicates(["wave", "reference"])
