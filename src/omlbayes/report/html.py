"""HTML pieces shared by every page a run writes: the report, the school pages, a comparison.

Self-contained pages: inline CSS, figures as base64 PNG or inline SVG, no external file.
"""

from __future__ import annotations

import base64
import html

from omlbayes import labels
from omlbayes.results import disclosure
from omlbayes.results.options import OutputOptions

DISPLAY_SCALE = 0.72  # CSS px per PNG px for the 150-dpi figures

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
p.factsheet,p.factsheet-intro{color:#6b7280;font-size:.9em;margin:2px 0 6px;font-style:italic}
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
    image = f"<img alt='{esc(caption)}'{size} src='{png_data_uri(png)}'>"
    return figure_markup(image, caption=caption, name=name)


def figure_markup(content: str, *, caption: str, name: str) -> str:
    """A named figure: ``content`` (an image or inline SVG, already markup) and its caption."""
    return (
        f"<figure data-figure='{esc(name)}'>{content}<figcaption>{esc(caption)}</figcaption>"
        "</figure>"
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


def suppressed_mark(options: OutputOptions) -> str:
    return f"<span class='sup'>{esc(options.suppressed_text())}</span>"


def count_cell(n: object, *, options: OutputOptions) -> str:
    """A student count, or the suppression mark when the disclosure policy hides it."""
    if disclosure.is_small(n, options.min_cell_n):
        return suppressed_mark(options)
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


def document(title: str, body: str, *, lang: str, css: str) -> str:
    """A complete page: ``body`` is markup already, ``title`` is escaped here."""
    return (
        f"<!DOCTYPE html><html lang='{lang}'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(title)}</title><style>{css}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )
