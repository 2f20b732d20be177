"""Declared findings written for any monitor's levels (tables made by the real summarise
code from known draws; no sampling)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import ROOT

from omlbayes.errors import SpecError
from omlbayes.model import estimands
from omlbayes.report.findings import build_findings, load_findings, parse_findings
from omlbayes.results import summarise
from omlbayes.results.options import OutputOptions

WAVES = ("w2015", "w2017", "w2019")
REGIONS = ("<i>north</i>", "south & east", "Zürich")
TRUE = {"<i>north</i>": 0.3, "south & east": -0.3, "Zürich": 0.0}


def _tables(*, small: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(4)
    targets = [("overall", "all", w) for w in (*WAVES, "all")]
    targets += [("region", g, w) for g in REGIONS for w in (*WAVES, "all")]
    means = np.array(
        [
            {"w2015": 0.2, "w2017": 0.0, "w2019": -0.2, "all": 0.0}[w] + TRUE.get(g, 0.0)
            for _, g, w in targets
        ]
    )
    draws = means + 0.03 * rng.standard_normal((2, 300, len(targets)))
    effects = xr.DataArray(
        draws,
        dims=("chain", "draw", "target"),
        coords={
            "breakdown": ("target", [t[0] for t in targets]),
            "group": ("target", [t[1] for t in targets]),
            "wave": ("target", [t[2] for t in targets]),
        },
    )
    n = np.array([4 if g == small else 200 for _, g, _ in targets])
    table = summarise.effects_table(effects, n, options=OutputOptions(min_cell_n=10))
    defs = estimands.contrast_list(
        table[["breakdown", "group"]], waves=WAVES, wave_pairs=(("w2019", "w2015"),)
    )
    hidden = {(r.breakdown, r.group, r.wave) for r in table.itertuples() if r.suppressed}
    contrasts = summarise.contrasts_table(
        estimands.contrast_draws(effects, defs), suppressed=hidden, options=OutputOptions()
    )
    return table, contrasts


LEVELS = {"wave": list(WAVES), "region": list(REGIONS)}


def test_generic_findings_are_about_the_runs_own_waves_and_groups():
    effects, contrasts = _tables()
    found = build_findings(
        effects,
        contrasts,
        declaration=load_findings(ROOT / "models" / "findings" / "generic.toml"),
        options=OutputOptions(lang="en", prob=0.8),
        levels=LEVELS,
        spec_pairs=(("w2019", "w2015"), ("2022", "2018")),
    )
    text = " ".join(s.text for b in found.blocks for s in b.sentences)
    assert "w2017 compared with w2015" in text and "w2019 compared with w2017" in text
    assert "w2019 compared with w2015" in text  # the spec pair, said once
    assert text.count("All students, w2019 compared with w2015") == 1
    assert found.skipped == (("2022", "2018"),)  # the spec pair naming waves the run lacks
    assert not found.factsheet_shown and all(not b.factsheet for b in found.blocks)
    assert "80% interval" in text and "95%" not in text
    # level names are escaped (no markup from a column map reaches the page)
    assert "<i>" not in text and "&lt;i&gt;north&lt;/i&gt;" in text and "south &amp; east" in text
    region = next(b for b in found.blocks if b.key == "region")
    extremes = next(s for s in region.sentences if s.kind == "extremes")
    assert extremes.keys["best"] == "<i>north</i>" and extremes.keys["worst"] == "south & east"
    # every waves sentence's direction agrees with the known truth (all waves fall)
    falls = [s for b in found.blocks for s in b.sentences if s.keys.get("reference") == "w2015"]
    assert falls and all(s.phrase_key == "very_likely_lower" for s in falls)


def test_a_suppressed_group_says_so_with_the_run_threshold():
    effects, contrasts = _tables(small="Zürich")
    found = build_findings(
        effects,
        contrasts,
        declaration=load_findings(None),
        options=OutputOptions(lang="nl", min_cell_n=10),
        levels=LEVELS,
    )
    lines = [s for b in found.blocks for s in b.sentences if "Zürich" in s.text]
    assert lines and all(s.kind == "suppressed" and "n < 10" in s.text for s in lines)


def test_oml_findings_on_other_waves_are_skipped_not_invented():
    effects, contrasts = _tables()
    found = build_findings(
        effects,
        contrasts,
        declaration=load_findings(ROOT / "models" / "findings" / "oml.toml"),
        options=OutputOptions(lang="en"),
        levels=LEVELS,
    )
    assert not found.factsheet_shown  # not OML's levels: no grey factsheet lines
    text = " ".join(s.text for b in found.blocks for s in b.sentences)
    assert "2020" not in text and "2014" not in text
    assert ("2018", "2014") in found.skipped and ("2020_1", "2020_0") in found.skipped


@pytest.mark.parametrize(
    ("statement", "match"),
    [
        ({"kind": "between", "breakdown": "gender", "compare": "region"}, "not a column"),
        ({"kind": "lowest_vs_rest", "breakdown": "region"}, "cross breakdown"),
        ({"kind": "lowest_vs_rest", "breakdown": "region x gender"}, "needs 'at'"),
    ],
)
def test_statements_name_columns_of_their_breakdown(statement, match):
    raw = {"block": [{"key": "k", "title": {"nl": "t", "en": "t"}, "statement": [statement]}]}
    with pytest.raises(SpecError, match=match):
        parse_findings(raw)
