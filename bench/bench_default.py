#!/usr/bin/env python
"""Benchmark: the default model against the flagship, whole `scripts/fit.py` runs, one bench run.

Four fresh processes on one machine, one after another (wall time includes imports, reading,
the fit, LOO, checks, posterior.nc, figures, both reports and the school pages):

    flagship_40k   --model flagship on the shipped 40k survey   (the baseline)
    default_40k    no --model (models/full.toml) on the same file
    flagship_200k  --model flagship on a national survey (600 schools x 7 waves, 200k students)
    default_200k   the default on that national survey

With ``--harder s ...``: the pair again on a 40k survey of the harder simulator
(``simulate.random_truth(s)``: school x wave drift, a residual SD per school type, three-way
cells; 120 schools), rows ``<fit>_harder<s>``, the default's target as at 40k against the
flagship on the same survey.

Targets (issue: the default at flagship speed): default_40k <= 150 s and <= 2x flagship_40k;
default_200k <= 3x the flagship on the same national survey (its ratio to the 40k flagship is
shown beside it, the stricter reading, not judged); every diagnostics gate passing. The
per-stage table comes from each run's run.json `timings`.

    python bench/bench_default.py                     # the full bench (~15-25 min, 2 cores)
    python bench/bench_default.py --quick --out /tmp/b  # smoke: 4k/20k students, short chains

Results: a table on stdout, ``<out>/default.json`` and the ``<!-- default -->`` section of
``<out>/RESULTS.md``. The national survey is cached under ``--work``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_fit import machine_info  # noqa: E402
from bench_scaling import (  # noqa: E402
    SEED,
    STAGE_COLUMNS,
    _run_fit,
    _table,
    log,
    rhat_to_4_places,
)
from results_md import commit, replace_section  # noqa: E402

ROOT = HERE.parent
DEFAULT_WALL_TARGET_S = 150.0
DEFAULT_RATIO_TARGET = 2.0
NATIONAL_RATIO_TARGET = 3.0

# Peers quoted, not rerun here (R 4.x on this 2-core machine, issue #26): REML point
# estimates of the default's formula with one residual SD, no posterior.
R_ANCHORS = (
    ("lme4::lmer, the default's formula, 40k students", "637 s, ended singular"),
    ("its g-computation of the adjusted means", "another 458 s"),
)


def simulated_survey(work: Path, *, students: int, schools: int) -> Path:
    """A survey from the OML-calibrated simulator (seed ``SEED``), written once and reused."""
    from omlbayes.simulate.survey import simulate_survey

    path = work / f"survey_{students}_{schools}.csv"
    if not path.exists():
        work.mkdir(parents=True, exist_ok=True)
        simulate_survey(n_students=students, n_schools=schools, seed=SEED).frame.to_csv(
            path, index=False
        )
    return path


def harder_survey(work: Path, seed: int, *, students: int, schools: int) -> Path:
    """A survey of the harder simulator with the random truth of ``seed``, written once."""
    from omlbayes.simulate.survey import random_truth, simulate_survey

    path = work / f"harder_{seed}_{students}_{schools}.csv"
    if not path.exists():
        work.mkdir(parents=True, exist_ok=True)
        sim = simulate_survey(
            n_students=students, n_schools=schools, seed=seed, params=random_truth(seed)
        )
        sim.frame.to_csv(path, index=False)
    return path


FITS = ("flagship_40k", "default_40k", "flagship_200k", "default_200k")


def warm_up(work: Path, *, timeout: float) -> None:
    """One untimed small fit of each model first: the numba kernels compile into their
    on-disk cache on a checkout's first fit (20-30 s, paid once per install), and no timed
    fit should carry that (in a fresh clone it fell on the first, the 40k flagship). Each
    model with its own sampler settings, so the same kernels compile (importance sampling's
    included)."""
    data = str(simulated_survey(work, students=2_000, schools=16))
    for model in ("flagship", "full"):
        name = f"warm_up_{model}"
        shutil.rmtree(work / name, ignore_errors=True)
        _run_fit(name, ["--model", model, "--data", data, "--allow-failed"], work, timeout=timeout)
        shutil.rmtree(work / name, ignore_errors=True)


def run_fits(
    work: Path,
    *,
    quick: bool,
    timeout: float,
    only: tuple[str, ...] = FITS,
    seeds: tuple[int, ...] = (),
    harder: tuple[int, ...] = (),
) -> list[dict]:
    """The whole fits (all four unless ``only`` names fewer; the 40k flagship always runs,
    the baseline), with each one's ratio to the 40k flagship and its targets; with
    ``seeds``, the 40k pair again at each of those seeds (rows ``<fit>_seed<s>``): where
    the early stop ends varies with the chains, and so does the ratio."""
    # the national survey (600 schools x 7 waves); a --quick run shrinks it and stands a
    # 4k survey in for the shipped 40k file
    students, schools = (20_000, 60) if quick else (200_000, 600)
    sampler = ["--draws", "200", "--tune", "200", "--chains", "2"] if quick else []
    small = ["--data", str(simulated_survey(work, students=4_000, schools=20))] if quick else []
    fits = [
        ("flagship_40k", [*sampler, *small, "--model", "flagship"]),
        ("default_40k", [*sampler, *small]),
    ]
    if {"flagship_200k", "default_200k"} & set(only):
        national = simulated_survey(work, students=students, schools=schools)
        fits += [
            ("flagship_200k", [*sampler, "--model", "flagship", "--data", str(national)]),
            ("default_200k", [*sampler, "--data", str(national)]),
        ]
    fits = [(name, args) for name, args in fits if name == "flagship_40k" or name in only]
    pair_40k = [(name, args) for name, args in fits if name in ("flagship_40k", "default_40k")]
    fits += [
        (f"{name}_seed{seed}", [*args, "--seed", str(seed)])
        for seed in seeds
        for name, args in pair_40k
    ]
    size = (4_000, 20) if quick else (40_000, 120)
    for seed in harder:
        data = str(harder_survey(work, seed, students=size[0], schools=size[1]))
        fits += [
            (f"flagship_harder{seed}", [*sampler, "--model", "flagship", "--data", data]),
            (f"default_harder{seed}", [*sampler, "--data", data]),
        ]
    for name, _ in fits:  # fit.py would write <name>-2 beside an older folder of that name
        shutil.rmtree(work / name, ignore_errors=True)
    warm_up(work, timeout=timeout)
    rows = {name: _run_fit(name, args, work, timeout=timeout) for name, args in fits}
    base = rows["flagship_40k"]["wall_s"]
    for row in rows.values():
        row["ratio_to_flagship_40k"] = row["wall_s"] / base
    # the other reading of "3x the flagship" at 200k: the flagship on the same survey (and
    # for each extra seed, the 40k pair at that seed)
    pairs = [("flagship_40k", "default_40k"), ("flagship_200k", "default_200k")]
    pairs += [(f"flagship_40k_seed{s}", f"default_40k_seed{s}") for s in seeds]
    pairs += [(f"flagship_harder{s}", f"default_harder{s}") for s in harder]
    for flagship, default in pairs:
        if flagship in rows and default in rows:
            rows[default]["ratio_to_flagship_same_survey"] = (
                rows[default]["wall_s"] / rows[flagship]["wall_s"]
            )
    judge(rows)
    return list(rows.values())


def judge(rows: dict[str, dict]) -> None:
    """Each target row's target and verdict (from the stored ratios, so ``--render`` applies
    this rule to an earlier run too). Every target compares the default with the flagship
    on the same survey, as issue #26 measures it; the national default's ratio to the 40k
    flagship stays in its column (the stricter reading, not judged)."""
    if "default_40k" in rows:
        row = rows["default_40k"]
        row["target"] = (
            f"<= {DEFAULT_WALL_TARGET_S:g} s and <= {DEFAULT_RATIO_TARGET:g}x, gate passing"
        )
        row["meets_target"] = bool(
            row["wall_s"] <= DEFAULT_WALL_TARGET_S
            and row["ratio_to_flagship_40k"] <= DEFAULT_RATIO_TARGET
            and row.get("diagnostics_passed", False)
        )
    for name, row in rows.items():  # the 40k targets, against the flagship on the same survey
        if not name.startswith("default_harder"):
            continue
        row["target"] = (
            f"<= {DEFAULT_WALL_TARGET_S:g} s and <= {DEFAULT_RATIO_TARGET:g}x the same "
            "survey's flagship, gate passing"
        )
        row["meets_target"] = bool(
            row["wall_s"] <= DEFAULT_WALL_TARGET_S
            and row["ratio_to_flagship_same_survey"] <= DEFAULT_RATIO_TARGET
            and row.get("diagnostics_passed", False)
        )
    if "default_200k" in rows and "ratio_to_flagship_same_survey" in rows["default_200k"]:
        row = rows["default_200k"]
        row["target"] = f"<= {NATIONAL_RATIO_TARGET:g}x the same survey's flagship, gate passing"
        row["meets_target"] = bool(
            row["ratio_to_flagship_same_survey"] <= NATIONAL_RATIO_TARGET
            and row.get("diagnostics_passed", False)
        )


def render(result: dict) -> str:
    m = result["machine"]
    fits = rhat_to_4_places(result["fits"])
    lines = [
        "## The default model against the flagship (whole fits)",
        "",
        f"Generated by `bench/bench_default.py` on {result['date']} at commit "
        f"`{result['commit']}` (command: `{result['command']}`). Machine: {m['cpu_model']}, "
        f"{m['usable_cores']} usable cores; 1-minute load average at start "
        f"{result['load_start']}, at end {result['load_end']}. {result['shared_note']}",
        "",
        "Wall seconds of a fresh `scripts/fit.py` process each (imports, data, fit, LOO, "
        "checks, posterior.nc, figures, both reports, school pages), as ratios to the 40k "
        "flagship of this run; `draws_kept`: draws per chain at the checkpoint where the "
        "run stopped (the early stop); `sampler`: importance sampling or NUTS (and why "
        "importance sampling did not serve). Rows `_seed<s>`: the 40k pair again with "
        "`--seed s`, their ratio to each other in `ratio_to_flagship_same_survey`; rows "
        "`_harder<s>`: the pair on a 40k survey of the harder simulator (random truth s)."
        + (
            ""
            if {"flagship_200k", "default_200k"} <= {f["fit"] for f in fits}
            else " The national fits did not run in this bench run (`--fits`)."
        ),
        "",
        *_table(
            fits,
            [
                "fit",
                "n",
                "p",
                "kernel",
                "s_per_gradient",
                "sample_s",
                "draws_kept",
                "sampler",
                "wall_s",
                "ratio_to_flagship_40k",
                "ratio_to_flagship_same_survey",
                "max_rhat",
                "min_ess_bulk",
                "min_ess_tail",
                "divergences",
                "status",
                "target",
                "meets_target",
            ],
        ),
        "",
        "Seconds of each stage (run.json `timings`; `criticism_s` is LOO, `run_total_s` the "
        "whole run inside the process, imports excluded):",
        "",
        *_table(
            [{"fit": r["fit"], **r.get("stages", {})} for r in result["fits"]],
            ["fit", *STAGE_COLUMNS],
        ),  # fmt: skip
        "",
        "Peers on the same data and machine, quoted from issue #26 (not rerun here):",
        "",
        *[f"- {what}: {figure}" for what, figure in R_ANCHORS],
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=HERE, help="folder for RESULTS.md, default.json")
    p.add_argument("--work", type=Path, default=ROOT / "outputs" / "_bench_default")
    p.add_argument("--quick", action="store_true", help="small surveys, short chains (smoke)")
    p.add_argument("--timeout", type=float, default=3600.0, help="per fit, seconds")
    p.add_argument(
        "--fits", nargs="+", choices=FITS, default=list(FITS), help="the fits to run (default all)"
    )
    p.add_argument(
        "--seeds",
        nargs="*",
        type=int,
        default=[],
        help="also run the 40k pair with each of these seeds (the spread of the ratio)",
    )
    p.add_argument(
        "--harder",
        nargs="*",
        type=int,
        default=[],
        help="also run the pair on a 40k survey of the harder simulator with each random truth",
    )
    p.add_argument(
        "--render",
        action="store_true",
        help="only rewrite RESULTS.md from <out>/default.json, judged by the targets of today",
    )
    args = p.parse_args(argv)
    if args.render:  # the stored run, judged by today's rule
        result = json.loads((args.out / "default.json").read_text())
        judge({row["fit"]: row for row in result["fits"]})
        (args.out / "default.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        replace_section(args.out / "RESULTS.md", "default", render(result))
        return 0

    load_start = f"{os.getloadavg()[0]:.2f}"
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "command": "python bench/bench_default.py " + " ".join(argv or sys.argv[1:]),
        "machine": machine_info(),
        "load_start": load_start,
        "fits": run_fits(
            args.work,
            quick=args.quick,
            timeout=args.timeout,
            only=tuple(args.fits),
            seeds=tuple(args.seeds),
            harder=tuple(args.harder),
        ),
    }
    result["load_end"] = f"{os.getloadavg()[0]:.2f}"
    # the load at the start says whether other jobs ran; at the end it counts the fits'
    # own sampler threads (4 chains on 2 cores read as a load of ~4)
    result["shared_note"] = (
        "Other jobs were running at the start (load above the core count), so absolute "
        "times may be inflated; the ratios of this one run are what counts."
        if float(result["load_start"]) > result["machine"]["usable_cores"]
        else "No other job was running (load at the start below the core count)."
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "default.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    section = render(result)
    replace_section(args.out / "RESULTS.md", "default", section)
    print(section)
    log("done")
    return 0 if all("failed" not in str(r.get("status")) for r in result["fits"]) else 1


if __name__ == "__main__":
    sys.exit(main())
