"""The default's sampler against a long reference run: the same posterior, per quantity.

Per seed, a survey of the harder simulator (``simulate.random_truth``: school x wave
variation, a residual SD per school type, three-way cells) is fitted twice by the command
users run (``omlbayes fit``, every stage):

- ``default``: the default model as shipped (its warm-up, draws sized to the gate);
- ``reference``: the same model with 4 chains x (300 warm-up + 4,000 draws), no early stop
  (the sampler settings before the default was made fast).

Compared per quantity: every variance parameter and every contrast a run reports (both
estimands, every kind and breakdown of ``estimand_recovery``). The posterior mean's
difference is in units of the reference's posterior SD; the 95% interval's width is a
ratio; each with its Monte Carlo SE from both runs' chains (arviz-stats' MCSE of the mean
and of the 2.5% and 97.5% quantiles). Criterion (issue #26): every fit through the gate,
every mean within 0.1 SD, and every width within 5%. The last is judged against the Monte
Carlo error: the default keeps about 2,400 draws, so a 95% width's own error is about 2%
and some of a thousand widths fall outside 5% by chance; a width fails when it is beyond
5% by more than 3 SEs, and a seed fails when its widths are off on average (mean ratio
more than 2% from 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from omlbayes.criticism import mcmc_stats
from omlbayes.data import schema
from omlbayes.model.design import variance_names
from omlbayes.validation import estimand_recovery as er

SEEDS = (101, 102, 103)
SIZE = (10_000, 50)
QUICK_SIZE = (2_000, 20)
REFERENCE = {"chains": 4, "tune": 300, "draws": 4000}
MAX_MEAN_SD, MAX_WIDTH = 0.10, 0.05
# a systematic difference in width: a seed's mean ratio over its quantities
MAX_MEAN_WIDTH = 0.02
ROWS, FITS = "agreement_quantities.csv", "agreement_fits.csv"
KEYS = ["seed", "quantity", "estimand", "kind", "breakdown", "group", "wave", "reference"]


def _summaries(seed: int, x: np.ndarray, keys: dict, clusters=None) -> list[dict]:
    """Mean, SD, 95% width and their Monte Carlo SEs of quantities ``x`` (m, chain, draw);
    with ``clusters`` (importance-resampled draws) the SEs count proposals."""
    from arviz_stats.base import array_stats

    lo, hi = np.quantile(x, [0.025, 0.975], axis=(1, 2))
    if clusters is None:
        se_lo = array_stats.mcse(x, method="quantile", prob=0.025)
        se_hi = array_stats.mcse(x, method="quantile", prob=0.975)
        se_mean = array_stats.mcse(x, method="mean")
    else:
        se_lo, se_hi = (_quantile_mcse(x, prob, clusters) for prob in (0.025, 0.975))
        flat = x.reshape(x.shape[0], -1)
        se_mean = flat.std(axis=1, ddof=1) / np.sqrt(mcmc_stats.cluster_ess(x, clusters))
    flat = x.reshape(x.shape[0], -1)
    return [
        {"seed": seed, **{k: v[j] for k, v in keys.items()},
         "mean": float(flat[j].mean()), "sd": float(flat[j].std(ddof=1)),
         "mean_mcse": float(se_mean[j]), "width_95": float(hi[j] - lo[j]),
         "width_mcse": float(np.hypot(se_lo[j], se_hi[j]))}
        for j in range(x.shape[0])
    ]  # fmt: skip


def _quantile_mcse(x: np.ndarray, prob: float, clusters) -> np.ndarray:
    """ArviZ's quantile MCSE with the ESS of the indicator counted over proposals: half
    the distance between the draws' quantiles one SE of the probability either side."""
    flat = x.reshape(x.shape[0], -1)
    q = np.quantile(flat, prob, axis=1)
    ess = mcmc_stats.cluster_ess((x <= q[:, None, None]).astype(float), clusters)
    se_p = np.sqrt(prob * (1 - prob) / ess)
    lo = np.array([np.quantile(f, max(prob - s, 0.0)) for f, s in zip(flat, se_p, strict=True)])
    hi = np.array([np.quantile(f, min(prob + s, 1.0)) for f, s in zip(flat, se_p, strict=True)])
    return (hi - lo) / 2


def _quantities(run, seed: int) -> pd.DataFrame:
    """Every variance parameter and reported contrast of a run: mean, SD, 95% width, and
    the Monte Carlo SE of the mean and of the width (from each chain's draws)."""
    post = run.posterior
    shape = (post.sizes["chain"], post.sizes["draw"])
    clusters = mcmc_stats.proposal_clusters(post)
    rows = []
    for name in variance_names(post.data_vars):
        da = post[name]
        extra = [d for d in da.dims if d not in ("chain", "draw")]
        labels = [str(c) for c in da[extra[0]].to_numpy()] if extra else [""]
        x = da.transpose(*extra, "chain", "draw").to_numpy().reshape(len(labels), *shape)
        keys = {"quantity": "variance", "estimand": "", "kind": str(name), "breakdown": "",
                "group": labels, "wave": "", "reference": ""}  # fmt: skip
        rows += _summaries(seed, x, {k: v if isinstance(v, list) else [v] * len(labels)
                                     for k, v in keys.items()}, clusters)  # fmt: skip
    min_n = run.options.min_cell_n
    for schools in er.ESTIMANDS:
        for columns in er.BREAKDOWNS:
            draws, waves, groups, n = er._flat(
                run.adjusted_means(columns, schools=schools), columns
            )
            defs = [
                (kind, plus, minus)
                for kind, plus, minus in er.contrast_defs(waves, groups, run.record.wave_pairs)
                if min(n[c] for c in plus + minus) >= min_n  # reported cells only
            ]
            if not defs:
                continue
            x = np.stack(
                [
                    sum(draws[:, k, g] for k, g in plus) - sum(draws[:, k, g] for k, g in minus)
                    for _, plus, minus in defs
                ]
            ).reshape(len(defs), *shape)  # draws are stacked chain by chain
            keys = {
                "quantity": ["contrast"] * len(defs),
                "estimand": [schools] * len(defs),
                "kind": [kind for kind, _, _ in defs],
                "breakdown": [schema.breakdown_name(columns)] * len(defs),
                "group": [groups[plus[0][1]] for _, plus, _ in defs],
                "wave": [waves[plus[0][0]] for _, plus, _ in defs],
                "reference": [
                    groups[minus[0][1]] if kind.startswith("gap") else waves[minus[0][0]]
                    for kind, _, minus in defs
                ],
            }
            rows += _summaries(seed, x, keys, clusters)
    return pd.DataFrame(rows)


def compare(default: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Per quantity: the difference of the means in reference SDs and the width ratio, each
    with its Monte Carlo SE (both runs' errors)."""
    m = default.merge(reference, on=KEYS, suffixes=("", "_ref"))
    m["mean_diff_sd"] = (m["mean"] - m["mean_ref"]) / m["sd_ref"]
    m["mean_diff_mcse"] = np.hypot(m["mean_mcse"], m["mean_mcse_ref"]) / m["sd_ref"]
    m["width_ratio"] = m["width_95"] / m["width_95_ref"]
    m["width_ratio_mcse"] = m["width_ratio"] * np.hypot(
        m["width_mcse"] / m["width_95"], m["width_mcse_ref"] / m["width_95_ref"]
    )
    return m


def rescore(out: Path, seeds: tuple[int, ...] = SEEDS) -> pd.DataFrame:
    """The comparison of every seed from its kept run folders (``out/_work/agreement``)."""
    import omlbayes as ob

    work = out / "_work" / "agreement"
    tables = [
        compare(
            _quantities(ob.open_run(work / f"default_{seed}"), seed),
            _quantities(ob.open_run(work / f"reference_{seed}"), seed),
        )
        for seed in seeds
        if (work / f"reference_{seed}").exists()
    ]
    rows = pd.concat(tables, ignore_index=True)
    rows.to_csv(out / ROWS, index=False)
    return rows


def _reusable_reference(folder: Path, data: Path, seed: int, settings: dict, default: Path) -> bool:
    """Whether ``folder`` holds a reference run of this study that a refit would repeat:
    the same data and seed, the model of the ``default`` run (its run.json's spec but for
    the sampler and the spec's file paths) and its sampler with the reference's settings
    (NUTS without importance sampling or early stop: a change to the default's sampler
    leaves it as it was)."""
    import hashlib
    import json

    path = folder / "run.json"
    if not path.exists():
        return False
    record = json.loads(path.read_text(encoding="utf-8"))
    ours = json.loads((default / "run.json").read_text(encoding="utf-8"))

    def model(spec: dict) -> dict:
        return {k: v for k, v in spec.items() if k not in ("sampler", "source", "findings")}

    sampler = {**ours["spec"]["sampler"], **settings, "early_stop": False, "importance": False}
    return (
        record.get("data", {}).get("sha256") == hashlib.sha256(data.read_bytes()).hexdigest()
        and record.get("seed") == seed
        and model(record.get("spec", {})) == model(ours["spec"])
        and record.get("spec", {}).get("sampler") == sampler
    )


def agreement_one(
    seed: int, *, size: tuple[int, int], work: Path, quick: bool = False, reuse: bool = False
):
    """Fit one survey both ways; ``(quantities, fits)``. ``reuse``: keep a reference run
    already in ``work`` where it is the one a refit would make (``_reusable_reference``)."""
    import omlbayes as ob
    from omlbayes.simulate import survey as simulate

    params = simulate.random_truth(seed)
    sim = simulate.simulate_survey(n_students=size[0], n_schools=size[1], seed=seed, params=params)
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"survey_{seed}.csv"
    sim.frame.to_csv(data, index=False)
    ref = REFERENCE if not quick else {"chains": 4, "tune": 100, "draws": 200}
    ref_argv = ["--chains", str(ref["chains"]), "--tune", str(ref["tune"])]
    ref_argv += ["--draws", str(ref["draws"]), "--no-early-stop", "--no-importance"]
    sides = {"default": (seed, []), "reference": (seed + 1000, ref_argv)}
    out, fits = {}, []
    for side, (fit_seed, extra) in sides.items():
        folder = work / f"{side}_{seed}"
        reused = (
            reuse
            and side == "reference"
            and _reusable_reference(folder, data, fit_seed, ref, work / f"default_{seed}")
        )
        if reused:
            run = ob.open_run(folder)
            fit_s = run.record.timings.get("run_total_s", np.nan)
        else:
            run, fit_s = er.fit_as_users(
                data, work, folder.name, seed=fit_seed, extra=tuple(extra),
                what=f"agreement {side}",
            )  # fmt: skip
        out[side] = _quantities(run, seed)
        diag, sampling = run.diagnostics, run.record.fit.get("sampling", {})
        fits.append(
            {"seed": seed, "side": side, "fit_s": round(fit_s, 1),
             "sample_s": round(run.record.timings.get("sample_s", np.nan), 1),
             "diagnostics_passed": bool(diag["passed"]), "max_r_hat": diag["max_r_hat"],
             "min_ess_bulk": diag["min_ess_bulk"], "min_ess_tail": diag["min_ess_tail"],
             "divergences": diag["divergences"], "tune": sampling.get("tune"),
             "draws_per_chain": sampling.get("draws_kept"),
             "leapfrog_steps": sampling.get("leapfrog_steps_total"),
             "method": sampling.get("method", "nuts"),
             "proposals": sampling.get("proposals"), "pareto_k": sampling.get("pareto_k"),
             "git_commit": run.record.git_commit[:7], "reused": reused}
        )  # fmt: skip
    data.unlink(missing_ok=True)
    return compare(out["default"], out["reference"]), pd.DataFrame(fits)


def run_study(
    out: Path,
    *,
    seeds: tuple[int, ...] = SEEDS,
    quick: bool = False,
    reuse_reference: bool = False,
    log=print,
):
    """Fit and compare each seed not yet in ``out`` (resumable); ``reuse_reference``: keep
    the reference runs already in the work folder that a refit would repeat."""
    from omlbayes.validation.studies import _append_csv

    rows_path, fits_path = out / ROWS, out / FITS
    done = set(pd.read_csv(fits_path)["seed"]) if fits_path.exists() else set()
    for seed in seeds[:1] if quick else seeds:
        if seed in done:
            continue
        size = QUICK_SIZE if quick else SIZE
        rows, fits = agreement_one(
            seed, size=size, work=out / "_work" / "agreement", quick=quick, reuse=reuse_reference
        )
        _append_csv(rows_path, rows)
        _append_csv(fits_path, fits)
        log(
            f"agreement seed={seed}: max |mean diff| {rows['mean_diff_sd'].abs().max():.3f} SD, "
            f"widths {rows['width_ratio'].min():.3f}-{rows['width_ratio'].max():.3f}"
        )


def expected_beyond(rows: pd.DataFrame) -> float:
    """How many means would fall beyond ``MAX_MEAN_SD`` by Monte Carlo error alone: the sum
    over quantities of P(|N(0, SE)| > MAX_MEAN_SD), SE the difference's Monte Carlo SE."""
    from scipy.stats import norm

    return float((2 * norm.sf(MAX_MEAN_SD / rows["mean_diff_mcse"])).sum())


def width_off(rows: pd.DataFrame) -> pd.Series:
    """A width shown to differ by more than ``MAX_WIDTH``: beyond it by 3 Monte Carlo SEs."""
    return (rows["width_ratio"] - 1).abs() - 3 * rows["width_ratio_mcse"] > MAX_WIDTH


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per seed and quantity kind: how many, the largest differences, the shares within."""
    rows = rows.assign(
        group_kind=np.where(rows["quantity"] == "variance", "variance", rows["kind"]),
        off=width_off(rows),
    )
    g = rows.groupby(["seed", "group_kind"])
    table = pd.DataFrame(
        {
            "n": g.size(),
            "max_abs_mean_diff_sd": g["mean_diff_sd"].apply(lambda s: s.abs().max()),
            "median_mean_diff_mcse": g["mean_diff_mcse"].median(),
            "mean_width_ratio": g["width_ratio"].mean(),
            "min_width_ratio": g["width_ratio"].min(),
            "max_width_ratio": g["width_ratio"].max(),
            "median_width_ratio_mcse": g["width_ratio_mcse"].median(),
            "share_width_within_5pct": g["width_ratio"].apply(
                lambda s: ((s - 1).abs() <= MAX_WIDTH).mean()
            ),
            "widths_off_by_3_mcse": g["off"].sum(),
        }
    )
    return table.reset_index()


def verdict(rows: pd.DataFrame, fits: pd.DataFrame) -> bool:
    """Every fit through the gate; every mean within ``MAX_MEAN_SD``; no width shown to
    differ by more than ``MAX_WIDTH`` (beyond it by 3 Monte Carlo SEs); and no systematic
    difference in width (a seed's mean ratio within ``MAX_MEAN_WIDTH`` of 1)."""
    mean_ratio = rows.groupby("seed")["width_ratio"].mean()
    return bool(
        fits["diagnostics_passed"].all()
        and (rows["mean_diff_sd"].abs() <= MAX_MEAN_SD).all()
        and not width_off(rows).any()
        and ((mean_ratio - 1).abs() <= MAX_MEAN_WIDTH).all()
    )


def report_section(out: Path, verdicts: dict, md) -> list[str]:
    """The section of validation.md (empty when the study has not run)."""
    if not (out / ROWS).exists():
        return []
    rows, fits = pd.read_csv(out / ROWS), pd.read_csv(out / FITS)
    complete = set(SEEDS) <= set(fits["seed"])
    verdicts["agreement"] = verdict(rows, fits) if complete else None
    by_side = fits.pivot(index="seed", columns="side")
    sample_s = by_side["sample_s"]
    speed = (sample_s["reference"] / sample_s["default"]).mean()
    methods = ", ".join(sorted(set(fits.loc[fits["side"] == "default", "method"].fillna("nuts"))))
    worst = rows.loc[rows["mean_diff_sd"].abs().idxmax()]
    name = (
        worst["kind"]
        if worst["quantity"] == "variance"
        else (" ".join(str(worst[c]) for c in ("estimand", "kind", "breakdown", "group", "wave")))
    )
    worst_z = worst["mean_diff_sd"] / worst["mean_diff_mcse"]
    n_beyond = int((rows["mean_diff_sd"].abs() > MAX_MEAN_SD).sum())
    n, m = SIZE
    return [
        "## The default's sampler against a long reference run (issue #26)",
        "",
        f"{fits['seed'].nunique()} surveys ({n:,} students, {m} schools) from the harder "
        "simulator with random truths (`simulate.random_truth`), each fitted twice by "
        "`omlbayes fit` (`validation/agreement.py`): the default as shipped (its "
        f"variance parameters sampled by: {methods}), and a NUTS reference "
        f"with {REFERENCE['chains']} chains x ({REFERENCE['tune']} warm-up + "
        f"{REFERENCE['draws']:,} draws) and no early stop. Compared: every variance parameter "
        "and every contrast a run reports (both estimands, every kind and breakdown of the "
        "estimand study): the difference of the posterior means in reference posterior SDs, "
        "and the ratio of the 95% intervals' widths, each with its Monte Carlo SE from both "
        "runs' draws (an importance-sampled run's counted over its proposals, "
        "`mcmc_stats.cluster_ess`). Criterion: each fit through the gate; every mean within "
        f"{MAX_MEAN_SD} SD; every width within {MAX_WIDTH:.0%}, judged against its Monte "
        f"Carlo error (a width fails when it is beyond {MAX_WIDTH:.0%} by more than 3 SEs: "
        "a 95% width is itself uncertain by a few per cent, so some of a thousand widths "
        "fall outside 5% by chance), and no systematic difference (a seed's "
        f"mean width ratio within {MAX_MEAN_WIDTH:.0%} of 1). The reference's sampling took "
        f"{speed:.1f}x the default's time.",
        "",
        md(fits),
        "",
        md(summary(rows)),
        "",
        f"{len(rows):,} quantities; the largest difference: {worst['mean_diff_sd']:+.3f} SD "
        f"({name}, seed {int(worst['seed'])}), {worst_z:+.1f} "
        "times its Monte Carlo SE; were both samplers exact with the SEs the runs estimate, "
        f"{expected_beyond(rows):.2f} means would be expected beyond {MAX_MEAN_SD} SD; "
        f"means beyond it: {n_beyond}. Widths within 5%: "
        f"{((rows['width_ratio'] - 1).abs() <= MAX_WIDTH).mean():.1%} of the quantities, "
        f"ratios {rows['width_ratio'].min():.3f}-{rows['width_ratio'].max():.3f} (median Monte "
        f"Carlo SE of a ratio {rows['width_ratio_mcse'].median():.3f}); widths beyond 5% by "
        f"more than 3 SEs: {int(width_off(rows).sum())}. -> "
        + (
            f"**{'PASS' if verdicts['agreement'] else 'FAIL'}**"
            if complete
            else f"**INCOMPLETE** (seeds {', '.join(map(str, SEEDS))} are needed)"
        ),
        "",
    ]
