#!/usr/bin/env python
"""Scaling of the collapsed backend with the number of coefficients p, and with many groups.

Two parts, both measured in one run on one machine:

1. Seconds per gradient (one evaluation of the marginal likelihood and its gradient)
   against p, for the dense kernel (LAPACK: factor, solve, triangular inverse) and the
   sparse kernel (sparse Cholesky + Takahashi selected inverse), on simulated surveys with
   the flagship's terms plus a school x wave term, from 80 to 1,200 schools (p ~ 300 to
   10,000), and the three-level design of part 2. The dense kernel is skipped where one
   evaluation would take more than a few seconds (its time is then predicted from p^3 at
   the rate measured on the largest timed one, and marked so).
2. Whole fits through ``scripts/fit.py`` (fresh processes, imports included), each as a
   ratio to the 40k flagship fit of the same run:
   (a) a synthetic three-level survey (2,500 schools in 130 districts, 30,000 students),
       generic ``--formula`` mode on a generated CSV;
   (b) a national synthetic survey (600 schools x 7 waves, 200,000 students) with the
       flagship's terms plus school x wave (``--model school_by_wave``).
   Target: each <= 3x the flagship's wall time, with passing diagnostics.

Output: a table on stdout, ``<out>/scaling.json``, and a section of ``<out>/RESULTS.md``
between ``<!-- scaling -->`` markers (replaced on each run; ``bench_fit.py`` rewrites the
rest of that file, so ``make bench`` runs it first).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIT = ROOT / "scripts" / "fit.py"
SEED = 20240611
TARGET_RATIO = 3.0
START, END = "<!-- scaling -->", "<!-- /scaling -->"
# (label, schools, school x wave term): p from ~300 to ~10,000
GRADIENT_DESIGNS = (
    ("flagship, 80 schools", 80, False),
    ("+ school x wave, 80 schools", 80, True),
    ("+ school x wave, 250 schools", 250, True),
    ("+ school x wave, 600 schools", 600, True),
    ("+ school x wave, 1,200 schools", 1200, True),
)
DENSE_MAX_P = 3000  # one dense evaluation above this takes seconds on a laptop-class core
THREE_LEVEL_FORMULA = "y ~ x1 + x2 + (1|district) + (1|district:school)"


def log(message: str) -> None:
    print(f"[bench_scaling] {message}", file=sys.stderr, flush=True)


# --- data --------------------------------------------------------------------------------


def three_level_frame(
    *, n_districts: int = 130, n_schools: int = 2500, n_students: int = 30_000, seed: int = SEED
) -> pd.DataFrame:
    """y = 0.3 + 0.5 x1 - 0.2 x2 + u_district (SD 0.3) + u_school (SD 0.4) + e (SD 1)."""
    rng = np.random.default_rng(seed)
    district_of = np.sort(rng.integers(0, n_districts, n_schools))
    district_of[:n_districts] = np.arange(n_districts)  # every district has a school
    school = rng.integers(0, n_schools, n_students)
    school[:n_schools] = np.arange(n_schools)  # every school has a student
    district = district_of[school]
    x1, x2 = rng.normal(size=n_students), rng.normal(size=n_students)
    y = (
        0.3
        + 0.5 * x1
        - 0.2 * x2
        + rng.normal(0, 0.3, n_districts)[district]
        + rng.normal(0, 0.4, n_schools)[school]
        + rng.normal(size=n_students)
    )
    return pd.DataFrame(
        {
            "y": y,
            "x1": x1,
            "x2": x2,
            "district": [f"d{k:03d}" for k in district],
            "school": [f"s{k:04d}" for k in school],
        }
    )


def _survey_stats(n_schools: int, school_by_wave: bool, n_students: int):
    import dataclasses

    from omlbayes.data.scale import build_index
    from omlbayes.model.design import build_layout, grouped_stats
    from omlbayes.model.spec import load_spec
    from omlbayes.simulate.survey import simulate_survey

    frame = build_index(
        simulate_survey(n_students=n_students, n_schools=n_schools, seed=SEED).frame
    ).frame
    frame = frame.assign(age_c=frame["age"] - frame["age"].mean())
    spec = dataclasses.replace(load_spec("flagship"), school_by_wave=school_by_wave)
    layout = build_layout(frame, spec)
    return grouped_stats(frame, layout, spec.response), layout, spec


def _three_level_stats():
    import dataclasses

    from omlbayes.model.design import build_layout, grouped_stats
    from omlbayes.model.spec import load_spec

    frame = three_level_frame()
    # as generic mode does: a nested term is one column of the observed combinations
    frame["district:school"] = frame["district"] + ":" + frame["school"]
    spec = dataclasses.replace(
        load_spec("flagship"),
        response="y",
        common=("x1", "x2"),
        group=(("district",), ("district:school",)),
        school_by_wave=False,
        breakdowns=(),
        wave_contrasts=(),
    )
    layout = build_layout(frame, spec)
    return grouped_stats(frame, layout, "y"), layout, spec


# --- 1. seconds per gradient ----------------------------------------------------------------


def gradient_table(designs=GRADIENT_DESIGNS, *, quick: bool = False) -> list[dict]:
    from omlbayes.backends import collapsed
    from omlbayes.backends.sparse import SparsePattern, sparse_marginal_loglik

    rows = []
    cases = [(label, lambda n=n, s=s: _survey_stats(n, s, 40 * n)) for label, n, s in designs]
    cases.append(("three-level, 2,500 schools in 130 districts", _three_level_stats))
    dense_rate = None  # flop/s of the largest timed dense evaluation
    for label, make in cases:
        stats, layout, spec = make()
        p = layout.n_coef
        log_var = collapsed._prior_log_var(layout, spec)
        t = time.perf_counter()
        pattern = SparsePattern.build(stats.pattern(), collapsed._term_blocks(layout))
        analysis_s = time.perf_counter() - t
        inputs = collapsed.sparse_inputs(stats, pattern)
        with threadpool_limits(1, user_api="blas"):  # one thread, as each chain has in a fit
            sparse_s = collapsed._time_call(
                lambda inputs=inputs, log_var=log_var: sparse_marginal_loglik(
                    np.zeros(1), log_var, *inputs.values()
                )
            )
        row = {
            "design": label,
            "p": p,
            "nnz_factor": pattern.nnz_factor,
            "sparse_flops": pattern.factor_flops,
            "ordering": pattern.ordering,
            "dense_tail": p - pattern.tail_start,
            "tail_groups": pattern.n_groups,
            "analysis_s": analysis_s,
            "sparse_s": sparse_s,
        }
        if p <= (800 if quick else DENSE_MAX_P):
            row["dense_s"] = collapsed._dense_seconds(stats.pooled(), log_var)
            row["dense_timed"] = True
            dense_rate = float(p) ** 3 / row["dense_s"]
        else:
            row["dense_s"] = float(p) ** 3 / dense_rate if dense_rate else float("nan")
            row["dense_timed"] = False
        row["dense_over_sparse"] = row["dense_s"] / sparse_s
        rows.append(row)
        log(
            f"{label}: p={p:,} sparse {sparse_s * 1e3:.3g} ms, dense "
            f"{row['dense_s'] * 1e3:.4g} ms{'' if row['dense_timed'] else ' (predicted)'}"
        )
    return rows


# --- 2. whole fits ---------------------------------------------------------------------------


def _run_fit(name: str, args: list[str], work: Path, *, timeout: float) -> dict:
    cmd = [sys.executable, str(FIT), *args, "--out", str(work), "--name", name, "--no-progress"]
    log(f"fit {name}: {' '.join(cmd[1:])}")
    t = time.perf_counter()
    try:
        done = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"fit": name, "status": f"timeout after {timeout:.0f} s", "wall_s": float("nan")}
    wall = time.perf_counter() - t
    folder = work / name
    row = {"fit": name, "wall_s": wall, "exit_code": done.returncode}
    if not (folder / "run.json").exists():
        row["status"] = "failed: " + " | ".join(done.stderr.strip().splitlines()[-3:])
        return row
    record = json.loads((folder / "run.json").read_text())
    diag = json.loads((folder / "diagnostics.json").read_text())
    fit = record.get("fit", {})
    row.update(
        status="ok" if diag["passed"] else "diagnostics failed",
        n=record["data"]["n_analysed"],
        p=record.get("n_coefficients"),
        kernel=fit.get("kernel", "-"),
        s_per_gradient=fit.get(f"{fit.get('kernel')}_s_per_gradient", float("nan")),
        sample_s=record["timings"].get("sample_s", float("nan")),
        draws_kept=fit.get("sampling", {}).get("draws_kept"),
        sampler=_sampler_text(fit.get("sampling", {})),
        max_rhat=diag["max_r_hat"],
        min_ess_bulk=diag["min_ess_bulk"],
        min_ess_tail=diag["min_ess_tail"],
        divergences=diag["divergences"],
        diagnostics_passed=diag["passed"],
        stages={k: v for k, v in record["timings"].items() if k in STAGE_COLUMNS},
    )
    return row


def _sampler_text(sampling: dict) -> str:
    """Which sampler kept the draws: importance sampling (proposals, Pareto k) or NUTS (and
    why importance sampling, where tried, did not serve)."""
    if sampling.get("method") == "importance":
        return f"importance: {sampling['proposals']:,} proposals, k {sampling['pareto_k']:.2f}"
    tried = sampling.get("importance_tried")
    return "NUTS" + (f" ({tried.get('reason', '')})" if tried else "")


def whole_fits(work: Path, *, quick: bool, timeout: float) -> list[dict]:
    from omlbayes.simulate.survey import simulate_survey

    work.mkdir(parents=True, exist_ok=True)
    sampler = ["--draws", "200", "--tune", "200", "--chains", "2"] if quick else []
    national_students, national_schools = (20_000, 60) if quick else (200_000, 600)
    three = three_level_frame(n_schools=250, n_districts=13, n_students=3000) if quick else None
    three = three_level_frame() if three is None else three
    three.to_csv(work / "three_level.csv", index=False)
    national = simulate_survey(n_students=national_students, n_schools=national_schools, seed=SEED)
    national.frame.to_csv(work / "national.csv", index=False)
    fits = [
        ("flagship_40k", [*sampler, "--model", "flagship"]),  # the baseline: always flagship
        (
            "three_level_30k",
            [*sampler, "--formula", THREE_LEVEL_FORMULA, "--data", str(work / "three_level.csv")],
        ),
        (
            "national_200k",
            [*sampler, "--model", "school_by_wave", "--data", str(work / "national.csv")],
        ),
    ]
    rows = [_run_fit(name, args, work, timeout=timeout) for name, args in fits]
    base = rows[0]["wall_s"]
    for row in rows:
        row["ratio_to_flagship"] = row["wall_s"] / base
        row["meets_target"] = bool(
            row["ratio_to_flagship"] <= TARGET_RATIO and row.get("diagnostics_passed", False)
        )
    return rows


# --- report ----------------------------------------------------------------------------------


# run.json timings shown per fit: where a whole fit's seconds go
STAGE_COLUMNS = (
    "read_scale_s",
    "kernel_choice_s",
    "sample_s",
    "conditional_draws_s",
    "criticism_s",
    "diagnostics_s",
    "ppc_s",
    "write_posterior_s",
    "predictive_figures_s",
    "summaries_figures_s",
    "reports_s",
    "school_pages_s",
    "run_total_s",
)


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{value:,}"
    if isinstance(value, float | np.floating):
        if not np.isfinite(value):
            return "-"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def _table(rows: list[dict], columns: list[str]) -> list[str]:
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(_fmt(r.get(c, "-")) for c in columns) + " |" for r in rows]
    return out


def rhat_to_4_places(fits: list[dict]) -> list[dict]:
    """The fit rows with max R-hat written to 4 places (the gate's threshold is 1.01)."""
    return [
        {**r, "max_rhat": f"{r['max_rhat']:.4f}"} if isinstance(r.get("max_rhat"), float) else r
        for r in fits
    ]


def render(result: dict) -> str:
    m = result["machine"]
    lines = [
        START,
        "## Scaling: dense vs sparse kernel, and fits with thousands of groups",
        "",
        f"Generated by `bench/bench_scaling.py` on {result['date']} "
        f"(command: `{result['command']}`). Machine: {m['cpu_model']}, {m['usable_cores']} "
        f"usable cores; load average at start {result['load_start']}, at end "
        f"{result['load_end']}. {result['shared_note']}",
        "",
        "### Seconds per gradient against p",
        "",
        "One evaluation of the collapsed log-likelihood and its gradient (best of several, "
        "one thread). `dense_tail`: columns of the trailing block the sparse kernel factors "
        "densely (BLAS/LAPACK), `tail_groups`: groups of lead columns whose products with it "
        "are matrix products. Where `dense_timed` is `no`, `dense_s` is predicted from p^3 at the "
        "rate of the largest timed dense evaluation (one would take seconds).",
        "",
        *_table(
            result["gradients"],
            [
                "design",
                "p",
                "nnz_factor",
                "ordering",
                "dense_tail",
                "tail_groups",
                "analysis_s",
                "sparse_s",
                "dense_s",
                "dense_timed",
                "dense_over_sparse",
            ],
        ),
        "",
    ]
    if result.get("fits"):
        lines += [
            "### Whole fits through scripts/fit.py, as ratios to the 40k flagship fit",
            "",
            "Wall seconds of a fresh `scripts/fit.py` process (imports, data, fit, diagnostics, "
            f"report). Target: ratio <= {TARGET_RATIO:g} with diagnostics passing.",
            "",
            *_table(
                rhat_to_4_places(result["fits"]),
                [
                    "fit",
                    "n",
                    "p",
                    "kernel",
                    "s_per_gradient",
                    "sample_s",
                    "wall_s",
                    "ratio_to_flagship",
                    "max_rhat",
                    "min_ess_bulk",
                    "divergences",
                    "status",
                    "meets_target",
                ],
            ),
            "",
            "Seconds of each stage (run.json `timings`; `criticism_s` is LOO, `run_total_s` "
            "the whole run inside the process, imports excluded):",
            "",
            *_table(
                [{"fit": r["fit"], **r.get("stages", {})} for r in result["fits"]],
                ["fit", *STAGE_COLUMNS],
            ),
            "",
        ]
    lines.append(END)
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else ""
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + section.rstrip("\n") + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=HERE, help="folder for RESULTS.md, scaling.json")
    p.add_argument("--work", type=Path, default=ROOT / "outputs" / "_bench_scaling")
    p.add_argument("--quick", action="store_true", help="small designs and fits (smoke run)")
    p.add_argument("--skip-fits", action="store_true", help="only the seconds-per-gradient table")
    p.add_argument("--timeout", type=float, default=4 * 3600.0, help="per fit, seconds")
    p.add_argument(
        "--render",
        action="store_true",
        help="only rewrite RESULTS.md's section from the --out folder's scaling.json (no runs)",
    )
    args = p.parse_args(argv)
    if args.render:
        result = json.loads((args.out / "scaling.json").read_text())
        write_section(args.out / "RESULTS.md", render(result))
        return 0
    sys.path.insert(0, str(HERE))
    from bench_fit import machine_info

    load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    designs = GRADIENT_DESIGNS[:2] if args.quick else GRADIENT_DESIGNS
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python bench/bench_scaling.py " + " ".join(argv or sys.argv[1:]),
        "machine": machine_info(),
        "load_start": load_start,
        "gradients": gradient_table(designs, quick=args.quick),
    }
    if not args.skip_fits:
        result["fits"] = whole_fits(args.work, quick=args.quick, timeout=args.timeout)
    result["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    # the 1-minute load averages: the 5- and 15-minute ones still count jobs that ended
    # before the bench started
    busy = max(float(result[key].split()[0]) for key in ("load_start", "load_end"))
    result["shared_note"] = (
        "The machine was shared with other jobs (load above the core count), so absolute "
        "times are inflated; ratios measured in this one run are what counts."
        if busy > result["machine"]["usable_cores"]
        else "The machine was otherwise idle."
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scaling.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    section = render(result)
    write_section(args.out / "RESULTS.md", section)
    print(section)
    fits = result.get("fits", [])
    return 0 if all(r.get("status") != "failed" for r in fits) else 1


if __name__ == "__main__":
    sys.exit(main())
