"""Run folder -> ``report.html``: one self-contained page in the factsheet's structure.

Everything comes from the run folder (run.json, diagnostics.json, the tables and the
figures); nothing is fitted here. The findings ("Resultaten in het kort") are written from
``contrasts.csv`` and ``effects.csv`` by :func:`build_findings`, with the plain-language
direction of :func:`direction_phrase`, so they follow whatever data the run was fitted on.
Figures are embedded as base64 PNG and the CSS is inline: the file needs nothing else.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from omlbayes import labels, runs, schema
from omlbayes.constants import (
    CI_KIND,
    CI_PROB,
    MIN_CELL_N,
    MIN_CELL_N_FLOOR,
    PD_LIKELY,
    PD_VERY_LIKELY,
)
from omlbayes.errors import RunError, SpecError
from omlbayes.estimands import GAP_CHANGE
from omlbayes.summarise import touches_cells

REPORT_FILE = "report.html"
ALL = "all"
OVERALL = "overall"
MINUS = "\u2212"
DISPLAY_SCALE = 0.72  # CSS px per PNG px for the 150-dpi figures

# Figures in the order of the factsheet; anything else found in figures/ follows.
FACTSHEET_FIGURES = (
    ("fig2_wave.png", "fig2"),
    ("fig3_school_type.png", "fig3"),
    ("fig4_gender.png", "fig4"),
    ("fig5_parent_edu.png", "fig5"),
    ("fig6_region.png", "fig6"),
)
DIAGNOSTIC_FIGURES = ("rank_hyper.png", "energy.png", "ppc_index.png", "prior_predictive.png")

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:0;
background:#f4f5f7;color:#1d2330;line-height:1.45}
main{max-width:1080px;margin:0 auto;background:#fff;padding:28px 40px 40px}
h1{font-size:1.6em;margin:0 0 6px;color:#1f3b73}
h2{font-size:1.3em;margin-top:2em;border-bottom:2px solid #1f3b73;padding-bottom:3px;
color:#1f3b73}
h3{font-size:1.08em;margin-top:1.4em}
.subtitle{color:#555;margin-top:0}
.banner{padding:14px 18px;border-radius:4px;margin:14px 0 18px}
.banner.failed{background:#b00020;color:#fff;border:3px solid #7a0016;font-size:1.05em}
.banner.failed strong{display:block;font-size:1.35em;letter-spacing:.02em;margin-bottom:4px}
.banner.passed{background:#e7f4ea;color:#14532d;border:1px solid #9fd3ad}
table{border-collapse:collapse;margin:8px 0 14px;font-size:.9em}
th,td{border-bottom:1px solid #dde1e7;padding:4px 9px;text-align:left;vertical-align:top}
th{background:#eef1f6}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.num{white-space:nowrap}
td.sup,span.sup{color:#777;font-style:italic}
figure{margin:16px 0 26px}
figure img{max-width:100%;height:auto;border:1px solid #e3e6ea}
figcaption{font-size:.9em;color:#333;margin-top:4px;font-weight:600}
.finding-block{margin:12px 0 18px}
.finding-block h3{margin-bottom:2px}
p.factsheet{color:#6b7280;font-size:.9em;margin:2px 0 6px;font-style:italic}
ul.findings{margin:4px 0;padding-left:22px}
ul.findings li{margin:3px 0}
.ph-vh{font-weight:700}
.ph-p{font-weight:600}
nav ol{columns:2;font-size:.95em}
code{font-size:.85em;background:#f1f3f6;padding:1px 4px;border-radius:3px;
overflow-wrap:anywhere}
.small{font-size:.85em;color:#555}
footer{margin-top:30px;font-size:.8em;color:#777}
"""


# ---------------------------------------------------------------------------------------
# Plain-language direction: the one place that maps p_direction to words.


def direction_key(mean: float, p_direction: float) -> str:
    """``very_likely_higher`` ... ``no_clear_difference`` for a difference and its pd.

    ``p_direction >= PD_VERY_LIKELY`` (0.975; with an equal-tailed 95% interval the same as
    "the interval excludes 0", the factsheet's "significant") -> very likely;
    ``>= PD_LIKELY`` (0.90) -> probably; otherwise no clear difference.
    """
    if not (np.isfinite(mean) and np.isfinite(p_direction)):
        raise SpecError("direction_key needs a finite mean and p_direction (suppressed cell?)")
    if not 0.0 <= p_direction <= 1.0:
        raise SpecError(f"p_direction must be between 0 and 1, got {p_direction}")
    side = "higher" if mean > 0 else "lower"
    if p_direction >= PD_VERY_LIKELY and mean != 0:
        return f"very_likely_{side}"
    if p_direction >= PD_LIKELY and mean != 0:
        return f"probably_{side}"
    return "no_clear_difference"


def direction_phrase(mean: float, p_direction: float, *, lang: str) -> str:
    """The words for :func:`direction_key` in ``lang`` ("very likely higher", ...)."""
    return labels.DIRECTION_TEXT[labels.check_lang(lang)][direction_key(mean, p_direction)]


# ---------------------------------------------------------------------------------------
# Number formatting (shared with schools.py and the tests).


def fmt_number(value: float, *, lang: str, digits: int = 2, sign: bool = False) -> str:
    """``-0.123`` -> ``"−0.12"`` (en) / ``"−0,12"`` (nl); ``sign`` adds ``+`` to positives."""
    if not np.isfinite(value):
        return "–"
    rounded = round(float(value), digits)
    if rounded == 0:
        rounded = 0.0  # no "-0.00"
    text = f"{abs(rounded):.{digits}f}"
    if lang == "nl":
        text = text.replace(".", ",")
    if rounded < 0:
        return MINUS + text
    return ("+" + text) if sign else text


def fmt_pd(p_direction: float, *, lang: str) -> str:
    """Probability of direction as a percentage, rounded DOWN to 0.1 so that the shown
    number is never above a threshold the value does not reach (97.49% -> "97.4%")."""
    pct = math.floor(float(p_direction) * 1000 + 1e-9) / 10
    text = f"{pct:.1f}%"
    return text.replace(".", ",") if lang == "nl" else text


def parse_number(text: str) -> float:
    """Inverse of :func:`fmt_number` (for tests and checks)."""
    return float(text.replace(MINUS, "-").replace(",", ".").replace("+", "").rstrip("%"))


# ---------------------------------------------------------------------------------------
# Findings from the posterior tables.


@dataclass(frozen=True)
class Sentence:
    """One finding sentence and the table row(s) it was written from."""

    text: str
    kind: str  # "contrast" | "extremes" | "largest_gap" | "suppressed"
    keys: dict[str, str] = field(default_factory=dict)
    phrase_key: str = ""


@dataclass(frozen=True)
class Block:
    key: str
    title: str
    factsheet: str
    sentences: tuple[Sentence, ...]


class _Tables:
    """Lookups into effects.csv and contrasts.csv."""

    def __init__(self, effects: pd.DataFrame, contrasts: pd.DataFrame, *, lang: str) -> None:
        self.lang = lang
        self.effects = effects.assign(
            group=effects["group"].astype(str), wave=effects["wave"].astype(str)
        )
        c = contrasts.assign(
            group=contrasts["group"].astype(str),
            wave=contrasts["wave"].astype(str),
            reference=contrasts["reference"].astype(str),
            reference_group=contrasts["reference_group"].astype(str),
        )
        self.contrast_index = {}
        self.gap_change_index = {}
        for r in c.itertuples(index=False):
            index = self.gap_change_index if r.kind == GAP_CHANGE else self.contrast_index
            index[(r.breakdown, r.group, r.wave, r.reference_group, r.reference)] = r
        self.effect_index = {
            (r.breakdown, r.group, r.wave): r for r in self.effects.itertuples(index=False)
        }
        self.min_cell_n = MIN_CELL_N

    def groups(self, breakdown: str) -> list[str]:
        present = list(
            dict.fromkeys(self.effects.loc[self.effects.breakdown == breakdown, "group"])
        )
        parts = breakdown.split(" x ") if breakdown != OVERALL else []
        if len(parts) == 1:
            declared = schema.Levels().of(parts[0]) if hasattr(schema.Levels(), parts[0]) else ()
            return [g for g in declared if g in present] + [g for g in present if g not in declared]
        return present

    def contrast(self, b: str, g: str, w: str, rg: str, r: str, *, gap_change: bool = False):
        """(row, flipped) for effect(g, w) - effect(rg, r), or with ``gap_change`` for the
        change of g from r to w minus that of rg, from either stored direction; flipped
        rows hold the negated value (a gap change is stored as rg against g, same waves)."""
        index = self.gap_change_index if gap_change else self.contrast_index
        reverse = (b, rg, w, g, r) if gap_change else (b, rg, r, g, w)
        for key, flipped in (((b, g, w, rg, r), False), (reverse, True)):
            row = index.get(key)
            if row is not None:
                return row, flipped
        return None, False

    def effect(self, b: str, g: str, w: str):
        return self.effect_index.get((b, g, w))


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def _wave_label(wave: str, lang: str) -> str:
    return labels.SENTENCE_TEXT[lang]["all_waves"] if wave == ALL else labels.level(wave, lang)


def _interval_name(kind: str, prob: float, lang: str) -> str:
    return labels.REPORT_TEXT[lang][kind].format(prob=f"{100 * prob:g}")


def _contrast_sentence(
    t: _Tables,
    b: str,
    g: str,
    w: str,
    rg: str,
    r: str,
    *,
    subject: str,
    comparison: str,
    gap_change: bool = False,
) -> Sentence | None:
    """A sentence for effect(g, w) - effect(rg, r), or with ``gap_change`` for the change
    of g from r to w minus that of rg; None if the run does not have it."""
    lang = t.lang
    row, flipped = t.contrast(b, g, w, rg, r, gap_change=gap_change)
    if row is None:
        return None
    keys = {
        "breakdown": b,
        "group": row.group,
        "wave": row.wave,
        "reference_group": row.reference_group,
        "reference": row.reference,
        "flipped": "1" if flipped else "0",
    }
    st = labels.SENTENCE_TEXT[lang]
    if bool(row.suppressed) or not np.isfinite(row.mean):
        text = st["suppressed"].format(subject=subject, comparison=comparison, n=t.min_cell_n)
        return Sentence(_cap(text), "suppressed", keys)
    mean, lower, upper = float(row.mean), float(row.lower), float(row.upper)
    if flipped:
        mean, lower, upper = -mean, -upper, -lower
    key = direction_key(mean, float(row.p_direction))
    text = st["sentence"].format(
        subject=subject,
        comparison=comparison,
        phrase=f"<span class='ph-{_ph_class(key)}'>{labels.DIRECTION_TEXT[lang][key]}</span>",
        mean=fmt_number(mean, lang=lang, sign=True),
        interval_short=st["interval_short"],
        lower=fmt_number(lower, lang=lang, sign=True),
        upper=fmt_number(upper, lang=lang, sign=True),
        pd=fmt_pd(float(row.p_direction), lang=lang),
    )
    return Sentence(_cap(text), "contrast", keys, key)


def _ph_class(key: str) -> str:
    return "vh" if key.startswith("very") else ("p" if key.startswith("prob") else "n")


def _group_text(breakdown: str, group: str, lang: str) -> str:
    return labels.level(group, lang)


def _wave_sentence(t: _Tables, b: str, g: str, w: str, ref: str) -> Sentence | None:
    lang = t.lang
    subject = _group_text(b, g, lang)
    comparison = labels.SENTENCE_TEXT[lang]["wave_vs"].format(
        wave=_wave_label(w, lang), reference=_wave_label(ref, lang)
    )
    return _contrast_sentence(t, b, g, w, g, ref, subject=subject, comparison=comparison)


def _gap_change_sentence(t: _Tables, b: str, g: str, rg: str, w: str, r: str) -> Sentence | None:
    """Did g change more than rg from wave r to wave w (a difference in differences)?"""
    st = labels.SENTENCE_TEXT[t.lang]
    subject = st["change"].format(wave=_wave_label(w, t.lang), reference=_wave_label(r, t.lang))
    comparison = st["groups_vs"].format(
        group=labels.level(g, t.lang), reference_group=labels.level(rg, t.lang)
    )
    return _contrast_sentence(
        t, b, g, w, rg, r, subject=subject, comparison=comparison, gap_change=True
    )


def _between_sentence(t: _Tables, b: str, g: str, rg: str, *, wave: str = ALL) -> Sentence | None:
    """Two cells of a breakdown compared in one wave; for a cross cell the shared factor
    becomes the subject ("vwo: boys compared with girls")."""
    lang = t.lang
    gp, rp = g.split(":"), rg.split(":")
    shared = [a for a, c in zip(gp, rp, strict=True) if a == c]
    diff_g = ":".join(a for a, c in zip(gp, rp, strict=True) if a != c)
    diff_r = ":".join(c for a, c in zip(gp, rp, strict=True) if a != c)
    subject = labels.level(":".join(shared), lang) if shared else labels.column(b, lang)
    comparison = labels.SENTENCE_TEXT[lang]["group_vs"].format(
        group=labels.level(diff_g, lang),
        reference_group=labels.level(diff_r, lang),
        wave=_wave_label(wave, lang),
    )
    return _contrast_sentence(t, b, g, wave, rg, wave, subject=subject, comparison=comparison)


def _extremes(t: _Tables, b: str, groups: list[str], *, subject: str) -> tuple[str, str] | None:
    """(best, worst) group over all waves among ``groups`` (unsuppressed only)."""
    rows = [(g, t.effect(b, g, ALL)) for g in groups]
    rows = [(g, r) for g, r in rows if r is not None and np.isfinite(r.mean)]
    if len(rows) < 2:
        return None
    best = max(rows, key=lambda gr: gr[1].mean)[0]
    worst = min(rows, key=lambda gr: gr[1].mean)[0]
    return best, worst


def _extremes_sentence(
    t: _Tables, b: str, groups: list[str], *, subject: str, strip: str | None = None
) -> tuple[Sentence | None, tuple[str, str] | None]:
    ext = _extremes(t, b, groups, subject=subject)
    if ext is None:
        return None, None
    best, worst = ext
    lang = t.lang

    def name(g: str) -> str:
        parts = [p for p in g.split(":") if p != strip]
        return labels.level(":".join(parts), lang)

    text = labels.SENTENCE_TEXT[lang]["highest"].format(
        subject=subject,
        best=name(best),
        best_mean=fmt_number(t.effect(b, best, ALL).mean, lang=lang, sign=True),
        worst=name(worst),
        worst_mean=fmt_number(t.effect(b, worst, ALL).mean, lang=lang, sign=True),
    )
    keys = {"breakdown": b, "best": best, "worst": worst, "wave": ALL}
    return Sentence(_cap(text), "extremes", keys), ext


def _cells_with(t: _Tables, b: str, level: str, position: int) -> list[str]:
    """Cross cells of ``b`` whose part at ``position`` is ``level``, in declared order."""
    parts = b.split(" x ")
    other = parts[1 - position]
    declared = schema.Levels().of(other) if other in schema.CATEGORICAL_COLUMNS else ()
    cells = [g for g in t.groups(b) if g.split(":")[position] == level]

    def order(g: str) -> int:
        lvl = g.split(":")[1 - position]
        return declared.index(lvl) if lvl in declared else len(declared)

    return sorted(cells, key=order)


def _levels_of(t: _Tables, column: str) -> list[str]:
    return t.groups(column)


def _cross_level(t: _Tables, b: str, position: int) -> list[str]:
    parts = b.split(" x ")
    present = list(dict.fromkeys(g.split(":")[position] for g in t.groups(b)))
    declared = (
        schema.Levels().of(parts[position]) if parts[position] in schema.CATEGORICAL_COLUMNS else ()
    )
    return [v for v in declared if v in present] + [v for v in present if v not in declared]


def _lowest_against_the_rest(
    t: _Tables, cross: str, cells: list[str], level: str, lang: str
) -> list[Sentence | None]:
    """The extremes among ``cells`` (all sharing ``level``), then the lowest against each other."""
    sentence, ext = _extremes_sentence(
        t, cross, cells, subject=labels.level(level, lang), strip=level
    )
    if ext is None:
        return [sentence]
    worst = ext[1]
    return [sentence] + [_between_sentence(t, cross, worst, g) for g in cells if g != worst]


def build_findings(effects: pd.DataFrame, contrasts: pd.DataFrame, *, lang: str) -> list[Block]:
    """The factsheet's kinds of statement, each written from the posterior tables.

    Every sentence gives the direction in plain words (:func:`direction_phrase`), the size
    in SD units, the interval and the probability of direction. A statement whose waves or
    groups are not in the run is left out; a suppressed one says so.
    """
    labels.check_lang(lang)
    t = _Tables(effects, contrasts, lang=lang)
    texts = labels.FINDING_TEXT[lang]
    blocks: list[Block] = []

    def block(key: str, sentences: Iterable[Sentence | None]) -> None:
        kept = tuple(s for s in sentences if s is not None)
        if kept:
            title, claim = texts[key]
            blocks.append(Block(key, title, claim, kept))

    def waves(b: str, g: str, pairs: Iterable[tuple[str, str]]) -> list[Sentence | None]:
        return [_wave_sentence(t, b, g, w, r) for w, r in pairs]

    # 1-3: the overall trend, 2020 and 2022.
    block("trend", waves(OVERALL, ALL, [("2016", "2014"), ("2018", "2016"), ("2018", "2014")]))
    block("closure", waves(OVERALL, ALL, [("2020_1", "2020_0"), ("2020_1", "2020_2")]))
    block("recovery", waves(OVERALL, ALL, [("2022", "2020_2"), ("2022", "2018")]))

    # 4-5: school types.
    types = _levels_of(t, "school_type")
    st_lines: list[Sentence | None] = []
    ext_sentence, ext = _extremes_sentence(
        t, "school_type", types, subject=labels.column("school_type", lang)
    )
    st_lines.append(ext_sentence)
    if ext is not None:
        best = ext[0]
        st_lines += [_between_sentence(t, "school_type", best, g) for g in types if g != best]
        st_lines += waves("school_type", best, [("2018", "2016"), ("2022", "2018")])
    block("school_type", st_lines)
    block(
        "school_type_2020",
        [s for g in types for s in waves("school_type", g, [("2020_2", "2020_1")])],
    )

    # 6-7: gender.
    genders = _levels_of(t, "gender")
    g_lines: list[Sentence | None] = []
    if len(genders) == 2:
        first, second = genders
        g_lines.append(_between_sentence(t, "gender", first, second))
        cross = "gender x school_type"
        gaps = []
        for st in _cross_level(t, cross, 1):
            s = _between_sentence(t, cross, f"{first}:{st}", f"{second}:{st}")
            g_lines.append(s)
            row, flipped = t.contrast(cross, f"{first}:{st}", ALL, f"{second}:{st}", ALL)
            if s is not None and s.kind == "contrast":
                gaps.append((abs(row.mean), st, s))
        if gaps:
            _, where, s = max(gaps, key=lambda x: x[0])
            row, flipped = t.contrast(cross, f"{first}:{where}", ALL, f"{second}:{where}", ALL)
            mean = -row.mean if flipped else row.mean
            text = labels.SENTENCE_TEXT[lang]["largest_gap"].format(
                what=labels.SENTENCE_TEXT[lang]["group_vs"]
                .format(
                    group=labels.level(first, lang),
                    reference_group=labels.level(second, lang),
                    wave=_wave_label(ALL, lang),
                )
                .split(" (")[0],
                where=labels.level(where, lang),
                mean=fmt_number(mean, lang=lang, sign=True),
            )
            g_lines.append(Sentence(_cap(text), "largest_gap", dict(s.keys)))
    block("gender", g_lines)
    gender_pairs = [("2020_1", "2020_0"), ("2020_2", "2020_1"), ("2022", "2020_2")]
    gender_changes = [s for g in genders for s in waves("gender", g, gender_pairs)]
    if len(genders) == 2:  # "girls fall more": the change of one gender minus the other's
        gender_changes += [
            _gap_change_sentence(t, "gender", genders[1], genders[0], w, r) for w, r in gender_pairs
        ]
    block("gender_trend", gender_changes)

    # 8-9: parental education.
    edu = _levels_of(t, "parent_edu")
    block(
        "parent_edu",
        [
            s
            for g in edu
            for s in waves(
                "parent_edu",
                g,
                [("2018", "2014"), ("2020_1", "2020_0"), ("2020_2", "2020_1"), ("2022", "2020_2")],
            )
        ],
    )
    pe_lines: list[Sentence | None] = []
    cross = "parent_edu x school_type"
    cross_types = _cross_level(t, cross, 1)
    if cross_types:
        first_type = cross_types[0]  # vmbo b/k in the OML data: the factsheet's statement
        cells = _cells_with(t, cross, first_type, 1)
        pe_lines += _lowest_against_the_rest(t, cross, cells, first_type, lang)
    cross = "parent_edu x gender"
    pg = _cross_level(t, cross, 1)
    if len(pg) == 2:
        for e in _cross_level(t, cross, 0):
            pe_lines.append(_between_sentence(t, cross, f"{e}:{pg[0]}", f"{e}:{pg[1]}"))
    block("parent_edu_cross", pe_lines)

    # 10-12: regions.
    regions = _levels_of(t, "region")
    block(
        "region",
        [
            s
            for g in regions
            for s in waves(
                "region", g, [("2018", "2014"), ("2020_2", "2020_1"), ("2022", "2020_2")]
            )
        ],
    )
    rt_lines: list[Sentence | None] = []
    cross = "region x school_type"
    for st in _cross_level(t, cross, 1):
        cells = _cells_with(t, cross, st, 1)
        sentence, ext = _extremes_sentence(
            t, cross, cells, subject=labels.level(st, lang), strip=st
        )
        rt_lines.append(sentence)
        if ext is not None:
            rt_lines.append(_between_sentence(t, cross, ext[1], ext[0]))
    block("region_type", rt_lines)
    pr_lines: list[Sentence | None] = []
    cross = "parent_edu x region"
    edu_levels = _cross_level(t, cross, 0)
    if edu_levels:
        target = "unknown" if "unknown" in edu_levels else edu_levels[-1]
        cells = _cells_with(t, cross, target, 0)
        pr_lines += _lowest_against_the_rest(t, cross, cells, target, lang)
    block("region_parent_edu", pr_lines)
    return blocks


# ---------------------------------------------------------------------------------------
# HTML pieces.


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def png_width(png: bytes) -> int | None:
    """Pixel width from a PNG header (None if the bytes are not a PNG)."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or len(png) < 24:
        return None
    return int.from_bytes(png[16:20], "big")


def figure_html(png: bytes, *, caption: str, name: str) -> str:
    """An embedded figure shown at about 96 CSS px per inch of a 150-dpi PNG (the text in
    it then matches the page), never wider than the page."""
    width = png_width(png)
    size = f" width='{round(width * DISPLAY_SCALE)}'" if width else ""
    return (
        f"<figure data-figure='{esc(name)}'><img alt='{esc(caption)}'{size} "
        f"src='{png_data_uri(png)}'><figcaption>{esc(caption)}</figcaption></figure>"
    )


def table_html(
    header: list[str], rows: list[list[str]], *, numeric: set[int] = frozenset(), cls: str = ""
) -> str:
    """Cells are given already escaped (they may hold markup such as a suppression mark)."""
    head = "".join(
        f"<th class='num'>{h}</th>" if k in numeric else f"<th>{h}</th>"
        for k, h in enumerate(header)
    )
    body = []
    for row in rows:
        cells = "".join(
            f"<td class='num'>{c}</td>" if k in numeric else f"<td>{c}</td>"
            for k, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return (
        f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def suppressed_mark(min_cell_n: int, lang: str) -> str:
    return f"<span class='sup'>{esc(labels.SUPPRESSED_TEXT[lang].format(n=min_cell_n))}</span>"


def count_cell(n: object, *, min_cell_n: int, lang: str) -> str:
    """A student count, or the suppression mark when it is missing or under the threshold."""
    if n is None or pd.isna(n) or int(n) < min_cell_n:
        return suppressed_mark(min_cell_n, lang)
    return f"<span class='n'>{int(n)}</span>"


def banner_html(diagnostics: dict, *, lang: str) -> str:
    rt = labels.REPORT_TEXT[lang]
    if diagnostics.get("passed"):
        return f"<div class='banner passed'>{esc(rt['banner_passed'])}</div>"
    failed = [
        labels.CHECK_TEXT[lang].get(k, k)
        for k, ok in diagnostics.get("checks", {}).items()
        if not ok
    ]
    body = rt["banner_failed_body"].format(failed=", ".join(failed) or "?")
    return (
        f"<div class='banner failed' role='alert' id='diagnostics-failed'>"
        f"<strong>{esc(rt['banner_failed'])}</strong>{esc(body)}</div>"
    )


# ---------------------------------------------------------------------------------------
# The report.


@dataclass(frozen=True)
class _Context:
    path: Path
    record: dict
    diagnostics: dict
    lang: str
    min_cell_n: int
    interval: str
    prob: float


def effective_min_cell_n(record: dict, requested: int | None) -> int:
    """The threshold of the run, raised (never lowered) by ``requested``; never below the floor."""
    run_n = int(record.get("options", {}).get("min_cell_n", MIN_CELL_N))
    if requested is not None and requested < MIN_CELL_N_FLOOR:
        raise SpecError(
            f"--min-cell-n must be at least {MIN_CELL_N_FLOOR} (disclosure control), "
            f"got {requested}"
        )
    return max(run_n, requested or 0, MIN_CELL_N_FLOOR)


def resuppress(
    effects: pd.DataFrame, contrasts: pd.DataFrame, *, min_cell_n: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Suppress effect cells under a (stricter) threshold and every contrast touching one."""
    eff = effects.copy()
    small = eff["suppressed"].astype(bool) | eff["n"].isna() | (eff["n"].fillna(0) < min_cell_n)
    eff.loc[small, ["mean", "lower", "upper"]] = np.nan
    eff["n"] = eff["n"].astype("Int64").mask(small)
    eff["suppressed"] = small
    hidden_cells = {
        (r.breakdown, str(r.group), str(r.wave)) for r in eff[small].itertuples(index=False)
    }
    con = contrasts.copy()
    hidden = touches_cells(con, hidden_cells) | con["suppressed"].astype(bool).to_numpy()
    con.loc[hidden, ["mean", "lower", "upper", "p_direction"]] = np.nan
    con["suppressed"] = hidden
    return eff, con


def _read_tables(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    for name in ("effects.csv", "contrasts.csv"):
        if not (path / name).is_file():
            raise RunError(
                f"{path}: no {name}; summarise the run first (scripts/fit.py --replot {path})"
            )
    effects = pd.read_csv(path / "effects.csv", dtype={"group": str, "wave": str})
    contrasts = pd.read_csv(
        path / "contrasts.csv",
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
    breakdowns = list(dict.fromkeys(effects["breakdown"].astype(str)))
    if redraw:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from omlbayes.plots.forest import DPI, figure_specs, plot_forest
        from omlbayes.plots.items import plot_item_distribution

        def render(fig) -> bytes:
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
            plt.close(fig)
            return buf.getvalue()

        if (ctx.path / "items.csv").is_file():
            fig = plot_item_distribution(pd.read_csv(ctx.path / "items.csv"), lang=ctx.lang)
            out.append(("fig1_items.png", rt["fig1"], render(fig)))
        for spec in figure_specs(breakdowns):
            png = render(plot_forest(effects, breakdown=spec.breakdown, lang=ctx.lang))
            out.append((spec.filename, _caption(spec.filename, spec.breakdown, ctx.lang), png))
        return out
    if (figures / "fig1_items.png").is_file():
        out.append(("fig1_items.png", rt["fig1"], (figures / "fig1_items.png").read_bytes()))
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
        out.append((png.name, _caption(png.name, breakdown, ctx.lang), png.read_bytes()))
    return out


def _caption(filename: str, breakdown: str, lang: str) -> str:
    rt = labels.REPORT_TEXT[lang]
    for name, key in FACTSHEET_FIGURES:
        if name == filename:
            return rt[key]
    return rt["fig_cross"].format(
        what=f"{labels.column('wave', lang)} × {labels.column(breakdown, lang)}"
    )


def _measurement_html(ctx: _Context) -> str:
    rt, lang, path = labels.REPORT_TEXT[ctx.lang], ctx.lang, ctx.path
    scale_info = ctx.record.get("scale", {})
    parts = [f"<h2 id='measurement'>{esc(rt['measurement'])}</h2>"]
    parts.append(
        "<p>"
        + esc(
            rt["measurement_intro"].format(
                min_items=scale_info.get("min_items", "?"),
                raw_mean=fmt_number(scale_info.get("raw_mean", float("nan")), lang=lang),
                raw_sd=fmt_number(scale_info.get("raw_sd", float("nan")), lang=lang),
            )
        )
        + "</p>"
    )
    if (path / "items.csv").is_file():
        items = pd.read_csv(path / "items.csv")
        item_total = (
            pd.read_csv(path / "item_total.csv").set_index("item")["item_total_r"]
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
        rel = pd.read_csv(path / "reliability.csv", dtype={"group": str})
        rows = []
        for r in rel.itertuples(index=False):
            ok = pd.notna(r.n_complete) and int(r.n_complete) >= ctx.min_cell_n
            wave = rt["all_waves"] if r.group == ALL else labels.level(r.group, lang)
            rows.append(
                [
                    esc(wave),
                    count_cell(r.n_complete, min_cell_n=ctx.min_cell_n, lang=lang),
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
    table = pd.read_csv(path, dtype={"level": str})
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
                count_cell(r.get("n"), min_cell_n=ctx.min_cell_n, lang=lang),
            ]
            + [fmt_number(r[c], lang=lang, digits=1) for c in wave_cols]
        )
    parts.append(f"<p>{esc(rt['composition_intro'])}</p>")
    parts.append(table_html(header, rows, numeric=set(range(2, len(header))), cls="composition"))
    return "".join(parts)


def _thresholds_paragraph(ctx: _Context, key: str) -> str:
    """A paragraph naming the interval and the probability thresholds of the phrases."""
    lang = ctx.lang
    text = labels.REPORT_TEXT[lang][key].format(
        interval=_interval_name(ctx.interval, ctx.prob, lang),
        very_likely=fmt_number(PD_VERY_LIKELY, lang=lang, digits=3),
        likely=fmt_number(PD_LIKELY, lang=lang, digits=2),
    )
    return f"<p>{esc(text)}</p>"


def _findings_html(ctx: _Context, blocks: list[Block]) -> str:
    rt = labels.REPORT_TEXT[ctx.lang]
    parts = [f"<h2 id='results'>{esc(rt['results'])}</h2>"]
    parts.append(_thresholds_paragraph(ctx, "results_intro"))
    for k, b in enumerate(blocks, start=1):
        items = []
        for s in b.sentences:
            data = " ".join(
                f"data-{esc(key.replace('_', '-'))}='{esc(v)}'" for key, v in s.keys.items()
            )
            phrase = f" data-phrase='{esc(s.phrase_key)}'" if s.phrase_key else ""
            items.append(f"<li class='finding {s.kind}' {data}{phrase}>{s.text}</li>")
        parts.append(
            f"<div class='finding-block' data-block='{esc(b.key)}'><h3>{k}. {esc(b.title)}</h3>"
            f"<p class='factsheet'>{esc(rt['factsheet_said'])}{esc(b.factsheet)}</p>"
            f"<ul class='findings'>{''.join(items)}</ul></div>"
        )
    return "".join(parts)


def _methods_html(ctx: _Context) -> str:
    rt, lang, rec, diag = labels.REPORT_TEXT[ctx.lang], ctx.lang, ctx.record, ctx.diagnostics
    data = rec.get("data", {})
    parts = [f"<h2 id='methods'>{esc(rt['methods'])}</h2>", f"<h3>{esc(rt['data'])}</h3>"]
    rows = [
        [esc(rt["source"]), f"<code>{esc(Path(str(data.get('source', '?'))).name)}</code>"],
        [esc(rt["sha256"]), f"<code>{esc(data.get('sha256', '?'))}</code>"],
    ]
    if data.get("column_map"):
        rows.append([esc(rt["column_map"]), f"<code>{esc(Path(data['column_map']).name)}</code>"])
    rows.append([esc(rt["n_read"]), f"<span class='count'>{esc(data.get('n_read', '?'))}</span>"])
    rows.append(
        [esc(rt["n_analysed"]), f"<span class='count'>{esc(data.get('n_analysed', '?'))}</span>"]
    )
    exclusions = data.get("exclusions") or {}
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

    parts.append(f"<h3>{esc(rt['model'])}</h3><p>{esc(rt['model_text'])}</p>")
    parts.append(f"<p>{esc(rt['formula'])}: <code>{esc(rec.get('formula', '?'))}</code></p>")
    priors = rec.get("priors") or {}
    if priors:
        parts.append(f"<h3>{esc(rt['priors'])}</h3>")
        parts.append(
            table_html(
                [rt["prior_term"], rt["prior_dist"]],
                [[f"<code>{esc(k)}</code>", f"<code>{esc(v)}</code>"] for k, v in priors.items()],
                cls="priors",
            )
        )
    sampler = rec.get("sampler") or {}
    parts.append(f"<h3>{esc(rt['sampler'])}</h3>")
    parts.append(
        "<p>"
        + esc(
            rt["sampler_text"].format(
                backend=sampler.get("backend", "?"),
                sampler=sampler.get("sampler", "?"),
                chains=sampler.get("chains", "?"),
                tune=sampler.get("tune", "?"),
                draws=sampler.get("draws", "?"),
                seed=rec.get("seed", "?"),
            )
        )
        + "</p>"
    )
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
        rows.append([esc(labels.CHECK_TEXT[lang].get(check, check)), shown, verdict])
    parts.append(table_html([rt["check"], rt["value"], rt["verdict"]], rows, cls="diagnostics"))
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
    versions = rec.get("versions") or {}
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
                commit=rec.get("git_commit", "?"),
                python=rec.get("python", "?"),
                seed=rec.get("seed", "?"),
            )
        )
        + "</p>"
    )
    timings = rec.get("timings") or {}
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


def render_report(
    run_dir: Path | str,
    *,
    lang: str | None = None,
    min_cell_n: int | None = None,
    redraw_figures: bool | None = None,
) -> str:
    """The report of a run folder as one HTML string (see :func:`write_report`)."""
    path = Path(run_dir)
    for name in (runs.RUN_JSON, runs.DIAGNOSTICS):
        if not (path / name).is_file():
            raise RunError(f"{path}: not a complete run folder (no {name}); give a run folder")
    record = json.loads((path / runs.RUN_JSON).read_text())
    diagnostics = json.loads((path / runs.DIAGNOSTICS).read_text())
    options = record.get("options", {})
    run_lang = options.get("lang", "nl")
    lang = labels.check_lang(lang or run_lang)
    threshold = effective_min_cell_n(record, min_cell_n)
    ctx = _Context(
        path,
        record,
        diagnostics,
        lang,
        threshold,
        options.get("interval", CI_KIND),
        float(options.get("prob", CI_PROB)),
    )
    effects, contrasts = _read_tables(path)
    run_threshold = int(options.get("min_cell_n", MIN_CELL_N))
    effects, contrasts = resuppress(effects, contrasts, min_cell_n=threshold)
    blocks = build_findings(effects, contrasts, lang=lang)
    blocks = [
        Block(
            b.key,
            b.title,
            b.factsheet,
            tuple(_with_threshold(s, threshold, lang) for s in b.sentences),
        )
        for b in blocks
    ]
    if redraw_figures is None:  # the run's PNGs are in its language, at its threshold
        redraw_figures = lang != run_lang or threshold != run_threshold
    figures = _figure_bytes(ctx, effects, redraw=redraw_figures)

    rt = labels.REPORT_TEXT[lang]
    body = [banner_html(diagnostics, lang=lang)]
    body.append(f"<h1>{esc(rt['title'])}</h1>")
    body.append(f"<p class='subtitle'>{esc(rt['subtitle'].format(run=run_label(path)))}</p>")
    body.append(
        f"<nav><strong>{esc(rt['toc'])}</strong><ol>"
        + "".join(
            f"<li><a href='#{a}'>{esc(rt[k].split('. ', 1)[-1])}</a></li>"
            for a, k in (
                ("measurement", "measurement"),
                ("composition", "composition"),
                ("figures", "figures"),
                ("results", "results"),
                ("methods", "methods"),
            )
        )
        + "</ol></nav>"
    )
    fig1 = [f for f in figures if f[0] == "fig1_items.png"]
    body.append(_measurement_html(ctx))
    from omlbayes.measurement import section_html as latent_section_html  # graded runs only

    body.append(latent_section_html(path, lang=lang))
    body += [figure_html(png, caption=cap, name=name) for name, cap, png in fig1]
    body.append(_composition_html(ctx))
    body.append(f"<h2 id='figures'>{esc(rt['figures'])}</h2>")
    body.append(
        "<p>"
        + esc(
            rt["figures_intro"].format(
                interval=_interval_name(ctx.interval, ctx.prob, lang), min_cell_n=threshold
            )
        )
        + "</p>"
    )
    body += [
        figure_html(png, caption=cap, name=name)
        for name, cap, png in figures
        if name != "fig1_items.png"
    ]
    body.append(_findings_html(ctx, blocks))
    body.append(_methods_html(ctx))
    body.append(f"<footer>{esc(rt['footer'].format(run=run_label(path)))}</footer>")
    return (
        f"<!DOCTYPE html><html lang='{lang}'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(rt['title'])}</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )


def _with_threshold(s: Sentence, threshold: int, lang: str) -> Sentence:
    if s.kind != "suppressed":
        return s
    text = re.sub(r"n < \d+", f"n < {threshold}", s.text)
    return Sentence(text, s.kind, s.keys, s.phrase_key)


def report_filename(record: dict, lang: str) -> str:
    """``report.html`` in the run's language; ``report.<lang>.html`` in the other one."""
    return (
        REPORT_FILE
        if lang == record.get("options", {}).get("lang", "nl")
        else f"report.{lang}.html"
    )


def write_report(
    run_dir: Path | str,
    *,
    lang: str | None = None,
    min_cell_n: int | None = None,
    redraw_figures: bool | None = None,
) -> Path:
    """Write the self-contained HTML report of a run folder and return its path.

    Parameters
    ----------
    run_dir : path
        A run folder (run.json, diagnostics.json, effects.csv, contrasts.csv, figures/).
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
    path = Path(run_dir)
    text = render_report(path, lang=lang, min_cell_n=min_cell_n, redraw_figures=redraw_figures)
    record = json.loads((path / runs.RUN_JSON).read_text())
    out = path / report_filename(
        record, labels.check_lang(lang or record.get("options", {}).get("lang", "nl"))
    )
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out


# ---------------------------------------------------------------------------------------
# Disclosure audit of a run folder's outputs.

_COUNT_CLASS = re.compile(r"<(?:span|td)[^>]*class=['\"]n['\"][^>]*>\s*(\d+)\s*<")
COUNT_COLUMNS = ("n", "n_complete")


def disclosure_problems(
    run_dir: Path | str, *, student_ids: Iterable[str], min_cell_n: int = MIN_CELL_N
) -> list[str]:
    """Every place in a run folder's csv, html and json files that shows a student id or a
    cell count under ``min_cell_n``; empty when the folder is clean.

    Counts are the ``n``/``n_complete`` columns of the csv tables, ``"n"`` keys in json and
    the count cells (``class='n'``) of the html pages.
    """
    path = Path(run_dir)
    ids = sorted({str(s) for s in student_ids if str(s)}, key=len, reverse=True)
    id_pattern = (
        re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(map(re.escape, ids)) + r")(?![A-Za-z0-9_])")
        if ids
        else None
    )
    problems: list[str] = []
    for file in sorted(path.rglob("*")):
        if file.suffix not in (".csv", ".html", ".json") or not file.is_file():
            continue
        text = file.read_text(encoding="utf-8", errors="replace")
        rel = file.relative_to(path)
        if id_pattern is not None and (m := id_pattern.search(text)):
            problems.append(f"{rel}: student id {m.group(1)!r}")
        if file.suffix == ".csv":
            table = pd.read_csv(file)
            for col in COUNT_COLUMNS:
                if col in table.columns:
                    values = pd.to_numeric(table[col], errors="coerce").dropna()
                    small = values[values < min_cell_n]
                    if len(small):
                        problems.append(
                            f"{rel}: column {col} has count(s) {sorted(set(small))[:5]}"
                        )
        elif file.suffix == ".html":
            small = [int(v) for v in _COUNT_CLASS.findall(text) if int(v) < min_cell_n]
            if small:
                problems.append(f"{rel}: count cell(s) {sorted(set(small))[:5]}")
        else:
            small = _json_counts(json.loads(text), min_cell_n)
            if small:
                problems.append(f"{rel}: 'n' value(s) {small[:5]}")
    return problems


def _json_counts(obj: object, min_cell_n: int) -> list[int]:
    found: list[int] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "n" and isinstance(v, int | float) and v < min_cell_n:
                found.append(int(v))
            else:
                found += _json_counts(v, min_cell_n)
    elif isinstance(obj, list):
        for v in obj:
            found += _json_counts(v, min_cell_n)
    return found
