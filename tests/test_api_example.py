"""The public API as a user meets it: docs/api.md's examples and examples/ask_the_posterior.py
run on a real run folder, and the example's answers equal a hand computation."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import ROOT

API_DOC = ROOT / "docs" / "api.md"
PLACEHOLDER = "outputs/20261206-101500_full"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_api_doc_examples_run(default_run, tmp_path, monkeypatch):
    text = API_DOC.read_text(encoding="utf-8")
    blocks = python_blocks(text)
    assert len(blocks) >= 6 and PLACEHOLDER in blocks[0]
    code = "\n".join(blocks).replace(PLACEHOLDER, str(default_run))
    monkeypatch.chdir(tmp_path)  # the forest example writes its PNG here
    namespace: dict = {}
    exec(compile(code, str(API_DOC), "exec"), namespace)
    run, gap_change = namespace["run"], namespace["gap_change"]
    assert set(gap_change.dims) == {"chain", "draw"} and bool(gap_change.notnull().all())
    assert namespace["loo"].elpd == run.loo().elpd
    assert (tmp_path / "forest_gender.png").stat().st_size > 1000


def test_api_doc_is_linked():
    assert "(docs/api.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(api.md)" in (ROOT / "docs" / "run-folder.md").read_text(encoding="utf-8")


# ---- examples/ask_the_posterior.py against a hand computation from posterior.nc -----------

EXAMPLE = ROOT / "examples" / "ask_the_posterior.py"
# the stored group's variable for each question's column
STORED = {"gender": "by_gender", "school_type": "by_school_type", "overall": "overall"}


def hand_answer(stored: xr.Dataset, row: pd.Series, prob: float) -> dict[str, float]:
    """The question of one answer row from the stored draws, with numpy only."""
    means = stored[STORED[row.column]]
    if row.column != "overall":
        means = means.sel({row.column: row.group}) - means.sel({row.column: row.reference_group})
    draws = (means.sel(wave=row.wave_to) - means.sel(wave=row.wave_from)).to_numpy().ravel()
    lower, upper = np.quantile(draws, [(1 - prob) / 2, (1 + prob) / 2])
    return {"mean": draws.mean(), "lower": lower, "upper": upper, "p_positive": (draws > 0).mean()}


def test_example_answers_equal_a_hand_computation(default_run, tmp_path):
    out = tmp_path / "answers.csv"
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), str(default_run), "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(out, dtype={"wave_from": str, "wave_to": str}, keep_default_na=False)
    record = json.loads((default_run / "run.json").read_text(encoding="utf-8"))
    options, waves = record["options"], record["levels"]["wave"]
    assert options["interval"] == "eti"  # the hand computation below is an ETI
    # the questions: the gender gap first -> last wave, vwo - vmbo_bk and all students over
    # the covid waves (the small survey has them), the last also in the surveyed schools
    assert list(zip(table.column, table.group, table.reference_group, strict=True)) == [
        ("gender", "girl", "boy"),
        ("school_type", "vwo", "vmbo_bk"),
        ("overall", "", ""),
        ("overall", "", ""),
    ]
    assert (table.wave_from[0], table.wave_to[0]) == (waves[0], waves[-1])
    assert set(table.wave_from[1:]) == {"2020_0"} and set(table.wave_to[1:]) == {"2020_2"}
    assert list(table.schools) == ["any", "any", "any", "surveyed"]
    assert np.isfinite(table[["mean", "lower", "upper"]].to_numpy(float)).all()
    with xr.open_datatree(default_run / "posterior.nc", engine="h5netcdf") as tree:
        stored = tree["adjusted_means"].to_dataset().load()
    for k in range(3):  # the stored means are the report's: any school, pooled
        expected = hand_answer(stored, table.iloc[k], options["prob"])
        for name, value in expected.items():
            assert table.loc[k, name] == pytest.approx(value, abs=1e-9), (k, name)
        line = f"{table.loc[k, 'mean']:+.3f} [{table.loc[k, 'lower']:+.3f}, "
        assert line in result.stdout
    # the surveyed schools' change is another estimand: same question, other draws
    assert table.loc[3, "mean"] != pytest.approx(table.loc[2, "mean"], abs=1e-9)


# ---- LOO: run.loo(), never az.loo on posterior.nc ------------------------------------------


def test_az_loo_on_posterior_nc_raises_and_run_loo_is_pointwise(default_run):
    import arviz as az

    import omlbayes as ob

    with xr.open_datatree(default_run / "posterior.nc", engine="h5netcdf") as tree:
        tree = tree.load()
    # the per-draw totals are there, under a name ArviZ does not read as pointwise
    assert "log_likelihood" not in tree.children
    totals = tree["log_likelihood_total"].to_dataset()
    assert [set(v.dims) for v in totals.data_vars.values()] == [{"chain", "draw"}]
    with pytest.raises(TypeError, match="log likelihood not found"):
        az.loo(tree)
    run = ob.open_run(default_run)
    elpd = run.loo()
    n = run.record.data["n_analysed"]
    assert elpd.n_data_points == elpd.elpd_i.size == n > 1000  # one value per student
    assert elpd.elpd == pytest.approx(float(elpd.elpd_i.sum()), abs=0.01)
    # the SE of a sum of n pointwise values, not the 0 of one total
    assert elpd.se == pytest.approx(np.sqrt(n * np.var(elpd.elpd_i.to_numpy())), rel=1e-6)
    assert elpd.se > 1 and float(elpd.pareto_k.max()) < 0.7
    # the totals are the in-sample log-likelihood: above the LOO elpd on average
    assert float(totals["y"].mean()) > elpd.elpd


@pytest.mark.parametrize("page", ["report.html", "report.nl.html"])
def test_report_states_its_estimand_with_the_others_beside_it(default_run, page):
    """The report's estimands table: one row per wave change of all students, three columns
    (a school like any other at the pooled composition, the surveyed schools, as observed),
    each equal to the API's summary of the same draws in the run's interval."""
    import omlbayes as ob
    from omlbayes.report.findings import fmt_number

    html = (default_run / page).read_text(encoding="utf-8")
    lang = "nl" if page.endswith(".nl.html") else "en"
    table = re.search(r"<table class='estimands'>(.*?)</table>", html, flags=re.S)
    assert table, "no estimands table"
    rows = re.findall(r"<tr><td>.*?</td>(.*?)</tr>", table.group(1), flags=re.S)
    run = ob.open_run(default_run)
    waves = [str(w) for w in run.adjusted_means(())["wave"].to_numpy()]
    assert len(rows) == len(waves)  # consecutive changes and the last against the first
    cells = re.findall(r"<td class='num'>(.*?)</td>", rows[0])
    for cell, (schools, composition) in zip(
        cells, [("any", "pooled"), ("surveyed", "pooled"), ("any", "wave")], strict=True
    ):
        means = run.adjusted_means((), schools=schools, composition=composition)
        change = means.sel(wave=waves[1]) - means.sel(wave=waves[0])
        s = ob.summarise(change, options=run.options)
        expected = " ".join(
            [
                fmt_number(s["mean"], lang=lang, sign=True),
                f"[{fmt_number(s['lower'], lang=lang, sign=True)},",
                f"{fmt_number(s['upper'], lang=lang, sign=True)}]",
            ]
        )
        assert cell == expected.replace("&", "&amp;")
    assert ("Which question" in html) == (lang == "en")
