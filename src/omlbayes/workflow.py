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
import pandas as pd
import xarray as xr

from omlbayes import datapass, diagnose, disclosure, estimands, runs, scale, schema, summarise
from omlbayes.constants import CI_KIND, CI_PROB, DEFAULT_SEED, MIN_CELL_N
from omlbayes.errors import SpecError
from omlbayes.findings import load_findings
from omlbayes.ingest import read_survey
from omlbayes.labels import LANGS
from omlbayes.options import OutputOptions
from omlbayes.plots.save import save_png
from omlbayes.report import write_report
from omlbayes.schools import write_school_pages
from omlbayes.spec import ModelSpec

matplotlib.use("Agg")

ROOT = runs.ROOT
DEFAULT_DATA = ROOT / "data" / "oml_synthetic.csv"
DEFAULT_OUT = ROOT / "outputs"
PREDICTIVE_ROWS = 4000
PREDICTIVE_DRAWS = 100

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
    """The flagship job: a survey file in, a complete run folder out.

    The folder is assembled in a staging folder, audited for disclosure (no count under
    the run's threshold anywhere) and only then published.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    progress(f"reading {data}")
    if datapass.is_parts(data) or options.engine == "dask":
        source = _streamed_source(data, spec, column_map, options, progress)
    else:
        source = _in_memory_source(data, column_map, options)
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
        diagnostics = diagnose.check(tree)
        progress(diagnose.verdict_line(diagnostics))
        runs.write_posterior(tree, staging / runs.POSTERIOR)
        runs.write_json(staging / runs.DIAGNOSTICS, diagnostics)
        summarise.parameter_summary(
            tree["posterior"].to_dataset(), kind=output.interval, prob=output.prob
        ).to_csv(staging / "summary.csv", index_label="parameter")
        _write_descriptives(source.tables(), staging, min_cell_n=output.min_cell_n)
        figures = staging / "figures"
        figures.mkdir()
        _predictive_figures(source.sample, spec, fit_info, tree, figures, options)
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
                data={
                    "source": survey.source,
                    "sha256": survey.sha256,
                    "column_map": str(column_map) if column_map else None,
                    "n_read": survey.n_read,
                    "n_analysed": source.n_analysed,
                    "exclusions": exclusions,
                    "notes": survey.notes,
                    **source.data_facts,
                },
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
        headline = write_outputs(staging, progress=progress)
    return RunResult(stage.final, diagnostics, headline, output)


@dataclass(frozen=True)
class _Source:
    """What a survey run needs from its data: the rows (one file) or sums (parts)."""

    survey: object  # ingest.Survey or datapass.StreamedSurvey (source, sha256, levels, ...)
    frame: pd.DataFrame | None  # the analysed rows; None after a streamed pass
    scale: object  # min_items, raw_mean, raw_sd, age_mean
    exclusions: dict
    n_analysed: int
    sample: pd.DataFrame  # the predictive-check rows
    tables: Callable[[], dict]
    prepared: tuple | None = None  # (layout, stats, gcomp) from a streamed pass
    data_facts: dict = field(default_factory=dict)


def _in_memory_source(data, column_map, options: RunOptions) -> _Source:
    from omlbayes import predictive

    survey = read_survey(data, column_map=column_map)
    scaled = scale.build_index(survey.frame)
    frame = scaled.frame
    return _Source(
        survey,
        frame,
        scaled,
        {**survey.exclusions, **scaled.exclusions},
        len(frame),
        predictive.subsample(frame, size=PREDICTIVE_ROWS, seed=options.seed),
        lambda: datapass.frame_tables(frame),
    )


def _streamed_source(data, spec: ModelSpec, column_map, options: RunOptions, progress) -> _Source:
    if spec.sampler.backend != "collapsed":
        raise SpecError(
            f"{data}: a folder or glob of parts is read as sums, which only the collapsed "
            "backend fits; use --backend collapsed or give one file"
        )
    if options.engine == "dask":
        streamed, layout, stats = datapass.dask_pass(
            data,
            spec,
            column_map=column_map,
            seed=options.seed,
            scheduler=options.scheduler,
            progress=progress,
        )
    else:
        streamed, layout, stats = datapass.stream_pass(
            data, spec, column_map=column_map, seed=options.seed, progress=progress
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
            "predictive_sample": (
                f"{len(streamed.sample)} rows: the smallest of one uniform key per row, "
                f"drawn with seed {options.seed} and the part's position"
            ),
        },
    )


def write_outputs(
    path: Path, *, options: OutputOptions | None = None, progress: Progress = log.info
) -> pd.DataFrame:
    """Everything after the fit, from the run folder: tables, figures, both reports and
    the school pages, then the disclosure audit. Used by a fit and by ``--replot``."""
    progress("summarising and drawing figures")
    headline = summarise_run(path, options=options)
    output = runs.read_record(path).output_options
    progress("writing report.html (both languages) and the school feedback pages")
    for lang in (output.lang, *(other for other in LANGS if other != output.lang)):
        write_report(path, lang=lang)
    write_school_pages(path, lang=output.lang)
    disclosure.audit(path, min_cell_n=output.min_cell_n)
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
    from omlbayes.design import build_layout, grouped_stats

    layout = build_layout(frame, spec) if prepared is None else prepared[0]
    sampler = spec.sampler
    progress(
        f"fitting {spec.name}: backend {sampler.backend}, sampler {sampler.sampler}, "
        f"{sampler.chains} chains x ({sampler.tune} tune + {sampler.draws} draws), "
        f"{layout.n_coef} coefficients"
    )
    t = time.perf_counter()
    if sampler.backend == "collapsed":
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

        tree, fit_timings = fit_bambi(
            frame, spec, seed=options.seed, progressbar=options.progressbar
        )
    timings.update(fit_timings)
    timings["fit_s"] = time.perf_counter() - t
    gcomp = estimands.gcomp_weights(frame, layout, spec) if prepared is None else prepared[2]
    info = {"layout": layout, "gcomp": gcomp, "n_coef": layout.n_coef}
    if sampler.backend == "collapsed":
        info["fit"] = fit_facts
    return tree, info


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
    from omlbayes import predictive
    from omlbayes.plots import diagnostics as diag_plots

    layout = fit_info["layout"]
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
    hyper = [v for v in tree["posterior"].data_vars if v == "sigma" or v.endswith("_sigma")]
    diag_plots.plot_rank_hyper(tree, hyper, figures / "rank_hyper.png")
    diag_plots.plot_energy(tree, figures / "energy.png")


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
    contrasts = summarise.contrasts_table(
        estimands.contrast_draws(effects, contrast_defs),
        suppressed=suppressed,
        kind=options.interval,
        prob=options.prob,
    )
    contrasts.to_csv(path / "contrasts.csv", index=False)
    figures = path / "figures"
    figures.mkdir(exist_ok=True)
    write_forest_figures(effects_table, figures, options=options, levels=record.levels)
    items_csv = path / "items.csv"
    if items_csv.exists():
        import matplotlib.pyplot as plt

        fig = plot_item_distribution(pd.read_csv(items_csv), lang=options.lang)
        save_png(fig, figures / "fig1_items.png", bbox_inches="tight")
        plt.close(fig)
    return headline_contrasts(contrasts, wave_pairs)


def headline_contrasts(contrasts: pd.DataFrame, wave_pairs) -> pd.DataFrame:
    """The overall factsheet comparisons, for the terminal summary."""
    overall = contrasts[(contrasts.breakdown == "overall") & (contrasts.kind != "between_groups")]
    keys = {(w, r) for w, r in wave_pairs}
    rows = overall[[(w, r) in keys for w, r in zip(overall.wave, overall.reference, strict=True)]]
    return rows.drop_duplicates(["wave", "reference"])


def with_overrides(spec: ModelSpec, **sampler_changes) -> ModelSpec:
    """The spec with command-line sampler settings applied (validated)."""
    from omlbayes.spec import check_sampler

    changes = {k: v for k, v in sampler_changes.items() if v is not None}
    new = spec.with_sampler(**changes)
    check_sampler(new.sampler)
    return new


def with_school_by_wave(spec: ModelSpec, enabled: bool) -> ModelSpec:
    return replace(spec, school_by_wave=spec.school_by_wave or enabled)
