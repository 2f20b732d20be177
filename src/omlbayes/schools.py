"""School feedback: one self-contained HTML page per school and per region.

The factsheet's schools get a private digital feedback; this is ours, from the run folder
alone. For school s in region r at wave w the adjusted index is

    effect(region = r, wave = w) + u[s] (+ u[s, w] when the model has a school x wave term)

as posterior draws (``estimands.effect_draws`` gives the region and overall effects;
``1|school_id`` and ``1|school_id:wave`` the school deviations), next to the region
(``effect(region = r, wave = w)``) and all schools together (``effect(overall, w)``, named
by the monitor's area when the column map gives one). Waves and regions follow the levels
saved in the run record. Ranks are
computed per draw, so their interval shows how uncertain a league-table place is. Every
interval is the run's kind and probability (``OutputOptions``).

Disclosure control (``disclosure.py``, the same policy as the report): a school x wave cell
with fewer than ``min_cell_n`` students (or a count the run already blanked) shows no
estimate and no rank, only the mark "n < min_cell_n". No student-level data is read or
written. Each school gets its own page whatever its id: the file name is the sanitised id
plus a short hash of the raw id, so ids that differ only in punctuation never share a file.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import subprocess
import sys
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from omlbayes import disclosure, estimands, labels, runs  # noqa: E402
from omlbayes.errors import RunError  # noqa: E402
from omlbayes.options import OutputOptions  # noqa: E402
from omlbayes.plots.save import save_png  # noqa: E402
from omlbayes.report import (  # noqa: E402
    CSS,
    esc,
    figure_html,
    fmt_number,
    report_options,
    suppressed_mark,
    table_html,
)

SCHOOLS_DIR = "schools"
SCHOOL_TERM = "1|school_id"
SCHOOL_WAVE_TERM = "1|school_id:wave"
ALL = estimands.ALL_WAVES
COLOURS = {"school": "#1f3b73", "region": "#D55E00", "province": "#7f7f7f"}
DPI = 150

# School pages are written in parallel processes from this many schools on (starting a
# process costs a few seconds of imports; one page about 0.1 s), by at most this many.
PARALLEL_MIN_SCHOOLS = 150
PAGE_MAX_WORKERS = 4

PAGE_CSS = CSS + "td a{color:#1f3b73}.legend span{margin-right:14px}"


@dataclass(frozen=True)
class Cell:
    """One school (or region, province) x wave: summary of the draws, or suppressed."""

    wave: str
    n: int | None  # None when suppressed or not surveyed
    status: str  # "shown" | "suppressed" | "not_surveyed"
    mean: float = float("nan")
    lower: float = float("nan")
    upper: float = float("nan")
    rank_low: int | None = None
    rank_high: int | None = None
    n_ranked: int | None = None  # schools ranked in this wave


@dataclass(frozen=True)
class SchoolFeedback:
    school: str
    region: str
    cells: tuple[Cell, ...]
    region_cells: tuple[Cell, ...]
    province_cells: tuple[Cell, ...]
    overall: Cell  # all waves: value and rank among all shown schools
    n_ranked: int


def _summary(draws: np.ndarray, options: OutputOptions) -> tuple[float, float, float]:
    """Mean and the run's interval over the flattened draws."""
    flat = draws.reshape(-1)
    lo, hi = options.bounds(flat)
    return float(flat.mean()), lo, hi


def _rank_interval(ranks: np.ndarray, options: OutputOptions) -> tuple[int, int, int]:
    flat = ranks.reshape(-1)
    lo, hi = options.bounds(flat)
    return int(np.floor(lo)), int(np.round(np.median(flat))), int(np.ceil(hi))


def ranks_per_draw(values: np.ndarray) -> np.ndarray:
    """Rank of each school (last axis) in each draw; 1 = highest value."""
    order = np.argsort(-values, axis=-1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, values.shape[-1] + 1), axis=-1)
    return ranks


class _Draws:
    """Draws of named cells (chain, draw) looked up by key in O(1): one index built once,
    so thousands of schools x waves cost no scan of the coordinates per lookup."""

    def __init__(self, values: np.ndarray, keys) -> None:
        self.values = values  # (chain, draw, cell)
        self.index: dict = {}
        for k, key in enumerate(keys):
            self.index.setdefault(key, k)  # the first match, as a scan would find

    def get(self, key) -> np.ndarray | None:
        k = self.index.get(key)
        return None if k is None else self.values[..., k]


def _targets(effects: xr.DataArray) -> _Draws:
    """Effect draws by (breakdown, group, wave)."""
    keys = zip(
        effects["breakdown"].to_numpy(),
        effects["group"].to_numpy(),
        effects["wave"].to_numpy(),
        strict=True,
    )
    values = effects.transpose("chain", "draw", "target").to_numpy()
    return _Draws(values, keys)


def _school_term(posterior: xr.Dataset, term: str) -> _Draws:
    """Draws of a school term's cells by coordinate label (no cells when absent)."""
    if term not in posterior:
        return _Draws(np.empty((0, 0, 0)), ())
    var = posterior[term]
    dim = next(d for d in var.dims if d not in ("chain", "draw"))
    return _Draws(var.transpose("chain", "draw", dim).to_numpy(), var[dim].to_numpy())


def school_feedback(
    posterior: xr.Dataset,
    gcomp: xr.Dataset,
    schools: pd.DataFrame,
    *,
    options: OutputOptions,
    levels: dict[str, list[str]],
    seed: int = 0,
) -> list[SchoolFeedback]:
    """Every school's adjusted index per wave, its region's and the province's, with ranks.

    Parameters
    ----------
    posterior, gcomp : xarray.Dataset
        The run's ``posterior`` and ``gcomp`` groups.
    schools : pandas.DataFrame
        ``schools.csv``: school_id, region, wave, n (blank when under the run's threshold),
        suppressed.
    options : OutputOptions
        Interval kind and probability; school x wave cells with fewer than
        ``options.min_cell_n`` students (or blank counts) are suppressed.
    levels : dict
        The run's declared levels (run record): waves and regions keep their order.
    seed : int
        The run's seed (``effect_draws`` draws unsampled cells with it, as summarise did).
    """
    if SCHOOL_TERM not in posterior:
        raise RunError(f"the posterior has no {SCHOOL_TERM!r} term: no school feedback possible")
    effects = _targets(estimands.effect_draws(posterior, gcomp, seed=seed))
    school_draws = _school_term(posterior, SCHOOL_TERM)
    school_wave_draws = _school_term(posterior, SCHOOL_WAVE_TERM)
    table = schools.assign(
        school_id=schools["school_id"].astype(str),
        region=schools["region"].astype(str),
        wave=schools["wave"].astype(str),
    )
    n = pd.to_numeric(table["n"], errors="coerce")
    small = [disclosure.is_small(v, options.min_cell_n) for v in n]
    table["shown"] = ~np.asarray(small, dtype=bool) & ~table["suppressed"].astype(bool)
    table["n"] = n
    present_waves = set(table["wave"])
    gwaves = [w for w in dict.fromkeys(gcomp["wave"].to_numpy().astype(str)) if w != ALL]
    declared = list(levels.get("wave", ()))
    waves = [w for w in declared if w in gwaves] + [w for w in gwaves if w not in declared]
    waves = [w for w in waves if w in present_waves] or waves

    school_region = table.groupby("school_id", sort=True)["region"].first()
    shown_any = table.groupby("school_id")["shown"].any()
    ids = list(school_region.index)

    def value(school: str, region: str, wave: str) -> np.ndarray:
        base = effects.get(("region", region, wave))
        if base is None:
            raise RunError(f"the run has no region effect for {region!r} at wave {wave!r}")
        u = school_draws.get(school)
        if u is None:
            raise RunError(f"the posterior has no school effect for {school!r}")
        out = base + u
        if wave != ALL and (uw := school_wave_draws.get(f"{school}:{wave}")) is not None:
            out = out + uw
        return out

    # Ranks over all waves among schools with at least one shown wave; per wave among the
    # schools shown in that wave.
    ranked = [s for s in ids if shown_any.get(s, False)]
    overall_rank: dict[str, tuple[int, int, int]] = {}
    if ranked:
        stacked = np.stack([value(s, school_region[s], ALL) for s in ranked], axis=-1)
        ranks = ranks_per_draw(stacked)
        for k, s in enumerate(ranked):
            overall_rank[s] = _rank_interval(ranks[..., k], options)
    wave_rank: dict[tuple[str, str], tuple[int, int, int]] = {}
    wave_members: dict[str, int] = {}
    shown_cells = table[table["shown"]]
    for wave in waves:
        members = list(shown_cells.loc[shown_cells["wave"] == wave, "school_id"])
        if len(members) < 2:
            continue
        stacked = np.stack([value(s, school_region[s], wave) for s in members], axis=-1)
        ranks = ranks_per_draw(stacked)
        wave_members[wave] = len(members)
        for k, s in enumerate(members):
            wave_rank[(s, wave)] = _rank_interval(ranks[..., k], options)

    def context_cells(breakdown: str, group: str) -> tuple[Cell, ...]:
        cells = []
        for wave in (*waves, ALL):
            draws = effects.get((breakdown, group, wave))
            if draws is None:
                cells.append(Cell(wave, None, "not_surveyed"))
                continue
            m, lo, hi = _summary(draws, options)
            cells.append(Cell(wave, None, "shown", m, lo, hi))
        return tuple(cells)

    province = context_cells("overall", "all")
    region_cache: dict[str, tuple[Cell, ...]] = {}
    out = []
    rows_of = {s: rows.set_index("wave") for s, rows in table.groupby("school_id", sort=False)}
    for s in ids:
        region = school_region[s]
        if region not in region_cache:
            region_cache[region] = context_cells("region", region)
        rows = rows_of[s]
        cells = []
        for wave in waves:
            if wave not in rows.index:
                cells.append(Cell(wave, None, "not_surveyed"))
                continue
            row = rows.loc[wave]
            if not bool(row["shown"]):
                cells.append(Cell(wave, None, "suppressed"))
                continue
            m, lo, hi = _summary(value(s, region, wave), options)
            rank = wave_rank.get((s, wave))
            cells.append(
                Cell(
                    wave,
                    int(row["n"]),
                    "shown",
                    m,
                    lo,
                    hi,
                    rank[0] if rank else None,
                    rank[2] if rank else None,
                    wave_members.get(wave),
                )
            )
        if s in overall_rank:
            m, lo, hi = _summary(value(s, region, ALL), options)
            lo_r, med_r, hi_r = overall_rank[s]
            overall = Cell(ALL, med_r, "shown", m, lo, hi, lo_r, hi_r, len(ranked))
        else:
            overall = Cell(ALL, None, "suppressed")
        out.append(
            SchoolFeedback(
                s, region, tuple(cells), region_cache[region], province, overall, len(ranked)
            )
        )
    return out


# ---------------------------------------------------------------------------------------
# Figures and pages.


def _wave_text(wave: str, lang: str) -> str:
    return labels.SCHOOL_TEXT[lang]["all_waves"] if wave == ALL else labels.level(wave, lang)


def forest_png(
    series: list[tuple[str, str, tuple[Cell, ...]]], *, options: OutputOptions, title: str
) -> bytes:
    """A forest figure: waves top to bottom, one marker + interval line per series.

    ``series`` holds (label, colour, cells); cells of each series are in the same wave order.
    """
    lang = options.lang
    waves = [c.wave for c in series[0][2]]
    k = len(series)
    step = 0.22 if k > 1 else 0.0
    fig = Figure(figsize=(7.2, 0.42 * len(waves) + 1.5), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    ax.axvline(0.0, color="#555555", linewidth=0.9, zorder=1)
    finite = [
        v for _, _, cells in series for c in cells for v in (c.lower, c.upper) if np.isfinite(v)
    ]
    limit = max(0.25, 1.1 * max((abs(v) for v in finite), default=0.25))
    for j, (name, colour, cells) in enumerate(series):
        offset = (j - (k - 1) / 2) * step
        shown = []  # one line collection and one marker line per series: hundreds of
        for y, cell in enumerate(cells):  # pages, so few artists per figure
            yy = y + offset
            if cell.status == "suppressed":
                ax.text(
                    0.0,
                    yy,
                    options.suppressed_text(),
                    ha="center",
                    va="center",
                    fontsize=7.5,
                    color="#777777",
                    style="italic",
                )
            elif cell.status == "shown" and np.isfinite(cell.mean):
                shown.append((yy, cell.lower, cell.upper, cell.mean))
        if not shown:
            continue
        yy, lower, upper, mean = (list(v) for v in zip(*shown, strict=True))
        ax.hlines(yy, lower, upper, color=colour, linewidth=1.8, zorder=2)
        ax.plot(
            mean,
            yy,
            linestyle="none",
            marker="D",
            markersize=6,
            color=colour,
            markeredgecolor="white",
            markeredgewidth=0.6,
            zorder=3,
            label=name,
        )
    ax.set_yticks(range(len(waves)), [_wave_text(w, lang) for w in waves], fontsize=9)
    ax.set_ylim(len(waves) - 0.5, -0.5)
    ax.set_xlim(-limit, limit)
    ax.set_xlabel(labels.SCHOOL_TEXT[lang]["xlabel"], fontsize=9)
    ax.grid(axis="x", color="#e5e5e5", linewidth=0.6)
    ax.tick_params(axis="y", length=0)
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles, strict=True))
    if unique:
        fig.legend(
            unique.values(),
            unique.keys(),
            loc="outside lower center",
            ncols=len(unique),
            frameon=False,
            fontsize=8.5,
        )
    fig.suptitle(title, x=0.01, ha="left", fontsize=10.5)
    ax.set_title(
        labels.LINE_IS_TEXT[lang].format(interval=options.interval_short()),
        loc="right",
        fontsize=8,
        color="#555555",
    )
    buf = io.BytesIO()
    save_png(fig, buf)
    return buf.getvalue()


def safe_name(value: str) -> str:
    """A readable, file-system-safe stem of ``value`` plus a short hash of the raw value:
    unique per value (``"A/B"`` and ``"A_B"`` differ), the same in every run."""
    ascii_text = unicodedata.normalize("NFKD", str(value)).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", ascii_text).strip("_")[:40] or "x"
    digest = hashlib.sha256(str(value).encode("utf-8")).hexdigest()[:8]
    return f"{stem}-{digest}"


def school_file(school: str) -> str:
    return f"school-{safe_name(school)}.html"


def region_file(region: str) -> str:
    return f"region-{safe_name(region)}.html"


def _estimate_text(cell: Cell, lang: str) -> str:
    return (
        f"{fmt_number(cell.mean, lang=lang, sign=True)} "
        f"({fmt_number(cell.lower, lang=lang, sign=True)} – "
        f"{fmt_number(cell.upper, lang=lang, sign=True)})"
    )


def _page(title: str, body: str, *, lang: str) -> str:
    return (
        f"<!DOCTYPE html><html lang='{lang}'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(title)}</title><style>{PAGE_CSS}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


def _banner(diagnostics: dict, lang: str) -> str:
    if diagnostics.get("passed"):
        return ""
    text = labels.SCHOOL_TEXT[lang]["diagnostics_failed"]
    return (
        "<div class='banner failed' role='alert' id='diagnostics-failed'>"
        f"<strong>{esc(text)}</strong></div>"
    )


def school_page(
    fb: SchoolFeedback, *, options: OutputOptions, diagnostics: dict, own_trend: bool = True
) -> str:
    """One school's page; ``own_trend`` False (no school x wave term in the model) says
    that the per-wave values follow the region's trend."""
    lang, min_cell_n = options.lang, options.min_cell_n
    tx = labels.SCHOOL_TEXT[lang]
    region = labels.level(fb.region, lang)
    title = tx["title"].format(school=fb.school)
    body = [_banner(diagnostics, lang), f"<h1>{esc(title)}</h1>"]
    intro = tx["intro"].format(
        region=region, interval=options.interval_short(), whole=options.whole()
    )
    body.append(f"<p>{esc(intro)}</p>")
    if not own_trend:
        body.append(f"<p class='model-implied'>{esc(tx['trend_from_region'])}</p>")
    body.append(f"<p>{esc(tx['shrinkage'])}</p>")
    shown = [c for c in fb.cells if c.status == "shown"]
    if not shown:
        body.append(f"<p class='sup'>{esc(tx['all_suppressed'].format(n=min_cell_n))}</p>")
    else:
        o = fb.overall
        body.append(
            "<p class='rank'><strong>"
            + esc(
                tx["rank"].format(
                    low=o.rank_low,
                    high=o.rank_high,
                    n=fb.n_ranked,
                    median=o.n,
                    prob=options.percent_text(),
                )
            )
            + f"</strong> {esc(tx['rank_note'])}</p>"
        )
        school_cells = (*fb.cells, fb.overall)
        png = forest_png(
            [
                (fb.school, COLOURS["school"], school_cells),
                (region, COLOURS["region"], fb.region_cells),
                (options.whole_short(), COLOURS["province"], fb.province_cells),
            ],
            options=options,
            title=f"{labels.INDEX_TEXT[lang]} — {fb.school}",
        )
        body.append(figure_html(png, caption=title, name=school_file(fb.school)))
    estimate = tx["estimate"].format(interval=options.interval_short())
    rank_head = tx["rank_head"].format(interval=options.interval_short())
    rows = []
    region_by_wave = {c.wave: c for c in fb.region_cells}
    province_by_wave = {c.wave: c for c in fb.province_cells}
    for cell in (*fb.cells, fb.overall):
        if cell.status == "shown":
            n_text = f"<span class='n'>{cell.n}</span>" if cell.wave != ALL else ""
            est = esc(_estimate_text(cell, lang))
            rank = (
                f"{cell.rank_low}–{cell.rank_high} / {cell.n_ranked}"
                if cell.rank_low is not None
                else ""
            )
        elif cell.status == "suppressed":
            n_text, est, rank = suppressed_mark(options), "", ""
        else:
            n_text, est, rank = f"<span class='sup'>{esc(tx['not_surveyed'])}</span>", "", ""
        reg, prov = region_by_wave.get(cell.wave), province_by_wave.get(cell.wave)
        rows.append(
            [
                esc(_wave_text(cell.wave, lang)),
                n_text,
                est,
                esc(rank),
                esc(_estimate_text(reg, lang)) if reg and reg.status == "shown" else "",
                esc(_estimate_text(prov, lang)) if prov and prov.status == "shown" else "",
            ]
        )
    body.append(
        table_html(
            [
                tx["wave"],
                tx["n"],
                f"{esc(fb.school)}: {esc(estimate)}",
                esc(rank_head),
                f"{esc(region)}",
                esc(options.whole_short()),
            ],
            rows,
            numeric={1, 2, 3, 4, 5},
            cls="school",
        )
    )
    body.append(f"<p class='small'>{esc(tx['disclosure'].format(n=min_cell_n))}</p>")
    body.append(
        f"<p><a href='{region_file(fb.region)}'>{esc(region)}</a> · "
        f"<a href='index.html'>{esc(tx['back'])}</a></p>"
    )
    return _page(title, "".join(body), lang=lang)


def region_page(
    region: str, members: list[SchoolFeedback], *, options: OutputOptions, diagnostics: dict
) -> str:
    lang, min_cell_n = options.lang, options.min_cell_n
    tx = labels.SCHOOL_TEXT[lang]
    name = labels.level(region, lang)
    title = tx["region_title"].format(region=name)
    body = [_banner(diagnostics, lang), f"<h1>{esc(title)}</h1>"]
    first = members[0]
    png = forest_png(
        [
            (name, COLOURS["region"], first.region_cells),
            (options.whole_short(), COLOURS["province"], first.province_cells),
        ],
        options=options,
        title=f"{labels.INDEX_TEXT[lang]} — {name}",
    )
    body.append(figure_html(png, caption=title, name=region_file(region)))
    body.append(f"<p>{esc(tx['shrinkage'])}</p><h2>{esc(tx['schools_in_region'])}</h2>")
    rows = []
    for fb in sorted(members, key=lambda f: f.school):
        o = fb.overall
        link = f"<a href='{school_file(fb.school)}'>{esc(fb.school)}</a>"
        if o.status == "shown":
            rows.append(
                [
                    link,
                    esc(_estimate_text(o, lang)),
                    esc(f"{o.rank_low}–{o.rank_high} / {fb.n_ranked}"),
                ]
            )
        else:
            rows.append([link, suppressed_mark(options), ""])
    body.append(
        table_html(
            [
                tx["school"],
                f"{tx['all_waves']}: "
                + esc(tx["estimate"].format(interval=options.interval_short())),
                esc(tx["rank_head"].format(interval=options.interval_short())),
            ],
            rows,
            numeric={1, 2},
            cls="region",
        )
    )
    body.append(f"<p class='small'>{esc(tx['disclosure'].format(n=min_cell_n))}</p>")
    body.append(f"<p><a href='index.html'>{esc(tx['back'])}</a></p>")
    return _page(title, "".join(body), lang=lang)


def index_page(
    feedback: list[SchoolFeedback],
    *,
    options: OutputOptions,
    diagnostics: dict,
    region_order: tuple[str, ...] = (),
) -> str:
    lang = options.lang
    tx = labels.SCHOOL_TEXT[lang]
    regions = list(dict.fromkeys(fb.region for fb in feedback))
    order = [r for r in region_order if r in regions] + [
        r for r in regions if r not in region_order
    ]
    body = [_banner(diagnostics, lang), f"<h1>{esc(tx['index_title'])}</h1>"]
    for r in order:
        body.append(
            f"<h2><a href='{region_file(r)}'>{esc(labels.level(r, lang))}</a></h2><p>"
            + " · ".join(
                f"<a href='{school_file(fb.school)}'>{esc(fb.school)}</a>"
                for fb in sorted(feedback, key=lambda f: f.school)
                if fb.region == r
            )
            + "</p>"
        )
    return _page(tx["index_title"], "".join(body), lang=lang)


def _write_school_batch(
    batch: list[tuple[Path, SchoolFeedback]],
    options: OutputOptions,
    diagnostics: dict,
    own_trend: bool,
) -> None:
    for page, fb in batch:
        page.write_text(
            school_page(fb, options=options, diagnostics=diagnostics, own_trend=own_trend),
            encoding="utf-8",
        )


def page_workers(n_schools: int) -> int:
    """Processes for the school pages: one per usable core (at most PAGE_MAX_WORKERS) when
    there are enough schools to repay starting them, else 1 (this process)."""
    if n_schools < PARALLEL_MIN_SCHOOLS:
        return 1
    return max(1, min(PAGE_MAX_WORKERS, len(os.sched_getaffinity(0))))


def _write_school_files(
    pages: list[tuple[Path, SchoolFeedback]],
    *,
    options: OutputOptions,
    diagnostics: dict,
    own_trend: bool,
    workers: int,
) -> None:
    """Each school's page (a figure each: the bulk of the cost with hundreds of schools),
    shared between this process and ``workers - 1`` worker processes. Every page depends
    only on its own feedback, so the files are the same whatever the number of workers.

    The workers are plain ``python -c`` processes that read their share from a pickle
    file: no multiprocessing start method re-imports the caller's main script, and no fork
    copies a process that ran threaded samplers.
    """
    batches = [pages[k::workers] for k in range(max(1, workers))]
    with tempfile.TemporaryDirectory(prefix="omlbayes-pages-") as tmp:
        procs = []
        for k, batch in enumerate(batches[1:], start=1):
            job = Path(tmp) / f"batch{k}.pkl"
            job.write_bytes(pickle.dumps((batch, options, diagnostics, own_trend)))
            log = (Path(tmp) / f"batch{k}.log").open("wb")
            procs.append((subprocess.Popen([sys.executable, "-c", _WORKER, str(job)],
                                           stdout=log, stderr=log), log))  # fmt: skip
        try:
            _write_school_batch(batches[0], options, diagnostics, own_trend)
        finally:
            failed = []
            for proc, log in procs:
                proc.wait()
                log.close()
                if proc.returncode != 0:
                    lines = Path(log.name).read_text(errors="replace").strip().splitlines()
                    failed.append(lines[-1] if lines else f"exit code {proc.returncode}")
        if failed:
            raise RunError(f"writing the school pages failed in a worker process: {failed[0]}")


_WORKER = "import sys; from omlbayes.schools import page_worker; page_worker(sys.argv[1])"


def page_worker(job: str) -> None:
    """A worker process's entry: write the school pages pickled in ``job``."""
    batch, options, diagnostics, own_trend = pickle.loads(Path(job).read_bytes())
    _write_school_batch(batch, options, diagnostics, own_trend)


def write_school_pages(
    run_dir: Path | str,
    *,
    lang: str | None = None,
    min_cell_n: int | None = None,
    workers: int | None = None,
) -> list[Path]:
    """Write ``schools/`` in a run folder: index.html, one page per region and per school.

    ``workers``: processes for the school pages (default :func:`page_workers`); the files
    are the same for any number. Returns the paths written (index first, then regions,
    then schools).
    """
    path = Path(run_dir)
    run = runs.read_run(path)
    record = run.record
    options = report_options(record, lang=lang, min_cell_n=min_cell_n)
    if "gcomp" not in run.tree.children:
        raise RunError(f"{path}: this run has no adjusted-mean weights (a --formula run)")
    if not (path / "schools.csv").is_file():
        raise RunError(f"{path}: no schools.csv in this run")
    schools = pd.read_csv(
        path / "schools.csv",
        dtype={"school_id": str, "wave": str, "region": str},
        keep_default_na=False,
        na_values={"n": [""]},
    )
    feedback = school_feedback(
        run.tree["posterior"].to_dataset(),
        run.tree["gcomp"].to_dataset(),
        schools,
        options=options,
        levels=record.levels,
        seed=record.seed,
    )
    files = [school_file(fb.school) for fb in feedback]
    if len(set(files)) != len(files):  # a hash collision: never let one page overwrite another
        raise RunError(f"{path}: two schools map to the same page name; rename one school id")
    out = path / SCHOOLS_DIR
    out.mkdir(exist_ok=True)
    written = []
    index = out / "index.html"
    index.write_text(
        index_page(
            feedback,
            options=options,
            diagnostics=run.diagnostics,
            region_order=tuple(record.levels.get("region", ())),
        ),
        encoding="utf-8",
    )
    written.append(index)
    for region in dict.fromkeys(fb.region for fb in feedback):
        members = [fb for fb in feedback if fb.region == region]
        page = out / region_file(region)
        page.write_text(
            region_page(region, members, options=options, diagnostics=run.diagnostics),
            encoding="utf-8",
        )
        written.append(page)
    pages = [(out / school_file(fb.school), fb) for fb in feedback]
    _write_school_files(
        pages,
        options=options,
        diagnostics=run.diagnostics,
        own_trend=SCHOOL_WAVE_TERM in run.tree["posterior"].data_vars,
        workers=page_workers(len(pages)) if workers is None else workers,
    )
    written.extend(page for page, _ in pages)
    return written
