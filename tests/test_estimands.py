"""Contrast definitions and draws, on hand-made effect draws (no fitting)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from omlbayes.model import estimands
from omlbayes.results import summarise
from omlbayes.results.options import OutputOptions

WAVES = ("2018", "2020_1", "2020_2")
CELLS = [("overall", "all", w) for w in (*WAVES, "all")] + [
    ("gender", g, w) for g in ("boys", "girls") for w in (*WAVES, "all")
]


def _effects(seed: int = 1) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    return xr.DataArray(
        rng.normal(size=(2, 50, len(CELLS))),
        dims=("chain", "draw", "target"),
        coords={
            "breakdown": ("target", [c[0] for c in CELLS]),
            "group": ("target", [c[1] for c in CELLS]),
            "wave": ("target", [c[2] for c in CELLS]),
        },
    )


def _defs() -> list[estimands.Contrast]:
    targets = pd.DataFrame({"breakdown": [c[0] for c in CELLS], "group": [c[1] for c in CELLS]})
    return estimands.contrast_list(targets, waves=WAVES, wave_pairs=(("2020_2", "2018"),))


def test_gap_changes_cover_each_step_and_the_named_pairs_once():
    gaps = [
        (c.group, c.wave, c.reference_group, c.reference)
        for c in _defs()
        if c.kind == estimands.GAP_CHANGE
    ]
    assert gaps == [
        ("boys", "2020_1", "girls", "2018"),
        ("boys", "2020_2", "girls", "2020_1"),
        ("boys", "2020_2", "girls", "2018"),
    ]


def test_contrast_draws_equal_the_hand_computed_differences():
    effects = _effects()
    defs = _defs()
    draws = estimands.contrast_draws(effects, defs)
    values = {cell: effects.to_numpy()[..., k] for k, cell in enumerate(CELLS)}
    for k, c in enumerate(defs):
        b = c.breakdown
        expected = values[(b, c.group, c.wave)] - values[(b, c.reference_group, c.reference)]
        if c.kind == estimands.GAP_CHANGE:  # (g, w) - (g, r) - [(rg, w) - (rg, r)]
            expected = (
                values[(b, c.group, c.wave)]
                - values[(b, c.group, c.reference)]
                - values[(b, c.reference_group, c.wave)]
                + values[(b, c.reference_group, c.reference)]
            )
        np.testing.assert_allclose(draws.to_numpy()[..., k], expected, rtol=0, atol=1e-12)


def test_a_gap_change_is_hidden_when_any_of_its_four_cells_is():
    table = summarise.contrasts_table(
        estimands.contrast_draws(_effects(), _defs()),
        suppressed={("gender", "girls", "2020_1")},
        options=OutputOptions(),
    )
    gaps = table[table.kind == estimands.GAP_CHANGE].set_index(["wave", "reference"])
    # girls in 2020_1 is one of the four cells of the first two gap changes only
    assert gaps.loc[("2020_1", "2018"), "suppressed"]
    assert gaps.loc[("2020_2", "2020_1"), "suppressed"]
    assert not gaps.loc[("2020_2", "2018"), "suppressed"]
    assert not np.isnan(gaps.loc[("2020_2", "2018"), "mean"])
    assert np.isnan(gaps.loc[("2020_1", "2018"), "mean"])
