"""School feedback pages from a fake run folder (no sampling)."""

from __future__ import annotations

import re
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from test_report import SCHOOLS, make_fake_run, parse

from omlbayes.constants import MIN_CELL_N
from omlbayes.model import estimands
from omlbayes.plots.save import png_texts
from omlbayes.report.schools import (
    OVERVIEW_FIGURE,
    Cell,
    forest_svg,
    overview_caption,
    ranks_per_draw,
    region_file,
    school_feedback,
    school_file,
    schools_overview,
    tiers,
    write_school_pages,
)
from omlbayes.results import runs
from omlbayes.results.options import OutputOptions, draw_interval


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    return make_fake_run(tmp_path_factory.mktemp("schools") / "fake", passed=False)


@pytest.fixture(scope="module")
def pages(fake_run):
    return write_school_pages(fake_run, lang="en")


def test_ranks_per_draw():
    values = np.array([[[0.1, 0.5, -0.2], [0.3, 0.2, 0.1]]])
    assert ranks_per_draw(values).tolist() == [[[2, 1, 3], [1, 2, 3]]]


def test_one_page_per_school_and_region(fake_run, pages):
    names = {p.name for p in pages}
    assert "index.html" in names
    assert {school_file(s) for s in SCHOOLS} <= names
    assert {region_file(r) for r in set(SCHOOLS.values())} <= names
    assert all(p.parent == fake_run / "schools" for p in pages)
    for p in pages:
        text = p.read_text()
        assert "http://" not in text and "https://" not in text and "<script" not in text


def _tree(run):
    tree = xr.open_datatree(run / "posterior.nc", engine="h5netcdf").load()
    return tree["posterior"].to_dataset(), tree["gcomp"].to_dataset()


def test_school_value_is_region_effect_plus_school_intercept(fake_run):
    posterior, gcomp = _tree(fake_run)
    schools = pd.read_csv(fake_run / "schools.csv", dtype={"wave": str})
    levels = runs.read_record(fake_run).levels
    feedback = {
        f.school: f
        for f in school_feedback(
            posterior, gcomp, schools, options=OutputOptions(), levels=levels, seed=3
        )
    }
    fb = feedback["sch02"]
    cell = next(c for c in fb.cells if c.status == "shown")
    effects = estimands.effect_draws(posterior, gcomp, seed=3)
    mask = (
        (effects["breakdown"] == "region")
        & (effects["group"] == fb.region)
        & (effects["wave"] == cell.wave)
    ).to_numpy()
    expected = (
        effects.isel(target=int(np.flatnonzero(mask)[0])).to_numpy()
        + posterior["1|school_id"].sel(school_id__factor_dim="sch02").to_numpy()
    )
    assert cell.mean == pytest.approx(expected.mean())
    assert cell.lower == pytest.approx(np.quantile(expected, 0.025))
    region_cell = next(c for c in fb.region_cells if c.wave == cell.wave)
    assert region_cell.mean == pytest.approx(
        expected.mean() - posterior["1|school_id"].sel(school_id__factor_dim="sch02").mean().item(),
        abs=1e-9,
    )
    # ranks: an interval within 1..n, among the schools with something shown
    o = fb.overall
    assert 1 <= o.rank_low <= o.n <= o.rank_high <= fb.n_ranked == len(SCHOOLS) - 1


def test_suppressed_waves_show_no_estimate(fake_run, pages):
    schools = pd.read_csv(fake_run / "schools.csv", dtype={"wave": str})
    page = parse(fake_run / "schools" / school_file("sch03"))
    cells = [td["text"] for td in page.find("td")]
    rows = [cells[k : k + 6] for k in range(0, len(cells), 6)]  # wave, n, school, rank, ...
    small = set(schools.loc[(schools.school_id == "sch03") & schools.suppressed, "wave"])
    assert small, "the fake data should give sch03 a suppressed wave"
    marked = [r for r in rows if r[1] == f"n < {MIN_CELL_N}"]
    assert len(marked) == len(small)
    for r in marked:
        assert r[2] == "" and r[3] == ""  # no estimate, no rank
    assert page.find("svg")  # the forest figure
    assert "between" in page.find("p", cls="rank")[0]["text"]


def test_school_with_every_wave_small_shows_nothing(fake_run, pages):
    page = parse(fake_run / "schools" / school_file("sch01"))
    assert not page.find("svg")
    assert not page.find("p", cls="rank")
    text = (fake_run / "schools" / school_file("sch01")).read_text()
    assert "No estimates are shown" in text


def test_failed_diagnostics_banner_on_school_pages(fake_run, pages):
    page = parse(fake_run / "schools" / school_file("sch02"))
    assert page.first_in_main["attrs"].get("id") == "diagnostics-failed"


def test_school_intervals_follow_the_run_options(fake_run):
    """A 90% HDI run gives 90% HDIs on the school pages (not the default 2.5/97.5%)."""
    posterior, gcomp = _tree(fake_run)
    schools = pd.read_csv(fake_run / "schools.csv", dtype={"wave": str})
    levels = runs.read_record(fake_run).levels
    hdi90 = OutputOptions(interval="hdi", prob=0.9)
    fb = next(
        f
        for f in school_feedback(posterior, gcomp, schools, options=hdi90, levels=levels, seed=3)
        if f.school == "sch02"
    )
    cell = next(c for c in fb.cells if c.status == "shown")
    effects = estimands.effect_draws(posterior, gcomp, seed=3)
    mask = (
        (effects["breakdown"] == "region")
        & (effects["group"] == fb.region)
        & (effects["wave"] == cell.wave)
    ).to_numpy()
    draws = (
        effects.isel(target=int(np.flatnonzero(mask)[0])).to_numpy()
        + posterior["1|school_id"].sel(school_id__factor_dim="sch02").to_numpy()
    ).ravel()
    lo, hi = draw_interval(draws, "hdi", 0.9)
    assert (cell.lower, cell.upper) == pytest.approx((lo, hi))
    assert np.mean((draws >= lo) & (draws <= hi)) == pytest.approx(0.9, abs=1 / draws.size)
    # the shortest interval holding that many draws (ArviZ's HDI, the project's one interval)
    inside = int(np.sum((draws >= lo) & (draws <= hi)))
    ordered = np.sort(draws)
    assert hi - lo == pytest.approx(
        np.min(ordered[inside - 1 :] - ordered[: draws.size - inside + 1])
    )


def test_hdi_of_a_skewed_sample_is_the_shortest_interval():
    rng = np.random.default_rng(0)
    draws = rng.exponential(1.0, 20000)
    lo, hi = draw_interval(draws, "hdi", 0.9)
    assert lo == pytest.approx(0.0, abs=0.01)  # mass piles up at 0
    assert hi == pytest.approx(-np.log(0.1), rel=0.05)  # exponential: [0, -log(1 - p)]


ADVERSARIAL_IDS = ("A/B", "A_B", "A B", "<b>x</b>", "../../etc", "Ünïcødé", "école", "ecole", "NA")


def test_every_school_gets_its_own_page_whatever_its_id(tmp_path):
    """Ids that collide after sanitising, markup, path separators, non-ASCII letters:
    one file per school, inside schools/, and the index links each to its own page."""
    run = make_fake_run(tmp_path / "fake", school_ids=ADVERSARIAL_IDS)
    pages = write_school_pages(run, lang="en")
    folder = run / "schools"
    assert all(p.parent == folder for p in pages)
    files = {school_file(s) for s in ADVERSARIAL_IDS}
    assert len(files) == len(ADVERSARIAL_IDS)  # "A/B" and "A_B" do not share a file
    assert files <= {p.name for p in folder.iterdir()}
    assert school_file("A/B") == school_file("A/B")  # stable
    for school in ADVERSARIAL_IDS:
        page = (folder / school_file(school)).read_text(encoding="utf-8")
        title = parse(folder / school_file(school)).find("h1")[0]["text"]
        assert title == f"Feedback for {school}"  # its own page: its own name, escaped
        assert "<b>x</b>" not in page
    index = parse(folder / "index.html")
    links = {
        a["text"]: a["attrs"]["href"] for a in index.find("a") if "school-" in a["attrs"]["href"]
    }
    assert links == {s: school_file(s) for s in ADVERSARIAL_IDS}


def test_forest_svg_draws_each_shown_cell_where_its_values_are():
    """The inline figure: one interval line and diamond per shown cell, at the cell's
    values on the axis; a suppressed cell only the mark; the run's interval named."""
    options = OutputOptions(interval="hdi", prob=0.9, min_cell_n=20, lang="en")
    school = (
        Cell("2014", 30, "shown", 0.1, -0.05, 0.25),
        Cell("2016", None, "suppressed"),
        Cell("2018", None, "not_surveyed"),
    )
    region = tuple(
        Cell(w, 300, "shown", m, m - 0.02, m + 0.03)
        for w, m in (("2014", 0.0), ("2016", -0.1), ("2018", 0.05))
    )
    svg = ElementTree.fromstring(
        forest_svg(
            [("s<1>", "#111111", school), ("r", "#222222", region)],
            options=options,
            title="T & U",
        )
    )
    texts = [t.text for t in svg.iter("text")]
    assert "T & U" in texts and "s<1>" in texts  # escaped in the markup, intact as text
    assert "line = 90% interval" in texts and texts.count("n < 20") == 1
    lines = [e.attrib for e in svg.iter("line")]
    school_lines = [a for a in lines if a.get("stroke") == "#111111"]
    region_lines = [a for a in lines if a.get("stroke") == "#222222"]
    assert len(school_lines) == 1 and len(region_lines) == 3
    diamonds = [e for e in svg.iter("path") if e.get("fill") == "#111111"]
    assert len(diamonds) == 2  # the cell and the legend
    # positions: the axis maps [-limit, limit] linearly, so interval widths keep ratios
    width = {round(float(a["x2"]) - float(a["x1"]), 1) for a in region_lines}
    school_width = float(school_lines[0]["x2"]) - float(school_lines[0]["x1"])
    assert width == {round(school_width * 0.05 / 0.30, 1)}
    tick = re.compile("\u2212?\\d+(\\.\\d+)?")
    ticks = [float(t.replace("\u2212", "-")) for t in texts if t and tick.fullmatch(t)]
    assert 0.0 in ticks and len(ticks) >= 3 and ticks == sorted(ticks)


# ---- the schools overview: caterpillar, rank intervals, tiers ---------------------------


def test_tiers_start_where_the_top_unit_is_credibly_above():
    rng = np.random.default_rng(1)
    noise = rng.normal(size=(4, 20_000))
    # two clear groups: a new tier at the first unit of the lower group, none within a group
    clear = np.array([[1.0], [0.9], [0.0], [-0.05]]) + 0.1 * noise
    assert tiers(clear, OutputOptions()).tolist() == [1, 1, 2, 2]
    assert tiers(clear + 4.9 * noise, OutputOptions()).tolist() == [1, 1, 1, 1]
    # the run's interval decides: A - B ~ N(0.3, 0.21) is above 0 at 80%, not at 99%
    pair = np.array([[0.3], [0.0]]) + 0.15 * noise[:2]
    assert tiers(pair, OutputOptions(prob=0.8)).tolist() == [1, 2]
    assert tiers(pair, OutputOptions(prob=0.99)).tolist() == [1, 1]
    # a tier is measured from its top unit: neither A - B nor B - C is credibly above 0, but
    # A - C is, so C starts tier 2
    chain = np.array([[0.6], [0.3], [0.0]]) + 0.12 * noise[:3]
    for a, b in ((0, 1), (1, 2)):
        assert OutputOptions().bounds(chain[a] - chain[b])[0] < 0
    assert tiers(chain, OutputOptions()).tolist() == [1, 1, 2]


def test_schools_overview_agrees_with_the_school_pages(fake_run):
    posterior, gcomp = _tree(fake_run)
    schools = pd.read_csv(fake_run / "schools.csv", dtype={"wave": str})
    levels = runs.read_record(fake_run).levels
    options = OutputOptions(interval="hdi", prob=0.9)
    args = dict(options=options, levels=levels, seed=3)
    table = schools_overview(posterior, gcomp, schools, **args)
    pages = {f.school: f.overall for f in school_feedback(posterior, gcomp, schools, **args)}
    shown = {s for s, cell in pages.items() if cell.status == "shown"}
    assert set(table.school) == shown and len(shown) == len(SCHOOLS) - 1  # sch01: all small
    for row in table.itertuples():
        cell = pages[row.school]
        assert (row.mean, row.lower, row.upper) == pytest.approx(
            (cell.mean, cell.lower, cell.upper)
        )
        assert (row.rank_low, row.rank_median, row.rank_high) == (
            cell.rank_low, cell.n, cell.rank_high,
        )  # fmt: skip
    assert (np.diff(table["mean"]) <= 0).all()  # highest first
    steps = np.diff(table["tier"])
    assert table["tier"].iloc[0] == 1 and set(steps) <= {0, 1}


def test_overview_figure_and_index_say_the_values_are_composition_adjusted(fake_run, pages):
    png = fake_run / "figures" / OVERVIEW_FIGURE
    texts = png_texts(png)
    assert "Values are composition-adjusted" in texts and "95% interval" in texts
    assert "sch02" in texts and "tier 1" in texts and "sch01" not in texts
    index = (fake_run / "schools" / "index.html").read_text()
    assert "data-figure='schools_overview'" in index
    assert index.count("<tr>") - 1 == len(SCHOOLS) - 1  # header + one row per shown school
    table = pd.DataFrame({"school": ["a", "b"]})
    hdi = overview_caption(
        table,
        n_schools=3,
        options=OutputOptions(interval="hdi", prob=0.9, lang="en"),
        adjusted_for=(),
    )
    assert "90% interval" in hdi and "2 of 3 schools" in hdi and "95" not in hdi
    nl = overview_caption(
        table, n_schools=3, options=OutputOptions(lang="nl"), adjusted_for=("gender",)
    )
    assert nl.startswith("De waarden zijn gecorrigeerd voor de samenstelling") and "95%" in nl
