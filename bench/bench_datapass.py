"""Data-pass benchmark: in-memory vs streamed vs Dask pass over Parquet parts, sampling, fits.

Writes simulated surveys of 1M/5M/10M rows as Parquet parts (simulated one block at a
time, never all in memory; cached in --work outside the repo and reused), then times in
fresh processes: the in-memory pass (read the whole file, scale, exact statistics), the
streamed pass over the parts (``passes.stream_pass``, batches of ``ingest.BATCH_ROWS``)
and the Dask pass (a LocalCluster); where the sampling time goes at 40k and 1M (the
project's sample stage vs a bare ``nutpie.sample``, one process per size); and whole fits
through ``scripts/fit.py`` (40k file, 1M file, 1M parts, 5M parts). Wall time and peak RSS
of the client; ratios measured in one run. Results go to bench/datapass_results.json and
this benchmark's section of bench/RESULTS.md (with the commit and the load average).

Every block of 1M simulated students uses the same 80 schools (the k-th school of a region
in a block is the k-th of that region in the first block), so p is the flagship's at
every size, as in bench_fit.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK_ROWS = 1_000_000
PART_ROWS = 250_000

PASS_CODE = """
import json, resource, sys, time
t = time.perf_counter()
from omlbayes.model.spec import load_spec
spec = load_spec("flagship")
mode, path = sys.argv[1], sys.argv[2]
t = time.perf_counter()
if mode == "in-memory":  # what a run does with one file: read, scale, exact statistics
    from omlbayes.model import stats as model_stats
    from omlbayes.data import scale
    from omlbayes.data.ingest import read_survey
    survey = read_survey(path)
    frame = scale.build_index(survey.frame).frame
    layout, stats, _ = model_stats.frame_prepared(frame, survey.levels, spec)
elif mode == "dask":
    from omlbayes.pipeline import passes
    _, layout, stats = passes.dask_pass(path, spec)
else:
    from omlbayes.pipeline import passes
    _, layout, stats = passes.stream_pass(path, spec)
print(json.dumps({"wall_s": time.perf_counter() - t, "p": layout.n_coef,
                  "n": int(stats.n.sum()),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


# Where the sampling time goes, in ONE process per size (the data read and kept in memory
# as in a run): (a) nutpie.sample on the model backends.collapsed.build_model returns,
# compiled once and timed apart from its compilation, and (b) the project's own sample
# stage (fit_collapsed: kernel choice, build, pm.sample with nutpie, compile included),
# run before and after (a). If (b) grew with N while (a) did not, the gap is in the stage.
SAMPLING_CODE = """
import gc, json, os, resource, sys, time
from omlbayes.model import stats as model_stats
from omlbayes.data import scale
from omlbayes.backends import collapsed
from omlbayes.data.ingest import read_survey
from omlbayes.model.spec import load_spec
from threadpoolctl import threadpool_limits
spec = load_spec("flagship")
s = spec.sampler
t = time.perf_counter()
survey = read_survey(sys.argv[1])
scaled = scale.build_index(survey.frame)  # kept alive while sampling, as in a run
layout, stats, _ = model_stats.frame_prepared(scaled.frame, survey.levels, spec)
out = {"n": int(stats.n.sum()), "p": layout.n_coef, "read_stats_s": time.perf_counter() - t,
       "gc_objects": len(gc.get_objects())}
def steps(tree):
    return float(tree["sample_stats"]["n_steps"].mean())
def stage(key):
    tree, timings, facts = collapsed.fit_collapsed(stats, layout, spec, seed=1,
                                                   progressbar=False)
    out[key + "_s"], out[key + "_steps"] = timings["sample_s"], steps(tree)
    out["kernel"] = facts["kernel"]
stage("stage_before")
import nutpie
t = time.perf_counter()
choice = collapsed.choose_kernel(stats, layout, spec)
compiled = nutpie.compile_pymc_model(collapsed.build_model(stats, layout, spec, choice))
out["bare_compile_s"] = time.perf_counter() - t
with threadpool_limits(1, user_api="blas"):
    t = time.perf_counter()
    tree = nutpie.sample(compiled, draws=s.draws, tune=s.tune, chains=s.chains,
                         cores=min(s.chains, os.cpu_count() or 1), seed=1,
                         progress_bar=False, target_accept=collapsed.TARGET_ACCEPT)
    out["bare_sample_s"], out["bare_steps"] = time.perf_counter() - t, steps(tree)
stage("stage_after")
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out["load"] = os.getloadavg()
print(json.dumps(out))
"""


def measure_sampling(path: Path) -> dict:
    """SAMPLING_CODE on one file, in a fresh process."""
    result = subprocess.run(
        [sys.executable, "-c", SAMPLING_CODE, str(path)], capture_output=True, text=True
    )
    if result.returncode != 0:
        return {"status": "error: " + result.stderr.strip().splitlines()[-1]}
    return {**json.loads(result.stdout.strip().splitlines()[-1]), "status": "ok"}


def write_parts(n_rows: int, folder: Path, seed: int) -> None:
    """``n_rows`` simulated students as Parquet parts of PART_ROWS, one block at a time."""
    from omlbayes.simulate.survey import simulate_survey

    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.parquet"))) == -(-n_rows // PART_ROWS):
        return
    schools: dict[str, list[str]] = {}  # region -> the first block's schools
    for block in range(-(-n_rows // BLOCK_ROWS)):
        rows = min(BLOCK_ROWS, n_rows - block * BLOCK_ROWS)
        frame = simulate_survey(n_students=rows, n_schools=80, seed=seed + block).frame
        frame["student_id"] = f"b{block:03d}_" + frame["student_id"].astype(str)
        pairs = frame[["school_id", "region"]].drop_duplicates().sort_values("school_id")
        if not schools:
            for school, region in zip(pairs.school_id, pairs.region, strict=True):
                schools.setdefault(str(region), []).append(str(school))
        else:  # the same 80 schools in every block (k-th school of a region -> k-th, cyclic)
            rename, seen = {}, {}
            for school, region in zip(pairs.school_id, pairs.region, strict=True):
                k = seen.get(str(region), 0)
                seen[str(region)] = k + 1
                rename[str(school)] = schools[str(region)][k % len(schools[str(region)])]
            frame["school_id"] = frame["school_id"].astype(str).map(rename)
        for start in range(0, rows, PART_ROWS):
            name = folder / f"part-{(block * BLOCK_ROWS + start) // PART_ROWS:04d}.parquet"
            frame.iloc[start : start + PART_ROWS].to_parquet(name, index=False)
        del frame


def one_file(folder: Path) -> Path:
    import pyarrow.parquet as pq

    out = folder.with_suffix(".parquet")
    if not out.exists():
        pq.write_table(pq.ParquetDataset(str(folder)).read(), out)
    return out


def measure_pass(mode: str, path: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PASS_CODE, mode, str(path)], capture_output=True, text=True
    )
    if result.returncode != 0:
        return {"status": "error: " + result.stderr.strip().splitlines()[-1]}
    return {**json.loads(result.stdout.strip().splitlines()[-1]), "status": "ok"}


def measure_fit(data: Path, out: Path, name: str) -> dict:
    t = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-f", "MAXRSS %M", sys.executable, str(ROOT / "scripts/fit.py"),
         "--data", str(data), "--model", "flagship", "--out", str(out), "--name", name,
         "--no-progress"],
        capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - t
    rss = [ln for ln in result.stderr.splitlines() if ln.startswith("MAXRSS")]
    run_json = out / name / "run.json"
    record = json.loads(run_json.read_text()) if run_json.exists() else {}
    diag_json = out / name / "diagnostics.json"
    diag = json.loads(diag_json.read_text()) if diag_json.exists() else {}
    return {
        "wall_s": wall,
        "peak_rss_mb": int(rss[-1].split()[1]) / 1024 if rss else None,
        "status": "ok" if result.returncode == 0 else f"exit {result.returncode}",
        "timings": record.get("timings", {}),
        "n_analysed": record.get("data", {}).get("n_analysed"),
        "diagnostics_passed": bool(diag.get("passed")) and result.returncode == 0,
        "max_r_hat": diag.get("max_r_hat"),
        "min_ess_bulk": diag.get("min_ess_bulk"),
        "divergences": diag.get("divergences"),
    }


SECTION = "## Data pass: in-memory vs streamed vs Dask (bench/bench_datapass.py)"
RSS_LIMIT_MB = 2048


def _verdict(ok: bool) -> str:
    return "**PASS**" if ok else "**FAIL**"


def targets(results: dict) -> list[str]:
    """The issue's targets, judged on this run's numbers (a failed fit fails its target)."""
    fits, ratio = results["fits"], results["fit_ratios_to_40k"]
    lines = []
    for key, limit in (("1M parts", 1.25), ("1M file", 1.25)):
        if key in fits:
            f = fits[key]
            ok = ratio[key] <= limit and f["diagnostics_passed"]
            why = "" if f["diagnostics_passed"] else f" (no passing run: {f['status']})"
            lines.append(
                f"- {_verdict(ok)} 1M rows ({key}) within {limit}x the 40k fit: "
                f"{f['wall_s']:.1f} / {fits['40k file']['wall_s']:.1f} s = {ratio[key]:.2f}x{why}"
            )
    big = [k for k in fits if k.endswith("M parts") and not k.startswith("1M")]
    for key in big:
        f = fits[key]
        ok = ratio[key] <= 3.0 and f["diagnostics_passed"] and f["peak_rss_mb"] < RSS_LIMIT_MB
        lines.append(
            f"- {_verdict(ok)} {key} through `scripts/fit.py --data DIR` within 3x the 40k "
            f"fit: {ratio[key]:.2f}x; peak RSS {f['peak_rss_mb']:.0f} MB (< {RSS_LIMIT_MB}); "
            f"diagnostics {'pass' if f['diagnostics_passed'] else 'FAIL'} (max R-hat "
            f"{f['max_r_hat']:.3f}, min ESS bulk {f['min_ess_bulk']:.0f}, "
            f"{f['divergences']} divergences)"
        )
    top = max(r["n"] for r in results["passes"] if r["status"] == "ok")
    for r in results["passes"]:
        if r["n"] == top and r["mode"] in ("streamed", "dask") and r["status"] == "ok":
            lines.append(
                f"- {_verdict(r['peak_rss_mb'] < RSS_LIMIT_MB)} {r['n']:,} rows, {r['mode']} "
                f"pass: client peak RSS {r['peak_rss_mb']:.0f} MB (< {RSS_LIMIT_MB})"
            )
    return lines


def markdown(results: dict) -> str:
    """The RESULTS.md section: passes, the sampling probe, the fits and the targets."""
    load0, load1 = results["load_start"][0], results["load_end"][0]
    lines = [
        SECTION,
        "",
        f"Generated by one run of `bench/bench_datapass.py` at commit {results['commit']}, "
        f"{results['when_start']} to {results['when_end']} UTC, under the shared bench lock; "
        f"{results['cpu_count']} cores, load average {load0:.2f} at the start and "
        f"{load1:.2f} at the end (other work on the machine ran niced). Ratios measured in "
        f"this one run are what counts. Parts of {PART_ROWS:,} rows (Parquet), simulated in "
        "blocks of 1M students with the same 80 schools in every block (p is the "
        f"flagship's at every size); batches of {results['batch_rows']:,} rows.",
        "",
        "Data passes (a fresh process each; client = the process that calls the pass; "
        "in-memory = read the whole file, scale, exact statistics):",
        "",
        "| rows | pass | p | wall_s | client peak RSS (MB) | status |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["passes"]:
        lines.append(
            f"| {r['n']:,} | {r['mode']} | {r.get('p', '-')} | {r['wall_s']:.1f} | "
            f"{r['peak_rss_mb']:.0f} | ok |"
            if r["status"] == "ok"
            else f"| {r['n']:,} | {r['mode']} | - | - | - | {r['status']} |"
        )
    lines += [
        "",
        "Sampling, one process per size (the data read and kept in memory as in a run; "
        "flagship, 4 chains x (1000 + 1000), seed 1): the project's sample stage "
        "(`fit_collapsed`: build + `pm.sample` with nutpie, compilation included) before "
        "and after a bare `nutpie.sample` on the model `build_model` returns (compiled "
        "once; compile time shown apart):",
        "",
        "| rows | kernel | stage s (first) | bare compile s | bare sample s | stage s (again) "
        "| leapfrog steps/draw (stage, bare) | peak RSS (MB) | load at end |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["sampling"].items():
        if r["status"] != "ok":
            lines.append(f"| {name} | {r['status']} |||||||")
            continue
        lines.append(
            f"| {r['n']:,} | {r['kernel']} | {r['stage_before_s']:.1f} | "
            f"{r['bare_compile_s']:.1f} | {r['bare_sample_s']:.1f} | {r['stage_after_s']:.1f} "
            f"| {r['stage_before_steps']:.1f}, {r['bare_steps']:.1f} | "
            f"{r['peak_rss_mb']:.0f} | {r['load'][0]:.2f} |"
        )
    lines += [
        "",
        "Whole fits through `scripts/fit.py` (default settings: 4 chains x (1000 + 1000), "
        "reports and school pages included)"
        + (
            f", measured again in one later run (`--fits-only`) at commit "
            f"{results['fits_run']['commit']}, {results['fits_run']['when']} UTC, load average "
            f"{results['fits_run']['load_start'][0]:.2f} at the start and "
            f"{results['fits_run']['load_end'][0]:.2f} at the end"
            if "fits_run" in results
            else ""
        )
        + ":",
        "",
        "| data | students | wall_s | x 40k | peak RSS (MB) | read + pass s | sample_s "
        "| diagnostics |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, f in results["fits"].items():
        t = f.get("timings", {})
        lines.append(
            f"| {name} | {f['n_analysed'] or 0:,} | {f['wall_s']:.1f} | "
            f"{results['fit_ratios_to_40k'][name]:.2f}x | {f['peak_rss_mb']:.0f} | "
            f"{t.get('read_scale_s', float('nan')):.1f} | {t.get('sample_s', float('nan')):.1f} "
            f"| {'pass' if f['diagnostics_passed'] else 'FAIL: ' + f['status']} |"
        )
    lines += ["", "Targets (judged by the script on this run's numbers):", "", *targets(results)]
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    """Replace (or append) this benchmark's section of bench/RESULTS.md."""
    path = ROOT / "bench" / "RESULTS.md"
    old = path.read_text()
    head, _, rest = old.partition(SECTION)
    tail = rest[rest.find("\n## ") + 1 :] if "\n## " in rest else ""
    path.write_text(head.rstrip("\n") + "\n\n" + text + ("\n" + tail if tail else ""))


def _commit() -> str:
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no", "src", "bench", "scripts"],
        capture_output=True,
        text=True,
    )
    return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def measure_fits(args: argparse.Namespace, file_1m: Path, ref: Path) -> dict:
    """The whole fits through scripts/fit.py, one after the other in this process."""
    runs = args.work / "runs"
    shutil.rmtree(runs, ignore_errors=True)  # run folder names are fixed
    fits = {"40k file": measure_fit(ref, runs, "ref40k")}
    fits["1M file"] = measure_fit(file_1m, runs, "file1m")
    fits["1M parts"] = measure_fit(args.work / "parts_1000000", runs, "parts1m")
    big = args.work / f"parts_{args.fit_size}"
    fits[f"{args.fit_size // 1_000_000}M parts"] = measure_fit(big, runs, "big")
    print(json.dumps(fits), flush=True)
    return fits


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000, 10_000_000])
    p.add_argument("--in-memory-max", type=int, default=1_000_000,
                   help="skip the in-memory pass above this many rows (it holds the whole "
                   "frame: about 0.35 GB per million rows)")  # fmt: skip
    p.add_argument("--fit-size", type=int, default=5_000_000)
    p.add_argument("--work", type=Path, default=Path("/tmp/omlbayes_bench_datapass"),
                   help="simulated data, generated once and reused (outside the repo)")  # fmt: skip
    p.add_argument("--seed", type=int, default=20240611)
    p.add_argument("--modes", nargs="+", default=["in-memory", "streamed", "dask"])
    p.add_argument("--no-fits", action="store_true", help="passes and sampling probe only")
    p.add_argument(
        "--fits-only",
        action="store_true",
        help="measure the four fits again in one run; keep the passes and the sampling probe "
        "of bench/datapass_results.json (the section says which run measured what)",
    )
    p.add_argument(
        "--render-only",
        action="store_true",
        help="measure nothing: write the RESULTS.md section from bench/datapass_results.json",
    )
    args = p.parse_args(argv)
    if args.render_only:
        write_section(markdown(json.loads((ROOT / "bench" / "datapass_results.json").read_text())))
        return 0
    from omlbayes.data.ingest import BATCH_ROWS
    from omlbayes.simulate.survey import simulate_survey

    args.work.mkdir(parents=True, exist_ok=True)
    # the data first (cached across runs), so the timed part does not include generating it
    for n in sorted({*args.sizes, 1_000_000, args.fit_size}):
        write_parts(n, args.work / f"parts_{n}", args.seed)
    file_1m = one_file(args.work / "parts_1000000")
    ref = args.work / "ref_40k.parquet"
    if not ref.exists():
        simulate_survey(n_students=40_000, n_schools=80, seed=args.seed).frame.to_parquet(ref)
    saved = ROOT / "bench" / "datapass_results.json"
    if args.fits_only:
        results = json.loads(saved.read_text())
        results["fits_run"] = {
            "commit": _commit(),
            "when": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
            "load_start": os.getloadavg(),
        }
        results["fits"] = measure_fits(args, file_1m, ref)
        results["fits_run"]["load_end"] = os.getloadavg()
        base = results["fits"]["40k file"]["wall_s"]
        results["fit_ratios_to_40k"] = {k: v["wall_s"] / base for k, v in results["fits"].items()}
        saved.write_text(json.dumps(results, indent=1))
        write_section(markdown(results))
        print(markdown(results))
        return 0
    results: dict = {
        "commit": _commit(),
        "when_start": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "load_start": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "batch_rows": BATCH_ROWS,
        "passes": [],
    }
    for n in args.sizes:
        folder = args.work / f"parts_{n}"
        for mode in args.modes:
            if mode == "in-memory" and n > args.in_memory_max:
                gb = 0.35 * n / 1e6
                status = f"skipped: the whole frame (about {gb:.1f} GB) is what parts avoid"
                results["passes"].append({"n": n, "mode": mode, "status": status})
                continue
            path = one_file(folder) if mode == "in-memory" else folder
            results["passes"].append({"n": n, "mode": mode, **measure_pass(mode, path)})
            print(json.dumps(results["passes"][-1]), flush=True)
    results["sampling"] = {
        "40k": measure_sampling(ref),
        "1M": measure_sampling(file_1m),
    }
    print(json.dumps(results["sampling"]), flush=True)
    fits = {} if args.no_fits else measure_fits(args, file_1m, ref)
    results["fits"] = fits
    base = fits["40k file"]["wall_s"] if fits else float("nan")
    results["fit_ratios_to_40k"] = {k: v["wall_s"] / base for k, v in fits.items()}
    results["when_end"] = time.strftime("%H:%M", time.gmtime())
    results["load_end"] = os.getloadavg()
    saved.write_text(json.dumps(results, indent=1))
    if fits:
        write_section(markdown(results))
    print(markdown(results) if fits else json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
