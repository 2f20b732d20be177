"""The studies of the default's sampler: the agreement with a long reference run and the
default's SBC (``validation/agreement.py``, ``validation/sbc_default.py``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

import omlbayes as ob
from omlbayes.validation import agreement, sbc_default

_NO_TRUTH = pd.DataFrame(columns=["breakdown", "group", "wave", "value"])


def test_agreement_compares_every_variance_parameter_and_contrast(default_run):
    run = ob.open_run(default_run)
    q = agreement._quantities(run, {"any": _NO_TRUTH, "surveyed": _NO_TRUTH}, seed=1)
    variances = q[q["quantity"] == "variance"]
    sds = [v for v in run.posterior.data_vars if v == "sigma" or str(v).endswith("_sigma")]
    n_sigma = run.posterior["sigma"].size // (
        run.posterior.sizes["chain"] * run.posterior.sizes["draw"]
    )
    assert len(variances) == len(sds) - 1 + n_sigma  # one row per residual group
    assert set(q.loc[q["quantity"] == "contrast", "estimand"]) == {"any", "surveyed"}
    # a run against itself agrees exactly; one quantity moved by 0.2 SD does not
    merged = q.merge(q, on=agreement.KEYS, suffixes=("", "_ref"))
    merged["mean_diff_sd"] = (merged["mean"] - merged["mean_ref"]) / merged["sd_ref"]
    merged["width_ratio"] = merged["width_95"] / merged["width_95_ref"]
    fits = pd.DataFrame({"diagnostics_passed": [True, True]})
    assert agreement.verdict(merged, fits)
    moved = merged.copy()
    moved.loc[5, "mean_diff_sd"] = 0.2
    assert not agreement.verdict(moved, fits)
    wider = merged.copy()
    wider.loc[7, "width_ratio"] = 1.06
    assert not agreement.verdict(wider, fits)
    assert not agreement.verdict(merged, pd.DataFrame({"diagnostics_passed": [True, False]}))
    table = agreement.summary(moved)
    assert table["n"].sum() == len(moved)
    assert table["max_abs_mean_diff_sd"].max() == 0.2


def test_sbc_default_draws_every_parameter_from_its_prior():
    spec, frame, layout, w, gcomp, keep, names = sbc_default._design(sbc_default.QUICK_SIZE, 3)
    assert len(names) == keep.sum() and all(n.startswith("effect[") for n in names)
    rng = np.random.default_rng(0)
    draws = [sbc_default._prior_draw(spec, layout, frame, rng) for _ in range(300)]
    truth = pd.DataFrame([t for t, _, _ in draws])
    groups = frame[spec.residual_sd_by].astype(str)
    assert {f"sigma[{g}]" for g in groups.unique()} <= set(truth.columns)
    assert {f"{t.name}_sigma" for t in layout.group_terms} <= set(truth.columns)
    # HalfNormal(s) has mean s sqrt(2/pi): residual SDs s = 1, group SDs s = 0.5
    half = np.sqrt(2 / np.pi)
    sig = truth[[c for c in truth.columns if c.startswith("sigma[")]].to_numpy()
    assert abs(sig.mean() - half) < 0.05
    taus = truth[[f"{t.name}_sigma" for t in layout.group_terms]].to_numpy()
    assert abs(taus.mean() - 0.5 * half) < 0.02
    # each row gets its own group's residual SD; a term's cells scale with its SD
    t0, b0, row_sigma = draws[0]
    assert np.allclose(row_sigma, [t0[f"sigma[{g}]"] for g in groups])
    big = max(layout.group_terms, key=lambda t: t.size)
    cells = np.array(
        [b[layout.slices()[big.name]].std() / t[f"{big.name}_sigma"] for t, b, _ in draws]
    )
    assert abs(np.median(cells) - 1) < 0.1
