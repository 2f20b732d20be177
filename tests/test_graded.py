"""The graded-response model: kernel value and gradients, the compiled graph, exact
conditional draws, recovery on simulated data, and a cross-check against a plain PyMC
model with every coefficient explicit (``statistical``)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.stats import multivariate_normal, norm

from omlbayes.backends.graded import (
    GradedData,
    MeasurementSettings,
    build_model,
    draw_latent_coefficients,
    graded_data,
    latent_prior_variances,
)
from omlbayes.backends.graded_kernel import graded_logp
from omlbayes.data.scale import build_index
from omlbayes.model.design import build_layout
from omlbayes.model.spec import load_spec
from omlbayes.simulate.survey import simulate_survey

ITEMS = tuple(f"item_{k}" for k in range(1, 7))


def _toy(seed: int = 0, n: int = 25, p: int = 5, n_items: int = 3, n_cut: int = 4):
    rng = np.random.default_rng(seed)
    dense = (rng.random((n, p)) < 0.5).astype(float)
    dense[:, 0] = 1.0
    w = sp.csr_matrix(dense)
    shift = dense.mean(axis=0)
    shift[0] = 0.0
    centred = dense - shift
    student = np.repeat(np.arange(n), n_items)
    item = np.tile(np.arange(n_items), n)
    keep = rng.random(student.size) > 0.2  # some answers missing
    params = {
        "theta": rng.normal(size=n),
        "z": rng.normal(size=n),
        "cut": np.sort(rng.normal(scale=1.5, size=(n_items, n_cut)), axis=1),
        "loading": rng.uniform(0.5, 2.0, n_items),
        "log_lam": rng.normal(scale=0.4, size=p),
    }
    data = (
        w.indptr.astype(np.int64),
        w.indices.astype(np.int64),
        w.data,
        shift,
        centred.T @ centred,
        student[keep].astype(np.int64),
        item[keep].astype(np.int64),
        rng.integers(0, n_cut + 1, int(keep.sum())).astype(np.int64),
    )
    return params, data, centred


def _call(params: dict, data: tuple):
    return graded_logp(
        params["theta"], params["z"], params["cut"], params["loading"], params["log_lam"], *data
    )


def test_value_matches_ordinal_probit_plus_dense_gaussian():
    params, data, centred = _toy()
    student, item, cat = data[5], data[6], data[7]
    cut = params["cut"]
    edges = np.column_stack([np.full(len(cut), -np.inf), cut, np.full(len(cut), np.inf)])
    eta = params["loading"][item] * params["z"][student]
    items = np.log(norm.cdf(edges[item, cat + 1] - eta) - norm.cdf(edges[item, cat] - eta)).sum()
    cov = np.eye(len(params["theta"])) + centred @ np.diag(np.exp(params["log_lam"])) @ centred.T
    latent = multivariate_normal(np.zeros(len(cov)), cov).logpdf(params["theta"])
    assert float(_call(params, data)[0]) == pytest.approx(items + latent, rel=1e-10)


def test_gradients_match_finite_differences():
    params, data, _ = _toy(seed=3)
    grads = dict(zip(params, _call(params, data)[1:], strict=True))
    h = 1e-6
    for name, value in params.items():
        numeric = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            up, down = dict(params), dict(params)
            up[name], down[name] = value.copy(), value.copy()
            up[name][idx] += h
            down[name][idx] -= h
            numeric[idx] = (float(_call(up, data)[0]) - float(_call(down, data)[0])) / (2 * h)
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-5, atol=1e-6, err_msg=name)


def test_tiny_probabilities_keep_the_exact_sum_of_logs():
    """Answers with probabilities far below 1e-20 (logged one by one) among ordinary ones
    (multiplied before the log): the total is still the exact sum of the log probabilities."""
    params, data, _ = _toy(seed=5, n=40)
    params["z"] = params["z"] * 8.0  # some answers become very unlikely (below 1e-20)
    student, item, cat = data[5], data[6], data[7]
    cut = params["cut"]
    eta = params["loading"][item] * params["z"][student]
    top = cut.shape[1]
    upper = np.where(cat < top, cut[item, np.minimum(cat, top - 1)] - eta, np.inf)
    lower = np.where(cat > 0, cut[item, np.maximum(cat - 1, 0)] - eta, -np.inf)
    # log(Phi(u) - Phi(l)) in whichever tail keeps it accurate
    upper_tail = lower > 0
    with np.errstate(divide="ignore"):  # np.where evaluates the branch it does not keep
        logp = np.where(
            upper_tail,
            norm.logsf(lower) + np.log1p(-np.exp(norm.logsf(upper) - norm.logsf(lower))),
            norm.logcdf(upper) + np.log1p(-np.exp(norm.logcdf(lower) - norm.logcdf(upper))),
        )
    assert logp.min() < np.log(1e-20)  # the direct-log path is exercised
    from omlbayes.backends.graded_kernel import item_logp

    value = item_logp(params["z"], cut, params["loading"], student, item, cat)[0]
    assert value == pytest.approx(logp.sum(), rel=1e-10)


def test_extreme_point_gives_minus_inf_not_nan():
    params, data, _ = _toy(seed=4)
    params["z"] = params["z"] * 1e3  # answer probabilities underflow
    assert float(_call(params, data)[0]) == -np.inf


@pytest.fixture(scope="module")
def small():
    """300 simulated students, analysed as the workflow does."""
    sim = simulate_survey(n_students=300, n_schools=10, seed=21)
    scaled = build_index(sim.frame)
    frame = scaled.frame.assign(age_c=lambda f: f["age"] - f["age"].mean())
    spec = load_spec("graded").with_sampler(draws=300, tune=300, chains=2)
    layout = build_layout(frame, spec)
    return sim, frame, spec, layout


@pytest.mark.slow
def test_compiled_model_gradient_and_numba_mode(small):
    """The whole graph (transforms, standardization of theta, the Op): the numba-compiled
    log density equals the Python one, and its gradient matches finite differences."""
    import pytensor

    _, frame, spec, layout = small
    data = graded_data(frame, layout, ITEMS)
    model = build_model(data, layout, spec, MeasurementSettings(items=ITEMS))
    point = model.initial_point()
    rng = np.random.default_rng(0)
    point = {k: v + 0.1 * rng.normal(size=np.shape(v)) for k, v in point.items()}
    point["theta_u"] = rng.normal(size=data.n)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*object mode.*")
        logp_numba = model.compile_logp(mode="NUMBA")
        dlogp_numba = model.compile_dlogp(mode="NUMBA")
    logp_py = model.compile_logp(mode=pytensor.compile.mode.Mode(linker="py"))
    assert logp_numba(point) == pytest.approx(logp_py(point), rel=1e-10)
    grad = dlogp_numba(point)
    names = [v.name for v in model.value_vars]
    sizes = [np.size(point[n]) for n in names]
    flat = np.concatenate([np.ravel(point[n]) for n in names])
    pick = np.r_[0:3, sizes[0] : sizes[0] + 40]  # some thetas and every other parameter

    def at(vector):
        out, start = {}, 0
        for name, size in zip(names, sizes, strict=True):
            out[name] = vector[start : start + size].reshape(np.shape(point[name]))
            start += size
        return logp_numba(out)

    h = 1e-6
    for k in pick[pick < flat.size]:
        up, down = flat.copy(), flat.copy()
        up[k] += h
        down[k] -= h
        assert grad[k] == pytest.approx((at(up) - at(down)) / (2 * h), rel=1e-4, abs=1e-5)


@pytest.mark.slow
def test_conditional_draws_are_the_exact_gaussian(small):
    """Given theta and the SDs, b ~ N(M^-1 W~'theta, M^-1) (centred design), mapped back to
    the uncentred Intercept: mean and covariance of many draws match the dense formula."""
    _, frame, spec, layout = small
    data: GradedData = graded_data(frame, layout, ITEMS)
    rng = np.random.default_rng(5)
    theta_one = rng.normal(size=data.n)
    n_draw = 4000
    theta = np.broadcast_to(theta_one, (1, n_draw, data.n))
    taus = [np.full((1, n_draw), 0.3) for _ in layout.group_terms]
    draws = draw_latent_coefficients(theta, taus, data, layout, spec, seed=1)[0]
    var = latent_prior_variances(layout, spec, data.n)
    var = np.concatenate([var] + [np.full(t.size, 0.09) for t in layout.group_terms])
    w = data.w.toarray() - data.shift
    cov = np.linalg.inv(w.T @ w + np.diag(1.0 / var))
    mean = cov @ (w.T @ theta_one)
    back = np.eye(len(mean))
    back[0] -= data.shift  # b0 = b0' - shift . b
    mean, cov = back @ mean, back @ cov @ back.T
    se = np.sqrt(np.diag(cov) / n_draw)
    assert np.max(np.abs(draws.mean(axis=0) - mean) / se) < 5.0
    sd_ratio = draws.std(axis=0) / np.sqrt(np.diag(cov))
    assert np.all(np.abs(sd_ratio - 1.0) < 0.1)


def _true_item_parameters(sim, frame) -> tuple[np.ndarray, np.ndarray]:
    """The simulator's loadings and cutpoints on the standardized latent of the kept rows."""
    p = sim.params
    theta = sim.latent[frame.index.to_numpy()]
    m, s = theta.mean(), theta.std(ddof=1)
    lam, noise = np.asarray(p.item_loadings), np.asarray(p.item_noise_sd)
    cuts = np.asarray(p.item_cutpoints)
    return lam * s / noise, (cuts - (lam * m)[:, None]) / noise[:, None]


@pytest.mark.slow
def test_small_fit_recovers_item_parameters(small_fit):
    fit, sim, frame = small_fit.fit, small_fit.sim, small_fit.frame
    post = fit.tree["posterior"]
    true_a, true_c = _true_item_parameters(sim, frame)
    for name, truth in (("loadings", true_a), ("cutpoints", true_c)):
        mean = post[name].mean(("chain", "draw")).to_numpy()
        sd = post[name].std(("chain", "draw")).to_numpy()
        z = np.abs(mean - truth) / sd
        assert np.all(z < 4.0), (name, z)
    assert fit.info["scale"] == "latent"
    # the coefficients are in SD units of the latent values: the residual SD is 1 / SD
    np.testing.assert_allclose(post["sigma"] * post["latent_sd"], 1.0)


# ---- statistical tier (logic in omlbayes.validation.graded, also run by make validate) ---


@pytest.mark.statistical
def test_collapsed_route_agrees_with_plain_pymc_model():
    """Same posterior by two routes on 1,500 students: item parameters, latent SD, group SDs,
    standardized common effects and adjusted wave effects agree to a fraction of a posterior
    SD, and both fits pass the diagnostics gate."""
    from omlbayes.validation import graded as gv

    table, run = gv.crosscheck()
    print(gv.crosscheck_summary(table).to_string(), run)
    assert gv.crosscheck_verdict(table, run)


@pytest.fixture(scope="module")
def small_fit():
    """One short fit of 600 simulated students, shared by the make-test recovery checks."""
    from omlbayes.validation import graded as gv

    spec = gv.graded_spec(draws=250, tune=250)
    return gv.latent_recovery(seed=41, n_students=600, n_schools=12, spec=spec)


@pytest.mark.slow
def test_small_fit_covers_the_latent_truth(small_fit):
    """Make-test tier: 600 students, short chains; the overall and single-breakdown wave
    effects on the latent scale cover the simulator's latent truth at about the nominal
    rate (a wrong scale or sign would miss most of them)."""
    table = small_fit.rows
    table = table[(table["kind"] == "effect") & ~table["breakdown"].str.contains(" x ")]
    rate = float(table["covered"].mean())
    print(f"latent-truth coverage (small fit, {len(table)} effects): {rate:.3f}")
    assert len(table) > 20
    assert rate >= 0.8


@pytest.mark.statistical
def test_latent_truth_recovered_with_nominal_coverage():
    """Recovery study: three simulated surveys of 4,000 students; every adjusted wave
    effect and wave contrast with n >= 10 against the latent truth. Coverage of the 95%
    intervals is close to nominal (a fit failing the gate counts as misses)."""
    from omlbayes.validation import graded as gv

    rows, fits = gv.recovery_study()
    summary = gv.recovery_summary(rows, fits)
    print(summary.to_string())
    assert gv.recovery_verdict(summary)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace('link = "probit"', 'link = "logit"'), "link must be 'probit'"),
        (lambda t: t.replace("cutpoint_sigma = 3.0", "cutpoint_sigma = -1"), "positive"),
        (lambda t: t.replace("\nitems = ", "\nwidth = 3\nitems = "), "unknown keys"),
        (lambda t: t.replace('family = "graded"', 'family = "gaussian"'), "graded' models only"),
        (
            lambda t: t.replace(
                'items = ["item_1", "item_2", "item_3", "item_4", "item_5", "item_6"]', ""
            ),  # fmt: skip
            "needs [measurement] with items",
        ),
    ],
)
def test_bad_measurement_section_is_one_clear_error(tmp_path, edit, message):
    from omlbayes.errors import SpecError
    from omlbayes.resources import models_dir

    text = (models_dir() / "graded.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(edit(text))
    with pytest.raises(SpecError, match=message.replace("[", r"\[")):
        load_spec(bad)


# ---- a graded run end to end (scripts/fit.py, report, compare.py) ----------------------


@pytest.fixture(scope="module")
def graded_run(small_survey, tmp_path_factory):
    """``scripts/fit.py --model graded`` on the small survey (short chains, seed 3)."""
    from conftest import run_script

    out = tmp_path_factory.mktemp("graded_runs")
    result = run_script(
        "fit.py", "--model", "graded", "--data", str(small_survey), "--draws", "150",
        "--tune", "150", "--chains", "2", "--no-progress", "--seed", "3", "--out", str(out),
        "--name", "graded", "--allow-failed", "--lang", "en",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "graded", result


@pytest.mark.slow
def test_graded_run_prints_its_main_contrasts(graded_run):
    """The terminal summary lists every wave comparison of the spec with the numbers of
    contrasts.csv (the overall breakdown, on the latent scale)."""
    path, result = graded_run
    contrasts = pd.read_csv(path / "contrasts.csv", dtype={"wave": str, "reference": str})
    overall = contrasts[(contrasts.breakdown == "overall") & (contrasts.kind == "spec_pair")]
    lines = result.stdout.splitlines()
    head = [k for k, line in enumerate(lines) if line.startswith("Main contrasts")]
    assert len(head) == 1, result.stdout[-2000:]
    printed = [line.strip() for line in lines[head[0] + 1 :] if line.startswith("  ")]
    pairs = [tuple(map(str, p)) for p in load_spec("graded").wave_contrasts]
    assert len(printed) == len(pairs)
    for wave, ref in pairs:
        row = overall[(overall.wave == wave) & (overall.reference == ref)].iloc[0]
        expected = f"{wave} vs {ref}: {row['mean']:+.3f} [{row['lower']:+.3f}, {row['upper']:+.3f}]"
        assert any(line.startswith(expected) for line in printed), (expected, printed)
    assert "latent" in lines[head[0]]


@pytest.mark.slow
def test_graded_report_methods_describe_the_measurement_model(graded_run):
    path, _ = graded_run
    page = (path / "report.html").read_text(encoding="utf-8")
    methods = page[page.index("id='methods'") :]
    assert "graded response, probit link" in methods
    assert "item_1, item_2, item_3, item_4, item_5, item_6" in methods
    assert "SD units of the latent trait" in methods
    assert "theta ~ 1 + wave" in methods and "index ~ 1 + wave" not in methods
    assert "Gaussian on the standardised index" not in methods


@pytest.mark.slow
def test_compare_graded_and_index_runs_shows_each_scale(graded_run, small_run, tmp_path):
    """compare.py of a graded run and an index run: the same contrasts side by side, each
    labelled with its run's scale (run.json fit.scale); no LOO across different responses."""
    from conftest import run_script

    graded, _ = graded_run
    index, _ = small_run
    result = run_script("compare.py", str(graded), str(index), "--out", str(tmp_path / "cmp"))
    assert result.returncode == 0, result.stderr
    side = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    assert set(side["scale__graded"]) == {"latent"}
    assert set(side["scale__flagship"]) == {"index"}
    g = pd.read_csv(graded / "contrasts.csv")
    row = side[(side.breakdown == "overall") & (side.kind == "spec_pair")].iloc[0]
    match = g[(g.breakdown == "overall") & (g.wave == row.wave) & (g.reference == row.reference)]
    assert row["mean__graded"] == pytest.approx(match["mean"].iloc[0])
    assert not (tmp_path / "cmp" / "loo_comparison.csv").exists()
    page = (tmp_path / "cmp" / "comparison.html").read_text()
    assert "SD units of the latent trait (graded measurement model)" in page
    assert "SD units of the standardized index" in page
    assert "model different responses" in page


def test_polar_theta_keeps_the_density_of_theta():
    """theta = r u / |u|: with a standard normal density on theta, the log density in
    (u, log r) is that density at theta, plus n log r (the Jacobian), plus N(u; 0, I), so
    log r has the log-chi_n density of |theta| and theta is unchanged."""
    import pymc as pm

    from omlbayes.backends.graded import polar_theta, polar_to_theta

    n = 7
    with pm.Model(coords={"student": np.arange(n)}) as model:
        theta = polar_theta(n)
        pm.Potential("standard_normal", -0.5 * (theta**2).sum())
    logp = model.compile_logp(sum=True)
    rng = np.random.default_rng(1)
    u = rng.normal(size=n)
    for log_r in (-1.0, 0.3, 1.2):
        value = logp({"theta_u": u, "theta_log_norm": np.array(log_r)})
        expected = -0.5 * np.exp(2 * log_r) + n * log_r - 0.5 * u @ u - n / 2 * np.log(2 * np.pi)
        assert value == pytest.approx(expected, rel=1e-12)
        theta_value = polar_to_theta(u, np.array(log_r))
        assert np.linalg.norm(theta_value) == pytest.approx(np.exp(log_r))
        assert theta_value / np.linalg.norm(theta_value) == pytest.approx(u / np.linalg.norm(u))


def _fake_graded_fit(n: int, n_items: int, seed: int = 0):
    """A GradedFit with random draws (no sampling): enough for the item-check tables."""
    import xarray as xr

    from omlbayes.backends.graded import GradedFit

    rng = np.random.default_rng(seed)
    cut = np.sort(rng.normal(scale=1.2, size=(2, 50, n_items, 4)), axis=-1)
    return GradedFit(
        tree=xr.DataTree(),
        theta=rng.normal(size=(2, 50, n)),
        cutpoints=cut,
        loadings=rng.uniform(0.8, 1.5, (2, 50, n_items)),
        timings={},
        info={},
    )


def test_item_tables_follow_the_run_interval_and_threshold():
    """item_ppc.csv and dif.csv: a group answered by fewer than min_cell_n students has no
    count and no values; the bounds are the run's interval (an 80% one is narrower than a
    95% one on the same replications); DIF flags only outside the run's tails."""
    from omlbayes.pipeline.graded_run import dif_table, item_ppc_table
    from omlbayes.results.options import OutputOptions

    n, items = 400, ("item_1", "item_2", "item_3")
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({item: rng.integers(1, 6, n).astype(float) for item in items})
    frame.loc[rng.random(n) < 0.1, "item_2"] = np.nan
    frame["wave"] = rng.choice(["2014", "2016"], n)
    frame["gender"] = np.where(np.arange(n) < 12, "x", rng.choice(["boy", "girl"], n))
    frame["school_type"] = "havo"
    fit = _fake_graded_fit(n, len(items))
    settings = MeasurementSettings(items=items)
    tables = {}
    for prob in (0.8, 0.95):
        options = OutputOptions(prob=prob, interval="hdi", min_cell_n=15)
        tables[prob] = (
            item_ppc_table(frame, fit, settings, seed=3, options=options),
            dif_table(frame, fit, settings, seed=3, options=options),
        )
    for table in tables[0.8]:
        small = table[table.group == "x"]
        assert len(small) and small.suppressed.all()
        assert small.n.isna().all() and small[["lower", "upper", "ppp"]].isna().all().all()
        shown = table[table.group != "x"]
        assert not shown.suppressed.any() and (shown.n >= 15).all()
    ppc80, dif80 = tables[0.8]
    ppc95 = tables[0.95][0]
    width80 = (ppc80.upper - ppc80.lower)[~ppc80.suppressed]
    width95 = (ppc95.upper - ppc95.lower)[~ppc95.suppressed]
    assert (width80 <= width95 + 1e-12).all() and (width80 < width95).mean() > 0.5
    shown = dif80[~dif80.suppressed]
    assert (shown.flagged == ((shown.ppp < 0.1) | (shown.ppp > 0.9))).all()
    assert not dif80[dif80.suppressed].flagged.any()


# ---- the default's structure on the latent trait (models/graded_full.toml) ---------------


def test_graded_full_has_the_default_terms_and_refuses_what_it_cannot_fit(small, tmp_path):
    """graded_full: the default's school x wave and three-way terms are free group SDs of
    the graded model (not dropped); one residual SD per group and folded SDs are refused
    with one line, in the spec file and on a spec built in code."""
    from dataclasses import replace

    from omlbayes.errors import SpecError
    from omlbayes.pipeline.graded_run import check_graded_spec, settings_of
    from omlbayes.pipeline.survey_run import check_backend
    from omlbayes.resources import models_dir

    _, frame, _, _ = small
    full, graded_full = load_spec("full"), load_spec("graded_full")
    assert set(full.group) == set(graded_full.group)  # school x wave and every three-way term
    layout = build_layout(frame, graded_full)
    model = build_model(
        graded_data(frame, layout, ITEMS), layout, graded_full, settings_of(graded_full)
    )
    free = {v.name for v in model.free_RVs}
    for term in ("school_id:wave", "wave:gender:school_type", "wave:parent_edu:region"):
        assert f"1|{term}_sigma" in free, term
    check_graded_spec(graded_full)
    with pytest.raises(SpecError, match="cannot fit residual_sd_by = 'school_type'") as err:
        check_backend(replace(graded_full, residual_sd_by="school_type"))
    assert "\n" not in str(err.value)
    with pytest.raises(SpecError, match="log scale only"):
        check_backend(graded_full.with_sampler(sd_parameterization="folded"))
    text = (models_dir() / "graded_full.toml").read_text()
    path = tmp_path / "bad.toml"
    path.write_text(
        text.replace(
            "school_by_wave = true", 'school_by_wave = true\nresidual_sd_by = "school_type"'
        )
    )
    with pytest.raises(SpecError, match="graded model cannot fit residual_sd_by"):
        load_spec(path)
    # the report's Methods text names the extra terms (from the run record's spec)
    import json
    from types import SimpleNamespace

    from omlbayes import labels
    from omlbayes.report.page import _model_text

    record = SimpleNamespace(spec=json.loads(json.dumps(graded_full.to_dict(), default=str)))
    text = _model_text(labels.REPORT_TEXT["en"], record, "en")
    assert "school x wave" in text and "gender x school type" in text.lower()
    plain = SimpleNamespace(spec=json.loads(json.dumps(load_spec("graded").to_dict(), default=str)))
    assert "school x wave" not in _model_text(labels.REPORT_TEXT["en"], plain, "en")


@pytest.mark.slow
def test_school_by_wave_term_passes_the_drift_check():
    """A survey whose schools drift between waves (school x wave SD 0.3): the graded model
    with the flagship's terms fails the school x wave spread check (p = 0); with the school
    x wave term it passes it and the term's SD is clearly above 0."""
    from omlbayes.backends.graded import fit_graded
    from omlbayes.criticism import ppc
    from omlbayes.pipeline.graded_run import settings_of
    from omlbayes.pipeline.survey_run import with_school_by_wave
    from omlbayes.simulate.survey import SimulationParams

    sim = simulate_survey(
        n_students=3000, n_schools=20, seed=7, params=SimulationParams(school_wave_sd=0.3)
    )
    frame = build_index(sim.frame).frame
    spread, school_wave_sd = {}, None
    for with_term in (False, True):
        spec = load_spec("graded").with_sampler(draws=250, tune=250, chains=2)
        spec = with_school_by_wave(spec, with_term)
        layout = build_layout(frame, spec)
        fit = fit_graded(frame, layout, spec, settings_of(spec), seed=3, progressbar=False)
        post = fit.tree["posterior"].to_dataset()
        _, pvalues = ppc.posterior_predictive_checks(
            frame, layout, spec, post, seed=3, min_cell_n=10, breakdown_columns=["gender"]
        )
        spread[with_term] = float(pvalues["ppc_cell_dispersion"][0])  # school x wave first
        if with_term:
            school_wave_sd = post["1|school_id:wave_sigma"]
    print(f"school x wave spread p-value: without the term {spread[False]}, with {spread[True]}")
    assert spread[False] < ppc.ALPHA / 2 < spread[True]
    assert float(school_wave_sd.quantile(0.05)) > 0.1
