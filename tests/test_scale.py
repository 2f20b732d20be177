"""The index (min-items rule, standardization) and reliability against independent formulas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from statsmodels.multivariate.factor import Factor

from omlbayes.data.scale import (
    build_index,
    cronbach_alpha,
    item_total_correlations,
    mcdonald_omega,
    reliability,
)
from omlbayes.errors import InputError

ITEMS = [f"item_{k}" for k in range(1, 7)]


def _one_factor_items(n: int, loadings: np.ndarray, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    trait = rng.standard_normal(n)
    noise = rng.standard_normal((n, loadings.size)) * np.sqrt(1 - loadings**2)
    return pd.DataFrame(trait[:, None] * loadings + noise, columns=ITEMS)


def test_alpha_equals_the_covariance_formula():
    items = _one_factor_items(3000, np.array([0.8, 0.7, 0.75, 0.6, 0.85, 0.7]), seed=1)
    cov = np.cov(items.to_numpy(), rowvar=False)
    k = cov.shape[0]
    expected = k / (k - 1) * (1 - np.trace(cov) / cov.sum())
    assert cronbach_alpha(items) == pytest.approx(expected, rel=1e-12)


def test_alpha_of_a_textbook_table():
    # 5 respondents x 3 items, by hand: item variances 1.7 + 1.8 + 1.5 = 5.0, variance of the
    # sum scores (4, 7, 10, 13, 12) = 13.7, so alpha = 3/2 * (1 - 5.0/13.7) = 0.95255
    table = pd.DataFrame({"a": [1, 2, 3, 4, 4], "b": [2, 2, 4, 5, 4], "c": [1, 3, 3, 4, 4]})
    cov = np.cov(table.to_numpy(dtype=float), rowvar=False)
    assert cronbach_alpha(table) == pytest.approx(1.5 * (1 - np.trace(cov) / cov.sum()))
    assert cronbach_alpha(table) == pytest.approx(1.5 * (1 - 5.0 / 13.7), abs=1e-12)


def test_omega_matches_a_maximum_likelihood_factor_model():
    loadings = np.array([0.8, 0.7, 0.75, 0.6, 0.85, 0.5])
    items = _one_factor_items(20_000, loadings, seed=2)
    standardized = (items - items.mean()) / items.std()
    fit = Factor(standardized.to_numpy(), n_factor=1, method="ml").fit()
    ml = np.abs(fit.loadings[:, 0])
    expected = ml.sum() ** 2 / (ml.sum() ** 2 + np.sum(1 - ml**2))
    assert mcdonald_omega(items) == pytest.approx(expected, abs=0.003)
    truth = loadings.sum() ** 2 / (loadings.sum() ** 2 + np.sum(1 - loadings**2))
    assert mcdonald_omega(items) == pytest.approx(truth, abs=0.01)


def test_item_total_correlation_is_against_the_rest():
    items = _one_factor_items(2000, np.full(6, 0.7), seed=3)
    rest = items.drop(columns="item_1").sum(axis=1)
    expected = np.corrcoef(items["item_1"], rest)[0, 1]
    assert item_total_correlations(items)["item_1"] == pytest.approx(expected)


def test_min_items_rule_and_standardization():
    frame = pd.DataFrame(
        {
            "wave": ["2014"] * 4,
            "item_1": [1, 2, pd.NA, 5],
            "item_2": [1, 3, pd.NA, 5],
            "item_3": [2, 3, pd.NA, pd.NA],
            "item_4": [1, pd.NA, 4, 4],
            "item_5": [1, 3, pd.NA, 5],
            "item_6": [2, 3, pd.NA, 4],
        }
    ).astype({c: "Int64" for c in ITEMS})
    scaled = build_index(frame, min_items=4)
    # row 3 answered one item: excluded and counted, never dropped silently
    assert len(scaled.frame) == 3
    assert scaled.exclusions == {"fewer than 4 of 6 items answered": 1}
    raw = np.array([8 / 6, 14 / 5, 23 / 5])  # means of the answered items only
    assert scaled.frame["index_raw"].to_numpy() == pytest.approx(raw)
    assert scaled.frame["index"].mean() == pytest.approx(0, abs=1e-12)
    assert scaled.frame["index"].std(ddof=1) == pytest.approx(1)
    assert scaled.raw_mean == pytest.approx(raw.mean())
    assert len(build_index(frame, min_items=1).frame) == 4


def test_index_errors():
    empty = pd.DataFrame({c: pd.array([pd.NA, pd.NA], dtype="Int64") for c in ITEMS})
    with pytest.raises(InputError, match="no student answered"):
        build_index(empty)
    with pytest.raises(InputError, match="min_items"):
        build_index(empty, min_items=7)


def test_reliability_per_wave():
    items = _one_factor_items(1000, np.full(6, 0.75), seed=4)
    items["wave"] = np.repeat(["2014", "2016"], 500)
    table = reliability(items, by="wave")
    assert list(table["group"]) == ["all", "2014", "2016"]
    assert table["n_complete"].tolist() == [1000, 500, 500]
    assert table["alpha"].between(0.8, 0.95).all()
