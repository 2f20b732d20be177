"""The collapsed backend and the Bambi reference path give the same posterior.

Both fit the same reduced model (same priors, same coding, same names) to one small
simulated survey with nutpie. Every parameter both posteriors hold is compared: the
posterior means must agree within Monte Carlo error, the posterior SDs within their
Monte Carlo error as well. The priors are deliberately tight (common effects N(0, 0.2),
group SDs HalfNormal(0.3)) so that they shape the posterior: a backend that used the
wrong prior variance (sigma instead of sigma^2, say) fails here.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import arviz as az
import numpy as np
import pandas as pd
import pytest

from omlbayes.backends.bambi_backend import (
    STUDENT_GROUPS,
    build_bambi_model,
    fit_bambi,
    model_frame,
)
from omlbayes.backends.collapsed import fit_collapsed
from omlbayes.data.scale import build_index
from omlbayes.errors import SpecError
from omlbayes.model import design
from omlbayes.model.spec import ModelSpec, Prior, load_spec
from omlbayes.simulate.survey import simulate_survey

SEED = 20260417
DRAWS, TUNE, CHAINS = 1000, 500, 4
# Means: a z-test on the difference of two independent MC estimates; 4 SE keeps the
# family-wise false alarm rate over ~50 parameters below 0.5%.
Z = 4.0
ABS_FLOOR = 1e-3  # for parameters whose MCSE is ~0 (none expected; guards float noise)
# SDs: the SE of an SD estimate is about sd / sqrt(2 ESS) for a near-normal posterior;
# with ESS >= MIN_ESS in both fits the relative SE of the difference is at most
# sqrt(2 / (2 MIN_ESS)) = 4.5%, and 3.3 SE of that is SD_RTOL = 15%. Skewed posteriors
# (the group SDs) have larger MCSE for the SD: their per-parameter tolerance uses
# ArviZ's mcse_sd, never less than SD_RTOL.
MIN_ESS = 500
SD_RTOL = 0.15


def _frame() -> pd.DataFrame:
    sim = simulate_survey(n_students=2000, n_schools=20, seed=SEED)
    return build_index(sim.frame).frame  # with age_c, centred by scale


def _spec() -> ModelSpec:
    base = load_spec("flagship")
    priors = {
        "Intercept": Prior("Normal", {"mu": 0.0, "sigma": 0.5}),
        "common": Prior("Normal", {"mu": 0.0, "sigma": 0.2}),
        "group_sigma": Prior("HalfNormal", {"sigma": 0.3}),
        "sigma": Prior("HalfNormal", {"sigma": 1.0}),
    }
    spec = dataclasses.replace(
        base,
        name="agreement",
        common=("wave", "gender", "age_c"),
        group=(("wave", "gender"), ("school_id",)),
        school_by_wave=False,
        priors=priors,
    )
    return spec.with_sampler(sampler="nutpie", draws=DRAWS, tune=TUNE, chains=CHAINS)


@pytest.fixture(scope="module")
def fits() -> dict[str, pd.DataFrame]:
    frame, spec = _frame(), _spec()
    layout = design.build_layout(frame, spec)
    stats = design.sufficient_stats(frame, layout, spec.response)
    collapsed, _, facts = fit_collapsed(stats, layout, spec, seed=SEED, progressbar=False)
    assert facts["kernel"] == "dense"  # p is small: the dense kernel's agreement
    # The same crossed design (schools x wave:gender cells) through the sparse kernel.
    sparse_spec = spec.with_sampler(kernel="sparse")
    sparse, _, facts = fit_collapsed(stats, layout, sparse_spec, seed=SEED, progressbar=False)
    assert facts["kernel"] == "sparse"
    bambi, _ = fit_bambi(frame, spec, seed=SEED, progressbar=False)
    return {"collapsed": collapsed, "sparse": sparse, "bambi": bambi}


def _summary(dt) -> pd.DataFrame:
    return az.summary(dt, kind="all", round_to="none")


@pytest.mark.parametrize("kernel", ["collapsed", "sparse"])
def test_bambi_and_collapsed_posteriors_agree(fits, kernel):
    a, b = _summary(fits[kernel]), _summary(fits["bambi"])
    # Bambi may lack cells (its own coding); every Bambi parameter must be compared.
    assert set(b.index) <= set(a.index), sorted(set(b.index) - set(a.index))
    common = [name for name in b.index if name in set(a.index)]
    assert len(common) == len(b.index) > 40
    a, b = a.loc[common], b.loc[common]
    assert (a["ess_bulk"] >= MIN_ESS).all(), a["ess_bulk"].nsmallest(3)
    assert (b["ess_bulk"] >= MIN_ESS).all(), b["ess_bulk"].nsmallest(3)

    mean_tol = Z * np.hypot(a["mcse_mean"], b["mcse_mean"]) + ABS_FLOOR
    mean_gap = (a["mean"] - b["mean"]).abs()
    sd_tol = np.maximum(Z * np.hypot(a["mcse_sd"], b["mcse_sd"]), SD_RTOL * b["sd"])
    sd_gap = (a["sd"] - b["sd"]).abs()
    table = pd.DataFrame(
        {
            "mean_collapsed": a["mean"],
            "mean_bambi": b["mean"],
            "mean_gap/tol": mean_gap / mean_tol,
            "sd_collapsed": a["sd"],
            "sd_bambi": b["sd"],
            "sd_rel_gap": sd_gap / b["sd"],
            "sd_gap/tol": sd_gap / sd_tol,
        }
    )
    worst = table.assign(worst=table[["mean_gap/tol", "sd_gap/tol"]].max(axis=1))
    print("\nworst discrepancies (gap / tolerance; > 1 fails):")
    print(worst.sort_values("worst", ascending=False).head(8).to_string(float_format="%.4f"))
    bad_mean = table.index[mean_gap > mean_tol].tolist()
    bad_sd = table.index[sd_gap > sd_tol].tolist()
    assert not bad_mean, f"posterior means differ beyond MC error: {bad_mean}"
    assert not bad_sd, f"posterior SDs differ beyond MC error: {bad_sd}"


def test_bambi_posterior_names_and_privacy(fits):
    dt = fits["bambi"]
    assert set(dt.children) == {"posterior", "sample_stats"}
    assert not set(dt.children) & set(STUDENT_GROUPS)
    post = dt["posterior"].to_dataset()
    assert set(post.data_vars) == {
        "Intercept",
        "wave",
        "gender",
        "age_c",
        "1|wave:gender",
        "1|wave:gender_sigma",
        "1|school_id",
        "1|school_id_sigma",
        "sigma",
    }
    assert post["wave"].dims == ("chain", "draw", "wave_dim")
    assert post["1|wave:gender"].dims == ("chain", "draw", "wave:gender__factor_dim")
    for group in dt.children.values():
        assert "__obs__" not in group.to_dataset().dims


def _bambi_coords(model) -> dict[str, tuple[str, ...]]:
    return {k: tuple(map(str, v)) for k, v in model.backend.model.coords.items() if k != "__obs__"}


def _layout_coords(layout: design.DesignLayout) -> dict[str, tuple[str, ...]]:
    return {t.dim: t.coords for t in layout.terms if t.dim is not None}


def test_bambi_codes_levels_like_design():
    """First present level is the reference; unused declared levels are dropped."""
    spec = _spec()
    frame = _frame()
    # an absent first level (no 2014 rows) and an empty cell (no girls in 2016)
    frame = frame[
        (frame["wave"] != "2014") & ~((frame["wave"] == "2016") & (frame["gender"] == "girl"))
    ]
    # declared order, not alphabetical: girl first makes girl the reference
    frame = frame.assign(gender=frame["gender"].cat.reorder_categories(["girl", "boy"]))
    layout = design.build_layout(frame, spec)
    model = build_bambi_model(frame, spec)
    assert _bambi_coords(model) == _layout_coords(layout)
    assert _bambi_coords(model)["wave_dim"][0] == "2018"
    assert _bambi_coords(model)["gender_dim"] == ("boy",)
    # the input frame is left as it was
    assert list(frame["wave"].cat.categories)[0] == "2014"


def test_spec_priors_reach_bambi():
    model = build_bambi_model(_frame(), _spec())
    text = str(model)
    assert "Intercept ~ Normal(mu: 0.0, sigma: 0.5)" in text
    assert "wave ~ Normal(mu: 0.0, sigma: 0.2)" in text
    assert "1|school_id ~ Normal(mu: 0.0, sigma: HalfNormal(sigma: 0.3))" in text
    assert "sigma ~ HalfNormal(sigma: 1.0)" in text


def test_generic_formula_keeps_bambi_defaults_for_unknown_terms():
    frame = _frame()
    model = build_bambi_model(frame, _spec(), formula="index ~ 1 + wave + region + (1|school_id)")
    text = str(model)
    assert "wave ~ Normal(mu: 0.0, sigma: 0.2)" in text  # a spec term: spec prior
    assert "region ~ Normal(mu: 0.0, sigma: 0.2)" not in text  # unknown: Bambi's default
    assert "1|school_id ~ Normal(mu: 0.0, sigma: HalfNormal(sigma: 0.3))" in text
    assert list(model_frame(frame, "index ~ wave + (1|school_id)").columns) == [
        "school_id",
        "wave",
        "index",
    ]


def test_missing_values_raise():
    frame = _frame()
    frame.loc[frame.index[:3], "age_c"] = np.nan
    with pytest.raises(SpecError, match="'age_c' has 3 missing"):
        build_bambi_model(frame, _spec())


def test_numpyro_without_jax_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name in ("numpyro", "jax") else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    spec = _spec().with_sampler(sampler="numpyro")
    with pytest.raises(SpecError, match=r"pip install -e \.\[jax\]"):
        fit_bambi(_frame(), spec, seed=1, progressbar=False)
