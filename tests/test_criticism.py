"""Model criticism: exact LOO and prior power-scaling, checked against brute-force refits."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import xarray as xr

from omlbayes.backends import sparse
from omlbayes.backends.collapsed import CollapsedRefitter, _term_blocks, sparse_inputs
from omlbayes.backends.sparse import SparsePattern
from omlbayes.criticism import loo, sensitivity
from omlbayes.data.scale import build_index
from omlbayes.model.design import (
    GroupedStats,
    _codes,
    build_layout,
    design_matrix,
    grouped_stats,
    sufficient_stats,
)
from omlbayes.model.spec import Prior, load_spec
from omlbayes.simulate.survey import simulate_survey


@pytest.fixture(scope="module")
def frame():
    return build_index(simulate_survey(n_students=1200, n_schools=12, seed=5).frame).frame


def _small_spec(**changes):
    spec = load_spec("flagship")
    spec = dataclasses.replace(
        spec,
        common=("wave", "gender", "age_c"),
        group=(("wave", "gender"), ("school_id",)),
        **changes,
    )
    return spec.with_sampler(draws=1000, tune=500, chains=2)


@pytest.mark.parametrize("model", ["flagship", "residual_by_type"])
def test_conditional_loo_equals_refit_without_the_student(frame, model):
    """Given theta, the Sherman-Morrison density, and the predictive CDF at y_i (LOO-PIT),
    equal the dense refit without row i."""
    spec = load_spec(model)
    layout = build_layout(frame, spec)
    stats = grouped_stats(frame, layout, spec.response, by=spec.residual_sd_by)
    rng = np.random.default_rng(0)
    groups = stats.n_groups
    sigma_dims = ("chain", "draw", "g") if groups > 1 else ("chain", "draw")
    post = {"sigma": (sigma_dims, rng.uniform(0.7, 1.1, size=(1, 2, groups)[: len(sigma_dims)]))}
    for t in layout.group_terms:
        post[f"{t.name}_sigma"] = (("chain", "draw"), rng.uniform(0.1, 0.5, size=(1, 2)))
    log_s2, log_lam = loo.hyper_arrays(xr.Dataset(post), layout, spec)
    pattern = SparsePattern.build(stats.pattern(), _term_blocks(layout))
    inputs = sparse_inputs(stats, pattern)
    rows = [0, 5, 77, 299, 1100]
    sub = frame.iloc[rows]
    by = spec.residual_sd_by
    g_all = np.zeros(len(frame), int) if by is None else _codes(frame[by], stats.groups, by)
    ll, _, cdf = sparse.loo_loglik_grouped(
        log_s2, log_lam, inputs["wtw_data"], inputs["wty"], inputs["sparse_pattern"],
        *loo._grouped_layout(sub, layout, pattern), sub[spec.response].to_numpy(), g_all[rows],
    )  # fmt: skip
    w = design_matrix(frame, layout).toarray()
    y = frame[spec.response].to_numpy()
    for d in range(2):
        s2, lam = np.exp(log_s2[d]), np.exp(log_lam[d])
        for k, i in enumerate(rows):
            keep = np.arange(len(frame)) != i
            wk, s2k = w[keep], s2[g_all[keep]]
            prec = (wk / s2k[:, None]).T @ wk + np.diag(1.0 / lam)
            bhat = np.linalg.solve(prec, (wk / s2k[:, None]).T @ y[keep])
            var = s2[g_all[i]] + w[i] @ np.linalg.solve(prec, w[i])
            direct = -0.5 * math.log(2 * math.pi * var) - 0.5 * (y[i] - w[i] @ bhat) ** 2 / var
            assert ll[d, k] == pytest.approx(direct, abs=1e-9)
            z = (y[i] - w[i] @ bhat) / math.sqrt(var)
            assert cdf[d, k] == pytest.approx(0.5 * math.erfc(-z / math.sqrt(2)), abs=1e-9)


def test_grouped_loo_densities_equal_the_dense_formula(frame):
    """Students grouped by their indicator columns (many share one, they differ in age):
    every student's LOO and in-sample density equals the dense formula at fixed theta."""
    spec = load_spec("residual_by_type")
    layout = build_layout(frame, spec)
    stats = grouped_stats(frame, layout, spec.response, by=spec.residual_sd_by)
    post = {"sigma": (("chain", "draw", "g"), np.full((1, 1, stats.n_groups), 0.9))}
    for t in layout.group_terms:
        post[f"{t.name}_sigma"] = (("chain", "draw"), np.full((1, 1), 0.3))
    log_s2, log_lam = loo.hyper_arrays(xr.Dataset(post), layout, spec)
    pattern = SparsePattern.build(stats.pattern(), _term_blocks(layout))
    inputs = sparse_inputs(stats, pattern)
    g = _codes(frame[spec.residual_sd_by], stats.groups, spec.residual_sd_by)
    grouped = loo._grouped_layout(frame, layout, pattern)
    assert grouped[0].shape[0] < 0.9 * len(frame)  # patterns are shared
    y = frame[spec.response].to_numpy()
    ll, within, _ = sparse.loo_loglik_grouped(
        log_s2, log_lam, inputs["wtw_data"], inputs["wty"], inputs["sparse_pattern"],
        *grouped, y, g,
    )  # fmt: skip
    w = design_matrix(frame, layout).toarray()
    s2, lam = np.exp(log_s2[0])[g], np.exp(log_lam[0])
    prec = (w / s2[:, None]).T @ w + np.diag(1.0 / lam)
    cov = np.linalg.inv(prec)
    bhat = cov @ ((w / s2[:, None]).T @ y)
    v = np.einsum("ij,jk,ik->i", w, cov, w)
    resid = y - w @ bhat
    h = v / s2
    expected = -0.5 * np.log(2 * np.pi * s2) + 0.5 * np.log1p(-h) - 0.5 * resid**2 / ((1 - h) * s2)
    np.testing.assert_allclose(ll[0], expected, rtol=1e-9, atol=1e-9)
    inside = -0.5 * np.log(2 * np.pi * (s2 + v)) - 0.5 * resid**2 / (s2 + v)
    np.testing.assert_allclose(within[0], inside, rtol=1e-9, atol=1e-9)


def _refit_lpd(refitter, frame, layout, spec, i, seed):
    """log p(y_i | y_-i) by refitting without student i (dense algebra, own draws)."""
    rest = frame.drop(index=frame.index[i])
    tree = refitter.fit(sufficient_stats(rest, layout, spec.response), seed=seed)
    post = tree["posterior"].to_dataset()
    log_s2, log_lam = loo.hyper_arrays(post, layout, spec)
    stats = sufficient_stats(rest, layout, spec.response)
    wi = design_matrix(frame.iloc[[i]], layout).toarray()[0]
    yi = float(frame[spec.response].iloc[i])
    dens = []
    for s2, lv in zip(np.exp(log_s2[:, 0]), log_lam, strict=True):
        prec = stats.wtw / s2 + np.diag(np.exp(-lv))
        bhat = np.linalg.solve(prec, stats.wty / s2)
        var = s2 + wi @ np.linalg.solve(prec, wi)
        dens.append(-0.5 * math.log(2 * math.pi * var) - 0.5 * (yi - wi @ bhat) ** 2 / var)
    dens = np.asarray(dens)
    return float(np.log(np.mean(np.exp(dens - dens.max()))) + dens.max())


def test_loo_matches_brute_force_refits_and_compare_accepts_it(frame, tmp_path):
    import arviz_stats as azs

    data = frame.iloc[:600].reset_index(drop=True)
    spec = _small_spec()
    layout = build_layout(data, spec)
    stats = sufficient_stats(data, layout, spec.response)
    refitter = CollapsedRefitter(stats, layout, spec)
    tree = refitter.fit(stats, seed=1)
    grouped = GroupedStats.from_pooled(stats)
    elpd, facts = loo.conditional_loo(data, layout, spec, grouped, tree["posterior"].to_dataset())
    assert elpd.n_data_points == len(data) and facts["draws_used"] <= loo.LOO_DRAWS
    # the most influential students are the hardest case for importance sampling
    worst = np.argsort(elpd.pareto_k.to_numpy())[-2:]
    for i in [0, *worst.tolist()]:
        refit = _refit_lpd(refitter, data, layout, spec, int(i), seed=10 + int(i))
        assert elpd.elpd_i.to_numpy()[i] == pytest.approx(refit, abs=0.02)
    # p_loo: positive, and well below the number of coefficients
    assert 0 < elpd.p < layout.n_coef
    # LOO-PIT: near uniform for the model that made the data; U-shaped when the posterior
    # says the students scatter less than they do (sigma shrunk by 40%)
    pit = facts["loo_pit"]
    assert pit["n"] == len(data) and sum(pit["counts"]) == len(data)
    assert pit["ks_p"] > 0.001 and pit["ecdf_max_gap"] < 0.08
    assert pit["share_below_0_025"] + pit["share_above_0_975"] < 0.1
    post = tree["posterior"].to_dataset()
    _, narrow = loo.conditional_loo(
        data, layout, spec, grouped, post.assign(sigma=post["sigma"] * 0.6)
    )
    tails = narrow["loo_pit"]["share_below_0_025"] + narrow["loo_pit"]["share_above_0_975"]
    assert tails > 0.15 and narrow["loo_pit"]["ks_p"] < 1e-4
    # loo.json round trip into arviz.compare, against a visibly worse model (no school term)
    loo.write_loo(tmp_path / "a.json", elpd, facts, order_key="data-sha")
    worse = dataclasses.replace(spec, group=(("wave", "gender"),))
    w_layout = build_layout(data, worse)
    w_stats = sufficient_stats(data, w_layout, worse.response)
    w_tree = CollapsedRefitter(w_stats, w_layout, worse).fit(w_stats, seed=2)
    w_elpd, w_facts = loo.conditional_loo(
        data, w_layout, worse, GroupedStats.from_pooled(w_stats), w_tree["posterior"].to_dataset()
    )
    loo.write_loo(tmp_path / "b.json", w_elpd, w_facts, order_key="data-sha")
    table = azs.compare(
        {"schools": loo.read_loo(tmp_path / "a.json"), "none": loo.read_loo(tmp_path / "b.json")}
    )
    assert list(table.index) == ["schools", "none"]  # the school term predicts better
    diff = w_elpd.elpd_i.to_numpy() - elpd.elpd_i.to_numpy()
    assert table.loc["none", "elpd_diff"] == pytest.approx(diff.sum(), abs=0.51)
    assert table.loc["none", "dse"] == pytest.approx(np.sqrt(diff.size * diff.var()), abs=0.051)
    # saved pointwise values are not in data row order, but the same data share one order
    saved = loo.read_loo(tmp_path / "a.json").elpd_i.to_numpy()
    order = loo.pointwise_order(saved.size, "data-sha")
    assert not np.array_equal(order, np.arange(saved.size))
    np.testing.assert_allclose(saved, elpd.elpd_i.to_numpy()[order], atol=1e-6)


def test_power_scaled_prior_equals_refit_with_scaled_prior(frame):
    """HalfNormal(s)^a = HalfNormal(s / sqrt(a)) and Normal(0, s)^a = Normal(0, s / sqrt(a)):
    the importance-weighted posterior must agree with a refit under the scaled priors."""
    alpha = 0.5
    data = frame.iloc[:600].reset_index(drop=True)
    spec = _small_spec()
    layout = build_layout(data, spec)
    stats = sufficient_stats(data, layout, spec.response)
    tree = CollapsedRefitter(stats, layout, spec).fit(stats, seed=4)
    sensitivity.add_power_scaling_groups(tree, GroupedStats.from_pooled(stats), layout, spec)
    weights = sensitivity.power_scaled_weights(tree, alpha)
    scaled = dataclasses.replace(
        spec,
        priors={
            k: Prior(p.dist, {**p.params, "sigma": p.params["sigma"] / math.sqrt(alpha)})
            for k, p in spec.priors.items()
        },
    )
    refit = CollapsedRefitter(stats, layout, scaled).fit(stats, seed=5)["posterior"]
    post = tree["posterior"]
    moved = 0
    for name in ["sigma", "1|wave:gender_sigma", "1|school_id_sigma", "Intercept"]:
        x = post[name].to_numpy()
        weighted = float(np.sum(weights * x))
        target = float(refit[name].mean())
        sd = float(x.std())
        assert weighted == pytest.approx(target, abs=0.12 * sd), name
        moved += abs(target - x.mean()) > 0.12 * sd
    assert moved >= 1  # the check has power: scaling the prior moves the posterior


def test_run_folder_has_loo_and_prior_sensitivity(small_run):
    """A fitted run: loo.json readable by arviz.compare, psense works on posterior.nc's
    totals (through power_scaling_tree)."""
    import arviz_stats as azs
    import pandas as pd

    path, _ = small_run
    elpd = loo.read_loo(path)
    raw = __import__("json").loads((path / loo.LOO_JSON).read_text())
    assert sum(raw["pareto_k_counts"].values()) == raw["n"] == elpd.n_data_points
    assert raw["elpd_loo"] == pytest.approx(float(elpd.elpd_i.sum()), abs=0.01)
    assert "PSIS" in raw["method"] and raw["draws_used"] == elpd.n_samples
    assert sum(raw["loo_pit"]["counts"]) == raw["n"] and 0 <= raw["loo_pit"]["ks_p"] <= 1
    assert (path / "figures" / "loo_pit.png").is_file()
    table = pd.read_csv(path / sensitivity.SENSITIVITY_CSV, index_col=0)
    assert {"prior", "likelihood", "diagnosis"} <= set(table.columns)
    assert "sigma" in table.index and any(i.startswith("overall:") for i in table.index)
    tree = xr.open_datatree(path / "posterior.nc", engine="h5netcdf")
    again = azs.psense_summary(sensitivity.power_scaling_tree(tree), var_names=["sigma"])
    assert again.loc["sigma", "prior"] == pytest.approx(table.loc["sigma", "prior"], abs=1e-3)


def test_unpooled_codes_every_wave_by_group_cell_as_a_fixed_effect(frame):
    from omlbayes.backends.collapsed import _fixed_prior_variances

    spec = load_spec("unpooled")
    layout = build_layout(frame, spec)
    cells = {t.name: t for t in layout.terms if t.kind == "cells"}
    assert {"wave:gender", "wave:gender:school_type"} <= set(cells)
    term = cells["wave:gender"]
    assert term.size == len(layout.levels["wave"]) * len(layout.levels["gender"])
    w = design_matrix(frame, layout).tocsc()
    block = w[:, layout.slices()["wave:gender"]].toarray()
    assert np.all(block.sum(axis=1) == 1)  # each student sits in exactly one cell
    code = frame.wave.astype(str) + ":" + frame.gender.astype(str)
    assert np.array_equal(np.asarray(term.coords)[block.argmax(axis=1)], code.to_numpy())
    # fixed effects: a prior variance for every coefficient outside the school term
    assert _fixed_prior_variances(layout, spec).size == layout.n_coef - layout.group_terms[0].size
    assert [t.name for t in layout.group_terms] == ["1|school_id"]


def test_list_models_names_every_spec_with_its_description():
    from conftest import run_command

    from omlbayes.constants import DEFAULT_MODEL
    from omlbayes.resources import models_dir

    result = run_command("fit", "--list-models")
    assert result.returncode == 0, result.stderr
    *lines, footer = result.stdout.rstrip().splitlines()
    specs = sorted(models_dir().glob("*.toml"))
    assert len(lines) == len(specs)
    for path, line in zip(specs, lines, strict=True):
        spec = load_spec(path)
        assert line[2:].split()[0] == spec.name and line.endswith(spec.description)
        assert line.startswith("* ") == (path.stem == DEFAULT_MODEL)
    assert "default" in footer


@pytest.mark.slow
def test_compare_default_and_unpooled(default_run, small_survey, tmp_path):
    import pandas as pd
    from conftest import SMALL_FIT_ARGS, run_script

    from omlbayes.constants import DEFAULT_MODEL

    path, default = default_run, DEFAULT_MODEL
    fitted = run_script(
        "fit.py", "--model", "unpooled", "--data", str(small_survey), *SMALL_FIT_ARGS,
        "--seed", "3", "--out", str(tmp_path), "--name", "unpooled", "--allow-failed",
    )  # fmt: skip
    assert fitted.returncode == 0, fitted.stderr[-2000:]
    result = run_script(
        "compare.py", str(path), str(tmp_path / "unpooled"), "--out", str(tmp_path / "cmp")
    )
    assert result.returncode == 0, result.stderr
    side = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    a = pd.read_csv(path / "contrasts.csv")
    row = side[(side.breakdown == "overall") & (side.kind == "spec_pair")].iloc[0]
    match = a[(a.breakdown == "overall") & (a.wave == row.wave) & (a.reference == row.reference)]
    assert row[f"mean__{default}"] == pytest.approx(match["mean"].iloc[0])
    assert row["diff__unpooled"] == pytest.approx(row["mean__unpooled"] - row[f"mean__{default}"])
    table = pd.read_csv(tmp_path / "cmp" / "loo_comparison.csv", index_col=0)
    assert set(table.index) == {default, "unpooled"}
    assert table.loc[default, "elpd"] == pytest.approx(loo.read_loo(path).elpd)
    assert table.loc["unpooled", "elpd"] == pytest.approx(loo.read_loo(tmp_path / "unpooled").elpd)
    page = (tmp_path / "cmp" / "comparison.html").read_text()
    assert "data:image/png;base64," in page and "src='http" not in page
    bad = run_script(
        "compare.py", str(path), str(tmp_path / "nothing"), "--out", str(tmp_path / "x")
    )
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert bad.stderr.count("\n") == 1 and "not a complete run folder" in bad.stderr


def test_cross_trends_without_a_three_way_term_are_model_implied():
    import pandas as pd

    from omlbayes.pipeline.outputs import implied_by_structure

    rows = pd.DataFrame(
        {
            "breakdown": ["gender x school_type"] * 2 + ["gender", "region x school_type"],
            "wave": ["2018", "2018", "2018", "2018"],
            "reference": ["2014", "2018", "2014", "2014"],
        }
    )  # fmt: skip
    flagship = load_spec("flagship").to_dict()
    assert implied_by_structure(rows, flagship).tolist() == [True, False, False, True]
    three_way = load_spec("three_way").to_dict()  # a term for every cross breakdown
    assert implied_by_structure(rows, three_way).tolist() == [False, False, False, False]
    one_cross = {**flagship, "group": [*flagship["group"], ["wave", "gender", "school_type"]]}
    assert implied_by_structure(rows, one_cross).tolist() == [False, False, False, True]
    unpooled = load_spec("unpooled").to_dict()  # wave:gender:school_type as fixed cells
    assert implied_by_structure(rows, unpooled).tolist() == [False, False, False, True]


def test_model_implied_is_judged_from_the_posterior():
    """A cross trend is implied when the data leave its own term's part negligible: under
    10% of the contrast's variance and an interval that includes 0."""
    import pandas as pd

    from omlbayes.pipeline.outputs import model_implied

    rng = np.random.default_rng(0)
    n = 4000
    two_way = rng.normal(0.1, 0.05, n)
    parts = {
        1: rng.normal(0.0, 0.005, n),  # a three-way SD at zero: the part is tiny
        2: rng.normal(0.0, 0.05, n),  # as variable as the two-way part: separated
        3: rng.normal(0.03, 0.005, n),  # small but clearly away from 0: separated
    }
    rows = pd.DataFrame(
        {
            "breakdown": ["gender x school_type"] * 4 + ["gender"],
            "wave": ["2018", "2018", "2018", "2018", "2018"],
            "reference": ["2014"] * 5,
        }
    )
    draws = np.stack([two_way + parts.get(k, 0.0) for k in range(5)], axis=-1)
    values = xr.DataArray(draws[None], dims=("chain", "draw", "contrast"))
    implied = model_implied(rows, values, parts)
    # 0: no term of its own; 1: negligible part; 2, 3: separated; 4: not a cross
    assert implied.tolist() == [True, True, False, False, False]


def test_run_says_what_the_model_does_not_support(small_run):
    """No three-way term: cross trends flagged and kept out of the findings; no school x
    wave term: school pages say the per-wave values follow the region's trend."""
    import pandas as pd

    path, _ = small_run
    contrasts = pd.read_csv(path / "contrasts.csv")
    flagged = contrasts[contrasts.model_implied]
    assert len(flagged) and flagged.breakdown.str.contains(" x ").all()
    assert (flagged.wave.astype(str) != flagged.reference.astype(str)).all()
    report = (path / "report.html").read_text()
    assert "model-implied" in report and "gender x school_type" in report
    pages = list((path / "schools").glob("school-*.html"))
    assert pages and all("region&#x27;s trend" in p.read_text() for p in pages)


def test_default_run_has_a_term_for_every_output(default_run):
    """The default model (fit.py without --model): school x wave, three-way cells and a
    residual SD per school type, so nothing is flagged model-implied and school pages show
    the school's own trend."""
    import json

    import pandas as pd

    from omlbayes.constants import DEFAULT_MODEL

    record = json.loads((default_run / "run.json").read_text())
    assert record["model"] == DEFAULT_MODEL == "full"
    assert record["fit"]["kernel"] == "sparse" and record["fit"]["residual_sd_by"] == "school_type"
    posterior = xr.open_datatree(default_run / "posterior.nc", engine="h5netcdf")["posterior"]
    assert "1|school_id:wave_sigma" in posterior and "1|wave:gender:school_type_sigma" in posterior
    assert posterior["sigma"].shape[-1] == 4  # one residual SD per school type
    contrasts = pd.read_csv(default_run / "contrasts.csv")
    assert contrasts.breakdown.str.contains(" x ").any() and not contrasts.model_implied.any()
    pages = list((default_run / "schools").glob("school-*.html"))
    assert pages and not any("region&#x27;s trend" in p.read_text() for p in pages)
    diagnostics = json.loads((default_run / "diagnostics.json").read_text())
    assert "ppc_cell_dispersion" in diagnostics["ppc"]
    methods = (default_run / "report.html").read_text()  # English (--lang en): the Methods
    assert "its own deviation per wave" in methods and "differs by school type" in methods


def test_ppc_gate_passes_the_fit_and_fails_a_wrong_residual_sd(
    small_run, small_survey, monkeypatch
):
    """The fitted posterior passes; the same posterior with sigma shrunk by 30% (students
    scattered more than the model says) fails the residual-SD and distribution checks."""
    import json

    from omlbayes.criticism import ppc
    from omlbayes.criticism.diagnose import verdict_line
    from omlbayes.data.ingest import read_survey

    path, _ = small_run
    diagnostics = json.loads((path / "diagnostics.json").read_text())
    for name in ppc.FAMILIES:
        entry = diagnostics["ppc"][name]
        assert diagnostics["checks"][name] == entry["passed"]
        assert entry["n_statistics"] > 0 and 0 <= entry["share_extreme"] <= 1
    assert (path / "figures" / "ppc_pvalues.png").is_file()
    frame = build_index(read_survey(small_survey).frame).frame
    spec = load_spec("flagship")
    layout = build_layout(frame, spec)
    post = xr.open_datatree(path / "posterior.nc", engine="h5netcdf")["posterior"].to_dataset()
    kwargs = {"seed": 1, "min_cell_n": 10, "breakdown_columns": ["school_type", "gender"]}
    good, _ = ppc.posterior_predictive_checks(frame, layout, spec, post, **kwargs)
    assert all(e["passed"] for e in good.values())
    narrow = post.assign(sigma=post["sigma"] * 0.7)
    bad, _ = ppc.posterior_predictive_checks(frame, layout, spec, narrow, **kwargs)
    assert not bad["ppc_residual_sd_by_school_type"]["passed"]
    assert bad["ppc_residual_sd_by_school_type"]["n_extreme"] == 4
    assert not bad["ppc_index_by_wave_group"]["passed"]
    gate = ppc.add_to_gate({"checks": {"r_hat_below_1_01": True}, "passed": True}, bad)
    assert gate["passed"] is False and "ppc" in gate
    # a variance component the model lacks: the data shifted per school x wave cell, or per
    # wave x gender x school type cell (SD 0.3), fail the one-sided dispersion check only there
    rng = np.random.default_rng(7)
    for cols, name in (
        (["school_id", "wave"], "school_id x wave"),
        (["wave", "gender", "school_type"], "wave x gender x school_type"),
    ):
        codes = frame[cols].astype(str).agg(":".join, axis=1).factorize()[0]
        shifted = frame.assign(
            index=frame["index"] + 0.3 * rng.standard_normal(codes.max() + 1)[codes]
        )
        drift, _ = ppc.posterior_predictive_checks(shifted, layout, spec, post, **kwargs)
        entry = drift["ppc_cell_dispersion"]
        assert not entry["passed"] and entry["one_sided"]
        assert entry["most_extreme"][0]["statistic"].startswith(f"dispersion {name} (")
        assert entry["most_extreme"][0]["p"] < ppc.ALPHA / 2
        numbers = {"max_r_hat": 1.0, "min_ess_bulk": 900, "min_ess_tail": 900, "divergences": 0}
        gate = ppc.add_to_gate({"checks": {}, **numbers, "min_bfmi": 1.0}, drift)
        hint = "school_by_wave" if name.startswith("school") else "three_way"
        assert f"in {name} (" in verdict_line(gate) and f"--model {hint}" in verdict_line(gate)
    assert good["ppc_cell_dispersion"]["passed"]
    assert good["ppc_cell_dispersion"]["n_statistics"] == 6  # school x wave + 5 crosses
    # above PPC_MAX_ROWS students a seeded subsample is checked, says so, and still catches it
    monkeypatch.setattr(ppc, "PPC_MAX_ROWS", len(frame) // 2)
    sub_bad, _ = ppc.posterior_predictive_checks(frame, layout, spec, narrow, **kwargs)
    entry = sub_bad["ppc_residual_sd_by_school_type"]
    assert entry["students"] == len(frame) // 2 and entry["students_in_data"] == len(frame)
    assert not entry["passed"]
    again, _ = ppc.posterior_predictive_checks(frame, layout, spec, narrow, **kwargs)
    assert again == sub_bad  # same seed, same subsample, same p-values


def test_subsampled_loo_estimates_the_full_elpd_within_its_error(frame):
    """Above ``max_students`` a seeded subsample stands for all N: the estimate lies within
    a few subsampling SEs of the every-student value, its SE includes that error, and the
    same data key gives the same subsample (so two runs pair up in arviz.compare)."""
    data = frame.iloc[:600].reset_index(drop=True)
    spec = _small_spec()
    layout = build_layout(data, spec)
    stats = sufficient_stats(data, layout, spec.response)
    tree = CollapsedRefitter(stats, layout, spec).fit(stats, seed=1)
    grouped = GroupedStats.from_pooled(stats)
    posterior = tree["posterior"].to_dataset()
    full, full_facts = loo.conditional_loo(data, layout, spec, grouped, posterior)
    sub, facts = loo.conditional_loo(
        data, layout, spec, grouped, posterior, max_students=200, sample_key="data-sha"
    )
    assert full_facts["subsampling_se"] == 0.0 and full_facts["n_subsample"] is None
    assert sub.n_data_points == 200 and facts["n_students"] == 600
    assert "subsample of 200 of the 600" in facts["method"]
    assert 0 < facts["subsampling_se"] < sub.se
    assert abs(sub.elpd - full.elpd) < 4 * facts["subsampling_se"]
    assert sub.se > full.se  # data SE and subsampling error together
    rows = loo.subsample_rows(600, 200, "data-sha")
    np.testing.assert_array_equal(rows, loo.subsample_rows(600, 200, "data-sha"))
    assert not np.array_equal(rows, loo.subsample_rows(600, 200, "other-data"))
    # the subsample's own values, scaled by N / m, are what is saved
    np.testing.assert_allclose(
        sub.elpd_i.to_numpy(), full.elpd_i.to_numpy()[rows] * 3.0, rtol=1e-9, atol=1e-9
    )


def test_bambi_backend_refuses_a_residual_sd_per_group(small_survey, tmp_path):
    """The Bambi formula has one residual SD: the default model (one per school type) is
    refused with one line before any work, not silently fitted as another model."""
    from conftest import run_command

    result = run_command(
        "fit", "--data", str(small_survey), "--backend", "bambi", "--out", str(tmp_path)
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: --backend bambi fits one residual SD")
    assert "--model flagship" in result.stderr and not list(tmp_path.iterdir())


def test_likelihood_totals_are_never_arviz_log_likelihood():
    """The totals live in log_likelihood_total; an old run's log_likelihood of totals is still
    read, a pointwise one is not taken for totals; psense sees them only in memory."""
    coords = {"chain": [0, 1], "draw": np.arange(5)}
    rng = np.random.default_rng(0)
    draws = xr.Dataset({"sigma": (("chain", "draw"), rng.uniform(0.5, 1, (2, 5)))}, coords)
    totals = xr.Dataset({"y": (("chain", "draw"), rng.normal(-100, 1, (2, 5)))}, coords)
    pointwise = xr.Dataset({"y": (("chain", "draw", "obs"), rng.normal(size=(2, 5, 3)))}, coords)

    def tree(**groups):
        return xr.DataTree.from_dict(
            {"/posterior": draws, "/log_prior": draws, **{f"/{k}": v for k, v in groups.items()}}
        )

    new = tree(log_likelihood_total=totals)
    assert sensitivity.likelihood_totals(new).identical(totals)
    assert sensitivity.likelihood_totals(tree(log_likelihood=totals)).identical(totals)
    assert sensitivity.likelihood_totals(tree(log_likelihood=pointwise)) is None
    work = sensitivity.power_scaling_tree(new)
    assert set(work.children) == {"posterior", "log_prior", "log_likelihood"}
    assert work["log_likelihood"].to_dataset().identical(totals)
    with pytest.raises(ValueError, match="no per-draw"):
        sensitivity.power_scaling_tree(tree(log_likelihood=pointwise))


def test_drift_persistence_check_flags_persistent_school_drift_and_is_advisory(
    default_run, small_survey
):
    """The default's posterior against its own data, and against the data with a drift that
    persists over a school's waves (a per-school slope over the wave order) or that does not
    (an independent shift per school x wave cell of the same size)."""
    from omlbayes.criticism import ppc
    from omlbayes.data.ingest import read_survey

    frame = build_index(read_survey(small_survey).frame).frame
    spec = load_spec("full")
    layout = build_layout(frame, spec)
    post = xr.open_datatree(default_run / "posterior.nc", engine="h5netcdf")["posterior"]
    post = post.to_dataset()
    kwargs = {"seed": 1, "min_cell_n": 10, "breakdown_columns": ["gender"]}
    name = "ppc_school_drift_persistence"
    own, pvalues = ppc.posterior_predictive_checks(frame, layout, spec, post, **kwargs)
    assert own[name]["passed"] and own[name]["advisory"] and own[name]["one_sided"]
    assert pvalues[name].size == 1
    rng = np.random.default_rng(3)
    school = frame["school_id"].astype(str).factorize()[0]
    position = frame["wave"].cat.codes.to_numpy()
    slope = rng.standard_normal(school.max() + 1)
    persistent = 0.25 * slope[school] * (position - 3)
    cells = frame[["school_id", "wave"]].astype(str).agg(":".join, axis=1).factorize()[0]
    independent = persistent.std() * rng.standard_normal(cells.max() + 1)[cells]
    flagged, _ = ppc.posterior_predictive_checks(
        frame.assign(index=frame["index"] + persistent), layout, spec, post, **kwargs
    )
    assert not flagged[name]["passed"]
    assert flagged[name]["most_extreme"][0]["p"] < ppc.ALPHA / 2
    shuffled, _ = ppc.posterior_predictive_checks(
        frame.assign(index=frame["index"] + independent), layout, spec, post, **kwargs
    )
    assert shuffled[name]["most_extreme"][0]["p"] > 0.05
    gate = ppc.add_to_gate({"checks": {"r_hat_below_1_01": True}, "passed": True}, flagged)
    assert name not in gate["checks"] and gate["ppc"][name]["passed"] is False
