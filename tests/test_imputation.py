"""Multiple imputation of "unknown" parental education: the imputation model, the pooled
posterior, the command and its errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import run_script

from omlbayes.data import scale
from omlbayes.data.ingest import read_survey
from omlbayes.errors import InputError
from omlbayes.pipeline import imputation

LEVELS = ["max_mbo", "hbo", "wo"]
# true P(parent_edu | school type): strongly type-dependent
BY_TYPE = {"vmbo_bk": [0.7, 0.2, 0.1], "havo": [0.3, 0.4, 0.3], "vwo": [0.1, 0.4, 0.5]}


def _frame(n: int = 6000, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows with parent_edu drawn given school type, then 30% set to "unknown" completely
    at random; returns the frame and the hidden true levels."""
    rng = np.random.default_rng(seed)
    types = rng.choice(list(BY_TYPE), n)
    school = np.array([f"s{t}_{k}" for t, k in zip(types, rng.integers(0, 6, n), strict=True)])
    truth = np.array([rng.choice(LEVELS, p=BY_TYPE[t]) for t in types])
    hidden = rng.random(n) < 0.3
    edu = np.where(hidden, "unknown", truth)
    frame = pd.DataFrame(
        {
            "school_id": school,
            "school_type": types,
            "region": np.where(np.char.endswith(school, "0"), "north", "south"),
            "wave": rng.choice(["2018", "2022"], n),
            "parent_edu": pd.Categorical(edu, categories=[*LEVELS, "unknown"], ordered=True),
        }
    )
    return frame, truth


def test_imputed_levels_reproduce_the_known_conditional_shares():
    frame, truth = _frame()
    model = imputation.fit_imputation_model(frame)
    assert model.levels == tuple(LEVELS) and model.n_missing == int(
        (frame.parent_edu == "unknown").sum()
    )
    done = imputation.impute(frame, model, m=5, seed=1)
    hidden = (frame.parent_edu == "unknown").to_numpy()
    for t, shares in BY_TYPE.items():
        rows = hidden & (frame.school_type == t).to_numpy()
        known = pd.Series(truth[~hidden & (frame.school_type == t).to_numpy()])
        for completed in done:
            got = completed.parent_edu.to_numpy()[rows].astype(str)
            for level, p_true in zip(LEVELS, shares, strict=True):
                # imputed shares match the known rows' shares (and the hidden truth's),
                # within sampling error of ~600 imputed rows per type
                assert (got == level).mean() == pytest.approx((known == level).mean(), abs=0.06)
                assert (got == level).mean() == pytest.approx(p_true, abs=0.07)
        assert "unknown" not in done[0].parent_edu.cat.categories
    # the known rows are left alone; imputations differ (proper: coefficients redrawn)
    assert (done[0].parent_edu.to_numpy()[~hidden].astype(str) == truth[~hidden]).all()
    assert (done[0].parent_edu.to_numpy()[hidden] != done[1].parent_edu.to_numpy()[hidden]).any()


def test_imputation_rejects_bad_input():
    frame, _ = _frame(n=300)
    with pytest.raises(InputError, match="no column 'district'"):
        imputation.fit_imputation_model(frame, predictors=("district",))
    with pytest.raises(InputError, match="nothing to impute"):
        imputation.fit_imputation_model(frame, missing="none")
    model = imputation.fit_imputation_model(frame)
    with pytest.raises(InputError, match="at least 2"):
        imputation.impute(frame, model, m=1, seed=0)


def test_pooled_posterior_is_wider_than_the_imputations(small_survey):
    from omlbayes.validation import studies as validation

    frame = scale.build_index(read_survey(small_survey).frame).frame
    model = imputation.fit_imputation_model(frame)
    frames = imputation.impute(frame, model, m=2, seed=2)
    spec = validation.flagship_spec(draws=250, tune=250, chains=2)
    pooled = imputation.fit_imputations(frames, spec, seed=5, min_cell_n=10)
    edu = (pooled.contrasts["breakdown"] == "parent_edu").to_numpy()
    var_pooled = pooled.contrasts.var(["chain", "draw"]).to_numpy()[edu]
    singles = np.stack([c.var(["chain", "draw"]).to_numpy()[edu] for c in pooled.single])
    means = np.stack([c.mean(["chain", "draw"]).to_numpy()[edu] for c in pooled.single])
    # mixing equal-size draws: total variance = mean within + between (law of total variance)
    assert var_pooled == pytest.approx(singles.mean(0) + means.var(0), rel=1e-6)
    # the imputations disagree, so the pooled posterior is wider than their average one
    assert (means.var(0) > 0).all()
    assert (var_pooled > singles.mean(0)).all()
    per = pooled.per_imputation
    assert len(per) == 2 and {c for c in per if c.startswith("share_")} == {
        f"share_{lv}" for lv in model.levels
    }  # "unknown" is gone from the completed data


def test_impute_script_writes_a_folder_compare_reads(small_survey, small_run, tmp_path):
    run, _ = small_run
    result = run_script(
        "impute.py", "--data", str(small_survey), "--model", "flagship", "--imputations", "2",
        "--draws", "250",
        "--tune", "250", "--chains", "2", "--prob", "0.9", "--out", str(tmp_path),
        "--name", "mi", "--seed", "3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    contrasts = pd.read_csv(tmp_path / "mi" / "contrasts.csv")
    assert {"mean", "lower", "upper", "model_implied"} <= set(contrasts.columns)
    per = pd.read_csv(tmp_path / "mi" / imputation.IMPUTATION_CSV)
    assert len(per) == 2
    cmp = run_script("compare.py", str(run), str(tmp_path / "mi"), "--out", str(tmp_path / "cmp"))
    assert cmp.returncode == 0, cmp.stderr[-3000:]
    side = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    assert any(c.startswith("mean__flagship (MI parent_edu") for c in side.columns)
    assert not (tmp_path / "cmp" / "loo_comparison.csv").exists()  # different data: no LOO
    bad = run_script("impute.py", "--data", str(small_survey), "--imputations", "1",
                     "--out", str(tmp_path), "--name", "bad")  # fmt: skip
    assert bad.returncode != 0 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr
    assert bad.stderr.count("\n") == 1 and not (tmp_path / "bad").exists()
