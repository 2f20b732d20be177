"""Every setting honoured, any monitor's levels: two whole runs through scripts/fit.py.

1. The OML-like small survey with ``--prob 0.9 --interval hdi --min-cell-n 20`` on chains
   too short for the gate: the run exits 3 and says so, and still every file it writes
   (tables, run record, both reports, school pages, every figure's texts) states the run's
   interval and threshold, never the defaults.
2. Another monitor: other wave labels (no 2020 sub-waves), three regions, three school
   types, a third gender with small cells, declared in a column map with the monitor's
   name: the outputs name only its own levels, never Limburg or OML's waves, and hide
   the small cells.
"""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import ROOT, SMALL_FIT_ARGS, run_script

from omlbayes import constants, labels
from omlbayes.data import schema
from omlbayes.model import estimands
from omlbayes.model.spec import load_spec
from omlbayes.plots.save import png_texts
from omlbayes.results import runs
from omlbayes.results.disclosure import disclosure_problems

# "95%" (not part of another number such as a probability of direction "99.5%"); the
# default quantile columns of a summary table.
DEFAULT_INTERVAL_TEXT = re.compile(r"(?<![\d.,])95\s?%|eti95|hdi95|\b(2|97)[.,]5%")
SUPPRESSED = re.compile(r"n < (\d+)")
OML_WAVE_WORDS = re.compile(r"\b20(14|16|18|20|22)\b|2020_[012]")


class _Text(HTMLParser):
    """Visible text of a page (no <style>), and the embedded PNGs."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.pngs: list[bytes] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("style", "code"):
            self._skip += 1
        src = dict(attrs).get("src", "") or ""
        if tag == "img" and src.startswith("data:image/png;base64,"):
            self.pngs.append(base64.b64decode(src.split(",", 1)[1]))
        alt = dict(attrs).get("alt")
        if alt:
            self.parts.append(alt)

    def handle_endtag(self, tag):
        if tag in ("style", "code"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def page_text(path: Path) -> tuple[str, list[bytes]]:
    parser = _Text()
    parser.feed(path.read_text(encoding="utf-8"))
    return " ".join(parser.parts), parser.pngs


def fit(data: Path, out: Path, name: str, *extra: str) -> Path:
    result = run_script(
        "fit.py", "--data", str(data), "--model", "flagship", *SMALL_FIT_ARGS, "--seed", "5",
        "--out", str(out),
        "--name", name, "--allow-failed", "--quiet", *extra,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[omlbayes]" not in result.stderr  # --quiet: no progress lines
    return out / name


def every_output(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


# ------------------------------------------------------------------ non-default options


@pytest.fixture(scope="module")
def strict_run(strict_failed) -> Path:
    return strict_failed[0]


def test_failed_gate_exits_3_says_so_and_keeps_the_run(strict_failed):
    run, result = strict_failed
    assert result.returncode == constants.EXIT_DIAGNOSTICS_FAILED, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "DIAGNOSTICS FAILED" in errors[0] and str(run) in errors[0]
    assert "Traceback" not in result.stderr
    assert "[omlbayes]" not in result.stderr  # --quiet: no progress lines
    # the run is kept, complete, and marked as failed
    assert runs.read_record(run).fit["sampling"]["draws_kept"] == 25
    assert json.loads((run / "diagnostics.json").read_text())["passed"] is False
    assert "DIAGNOSTICS FAILED" in page_text(run / "report.html")[0].upper()


def test_run_record_holds_the_options_and_levels(strict_run):
    record = runs.read_record(strict_run)
    opts = record.output_options
    assert (opts.interval, opts.prob, opts.min_cell_n, opts.lang) == ("hdi", 0.9, 20, "en")
    assert record.levels["wave"] == list(schema.WAVES)
    assert record.scale["age_mean"] == pytest.approx(15.0, abs=1.5)
    # the sampler setting reaches the record and both reports' methods
    assert record.sampler["sd_parameterization"] == "folded"
    assert record.fit["folded_sds"] == [f"1|{':'.join(t)}" for t in load_spec("flagship").group]
    assert (
        "Sampled folded (tau = |w|; sd_parameterization = folded)"
        in (strict_run / "report.html").read_text()
    )
    assert "Gevouwen bemonsterd" in (strict_run / "report.nl.html").read_text()


def test_tables_use_the_run_interval_and_threshold(strict_run, small_survey):
    summary = pd.read_csv(strict_run / "summary.csv", index_col=0)
    assert {"hdi90_lb", "hdi90_ub"} <= set(summary.columns)
    assert not [c for c in summary.columns if "95" in c or "eti" in c]
    effects = pd.read_csv(strict_run / "effects.csv", dtype={"group": str, "wave": str})
    # the bounds are the 90% HDI of the effect draws (recomputed here from the posterior)
    tree = xr.open_datatree(strict_run / runs.POSTERIOR, engine="h5netcdf").load()
    draws = estimands.effect_draws(
        tree["posterior"].to_dataset(), tree["gcomp"].to_dataset(), seed=5
    )
    shown = effects[~effects.suppressed].head(25)
    hdi = az.hdi(draws.isel(target=shown.index.to_numpy()), prob=0.9, dim=["chain", "draw"])
    np.testing.assert_allclose(shown["lower"], hdi.sel(ci_bound="lower"), atol=1e-9)
    np.testing.assert_allclose(shown["upper"], hdi.sel(ci_bound="upper"), atol=1e-9)
    # threshold 20: posterior.nc exposes no count under 20, and the cells of 10-19 students
    # (counted here from the survey) are suppressed
    assert not ((tree["gcomp"]["n"] > 0) & (tree["gcomp"]["n"] < 20)).any()
    survey = pd.read_csv(small_survey, dtype=str)
    single = effects[effects.breakdown.isin(survey.columns)]
    n = np.array(
        [((survey[r.breakdown] == r.group) & (survey.wave == r.wave)).sum()
         for r in single.itertuples()]
    )  # fmt: skip
    assert ((n >= 10) & (n < 20)).any(), "the small survey should have cells of 10-19"
    assert single.loc[(n >= 10) & (n < 20), "suppressed"].all()
    assert not disclosure_problems(strict_run, student_ids=[], min_cell_n=20)


def assert_no_default_setting(run: Path) -> int:
    """No file, figure or page text of ``run`` names the default interval or a threshold
    other than 20; returns the number of files read."""
    checked = 0
    for file in every_output(run):
        if file.suffix == ".html":
            text, pngs = page_text(file)
            in_figures = [png_texts(png) for png in pngs]
        elif file.suffix == ".png":
            text, in_figures = "", [png_texts(file)]
        elif file.suffix in (".csv", ".json"):
            text, in_figures = file.read_text(encoding="utf-8"), []
        else:
            continue
        for where, words in [(file.name, text)] + [(f"{file.name} figure", t) for t in in_figures]:
            assert not DEFAULT_INTERVAL_TEXT.search(words), (where, words[:300])
            assert set(SUPPRESSED.findall(words)) <= {"20"}, where
        checked += 1
    return checked


def test_every_text_and_figure_states_the_run_settings(strict_run):
    assert assert_no_default_setting(strict_run) > 20
    report = page_text(strict_run / "report.html")[0]
    assert "90% interval (highest posterior density, HDI)" in report
    assert "n < 20" in report and "fewer than 20 students" in report
    dutch = page_text(strict_run / "report.nl.html")[0]
    assert "90%-interval (hoogste posteriordichtheid, HDI)" in dutch and "n < 20" in dutch
    pages = sorted((strict_run / "schools").glob("school-*.html"))
    # a school with a wave of 20 or more: its page has the forest figure (inline SVG)
    text = next(page_text(p)[0] for p in pages if "<svg" in p.read_text(encoding="utf-8"))
    assert "90% interval" in text and "with 90% probability" in text
    assert "line = 90% interval" in text  # the figure's own text
    forest = png_texts(strict_run / "figures" / "fig4_gender.png")
    assert "line = 90% interval" in forest and "n < 20" in forest


# ------------------------------------------------------------------ another monitor

OTHER_LEVELS = {
    "wave": ["2015", "2017", "2019", "2021"],
    "gender": ["female", "male", "nonbinary"],
    "school_type": ["general", "vocational", "academic"],
    "parent_edu": ["low", "middle", "high"],
    "region": ["coast", "hills", "city"],
}


def other_monitor_survey(folder: Path, *, n: int = 1400, seed: int = 8) -> tuple[Path, Path]:
    """A survey of another monitor in its own labels, and its column map."""
    rng = np.random.default_rng(seed)
    regions = OTHER_LEVELS["region"]
    schools = [(f"T{r[:2].upper()}{k}", r) for r in regions for k in range(5)]
    school = rng.integers(0, len(schools), n)
    types = OTHER_LEVELS["school_type"]
    frame = pd.DataFrame(
        {
            "pupil": np.arange(1, n + 1),
            "school": [schools[s][0] for s in school],
            "area": [schools[s][1] for s in school],
            "round": rng.choice(OTHER_LEVELS["wave"], n),
            "sex": rng.choice(OTHER_LEVELS["gender"], n, p=[0.49, 0.495, 0.015]),
            "track": [types[(s + int(rng.integers(0, 2))) % 3] for s in school],
            "parents": rng.choice(OTHER_LEVELS["parent_edu"], n),
            "age": np.round(rng.normal(15.0, 0.7, n), 1),
        }
    )
    wave_shift = {"2015": 0.2, "2017": 0.1, "2019": -0.25, "2021": 0.0}
    latent = (
        frame["round"].map(wave_shift)
        + np.where(frame["sex"] == "male", 0.15, -0.1)
        + frame["track"].map({"general": 0.0, "vocational": -0.2, "academic": 0.2})
        + 0.3 * rng.standard_normal(len(schools))[school]
        + rng.standard_normal(n)
    )
    for k in range(1, 7):
        frame[f"q{k}"] = np.clip(np.round(3 + 0.9 * latent + 0.6 * rng.standard_normal(n)), 1, 5)
    data = folder / "other.csv"
    frame.to_csv(data, index=False)
    rename = {
        "pupil": "student_id", "school": "school_id", "area": "region", "round": "wave",
        "sex": "gender", "track": "school_type", "parents": "parent_edu", "age": "age",
        **{f"q{k}": f"item_{k}" for k in range(1, 7)},
    }  # fmt: skip
    lines = ["[monitor]", 'name = "Schoolmonitor Testland"', 'area = "Testland"', "", "[rename]"]
    lines += [f'{k} = "{v}"' for k, v in rename.items()]
    lines += ["", "[levels]"] + [f"{c} = {v!r}".replace("'", '"') for c, v in OTHER_LEVELS.items()]
    cmap = folder / "other_columns.toml"
    cmap.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return data, cmap


def other_monitor_spec(folder: Path) -> Path:
    """The flagship model with the monitor's own wave comparisons (one naming a wave the
    data lack) and no findings file: the generic findings."""
    text = (ROOT / "models" / "flagship.toml").read_text(encoding="utf-8")
    start = text.index("wave_contrasts = [")
    end = text.index("]\n", text.index("]", start) + 1) + 2
    text = (
        text[:start]
        + 'wave_contrasts = [["2021", "2019"], ["2021", "2015"], ["2019", "2013"]]\n'
        + text[end:]
    )
    text = text[: text.index("[report]")]
    spec = folder / "other.toml"
    spec.write_text(text, encoding="utf-8")
    return spec


@pytest.fixture(scope="module")
def other_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("other")
    data, cmap = other_monitor_survey(folder)
    spec = other_monitor_spec(folder)
    return fit(data, folder / "runs", "other", "--columns", str(cmap), "--model", str(spec))


OML_WORDS = re.compile(
    r"Limburg|OnderwijsMonitor|\bvmbo|\bhavo\b|\bvwo\b|jongens|meisjes|\bboys\b|\bgirls\b"
    r"|Maastricht|Parkstad|Sittard|onbekend|\bunknown\b|covid|factsheet",
    re.IGNORECASE,
)


@pytest.mark.slow
def test_other_monitor_record_keeps_its_levels(other_run):
    record = runs.read_record(other_run)
    assert record.levels == OTHER_LEVELS
    assert record.output_options.monitor == "Schoolmonitor Testland"
    effects = pd.read_csv(other_run / "effects.csv", dtype={"group": str, "wave": str})
    assert set(effects.wave) == {*OTHER_LEVELS["wave"], "all"}
    gender = effects[effects.breakdown == "gender"]
    assert set(gender.group) == set(OTHER_LEVELS["gender"])
    # the third gender's cells are small: suppressed in every table, never a count
    small = effects[effects.group.str.contains("nonbinary")]
    assert len(small) and small.suppressed.any()
    assert small.loc[small.suppressed, "n"].isna().all()
    assert not disclosure_problems(other_run, student_ids=[], min_cell_n=10)


@pytest.mark.slow
def test_other_monitor_outputs_name_only_its_own_levels(other_run):
    for file in every_output(other_run):
        if file.suffix == ".html":
            text, pngs = page_text(file)
            texts = [text, *(png_texts(p) for p in pngs)]
        elif file.suffix == ".png":
            texts = [png_texts(file)]
        elif file.suffix == ".csv":
            texts = [file.read_text(encoding="utf-8")]
        else:
            continue
        for text in texts:
            assert not OML_WORDS.search(text), (file.name, OML_WORDS.search(text))
            assert not OML_WAVE_WORDS.search(text), (file.name, OML_WAVE_WORDS.search(text))
    for lang, report in (("nl", "report.html"), ("en", "report.en.html")):
        text = page_text(other_run / report)[0]
        assert "Schoolmonitor Testland" in text
        assert f"{labels.REPORT_TEXT[lang]['title'].format(years='2015-2021')}" in text
        for levels in OTHER_LEVELS.values():
            for level in levels:
                assert level in text, (report, level)
        assert "n < 10" in text  # the third gender's small cells
    en = page_text(other_run / "report.en.html")[0]
    assert "2021 compared with 2019" in en and "2019 compared with 2017" in en  # own waves
    assert "Not in this run" in en and "2013" in en  # the spec pair naming a missing wave
    assert "Factsheet:" not in en  # OML's own statements only for OML's levels
    assert "nonbinary" in en
    school = page_text(next((other_run / "schools").glob("school-*.html")))[0]
    assert "Testland" in school


@pytest.mark.slow
def test_forest_figures_of_the_other_monitor_follow_its_order(other_run):
    texts = png_texts(other_run / "figures" / "fig2_wave.png")
    order = [texts.index(w) for w in OTHER_LEVELS["wave"]]
    assert order == sorted(order)  # waves in declared order, top to bottom
    gender = png_texts(other_run / "figures" / "fig4_gender.png")
    assert all(g in gender for g in OTHER_LEVELS["gender"]) and "n < 10" in gender


# ------------------------------------------------------------------ a graded run


@pytest.fixture(scope="module")
def graded_strict_run(small_survey, tmp_path_factory) -> Path:
    """The graded model with non-default output options (short chains: the numbers are
    not judged, only what the outputs say about them)."""
    out = tmp_path_factory.mktemp("graded_strict")
    result = run_script(
        "fit.py", "--data", str(small_survey), "--model", "graded", "--draws", "150",
        "--tune", "150", "--chains", "2", "--no-progress", "--seed", "5", "--out", str(out),
        "--name", "graded", "--allow-failed", "--quiet", "--prob", "0.8", "--interval", "hdi",
        "--min-cell-n", "20", "--lang", "en",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "graded"


@pytest.mark.slow
def test_graded_run_states_the_run_settings_everywhere(graded_strict_run):
    """Every file of a graded run (its item checks, DIF, reliability, latent vs index, their
    figures and report section) names the run's 80% HDI and threshold 20, never 95%."""
    run = graded_strict_run
    graded_files = {"item_ppc.csv", "dif.csv", "reliability_model.csv", "latent_vs_index.csv"}
    assert graded_files <= {p.name for p in run.iterdir()}
    assert assert_no_default_setting(run) > 10
    hdi80 = "80% interval (highest posterior density, HDI)"
    for figure in ("item_ppc.png", "latent_vs_index.png"):
        assert hdi80 in png_texts(run / "figures" / figure), figure
    report = page_text(run / "report.html")[0]
    section = report[report.index("Measurement model: the six items") :]
    assert f"Every interval in this section is a {hdi80}" in section
    assert "outside the 80% predictive interval" in section
    assert "latent trait [80%]" in section and "index [80%]" in section
    dutch = page_text(run / "report.nl.html")[0]
    assert "80%-interval (hoogste posteriordichtheid, HDI)" in dutch
    assert "buiten het 80%-voorspelinterval" in dutch


@pytest.mark.slow
def test_graded_tables_use_the_run_interval(graded_strict_run):
    """latent_vs_index.csv: the index model's bounds are the 80% HDI of its contrast draws
    (recomputed from posterior.nc); the latent bounds are contrasts.csv's; DIF flags the
    p-values outside the 10% tails."""
    run = graded_strict_run
    tree = xr.open_datatree(run / runs.POSTERIOR, engine="h5netcdf").load()
    gcomp = tree["gcomp"].to_dataset()
    index = estimands.effect_draws(tree["index_posterior"].to_dataset(), gcomp, seed=5)
    table = pd.read_csv(run / "latent_vs_index.csv", dtype={"group": str, "wave": str})
    rows = table[(table.breakdown == "overall") & (table.kind == "vs_first")]
    assert len(rows) == len(schema.WAVES) - 1
    overall = index.isel(target=np.flatnonzero(index["breakdown"].to_numpy() == "overall"))
    by_wave = {str(w): k for k, w in enumerate(overall["wave"].to_numpy())}
    for row in rows.itertuples():
        diff = overall.isel(target=by_wave[row.wave]) - overall.isel(target=by_wave[row.reference])
        bounds = az.hdi(diff, prob=0.8, dim=["chain", "draw"])
        assert row.index_lower == pytest.approx(float(bounds.sel(ci_bound="lower")), abs=1e-9)
        assert row.index_upper == pytest.approx(float(bounds.sel(ci_bound="upper")), abs=1e-9)
        wide = az.hdi(diff, prob=0.95, dim=["chain", "draw"])
        assert float(wide.sel(ci_bound="upper") - wide.sel(ci_bound="lower")) > (
            row.index_upper - row.index_lower
        )
    contrasts = pd.read_csv(run / "contrasts.csv", dtype={"group": str, "wave": str})
    keys = ["breakdown", "group", "wave", "reference", "reference_group", "kind"]
    merged = table.merge(contrasts, on=keys, validate="one_to_one")
    np.testing.assert_allclose(merged["latent_lower"], merged["lower"], equal_nan=True)
    dif = pd.read_csv(run / "dif.csv", dtype={"group": str})
    shown = dif[~dif.suppressed]
    tails = (shown.ppp < 0.1) | (shown.ppp > 0.9)
    assert (shown.flagged == tails).all()
    ppc = pd.read_csv(run / "item_ppc.csv", dtype={"group": str})
    assert ((ppc.lower <= ppc.predicted + 1e-12) & (ppc.predicted <= ppc.upper + 1e-12)).all()
    reliability = pd.read_csv(run / "reliability_model.csv").set_index("measure")
    omega = reliability.loc["latent_response_omega"]
    assert omega.lower < omega["mean"] < omega.upper


@pytest.mark.slow
def test_graded_run_writes_and_explains_the_attenuation(graded_strict_run):
    """reliability_model.csv holds the index's attenuation factor lambda with the run's
    interval; it is plausible (between 0 and 1, lambda^2 near alpha of the same students)
    and index-scale contrasts are smaller than latent ones by about that factor; both
    reports state it."""
    run = graded_strict_run
    reliability = pd.read_csv(run / "reliability_model.csv").set_index("measure")
    att = reliability.loc[runs.ATTENUATION]
    assert 0.5 < att.lower < att["mean"] < att.upper < 1.0
    alpha = pd.read_csv(run / "reliability.csv", dtype={"group": str})
    alpha = float(alpha.loc[alpha.group == "all", "alpha"].iloc[0])
    assert abs(att["mean"] ** 2 - alpha) < 0.1, (att["mean"], alpha)
    table = pd.read_csv(run / "latent_vs_index.csv", dtype={"group": str, "wave": str})
    rows = table[(table.breakdown == "overall") & table.kind.isin(["vs_first", "vs_previous"])]
    ratio = (rows.index_mean * rows.latent_mean).sum() / (rows.latent_mean**2).sum()
    assert abs(ratio - att["mean"]) < 0.15, (ratio, att["mean"])
    en = page_text(run / "report.html")[0]
    assert f"In this run lambda = {att['mean']:.2f} (80% interval {att.lower:.2f} to" in en
    nl = page_text(run / "report.nl.html")[0]
    assert f"In deze run is lambda = {att['mean']:.2f}".replace(".", ",") in nl
