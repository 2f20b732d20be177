"""The one place that chains the stages: read -> scale -> fit -> diagnose -> summarise -> plot.

Every stage after the fit reads only the run folder, so ``summarise_run`` also serves
``--replot`` without refitting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import xarray as xr

from omlbayes.constants import CI_KIND, CI_PROB, DEFAULT_SEED, MIN_CELL_N
from omlbayes.criticism import diagnose, ppc
from omlbayes.data import scale, schema, stream
from omlbayes.data.ingest import BATCH_ROWS, read_survey
from omlbayes.errors import SpecError
from omlbayes.labels import LANGS
from omlbayes.model import estimands
from omlbayes.model import stats as model_stats
from omlbayes.model.spec import ModelSpec
from omlbayes.pipeline import passes
from omlbayes.plots import diagnostics as diag_plots
from omlbayes.plots.save import save_png
from omlbayes.report.findings import load_findings
from omlbayes.report.page import write_report
from omlbayes.report.schools import write_school_pages
from omlbayes.results import disclosure, runs, summarise
from omlbayes.results.options import OutputOptions

matplotlib.use("Agg")

ROOT = runs.ROOT
DEFAULT_DATA = ROOT / "data" / "oml_synthetic.csv"
DEFAULT_OUT = ROOT / "outputs"
PREDICTIVE_ROWS = 4000
PREDICTIVE_DRAWS = 100
MIN_PSIS_DRAWS = 100  # power-scaling (PSIS) needs a Pareto tail of at least 5 draws

Progress = Callable[[str], None]
log = logging.getLogger("omlbayes")


@dataclass(frozen=True)
class RunOptions:
    seed: int = DEFAULT_SEED
    out_dir: Path = DEFAULT_OUT
    lang: str = "nl"
    interval: str = CI_KIND
    prob: float = CI_PROB
    min_cell_n: int = MIN_CELL_N
    progressbar: bool = True
    name: str | None = None
    engine: str = "local"  # the data pass over parts: "local" (this process) or "dask"
    scheduler: str | None = None  # a Dask scheduler's address; None starts a LocalCluster
    batch_rows: int = BATCH_ROWS  # rows per batch when parts are read (bounds the memory)

    def output(self, *, monitor: str = "", area: str = "") -> OutputOptions:
        """The output options of a run with these settings (validated)."""
        return OutputOptions(
            interval=self.interval,
            prob=self.prob,
            min_cell_n=self.min_cell_n,
            lang=self.lang,
            monitor=monitor,
            area=area,
        )


@dataclass(frozen=True)
class RunResult:
    path: Path
    diagnostics: dict
    headline: pd.DataFrame
    output: OutputOptions = OutputOptions()


def fit_survey_run(
    spec: ModelSpec,
    *,
    data: Path | str = DEFAULT_DATA,
    column_map: Path | str | None = None,
    options: RunOptions = RunOptions(),
    progress: Progress = log.info,
) -> RunResult:
    """The survey job: a survey file in, a complete run folder out.

    The folder is assembled in a staging folder, audited for disclosure (no count under
    the run's threshold anywhere) and only then published.
    """
    check_backend(spec)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    progress(f"reading {data}")
    if stream.is_parts(data) or options.engine == "dask":
        source = _streamed_source(data, spec, column_map, options, progress)
    else:
        source = _in_memory_source(data, column_map, options, spec)
    survey, frame, exclusions = source.survey, source.frame, source.exclusions
    progress(
        f"{survey.n_read} rows read, {source.n_analysed} students analysed"
        + (f"; excluded: {exclusions}" if exclusions else "; nothing excluded")
    )
    timings["read_scale_s"] = time.perf_counter() - t0
    output = options.output(monitor=survey.monitor, area=survey.area)
    findings = load_findings(spec.findings or None)

    name = options.name or runs.run_name(spec.name)
    with runs.staged_run(options.out_dir, name) as stage:
        staging = stage.path
        tree, fit_info = _fit(frame, spec, options, progress, timings, prepared=source.prepared)
        progress("computing adjusted means (g-computation weights)")
        tree["gcomp"] = xr.DataTree(fit_info["gcomp"])
        _criticism(frame, spec, fit_info, tree, staging, progress, timings, data_key=survey.sha256)
        t = time.perf_counter()
        # one summary: its R-hat and ESS are the gate's too (costly at thousands of cells)
        summary = summarise.parameter_summary_dataset(
            tree["posterior"].to_dataset(), kind=output.interval, prob=output.prob
        )
        diagnostics = diagnose.check(tree, summary=summary)
        timings["diagnostics_s"] = time.perf_counter() - t
        progress("posterior predictive checks (Bayesian p-values)")
        t = time.perf_counter()
        ppc_entries, ppc_pvalues = ppc.posterior_predictive_checks(
            frame if frame is not None else source.sample,
            fit_info["layout"],
            spec,
            tree["posterior"].to_dataset(),
            seed=options.seed,
            min_cell_n=output.min_cell_n,
            breakdown_columns=[b[0] for b in spec.breakdowns if len(b) == 1],
        )
        diagnostics = ppc.add_to_gate(diagnostics, ppc_entries)
        timings["ppc_s"] = time.perf_counter() - t
        progress(diagnose.verdict_line(diagnostics))
        t = time.perf_counter()
        runs.write_posterior(tree, staging / runs.POSTERIOR)
        runs.write_json(staging / runs.DIAGNOSTICS, diagnostics)
        timings["write_posterior_s"] = time.perf_counter() - t
        t = time.perf_counter()
        summarise.summary_table(summary).to_csv(staging / "summary.csv", index_label="parameter")
        timings["parameter_summary_s"] = time.perf_counter() - t
        t = time.perf_counter()
        _write_descriptives(source.tables(), staging, min_cell_n=output.min_cell_n)
        for table_name, table in fit_info.get("tables", {}).items():  # graded: item checks
            table.to_csv(staging / table_name, index=False)
        timings["descriptives_s"] = time.perf_counter() - t
        t = time.perf_counter()
        figures = staging / "figures"
        figures.mkdir()
        _predictive_figures(source.sample, spec, fit_info, tree, figures, options)
        diag_plots.plot_ppc_pvalues(ppc_pvalues, figures / "ppc_pvalues.png")
        timings["predictive_figures_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - t0  # until the record is written
        stage.write_record(
            runs.RunRecord.new(
                model=spec.name,
                kind="survey",
                options=output.to_dict(),
                seed=options.seed,
                levels={c: list(survey.levels.of(c)) for c in schema.CATEGORICAL_COLUMNS},
                spec=spec.to_dict(),
                spec_sha256=spec.sha256(),
                data=survey_facts(
                    survey, column_map, source.n_analysed, exclusions, **source.data_facts
                ),
                scale={
                    "min_items": source.scale.min_items,
                    "raw_mean": source.scale.raw_mean,
                    "raw_sd": source.scale.raw_sd,
                    "age_mean": source.scale.age_mean,
                },
                sampler={**spec.sampler.__dict__},
                priors={k: str(v) for k, v in spec.priors.items()},
                formula=spec.formula(),
                n_coefficients=fit_info["n_coef"],
                findings=findings.to_dict(),
                timings=timings,
                fit=fit_info.get("fit", {}),
            )
        )
        output_timings: dict[str, float] = {}
        headline = write_outputs(staging, progress=progress, timings=output_timings)
        # the output stages read run.json, so their seconds are added to it afterwards
        record = runs.read_record(staging)
        output_timings["run_total_s"] = time.perf_counter() - t0
        runs.write_record(staging, replace(record, timings={**record.timings, **output_timings}))
    return RunResult(stage.final, diagnostics, headline, output)


def check_backend(spec: ModelSpec) -> None:
    """Refuse, before any work, a spec the chosen backend would silently fit as another model."""
    if spec.sampler.backend == "bambi" and spec.residual_sd_by is not None:
        raise SpecError(  # Bambi's formula has one residual SD
            f"--backend bambi fits one residual SD, but model {spec.name!r} has one per "
            f"{spec.residual_sd_by}: use the collapsed backend, or a model without "
            "residual_sd_by (e.g. --model flagship) for the Bambi reference fit"
        )


def survey_facts(survey, column_map, n_analysed: int, exclusions: dict, **extra) -> dict:
    """The run record's ``data`` section: where the survey came from and who was analysed."""
    return {
        "source": survey.source,
        "sha256": survey.sha256,
        "column_map": str(column_map) if column_map else None,
        "n_read": survey.n_read,
        "n_analysed": n_analysed,
        "exclusions": exclusions,
        "notes": survey.notes,
        **extra,
    }


@dataclass(frozen=True)
class _Source:
    """What a survey run needs from its data: the rows (one file) or sums (parts)."""

    survey: object  # ingest.Survey or stream.StreamedSurvey (source, sha256, levels, ...)
    frame: pd.DataFrame | None  # the analysed rows; None after a streamed pass
    scale: object  # min_items, raw_mean, raw_sd, age_mean
    exclusions: dict
    n_analysed: int
    sample: pd.DataFrame  # the predictive-check rows
    tables: Callable[[], dict]
    prepared: tuple | None = None  # (layout, stats, gcomp) from a streamed pass
    data_facts: dict = field(default_factory=dict)


def _in_memory_source(data, column_map, options: RunOptions, spec: ModelSpec) -> _Source:
    from omlbayes.criticism import predictive

    survey = read_survey(data, column_map=column_map)
    scaled = scale.build_index(survey.frame)
    frame = scaled.frame
    # the collapsed fit gets the streamed pass's exact sums: a file and its parts, same draws
    prepared = (
        model_stats.frame_prepared(frame, survey.levels, spec)
        if spec.sampler.backend == "collapsed"
        else None
    )
    return _Source(
        survey,
        frame,
        scaled,
        {**survey.exclusions, **scaled.exclusions},
        len(frame),
        predictive.subsample(frame, size=PREDICTIVE_ROWS, seed=options.seed),
        lambda: stream.frame_tables(frame),
        prepared=prepared,
    )


def _streamed_source(data, spec: ModelSpec, column_map, options: RunOptions, progress) -> _Source:
    if spec.sampler.backend != "collapsed":
        raise SpecError(
            f"{data}: a folder or glob of parts is read as sums, which only the collapsed "
            "backend fits; use --backend collapsed or give one file"
        )
    if options.engine == "dask":
        streamed, layout, stats = passes.dask_pass(
            data,
            spec,
            column_map=column_map,
            seed=options.seed,
            scheduler=options.scheduler,
            batch_rows=options.batch_rows,
            progress=progress,
        )
    else:
        streamed, layout, stats = passes.stream_pass(
            data,
            spec,
            column_map=column_map,
            seed=options.seed,
            batch_rows=options.batch_rows,
            progress=progress,
        )
    gcomp = estimands.gcomp_weights(streamed.patterns, layout, spec, weight="n")
    return _Source(
        streamed,
        None,
        streamed,
        streamed.exclusions,
        streamed.n_analysed,
        streamed.sample,
        streamed.tables,
        prepared=(layout, stats, gcomp),
        data_facts={
            "parts": len(streamed.parts),
            "engine": "dask" if options.engine == "dask" else "streamed",
            "scheduler": options.scheduler if options.engine == "dask" else None,
            "batch_rows": options.batch_rows,
            "predictive_sample": (
                f"{len(streamed.sample)} rows: the smallest of one uniform key per row, "
                f"drawn with seed {options.seed} and the part's position"
            ),
        },
    )


def write_outputs(
    path: Path,
    *,
    options: OutputOptions | None = None,
    progress: Progress = log.info,
    timings: dict[str, float] | None = None,
) -> pd.DataFrame:
    """Everything after the fit, from the run folder: tables, figures, both reports and
    the school pages, then the disclosure audit. Used by a fit and by ``--replot``.
    ``timings`` (if given) receives the seconds of each of these stages."""
    timings = {} if timings is None else timings
    progress("summarising and drawing figures")
    t = time.perf_counter()
    headline = summarise_run(path, options=options)
    timings["summaries_figures_s"] = time.perf_counter() - t
    output = runs.read_record(path).output_options
    progress("writing report.html (both languages) and the school feedback pages")
    t = time.perf_counter()
    for lang in (output.lang, *(other for other in LANGS if other != output.lang)):
        write_report(path, lang=lang)
    timings["reports_s"] = time.perf_counter() - t
    t = time.perf_counter()
    write_school_pages(path, lang=output.lang)
    timings["school_pages_s"] = time.perf_counter() - t
    t = time.perf_counter()
    disclosure.audit(path, min_cell_n=output.min_cell_n)
    timings["disclosure_audit_s"] = time.perf_counter() - t
    return headline


def fit_frame(
    frame: pd.DataFrame,
    spec: ModelSpec,
    *,
    seed: int = DEFAULT_SEED,
    progressbar: bool = False,
    progress: Progress = log.debug,
) -> FitOutput:
    """The one fit path (workflow, validation, bench): a scaled frame and a spec in,
    the posterior tree, the design layout and the g-computation weights out."""
    timings: dict[str, float] = {}
    tree, info = _fit(
        frame, spec, RunOptions(seed=seed, progressbar=progressbar), progress, timings
    )
    return FitOutput(tree, info["layout"], info["gcomp"], timings, info.get("fit", {}))


@dataclass(frozen=True)
class FitOutput:
    tree: xr.DataTree
    layout: object  # design.Layout
    gcomp: xr.Dataset
    timings: dict
    fit: dict  # backend facts for the run record's ``fit`` section


def _fit(frame, spec, options, progress, timings, prepared=None):
    from omlbayes.model.design import build_layout, grouped_stats

    layout = build_layout(frame, spec) if prepared is None else prepared[0]
    sampler = spec.sampler
    progress(
        f"fitting {spec.name}: backend {sampler.backend}, sampler {sampler.sampler}, "
        f"{sampler.chains} chains x ({sampler.tune} tune + {sampler.draws} draws), "
        f"{layout.n_coef} coefficients"
    )
    t = time.perf_counter()
    extra: dict = {}
    if (spec.family == "graded") != (sampler.backend == "graded"):
        raise SpecError("the graded model and backend go together: use --model graded")
    if sampler.backend == "graded":
        from omlbayes.pipeline.graded_run import fit_graded_run

        if frame is None:
            raise SpecError(
                "the graded model reads every student's answers: give --data one file, not parts"
            )

        tree, fit_timings, fit_section, tables = fit_graded_run(
            frame, layout, spec, seed=options.seed, progressbar=options.progressbar,
            progress=progress,
        )  # fmt: skip
        extra = {"fit": fit_section, "tables": tables}
    elif sampler.backend == "collapsed":
        from omlbayes.backends.collapsed import fit_collapsed

        stats = (
            grouped_stats(frame, layout, spec.response, by=spec.residual_sd_by)
            if prepared is None
            else prepared[1]
        )
        timings["sufficient_stats_s"] = time.perf_counter() - t
        tree, fit_timings, fit_facts = fit_collapsed(
            stats, layout, spec, seed=options.seed, progressbar=options.progressbar
        )
        progress(f"kernel {fit_facts['kernel']}: {fit_facts['kernel_reason']}")
    else:
        from omlbayes.backends.bambi_backend import fit_bambi

        check_backend(spec)

        tree, fit_timings = fit_bambi(
            frame, spec, seed=options.seed, progressbar=options.progressbar
        )
    timings.update(fit_timings)
    timings["fit_s"] = time.perf_counter() - t
    gcomp = estimands.gcomp_weights(frame, layout, spec) if prepared is None else prepared[2]
    info = {"layout": layout, "gcomp": gcomp, "n_coef": layout.n_coef, **extra}
    if sampler.backend == "collapsed":
        info["fit"] = fit_facts
        info["stats"] = stats
    return tree, info


def _criticism(
    frame, spec, fit_info, tree, staging: Path, progress, timings, *, data_key: str
) -> None:
    """LOO (loo.json) and the per-draw log prior / log likelihood totals that prior
    power-scaling needs (posterior.nc), for Gaussian runs; no student rows are kept."""
    from omlbayes.criticism import loo, sensitivity
    from omlbayes.model.design import grouped_stats

    if spec.family != "gaussian":
        reason = f"exact LOO is implemented for Gaussian models (this one is {spec.family})"
        loo.write_not_computed(staging / loo.LOO_JSON, reason)
        progress(f"no LOO: {reason}")
        return
    t = time.perf_counter()
    layout = fit_info["layout"]
    stats = fit_info.get("stats") or grouped_stats(
        frame, layout, spec.response, by=spec.residual_sd_by
    )
    posterior = tree["posterior"].to_dataset()
    sensitivity.add_power_scaling_groups(tree, stats, layout, spec)
    if frame is None:  # a streamed pass keeps sums only; LOO needs every student's row
        reason = "the data were read as parts (streamed sums): LOO over parts is not implemented"
        loo.write_not_computed(staging / loo.LOO_JSON, reason)
        progress(f"no LOO: {reason}")
        return
    n_draws = posterior.sizes["chain"] * posterior.sizes["draw"]
    if n_draws < loo.MIN_DRAWS:
        reason = f"{n_draws} posterior draws; PSIS needs at least {loo.MIN_DRAWS}"
        loo.write_not_computed(staging / loo.LOO_JSON, reason)
        progress(f"no LOO: {reason}")
        return
    progress(
        "leave-one-out (exact given the hyper-parameters, PSIS over their draws"
        + (
            f"; a subsample of {loo.LOO_EXACT_MAX:,} students)"
            if len(frame) > loo.LOO_EXACT_MAX
            else ")"
        )
    )
    elpd, facts = loo.conditional_loo(frame, layout, spec, stats, posterior, sample_key=data_key)
    loo.write_loo(staging / loo.LOO_JSON, elpd, facts, order_key=data_key)
    counts = loo.pareto_k_counts(elpd.pareto_k.to_numpy(), elpd.good_k)
    progress(f"elpd_loo {elpd.elpd:.1f} (SE {elpd.se:.1f}), p_loo {elpd.p:.1f}; Pareto k: {counts}")
    timings["criticism_s"] = time.perf_counter() - t


def _write_descriptives(tables: dict, folder: Path, *, min_cell_n: int) -> None:
    """Aggregated tables only (no student rows); school x wave counts under the
    disclosure threshold are blanked."""
    table1 = tables["table1"]
    shares = [c for c in table1.columns if c not in ("variable", "level", "n")]
    disclosure.suppress_counts(table1, min_cell_n=min_cell_n, values=shares).to_csv(
        folder / "table1.csv", index=False
    )
    tables["items"].to_csv(folder / "items.csv", index=False)
    reliability = tables["reliability"].rename(columns={"n_complete": "n"})
    stats = [c for c in reliability.columns if c not in ("group", "n")]
    disclosure.suppress_counts(reliability, min_cell_n=min_cell_n, values=stats).rename(
        columns={"n": "n_complete"}
    ).to_csv(folder / "reliability.csv", index=False)
    tables["item_total"].rename("item_total_r").to_csv(
        folder / "item_total.csv", index_label="item"
    )
    schools = disclosure.suppress_counts(tables["schools"], min_cell_n=min_cell_n)
    schools["suppressed"] = schools["n"].isna()
    schools.to_csv(folder / "schools.csv", index=False)


def _predictive_figures(sub, spec, fit_info, tree, figures: Path, options: RunOptions) -> None:
    """Predictive checks on ``sub``: at most PREDICTIVE_ROWS rows (seeded) of the data."""
    from omlbayes.criticism import predictive

    layout = fit_info["layout"]
    hyper = [v for v in tree["posterior"].data_vars if v == "sigma" or v.endswith("_sigma")]
    diag_plots.plot_rank_hyper(tree, hyper, figures / "rank_hyper.png")
    diag_plots.plot_energy(tree, figures / "energy.png")
    if spec.family == "graded":  # its predictive checks are of the items (item_ppc.png)
        return
    observed = sub[spec.response].to_numpy()
    prior = predictive.prior_predictive(
        sub, layout, spec, draws=PREDICTIVE_DRAWS, seed=options.seed
    )
    diag_plots.plot_prior_predictive(
        prior, observed, figures / "prior_predictive.png", lang=options.lang
    )
    post = predictive.posterior_predictive(
        sub, layout, tree["posterior"].to_dataset(), draws=PREDICTIVE_DRAWS, seed=options.seed
    )
    diag_plots.plot_ppc_index(observed, post, figures / "ppc_index.png", lang=options.lang)


def summarise_run(path: Path | str, *, options: OutputOptions | None = None) -> pd.DataFrame:
    """Tables and forest plots from a run folder (fit or ``--replot``); returns headline rows.

    ``options`` (a replot's) replace the run's; the run record then says so.
    """
    from omlbayes.plots.forest import write_forest_figures
    from omlbayes.plots.items import plot_item_distribution

    path = Path(path)
    record = runs.read_record(path)
    if options is not None and options != record.output_options:
        record = replace(record, options=options.to_dict())
        runs.write_record(path, record)
    options = record.output_options
    tree = xr.open_datatree(path / runs.POSTERIOR, engine="h5netcdf").load()
    if "gcomp" not in tree.children:
        raise SpecError(f"{path}: this run has no adjusted-mean weights (a --formula run)")
    posterior = tree["posterior"].to_dataset()
    gcomp = tree["gcomp"].to_dataset()
    effects = estimands.effect_draws(posterior, gcomp, seed=record.seed)
    effects_table = summarise.effects_table(
        effects,
        gcomp["n"].to_numpy(),
        kind=options.interval,
        prob=options.prob,
        min_cell_n=options.min_cell_n,
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
    contrasts = summarise.contrasts_table(
        contrast_values,
        suppressed=suppressed,
        kind=options.interval,
        prob=options.prob,
    )
    contrasts["model_implied"] = model_implied(contrasts, record.spec)
    contrasts.to_csv(path / "contrasts.csv", index=False)
    n_draws = posterior.sizes["chain"] * posterior.sizes["draw"]
    if {"log_prior", "log_likelihood"} <= set(tree.children) and n_draws >= MIN_PSIS_DRAWS:
        from omlbayes.criticism import sensitivity

        headline = headline_contrasts(contrasts[~contrasts.suppressed], wave_pairs)
        sensitivity.prior_sensitivity(
            tree, contrast_values.isel(contrast=headline.index.to_numpy())
        ).to_csv(path / sensitivity.SENSITIVITY_CSV)
    figures = path / "figures"
    figures.mkdir(exist_ok=True)
    write_forest_figures(effects_table, figures, options=options, levels=record.levels)
    from omlbayes.pipeline.graded_run import write_latent_vs_index  # graded runs only

    write_latent_vs_index(
        path, tree, gcomp, contrast_defs, contrasts, suppressed=suppressed,
        kind=options.interval, prob=options.prob, seed=record.seed, lang=options.lang,
    )  # fmt: skip
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


def with_overrides(spec: ModelSpec, **sampler_changes) -> ModelSpec:
    """The spec with command-line sampler settings applied (validated)."""
    from omlbayes.model.spec import check_sampler

    changes = {k: v for k, v in sampler_changes.items() if v is not None}
    new = spec.with_sampler(**changes)
    check_sampler(new.sampler)
    return new


def with_school_by_wave(spec: ModelSpec, enabled: bool) -> ModelSpec:
    return replace(spec, school_by_wave=spec.school_by_wave or enabled)
