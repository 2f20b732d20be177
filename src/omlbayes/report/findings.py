"""What the report says: findings declared as data, written from the posterior tables.

A findings file (``models/findings/*.toml``, named by the spec's ``[report] findings``)
lists blocks of statements (see ``models/findings/oml.toml`` for the statement kinds). This
module turns each statement into sentences about the run's own waves and groups, from
``effects.csv`` and ``contrasts.csv``, in the plain-language direction of
:func:`direction_phrase`. Nothing here knows OML's levels: the order of groups comes from
the levels saved in the run record, and a pair naming a wave the run lacks is listed as
skipped. HTML rendering is ``report.py``'s job.
"""

from __future__ import annotations

import html
import math
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from omlbayes import labels
from omlbayes.constants import PD_LIKELY, PD_VERY_LIKELY
from omlbayes.data import schema
from omlbayes.errors import SpecError
from omlbayes.model.estimands import GAP_CHANGE
from omlbayes.resources import findings_dir
from omlbayes.results.options import OutputOptions

ALL = "all"
OVERALL = "overall"
MINUS = "\u2212"
DEFAULT_FINDINGS = "generic.toml"  # in models/findings/

# Allowed keys of a findings file, per level (strict: anything else is an error).
FILE_KEYS = ("name", "description", "factsheet_levels", "block")
BLOCK_KEYS = ("key", "title", "factsheet", "statement")
STATEMENT_KEYS = {
    "waves": ("kind", "breakdown", "pairs", "groups"),
    "extremes": ("kind", "breakdown", "then", "within"),
    "between": ("kind", "breakdown", "compare", "largest_gap"),
    "gap_change": ("kind", "breakdown", "pairs"),
    "lowest_vs_rest": ("kind", "breakdown", "at", "level"),
}
PAIR_RULES = ("spec", "consecutive", "first_last")
FACTSHEET_LEVELS = ("oml",)  # "oml": the grey lines are about the OML default levels


# ---------------------------------------------------------------------------------------
# Plain-language direction and number formats (shared with the report and school pages).


def direction_key(mean: float, p_direction: float) -> str:
    """``very_likely_higher`` ... ``no_clear_difference`` for a difference and its pd.

    ``p_direction >= PD_VERY_LIKELY`` (0.975) -> very likely; ``>= PD_LIKELY`` (0.90) ->
    probably; otherwise no clear difference.
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
# The declaration.


@dataclass(frozen=True)
class Declaration:
    """A parsed findings file: its blocks (raw TOML tables, validated)."""

    name: str
    blocks: tuple[dict, ...]
    factsheet_levels: str = ""

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "factsheet_levels": self.factsheet_levels,
            "block": [dict(b) for b in self.blocks],
        }


def load_findings(path: Path | str | None) -> Declaration:
    """Read and validate a findings file; ``None`` gives the generic one."""
    path = Path(path) if path is not None else findings_dir() / DEFAULT_FINDINGS
    if not path.is_file():
        raise SpecError(f"{path}: no such findings file; see {findings_dir()} for examples")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path}: not valid TOML ({err}); fix the file") from None
    return parse_findings(raw, where=str(path))


def parse_findings(raw: Mapping, *, where: str = "findings") -> Declaration:
    """Validate a findings table (from a file or a run record) into a :class:`Declaration`."""
    _only(raw, FILE_KEYS, where)
    levels = str(raw.get("factsheet_levels", ""))
    if levels and levels not in FACTSHEET_LEVELS:
        raise SpecError(
            f"{where}: factsheet_levels {levels!r} unknown; "
            f"use one of {', '.join(FACTSHEET_LEVELS)}"
        )
    blocks = []
    for k, block in enumerate(raw.get("block", [])):
        here = f"{where} block {block.get('key', k + 1)!r}"
        _only(block, BLOCK_KEYS, here)
        if "key" not in block or "title" not in block:
            raise SpecError(f"{here}: a block needs 'key' and 'title'")
        for text_key in ("title", "factsheet"):
            if text_key in block:
                missing = [lang for lang in labels.LANGS if lang not in block[text_key]]
                if missing:
                    raise SpecError(f"{here}: {text_key} needs a text for {', '.join(missing)}")
        for st in block.get("statement", []):
            kind = st.get("kind")
            if kind not in STATEMENT_KEYS:
                raise SpecError(
                    f"{here}: statement kind {kind!r} unknown; use one of "
                    f"{', '.join(STATEMENT_KEYS)}"
                )
            _only(st, STATEMENT_KEYS[kind], f"{here} statement {kind!r}")
            if "breakdown" not in st:
                raise SpecError(f"{here} statement {kind!r}: needs 'breakdown'")
            _check_columns(st, f"{here} statement {kind!r}")
            pairs = st.get("pairs")
            if isinstance(pairs, str) and pairs not in PAIR_RULES:
                raise SpecError(
                    f"{here}: pairs {pairs!r} unknown; give a list of [wave, reference] or one "
                    f"of {', '.join(PAIR_RULES)}"
                )
        blocks.append(dict(block))
    return Declaration(str(raw.get("name", "")), tuple(blocks), levels)


def _check_columns(st: Mapping, where: str) -> None:
    """``compare``, ``within`` and ``at`` name a column of the statement's breakdown."""
    parts = [] if st["breakdown"] == OVERALL else str(st["breakdown"]).split(" x ")
    needs_cross = st["kind"] == "lowest_vs_rest" or "within" in st
    if needs_cross and len(parts) != 2:
        raise SpecError(f"{where}: needs a cross breakdown 'a x b', got {st['breakdown']!r}")
    if st["kind"] == "lowest_vs_rest" and "at" not in st:
        raise SpecError(f"{where}: needs 'at' (the column held at one level)")
    for key in ("compare", "within", "at"):
        if key in st and st[key] not in parts:
            raise SpecError(
                f"{where}: {key} = {st[key]!r} is not a column of {st['breakdown']!r}; "
                f"use one of {', '.join(parts) or 'none'}"
            )


def _only(table: Mapping, allowed: Sequence[str], where: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise SpecError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(allowed)}")


def findings_for(
    path: Path | str | None, levels: Mapping[str, Sequence[str]]
) -> tuple[Declaration, str]:
    """The findings a run uses, and why: the spec's file where it fits the run's levels; a
    file about the OML factsheet's levels (``factsheet_levels = "oml"``) on a survey with
    other levels is replaced by the generic findings, so the report holds no statement of
    another monitor."""
    declaration = load_findings(path)
    if declaration.factsheet_levels == "oml" and not _oml_levels(levels):
        generic = load_findings(None)
        return generic, (
            f"the spec's findings ({declaration.name}) are about the levels of the OML "
            "factsheet; this survey's levels differ, so the generic findings are used"
        )
    return declaration, f"the spec's findings ({declaration.name or 'generic'})"


def _oml_levels(levels: Mapping[str, Sequence[str]]) -> bool:
    oml = schema.Levels()
    return all(tuple(levels.get(col, ())) == oml.of(col) for col in schema.CATEGORICAL_COLUMNS)


def factsheet_applies(declaration: Declaration, levels: Mapping[str, Sequence[str]]) -> bool:
    """Whether the grey factsheet lines are about this run: only where its levels are OML's."""
    return declaration.factsheet_levels == "oml" and _oml_levels(levels)


# ---------------------------------------------------------------------------------------
# Findings.


@dataclass(frozen=True)
class Sentence:
    """One finding sentence and the table row(s) it was written from."""

    text: str  # HTML: level names escaped, the direction phrase in a <span>
    kind: str  # "contrast" | "extremes" | "largest_gap" | "suppressed"
    keys: dict[str, str] = field(default_factory=dict)
    phrase_key: str = ""


@dataclass(frozen=True)
class Block:
    key: str
    title: str
    factsheet: str  # empty when the factsheet's statements are not about this run
    sentences: tuple[Sentence, ...]


@dataclass(frozen=True)
class Findings:
    blocks: tuple[Block, ...]
    skipped: tuple[tuple[str, str], ...]  # (wave, reference) pairs the run lacks
    factsheet_shown: bool


class _Tables:
    """Lookups into effects.csv and contrasts.csv, with the run's level orders."""

    def __init__(
        self,
        effects: pd.DataFrame,
        contrasts: pd.DataFrame,
        *,
        options: OutputOptions,
        levels: Mapping[str, Sequence[str]],
    ) -> None:
        self.options = options
        self.lang = options.lang
        self.levels = {k: tuple(v) for k, v in levels.items()}
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
        present = [w for w in dict.fromkeys(self.effects["wave"]) if w != ALL]
        self.waves = _ordered(present, self.levels.get("wave", ()))

    def declared(self, column: str) -> tuple[str, ...]:
        return self.levels.get(column, ())

    def groups(self, breakdown: str) -> list[str]:
        present = list(
            dict.fromkeys(self.effects.loc[self.effects.breakdown == breakdown, "group"])
        )
        parts = breakdown.split(" x ") if breakdown != OVERALL else []
        if len(parts) == 1:
            return _ordered(present, self.declared(parts[0]))
        return present

    def cross_levels(self, breakdown: str, position: int) -> list[str]:
        parts = breakdown.split(" x ")
        present = [g.split(":")[position] for g in self.groups(breakdown)]
        return _ordered(present, self.declared(parts[position]))

    def cells_with(self, breakdown: str, level: str, position: int) -> list[str]:
        """Cross cells whose part at ``position`` is ``level``, in declared order."""
        other = breakdown.split(" x ")[1 - position]
        declared = self.declared(other)
        cells = [g for g in self.groups(breakdown) if g.split(":")[position] == level]

        def order(g: str) -> int:
            lvl = g.split(":")[1 - position]
            return declared.index(lvl) if lvl in declared else len(declared)

        return sorted(cells, key=order)

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


def _ordered(present: Iterable[str], declared: Sequence[str]) -> list[str]:
    """Declared levels that are present, then any others in order of appearance."""
    present = list(dict.fromkeys(present))
    return [v for v in declared if v in present] + [v for v in present if v not in declared]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def _wave_label(wave: str, lang: str) -> str:
    return labels.SENTENCE_TEXT[lang]["all_waves"] if wave == ALL else labels.level(wave, lang)


def _ph_class(key: str) -> str:
    return "vh" if key.startswith("very") else ("p" if key.startswith("prob") else "n")


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
    if row is None or bool(getattr(row, "model_implied", False)):
        return None  # absent, or a trend the model implies without a term for it
    keys = {
        "breakdown": b,
        "group": row.group,
        "wave": row.wave,
        "reference_group": row.reference_group,
        "reference": row.reference,
        "flipped": "1" if flipped else "0",
    }
    st = labels.SENTENCE_TEXT[lang]
    subject, comparison = html.escape(subject), html.escape(comparison)
    if bool(row.suppressed) or not np.isfinite(row.mean):
        text = st["suppressed"].format(
            subject=subject, comparison=comparison, n=t.options.min_cell_n
        )
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
        interval_short=t.options.interval_short(lang),
        lower=fmt_number(lower, lang=lang, sign=True),
        upper=fmt_number(upper, lang=lang, sign=True),
        pd=fmt_pd(float(row.p_direction), lang=lang),
    )
    return Sentence(_cap(text), "contrast", keys, key)


def _wave_sentence(t: _Tables, b: str, g: str, w: str, ref: str) -> Sentence | None:
    lang = t.lang
    comparison = labels.SENTENCE_TEXT[lang]["wave_vs"].format(
        wave=_wave_label(w, lang), reference=_wave_label(ref, lang)
    )
    return _contrast_sentence(
        t, b, g, w, g, ref, subject=labels.level(g, lang), comparison=comparison
    )


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


def _extremes_sentence(
    t: _Tables, b: str, groups: list[str], *, subject: str, strip: str | None = None
) -> tuple[Sentence | None, tuple[str, str] | None]:
    """The highest and lowest group over all waves among ``groups`` (unsuppressed only)."""
    rows = [(g, t.effect(b, g, ALL)) for g in groups]
    rows = [(g, r) for g, r in rows if r is not None and np.isfinite(r.mean)]
    if len(rows) < 2:
        return None, None
    best = max(rows, key=lambda gr: gr[1].mean)[0]
    worst = min(rows, key=lambda gr: gr[1].mean)[0]
    lang = t.lang

    def name(g: str) -> str:
        parts = [p for p in g.split(":") if p != strip]
        return html.escape(labels.level(":".join(parts), lang))

    text = labels.SENTENCE_TEXT[lang]["highest"].format(
        subject=html.escape(subject),
        best=name(best),
        best_mean=fmt_number(t.effect(b, best, ALL).mean, lang=lang, sign=True),
        worst=name(worst),
        worst_mean=fmt_number(t.effect(b, worst, ALL).mean, lang=lang, sign=True),
    )
    keys = {"breakdown": b, "best": best, "worst": worst, "wave": ALL}
    return Sentence(_cap(text), "extremes", keys), (best, worst)


def _lowest_against_the_rest(
    t: _Tables, cross: str, cells: list[str], level: str
) -> list[Sentence | None]:
    """The extremes among ``cells`` (all sharing ``level``), then the lowest against each other."""
    sentence, ext = _extremes_sentence(
        t, cross, cells, subject=labels.level(level, t.lang), strip=level
    )
    if ext is None:
        return [sentence]
    worst = ext[1]
    return [sentence] + [_between_sentence(t, cross, worst, g) for g in cells if g != worst]


class _Writer:
    """Writes the statements of one findings declaration for one run."""

    def __init__(self, t: _Tables, spec_pairs: Sequence[tuple[str, str]]) -> None:
        self.t = t
        self.spec_pairs = [tuple(map(str, p)) for p in spec_pairs]
        self.skipped: list[tuple[str, str]] = []
        self.best: dict[str, str] = {}  # breakdown -> the highest group of its extremes

    def pairs(self, rule: object) -> list[tuple[str, str]]:
        waves = self.t.waves
        if rule is None or rule == "consecutive":
            pairs = list(zip(waves[1:], waves[:-1], strict=True))
        elif rule == "first_last":
            pairs = [(waves[-1], waves[0])] if len(waves) > 1 else []
        elif rule == "spec":
            pairs = self.spec_pairs
        else:
            pairs = [tuple(map(str, p)) for p in rule]
        kept = []
        for w, r in pairs:
            if w in waves and r in waves:
                kept.append((w, r))
            elif (w, r) not in self.skipped:
                self.skipped.append((w, r))
        return kept

    def statement(self, st: Mapping) -> list[Sentence | None]:
        kind, b = st["kind"], st["breakdown"]
        return getattr(self, f"_{kind}")(st, b)

    def _waves(self, st: Mapping, b: str) -> list[Sentence | None]:
        pairs = self.pairs(st.get("pairs"))
        if b == OVERALL:
            groups = [ALL]
        elif st.get("groups", "all") == "best":
            groups = [self.best[b]] if b in self.best else []
        else:
            groups = self.t.groups(b)
        return [_wave_sentence(self.t, b, g, w, r) for g in groups for w, r in pairs]

    def _extremes(self, st: Mapping, b: str) -> list[Sentence | None]:
        t, lang = self.t, self.t.lang
        if " x " not in b:
            groups = t.groups(b)
            sentence, ext = _extremes_sentence(t, b, groups, subject=labels.column(b, lang))
            out = [sentence]
            if ext is not None:
                self.best[b] = ext[0]
                if st.get("then") == "best_vs_rest":
                    out += [_between_sentence(t, b, ext[0], g) for g in groups if g != ext[0]]
            return out
        within = st.get("within", b.split(" x ")[1])
        position = b.split(" x ").index(within)
        out = []
        for level in t.cross_levels(b, position):
            cells = t.cells_with(b, level, position)
            sentence, ext = _extremes_sentence(
                t, b, cells, subject=labels.level(level, lang), strip=level
            )
            out.append(sentence)
            if ext is not None and st.get("then") == "worst_vs_best":
                out.append(_between_sentence(t, b, ext[1], ext[0]))
        return out

    def _between(self, st: Mapping, b: str) -> list[Sentence | None]:
        t, lang = self.t, self.t.lang
        parts = b.split(" x ")
        compare = st.get("compare", parts[0])
        position = parts.index(compare)
        levels = t.cross_levels(b, position) if len(parts) == 2 else t.groups(b)
        if len(levels) < 2:
            return []
        first, others = levels[0], levels[1:]
        if len(parts) == 1:
            return [_between_sentence(t, b, first, g) for g in others]
        out: list[Sentence | None] = []
        gaps = []
        for fixed in t.cross_levels(b, 1 - position):
            for other in others:
                g = _cell(first, fixed, position)
                rg = _cell(other, fixed, position)
                s = _between_sentence(t, b, g, rg)
                out.append(s)
                if s is not None and s.kind == "contrast":
                    row, flipped = t.contrast(b, g, ALL, rg, ALL)
                    mean = -row.mean if flipped else row.mean
                    gaps.append((abs(mean), mean, fixed, other, s))
        if st.get("largest_gap") and gaps:
            _, mean, where, other, s = max(gaps, key=lambda x: x[0])
            what = labels.SENTENCE_TEXT[lang]["groups_vs"].format(
                group=labels.level(first, lang), reference_group=labels.level(other, lang)
            )
            text = labels.SENTENCE_TEXT[lang]["largest_gap"].format(
                what=html.escape(what),
                where=html.escape(labels.level(where, lang)),
                mean=fmt_number(mean, lang=lang, sign=True),
            )
            out.append(Sentence(_cap(text), "largest_gap", dict(s.keys)))
        return out

    def _gap_change(self, st: Mapping, b: str) -> list[Sentence | None]:
        groups = self.t.groups(b)
        if len(groups) < 2:
            return []
        first = groups[0]
        return [
            _gap_change_sentence(self.t, b, g, first, w, r)
            for w, r in self.pairs(st.get("pairs"))
            for g in groups[1:]
        ]

    def _lowest_vs_rest(self, st: Mapping, b: str) -> list[Sentence | None]:
        t = self.t
        parts = b.split(" x ")
        position = parts.index(st["at"])
        levels = t.cross_levels(b, position)
        if not levels:
            return []
        wanted = st.get("level", "first")
        level = {"first": levels[0], "last": levels[-1]}.get(wanted, wanted)
        if level not in levels:
            return []
        return _lowest_against_the_rest(t, b, t.cells_with(b, level, position), level)


def _cell(level: str, fixed: str, position: int) -> str:
    return f"{level}:{fixed}" if position == 0 else f"{fixed}:{level}"


def build_findings(
    effects: pd.DataFrame,
    contrasts: pd.DataFrame,
    *,
    declaration: Declaration,
    options: OutputOptions,
    levels: Mapping[str, Sequence[str]],
    spec_pairs: Sequence[tuple[str, str]] = (),
) -> Findings:
    """The declared statements, each written from the posterior tables of the run.

    Every sentence gives the direction in plain words (:func:`direction_phrase`), the size
    in SD units, the run's interval and the probability of direction. A statement whose
    waves or groups are not in the run is left out (pairs of missing waves are listed in
    ``skipped``); a suppressed one says so with the run's threshold.
    """
    t = _Tables(effects, contrasts, options=options, levels=levels)
    writer = _Writer(t, spec_pairs)
    shown = factsheet_applies(declaration, levels)
    lang = options.lang
    blocks = []
    for block in declaration.blocks:
        sentences = [s for st in block.get("statement", []) for s in writer.statement(st)]
        # a comparison two statements both ask for (a consecutive pair that is also a spec
        # pair) is said once
        unique = {(s.kind, s.text): s for s in sentences if s is not None}
        kept = tuple(unique.values())
        if kept:
            factsheet = block.get("factsheet", {}).get(lang, "") if shown else ""
            blocks.append(Block(block["key"], block["title"][lang], factsheet, kept))
    return Findings(tuple(blocks), tuple(writer.skipped), shown)
