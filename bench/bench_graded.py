"""Benchmark: the graded-response model (models/graded.toml) on the shipped data.

Runs ``scripts/fit.py --model graded`` as a user would (a subprocess: the wall clock
covers reading, compiling, sampling, the exact coefficient draws, the item checks, the
index model fitted alongside, summaries, figures and reports), then reads the run folder:
wall time, sampling time, diagnostics, the smallest bulk/tail ESS over the stored
posterior and over every student's latent value, and ESS per second of sampling.

    python bench/bench_graded.py                        # the full shipped data (40k)
    python bench/bench_graded.py --from-run outputs/X   # report a run already made
    python bench/bench_graded.py --data small.csv --draws 200 --tune 200   # smoke

Writes ``bench/graded_results.json`` (or ``--out``) and prints a short table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUDGET_S = 20 * 60  # the target: a passing fit of 40k students within 20 minutes


def summarise_run(run: Path, *, wall_s: float | None) -> dict:
    record = json.loads((run / "run.json").read_text())
    diagnostics = json.loads((run / "diagnostics.json").read_text())
    timings = record.get("timings", {})
    fit = record.get("fit", {})
    sample_s = float(timings.get("graded_sample_s", float("nan")))
    latent = fit.get("latent_values", {})
    return {
        "run": str(run),
        "n_students": record["data"]["n_analysed"],
        "n_answers": fit.get("n_answers"),
        "n_coefficients": record.get("n_coefficients"),
        "sampler": record.get("sampler"),
        "wall_s": wall_s if wall_s is not None else timings.get("total_s"),
        "sample_s": sample_s,
        "compile_s": timings.get("graded_compile_s"),
        "index_model_s": timings.get("index_model_s"),
        "item_checks_s": timings.get("item_checks_s"),
        "diagnostics_passed": diagnostics["passed"],
        "max_r_hat": diagnostics["max_r_hat"],
        "min_ess_bulk": diagnostics["min_ess_bulk"],
        "min_ess_bulk_at": diagnostics["min_ess_bulk_at"],
        "min_ess_tail": diagnostics["min_ess_tail"],
        "divergences": diagnostics["divergences"],
        "min_ess_bulk_per_s": diagnostics["min_ess_bulk"] / sample_s,
        "latent_values": latent,
        "mean_leapfrog_steps": fit.get("mean_leapfrog_steps"),
        "within_budget": (wall_s or timings.get("total_s", float("inf"))) <= BUDGET_S,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "git_commit": record.get("git_commit"),
        "timings": timings,
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--from-run", type=Path, help="summarise this run folder, do not fit")
    p.add_argument("--data", type=Path, help="survey file (default: the shipped data)")
    p.add_argument("--draws", type=int)
    p.add_argument("--tune", type=int)
    p.add_argument("--out", type=Path, default=HERE / "graded_results.json")
    args = p.parse_args(argv)
    if args.from_run:
        result = summarise_run(args.from_run, wall_s=None)
    else:
        folder = Path(tempfile.mkdtemp(prefix="bench_graded_"))
        cmd = [sys.executable, str(ROOT / "scripts" / "fit.py"), "--model", "graded"]
        cmd += ["--out", str(folder), "--name", "run", "--no-progress", "--allow-failed"]
        if args.data:
            cmd += ["--data", str(args.data)]
        for flag in ("draws", "tune"):
            if getattr(args, flag):
                cmd += [f"--{flag}", str(getattr(args, flag))]
        load_start = os.getloadavg()
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        load_end = os.getloadavg()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        result = summarise_run(folder / "run", wall_s=wall)
        # the machine is shared: its load and the fit's own CPU time say how to read wall_s
        result["load_average_start"] = list(load_start)
        result["load_average_end"] = list(load_end)
        result["cpu_s"] = usage.ru_utime + usage.ru_stime
        result["peak_rss_gb"] = usage.ru_maxrss / 1e6
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    keys = (
        "n_students",
        "wall_s",
        "sample_s",
        "diagnostics_passed",
        "max_r_hat",
        "min_ess_bulk",
        "min_ess_tail",
        "divergences",
        "min_ess_bulk_per_s",
        "within_budget",
    )
    for key in keys:
        value = result[key]
        print(f"{key:>22}: {value:.3f}" if isinstance(value, float) else f"{key:>22}: {value}")
    print(f"{'latent values':>22}: {result['latent_values']}")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
