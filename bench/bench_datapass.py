"""Data-pass benchmark: in-memory vs streamed pass over Parquet parts, and whole fits.

Writes simulated surveys of 1M/5M/10M rows as Parquet parts (simulated one block at a
time, never all in memory), then times in fresh processes: the in-memory pass (read the
whole file, scale, statistics), the streamed pass over the parts (``datapass.stream_pass``),
the 40k flagship fit (the reference) and a whole fit through ``scripts/fit.py --data DIR``.
Wall time and peak RSS of the client; ratios measured in one run. Results go to
bench/datapass_results.json and a section printed for bench/RESULTS.md.

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
from omlbayes.spec import load_spec
spec = load_spec("flagship")
mode, path = sys.argv[1], sys.argv[2]
t = time.perf_counter()
if mode == "in-memory":
    from omlbayes import scale
    from omlbayes.design import build_layout, grouped_stats
    from omlbayes.ingest import read_survey
    frame = scale.build_index(read_survey(path).frame).frame
    layout = build_layout(frame, spec)
    stats = grouped_stats(frame, layout, spec.response)
elif mode == "dask":
    from omlbayes import datapass
    _, layout, stats = datapass.dask_pass(path, spec)
else:
    from omlbayes import datapass
    _, layout, stats = datapass.stream_pass(path, spec)
print(json.dumps({"wall_s": time.perf_counter() - t, "p": layout.n_coef,
                  "n": int(stats.n.sum()),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_parts(n_rows: int, folder: Path, seed: int) -> None:
    """``n_rows`` simulated students as Parquet parts of PART_ROWS, one block at a time."""
    from omlbayes.simulate import simulate_survey

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
         "--data", str(data), "--out", str(out), "--name", name, "--no-progress"],
        capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - t
    rss = [ln for ln in result.stderr.splitlines() if ln.startswith("MAXRSS")]
    run_json = out / name / "run.json"
    record = json.loads(run_json.read_text()) if run_json.exists() else {}
    return {
        "wall_s": wall,
        "peak_rss_mb": int(rss[-1].split()[1]) / 1024 if rss else None,
        "status": "ok" if result.returncode == 0 else f"exit {result.returncode}",
        "timings": record.get("timings", {}),
        "diagnostics_passed": result.returncode == 0,
    }


# Which pass the rows timed: statistics from the counted patterns (one read of the parts),
# or the earlier code that read every part twice (rows saved before this field existed).
CODE = "one pass"
OLD = "two passes"
SECTION = "## Data pass: in-memory vs streamed vs Dask (bench/bench_datapass.py)"


def markdown(results: dict) -> str:
    """The RESULTS.md section: the pass table, the fits and the targets."""
    lines = [
        SECTION,
        "",
        f"Generated on {results['when']}; {results['cpu_count']} cores, load average at start "
        f"{results['load'][0]:.2f} (the machine was shared with other jobs: ratios measured "
        "in this one run are what counts). Parts of 250,000 rows (Parquet), simulated in blocks "
        "of 1M rows.",
        "",
        "| rows | pass | reads of the data | p | wall_s | client peak RSS (MB) | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(results["passes"], key=lambda r: (r["n"], r["mode"], r.get("code", OLD))):
        code = "one (in memory)" if r["mode"] == "in-memory" else r.get("code", OLD)
        lines.append(
            f"| {r['n']:,} | {r['mode']} | {code} | {r.get('p', '-')} | "
            f"{r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} | ok |"
            if r["status"] == "ok"
            else f"| {r['n']:,} | {r['mode']} | - | - | - | - | {r['status']} |"
        )
    lines += [
        "",
        "Whole fits through `scripts/fit.py` (default settings: 4 chains x (1000 + 1000),"
        " reports and school pages included):",
        "",
        "| data | wall_s | x 40k | peak RSS (MB) | sample_s | read_scale_s | diagnostics |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, f in results["fits"].items():
        t = f.get("timings", {})
        lines.append(
            f"| {name} | {f['wall_s']:.1f} | {results['fit_ratios_to_40k'][name]:.2f}x | "
            f"{f['peak_rss_mb']:.0f} | {t.get('sample_s', float('nan')):.1f} | "
            f"{t.get('read_scale_s', float('nan')):.1f} | "
            f"{'pass' if f['diagnostics_passed'] else f['status']} |"
        )
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    """Replace (or append) this benchmark's section of bench/RESULTS.md."""
    path = ROOT / "bench" / "RESULTS.md"
    old = path.read_text()
    head, _, rest = old.partition(SECTION)
    tail = rest[rest.find("\n## ") + 1 :] if "\n## " in rest else ""
    path.write_text(head.rstrip("\n") + "\n\n" + text + ("\n" + tail if tail else ""))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000, 10_000_000])
    p.add_argument("--in-memory-max", type=int, default=10_000_000,
                   help="skip the in-memory pass above this many rows (memory)")  # fmt: skip
    p.add_argument("--fit-size", type=int, default=5_000_000)
    p.add_argument("--work", type=Path, default=Path("/tmp/omlbayes_bench_datapass"))
    p.add_argument("--seed", type=int, default=20240611)
    p.add_argument("--modes", nargs="+", default=["in-memory", "streamed", "dask"])
    p.add_argument(
        "--passes-only",
        action="store_true",
        help="time the passes again; keep the fits of bench/datapass_results.json",
    )
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for n in args.sizes:
        folder = args.work / f"parts_{n}"
        write_parts(n, folder, args.seed)
        for mode in args.modes:
            if mode == "in-memory" and n > args.in_memory_max:
                rows.append({"n": n, "mode": mode, "status": "skipped: whole frame > memory"})
                continue
            path = one_file(folder) if mode == "in-memory" else folder
            rows.append({"n": n, "mode": mode, "code": CODE, **measure_pass(mode, path)})
            print(json.dumps(rows[-1]), flush=True)
    saved = ROOT / "bench" / "datapass_results.json"
    if args.passes_only:
        results = json.loads(saved.read_text())
        # rows of this run replace those of the same size, mode and code; others are kept
        fresh = {(r["n"], r["mode"], r.get("code")) for r in rows}
        kept = [
            r for r in results["passes"] if (r["n"], r["mode"], r.get("code", OLD)) not in fresh
        ]
        results.update(passes=kept + rows, when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        results["load"] = os.getloadavg()
        saved.write_text(json.dumps(results, indent=1))
        write_section(markdown(results))
        print(markdown(results))
        return 0
    ref = args.work / "ref_40k.parquet"
    if not ref.exists():
        from omlbayes.simulate import simulate_survey

        simulate_survey(n_students=40_000, n_schools=80, seed=args.seed).frame.to_parquet(ref)
    runs = args.work / "runs"
    shutil.rmtree(runs, ignore_errors=True)  # run folder names are fixed
    fits = {"40k file": measure_fit(ref, runs, "ref40k")}
    print(json.dumps(fits), flush=True)
    one_m = args.work / "parts_1000000"
    if one_m.exists():
        fits["1M file"] = measure_fit(one_file(one_m), runs, "file1m")
        fits["1M parts"] = measure_fit(one_m, runs, "parts1m")
    big = args.work / f"parts_{args.fit_size}"
    write_parts(args.fit_size, big, args.seed)
    fits[f"{args.fit_size // 1_000_000}M parts"] = measure_fit(big, runs, "big")
    base = fits["40k file"]["wall_s"]
    results = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "passes": rows,
        "fits": fits,
        "fit_ratios_to_40k": {k: v["wall_s"] / base for k, v in fits.items()},
        "cpu_count": os.cpu_count(),
        "load": os.getloadavg(),
    }
    (ROOT / "bench" / "datapass_results.json").write_text(json.dumps(results, indent=1))
    write_section(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
