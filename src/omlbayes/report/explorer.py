"""The report's offline trend explorer: the reader picks a breakdown, a group (and
optionally a second one) and two waves, and the page computes the change from posterior
draws embedded in it.

What is embedded: the draws of the run's adjusted means (:meth:`Run.effect_draws`, the
numbers of effects.csv: the standardized index, deviation from the pooled mean) of every
reported breakdown, group and wave (not the pooled wave "all"), thinned to the same
positions of the flattened (chain, draw) axis for every cell, so the draws stay joint and
a change, or a difference of changes, is computed draw by draw. Cells under the disclosure
threshold are left out of the page altogether: they cannot be chosen and their draws are
not in the file. No counts are embedded.

What the page computes (its inline script, the same on the same draws as the Python
functions): the change ``(A[to] - A[from]) - (B[to] - B[from])`` per draw, its mean, the
run's interval (ETI: NumPy's "linear" quantiles; HDI: ArviZ's "nearest" method, the
shortest window of ``floor(prob * n) + 1`` sorted draws; see
:func:`omlbayes.results.options.draw_interval`) and P(> 0), a sentence in the report's
language and a small SVG. No server, no network, no external script.

For automated checks the controls are ``select[data-explorer=breakdown|group-a|group-b|
wave-from|wave-to]`` (option values are level names as in effects.csv; group B ``""`` is
none) and ``[data-explorer=result]`` carries ``data-mean``, ``data-lower``, ``data-upper``
and ``data-p-positive`` (plain decimals, standardized scale).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from omlbayes import labels
from omlbayes.constants import PD_LIKELY, PD_VERY_LIKELY
from omlbayes.errors import RunError
from omlbayes.report.html import esc
from omlbayes.results import runs
from omlbayes.results.options import OutputOptions

MAX_DRAWS = 400  # draws embedded per cell: MCSE of a mean ~ sd/20, a few hundred kB per page
ALL_WAVES = "all"
OVERALL = "overall"
DATA_ID = "explorer-data"
# float32, little-endian, base64: 5.3 characters a value with all 7 significant digits
# (the draws' Monte Carlo error is ~1e-3 SD, float32's rounding ~1e-8), against 9-10 for
# JSON numbers rounded to 6 decimals; the script decodes it with a DataView in one pass.
ENCODING = "float32-le-base64"
SELECTS = ("breakdown", "group-a", "group-b", "wave-from", "wave-to")

EXPLORER_CSS = """
.explorer .controls{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));
gap:10px 18px;margin:12px 0 10px;padding:12px 14px;background:#f7f8fa;
border:1px solid #e3e6ea;border-radius:4px}
@media (max-width:700px){.explorer .controls{grid-template-columns:minmax(0,1fr)}}
.explorer label{display:flex;flex-direction:column;justify-content:space-between;gap:3px;
font-size:.85em;font-weight:600;color:#333}
.explorer select{font:inherit;font-weight:400;font-size:1.05em;padding:4px 6px;
border:1px solid #b8c0cc;border-radius:3px;background:#fff;color:#1d2330}
.explorer select:focus{outline:2px solid #1f3b73;outline-offset:1px}
.explorer .result{margin:4px 0 8px}
.explorer .sentence{margin:6px 0 4px;font-size:1.02em}
.explorer svg{display:block;width:100%;max-width:760px;height:auto}
"""


@dataclass(frozen=True)
class ExplorerData:
    """The cells embedded in the page and their thinned joint draws."""

    cells: pd.DataFrame  # breakdown, group, wave: one row per embedded cell, in page order
    values: np.ndarray  # float32 (cell, draw): the draws at ``positions``
    positions: np.ndarray  # kept positions of the flattened (chain, draw) axis
    total: int  # draws in the run (chains x draws)
    waves: tuple[str, ...]  # the run's waves in their declared order (those embedded)


def thinned_positions(total: int, kept: int = MAX_DRAWS) -> np.ndarray:
    """The positions of the flattened (chain, draw) axis the explorer keeps: ``min(kept,
    total)`` evenly spaced ones, the first included (``floor(i * total / kept)``); fixed and
    deterministic, the same for every cell."""
    k = min(int(kept), int(total))
    return (np.arange(k, dtype=np.int64) * int(total)) // k


def explorer_data(run: runs.Run, *, min_cell_n: int, max_draws: int = MAX_DRAWS) -> ExplorerData:
    """The thinned joint draws of every adjusted mean at or above ``min_cell_n`` students."""
    effects = run.effect_draws().transpose("chain", "draw", "target")
    n = run.gcomp["n"].to_numpy()
    cells = pd.DataFrame(
        {
            "breakdown": effects["breakdown"].to_numpy().astype(str),
            "group": effects["group"].to_numpy().astype(str),
            "wave": effects["wave"].to_numpy().astype(str),
        }
    )
    keep = (cells["wave"] != ALL_WAVES).to_numpy() & (n >= min_cell_n)
    flat = effects.to_numpy().reshape(-1, effects.sizes["target"])
    positions = thinned_positions(flat.shape[0], max_draws)
    values = np.ascontiguousarray(flat[np.ix_(positions, np.flatnonzero(keep))].T, dtype="<f4")
    kept = cells[keep].reset_index(drop=True)
    present = set(kept["wave"])
    declared = [str(w) for w in run.record.levels.get("wave", ())]
    waves = [w for w in declared if w in present]
    waves += [w for w in dict.fromkeys(kept["wave"]) if w not in waves]
    return ExplorerData(kept, values, positions, flat.shape[0], tuple(waves))


def payload(data: ExplorerData, *, lang: str, options: OutputOptions) -> dict:
    """What the page's script reads: the choices with their labels, the draws, the texts."""
    rt, st = labels.REPORT_TEXT[lang], labels.SENTENCE_TEXT[lang]
    breakdowns = []
    for breakdown, rows in data.cells.groupby("breakdown", sort=False):
        groups = []
        for group, cell_rows in rows.groupby("group", sort=False):
            groups.append(
                {
                    "name": group,
                    "label": labels.level(group, lang),
                    "cells": {r.wave: int(k) for k, r in cell_rows.iterrows()},
                }
            )
        breakdowns.append(
            {"name": breakdown, "label": labels.column(breakdown, lang), "groups": groups}
        )
    interval = rt["explorer_interval"].format(
        prob=options.percent_text(lang), kind=options.interval.upper()
    )
    return {
        "encoding": ENCODING,
        "draws": int(data.values.shape[1]),
        "total": int(data.total),
        "interval": options.interval,
        "prob": float(options.prob),
        "lang": lang,
        "waves": [{"name": w, "label": labels.level(w, lang)} for w in data.waves],
        "breakdowns": breakdowns,
        "thresholds": {"very_likely": PD_VERY_LIKELY, "likely": PD_LIKELY},
        "text": {
            "sentence": rt["explorer_sentence"],
            "interval": interval,
            "wave_vs": st["wave_vs"],
            "change": st["change"],
            "groups_vs": st["groups_vs"],
            "axis": rt["explorer_axis"],
            "none": rt["explorer_none"],
            "direction": labels.DIRECTION_TEXT[lang],
        },
        "values": base64.b64encode(data.values.astype("<f4").tobytes()).decode("ascii"),
    }


def _json_for_script(obj: dict) -> str:
    """JSON that cannot end its ``<script>`` element (``<``, ``>`` and ``&`` escaped)."""
    text = json.dumps(obj, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def read_payload(page: str) -> dict:
    """The explorer's data as embedded in a page (for checks and tests)."""
    match = re.search(
        rf"<script type='application/json' id='{DATA_ID}'>(.*?)</script>", page, flags=re.S
    )
    if match is None:
        raise RunError("no explorer data in this page")
    return json.loads(match.group(1))


def _select(name: str, label: str, options: list[tuple[str, str]], selected: str) -> str:
    items = "".join(
        f"<option value='{esc(v)}'{' selected' if v == selected else ''}>{esc(t)}</option>"
        for v, t in options
    )
    return (
        f"<label for='explorer-{name}'>{esc(label)}"
        f"<select id='explorer-{name}' name='{name}' data-explorer='{name}'>{items}</select>"
        "</label>"
    )


def explorer_html(run: runs.Run, *, lang: str, options: OutputOptions) -> str:
    """The explorer section of ``report.html`` (heading, intro, controls, result, SVG and
    the inline script with its data); ``""`` for a run without adjusted means."""
    lang = labels.check_lang(lang)
    if "gcomp" not in run.tree.children:
        return ""
    data = explorer_data(run, min_cell_n=options.min_cell_n)
    if data.cells.empty:
        return ""
    rt = labels.REPORT_TEXT[lang]
    info = payload(data, lang=lang, options=options)
    first = info["breakdowns"][0]
    waves = [(w["name"], w["label"]) for w in info["waves"]]
    controls = [
        _select(
            "breakdown",
            rt["explorer_breakdown"],
            [(b["name"], b["label"]) for b in info["breakdowns"]],
            first["name"],
        ),
        _select(
            "group-a",
            rt["explorer_group_a"],
            [(g["name"], g["label"]) for g in first["groups"]],
            first["groups"][0]["name"],
        ),
        _select(
            "group-b",
            rt["explorer_group_b"],
            [("", rt["explorer_none"])] + [(g["name"], g["label"]) for g in first["groups"][1:]],
            "",
        ),
        _select("wave-from", rt["explorer_wave_from"], waves, waves[0][0]),
        _select("wave-to", rt["explorer_wave_to"], waves, waves[-1][0]),
    ]
    intro = rt["explorer_intro"].format(
        draws=info["draws"], interval=options.interval_name(lang), min_cell_n=options.min_cell_n
    )
    legend = rt["explorer_legend"].format(draws=info["draws"], interval=info["text"]["interval"])
    return (
        "<section id='explorer' class='explorer' aria-labelledby='explorer-title'>"
        f"<h2 id='explorer-title'>{esc(rt['explorer'])}</h2>"
        f"<p>{esc(intro)}</p>"
        f"<noscript><p class='small'>{esc(rt['explorer_noscript'])}</p></noscript>"
        f"<div class='controls' role='group' aria-label='{esc(rt['explorer'])}'>"
        f"{''.join(controls)}</div>"
        f"<div class='result' data-explorer='result' "
        f"data-interval='{esc(options.interval)}' data-prob='{options.prob!r}' "
        f"data-draws='{info['draws']}'>"
        "<p class='sentence' aria-live='polite'></p>"
        "<svg data-explorer='plot' viewBox='0 0 720 176' role='img' "
        "preserveAspectRatio='xMidYMid meet'></svg>"
        f"<p class='small legend'>{esc(legend)}</p></div>"
        f"<script type='application/json' id='{DATA_ID}'>{_json_for_script(info)}</script>"
        f"<script>{SCRIPT}</script>"
        "</section>"
    )


# The page's script: plain JavaScript, no library, nothing fetched. ``interval`` repeats
# ``results.options.draw_interval`` (ETI: NumPy's linear quantile with its two-sided lerp;
# HDI: the first shortest window of floor(prob * n) + 1 sorted draws); ``fmt`` and ``fmtPct``
# repeat ``findings.fmt_number`` and ``findings.fmt_pd``; ``direction`` repeats
# ``findings.direction_key``.
SCRIPT = r"""
(function () {
  "use strict";
  var root = document.getElementById("explorer");
  var D = JSON.parse(document.getElementById("explorer-data").textContent);
  var K = D.draws, T = D.text, MINUS = "\u2212";
  var raw = atob(D.values), bytes = new Uint8Array(raw.length);
  for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  var view = new DataView(bytes.buffer);
  function sel(name) { return root.querySelector("select[data-explorer=" + name + "]"); }
  var S = {};
  ["breakdown", "group-a", "group-b", "wave-from", "wave-to"].forEach(function (n) {
    S[n] = sel(n);
  });
  var result = root.querySelector("[data-explorer=result]");
  var sentence = result.querySelector(".sentence");
  var svg = result.querySelector("svg");

  function draws(row) {
    var out = new Float64Array(K);
    for (var d = 0; d < K; d++) out[d] = view.getFloat32(4 * (row * K + d), true);
    return out;
  }
  function breakdown() {
    return D.breakdowns.find(function (b) { return b.name === S.breakdown.value; });
  }
  function group(name) {
    if (!name) return null;
    return breakdown().groups.find(function (g) { return g.name === name; }) || null;
  }
  function has(g, wave) { return Object.prototype.hasOwnProperty.call(g.cells, wave); }
  function open(a, b) {  // the waves both groups have a cell in
    return D.waves.filter(function (w) { return has(a, w.name) && (!b || has(b, w.name)); })
      .map(function (w) { return w.name; });
  }
  function fill(select, items, keep) {
    var old = keep ? select.value : null;
    select.textContent = "";
    items.forEach(function (it) {
      var o = new Option(it.label, it.name);
      o.disabled = !!it.disabled;
      select.add(o);
    });
    var ok = items.some(function (it) { return it.name === old && !it.disabled; });
    select.value = ok ? old : items[0].name;
  }
  function fillGroups() {
    fill(S["group-a"], breakdown().groups, false);
  }
  function fillB() {
    var a = group(S["group-a"].value);
    var none = { name: "", label: T.none };
    var others = breakdown().groups.filter(function (g) { return g.name !== a.name; })
      .map(function (g) {
        return { name: g.name, label: g.label, disabled: !open(a, g).length };
      });
    fill(S["group-b"], [none].concat(others), true);
  }
  function fillWaves(reset) {
    var a = group(S["group-a"].value), b = group(S["group-b"].value);
    var waves = open(a, b);
    ["wave-from", "wave-to"].forEach(function (n, k) {
      var s = S[n];
      Array.prototype.forEach.call(s.options, function (o) {
        o.disabled = waves.indexOf(o.value) < 0;
      });
      if (reset || waves.indexOf(s.value) < 0) s.value = waves[k === 0 ? 0 : waves.length - 1];
    });
  }

  function quantile(sorted, q) {  // numpy.quantile(method="linear")
    var n = sorted.length, v = (n - 1) * q;
    if (v >= n - 1) return sorted[n - 1];
    if (v < 0) return sorted[0];
    var j = Math.floor(v), g = v - j, a = sorted[j], b = sorted[j + 1], diff = b - a;
    return g >= 0.5 ? b - diff * (1 - g) : a + diff * g;
  }
  function interval(x) {
    var s = Float64Array.from(x).sort(), n = s.length;
    if (D.interval === "hdi") {  // arviz_stats hdi(method="nearest")
      var k = Math.min(Math.floor(D.prob * n), n - 1), best = 0, width = Infinity;
      for (var i = 0; i < n - k; i++) {
        var w = s[i + k] - s[i];
        if (w < width) { width = w; best = i; }
      }
      return [s[best], s[best + k]];
    }
    var edge = (1 - D.prob) / 2;
    return [quantile(s, edge), quantile(s, 1 - edge)];
  }
  function fmt(v, digits, sign) {
    if (!isFinite(v)) return "\u2013";
    var text = Math.abs(v).toFixed(digits), zero = Number(text) === 0;
    if (D.lang === "nl") text = text.replace(".", ",");
    if (v < 0 && !zero) return MINUS + text;
    return sign ? "+" + text : text;
  }
  function fmtPct(p) {  // rounded down to 0.1%, as the report's probabilities
    var text = (Math.floor(p * 1000 + 1e-9) / 10).toFixed(1) + "%";
    return D.lang === "nl" ? text.replace(".", ",") : text;
  }
  function direction(mean, pd) {
    var side = mean > 0 ? "higher" : "lower";
    if (pd >= D.thresholds.very_likely && mean !== 0) return "very_likely_" + side;
    if (pd >= D.thresholds.likely && mean !== 0) return "probably_" + side;
    return "no_clear_difference";
  }
  function format(template, values) {
    return template.replace(/\{(\w+)\}/g, function (m, key) {
      return key in values ? values[key] : m;
    });
  }
  function plain(v) { return v.toFixed(10); }
  function esc(t) {
    return String(t).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  }

  function compute() {
    var a = group(S["group-a"].value), b = group(S["group-b"].value);
    var from = S["wave-from"].value, to = S["wave-to"].value;
    var a1 = draws(a.cells[to]), a0 = draws(a.cells[from]);
    var b1 = b ? draws(b.cells[to]) : null, b0 = b ? draws(b.cells[from]) : null;
    var x = new Float64Array(K), sum = 0, positive = 0;
    for (var d = 0; d < K; d++) {
      x[d] = b ? (a1[d] - a0[d]) - (b1[d] - b0[d]) : a1[d] - a0[d];
      sum += x[d];
      if (x[d] > 0) positive += 1;
    }
    var mean = sum / K, p = positive / K, bounds = interval(x);
    result.setAttribute("data-mean", plain(mean));
    result.setAttribute("data-lower", plain(bounds[0]));
    result.setAttribute("data-upper", plain(bounds[1]));
    result.setAttribute("data-p-positive", plain(p));
    write(a, b, from, to, mean, bounds, p);
    draw(x, mean, bounds);
  }

  function label(name) {
    return D.waves.find(function (w) { return w.name === name; }).label;
  }
  function write(a, b, from, to, mean, bounds, p) {
    var subject, comparison;
    if (b) {
      subject = format(T.change, { wave: label(to), reference: label(from) });
      comparison = format(T.groups_vs, { group: a.label, reference_group: b.label });
    } else {
      subject = a.label;
      comparison = format(T.wave_vs, { wave: label(to), reference: label(from) });
    }
    var pd = Math.max(p, 1 - p), key = direction(mean, pd);
    var text = format(T.sentence, {
      subject: subject, comparison: comparison, mean: fmt(mean, 2, true),
      interval: T.interval, lower: fmt(bounds[0], 2, true), upper: fmt(bounds[1], 2, true),
      p_positive: fmtPct(p)
    });
    text = text.charAt(0).toUpperCase() + text.slice(1);
    var parts = text.split("{phrase}");
    sentence.textContent = parts[0];
    var span = document.createElement("span");
    span.className = key.indexOf("very") === 0 ? "ph-vh"
      : (key.indexOf("prob") === 0 ? "ph-p" : "ph-n");
    span.textContent = T.direction[key];
    sentence.appendChild(span);
    sentence.appendChild(document.createTextNode(parts.slice(1).join("")));
    svg.setAttribute("aria-label", sentence.textContent);
  }

  function draw(x, mean, bounds) {
    var W = 720, left = 24, right = 24, top = 8, base = 104, lineY = 122, axisY = 136;
    var lo = 0, hi = 0, first = x[0], spread = false;
    for (var d = 0; d < K; d++) {
      lo = Math.min(lo, x[d]); hi = Math.max(hi, x[d]); spread = spread || x[d] !== first;
    }
    var pad = (hi - lo) * 0.06 || 0.05;
    lo -= pad; hi += pad;
    function X(v) { return left + (v - lo) / (hi - lo) * (W - left - right); }
    var bins = 32, counts = new Array(bins).fill(0), step = (hi - lo) / bins;
    for (var e = 0; e < K; e++) counts[Math.min(bins - 1, Math.floor((x[e] - lo) / step))] += 1;
    var most = Math.max.apply(null, counts), out = [];
    for (var j = 0; j < bins; j++) {
      if (!counts[j] || !spread) continue;  // no bars when every draw is the same (one wave)
      var x0 = lo + j * step, mid = x0 + step / 2, h = counts[j] / most * (base - top);
      var inside = mid >= bounds[0] && mid <= bounds[1];
      out.push("<rect x='" + X(x0).toFixed(1) + "' y='" + (base - h).toFixed(1) +
        "' width='" + Math.max(0.5, X(x0 + step) - X(x0) - 1).toFixed(1) + "' height='" +
        h.toFixed(1) + "' fill='" + (inside ? "#7f9cc9" : "#d5deec") + "'/>");
    }
    out.push("<line x1='" + left + "' x2='" + (W - right) + "' y1='" + base + "' y2='" + base +
      "' stroke='#8a93a3'/>");
    out.push("<line x1='" + X(0).toFixed(1) + "' x2='" + X(0).toFixed(1) + "' y1='" + top +
      "' y2='" + (lineY + 8) + "' stroke='#b00020' stroke-width='1.5' stroke-dasharray='5 4'/>");
    out.push("<line x1='" + X(bounds[0]).toFixed(1) + "' x2='" + X(bounds[1]).toFixed(1) +
      "' y1='" + lineY + "' y2='" + lineY + "' stroke='#1f3b73' stroke-width='4' " +
      "stroke-linecap='round'/>");
    out.push("<circle cx='" + X(mean).toFixed(1) + "' cy='" + lineY + "' r='6' fill='#fff' " +
      "stroke='#1f3b73' stroke-width='2.5'/>");
    var raw = (hi - lo) / 8, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var tick = [1, 2, 5, 10].map(function (m) { return m * mag; })
      .find(function (t) { return t >= raw; });
    var digits = Math.max(0, -Math.floor(Math.log10(tick) + 1e-9));
    out.push("<line x1='" + left + "' x2='" + (W - right) + "' y1='" + axisY + "' y2='" + axisY +
      "' stroke='#8a93a3'/>");
    for (var t = Math.ceil(lo / tick) * tick; t <= hi; t += tick) {
      var tx = X(t).toFixed(1), value = Math.abs(t) < tick / 2 ? 0 : t;
      out.push("<line x1='" + tx + "' x2='" + tx + "' y1='" + axisY + "' y2='" + (axisY + 5) +
        "' stroke='#8a93a3'/>");
      out.push("<text x='" + tx + "' y='" + (axisY + 18) + "' text-anchor='middle' " +
        "font-size='12' fill='#333'>" + esc(fmt(value, digits, false)) + "</text>");
    }
    out.push("<text x='" + (W / 2) + "' y='" + (axisY + 36) + "' text-anchor='middle' " +
      "font-size='12.5' fill='#333'>" + esc(T.axis) + "</text>");
    svg.innerHTML = out.join("");
  }

  S.breakdown.addEventListener("change", function () {
    fillGroups(); fillB(); fillWaves(true); compute();
  });
  S["group-a"].addEventListener("change", function () { fillB(); fillWaves(false); compute(); });
  S["group-b"].addEventListener("change", function () { fillWaves(false); compute(); });
  S["wave-from"].addEventListener("change", compute);
  S["wave-to"].addEventListener("change", compute);
  fillGroups(); fillB(); fillWaves(true); compute();
})();
"""
