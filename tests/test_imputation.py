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


@pytest.mark.slow
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
    # Rubin's total variance T = W + (1 + 1/M) B, not the W + (1 - 1/M) B of plain mixing
    m = len(pooled.single)
    rubin = singles.mean(0) + (1 + 1 / m) * means.var(0, ddof=1)
    assert var_pooled == pytest.approx(rubin, rel=1e-6)
    assert (var_pooled > singles.mean(0) + means.var(0)).all()
    # the imputations disagree, so the pooled posterior is wider than their average one
    assert (means.var(0) > 0).all()
    assert (var_pooled > singles.mean(0)).all()
    per = pooled.per_imputation
    assert len(per) == 2 and {c for c in per if c.startswith("share_")} == {
        f"share_{lv}" for lv in model.levels
    }  # "unknown" is gone from the completed data


@pytest.mark.slow
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


def _informative_missingness(n: int = 6000, seed: int = 11) -> tuple[pd.DataFrame, float]:
    """Parental education with a real effect on the index (wo - max_mbo = 0.5 SD), and
    "unknown" far more likely among students with a low index: missing at random given
    the index, not given the school alone. Returns the frame and the true gap."""
    rng = np.random.default_rng(seed)
    school = rng.integers(0, 30, n)
    types = np.array(["vmbo_bk", "havo", "vwo"])[school % 3]
    shares = {"vmbo_bk": [0.6, 0.3, 0.1], "havo": [0.35, 0.4, 0.25], "vwo": [0.15, 0.4, 0.45]}
    truth = np.array([rng.choice(LEVELS, p=shares[t]) for t in types])
    gap = 0.5
    effect = np.select([truth == "hbo", truth == "wo"], [0.25, gap], 0.0)
    index = effect + rng.normal(0, 0.2, 30)[school] + rng.normal(size=n)
    unknown = rng.random(n) < 1 / (1 + np.exp(1.0 + 1.5 * index))  # ~30%, mostly low index
    frame = pd.DataFrame(
        {
            "school_id": pd.Categorical([f"s{k:02d}" for k in school]),
            "school_type": pd.Categorical(types),
            "region": pd.Categorical(np.where(school < 15, "north", "south")),
            "wave": pd.Categorical(rng.choice(["2018", "2022"], n), ordered=True),
            "gender": pd.Categorical(rng.choice(["boy", "girl"], n)),
            "age": rng.normal(15, 0.7, n),
            "parent_edu": pd.Categorical(
                np.where(unknown, "unknown", truth), categories=[*LEVELS, "unknown"], ordered=True
            ),
            "index": index,
        }
    )
    return frame, gap


@pytest.mark.slow
def test_imputation_congenial_with_the_analysis_covers_the_gap_the_old_one_misses():
    """The old imputation model (school, type, region, wave only) imputes parental education
    without its link to the index, so the pooled wo - max_mbo gap shrinks towards zero by
    about the unknown share and its interval misses the truth; conditioning on the index
    (and the analysis covariates) recovers it."""
    import dataclasses

    from omlbayes.model.spec import load_spec

    frame, gap = _informative_missingness()
    spec = dataclasses.replace(
        load_spec("flagship"),
        common=("wave", "parent_edu"),
        group=(("school_id",),),
        school_by_wave=False,
        residual_sd_by=None,
        breakdowns=(("parent_edu",),),
        wave_contrasts=(),
    ).with_sampler(draws=300, tune=300, chains=2)
    old = {"predictors": ("school_id", "school_type", "region", "wave"), "numeric": ()}
    found = {}
    for name, kwargs in (("old", {**old, "interactions": None}), ("congenial", {})):
        model = imputation.fit_imputation_model(frame, **kwargs)
        frames = imputation.impute(frame, model, m=5, seed=3)
        pooled = imputation.fit_imputations(frames, spec, seed=4, min_cell_n=10)
        c = pooled.contrasts
        pick = (
            (c["kind"] == "between_groups")
            & (c["wave"] == "all")
            & (c["group"] == "max_mbo")
            & (c["reference_group"] == "wo")
        ).to_numpy()
        draws = -c.isel(contrast=int(np.flatnonzero(pick)[0])).to_numpy().ravel()  # wo - mbo
        found[name] = np.quantile(draws, [0.025, 0.5, 0.975])
    lo, mid, hi = found["congenial"]
    assert lo <= gap <= hi, found
    lo, mid, hi = found["old"]
    assert hi < gap and mid < 0.85 * gap, found  # attenuated towards zero
