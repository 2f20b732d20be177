"""Recovery of every kind of contrast a run reports, for both estimands, through the public API.

Per seed: a survey from the harder simulator with its truth drawn at random
(``simulate.random_truth``: school x wave variation, a residual SD per school type,
three-way cells), in four sets (``STRESS_SEEDS``): ``none`` keeps the model's assumptions
about schools and residuals; three stress what the default model lacks: ``drift``
(correlated school drift: each school's school x wave deviations AR(1) over the waves,
correlation ~ Uniform(0.3, 0.8)), ``tails`` (Student-t residuals with 4 degrees of
freedom) and ``ceiling`` (the intercept raised by 1 eta unit, so answers pile up at the top
of the bounded scale). ``none`` tests the estimands' claim and the predictive checks' false
alarms, the stresses what they cost and the checks' power against them.
The default model is fitted by the command users run (``omlbayes fit``, every stage, the
early stop included); the run is opened with ``omlbayes.open_run`` and every contrast is
computed draw by draw from ``Run.adjusted_means`` for a school like any other
(``schools="any"``, truth ``simulate.true_effects``) and for the surveyed schools
(``schools="surveyed"``, truth ``simulate.true_surveyed_effects``).

Kinds, per breakdown and group: ``vs_first`` (each wave minus the first), ``vs_previous``
(minus the wave before, from the third wave on), ``spec_pair`` (the factsheet's pairs not
among those), ``gap`` (a group minus the breakdown's first group, per wave) and
``gap_change`` (a gap's change since the first wave). Cells under the disclosure threshold
are not reported, so not scored. A fit that fails the diagnostics gate counts as a miss
for every contrast.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from omlbayes.data import schema
from omlbayes.results import runs
from omlbayes.simulate import survey as simulate

SIZE = (10_000, 50)
QUICK_SIZE = (2_000, 20)
STRESS_SEEDS = {
    "none": tuple(range(2, 17, 2)),
    "drift": tuple(range(1, 16, 2)),
    "tails": (17, 18, 19, 20),
    "ceiling": (21, 22, 23, 24),
}
SEEDS = tuple(sorted(s for seeds in STRESS_SEEDS.values() for s in seeds))
TAILS_DF, CEILING_SHIFT = 4.0, 1.0
PROBS = (0.50, 0.80, 0.95)
ESTIMANDS = ("any", "surveyed")
KINDS = ("vs_first", "vs_previous", "spec_pair", "gap", "gap_change")
BREAKDOWNS = ((), ("gender",), ("school_type",), ("parent_edu",), ("region",))
BREAKDOWNS += (("gender", "school_type"),)  # a cross breakdown
RHO_RANGE = (0.3, 0.8)
# verdict: 95% intervals cover at least this share; 80% intervals within this of 0.80
TARGET_95, TOLERANCE_80 = 0.90, 0.08
ROWS, FITS, PLOT = "estimands_contrasts.csv", "estimands_fits.csv", "estimands_coverage.png"
SCHOOL_ROWS = "estimands_schools.csv"


def stress_of(seed: int) -> str:
    """The stress set of ``seed`` (``STRESS_SEEDS``; seeds beyond them: ``"none"``)."""
    return next((name for name, seeds in STRESS_SEEDS.items() if seed in seeds), "none")


def study_truth(seed: int) -> simulate.SimulationParams:
    """``simulate.random_truth(seed)`` with the stress of the seed's set."""
    params = simulate.random_truth(seed)
    stress = stress_of(seed)
    if stress == "drift":
        rho = np.random.default_rng([seed, 4]).uniform(*RHO_RANGE)
        return dataclasses.replace(params, school_wave_rho=float(rho))
    if stress == "tails":
        return dataclasses.replace(params, student_df=TAILS_DF)
    if stress == "ceiling":
        return dataclasses.replace(params, intercept=params.intercept + CEILING_SHIFT)
    return params


def _flat(means, columns: tuple[str, ...]) -> tuple[np.ndarray, list[str], list[str], np.ndarray]:
    """(draws (sample, wave, group), waves, group labels, n (wave, group)) of adjusted means."""
    stacked = means.stack(sample=("chain", "draw"))
    if columns:
        stacked = stacked.stack(group=columns)
        labels = [schema.group_label(tuple(map(str, g))) for g in stacked["group"].to_numpy()]
        n = stacked["n"].transpose("wave", "group").to_numpy()
        draws = stacked.transpose("sample", "wave", "group").to_numpy()
    else:
        labels = ["all"]
        n = stacked["n"].to_numpy()[:, None]
        draws = stacked.transpose("sample", "wave").to_numpy()[:, :, None]
    return draws, [str(w) for w in means["wave"].to_numpy()], labels, n


def contrast_defs(
    waves: list[str], groups: list[str], pairs: tuple[tuple[str, str], ...]
) -> list[tuple[str, tuple, tuple]]:
    """(kind, plus, minus) per contrast; plus and minus list (wave, group) index pairs."""
    # the factsheet's pairs that are not already a wave's change from the first or previous
    covered = {(k, 0) for k in range(1, len(waves))} | {(k, k - 1) for k in range(2, len(waves))}
    spec = [
        (waves.index(later), waves.index(earlier))
        for later, earlier in pairs
        if later in waves and earlier in waves
    ]
    spec = [pair for pair in spec if pair not in covered]
    out = []
    for g in range(len(groups)):
        for k in range(1, len(waves)):
            out.append(("vs_first", ((k, g),), ((0, g),)))
            if k >= 2:
                out.append(("vs_previous", ((k, g),), ((k - 1, g),)))
        out += [("spec_pair", ((k, g),), ((j, g),)) for k, j in spec]
    for g in range(1, len(groups)):
        for k in range(len(waves)):
            out.append(("gap", ((k, g),), ((k, 0),)))
            if k >= 1:
                out.append(("gap_change", ((k, g), (0, 0)), ((k, 0), (0, g))))
    return out


def score_run(run, truths: dict[str, pd.DataFrame], *, seed: int) -> pd.DataFrame:
    """Every contrast of ``BREAKDOWNS`` x ``ESTIMANDS`` of an opened run against its truth."""
    rows = []
    min_n = run.options.min_cell_n
    for schools in ESTIMANDS:
        truth = truths[schools]
        for columns in BREAKDOWNS:
            name = schema.breakdown_name(columns)
            means = run.adjusted_means(columns, schools=schools)
            draws, waves, groups, n = _flat(means, columns)
            tv = truth[truth["breakdown"] == name].set_index(["group", "wave"])["value"]
            true = np.array([[tv.get((g, w), np.nan) for g in groups] for w in waves])
            for kind, plus, minus in contrast_defs(waves, groups, run.record.wave_pairs):
                cells = plus + minus
                if min(n[c] for c in cells) < min_n:
                    continue  # not reported
                d = sum(draws[:, k, g] for k, g in plus) - sum(draws[:, k, g] for k, g in minus)
                t = sum(true[c] for c in plus) - sum(true[c] for c in minus)
                row = {
                    "seed": seed,
                    "estimand": schools,
                    "kind": kind,
                    "breakdown": name,
                    "group": groups[plus[0][1]],
                    "wave": waves[plus[0][0]],
                    "reference": groups[minus[0][1]]
                    if kind.startswith("gap")
                    else waves[minus[0][0]],
                    "truth": float(t),
                    "mean": float(d.mean()),
                    "sd": float(d.std(ddof=1)),
                    "min_n": int(min(n[c] for c in cells)),
                }
                for p in PROBS:
                    lo, hi = np.quantile(d, [(1 - p) / 2, (1 + p) / 2])
                    row[f"cover_{round(p * 100)}"] = bool(lo <= t <= hi)
                    if p == PROBS[-1]:
                        row["width_95"] = float(hi - lo)
                rows.append(row)
    return pd.DataFrame(rows)


def school_slope(sim: simulate.Simulation) -> float:
    """d E[index] / d eta over the survey's students (a new school's curve), in SD units of
    the standardized index per eta unit: the map of a school's deviation to the index."""
    from omlbayes.data.scale import build_index

    scaled = build_index(sim.frame)
    rows = scaled.frame
    codes = tuple(rows[c].cat.codes.to_numpy() for c in simulate.COVARIATES)
    params = sim.params
    eta = sim.eta()[codes] + params.age_slope * (rows["age"].to_numpy() - params.age_center)
    types = rows["school_type"].cat.codes.to_numpy()

    def mean_index(shift: float) -> float:
        total = 0.0
        for k, t in enumerate(schema.SCHOOL_TYPES):
            at = types == k
            total += simulate.expected_item_mean(eta[at] + shift, params, t).sum()
        return total / len(eta)

    return (mean_index(0.01) - mean_index(-0.01)) / 0.02 / scaled.raw_sd


def score_schools(run, sim: simulate.Simulation, *, seed: int) -> pd.DataFrame:
    """Each ranked school's all-waves value (its region's adjusted mean plus its own
    deviation, as the school pages show it) and rank against the simulator's truth: the
    region's true effect plus the school's realized ``u_school`` and mean ``u_school_wave``
    over the waves it took part in, mapped to the index by :func:`school_slope`
    (linearized in the school's deviation), at each of ``PROBS``."""
    import dataclasses as dc

    from omlbayes.report.schools import schools_overview

    schools = run.table(
        "schools.csv",
        dtype={"school_id": str, "wave": str, "region": str},
        keep_default_na=False,
        na_values={"n": [""]},
    )
    truth = simulate.true_effects(sim, breakdowns=(("region",),))
    region_all = truth[truth["wave"] == "all"].set_index("group")["value"]
    slope = school_slope(sim)
    index = {s: k for k, s in enumerate(sim.school_ids)}
    waves = {w: k for k, w in enumerate(schema.WAVES)}
    own = schools.groupby("school_id")["wave"].agg(list)
    rows = []
    for p in PROBS:
        options = dc.replace(run.options, prob=p)
        table = schools_overview(
            run.posterior, run.gcomp, schools, options=options, levels=run.record.levels,
            seed=run.record.seed, effects=run.effect_draws(),
        )  # fmt: skip
        k = table["school"].map(index).to_numpy()
        drift = np.array(
            [
                sim.u_school_wave[i, [waves[w] for w in own[s]]].mean()
                for i, s in zip(k, table["school"], strict=True)
            ]
        )
        true = table["region"].map(region_all).to_numpy() + slope * (sim.u_school[k] + drift)
        true_rank = pd.Series(-true).rank(method="first").to_numpy().astype(int)
        for kind, t, lo, hi, mean in (
            ("school_value", true, table["lower"], table["upper"], table["mean"]),
            ("school_rank", true_rank, table["rank_low"], table["rank_high"], table["rank_median"]),
        ):
            part = pd.DataFrame(
                {"seed": seed, "kind": kind, "school": table["school"], "prob": p,
                 "truth": t, "mean": mean.to_numpy(), "lower": lo.to_numpy(),
                 "upper": hi.to_numpy()}
            )  # fmt: skip
            part["covered"] = (part["truth"] >= part["lower"]) & (part["truth"] <= part["upper"])
            rows.append(part)
    return pd.concat(rows, ignore_index=True)


def score_kept_schools(out: Path, *, log=print) -> None:
    """Score the schools of every seed whose run folder was kept (``_work``), into
    ``SCHOOL_ROWS``; the survey is regenerated from the seed."""
    import omlbayes as ob

    fits = pd.read_csv(out / FITS)
    work = out / "_work" / "estimands"
    parts, commits = [], []
    for info in fits.itertuples():
        folder = work / f"seed_{info.seed}"
        if not (folder / "run.json").is_file():
            log(f"school scoring: no run folder for seed {info.seed}; skipped")
            commits.append(getattr(info, "git_commit", ""))
            continue
        # the commit each fit ran at, from its own run.json (rows written before the
        # column existed lack it)
        commits.append(runs.read_record(folder).git_commit[:7])
        sim = simulate.simulate_survey(
            n_students=int(info.n_students), n_schools=int(info.n_schools), seed=int(info.seed),
            params=study_truth(int(info.seed)),
        )  # fmt: skip
        parts.append(score_schools(ob.open_run(folder), sim, seed=int(info.seed)))
    if parts:
        pd.concat(parts, ignore_index=True).to_csv(out / SCHOOL_ROWS, index=False)
    fits.assign(git_commit=commits).to_csv(out / FITS, index=False)


def fit_as_users(
    data: Path, work: Path, name: str, *, seed: int, extra: tuple[str, ...] = (), what: str = ""
):
    """``omlbayes fit`` in-process on ``data`` into ``work/name`` (replaced), the gate's
    failure allowed: ``(opened run, seconds of the fit)``."""
    import omlbayes as ob
    from omlbayes.pipeline.commands import fit_main

    shutil.rmtree(work / name, ignore_errors=True)
    argv = ["--data", str(data), "--out", str(work), "--name", name, "--seed", str(seed)]
    argv += ["--allow-failed", "--no-progress", "--quiet", *extra]
    t = time.perf_counter()
    code = fit_main(argv)
    fit_s = time.perf_counter() - t
    if code != 0:
        raise RuntimeError(f"{what or name}: the fit exited {code}")
    return ob.open_run(work / name), fit_s


def recovery_one(seed: int, *, size: tuple[int, int], work: Path, quick: bool = False) -> tuple:
    """Simulate, fit as users do, score: ``(rows, fit info)``."""
    params = study_truth(seed)
    sim = simulate.simulate_survey(n_students=size[0], n_schools=size[1], seed=seed, params=params)
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"survey_{seed}.csv"
    sim.frame.to_csv(data, index=False)
    # a quick run is a smoke run: few draws
    extra = ("--tune", "100", "--draws", "100", "--no-early-stop") if quick else ()
    run, fit_s = fit_as_users(
        data, work, f"seed_{seed}", seed=seed, extra=extra, what=f"estimand recovery seed {seed}"
    )
    truths = {
        "any": simulate.true_effects(sim, breakdowns=BREAKDOWNS),
        "surveyed": simulate.true_surveyed_effects(
            sim, breakdowns=BREAKDOWNS, min_cell_n=run.options.min_cell_n
        ),
    }
    rows = score_run(run, truths, seed=seed)
    diag = run.diagnostics
    sampling = run.record.fit.get("sampling", {})
    checks = {f"{family}_passed": entry["passed"] for family, entry in diag.get("ppc", {}).items()}
    drift = diag.get("ppc", {}).get("ppc_school_drift_persistence", {})
    info = {
        "seed": seed,
        "stress": stress_of(seed),
        "n_students": size[0],
        "n_schools": size[1],
        "fit_s": round(fit_s, 1),
        "diagnostics_passed": bool(diag["passed"]),
        "max_r_hat": diag["max_r_hat"],
        "min_ess_bulk": diag["min_ess_bulk"],
        "min_ess_tail": diag["min_ess_tail"],
        "divergences": diag["divergences"],
        "draws_per_chain": sampling.get("draws_kept"),
        "truth_school_sd": params.school_sd,
        "truth_school_wave_sd": params.school_wave_sd,
        "truth_school_wave_rho": params.school_wave_rho,
        "truth_three_way_sd": params.three_way_sd,
        **checks,
        "drift_persistence_p": drift["most_extreme"][0]["p"] if drift else np.nan,
        "git_commit": run.record.git_commit[:7],
    }
    # the run folder stays under _work (git-ignored): later scoring reads it with the
    # survey, which the seed regenerates
    data.unlink(missing_ok=True)
    return rows, info


def run_study(out: Path, *, seeds: tuple[int, ...] = SEEDS, quick: bool = False, log=print) -> None:
    """Fit and score each seed not yet in ``out``; append its rows after each fit (resumable)."""
    from omlbayes.validation.studies import _append_csv

    rows_path, fits_path = out / ROWS, out / FITS
    done = set(pd.read_csv(fits_path)["seed"]) if fits_path.exists() else set()
    size = QUICK_SIZE if quick else SIZE
    for seed in seeds[:1] if quick else seeds:
        if seed in done:
            continue
        rows, info = recovery_one(seed, size=size, work=out / "_work" / "estimands", quick=quick)
        _append_csv(rows_path, rows)
        _append_csv(fits_path, pd.DataFrame([info]))
        log(
            f"estimand recovery seed={seed}: {info['fit_s']:.0f}s, gate "
            f"{'pass' if info['diagnostics_passed'] else 'FAIL'}, cover95 "
            + ", ".join(
                f"{e} {rows.loc[rows['estimand'] == e, 'cover_95'].mean():.3f}" for e in ESTIMANDS
            )
        )
    score_kept_schools(out, log=log)


def tables(rows: pd.DataFrame, fits: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Coverage per stress set and estimand: overall, by kind and by breakdown (gate failures
    count as misses); and how often each predictive check flagged a fit, per stress set."""
    by_seed = fits.set_index("seed")
    order = {name: k for k, name in enumerate(STRESS_SEEDS)}  # tables in the sets' order
    rows = rows.iloc[np.argsort(rows["seed"].map(by_seed["stress"]).map(order), kind="stable")]
    fits = fits.iloc[np.argsort(fits["stress"].map(order), kind="stable")]
    passed = rows["seed"].map(by_seed["diagnostics_passed"].astype(bool)).to_numpy()
    rows = rows.assign(
        stress=rows["seed"].map(by_seed["stress"]),
        err=rows["mean"] - rows["truth"],
        cover_95_ungated=rows["cover_95"],
    )
    for p in PROBS:
        col = f"cover_{round(p * 100)}"
        rows[col] = rows[col].astype(bool) & passed

    def summarise(by: list[str]) -> pd.DataFrame:
        g = rows.groupby(by, sort=False)
        out = g.agg(
            contrasts=("err", "size"),
            bias=("err", "mean"),
            rmse=("err", lambda e: float(np.sqrt((e**2).mean()))),
            mean_width_95=("width_95", "mean"),
            **{f"cover_{round(p * 100)}": (f"cover_{round(p * 100)}", "mean") for p in PROBS},
            cover_95_ungated=("cover_95_ungated", "mean"),
        )
        per_seed = rows.groupby([*by, "seed"], sort=False)["cover_95"].mean()
        out["seed_sd_cover_95"] = per_seed.groupby(level=list(range(len(by)))).std()
        return out.reset_index()

    check_cols = [c for c in fits.columns if c.startswith("ppc_") and c.endswith("_passed")]
    flagged = fits.assign(gate=~fits["diagnostics_passed"].astype(bool))
    for c in check_cols:
        flagged[c.removesuffix("_passed")] = ~flagged[c].astype(bool)
    checks = flagged.groupby("stress", sort=False)[
        ["gate", *(c.removesuffix("_passed") for c in check_cols)]
    ].mean()
    checks.insert(0, "fits", flagged.groupby("stress", sort=False).size())
    return {
        "overall": summarise(["stress", "estimand"]),
        "kind": summarise(["stress", "estimand", "kind"]),
        "breakdown": summarise(["stress", "estimand", "breakdown"]),
        "checks": checks.reset_index(),
    }


def verdict(overall: pd.DataFrame) -> bool:
    """Each estimand: 95% coverage >= TARGET_95 and 80% coverage within TOLERANCE_80 of 0.80."""
    ok = (overall["cover_95"] >= TARGET_95) & ((overall["cover_80"] - 0.80).abs() <= TOLERANCE_80)
    return bool(len(overall) == len(ESTIMANDS) and ok.all())


def _plot(by_kind: pd.DataFrame, path: Path) -> None:
    sets = [name for name in STRESS_SEEDS if name in set(by_kind["stress"])]
    fig, axes = plt.subplots(
        len(sets), len(PROBS), figsize=(11, 3.3 * len(sets)), sharey=True, squeeze=False
    )
    kinds = [k for k in KINDS if k in set(by_kind["kind"])]
    x = np.arange(len(kinds))
    for row, stress in zip(axes, sets, strict=True):
        for ax, p in zip(row, PROBS, strict=True):
            col = f"cover_{round(p * 100)}"
            for i, e in enumerate(ESTIMANDS):
                part = by_kind[(by_kind["stress"] == stress) & (by_kind["estimand"] == e)]
                part = part.set_index("kind").reindex(kinds)
                ax.bar(x + (i - 0.5) * 0.38, part[col], width=0.38, label=f'schools="{e}"')
            ax.axhline(p, color="black", lw=1, ls="--")
            ax.set_xticks(x, kinds, rotation=30, ha="right")
            ax.set_ylim(0, 1)
            ax.set_title(f"{STRESS_TEXT[stress]}: {p:.0%} intervals", fontsize=9)
        row[0].set_ylabel("share of true contrasts covered")
    axes[0][0].legend(loc="lower left", fontsize=8)
    fig.suptitle(
        "Default model: coverage by kind of contrast and estimand (harder simulator; "
        "dashed: nominal)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def school_table(schools: pd.DataFrame, fits: pd.DataFrame) -> pd.DataFrame:
    """Coverage of school values and ranks per stress set, kind and interval probability
    (a fit that fails the gate counts as a miss)."""
    by_seed = fits.set_index("seed")
    order = schools["seed"].map(by_seed["stress"]).map({n: k for k, n in enumerate(STRESS_SEEDS)})
    schools = schools.iloc[np.argsort(order, kind="stable")]
    passed = schools["seed"].map(by_seed["diagnostics_passed"].astype(bool)).to_numpy()
    schools = schools.assign(
        stress=schools["seed"].map(by_seed["stress"]),
        covered=schools["covered"].astype(bool) & passed,
        err=schools["mean"] - schools["truth"],
        width=schools["upper"] - schools["lower"],
    )
    g = schools.groupby(["stress", "kind", "prob"], sort=False)
    table = g.agg(
        schools=("err", "size"),
        bias=("err", "mean"),
        rmse=("err", lambda e: float(np.sqrt((e**2).mean()))),
        mean_width=("width", "mean"),
        coverage=("covered", "mean"),
    )
    per_seed = schools.groupby(["stress", "kind", "prob", "seed"], sort=False)["covered"].mean()
    table["seed_sd_coverage"] = per_seed.groupby(level=[0, 1, 2]).std()
    return table.reset_index()


def _school_section(out: Path, fits: pd.DataFrame, md) -> list[str]:
    if not (out / SCHOOL_ROWS).exists():
        return []
    table = school_table(pd.read_csv(out / SCHOOL_ROWS), fits)
    return [
        "School values and ranks (`estimands_schools.csv`): each ranked school's all-waves "
        "value as the school pages and the schools overview show it (its region's adjusted "
        "mean plus its own deviation) and its rank interval, at 50/80/95%, against the "
        "truth: the region's true effect plus the school's realized deviation (`u_school` "
        "and the mean of its `u_school_wave` over the waves it took part in), mapped to the "
        "index by the slope of the expected index in eta (linearized in the school's "
        "deviation); the true rank orders those true values. For ranks `bias` and `rmse` "
        "are in rank places (the posterior median rank against the true rank).",
        "",
        md(table),
        "",
    ]


STRESS_TEXT = {
    "none": "no stress",
    "drift": "correlated drift (stress)",
    "tails": "t residuals, 4 df (stress)",
    "ceiling": "ceiling (stress)",
}
VERDICT_NAMES = {
    "none": "estimands",
    "drift": "estimands_correlated_drift",
    "tails": "estimands_heavy_tails",
    "ceiling": "estimands_ceiling",
}


def report_section(out: Path, verdicts: dict, md) -> list[str]:
    """The section of validation.md (empty when the study has not run)."""
    if not (out / ROWS).exists():
        return []
    rows, fits = pd.read_csv(out / ROWS), pd.read_csv(out / FITS)
    t = tables(rows, fits)
    lines_verdict = []
    for stress, part in t["overall"].groupby("stress", sort=False):
        name = VERDICT_NAMES[stress]
        verdicts[name] = verdict(part)
        lines_verdict.append(
            f"- {STRESS_TEXT[stress]} ({(fits['stress'] == stress).sum()} fits): "
            f"**{'PASS' if verdicts[name] else 'FAIL'}**"
        )
    _plot(t["kind"], out / PLOT)
    school_lines = _school_section(out, fits, md)
    n, m = fits.iloc[0][["n_students", "n_schools"]]
    lo, hi = RHO_RANGE
    return [
        "## Both estimands, every kind of contrast (default model, as users run it)",
        "",
        f"{len(fits)} simulated surveys ({int(n):,} students, {int(m)} schools) from the "
        "harder simulator with random truths (`simulate.random_truth`: school x wave "
        "variation, a residual SD per school type, three-way cells), in sets by seed: "
        + "; ".join(
            f"{STRESS_TEXT[k]}: seeds {', '.join(map(str, sorted(set(fits['seed']) & set(v))))}"
            for k, v in STRESS_SEEDS.items()
            if set(fits["seed"]) & set(v)
        )
        + ". The first set keeps the model's assumptions about schools and residuals; the "
        "stresses break one each: correlated school drift (each school's school x wave "
        f"deviations AR(1) over the waves, correlation ~ Uniform({lo}, {hi})), Student-t "
        f"residuals ({TAILS_DF:g} df, same SD) and a ceiling (the intercept raised by "
        f"{CEILING_SHIFT:g} eta unit, so answers pile up at the top of the bounded scale). Each "
        "survey is fitted by `omlbayes fit` with its defaults (early stop included) and "
        "read back through `omlbayes.open_run(...).adjusted_means(by, schools=...)`. "
        '`schools="any"` is scored against `simulate.true_effects` (a new school), '
        '`schools="surveyed"` against `simulate.true_surveyed_effects` (each surveyed '
        "school's realized deviations, weighted as the API weights them). Kinds: `vs_first`, "
        "`vs_previous` (from the third wave), `spec_pair` (the factsheet's other pairs), "
        "`gap` (a group minus the breakdown's first group, per wave), `gap_change` (a gap's "
        "change since the first wave); the cross breakdown is gender x school_type. "
        "Equal-tailed intervals; cells under the disclosure threshold are not scored; a fit "
        "that fails the gate counts as a miss (`cover_95_ungated`: as if it had passed). "
        "`seed_sd_cover_95`: the spread of 95% coverage between seeds (contrasts of one fit "
        "share its draws and truth, so the seeds, not the contrasts, are the independent "
        "units).",
        "",
        "Fits (`ppc_*_passed`: each predictive check; `drift_persistence_p`: the advisory "
        "check of persistent school drift):",
        "",
        md(fits),
        "",
        "Overall:",
        "",
        md(t["overall"]),
        "",
        "By kind:",
        "",
        md(t["kind"]),
        "",
        "By breakdown:",
        "",
        md(t["breakdown"]),
        "",
        "How often each predictive check flagged a fit: in the set without stress these are "
        "false alarms (the data follow the model's structure, up to the index being a mean "
        "of Likert answers), in each stress set the power against that stress. `gate`: "
        "the fit failed the diagnostics gate (sampler "
        "checks and the gated predictive checks); `ppc_school_drift_persistence` is "
        "advisory (reported, not gated).",
        "",
        md(t["checks"]),
        "",
        *school_lines,
        f"Pass: for each estimand 95% coverage >= {TARGET_95} and 80% coverage within "
        f"{TOLERANCE_80} of 0.80, per set of surveys:",
        "",
        *lines_verdict,
        "",
        f"![estimand coverage]({PLOT})",
        "",
    ]
