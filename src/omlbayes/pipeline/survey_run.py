"""The survey run: a survey file in, a complete run folder out, stage by stage.

``fit_survey_run`` is the list of stages; each is a function below or in the stage's own
folder. Everything after the fit works from one :class:`~omlbayes.results.runs.Run`,
handed over in memory (``pipeline.outputs``); ``--replot`` opens the same object from disk.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import matplotlib
import pandas as pd
import xarray as xr

from omlbayes.constants import DEFAULT_SEED
from omlbayes.criticism import diagnose, loo, ppc
from omlbayes.data import scale, schema, stream
from omlbayes.data.ingest import BATCH_ROWS, read_survey
from omlbayes.errors import SpecError
from omlbayes.model import estimands
from omlbayes.model import stats as model_stats
from omlbayes.model.composition import Composition
from omlbayes.model.design import variance_names
from omlbayes.model.spec import ModelSpec
from omlbayes.pipeline import passes
from omlbayes.pipeline.outputs import write_outputs
from omlbayes.plots import diagnostics as diag_plots
from omlbayes.report.findings import findings_for
from omlbayes.results import disclosure, runs, summarise
from omlbayes.results.options import OutputOptions

matplotlib.use("Agg")

ROOT = runs.ROOT  # the checkout, or the current folder for an installed package
DEFAULT_DATA = ROOT / "data" / "oml_synthetic.csv"  # shipped in the repository, not the wheel
DEFAULT_OUT = ROOT / "outputs"
PREDICTIVE_ROWS = 4000
PREDICTIVE_DRAWS = 100

Progress = Callable[[str], None]
log = logging.getLogger("omlbayes")


@dataclass(frozen=True)
class RunOptions:
    """How a run is made and what it shows: the one options object below the command line.

    ``output`` holds what every table, figure and sentence follows (interval, probability,
    disclosure threshold, language); the monitor's name and area come from the data.
    """

    output: OutputOptions = field(default_factory=OutputOptions)
    seed: int = DEFAULT_SEED
    out_dir: Path = DEFAULT_OUT
    progressbar: bool = True
    name: str | None = None
    engine: str = "local"  # the data pass over parts: "local" (this process) or "dask"
    scheduler: str | None = None  # a Dask scheduler's address; None starts a LocalCluster
    batch_rows: int = BATCH_ROWS  # rows per batch when parts are read (bounds the memory)


@dataclass(frozen=True)
class RunResult:
    path: Path
    diagnostics: dict
    headline: pd.DataFrame
    output: OutputOptions
    scale: str = "index"  # what the effects are in: "index" or "latent" (graded runs)


class _Clock:
    """Seconds per stage for the run record."""

    def __init__(self) -> None:
        self.start = self.lap_start = time.perf_counter()
        self.timings: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = now - self.lap_start
        self.lap_start = now

    def restart(self) -> None:
        self.lap_start = time.perf_counter()

    def total(self, name: str) -> None:
        self.timings[name] = time.perf_counter() - self.start


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
    clock = _Clock()
    source = read_source(data, spec, column_map, options, progress)
    clock.lap("read_scale_s")
    output = replace(options.output, monitor=source.survey.monitor, area=source.survey.area)
    levels = {c: list(source.survey.levels.of(c)) for c in schema.CATEGORICAL_COLUMNS}
    findings, findings_reason = findings_for(spec.findings or None, levels)
    progress(f"findings: {findings_reason}")
    with runs.staged_run(options.out_dir, options.name or runs.run_name(spec.name)) as stage:
        tree, fitted = _fit(source.frame, spec, options, progress, clock.timings, source.prepared)
        progress("computing adjusted means (g-computation weights)")
        clock.restart()
        tree["gcomp"] = xr.DataTree(fitted["gcomp"])
        tree["composition"] = xr.DataTree(fitted["composition"].to_dataset())
        effects = estimands.effect_draws(
            tree["posterior"].to_dataset(), fitted["gcomp"], seed=options.seed
        )
        tree[estimands.ADJUSTED_MEANS_GROUP] = xr.DataTree(
            estimands.stored_adjusted_means(
                effects, fitted["gcomp"]["n"].to_numpy(), min_cell_n=output.min_cell_n
            )
        )
        loo_pit = _criticism(source, spec, fitted, tree, stage.path, progress, clock.timings)
        clock.restart()
        summary, diagnostics, (pvalues, prior) = _diagnose(
            source, spec, fitted, tree, output, options, clock, progress
        )
        tree, diagnostics = _write_fit_files(stage.path, tree, diagnostics, summary, clock)
        _write_fit_tables(stage.path, source, fitted, output, clock)
        _fit_figures(
            stage.path,
            source,
            spec,
            fitted,
            tree,
            (pvalues, prior, loo_pit),
            output,
            options,
            clock,
        )
        clock.total("total_s")  # the fit, until the outputs
        record = runs.RunRecord.new(
            model=spec.name,
            kind="survey",
            options=output.to_dict(),
            seed=options.seed,
            levels=levels,
            spec=spec.to_dict(),
            spec_sha256=spec.sha256(),
            data=survey_facts(
                source.survey,
                column_map,
                source.n_analysed,
                source.exclusions,
                **source.data_facts,
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
            n_coefficients=fitted["n_coef"],
            findings=findings.to_dict(),
            findings_reason=findings_reason,
            timings=dict(clock.timings),
            fit=fitted.get("fit", {}),
        ).as_written()
        run = runs.Run(stage.path, record, diagnostics=diagnostics, tree=tree, effects=effects)
        headline = write_outputs(run, progress=progress, timings=clock.timings)
        clock.total("run_total_s")
        stage.write_record(replace(record, timings=dict(clock.timings)))
        disclosure.audit(stage.path, min_cell_n=output.min_cell_n)
    scale = str(record.fit.get("scale", "index"))
    return RunResult(stage.final, diagnostics, headline, output, scale)


def read_source(data, spec: ModelSpec, column_map, options: RunOptions, progress) -> _Source:
    """Stage 1: read, check and scale the survey (one file in memory, or parts as sums)."""
    progress(f"reading {data}")
    if stream.is_parts(data) or options.engine == "dask":
        source = _streamed_source(data, spec, column_map, options, progress)
    else:
        source = _in_memory_source(data, column_map, options, spec)
    excluded = source.exclusions
    progress(
        f"{source.survey.n_read} rows read, {source.n_analysed} students analysed"
        + (f"; excluded: {excluded}" if excluded else "; nothing excluded")
    )
    return source


def _diagnose(source, spec, fitted, tree, output: OutputOptions, options, clock, progress):
    """Stage 4: the parameter summary, the diagnostics gate and the predictive checks."""
    # one summary: its R-hat and ESS are the gate's too (costly at thousands of cells)
    posterior = tree["posterior"].to_dataset()
    summary = summarise.parameter_summary_dataset(posterior, options=output)
    diagnostics = diagnose.check(tree, summary=summary)
    clock.lap("diagnostics_s")
    progress("posterior predictive checks (Bayesian p-values)")
    entries, pvalues = ppc.posterior_predictive_checks(
        source.frame if source.frame is not None else source.sample,
        fitted["layout"],
        spec,
        posterior,
        seed=options.seed,
        min_cell_n=output.min_cell_n,
        breakdown_columns=[b[0] for b in spec.breakdowns if len(b) == 1],
    )
    diagnostics = ppc.add_to_gate(diagnostics, entries)
    prior = None
    if spec.family != "graded":  # the graded run's checks are of the items
        from omlbayes.criticism import predictive

        sub = source.sample
        prior = predictive.prior_predictive(
            sub, fitted["layout"], spec, draws=PREDICTIVE_DRAWS, seed=options.seed
        )
        diagnostics["prior_predictive"] = predictive.prior_predictive_check(
            prior, sub[spec.response].to_numpy()
        )
    clock.lap("ppc_s")
    progress(diagnose.verdict_line(diagnostics))
    return summary, diagnostics, (pvalues, prior)


def _write_fit_files(folder: Path, tree, diagnostics: dict, summary, clock):
    """Stage 5: posterior.nc (no student rows), diagnostics.json and summary.csv; returns
    the tree and the diagnostics as written, which the later stages use."""
    written = runs.write_posterior(tree, folder / runs.POSTERIOR)
    runs.write_json(folder / runs.DIAGNOSTICS, diagnostics)
    clock.lap("write_posterior_s")
    summarise.summary_table(summary).to_csv(folder / "summary.csv", index_label="parameter")
    clock.lap("parameter_summary_s")
    return written, json.loads(json.dumps(diagnostics, default=str))


def _write_fit_tables(folder: Path, source, fitted, output: OutputOptions, clock) -> None:
    """The descriptive tables (and a graded run's item checks)."""
    _write_descriptives(source.tables(), folder, min_cell_n=output.min_cell_n)
    for table_name, table in fitted.get("tables", {}).items():  # graded: item checks
        table.to_csv(folder / table_name, index=False)
    clock.lap("descriptives_s")


def _fit_figures(folder, source, spec, fitted, tree, checks, output, options, clock) -> None:
    """Sampler and predictive-check figures (``checks``: the PPC p-values, the prior
    predictive draws and the LOO-PIT summary)."""
    pvalues, prior, loo_pit = checks
    figures = folder / "figures"
    figures.mkdir()
    _predictive_figures(
        source.sample, spec, fitted, tree, figures, output, prior=prior, seed=options.seed
    )
    diag_plots.plot_ppc_pvalues(pvalues, figures / "ppc_pvalues.png")
    if loo_pit is not None:  # LOO was computed (collapsed Gaussian runs)
        diag_plots.plot_loo_pit(loo_pit, figures / "loo_pit.png")
    clock.lap("predictive_figures_s")


def check_backend(spec: ModelSpec) -> None:
    """Refuse, before any work, a spec the chosen backend would silently fit as another model."""
    if spec.sampler.backend == "bambi" and spec.residual_sd_by is not None:
        raise SpecError(  # Bambi's formula has one residual SD
            f"--backend bambi fits one residual SD, but model {spec.name!r} has one per "
            f"{spec.residual_sd_by}: use the collapsed backend, or a model without "
            "residual_sd_by (e.g. --model flagship) for the Bambi reference fit"
        )
    if spec.sampler.backend == "graded":
        from omlbayes.pipeline.graded_run import check_graded_spec

        check_graded_spec(spec)


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
    prepared: tuple | None = None  # (layout, stats, composition) summed as a streamed pass
    data_facts: dict = field(default_factory=dict)


def _in_memory_source(data, column_map, options: RunOptions, spec: ModelSpec) -> _Source:
    from omlbayes.criticism import predictive

    survey = read_survey(data, column_map=column_map)
    scaled = scale.build_index(survey.frame)
    frame = scaled.frame
    # the collapsed fit gets the streamed pass's exact sums: a file and its parts, same draws
    prepared = (
        model_stats.frame_prepared(frame, survey.levels, spec, min_cell_n=options.output.min_cell_n)
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
    composition = Composition.build(
        streamed.patterns, layout, min_cell_n=options.output.min_cell_n, weight="n"
    )
    return _Source(
        streamed,
        None,
        streamed,
        streamed.exclusions,
        streamed.n_analysed,
        streamed.sample,
        streamed.tables,
        prepared=(layout, stats, composition),
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
        + ("importance sampling (NUTS where its gate fails), " if sampler.importance else "")
        + f"{sampler.chains} chains x ({sampler.tune} tune + {sampler.draws} draws), "
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
            frame, layout, spec, seed=options.seed, output=options.output,
            progressbar=options.progressbar, progress=progress,
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
            stats,
            layout,
            spec,
            seed=options.seed,
            progressbar=options.progressbar,
            gate=diagnose.early_stop if spec.sampler.early_stop else None,
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
    composition = (
        Composition.build(frame, layout, min_cell_n=options.output.min_cell_n)
        if prepared is None
        else prepared[2]
    )
    gcomp = estimands.gcomp_weights(frame, layout, spec, composition=composition)
    info = {
        "layout": layout,
        "gcomp": gcomp,
        "composition": composition,
        "n_coef": layout.n_coef,
        **extra,
    }
    if sampler.backend == "collapsed":
        info["fit"] = fit_facts
        info["stats"] = stats
    return tree, info


def _criticism(source, spec, fit_info, tree, staging: Path, progress, timings) -> dict | None:
    """Stage 3: LOO (loo.json) and the per-draw log prior / log likelihood totals that prior
    power-scaling needs (posterior.nc), for Gaussian runs; no student rows are kept. Returns
    the LOO-PIT summary (None where LOO is not computed)."""
    from omlbayes.criticism import sensitivity
    from omlbayes.model.design import grouped_stats

    frame, data_key = source.frame, source.survey.sha256
    if spec.family != "gaussian":
        reason = f"exact LOO is implemented for Gaussian models (this one is {spec.family})"
        loo.write_not_computed(staging / loo.LOO_JSON, reason)
        progress(f"no LOO: {reason}")
        return None
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
        return None
    n_draws = posterior.sizes["chain"] * posterior.sizes["draw"]
    if n_draws < loo.MIN_DRAWS:
        reason = f"{n_draws} posterior draws; PSIS needs at least {loo.MIN_DRAWS}"
        loo.write_not_computed(staging / loo.LOO_JSON, reason)
        progress(f"no LOO: {reason}")
        return None
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
    return facts["loo_pit"]


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


def _predictive_figures(
    sub, spec, fit_info, tree, figures: Path, output: OutputOptions, *, prior, seed: int
) -> None:
    """Predictive checks on ``sub``: at most PREDICTIVE_ROWS rows (seeded) of the data."""
    from omlbayes.criticism import predictive

    layout = fit_info["layout"]
    hyper = variance_names(tree["posterior"].data_vars)
    diag_plots.plot_rank_hyper(tree, hyper, figures / "rank_hyper.png")
    if "sample_stats" in tree.children:  # an importance-sampled fit has no Hamiltonian
        diag_plots.plot_energy(tree, figures / "energy.png")
    if spec.family == "graded":  # its predictive checks are of the items (item_ppc.png)
        return
    observed = sub[spec.response].to_numpy()
    diag_plots.plot_prior_predictive(
        prior, observed, figures / "prior_predictive.png", lang=output.lang
    )
    post = predictive.posterior_predictive(
        sub, layout, tree["posterior"].to_dataset(), draws=PREDICTIVE_DRAWS, seed=seed
    )
    diag_plots.plot_ppc_index(observed, post, figures / "ppc_index.png", lang=output.lang)


def with_overrides(spec: ModelSpec, **sampler_changes) -> ModelSpec:
    """The spec with command-line sampler settings applied (validated)."""
    from omlbayes.model.spec import IMPORTANCE_SAMPLER, check_sampler

    changes = {k: v for k, v in sampler_changes.items() if v is not None}
    chosen = replace(spec.sampler, **changes)
    if "importance" not in changes and (chosen.backend, chosen.sampler) != IMPORTANCE_SAMPLER:
        changes["importance"] = False  # the spec's, for its own sampler; one chosen here goes alone
    new = spec.with_sampler(**changes)
    check_sampler(new.sampler)
    return new


def with_school_by_wave(spec: ModelSpec, enabled: bool) -> ModelSpec:
    return replace(spec, school_by_wave=spec.school_by_wave or enabled)
