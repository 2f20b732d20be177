"""The studies of the default's sampler: the agreement with a long reference run and the
default's SBC (``validation/agreement.py``, ``validation/sbc_default.py``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import omlbayes as ob
from omlbayes.model.design import variance_names
from omlbayes.validation import agreement, sbc_default


@pytest.mark.slow  # about 10 s on the shared default run; the fast tier is near its 5 minutes
def test_agreement_compares_every_variance_parameter_and_contrast(default_run):
    run = ob.open_run(default_run)
    q = agreement._quantities(run, seed=1)
    post = run.posterior
    sds = variance_names(post.data_vars)
    n_sigma = post["sigma"].size // (post.sizes["chain"] * post.sizes["draw"])
    assert (q["quantity"] == "variance").sum() == len(sds) - 1 + n_sigma
    assert set(q.loc[q["quantity"] == "contrast", "estimand"]) == {"any", "surveyed"}
    assert (q["width_mcse"] > 0).all() and (q["mean_mcse"] > 0).all()
    # a run against itself agrees exactly
    same = agreement.compare(q, q)
    assert np.allclose(same["mean_diff_sd"], 0) and np.allclose(same["width_ratio"], 1)
    fits = pd.DataFrame({"diagnostics_passed": [True, True]})
    assert agreement.verdict(same, fits)
    assert not agreement.verdict(same, pd.DataFrame({"diagnostics_passed": [True, False]}))
    moved = same.copy()
    moved.loc[5, "mean_diff_sd"] = 0.2
    assert not agreement.verdict(moved, fits)
    # a width 6% off with a Monte Carlo SE of 2% is not shown to differ; 20% off with 1% is
    noisy = same.copy()
    noisy.loc[7, ["width_ratio", "width_ratio_mcse"]] = (1.06, 0.02)
    assert agreement.verdict(noisy, fits)
    noisy.loc[7, ["width_ratio", "width_ratio_mcse"]] = (1.2, 0.01)
    assert not agreement.verdict(noisy, fits)
    wider = same.assign(width_ratio=1.03)  # every width 3% wider: systematic
    assert not agreement.verdict(wider, fits)
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


def test_a_reference_run_is_reused_only_where_a_refit_would_repeat_it(tmp_path):
    import hashlib
    import json

    data = tmp_path / "survey.csv"
    data.write_text("a,b\n1,2\n", encoding="utf-8")
    settings = {"chains": 4, "tune": 300, "draws": 4000}
    model = {"name": "full", "group": [["school_id"]], "source": "/a/models/full.toml"}
    default_sampler = {"backend": "collapsed", "sampler": "nutpie", "draws": 1000, "tune": 150,
                       "chains": 4, "early_stop": True, "importance": True}  # fmt: skip
    default = tmp_path / "default_7"
    default.mkdir()
    (default / "run.json").write_text(
        json.dumps({"spec": {**model, "sampler": default_sampler}}), encoding="utf-8"
    )
    folder = tmp_path / "reference_7"
    assert not agreement._reusable_reference(folder, data, 1007, settings, default)  # none yet

    def write(**changes):
        sampler = {**default_sampler, **settings, "early_stop": False, "importance": False}
        record = {
            "seed": 1007,
            # the spec's file paths may differ (another clone)
            "spec": {**model, "source": "/b/models/full.toml", "sampler": sampler},
            "data": {"sha256": hashlib.sha256(data.read_bytes()).hexdigest()},
            **changes,
        }
        folder.mkdir(exist_ok=True)
        (folder / "run.json").write_text(json.dumps(record), encoding="utf-8")

    write()
    assert agreement._reusable_reference(folder, data, 1007, settings, default)
    sampler = {**default_sampler, **settings, "early_stop": False, "importance": False}
    for changed in (
        {"seed": 1008},
        {"spec": {**model, "group": [], "sampler": sampler}},
        {"spec": {**model, "sampler": {**sampler, "draws": 1000}}},
        {"spec": {**model, "sampler": {**sampler, "importance": True}}},
        {"spec": {**model, "sampler": {**sampler, "kernel": "dense"}}},
        {"data": {"sha256": "other data"}},
    ):
        write(**changed)
        assert not agreement._reusable_reference(folder, data, 1007, settings, default), changed
