"""Table 1 (composition) and the item distribution on small hand-checkable frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from omlbayes.constants import ITEM_COLUMNS
from omlbayes.data import schema
from omlbayes.data.descriptives import composition_table, item_distribution
from omlbayes.errors import InputError


def _cat(values, levels):
    return pd.Categorical(values, categories=list(levels), ordered=True)


def survey_frame(n: int = 400, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "student_id": [f"s{i}" for i in range(n)],
            "school_id": rng.choice(["a", "b", "c"], size=n),
            "region": _cat(rng.choice(schema.REGIONS, size=n), schema.REGIONS),
            "wave": _cat(rng.choice(schema.WAVES, size=n), schema.WAVES),
            "gender": _cat(rng.choice(schema.GENDERS, size=n), schema.GENDERS),
            "school_type": _cat(rng.choice(schema.SCHOOL_TYPES, size=n), schema.SCHOOL_TYPES),
            # "wo" never drawn: a declared level with no students must still appear
            "parent_edu": _cat(
                rng.choice(["max_mbo", "hbo", "unknown"], size=n), schema.PARENT_EDU
            ),
            "age": rng.normal(14.5, 0.6, n),
        }
    )
    for item in ITEM_COLUMNS:
        col = pd.array(rng.integers(1, 6, size=n), dtype="Int64")
        col[rng.random(n) < 0.1] = pd.NA
        frame[item] = col
    return frame


def test_composition_shares_sum_to_100_and_keep_declared_order():
    table = composition_table(survey_frame())
    assert list(table.columns) == ["variable", "level", "n", "percent"]
    sums = table.groupby("variable")["percent"].sum()
    assert np.allclose(sums, 100.0)
    assert list(table.loc[table.variable == "parent_edu", "level"]) == list(schema.PARENT_EDU)
    assert list(table.loc[table.variable == "region", "level"]) == list(schema.REGIONS)
    wo = table[(table.variable == "parent_edu") & (table.level == "wo")]
    assert wo["n"].item() == 0 and wo["percent"].item() == 0.0


def test_composition_matches_hand_count():
    frame = pd.DataFrame(
        {
            "gender": _cat(["boy", "girl", "girl", "girl"], schema.GENDERS),
            "school_type": _cat(["vwo", "vwo", "havo", "vmbo_bk"], schema.SCHOOL_TYPES),
            "parent_edu": _cat(["hbo", "hbo", "hbo", "wo"], schema.PARENT_EDU),
            "region": _cat(["noord_limburg"] * 4, schema.REGIONS),
            "wave": _cat(["2014", "2014", "2022", "2022"], schema.WAVES),
        }
    )
    table = composition_table(frame, by_wave=True).set_index(["variable", "level"])
    assert table.loc[("gender", "girl"), "n"] == 3
    assert table.loc[("gender", "girl"), "percent"] == pytest.approx(75.0)
    assert table.loc[("school_type", "vwo"), "percent"] == pytest.approx(50.0)
    assert table.loc[("school_type", "vmbo_gt"), "n"] == 0
    assert table.loc[("gender", "boy"), "2014"] == pytest.approx(50.0)
    assert table.loc[("gender", "boy"), "2022"] == pytest.approx(0.0)
    assert table.loc[("gender", "girl"), "2022"] == pytest.approx(100.0)
    assert np.isnan(table.loc[("gender", "girl"), "2016"])  # a wave with no students
    assert (table["all"] == table["percent"]).all()


def test_composition_counts_missing_as_own_row():
    frame = survey_frame(50)
    frame.loc[[0, 1], "gender"] = pd.NA
    table = composition_table(frame)
    gender = table[table.variable == "gender"].set_index("level")
    assert gender.loc["missing", "n"] == 2
    assert gender["n"].sum() == 50
    assert gender["percent"].sum() == pytest.approx(100.0)


def test_composition_by_wave_columns_sum_to_100():
    frame = survey_frame()
    table = composition_table(frame, by_wave=True)
    for wave in schema.WAVES:
        assert np.allclose(table.groupby("variable")[wave].sum(), 100.0)


def test_composition_rejects_frame_without_columns():
    with pytest.raises(InputError, match="region"):
        composition_table(survey_frame().drop(columns="region"))


def test_item_distribution_rows_sum_to_100_and_match_hand_count():
    frame = survey_frame()
    table = item_distribution(frame)
    pct = table[[f"pct_{a}" for a in range(1, 6)]]
    assert np.allclose(pct.sum(axis=1), 100.0)
    assert list(table["item"]) == list(ITEM_COLUMNS)
    first = frame["item_1"].dropna().astype(int)
    row = table.iloc[0]
    assert row["n"] == first.size
    assert row["n_missing"] == frame["item_1"].isna().sum()
    assert row["mean"] == pytest.approx(first.mean())
    assert row["pct_3"] == pytest.approx(100 * (first == 3).mean())


def test_item_distribution_rejects_out_of_range_answers():
    frame = survey_frame(20)
    frame.loc[0, "item_2"] = 7
    with pytest.raises(InputError, match="item_2"):
        item_distribution(frame)
