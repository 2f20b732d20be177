"""The report's section on a graded run: item checks, DIF, reliability, latent vs index."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pandas as pd

from omlbayes import labels
from omlbayes.report.html import esc
from omlbayes.results.options import OutputOptions
from omlbayes.results.runs import (
    ATTENUATION,
    DIF_CSV,
    ITEM_PPC_CSV,
    LATENT_VS_INDEX_CSV,
    RELIABILITY_MODEL_CSV,
)

SECTION_TEXT = {
    "en": {
        "title": "Measurement model: the six items as ordinal indicators of a latent trait",
        "intro": (
            "This run fits a graded-response model (cumulative probit) of the six answers "
            "with item-specific cutpoints and loadings; the latent relation trait carries "
            "the same structure as the index model. Effects and contrasts in this report are "
            "in SD units of the latent trait over all analysed students. The index model "
            "was fitted on the same students for the side by side below. Every interval in "
            "this section is a {interval}."
        ),
        "ppc": "Item answers per wave: observed shares against the model's replications.",
        "ppc_summary": (
            "{outside} of {total} answer shares (item x answer x group, groups: all, wave, "
            "gender, school type) fall outside the {pct}% predictive interval."
        ),
        "dif": "Differential item functioning (posterior predictive, by wave and gender)",
        "dif_none": "No item's mean answer in any wave or gender group falls outside its "
        "{pct}% predictive interval given the latent trait.",
        "dif_intro": "Items whose observed mean answer in a group falls outside the {pct}% "
        "interval the model predicts from the students' latent values (largest first):",
        "rel": "Reliability: graded model next to alpha and omega",
        "lvi": "Latent trait and index side by side (same students, both in SD units).",
        "lvi_table": "The factsheet's overall contrasts on both scales",
        "cols_dif": ["grouping", "group", "item", "observed", "predicted [{pct}%]", "difference"],
        "cols_rel": ["measure", "value", "{pct}% interval"],
        "cols_lvi": ["contrast", "latent trait [{pct}%]", "index [{pct}%]"],
        "measures": {
            "latent_response_omega": "latent-response omega (graded model)",
            "eap_reliability": "EAP reliability of the latent values (items and covariates)",
            "alpha": "Cronbach's alpha (index, complete cases)",
            "omega": "McDonald's omega (index, complete cases)",
            "index_attenuation": "attenuation factor of the index, lambda = Cov(index, latent)",
        },
        "attenuation": (
            "Latent and index SD units differ. The index is the mean of six answers that carry "
            "measurement error, so its SD holds error variance besides the trait, and a "
            "contrast in SD units of the index is smaller than the same contrast in SD units "
            "of the latent trait: index contrast = lambda x latent contrast, with lambda = "
            "Cov(standardized index, standardized latent) = sqrt(reliability of the index as a "
            "measure of the trait). In this run lambda = {mean} ({short} {lower} to "
            "{upper}), reliability about {rel}: a latent contrast of 0.20 SD appears as about "
            "{example} SD on the index. The two scales agree on signs and on which contrasts "
            "are large; their sizes differ by this factor (and by the two models' different "
            "shrinkage)."
        ),
    },
    "nl": {
        "title": "Meetmodel: de zes items als ordinale indicatoren van een latente eigenschap",
        "intro": (
            "Deze run schat een graded-responsmodel (cumulatieve probit) van de zes antwoorden "
            "met drempels en ladingen per item; de latente relatie-eigenschap heeft dezelfde "
            "structuur als het indexmodel. Effecten en verschillen in dit rapport staan in "
            "SD-eenheden van de latente eigenschap over alle geanalyseerde leerlingen. Het "
            "indexmodel is op dezelfde leerlingen geschat voor de vergelijking hieronder. Elk "
            "interval in deze paragraaf is een {interval}."
        ),
        "ppc": "Antwoorden per item en meting: waargenomen aandelen tegen de nabootsingen "
        "van het model.",
        "ppc_summary": (
            "{outside} van de {total} antwoordaandelen (item x antwoord x groep; groepen: "
            "totaal, meting, geslacht, schooltype) vallen buiten het {pct}%-voorspelinterval."
        ),
        "dif": "Differentieel itemfunctioneren (posterior predictive, naar meting en geslacht)",
        "dif_none": "Bij geen enkel item valt het gemiddelde antwoord in een meting of "
        "geslachtsgroep buiten het {pct}%-voorspelinterval gegeven de latente eigenschap.",
        "dif_intro": "Items waarvan het waargenomen gemiddelde in een groep buiten het "
        "{pct}%-interval valt dat het model voorspelt uit de latente waarden (grootste eerst):",
        "rel": "Betrouwbaarheid: graded-responsmodel naast alfa en omega",
        "lvi": "Latente eigenschap en index naast elkaar (dezelfde leerlingen, beide in "
        "SD-eenheden).",
        "lvi_table": "De totaalvergelijkingen van de factsheet op beide schalen",
        "cols_dif": ["indeling", "groep", "item", "waargenomen", "voorspeld [{pct}%]", "verschil"],
        "cols_rel": ["maat", "waarde", "{pct}%-interval"],
        "cols_lvi": ["vergelijking", "latente eigenschap [{pct}%]", "index [{pct}%]"],
        "measures": {
            "latent_response_omega": "omega van de latente responsen (graded-responsmodel)",
            "eap_reliability": "EAP-betrouwbaarheid van de latente waarden (items en "
            "achtergrondkenmerken)",
            "alpha": "Cronbachs alfa (index, volledige antwoorden)",
            "omega": "McDonalds omega (index, volledige antwoorden)",
            "index_attenuation": "verzwakkingsfactor van de index, lambda = Cov(index, latent)",
        },
        "attenuation": (
            "SD-eenheden van de latente eigenschap en van de index verschillen. De index is het "
            "gemiddelde van zes antwoorden met meetfout, dus zijn SD bevat naast de eigenschap "
            "ook foutvariantie, en een verschil in SD-eenheden van de index is kleiner dan "
            "hetzelfde verschil in SD-eenheden van de latente eigenschap: verschil op de index "
            "= lambda x verschil op de latente schaal, met lambda = Cov(gestandaardiseerde "
            "index, gestandaardiseerde latente waarde) = wortel(betrouwbaarheid van de index "
            "als maat voor de eigenschap). In deze run is lambda = {mean} ({short} {lower} "
            "tot {upper}), betrouwbaarheid ongeveer {rel}: een latent verschil van 0,20 SD is "
            "op de index ongeveer {example} SD. Beide schalen geven dezelfde richting en "
            "dezelfde grote verschillen; de grootte verschilt met deze factor (en door de "
            "verschillende krimp van de twee modellen)."
        ),
    },
}
MAX_DIF_ROWS = 12


def _img(png: Path, caption: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return (
        f"<figure><img alt='{esc(caption)}' style='max-width:100%' "
        f"src='data:image/png;base64,{data}'><figcaption>{esc(caption)}</figcaption></figure>"
    )


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _texts(lang: str, options: OutputOptions) -> dict:
    """The section's texts in ``lang`` with the run's interval filled in."""
    pct = options.percent_text(lang)
    interval = options.interval_name(lang)

    def fill(value):
        if isinstance(value, str):
            return value.replace("{pct}", pct).replace("{interval}", interval)
        if isinstance(value, list):
            return [fill(v) for v in value]
        return {k: fill(v) for k, v in value.items()}

    return fill(SECTION_TEXT.get(lang, SECTION_TEXT["en"]))


def _attenuation_html(rel: pd.DataFrame, t: dict, *, lang: str, options: OutputOptions) -> str:
    """The paragraph on latent vs index SD units, with the run's attenuation factor."""
    row = rel[rel["measure"] == ATTENUATION]
    if row.empty:  # a run from before the factor was written
        return ""
    r = row.iloc[0]

    def num(value: float, digits: int = 2) -> str:
        text = f"{value:.{digits}f}"
        return text.replace(".", ",") if lang == "nl" else text

    text = t["attenuation"].format(
        mean=num(r["mean"]),
        lower=num(r["lower"]),
        upper=num(r["upper"]),
        short=options.interval_short(lang),
        rel=num(r["mean"] ** 2),
        example=num(0.2 * r["mean"]),
    )
    return f"<p class='attenuation'>{esc(text)}</p>"


def section_html(path: Path | str, *, lang: str, options: OutputOptions) -> str:
    """The report section of a graded run (empty for other runs), with the run's interval."""
    path = Path(path)
    if not (path / LATENT_VS_INDEX_CSV).is_file():
        return ""
    t = _texts(lang, options)
    parts = [f"<h2 id='latent'>{esc(t['title'])}</h2>", f"<p>{esc(t['intro'])}</p>"]
    figures = path / "figures"
    if (path / ITEM_PPC_CSV).is_file():
        ppc = pd.read_csv(path / ITEM_PPC_CSV)
        if "suppressed" in ppc:
            ppc = ppc[~ppc["suppressed"]]
        outside = int(((ppc["observed"] < ppc["lower"]) | (ppc["observed"] > ppc["upper"])).sum())
        parts.append(f"<p>{esc(t['ppc_summary'].format(outside=outside, total=len(ppc)))}</p>")
    if (figures / "item_ppc.png").is_file():
        parts.append(_img(figures / "item_ppc.png", t["ppc"]))
    if (path / DIF_CSV).is_file():
        dif = pd.read_csv(path / DIF_CSV, dtype={"group": str})
        flagged = dif[dif["flagged"].astype(bool)]
        flagged = flagged.sort_values("difference", key=np.abs, ascending=False)
        parts.append(f"<h3>{esc(t['dif'])}</h3>")
        if flagged.empty:
            parts.append(f"<p>{esc(t['dif_none'])}</p>")
        else:
            parts.append(f"<p>{esc(t['dif_intro'])}</p>")
            rows = [
                [
                    labels.column(r.grouping, lang),
                    labels.level(r.group, lang),
                    r.item,
                    f"{r.observed_mean:.2f}",
                    f"{r.predicted_mean:.2f} [{r.lower:.2f}, {r.upper:.2f}]",
                    f"{r.difference:+.2f}",
                ]
                for r in flagged.head(MAX_DIF_ROWS).itertuples()
            ]
            parts.append(_table(t["cols_dif"], rows))
    if (path / RELIABILITY_MODEL_CSV).is_file():
        rel = pd.read_csv(path / RELIABILITY_MODEL_CSV)
        rows = [
            [
                t["measures"].get(r.measure, r.measure),
                f"{r.mean:.3f}",
                f"[{r.lower:.3f}, {r.upper:.3f}]" if pd.notna(r.lower) else "",
            ]
            for r in rel.itertuples()
        ]
        if (path / "reliability.csv").is_file():
            classic = pd.read_csv(path / "reliability.csv", dtype={"group": str})
            overall = classic[classic["group"] == "all"]
            for name in ("alpha", "omega"):
                if len(overall):
                    rows.append([t["measures"][name], f"{overall[name].iloc[0]:.3f}", ""])
        parts.append(f"<h3>{esc(t['rel'])}</h3>")
        parts.append(_table(t["cols_rel"], rows))
        parts.append(_attenuation_html(rel, t, lang=lang, options=options))
    if (figures / "latent_vs_index.png").is_file():
        parts.append(_img(figures / "latent_vs_index.png", t["lvi"]))
    lvi = pd.read_csv(path / LATENT_VS_INDEX_CSV, dtype={"group": str, "wave": str})
    head = lvi[(lvi["breakdown"] == "overall") & (lvi["kind"] == "spec_pair")]
    if len(head):
        rows = [
            [
                f"{labels.level(r.wave, lang)} vs {labels.level(r.reference, lang)}",
                f"{r.latent_mean:+.3f} [{r.latent_lower:+.3f}, {r.latent_upper:+.3f}]",
                f"{r.index_mean:+.3f} [{r.index_lower:+.3f}, {r.index_upper:+.3f}]",
            ]
            for r in head.itertuples()
        ]
        parts.append(f"<h3>{esc(t['lvi_table'])}</h3>")
        parts.append(_table(t["cols_lvi"], rows))
    return "".join(parts)
