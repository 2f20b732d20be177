"""Simulation-based calibration of the default model as users fit it.

One survey design from the simulator (students, schools, waves, covariates) is kept; per
simulation every parameter of the default model is drawn from its prior (a residual SD
per school type, one SD per group term: the school x wave cells, the three-way cells), the
coefficients from those, and the index from the model. The survey is then fitted by the
fit path of ``scripts/fit.py`` (``survey_run.fit_frame``: kernel choice, folded SDs where
``auto`` picks them, nutpie, draws sized to the diagnostics gate). The rank of each true
value among ``N_RANK`` draws spread evenly over the kept draws is uniform when the
posterior is calibrated (Talts et al. 2018). Ranked: every variance parameter, the
intercept, and the adjusted means per wave overall and by gender (a new school's,
``schools="any"``). A fit that fails the gate is kept in the ranks and counted.

The tests are those of the flagship's SBC (``studies.sbc_tests``, ``sbc_spread_test``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from omlbayes.validation import studies

SIZE = (1_500, 20)
QUICK_SIZE = (600, 10)
N_SIMS = 60
N_RANK = 99  # ranks 0..99: 100 equal bins of width 1
ROWS = "sbc_default_ranks.csv"
TESTS = "sbc_default_tests.csv"
PLOT = "sbc_default_ranks.png"
# columns of a rows file that are not ranks
BOOKKEEPING = ("gate_passed", "draws_per_chain", "fit_s", "method")


def _design(size: tuple[int, int], seed: int):
    from omlbayes.data import scale
    from omlbayes.model import design, estimands
    from omlbayes.model.spec import load_spec
    from omlbayes.simulate import survey as simulate

    spec = load_spec("full")
    sim = simulate.simulate_survey(n_students=size[0], n_schools=size[1], seed=seed)
    frame = scale.build_index(sim.frame).frame
    layout = design.build_layout(frame, spec)
    gcomp = estimands.gcomp_weights(frame, layout, spec)
    keep = (gcomp["wave"].to_numpy() != estimands.ALL_WAVES) & np.isin(
        gcomp["breakdown"].to_numpy(), ["overall", "gender"]
    )
    names = [
        f"effect[{b}:{g}:{w}]"
        for b, g, w in zip(
            gcomp["breakdown"].to_numpy()[keep],
            gcomp["group"].to_numpy()[keep],
            gcomp["wave"].to_numpy()[keep],
            strict=True,
        )
    ]
    return spec, frame, layout, design.design_matrix(frame, layout), gcomp, keep, names


def _prior_draw(spec, layout, frame, rng) -> tuple[dict, np.ndarray, np.ndarray]:
    """(true variance parameters, coefficients, each row's residual SD) from the priors."""
    groups = frame[spec.residual_sd_by].astype(str).to_numpy()
    levels = sorted(set(groups))
    sigma_prior = spec.prior_for("sigma", "sigma")
    sigmas = dict(zip(levels, sigma_prior.sample(len(levels), rng), strict=True))
    truth = {f"sigma[{g}]": float(s) for g, s in sigmas.items()}
    taus, b = studies.prior_coefficients(spec, layout, rng)
    truth.update(taus)
    truth["Intercept"] = float(b[0])
    return truth, b, np.array([sigmas[g] for g in groups])


def _spread(post: xr.Dataset) -> xr.Dataset:
    """``N_RANK`` draws spread evenly over all kept draws, as one chain."""
    n_total = post.sizes["chain"] * post.sizes["draw"]
    picks = np.linspace(0, n_total - 1, N_RANK).round().astype(int)
    sub = post.stack(sample=("chain", "draw")).isel(sample=picks)
    sub = sub.drop_vars(["sample", "chain", "draw"]).rename(sample="draw")
    return sub.expand_dims("chain").transpose("chain", "draw", ...)


def _values(sub: xr.Dataset, name: str) -> np.ndarray:
    """The draws of a variable named ``name`` or ``name[label]``."""
    base, _, label = name.partition("[")
    da = sub[base]
    if label:
        dim = next(d for d in da.dims if d not in ("chain", "draw"))
        da = da.sel({dim: label.rstrip("]")})
    return da.to_numpy().reshape(-1)


def _rank_columns(ranks: pd.DataFrame) -> pd.DataFrame:
    """The ranks of a rows file, without its bookkeeping columns."""
    return ranks.drop(columns=[c for c in BOOKKEEPING if c in ranks])


def run_sbc(
    out: Path,
    *,
    n_sims: int = N_SIMS,
    size: tuple[int, int] = SIZE,
    seed: int = 11,
    log=print,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ranks per simulation (appended to ``out/ROWS`` after each fit: resumable) and tests."""
    from omlbayes.backends.sampling import derived_seed
    from omlbayes.criticism import diagnose
    from omlbayes.model import estimands
    from omlbayes.pipeline import survey_run

    spec, frame, layout, w, gcomp, keep, effect_names = _design(size, seed)
    weights = gcomp["weights"].to_numpy()[keep]
    path = out / ROWS
    done = set(pd.read_csv(path)["sim"]) if path.exists() else set()
    for k in range(n_sims):
        rng = np.random.default_rng([seed, k])  # the truth of simulation k, resumable
        truth, b, row_sigma = _prior_draw(spec, layout, frame, rng)
        if k in done:
            continue
        y = w @ b + row_sigma * rng.standard_normal(w.shape[0])
        data = frame.assign(**{spec.response: y})
        t = time.perf_counter()
        fitted = survey_run.fit_frame(data, spec, seed=derived_seed(seed, f"sbc_default/{k}"))
        fit_s = time.perf_counter() - t
        post = fitted.tree["posterior"].to_dataset()
        diag = diagnose.check(fitted.tree)
        rec = {"sim": k, "divergences": int(diag["divergences"])}
        sub = _spread(post)
        for name, true in truth.items():
            rec[name] = int((_values(sub, name) < true).sum())
        coefs = estimands.coefficient_draws(sub, layout.coef_names, seed=k).to_numpy()
        eff = coefs.reshape(-1, layout.n_coef) @ weights.T
        for j, name in enumerate(effect_names):
            rec[name] = int((eff[:, j] < weights[j] @ b).sum())
        method = fitted.fit.get("sampling", {}).get("method", "nuts")
        facts = (bool(diag["passed"]), int(post.sizes["draw"]), round(fit_s, 1), method)
        rec |= dict(zip(BOOKKEEPING, facts, strict=True))
        studies._append_csv(path, pd.DataFrame([rec]))
        log(
            f"sbc default {k + 1}/{n_sims}: {fit_s:.0f}s ({method}), "
            f"gate {'pass' if diag['passed'] else 'FAIL'}"
        )
    ranks = pd.read_csv(path)
    rank_cols = _rank_columns(ranks)
    return ranks, studies.sbc_tests(rank_cols, n_draws=N_RANK)


def _methods(ranks: pd.DataFrame) -> str:
    """'importance in 52, nuts in 8 fits' (fits before the column: nuts)."""
    col = ranks["method"] if "method" in ranks else pd.Series("nuts", index=ranks.index)
    counts = col.fillna("nuts").value_counts()
    return ", ".join(f"{m} in {c}" for m, c in counts.items()) + " fits"


def report_section(out: Path, verdicts: dict, md) -> list[str]:
    """The section of validation.md (empty when the study has not run)."""
    if not (out / ROWS).exists():
        return []
    ranks = pd.read_csv(out / ROWS)
    rank_cols = _rank_columns(ranks)
    tests = studies.sbc_tests(rank_cols, n_draws=N_RANK)
    tests.to_csv(out / TESTS, index=False)
    studies._plot_sbc(rank_cols, tests, out / PLOT, title="SBC of the default model (full)")
    t, p_spread = studies.sbc_spread_test(
        studies.sbc_spread(rank_cols, n_draws=N_RANK), n_draws=N_RANK
    )
    complete = len(ranks) >= N_SIMS
    gate_failures = int((~ranks["gate_passed"].astype(bool)).sum())
    passed = (
        studies.sbc_uniform(tests) and p_spread >= studies.SBC_POWER_ALPHA and gate_failures == 0
    )
    verdicts["sbc_default"] = passed if complete else None
    n, m = SIZE
    return [
        "## Simulation-based calibration of the default model, as users fit it (issue #26)",
        "",
        f"{len(ranks)} simulations (`validation/sbc_default.py`). Design: one simulated "
        f"survey's students, schools, waves and covariates ({n:,} students, {m} schools); per "
        "simulation every parameter of the default model `full` drawn from its priors (a "
        "residual SD per school type, the SD of every group term including the school x "
        "wave and three-way cells, the coefficients given them), the index simulated from "
        "the model, and the survey fitted by the fit path of `scripts/fit.py` "
        "(`survey_run.fit_frame`: kernel choice, folded SDs where `auto` picks them, "
        "importance sampling where its gate passes and nutpie with the default's warm-up "
        "where not, draws sized to the gate; variance parameters sampled by "
        f"{_methods(ranks)}). Rank of each truth among "
        f"{N_RANK} draws spread evenly over the kept draws. Fits that failed the gate: "
        f"{gate_failures}; divergent transitions over all fits: "
        f"{int(ranks['divergences'].sum())}; draws kept per chain: "
        f"{int(ranks['draws_per_chain'].min())}-{int(ranks['draws_per_chain'].max())}; "
        f"seconds per fit: median {ranks['fit_s'].median():.0f}.",
        "",
        md(tests),
        "",
        f"{studies.sbc_rule_text(tests)}; the spread test (too narrow or too wide posteriors "
        f"over all quantities): t = {t:+.2f}, p = {p_spread:.3f}. Criterion: every p-value "
        f"above the threshold, the spread's >= {studies.SBC_POWER_ALPHA}, no fit failing the "
        "gate (as the flagship's SBC) -> "
        + (
            f"**{'PASS' if passed else 'FAIL'}**"
            if complete
            else f"**INCOMPLETE** ({len(ranks)} of {N_SIMS} simulations)"
        ),
        "",
        f"![sbc default]({PLOT})",
        "",
    ]
