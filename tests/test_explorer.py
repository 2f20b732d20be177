"""The offline trend explorer of report.html (report/explorer.py), on a real small run.

The embedded data are the API's adjusted-mean draws thinned to the same positions for
every cell, without the cells under the disclosure threshold; in headless Chromium (Debian's
``/usr/bin/chromium`` driven by Playwright) the page's numbers equal those computed here
from the API's draws on the same thinned draws, and lie within Monte Carlo error of the
full-draw summary; the page makes no request but its own file and logs no error.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from pathlib import Path

import arviz_stats as azs
import numpy as np
import pytest
import xarray as xr

from omlbayes.report.page import render_report
from omlbayes.results import disclosure, runs
from omlbayes.results.options import OutputOptions, draw_interval
from omlbayes.results.summarise import summarise_draws

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - CI installs it (a dev dependency)
    sync_playwright = None

if sync_playwright is None:
    BROWSER_MISSING = "playwright is not installed (a dev dependency: pip install -e .[dev])"
elif not CHROMIUM.is_file():
    BROWSER_MISSING = f"{CHROMIUM} is missing (apt-get install chromium; .ci/run does)"
else:
    BROWSER_MISSING = ""
needs_browser = pytest.mark.skipif(bool(BROWSER_MISSING), reason=BROWSER_MISSING)

KEPT = 400  # the explorer's draws per cell (report.explorer.MAX_DRAWS)
ATTRIBUTES = ("mean", "lower", "upper", "p-positive")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def run(small_run) -> runs.Run:
    """The small flagship run fitted end to end by scripts/fit.py (conftest's session
    fixture: 2 chains x 250 draws, so thinning to 400 draws keeps 4 in 5)."""
    path, _ = small_run
    return runs.open_run(path)


@pytest.fixture(scope="module")
def hdi_page(run, tmp_path_factory) -> Path:
    """The Dutch report of the same run with a 90% HDI and a raised threshold (median cell
    count), written outside the run folder: the other interval, language and suppression
    (the figures are the run's, not redrawn: only the explorer is looked at)."""
    options = dataclasses.replace(run.options, interval="hdi", prob=0.9)
    other = run.with_record(dataclasses.replace(run.record, options=options.to_dict()))
    page = tmp_path_factory.mktemp("explorer") / "report.nl.html"
    page.write_text(
        render_report(other, lang="nl", min_cell_n=raised_threshold(run), redraw_figures=False),
        encoding="utf-8",
    )
    return page


def raised_threshold(run: runs.Run) -> int:
    n = run.gcomp["n"].to_numpy()[run.gcomp["wave"].to_numpy() != "all"]
    return int(np.median(n[n > 0]))


def embedded(page: Path) -> tuple[dict, np.ndarray]:
    """The explorer's JSON and its draws (cell, draw), decoded here without the module."""
    text = page.read_text(encoding="utf-8")
    found = re.findall(r"<script type='application/json' id='explorer-data'>(.*?)</script>", text)
    assert len(found) == 1
    data = json.loads(found[0])
    assert data["encoding"] == "float32-le-base64"
    values = np.frombuffer(base64.b64decode(data["values"]), dtype="<f4")
    return data, values.reshape(-1, data["draws"])


def api_cells(run: runs.Run) -> tuple[np.ndarray, dict[tuple[str, str, str], int], np.ndarray]:
    """The API's draws flattened to (chain x draw, target), the target of each cell, n."""
    effects = run.effect_draws().transpose("chain", "draw", "target")
    index = {
        (str(b), str(g), str(w)): k
        for k, (b, g, w) in enumerate(
            zip(
                effects["breakdown"].to_numpy(),
                effects["group"].to_numpy(),
                effects["wave"].to_numpy(),
                strict=True,
            )
        )
    }
    flat = effects.to_numpy().reshape(-1, effects.sizes["target"])
    return flat, index, run.gcomp["n"].to_numpy()


def thinned(total: int) -> np.ndarray:
    """Evenly spaced positions of the flattened (chain, draw) axis, the first included."""
    k = min(KEPT, total)
    return np.array([i * total // k for i in range(k)])


def cell_map(data: dict) -> dict[tuple[str, str, str], int]:
    return {
        (b["name"], g["name"], w): row
        for b in data["breakdowns"]
        for g in b["groups"]
        for w, row in g["cells"].items()
    }


# --------------------------------------------------------------------- embedded draws


@pytest.mark.parametrize("which", ["report", "hdi"])
def test_embedded_draws_are_the_thinned_api_draws(run, hdi_page, which):
    page = run.path / "report.html" if which == "report" else hdi_page
    threshold = run.options.min_cell_n if which == "report" else raised_threshold(run)
    data, values = embedded(page)
    flat, index, n = api_cells(run)
    positions = thinned(flat.shape[0])
    assert flat.shape[0] > KEPT and data["draws"] == KEPT == len(positions)
    assert data["total"] == flat.shape[0]
    cells = cell_map(data)
    # every wave cell at or above the threshold, and nothing else (no "all", no small cell)
    wanted = {c for c, k in index.items() if c[2] != "all" and n[k] >= threshold}
    assert set(cells) == wanted
    suppressed = {c for c, k in index.items() if c[2] != "all" and n[k] < threshold}
    assert suppressed, "the check needs suppressed cells"
    assert values.shape == (len(wanted), KEPT)
    assert sorted(cells.values()) == list(range(len(wanted)))
    for cell, row in cells.items():
        expected = flat[positions, index[cell]].astype(np.float32)
        np.testing.assert_array_equal(values[row], expected, err_msg=str(cell))
    # choices: only groups with a cell; level names as in effects.csv; no counts at all
    effects = run.table("effects.csv", dtype={"group": str, "wave": str})
    shown = effects[(effects["wave"] != "all") & ~effects["suppressed"]]
    if which == "report":
        assert set(cells) == set(zip(shown.breakdown, shown.group, shown.wave, strict=True))
    for b in data["breakdowns"]:
        assert b["groups"] and all(g["cells"] for g in b["groups"])
    assert '"n"' not in json.dumps({k: v for k, v in data.items() if k != "values"})
    assert data["interval"] == ("eti" if which == "report" else "hdi")


def test_report_with_explorer_passes_the_disclosure_audit(run):
    disclosure.audit(run.path, min_cell_n=run.options.min_cell_n)


# ----------------------------------------------------------------------------- browser


def api_change(run, options, breakdown, a, b, wave_from, wave_to):
    """The change draws from the API's full draws (``run.adjusted_means``) and from its
    thinned draws (``run.effect_draws`` at the explorer's positions), as (chain, draw)."""
    columns = () if breakdown == "overall" else tuple(breakdown.split(" x "))
    means = run.adjusted_means(by=columns)

    def cell(group: str, wave: str) -> xr.DataArray:
        parts = group.split(":") if columns else []
        return means.sel(wave=wave, **dict(zip(columns, parts, strict=True)))

    full = cell(a, wave_to) - cell(a, wave_from)
    if b:
        full = full - (cell(b, wave_to) - cell(b, wave_from))
    flat, index, _ = api_cells(run)
    draws = flat[thinned(flat.shape[0])]

    def thin(group: str, wave: str) -> np.ndarray:
        return draws[:, index[(breakdown, group, wave)]]

    small = thin(a, wave_to) - thin(a, wave_from)
    if b:
        small = small - (thin(b, wave_to) - thin(b, wave_from))
    return full.drop_vars([c for c in full.coords if c not in ("chain", "draw")]), small


def mc_tolerance(full: xr.DataArray, options: OutputOptions, lower: float, upper: float):
    """3 Monte Carlo standard errors of the full-draw mean, bounds and P(> 0)."""
    below = [float((full <= v).mean()) for v in (lower, upper)]
    quantile = [
        float(azs.mcse(full, method="quantile", prob=min(max(q, 0.01), 0.99))) for q in below
    ]
    return {
        "mean": 3 * float(azs.mcse(full, method="mean")),
        "lower": 3 * quantile[0],
        "upper": 3 * quantile[1],
        "p-positive": 3 * float(azs.mcse((full > 0).astype(float), method="mean")) + 1 / KEPT,
    }


def check_against_api(run, options, shown, choice):
    full, small = api_change(run, options, *choice)
    lower, upper = draw_interval(small, options.interval, options.prob)
    same = {"mean": small.mean(), "lower": lower, "upper": upper, "p-positive": (small > 0).mean()}
    for key in ATTRIBUTES:  # the same draws: the same numbers
        assert shown[key] == pytest.approx(same[key], abs=1e-6), (choice, key)
    summary = summarise_draws(full, options=options)
    reference = {
        "mean": summary["mean"],
        "lower": summary["lower"],
        "upper": summary["upper"],
        "p-positive": summary["p_positive"],
    }
    tolerance = mc_tolerance(full, options, summary["lower"], summary["upper"])
    for key in ATTRIBUTES:  # 400 of the draws: within Monte Carlo error of all of them
        assert abs(shown[key] - reference[key]) <= tolerance[key], (choice, key, tolerance)


@pytest.fixture(scope="module")
def browser():
    if BROWSER_MISSING:
        pytest.skip(BROWSER_MISSING)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Explorer:
    """One page in headless Chromium, with every request, console message and page error."""

    def __init__(self, browser, path: Path) -> None:
        self.url = path.resolve().as_uri()
        self.page = browser.new_page(viewport={"width": 1280, "height": 1600})
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(self.url)

    def choose(self, breakdown: str, a: str, b: str, wave_from: str, wave_to: str) -> dict:
        for name, value in (
            ("breakdown", breakdown),
            ("group-a", a),
            ("group-b", b),
            ("wave-from", wave_from),
            ("wave-to", wave_to),
        ):
            self.page.select_option(f"select[data-explorer={name}]", value)
        return self.result()

    def result(self) -> dict:
        result = self.page.locator("[data-explorer=result]")
        shown: dict = {}
        for key in ATTRIBUTES:
            text = result.get_attribute(f"data-{key}")
            assert re.fullmatch(r"-?\d+\.\d+", text), text  # a plain decimal number
            shown[key] = float(text)
        shown["sentence"] = result.locator(".sentence").inner_text()
        return shown

    def value(self, name: str) -> str:
        return self.page.locator(f"select[data-explorer={name}]").input_value()

    def options(self, name: str) -> list[tuple[str, bool]]:
        return self.page.eval_on_selector_all(
            f"select[data-explorer={name}] option", "os => os.map(o => [o.value, o.disabled])"
        )

    def close(self) -> None:
        self.page.close()
        assert self.requests == [self.url], "the page asked for something besides itself"
        assert self.errors == [], "the page logged errors"


@needs_browser
def test_explorer_in_chromium_equals_the_api(run, browser):
    page = run.path / "report.html"  # the run's language (en), its 95% ETI
    options = run.options
    waves = list(run.waves)
    data, _ = embedded(page)
    explorer = Explorer(browser, page)
    # on load: overall, all students, first to last wave
    assert [explorer.value(s) for s in ("breakdown", "group-a", "group-b")] == [
        "overall",
        "all",
        "",
    ]
    assert (explorer.value("wave-from"), explorer.value("wave-to")) == (waves[0], waves[-1])
    shown = explorer.result()
    check_against_api(run, options, shown, ("overall", "all", "", waves[0], waves[-1]))
    assert "95% interval (ETI)" in shown["sentence"]

    choice = ("gender", "girl", "boy", waves[0], waves[-1])
    shown = explorer.choose(*choice)
    check_against_api(run, options, shown, choice)
    assert shown["sentence"].startswith(f"Change from {waves[0]} to {waves[-1]}, girls compared")
    assert "95% interval (ETI)" in shown["sentence"] and "P(> 0) = " in shown["sentence"]
    svg = explorer.page.locator("[data-explorer=result] svg")
    assert svg.locator("rect").count() > 5 and svg.locator("circle").count() == 1

    cells = cell_map(data)
    cross = "gender x school_type"
    both = [w for w in waves if (cross, "girl:vwo", w) in cells and (cross, "boy:vwo", w) in cells]
    choice = (cross, "girl:vwo", "boy:vwo", both[1], both[-2])
    check_against_api(run, options, explorer.choose(*choice), choice)
    explorer.close()


@needs_browser
def test_explorer_in_chromium_hdi_dutch_and_suppressed_cells(run, hdi_page, browser):
    options = OutputOptions(interval="hdi", prob=0.9, lang="nl")
    data, _ = embedded(hdi_page)
    explorer = Explorer(browser, hdi_page)
    waves = [w["name"] for w in data["waves"]]
    shown = explorer.result()
    check_against_api(run, options, shown, ("overall", "all", "", waves[0], waves[-1]))
    assert "90%-interval (HDI)" in shown["sentence"] and "vergeleken met" in shown["sentence"]
    cells = cell_map(data)
    # a group with some of its waves suppressed: those waves cannot be chosen
    partial = next(
        (b["name"], g["name"])
        for b in data["breakdowns"]
        for g in b["groups"]
        if 2 <= len(g["cells"]) < len(waves)
    )
    explorer.page.select_option("select[data-explorer=breakdown]", partial[0])
    explorer.page.select_option("select[data-explorer=group-a]", partial[1])
    open_waves = [w for w in waves if (*partial, w) in cells]
    assert [w for w, disabled in explorer.options("wave-from") if not disabled] == open_waves
    assert [w for w, disabled in explorer.options("wave-to") if not disabled] == open_waves
    assert (explorer.value("wave-from"), explorer.value("wave-to")) == (
        open_waves[0],
        open_waves[-1],
    )
    check_against_api(
        run, options, explorer.result(), (*partial, "", open_waves[0], open_waves[-1])
    )
    # only groups with cells are offered, in the page's order
    groups = [g["name"] for b in data["breakdowns"] if b["name"] == partial[0] for g in b["groups"]]
    assert [v for v, _ in explorer.options("group-a")] == groups
    # a breakdown with one group against another: B changes the number
    choice = ("school_type", "havo", "vwo", waves[1], waves[-1])
    if all((choice[0], g, w) in cells for g in choice[1:3] for w in choice[3:]):
        check_against_api(run, options, explorer.choose(*choice), choice)
    explorer.close()
