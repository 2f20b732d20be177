"""report.html from a fake run folder (fake DataTree, tables made by the real summarise code;
no sampling): sections, figures, findings and their numbers, thresholds, banner,
suppression and the disclosure audit."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from omlbayes.constants import MIN_CELL_N, PD_LIKELY, PD_VERY_LIKELY  # noqa: E402
from omlbayes.data import schema  # noqa: E402
from omlbayes.errors import SpecError  # noqa: E402
from omlbayes.model import estimands
from omlbayes.report.findings import (
    direction_key,
    direction_phrase,
    fmt_number,
    fmt_pd,
    load_findings,  # noqa: E402
    parse_number,
)
from omlbayes.report.page import write_report
from omlbayes.results import runs, summarise
from omlbayes.results.disclosure import disclosure_problems
from omlbayes.results.options import OutputOptions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WAVE_PAIRS = (
    ("2018", "2014"),
    ("2020_1", "2020_0"),
    ("2020_1", "2020_2"),
    ("2022", "2020_2"),
    ("2022", "2018"),
)
SCHOOLS = {  # school -> region
    f"sch{k:02d}": region for k, region in enumerate(schema.REGIONS * 2, start=1)
}
SMALL_CELL = ("parent_edu x region", "unknown:maastricht_heuvelland")  # n < 10 in every wave
STUDENT_IDS = [f"st{k:05d}" for k in range(1, 200)]
FIGURES = (
    "fig1_items.png",
    "fig2_wave.png",
    "fig3_school_type.png",
    "fig4_gender.png",
    "fig5_parent_edu.png",
    "fig6_region.png",
    "fig_cross_region_x_school_type.png",
    "energy.png",
)


def _targets():
    levels = schema.Levels()
    out = []
    for columns in ((), *schema.SUBGROUP_BREAKDOWNS):
        for cell in itertools.product(*(levels.of(c) for c in columns)):
            for wave in (*schema.WAVES, "all"):
                out.append((schema.breakdown_name(columns), schema.group_label(cell), wave))
    return out


def _true_mean(breakdown: str, group: str, wave: str, rng) -> float:
    """Known directions for the overall trend; boys above girls; the rest random."""
    if breakdown == "overall":
        return {
            "2014": 0.10,
            "2016": 0.06,
            "2018": -0.10,
            "2020_0": 0.0,
            "2020_1": 0.05,
            "2020_2": -0.04,
            "2022": 0.0,
            "all": 0.0,
        }[wave]
    if breakdown == "gender":
        return 0.09 if group == "boy" else -0.09
    return float(rng.uniform(-0.3, 0.3))


def make_fake_run(
    folder: Path,
    *,
    passed: bool = True,
    lang: str = "nl",
    seed: int = 3,
    school_ids: tuple[str, ...] | None = None,
) -> Path:
    """A complete run folder without fitting: a posterior whose coefficients are the target
    effects themselves (identity g-computation weights) plus school intercepts."""
    rng = np.random.default_rng(seed)
    targets = _targets()
    chains, draws = 2, 200
    sds = rng.uniform(0.02, 0.08, len(targets))
    means = np.array([_true_mean(b, g, w, rng) for b, g, w in targets])
    eff = means + sds * rng.standard_normal((chains, draws, len(targets)))
    school_region = (
        SCHOOLS
        if school_ids is None
        else {s: schema.REGIONS[k % len(schema.REGIONS)] for k, s in enumerate(school_ids)}
    )
    schools = list(school_region)
    u = 0.15 * rng.standard_normal((chains, draws, len(schools))) + np.linspace(
        -0.3, 0.3, len(schools)
    )
    posterior = xr.Dataset(
        {
            "eff": (("chain", "draw", "eff_dim"), eff),
            "1|school_id": (("chain", "draw", "school_id__factor_dim"), u),
            "1|school_id_sigma": (
                ("chain", "draw"),
                np.abs(rng.normal(0.2, 0.01, (chains, draws))),
            ),
        },
        coords={
            "chain": np.arange(chains),
            "draw": np.arange(draws),
            "eff_dim": [str(k) for k in range(len(targets))],
            "school_id__factor_dim": schools,
        },
    )
    coef = [f"eff[{k}]" for k in range(len(targets))] + [f"1|school_id[{s}]" for s in schools]
    weights = np.zeros((len(targets), len(coef)))
    weights[:, : len(targets)] = np.eye(len(targets))
    n = np.array([4 if (b, g) == SMALL_CELL else int(rng.integers(30, 900)) for b, g, _ in targets])
    gcomp = xr.Dataset(
        {
            "weights": (("target", "coef"), weights),
            "pooled": (("coef",), np.zeros(len(coef))),
            "n": (("target",), n),
        },
        coords={
            "target": np.arange(len(targets)),
            "coef": coef,
            "breakdown": ("target", [t[0] for t in targets]),
            "group": ("target", [t[1] for t in targets]),
            "wave": ("target", [t[2] for t in targets]),
        },
    )
    sample_stats = xr.Dataset(
        {"diverging": (("chain", "draw"), np.zeros((chains, draws), dtype=bool))},
        coords={"chain": np.arange(chains), "draw": np.arange(draws)},
    )
    tree = xr.DataTree.from_dict(
        {"/posterior": posterior, "/sample_stats": sample_stats, "/gcomp": gcomp}
    )
    folder.mkdir(parents=True)
    runs.write_posterior(tree, folder / runs.POSTERIOR)

    # Tables exactly as workflow.summarise_run makes them.
    effects = estimands.effect_draws(posterior, gcomp, seed=seed)
    table = summarise.effects_table(effects, n, options=OutputOptions(min_cell_n=MIN_CELL_N))
    table.to_csv(folder / "effects.csv", index=False)
    defs = estimands.contrast_list(
        table[["breakdown", "group"]], waves=schema.WAVES, wave_pairs=WAVE_PAIRS
    )
    suppressed = {(r.breakdown, r.group, r.wave) for r in table.itertuples() if r.suppressed}
    summarise.contrasts_table(
        estimands.contrast_draws(effects, defs), suppressed=suppressed, options=OutputOptions()
    ).to_csv(folder / "contrasts.csv", index=False)

    school_rows = []
    for k, (s, region) in enumerate(school_region.items()):
        for j, wave in enumerate(schema.WAVES):
            if (k + j) % 4 == 3:
                continue  # not surveyed this wave
            count = 6 if (k == 0 or (k + j) % 5 == 0) else 20 + k + j  # sch01: all small
            small = count < MIN_CELL_N
            school_rows.append(
                {
                    "school_id": s,
                    "region": region,
                    "wave": wave,
                    "n": pd.NA if small else count,
                    "suppressed": small,
                }
            )
    pd.DataFrame(school_rows).to_csv(folder / "schools.csv", index=False)
    pd.DataFrame(
        [
            {
                "variable": "gender",
                "level": "boy",
                "n": 100,
                "percent": 50.0,
                **{w: 50.0 for w in schema.WAVES},
                "all": 50.0,
            },
            {
                "variable": "gender",
                "level": "girl",
                "n": 100,
                "percent": 50.0,
                **{w: 50.0 for w in schema.WAVES},
                "all": 50.0,
            },
        ]
    ).to_csv(folder / "table1.csv", index=False)
    pd.DataFrame(
        [
            {
                "item": f"item_{k}",
                "n": 190,
                "n_missing": 2,
                "mean": 3.0,
                "pct_1": 10.0,
                "pct_2": 20.0,
                "pct_3": 40.0,
                "pct_4": 20.0,
                "pct_5": 10.0,
            }
            for k in range(1, 7)
        ]
    ).to_csv(folder / "items.csv", index=False)
    pd.DataFrame(
        [
            {"group": g, "n_complete": 150, "alpha": 0.88, "omega": 0.89}
            for g in ("all", *schema.WAVES)
        ]
    ).to_csv(folder / "reliability.csv", index=False)
    pd.DataFrame({"item": [f"item_{k}" for k in range(1, 7)], "item_total_r": 0.7}).to_csv(
        folder / "item_total.csv", index=False
    )
    (folder / "figures").mkdir()
    for name in FIGURES:
        fig = Figure(figsize=(1.0, 0.6), dpi=40)
        fig.subplots().plot([0, 1], [0, 1])
        fig.savefig(folder / "figures" / name)
    checks = {
        "r_hat_below_1_01": passed,
        "ess_bulk_at_least_400": True,
        "ess_tail_at_least_400": True,
        "no_divergences": True,
        "bfmi_above_0_3": True,
    }
    runs.write_json(
        folder / runs.DIAGNOSTICS,
        {
            "passed": passed,
            "checks": checks,
            "max_r_hat": 1.002 if passed else 1.08,
            "max_r_hat_at": "eff[3]",
            "min_ess_bulk": 900.0,
            "min_ess_tail": 800.0,
            "divergences": 0,
            "min_bfmi": 0.9,
            "chains": chains,
            "draws": draws,
        },
    )
    levels = schema.Levels()
    options = OutputOptions(lang=lang, monitor="OnderwijsMonitor Limburg", area="Limburg")
    record = runs.RunRecord(
        model="fake",
        kind="survey",
        options=options.to_dict(),
        seed=seed,
        levels={c: list(levels.of(c)) for c in schema.CATEGORICAL_COLUMNS},
        spec={"wave_contrasts": [list(p) for p in WAVE_PAIRS]},
        data={
            "source": "/somewhere/fake.csv",
            "sha256": "ab" * 32,
            "n_read": 210,
            "n_analysed": 199,
            "exclusions": {"fewer than 4 of 6 items answered": 11},
            "notes": {},
        },
        scale={"min_items": 4, "raw_mean": 2.99, "raw_sd": 0.8, "age_mean": 14.9},
        sampler={
            "backend": "collapsed",
            "sampler": "nutpie",
            "draws": draws,
            "tune": 100,
            "chains": chains,
        },
        priors={"common": "Normal(mu=0, sigma=1)", "sigma": "HalfNormal(sigma=1)"},
        formula="index ~ 1 + wave + (1|school_id)",
        findings=load_findings(ROOT / "models" / "findings" / "oml.toml").to_dict(),
        versions={"omlbayes": "0.1.0", "pymc": "6.4.0"},
        git_commit="0" * 40,
        python="3.12",
        timings={"total_s": 12.0, "fit_s": 8.0},
    )
    runs.write_record(folder, record)
    return folder


class Page(HTMLParser):
    """Collects what the tests look at: elements with attributes and the text inside."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[dict] = []  # {"tag", "attrs", "text"}
        self._open: list[dict] = []
        self.first_in_main: dict | None = None
        self._in_main = False

    def handle_starttag(self, tag, attrs):
        el = {"tag": tag, "attrs": dict(attrs), "text": ""}
        self.elements.append(el)
        if self._in_main and self.first_in_main is None:
            self.first_in_main = el
        if tag == "main":
            self._in_main = True
        if tag not in ("img", "meta", "br"):
            self._open.append(el)

    def handle_endtag(self, tag):
        for k in range(len(self._open) - 1, -1, -1):
            if self._open[k]["tag"] == tag:
                del self._open[k:]
                break

    def handle_data(self, data):
        for el in self._open:
            el["text"] += data

    def find(self, tag=None, cls=None, **attrs):
        out = []
        for el in self.elements:
            if tag and el["tag"] != tag:
                continue
            if cls and cls not in el["attrs"].get("class", "").split():
                continue
            if any(el["attrs"].get(k) != v for k, v in attrs.items()):
                continue
            out.append(el)
        return out


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


NUMBER = re.compile(r"[+\u2212-]?\d+[.,]\d+%?")


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory) -> Path:
    return make_fake_run(tmp_path_factory.mktemp("runs") / "fake")


@pytest.fixture(scope="module")
def report_nl(fake_run) -> Path:
    return write_report(fake_run, lang="nl")


# ---------------------------------------------------------------------------- phrases


@pytest.mark.parametrize(
    ("mean", "pd_", "key"),
    [
        (0.3, PD_VERY_LIKELY, "very_likely_higher"),
        (-0.3, 0.999, "very_likely_lower"),
        (0.1, PD_VERY_LIKELY - 1e-4, "probably_higher"),
        (-0.1, PD_LIKELY, "probably_lower"),
        (0.1, PD_LIKELY - 1e-4, "no_clear_difference"),
        (-0.01, 0.5, "no_clear_difference"),
    ],
)
def test_direction_key_thresholds(mean, pd_, key):
    assert direction_key(mean, pd_) == key


def test_direction_phrase_languages_and_bad_input():
    assert direction_phrase(0.2, 0.99, lang="en") == "very likely higher"
    assert direction_phrase(-0.2, 0.95, lang="nl") == "waarschijnlijk lager"
    assert direction_phrase(0.2, 0.5, lang="en") == "no clear difference"
    with pytest.raises(SpecError):
        direction_key(float("nan"), 0.99)
    with pytest.raises(SpecError):
        direction_key(0.1, 1.5)


def test_number_formats():
    assert fmt_number(-0.123, lang="en", sign=True) == "\u22120.12"
    assert fmt_number(0.123, lang="nl", sign=True) == "+0,12"
    assert fmt_number(-0.001, lang="en", sign=True) == "+0.00"
    # rounded down, so a shown value never reaches a threshold the true one misses
    assert fmt_pd(0.97499, lang="en") == "97.4%"
    assert fmt_pd(0.975, lang="nl") == "97,5%"
    assert fmt_pd(0.8999, lang="en") == "89.9%"
    assert parse_number("\u22120,25") == -0.25


# ---------------------------------------------------------------------------- report


def test_report_is_self_contained_with_every_section(fake_run, report_nl):
    assert report_nl == fake_run / "report.html"
    text = report_nl.read_text(encoding="utf-8")
    page = parse(report_nl)
    assert [el["attrs"]["id"] for el in page.find("h2")] == [
        "measurement",
        "composition",
        "figures",
        "results",
        "explorer-title",
        "methods",
    ]
    assert [a["attrs"]["href"] for a in page.find("a")][:6] == [
        "#measurement",
        "#composition",
        "#figures",
        "#results",
        "#explorer",
        "#methods",
    ]
    imgs = page.find("img")
    assert len(imgs) == len(FIGURES)
    assert all(img["attrs"]["src"].startswith("data:image/png;base64,") for img in imgs)
    assert {el["attrs"]["data-figure"] for el in page.find("figure")} == set(FIGURES)
    # nothing outside the file: no external scripts, styles, images or fonts; the one
    # script is the explorer's, inline (its data as JSON beside it), and fetches nothing
    assert not re.search(r"""(src|href)=['"](?!data:|#)""", text)
    assert "@import" not in text and "url(" not in text
    assert re.findall(r"<script[^>]*>", text) == [
        "<script type='application/json' id='explorer-data'>",
        "<script>",
    ]
    assert not re.search(r"fetch\(|XMLHttpRequest|import\(|https?:", text)
    # the six items, reliability, Table 1, methods pieces
    assert "Leraren weten meestal hoe ik me voel" in text
    assert len(page.find("table", cls="reliability")) == 1
    assert len(page.find("table", cls="composition")) == 1
    assert "index ~ 1 + wave + (1|school_id)" in text
    assert "fewer than 4 of 6 items answered" in text and ">11<" in text
    assert "HalfNormal(sigma=1)" in text and "6.4.0" in text
    assert "equal-tailed" in text and "significant" in text


def test_every_finding_block_present(report_nl):
    page = parse(report_nl)
    blocks = [el["attrs"]["data-block"] for el in page.find("div", cls="finding-block")]
    assert blocks == [
        "trend",
        "closure",
        "recovery",
        "school_type",
        "school_type_2020",
        "gender",
        "gender_trend",
        "parent_edu",
        "parent_edu_cross",
        "region",
        "region_type",
        "region_parent_edu",
    ]
    grey = page.find("p", cls="factsheet")
    assert len(grey) == len(blocks)  # the run's levels are OML's: every factsheet line shown
    assert all(el["text"].startswith("Factsheet") for el in grey)


@pytest.mark.parametrize("lang", ["nl", "en"])
def test_finding_numbers_match_contrasts(fake_run, lang):
    path = write_report(fake_run, lang=lang, redraw_figures=False)
    contrasts = pd.read_csv(fake_run / "contrasts.csv", dtype=str)
    index = {
        (r.breakdown, r.group, r.wave, r.reference_group, r.reference): r
        for r in contrasts.itertuples(index=False)
    }
    items = parse(path).find("li", cls="contrast")
    assert len(items) > 60
    for li in items:
        a = li["attrs"]
        row = index[
            (
                a["data-breakdown"],
                a["data-group"],
                a["data-wave"],
                a["data-reference-group"],
                a["data-reference"],
            )
        ]
        mean, lower, upper = float(row.mean), float(row.lower), float(row.upper)
        if a["data-flipped"] == "1":
            mean, lower, upper = -mean, -upper, -lower
        numbers = [parse_number(x) for x in NUMBER.findall(li["text"])]
        # mean, lower, upper (SD) and the probability of direction in per cent
        assert numbers[-4:-1] == pytest.approx(
            [round(mean, 2), round(lower, 2), round(upper, 2)], abs=1e-9
        ), li["text"]
        pd_ = float(row.p_direction)
        assert numbers[-1] == pytest.approx(np.floor(pd_ * 1000 + 1e-9) / 10)
        assert a["data-phrase"] == direction_key(mean, pd_)
        assert direction_phrase(mean, pd_, lang=lang) in li["text"]


def test_known_directions_are_written(report_nl, fake_run):
    en = parse(write_report(fake_run, lang="en", redraw_figures=False))
    by_key = {
        (
            el["attrs"]["data-breakdown"],
            el["attrs"]["data-wave"],
            el["attrs"]["data-reference"],
        ): el["text"]
        for el in en.find("li", cls="contrast")
    }
    assert "very likely lower" in by_key[("overall", "2018", "2014")]
    gender = [
        el["text"]
        for el in en.find("li", cls="contrast")
        if el["attrs"]["data-breakdown"] == "gender" and el["attrs"]["data-wave"] == "all"
    ]
    assert gender and "very likely higher" in gender[0]
    assert any("largest in" in el["text"] for el in en.find("li", cls="largest_gap"))


def test_extremes_match_effects(fake_run, report_nl):
    effects = pd.read_csv(fake_run / "effects.csv", dtype={"group": str, "wave": str})
    items = parse(report_nl).find("li", cls="extremes")
    assert items
    for li in items:
        a = li["attrs"]
        rows = effects[(effects.breakdown == a["data-breakdown"]) & (effects.wave == "all")]
        best = rows.set_index("group").loc[a["data-best"], "mean"]
        worst = rows.set_index("group").loc[a["data-worst"], "mean"]
        assert best >= worst
        numbers = [parse_number(x) for x in NUMBER.findall(li["text"])]
        assert numbers == pytest.approx([round(best, 2), round(worst, 2)], abs=1e-9)


def test_suppressed_cells_say_so(report_nl):
    page = parse(report_nl)
    sup = page.find("li", cls="suppressed")
    assert sup, "the small cell unknown x Maastricht-Heuvelland should give suppressed findings"
    for li in sup:
        assert f"n < {MIN_CELL_N}" in li["text"]
        assert not NUMBER.findall(li["text"])


def test_failed_diagnostics_banner(tmp_path):
    run = make_fake_run(tmp_path / "bad", passed=False)
    page = parse(write_report(run))
    banner = page.first_in_main
    assert banner["tag"] == "div" and "failed" in banner["attrs"]["class"].split()
    assert "NIET GESLAAGD" in banner["text"] and "R-hat" in banner["text"]
    good = parse(write_report(make_fake_run(tmp_path / "good", passed=True)))
    assert not good.find("div", cls="failed")


def test_other_language_file_and_threshold(fake_run):
    en = write_report(fake_run, lang="en", redraw_figures=False)
    assert en.name == "report.en.html"
    assert parse(en).find("h2", id="results")[0]["text"] == "4. Results in brief"
    with pytest.raises(SpecError):
        write_report(fake_run, min_cell_n=3)


def test_stricter_threshold_suppresses_more(fake_run, tmp_path):
    effects = pd.read_csv(fake_run / "effects.csv")
    threshold = int(effects["n"].dropna().quantile(0.3))
    page = parse(write_report(fake_run, lang="nl", min_cell_n=threshold, redraw_figures=False))
    assert len(page.find("li", cls="suppressed")) > len(
        parse(write_report(fake_run, lang="nl")).find("li", cls="suppressed")
    )


def test_no_student_ids_or_small_counts_in_outputs(fake_run, report_nl):
    from omlbayes.report.schools import write_school_pages

    write_school_pages(fake_run)
    assert disclosure_problems(fake_run, student_ids=STUDENT_IDS, min_cell_n=MIN_CELL_N) == []
    # the audit itself finds a planted id and a planted small count
    leak = fake_run / "leak.csv"
    leak.write_text("school_id,n\nsch01,3\nst00042,12\n")
    try:
        problems = disclosure_problems(fake_run, student_ids=STUDENT_IDS)
        assert any("st00042" in p for p in problems)
        assert any("column n" in p for p in problems)
    finally:
        leak.unlink()


def test_script_maps_errors_to_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "report.py"), str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("lang", ["nl", "en"])
def test_diagnostics_say_what_the_gate_can_and_cannot_see(fake_run, lang):
    """The diagnostics section has the paragraph on the scope of the checks, in the report's
    own language, after the table of checks and before the intervals."""
    from omlbayes import labels
    from omlbayes.report.html import esc

    page_path = write_report(fake_run, lang=lang, redraw_figures=False)
    text = page_path.read_text(encoding="utf-8")
    paragraphs = [el["text"] for el in parse(page_path).find("p", cls="gate-scope")]
    rt = labels.REPORT_TEXT[lang]
    assert paragraphs == [rt["gate_sees"], rt["gate_blind"]]
    other = labels.REPORT_TEXT["en" if lang == "nl" else "nl"]
    assert other["gate_sees"] not in text
    words = {
        "nl": ("twee keer", "verstorende factoren", "niet willekeurig", "meetnon-invariantie"),
        "en": ("data twice", "confounders", "not missing at random", "non-invariance"),
    }[lang]
    assert all(w in " ".join(paragraphs) for w in words)
    diagnostics = text.index("id='diagnostics'")
    scope = text.index("class='gate-scope'")
    heading = text.index(esc(rt["interval_head"]), diagnostics)
    assert text.index("class='diagnostics'", diagnostics) < scope < heading


@pytest.mark.parametrize(("lang", "p_value"), [("nl", 0.002), ("en", 0.41)])
def test_report_states_the_advisory_drift_check(tmp_path, lang, p_value):
    """The advisory persistence check is reported with its p-value and what a flag means,
    in the report's language, and leaves the gate's verdict alone."""
    import json

    from omlbayes import labels

    run = make_fake_run(tmp_path / "fake")
    path = run / runs.DIAGNOSTICS
    diag = json.loads(path.read_text())
    flagged = p_value < 0.005
    diag["ppc"] = {
        "ppc_school_drift_persistence": {
            "passed": not flagged,
            "advisory": True,
            "most_extreme": [{"statistic": "lag-one autocorrelation", "p": p_value}],
        }
    }
    path.write_text(json.dumps(diag))
    page = write_report(run, lang=lang, redraw_figures=False)
    found = [el["text"] for el in parse(page).find("p", cls="drift-check")]
    rt = labels.REPORT_TEXT[lang]
    assert len(found) == 1
    assert (rt["drift_flagged"] if flagged else rt["drift_fine"]) in found[0]
    assert f"p = {p_value:.3f}".replace(".", "," if lang == "nl" else ".") in found[0]
    assert diag["passed"] is True  # advisory: the gate's verdict is the run's own


def test_sampler_paragraph_gives_the_draws_kept_by_the_early_stop(tmp_path, lang="en"):
    import json

    from omlbayes import labels

    run = make_fake_run(tmp_path / "fake")
    record = json.loads((run / "run.json").read_text())
    record["sampler"] = {"backend": "collapsed", "sampler": "nutpie", "draws": 2000,
                         "tune": 300, "chains": 4}  # fmt: skip
    record["fit"] = {"sampling": {"draws_kept": 500, "draws_max": 2000, "stopped_early": True}}
    (run / "run.json").write_text(json.dumps(record))
    page = write_report(run, lang=lang, redraw_figures=False)
    text = parse(page).find("p", cls="sampler")[0]["text"]
    rt = labels.REPORT_TEXT[lang]
    assert rt["sampler_early"].format(kept=500, most=2000) in text
    assert "2000" not in text.replace(rt["sampler_early"].format(kept=500, most=2000), "")


def test_the_other_languages_figures_are_those_a_run_in_that_language_writes(fake_run, tmp_path):
    """The report in the run's other language redraws its forest figures, saved as a run's
    own are: the same PNG bytes as a run in that language writes to figures/."""
    import base64

    from omlbayes.plots.forest import write_forest_figures

    run = runs.open_run(fake_run)
    assert run.options.lang == "nl"
    html = write_report(fake_run, lang="en").read_text(encoding="utf-8")
    embedded = {
        base64.b64decode(m) for m in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    }
    effects = pd.read_csv(fake_run / "effects.csv", dtype={"group": str, "wave": str})
    for breakdown in ("overall", "gender x school_type"):  # one panel; a cross with a legend
        (path,) = write_forest_figures(
            effects[effects["breakdown"] == breakdown],
            tmp_path,
            options=run.options.with_lang("en"),
            levels=run.record.levels,
        )
        assert path.read_bytes() in embedded, path.name
