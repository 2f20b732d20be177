"""Run folder -> ``report.html``: one self-contained page in the factsheet's structure.

HTML rendering only. Everything comes from the run folder (the run record, diagnostics,
the tables and the figures); nothing is fitted here. What the findings say is decided by
``findings.py`` (declared statements, written from ``contrasts.csv`` and ``effects.csv``);
what may be shown by ``disclosure.py``; every interval and threshold named in the text is
formatted from the run's :class:`~omlbayes.options.OutputOptions`. Figures are embedded as
base64 PNG and the CSS is inline: the file needs nothing else.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from omlbayes import labels
from omlbayes.constants import PD_LIKELY, PD_VERY_LIKELY
from omlbayes.errors import ProjectError, RunError
from omlbayes.report.explorer import EXPLORER_CSS, explorer_html
from omlbayes.report.findings import (
    Findings,
    build_findings,
    factsheet_applies,
    fmt_number,
    parse_findings,
)
from omlbayes.report.html import (
    CSS,
    banner_html,
    count_cell,
    document,
    esc,
    figure_html,
    suppressed_mark,
    table_html,
)
from omlbayes.results import disclosure, runs
from omlbayes.results.options import OutputOptions

REPORT_FILE = "report.html"
ALL = "all"

# Figures in the order of the factsheet; anything else found in figures/ follows.
FACTSHEET_FIGURES = (
    ("fig2_wave.png", "fig2"),
    ("fig3_school_type.png", "fig3"),
    ("fig4_gender.png", "fig4"),
    ("fig5_parent_edu.png", "fig5"),
    ("fig6_region.png", "fig6"),
)
DIAGNOSTIC_FIGURES = (
    "rank_hyper.png",
    "energy.png",
    "ppc_index.png",
    "ppc_pvalues.png",
    "loo_pit.png",
    "prior_predictive.png",
)

# ---------------------------------------------------------------------------------------
# The report.


@dataclass(frozen=True)
class _Context:
    run: runs.Run
    options: OutputOptions  # the run's, in the report's language and threshold
    factsheet: bool = False  # the run's levels are those the factsheet's statements are about

    @property
    def path(self) -> Path:
        return self.run.path

    @property
    def record(self) -> runs.RunRecord:
        return self.run.record

    @property
    def diagnostics(self) -> dict:
        return self.run.diagnostics

    @property
    def lang(self) -> str:
        return self.options.lang

    @property
    def min_cell_n(self) -> int:
        return self.options.min_cell_n

    @property
    def waves(self) -> list[str]:
        return list(self.record.levels.get("wave", ()))

    def years(self) -> str:
        """``"2014-2022"``: the first and last wave of the run, as labelled."""
        waves = self.waves
        if not waves:
            return ""
        first, last = (labels.level(w, self.lang).split(" ")[0] for w in (waves[0], waves[-1]))
        return first if first == last else f"{first}-{last}"


def _read_tables(run: runs.Run) -> tuple[pd.DataFrame, pd.DataFrame]:
    for name in ("effects.csv", "contrasts.csv"):
        if not (run.path / name).is_file():
            raise RunError(
                f"{run.path}: no {name}; summarise the run first "
                f"(scripts/fit.py --replot {run.path})"
            )
    effects = run.table("effects.csv", dtype={"group": str, "wave": str})
    contrasts = run.table(
        "contrasts.csv",
        dtype={"group": str, "wave": str, "reference": str, "reference_group": str},
    )
    return effects, contrasts


def _figure_bytes(
    ctx: _Context, effects: pd.DataFrame, *, redraw: bool
) -> list[tuple[str, str, bytes]]:
    """(file name, caption, png) of Figures 1-6 and the crosses, redrawn in memory when the
    language or the threshold differs from the run's."""
    rt = labels.REPORT_TEXT[ctx.lang]
    figures = ctx.path / "figures"
    out: list[tuple[str, str, bytes]] = []
    if redraw:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from omlbayes.plots.forest import forest_figures
        from omlbayes.plots.items import plot_item_distribution
        from omlbayes.plots.save import save_png

        def render(fig, **savefig) -> bytes:
            # saved as the run's own figures are (summarise_run): the same bytes as a run
            # in this language writes, and the forest plots in one draw, not tight's three
            buf = io.BytesIO()
            save_png(fig, buf, **savefig)
            plt.close(fig)
            return buf.getvalue()

        if (ctx.path / "items.csv").is_file():
            fig = plot_item_distribution(ctx.run.table("items.csv"), lang=ctx.lang)
            png = render(fig, bbox_inches="tight")
            out.append(("fig1_items.png", rt["fig1"].format(years=ctx.years()), png))
        for spec, fig in forest_figures(effects, options=ctx.options, levels=ctx.record.levels):
            out.append((spec.filename, _caption(spec.filename, spec.breakdown, ctx), render(fig)))
        return out
    if (figures / "fig1_items.png").is_file():
        out.append(
            (
                "fig1_items.png",
                rt["fig1"].format(years=ctx.years()),
                (figures / "fig1_items.png").read_bytes(),
            )
        )
    known = {name for name, _ in FACTSHEET_FIGURES}
    for name, key in FACTSHEET_FIGURES:
        if (figures / name).is_file():
            out.append((name, rt[key], (figures / name).read_bytes()))
    for png in sorted(figures.glob("fig_cross_*.png")) + sorted(figures.glob("fig_*.png")):
        if (
            png.name in known
            or png.name == "fig1_items.png"
            or any(n == png.name for n, _, _ in out)
        ):
            continue
        breakdown = png.stem.removeprefix("fig_cross_").removeprefix("fig_").replace("_x_", " x ")
        out.append((png.name, _caption(png.name, breakdown, ctx), png.read_bytes()))
    return out


def _caption(filename: str, breakdown: str, ctx: _Context) -> str:
    lang = ctx.lang
    rt = labels.REPORT_TEXT[lang]
    for name, key in FACTSHEET_FIGURES:
        if name == filename:
            return rt[key]
    return rt["fig_cross" if ctx.factsheet else "fig_extra"].format(
        what=f"{labels.column('wave', lang)} × {labels.column(breakdown, lang)}"
    )


def _measurement_html(ctx: _Context) -> str:
    rt, lang, path = labels.REPORT_TEXT[ctx.lang], ctx.lang, ctx.path
    scale_info = ctx.record.scale
    parts = [f"<h2 id='measurement'>{esc(rt['measurement'])}</h2>"]
    parts.append(
        "<p>"
        + esc(
            rt["measurement_intro"].format(
                min_items=scale_info["min_items"],
                raw_mean=fmt_number(scale_info["raw_mean"], lang=lang),
                raw_sd=fmt_number(scale_info["raw_sd"], lang=lang),
            )
        )
        + "</p>"
    )
    if (path / "items.csv").is_file():
        items = ctx.run.table("items.csv")
        item_total = (
            ctx.run.table("item_total.csv").set_index("item")["item_total_r"]
            if (path / "item_total.csv").is_file()
            else pd.Series(dtype=float)
        )
        rows = []
        for k, r in enumerate(items.itertuples(index=False), start=1):
            text = labels.ITEM_TEXT[lang].get(r.item, r.item)
            agree = getattr(r, "pct_4", np.nan) + getattr(r, "pct_5", np.nan)
            rows.append(
                [
                    f"{k}. {esc(text)}",
                    fmt_number(r.mean, lang=lang),
                    fmt_number(getattr(r, "pct_3", np.nan), lang=lang, digits=1),
                    fmt_number(agree, lang=lang, digits=1),
                    fmt_number(item_total.get(r.item, np.nan), lang=lang),
                ]
            )
        parts.append(
            table_html(
                [
                    rt["item"],
                    rt["item_mean"],
                    rt["item_neutral"],
                    rt["item_agree"],
                    rt["item_total"],
                ],
                rows,
                numeric={1, 2, 3, 4},
                cls="items",
            )
        )
    if (path / "reliability.csv").is_file():
        rel = ctx.run.table("reliability.csv", dtype={"group": str})
        rows = []
        for r in rel.itertuples(index=False):
            ok = not disclosure.is_small(r.n_complete, ctx.min_cell_n)
            wave = rt["all_waves"] if r.group == ALL else labels.level(r.group, lang)
            rows.append(
                [
                    esc(wave),
                    count_cell(r.n_complete, options=ctx.options),
                    fmt_number(r.alpha, lang=lang) if ok else "",
                    fmt_number(r.omega, lang=lang) if ok else "",
                ]
            )
        parts.append(f"<h3>{esc(rt['reliability'])}</h3>")
        parts.append(
            table_html(
                [rt["wave"], rt["n_complete"], rt["alpha"], rt["omega"]],
                rows,
                numeric={1, 2, 3},
                cls="reliability",
            )
        )
    return "".join(parts)


def _composition_html(ctx: _Context) -> str:
    rt, lang = labels.REPORT_TEXT[ctx.lang], ctx.lang
    path = ctx.path / "table1.csv"
    parts = [f"<h2 id='composition'>{esc(rt['composition'])}</h2>"]
    if not path.is_file():
        return "".join(parts)
    table = ctx.run.table("table1.csv", dtype={"level": str})
    fixed = {"variable", "level", "n", "percent"}
    wave_cols = [c for c in table.columns if c not in fixed]
    header = [rt["variable"], rt["level"], "n"] + [
        rt["all_waves"] if c == ALL else labels.level(c, lang) for c in wave_cols
    ]
    rows = []
    previous = None
    for r in table.to_dict("records"):
        variable = labels.column(r["variable"], lang) if r["variable"] != previous else ""
        previous = r["variable"]
        rows.append(
            [
                esc(variable),
                esc(labels.level(r["level"], lang)),
                count_cell(r.get("n"), options=ctx.options),
            ]
            + [
                suppressed_mark(ctx.options)
                if disclosure.is_small(r.get("n"), ctx.min_cell_n)
                else fmt_number(r[c], lang=lang, digits=1)
                for c in wave_cols
            ]
        )
    parts.append(f"<p>{esc(rt['composition_intro'])}</p>")
    parts.append(table_html(header, rows, numeric=set(range(2, len(header))), cls="composition"))
    return "".join(parts)


def _thresholds_paragraph(ctx: _Context, key: str) -> str:
    """A paragraph naming the interval and the probability thresholds of the phrases."""
    lang = ctx.lang
    text = labels.REPORT_TEXT[lang][key].format(
        interval=ctx.options.interval_name(),
        very_likely=fmt_number(PD_VERY_LIKELY, lang=lang, digits=3),
        likely=fmt_number(PD_LIKELY, lang=lang, digits=2),
    )
    return f"<p>{esc(text)}</p>"


def _findings_html(ctx: _Context, findings: Findings) -> str:
    rt, lang = labels.REPORT_TEXT[ctx.lang], ctx.lang
    parts = [f"<h2 id='results'>{esc(rt['results'])}</h2>"]
    parts.append(_thresholds_paragraph(ctx, "results_intro"))
    if findings.factsheet_shown:
        parts.append(f"<p class='factsheet-intro'>{esc(rt['results_factsheet'])}</p>")
    for k, b in enumerate(findings.blocks, start=1):
        items = []
        for s in b.sentences:
            data = " ".join(
                f"data-{esc(key.replace('_', '-'))}='{esc(v)}'" for key, v in s.keys.items()
            )
            phrase = f" data-phrase='{esc(s.phrase_key)}'" if s.phrase_key else ""
            items.append(f"<li class='finding {s.kind}' {data}{phrase}>{s.text}</li>")
        grey = (
            f"<p class='factsheet'>{esc(rt['factsheet_said'])}{esc(b.factsheet)}</p>"
            if b.factsheet
            else ""
        )
        parts.append(
            f"<div class='finding-block' data-block='{esc(b.key)}'><h3>{k}. {esc(b.title)}</h3>"
            f"{grey}<ul class='findings'>{''.join(items)}</ul></div>"
        )
    if findings.skipped:
        pairs = "; ".join(
            labels.SENTENCE_TEXT[lang]["wave_vs"].format(
                wave=labels.level(w, lang), reference=labels.level(r, lang)
            )
            for w, r in findings.skipped
        )
        parts.append(
            f"<p class='small skipped'>{esc(rt['results_skipped'].format(pairs=pairs))}</p>"
        )
    return "".join(parts)


def _model_implied_html(ctx: _Context, contrasts: pd.DataFrame) -> str:
    """A note naming the cross breakdowns whose wave trends the model only implies."""
    if "model_implied" not in contrasts or not contrasts["model_implied"].any():
        return ""
    crosses = dict.fromkeys(contrasts.loc[contrasts["model_implied"], "breakdown"])
    text = labels.REPORT_TEXT[ctx.lang]["model_implied"].format(crosses=", ".join(crosses))
    return f"<p class='small model-implied'>{esc(text)}</p>"


def _extrapolated_html(ctx: _Context, effects: pd.DataFrame) -> str:
    """A note naming the adjusted means that rest partly on cells without students."""
    if "extrapolated" not in effects or not effects["extrapolated"].any():
        return ""
    rows = effects[effects["extrapolated"].astype(bool)]
    names = dict.fromkeys(
        f"{labels.column(r.breakdown, ctx.lang)}: {labels.level(r.group, ctx.lang)}"
        for r in rows.itertuples()
    )
    text = labels.REPORT_TEXT[ctx.lang]["extrapolated"].format(cells="; ".join(names))
    return f"<p class='small extrapolated'>{esc(text)}</p>"


ESTIMANDS = (  # (schools, composition): the report's estimand first
    ("any", "pooled"),
    ("surveyed", "pooled"),
    ("any", "wave"),
)


def _estimands_html(ctx: _Context) -> str:
    """Which estimand the report shows and why, with the overall wave changes under the
    others beside it: the monitor's own schools (each student keeps their school's realized
    deviation in the wave) and the trend as observed (each wave's own composition)."""
    from omlbayes.results.summarise import summarise_draws

    rt, lang, options = labels.REPORT_TEXT[ctx.lang], ctx.lang, ctx.options
    try:
        means = [ctx.run.adjusted_means((), schools=sc, composition=co) for sc, co in ESTIMANDS]
    except ProjectError:  # a run without the composition store (--formula, older runs)
        return ""
    waves = [str(w) for w in means[0]["wave"].to_numpy()]
    pairs = list(zip(waves[1:], waves[:-1], strict=True))
    if len(waves) > 2:
        pairs.append((waves[-1], waves[0]))
    if not pairs:
        return ""
    rows, largest = [], 0.0
    for wave, ref in pairs:
        cells = []
        shown = []
        for m in means:
            change = m.sel(wave=wave) - m.sel(wave=ref)
            row = summarise_draws(change, options=options)
            shown.append(float(row["mean"]))
            cells.append(
                f"<td class='num'>{esc(fmt_number(row['mean'], lang=lang, sign=True))} "
                f"[{esc(fmt_number(row['lower'], lang=lang, sign=True))}, "
                f"{esc(fmt_number(row['upper'], lang=lang, sign=True))}]</td>"
            )
        largest = max(largest, *(abs(v - shown[0]) for v in shown[1:]))
        pair = labels.SENTENCE_TEXT[lang]["wave_vs"].format(
            wave=labels.level(wave, lang), reference=labels.level(ref, lang)
        )
        rows.append(f"<tr><td>{esc(pair)}</td>{''.join(cells)}</tr>")
    head = "".join(f"<th>{esc(rt[f'estimand_{sc}_{co}'])}</th>" for sc, co in ESTIMANDS)
    verdict = rt["estimands_differ" if largest >= 0.01 else "estimands_agree"].format(
        largest=fmt_number(largest, lang=lang)
    )
    return (
        f"<div class='estimands'><h3>{esc(rt['estimands_title'])}</h3>"
        f"<p>{esc(rt['estimands_text'].format(interval=options.interval_name()))}</p>"
        f"<table class='estimands'><thead><tr><th>{esc(rt['estimands_change'])}</th>{head}"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f"<p class='small'>{esc(verdict)}</p></div>"
    )


def _model_text(rt: dict, rec: runs.RunRecord, lang: str) -> str:
    """The Methods paragraph on the model: the graded measurement model for a graded run."""
    spec = rec.spec
    if spec.get("family") != "graded":
        extra = [rt["model_school_by_wave"]] if spec.get("school_by_wave") else []
        if spec.get("residual_sd_by"):
            column = labels.column(spec["residual_sd_by"], lang).lower()
            extra.append(rt["model_residual_by"].format(column=column))
        return " ".join([rt["model_text"], *extra])
    measurement = spec.get("measurement") or {}
    items = [str(i) for i in measurement.get("items", ())]
    text = rt["model_text_graded"].format(
        link=measurement.get("link", "probit"), n_items=len(items), items=", ".join(items)
    )
    extra = [rt["model_school_by_wave"]] if spec.get("school_by_wave") else []
    crosses = [  # the wave x a x b terms (group terms are lists of columns in the record)
        " x ".join(labels.column(c, lang).lower() for c in term if c != "wave")
        for term in spec.get("group", ())
        if len(term) == 3 and "wave" in term
    ]
    if crosses:
        extra.append(rt["model_three_way"].format(crosses="; ".join(crosses)))
    return " ".join([text, *extra])


def _methods_html(ctx: _Context) -> str:
    rt, lang, diag = labels.REPORT_TEXT[ctx.lang], ctx.lang, ctx.diagnostics
    rec = ctx.record
    data = rec.data
    parts = [f"<h2 id='methods'>{esc(rt['methods'])}</h2>", f"<h3>{esc(rt['data'])}</h3>"]
    rows = [
        [esc(rt["source"]), f"<code>{esc(Path(str(data['source'])).name)}</code>"],
        [esc(rt["sha256"]), f"<code>{esc(data['sha256'])}</code>"],
    ]
    if data.get("column_map"):
        rows.append([esc(rt["column_map"]), f"<code>{esc(Path(data['column_map']).name)}</code>"])
    rows.append([esc(rt["n_read"]), f"<span class='count'>{esc(data['n_read'])}</span>"])
    rows.append([esc(rt["n_analysed"]), f"<span class='count'>{esc(data['n_analysed'])}</span>"])
    exclusions = data["exclusions"]
    for reason, count in exclusions.items():
        rows.append(
            [
                esc(rt["excluded"].format(reason=reason)),
                f"<span class='excluded'>{esc(count)}</span>",
            ]
        )
    parts.append(table_html([rt["data"], ""], rows, numeric={1}, cls="data"))
    if not exclusions:
        parts.append(f"<p>{esc(rt['no_exclusions'])}</p>")
    notes = data.get("notes") or {}
    if notes:
        parts.append(f"<p>{esc(rt['notes'])}:</p><ul>")
        parts += [f"<li>{esc(k)}: {esc(v)}</li>" for k, v in notes.items()]
        parts.append("</ul>")

    parts.append(f"<h3>{esc(rt['model'])}</h3><p>{esc(_model_text(rt, rec, lang))}</p>")
    formula = rec.formula
    if rec.spec.get("family") == "graded" and " ~ " in formula:
        formula = "theta ~ " + formula.split(" ~ ", 1)[1]  # the latent trait's structure
    parts.append(f"<p>{esc(rt['formula'])}: <code>{esc(formula)}</code></p>")
    priors = rec.priors
    if priors:
        parts.append(f"<h3>{esc(rt['priors'])}</h3>")
        parts.append(
            table_html(
                [rt["prior_term"], rt["prior_dist"]],
                [[f"<code>{esc(k)}</code>", f"<code>{esc(v)}</code>"] for k, v in priors.items()],
                cls="priors",
            )
        )
    sampler = rec.sampler
    sampling = rec.fit.get("sampling", {})
    kept = sampling.get("draws_kept", sampler["draws"])  # the early stop's, when it stopped
    parts.append(f"<h3>{esc(rt['sampler'])}</h3>")
    text = rt["sampler_text"].format(
        backend=sampler["backend"],
        sampler=sampler["sampler"],
        chains=sampler["chains"],
        tune=sampler["tune"],
        draws=kept,
        seed=rec.seed,
    )
    if sampling.get("method") == "importance":
        text = rt["sampler_importance"].format(
            backend=sampler["backend"],
            proposals=fmt_number(sampling["proposals"], lang=lang, digits=0),
            k=fmt_number(sampling["pareto_k"], lang=lang, digits=2),
            k_max=fmt_number(sampling["pareto_k_threshold"], lang=lang, digits=2),
            chains=sampler["chains"],
            draws=kept,
            seed=rec.seed,
        )
    if sampling.get("stopped_early"):
        text += " " + rt["sampler_early"].format(kept=kept, most=sampling["draws_max"])
    if "importance_tried" in sampling:
        reason = sampling["importance_tried"].get("reason", "")
        text += " " + rt["sampler_importance_failed"].format(reason=reason)
    parts.append(f"<p class='sampler'>{esc(text)}</p>")
    fit = rec.fit
    if fit.get("folded_sds"):
        terms = ", ".join(f"<code>{esc(t)}</code>" for t in fit["folded_sds"])
        setting = esc(str(fit["sd_parameterization"]))
        parts.append(f"<p>{esc(rt['sampler_folded']).format(terms=terms, setting=setting)}</p>")
    parts.append(f"<h3 id='diagnostics'>{esc(rt['diagnostics'])}</h3>")
    values = {
        "r_hat_below_1_01": ("max_r_hat", 3),
        "ess_bulk_at_least_400": ("min_ess_bulk", 0),
        "ess_tail_at_least_400": ("min_ess_tail", 0),
        "no_divergences": ("divergences", 0),
        "bfmi_above_0_3": ("min_bfmi", 2),
    }
    rows = []
    for check, ok in diag.get("checks", {}).items():
        key, digits = values.get(check, (None, 2))
        value = diag.get(key) if key else None
        shown = fmt_number(float(value), lang=lang, digits=digits) if value is not None else ""
        where = diag.get(f"{key}_at") if key else None
        if where:
            shown += f" <span class='small'>({esc(where)})</span>"
        verdict = (
            rt["passed"] if ok else f"<strong style='color:#b00020'>{esc(rt['failed'])}</strong>"
        )
        if check in diag.get("not_applicable", ()):
            shown, verdict = "", esc(rt["not_applicable"])
        rows.append([esc(labels.CHECK_TEXT[lang].get(check, check)), shown, verdict])
    parts.append(table_html([rt["check"], rt["value"], rt["verdict"]], rows, cls="diagnostics"))
    prior = diag.get("prior_predictive")
    if prior:
        lo, mid, hi = prior["prior_sd_quantiles_5_50_95"]
        text = rt["prior_predictive"].format(
            sd=fmt_number(mid, lang=lang),
            lo=fmt_number(lo, lang=lang),
            hi=fmt_number(hi, lang=lang),
            observed=fmt_number(prior["observed_sd"], lang=lang),
            share=fmt_number(
                100 * prior["share_sd_within_half_to_double_observed"], lang=lang, digits=0
            ),
        )
        parts.append(f"<p class='prior-predictive'>{esc(text)}</p>")
    drift = diag.get("ppc", {}).get("ppc_school_drift_persistence")
    if drift and drift["most_extreme"]:
        text = rt["drift_check"].format(
            p=fmt_number(drift["most_extreme"][0]["p"], lang=lang, digits=3),
            verdict=rt["drift_fine"] if drift["passed"] else rt["drift_flagged"],
        )
        parts.append(f"<p class='drift-check'>{esc(text)}</p>")
    parts.append(f"<p class='gate-scope'>{esc(rt['gate_sees'])}</p>")
    parts.append(f"<p class='gate-scope'>{esc(rt['gate_blind'])}</p>")
    parts.append(f"<h3>{esc(rt['interval_head'])}</h3>")
    parts.append(_thresholds_paragraph(ctx, "interval_text"))
    parts.append(f"<p>{esc(rt['disclosure'].format(min_cell_n=ctx.min_cell_n))}</p>")

    diag_figs = [ctx.path / "figures" / n for n in DIAGNOSTIC_FIGURES]
    diag_figs = [p for p in diag_figs if p.is_file()]
    if diag_figs:
        parts.append(f"<h3>{esc(rt['diag_figures'])}</h3>")
        for p in diag_figs:
            parts.append(figure_html(p.read_bytes(), caption=p.stem.replace("_", " "), name=p.name))

    parts.append(f"<h3>{esc(rt['software'])}</h3>")
    versions = rec.versions
    parts.append(
        table_html(
            [rt["package"], rt["version"]],
            [[esc(k), esc(v)] for k, v in versions.items()],
            cls="versions",
        )
    )
    parts.append(
        "<p class='small'>"
        + esc(
            rt["provenance"].format(
                commit=rec.git_commit,
                python=rec.python,
                seed=rec.seed,
            )
        )
        + "</p>"
    )
    timings = rec.timings
    if "total_s" in timings or "fit_s" in timings:
        parts.append(
            "<p class='small'>"
            + esc(
                rt["timings"].format(
                    total=fmt_number(timings.get("total_s", float("nan")), lang=lang, digits=1),
                    fit=fmt_number(timings.get("fit_s", float("nan")), lang=lang, digits=1),
                )
            )
            + "</p>"
        )
    return "".join(parts)


def run_label(path: Path) -> str:
    """The run's name, also while it is still assembled in a ``.staging-<name>-<pid>`` folder."""
    name = path.name
    if name.startswith(".staging-"):
        return name.removeprefix(".staging-").rsplit("-", 1)[0]
    return name


def report_options(
    record: runs.RunRecord, *, lang: str | None = None, min_cell_n: int | None = None
) -> OutputOptions:
    """The run's options in ``lang`` (default the run's), the threshold raised (never
    lowered) by ``min_cell_n``."""
    run = record.output_options
    threshold = disclosure.effective_min_cell_n(run.min_cell_n, min_cell_n)
    return replace(run, lang=labels.check_lang(lang or run.lang), min_cell_n=threshold)


def render_report(
    run: runs.Run | Path | str,
    *,
    lang: str | None = None,
    min_cell_n: int | None = None,
    redraw_figures: bool | None = None,
) -> str:
    """The report of a run folder as one HTML string (see :func:`write_report`)."""
    run = runs.as_run(run)
    path, record, diagnostics = run.path, run.record, run.diagnostics
    options = report_options(record, lang=lang, min_cell_n=min_cell_n)
    declaration = parse_findings(record.findings, where=f"{path / runs.RUN_JSON} findings")
    ctx = _Context(run, options, factsheet_applies(declaration, record.levels))
    lang = options.lang
    effects, contrasts = _read_tables(run)
    effects, contrasts = disclosure.resuppress(effects, contrasts, min_cell_n=options.min_cell_n)
    # the spec's wave pairs are comparisons to make where the run has both waves; a pair
    # with one wave of this run is listed as not in this run, one with none (another
    # monitor's waves) is no concern of this run
    present = set(effects["wave"].astype(str))
    findings = build_findings(
        effects,
        contrasts,
        declaration=declaration,
        options=options,
        levels=record.levels,
        spec_pairs=[p for p in record.wave_pairs if set(p) & present],
    )
    own = record.output_options
    if redraw_figures is None:  # the run's PNGs are in its language, at its threshold
        redraw_figures = lang != own.lang or options.min_cell_n != own.min_cell_n
    figures = _figure_bytes(ctx, effects, redraw=redraw_figures)

    rt = labels.REPORT_TEXT[lang]
    title = rt["title"].format(years=ctx.years())
    source = (
        rt["source_monitor"].format(monitor=options.monitor)
        if options.monitor
        else rt["source_none"]
    )
    explorer = explorer_html(run, lang=lang, options=options)
    sections = (
        ("measurement", "measurement"),
        ("composition", "composition"),
        ("figures", "figures"),
        ("results", "results"),
        *((("explorer", "explorer"),) if explorer else ()),
        ("methods", "methods"),
    )
    body = [banner_html(diagnostics, lang=lang)]
    body.append(f"<h1>{esc(title)}</h1>")
    body.append(
        f"<p class='subtitle'>{esc(rt['subtitle'].format(source=source, run=run_label(path)))}</p>"
    )
    body.append(
        f"<nav><strong>{esc(rt['toc'])}</strong><ol>"
        + "".join(
            f"<li><a href='#{a}'>{esc(rt[k].split('. ', 1)[-1])}</a></li>" for a, k in sections
        )
        + "</ol></nav>"
    )
    fig1 = [f for f in figures if f[0] == "fig1_items.png"]
    body.append(_measurement_html(ctx))
    from omlbayes.report.graded import section_html as latent_section_html  # graded runs only

    body.append(latent_section_html(path, lang=lang, options=options))
    body += [figure_html(png, caption=cap, name=name) for name, cap, png in fig1]
    body.append(_composition_html(ctx))
    body.append(f"<h2 id='figures'>{esc(rt['figures'])}</h2>")
    body.append(
        "<p>"
        + esc(
            rt["figures_intro"].format(
                interval=options.interval_name(), min_cell_n=options.min_cell_n
            )
        )
        + "</p>"
    )
    body += [
        figure_html(png, caption=cap, name=name)
        for name, cap, png in figures
        if name != "fig1_items.png"
    ]
    body.append(_findings_html(ctx, findings))
    body.append(_model_implied_html(ctx, contrasts))
    body.append(_extrapolated_html(ctx, effects))
    body.append(_estimands_html(ctx))
    body.append(explorer)
    body.append(_methods_html(ctx))
    body.append(f"<footer>{esc(rt['footer'].format(run=run_label(path)))}</footer>")
    return document(title, "".join(body), lang=lang, css=CSS + (EXPLORER_CSS if explorer else ""))


def report_filename(record: runs.RunRecord, lang: str) -> str:
    """``report.html`` in the run's language; ``report.<lang>.html`` in the other one."""
    return REPORT_FILE if lang == record.output_options.lang else f"report.{lang}.html"


def write_report(
    run: runs.Run | Path | str,
    *,
    lang: str | None = None,
    min_cell_n: int | None = None,
    redraw_figures: bool | None = None,
) -> Path:
    """Write the self-contained HTML report of a run and return its path.

    Parameters
    ----------
    run : Run or path
        A run (or its folder: run.json, diagnostics.json, effects.csv, contrasts.csv,
        figures/).
    lang : {"nl", "en"}, optional
        Language; default the run's. The run's language goes to ``report.html``, the other
        to ``report.<lang>.html``.
    min_cell_n : int, optional
        Disclosure threshold; may raise the run's, never lower it, never below
        ``MIN_CELL_N_FLOOR``.
    redraw_figures : bool, optional
        Redraw Figures 1-6 and the crosses in memory; default: when ``lang`` or the
        threshold differs from the run's (the saved PNGs would not match).
    """
    run = runs.as_run(run)
    text = render_report(run, lang=lang, min_cell_n=min_cell_n, redraw_figures=redraw_figures)
    out = run.path / report_filename(run.record, labels.check_lang(lang or run.options.lang))
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out
