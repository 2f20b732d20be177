"""Benchmark: the flagship fit by our collapsed backend against the plain Bambi model.

Every configuration runs in its own subprocess, so wall time includes imports-free
compile + sampling and the peak RSS is that configuration's alone. For ours the clock
starts before reading the survey file and covers the real pipeline:

    ingest.read_survey -> scale.build_index (index, age_c) -> survey_run.fit_frame
      (design layout, sufficient statistics, compile, NUTS, exact draws, g-computation weights)

``survey_run.fit_frame`` is the fit path `scripts/fit.py` and the validation use, so the bench
times what users run. For the reference (Bambi + PyMC's default NUTS, Bambi + nutpie) the
clock covers the same read + scale, then the same ``fit_frame`` with the Bambi backend.

    python bench/bench_fit.py                      # full bench (slow: Bambi+PyMC at 40k)
    python bench/bench_fit.py --sizes 10000 40000  # a subset
    python bench/bench_fit.py --skip-reference     # ours only
    python bench/bench_fit.py --quick --sizes 2000 --skip-reference --out /tmp/b  # smoke

Results: a table on stdout, ``<out>/results.json`` and this bench's section of
``<out>/RESULTS.md`` between ``<!-- fit -->`` markers (rewritten after every configuration,
so an interrupted run keeps what it measured; the other benches' sections are kept). Simulated
data are cached under ``bench/_work/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

from results_md import commit, replace_section

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / "_work"
DEFAULT_SIZES = (10_000, 40_000, 160_000, 1_000_000)
REFERENCE_SIZES = (10_000, 40_000)
N_SCHOOLS = 80
SEED = 20240611
RSS_LIMIT_MB = 2048.0
SPEEDUP_TARGET = 20.0
WALL_RATIO_TARGET = 2.0
RHAT_TARGET = 1.01

# (label, backend, sampler)
OURS = ("ours: collapsed + nutpie", "collapsed", "nutpie")
REFERENCES = (
    ("Bambi + nutpie", "bambi", "nutpie"),
    ("Bambi + PyMC default", "bambi", "pymc"),
)
BASELINE = "Bambi + PyMC default"
CONFIG_KEYS = {"ours": OURS, "bambi-nutpie": REFERENCES[0], "bambi-pymc": REFERENCES[1]}

COLUMNS = (
    "config",
    "n_students",
    "n_coef",
    "wall_s",
    "read_stats_s",
    "sample_s",
    "min_ess_bulk",
    "ess_bulk_per_s",
    "cpu_s",
    "ess_per_cpu_s",
    "max_rhat",
    "divergences",
    "peak_rss_mb",
    "peak_tree_rss_mb",
    "ess_s_vs_pymc",
    "status",
)


# ------------------------------------------------------------------------------------
# memory helpers (Linux /proc; no psutil in the pinned stack)


def _status_kb(pid: int | str, key: str) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0.0


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    kids = [int(k) for k in fh.read().split()]
                out += kids
                todo += kids
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return out


class TreeRssSampler(threading.Thread):
    """Samples the summed RSS of a process and all its descendants (PyMC's default
    sampler runs chains in worker processes, which RUSAGE_SELF does not see)."""

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak_kb = pid, interval, 0.0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            pids = [self.pid, *_descendants(self.pid)]
            self.peak_kb = max(self.peak_kb, sum(_status_kb(p, "VmRSS") for p in pids))
            self._halt.wait(self.interval)

    def stop(self) -> float:
        self._halt.set()
        self.join()
        return self.peak_kb / 1024.0


class StagePeaks:
    """Peak RSS per pipeline stage: the kernel's high-water mark is reset before each
    stage (``echo 5 > /proc/self/clear_refs``) and read after it."""

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, float]] = {}
        self.can_reset = True
        self._reset()

    def _reset(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
        except OSError:
            self.can_reset = False

    def mark(self, stage: str, seconds: float) -> None:
        self.stages[stage] = {
            "seconds": round(seconds, 3),
            "peak_mb": round(_status_kb("self", "VmHWM") / 1024.0, 1),
            "after_mb": round(_status_kb("self", "VmRSS") / 1024.0, 1),
        }
        self._reset()

    def peak_mb(self) -> float:
        return max((s["peak_mb"] for s in self.stages.values()), default=0.0)


# ------------------------------------------------------------------------------------
# the data


def data_path(n: int, n_schools: int, fmt: str) -> Path:
    return WORK / f"survey_n{n}_s{n_schools}_seed{SEED}.{fmt}"


def make_data(n: int, n_schools: int, fmt: str) -> Path:
    """Simulate once per (size, schools, format); reused by later runs."""
    path = data_path(n, n_schools, fmt)
    if path.exists():
        return path
    from omlbayes.simulate.survey import simulate_survey

    WORK.mkdir(parents=True, exist_ok=True)
    frame = simulate_survey(n_students=n, n_schools=n_schools, seed=SEED).frame
    tmp = path.with_name(f".{path.name}.tmp")
    if fmt == "csv":
        frame.to_csv(tmp, index=False, lineterminator="\n")
    else:
        frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


# ------------------------------------------------------------------------------------
# the worker: one configuration, in its own process


def worker(args: argparse.Namespace) -> None:
    import resource

    stages = StagePeaks()
    t_import = time.perf_counter()
    import warnings

    warnings.filterwarnings("ignore")
    from omlbayes.criticism import diagnose
    from omlbayes.data import scale
    from omlbayes.data.ingest import read_survey
    from omlbayes.model.spec import load_spec
    from omlbayes.pipeline.survey_run import fit_frame

    spec = load_spec("flagship").with_sampler(
        backend=args.backend,
        sampler=args.sampler,
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
    )
    stages.mark("imports", time.perf_counter() - t_import)

    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage0.ru_utime + usage0.ru_stime
    t0 = time.perf_counter()
    t = t0
    survey = read_survey(args.data)
    stages.mark("ingest.read_survey", time.perf_counter() - t)
    t = time.perf_counter()
    scaled = scale.build_index(survey.frame)
    del survey
    stages.mark("scale.build_index", time.perf_counter() - t)
    frame = scaled.frame  # index and age_c (centred by scale.build_index)
    del scaled
    n_analysed = len(frame)
    t = time.perf_counter()
    fitted = fit_frame(frame, spec, seed=SEED)
    stages.mark("survey_run.fit_frame", time.perf_counter() - t)
    tree, timings = fitted.tree, fitted.timings
    # read + scale, plus the layout and statistics inside fit_frame (ours only)
    read_stats_s = (t - t0) + timings.get("sufficient_stats_s", 0.0)
    wall = time.perf_counter() - t0
    diag = diagnose.check(tree)
    usage_self = resource.getrusage(resource.RUSAGE_SELF)
    usage_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    record = {
        "n_analysed": n_analysed,
        "n_coef": fitted.layout.n_coef,
        "wall_s": wall,
        "read_stats_s": read_stats_s,
        "sample_s": timings.get("sample_s", float("nan")),
        "timings": timings,
        "min_ess_bulk": diag["min_ess_bulk"],
        "min_ess_bulk_at": diag["min_ess_bulk_at"],
        "min_ess_tail": diag["min_ess_tail"],
        "max_rhat": diag["max_r_hat"],
        "max_rhat_at": diag["max_r_hat_at"],
        "divergences": diag["divergences"],
        "min_bfmi": diag["min_bfmi"],
        # per-stage high-water marks (reset between stages): the true peak of the process
        "peak_rss_mb": stages.peak_mb() if stages.can_reset else usage_self.ru_maxrss / 1024,
        "ru_maxrss_mb_since_last_reset": usage_self.ru_maxrss / 1024.0,
        "children_maxrss_mb": usage_children.ru_maxrss / 1024.0,
        "cpu_user_s": usage_self.ru_utime + usage_children.ru_utime,
        "cpu_sys_s": usage_self.ru_stime + usage_children.ru_stime,
        "cpu_before_clock_s": cpu0,
        "stages": stages.stages,
        "hwm_reset_supported": stages.can_reset,
    }
    Path(args.result).write_text(json.dumps(record, indent=1, default=float))


# ------------------------------------------------------------------------------------
# the driver


def run_config(label, backend, sampler, n, data, opts, log) -> dict:
    result = WORK / f".result_{backend}_{sampler}_{n}_{os.getpid()}.json"
    result.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--backend",
        backend,
        "--sampler",
        sampler,
        "--data",
        str(data),
        "--result",
        str(result),
        "--draws",
        str(opts["draws"]),
        "--tune",
        str(opts["tune"]),
        "--chains",
        str(opts["chains"]),
    ]
    log(f"-- {label}, N={n:,}: running ({' '.join(shlex.quote(c) for c in cmd[1:4])} ...)")
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    sampler_thread = TreeRssSampler(proc.pid)
    sampler_thread.start()
    try:
        out, _ = proc.communicate(timeout=opts["timeout"])
        status = "ok" if proc.returncode == 0 else f"failed (rc {proc.returncode})"
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        status = f"timeout after {opts['timeout']} s"
    tree_peak = sampler_thread.stop()
    elapsed = time.perf_counter() - t0
    row = {
        "config": label,
        "backend": backend,
        "sampler": sampler,
        "n_students": n,
        "status": status,
        "process_s": elapsed,
    }
    if status == "ok" and result.exists():
        row.update(json.loads(result.read_text()))
        row["ess_bulk_per_s"] = row["min_ess_bulk"] / row["wall_s"]
    else:
        tail = "\n".join((out or "").strip().splitlines()[-15:])
        row["error_tail"] = tail
        log(f"   {status}; last lines:\n{tail}")
    row["peak_tree_rss_mb"] = tree_peak
    result.unlink(missing_ok=True)
    return row


def machine_info() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gb = _status_kb_meminfo("MemTotal") / 1024 / 1024
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "mem_total_gb": round(mem_gb, 1),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
    }


def _status_kb_meminfo(key: str) -> float:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("omlbayes", "pymc", "pytensor", "bambi", "nutpie", "arviz", "numba", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def add_cpu(rows: list[dict]) -> None:
    """CPU seconds (user + sys, worker processes included) from the start of the clock."""
    for r in rows:
        if r.get("status") == "ok" and "cpu_user_s" in r:
            r["cpu_s"] = r["cpu_user_s"] + r["cpu_sys_s"] - r.get("cpu_before_clock_s", 0.0)
            r["ess_per_cpu_s"] = r["min_ess_bulk"] / r["cpu_s"]


def add_ratios(rows: list[dict]) -> None:
    base = {r["n_students"]: r for r in rows if r["config"] == BASELINE and r["status"] == "ok"}
    for r in rows:
        b = base.get(r["n_students"])
        if r.get("status") == "ok" and b is not None:
            r["ess_s_vs_pymc"] = r["ess_bulk_per_s"] / b["ess_bulk_per_s"]
        else:
            r["ess_s_vs_pymc"] = None


def _fmt(value, col) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if col == "n_students":
        return f"{value:,}"
    if col in ("max_rhat",):
        return f"{value:.4f}"
    if col in ("ess_s_vs_pymc",):
        return f"{value:.1f}x"
    if col in ("ess_bulk_per_s", "ess_per_cpu_s"):
        return f"{value:.2f}" if value < 10 else f"{value:.0f}"
    if isinstance(value, float):
        return f"{value:.1f}" if value < 1000 else f"{value:.0f}"
    return str(value)


def table(rows: list[dict]) -> str:
    head = "| " + " | ".join(COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(_fmt(r.get(c), c) for c in COLUMNS) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def targets(rows: list[dict], quick: bool) -> list[tuple[str, str, str]]:
    """(target, verdict, detail) for each stated target."""
    ours = {r["n_students"]: r for r in rows if r["config"] == OURS[0] and r["status"] == "ok"}
    base = {r["n_students"]: r for r in rows if r["config"] == BASELINE and r["status"] == "ok"}
    out = []
    o, b = ours.get(40_000), base.get(40_000)
    name = (
        f"40k: ours min bulk ESS/s >= {SPEEDUP_TARGET:g}x Bambi+PyMC default, "
        f"R-hat <= {RHAT_TARGET}, no divergences"
    )
    if o and b:
        ratio = o["ess_bulk_per_s"] / b["ess_bulk_per_s"]
        ok = ratio >= SPEEDUP_TARGET and o["max_rhat"] <= RHAT_TARGET and o["divergences"] == 0
        cpu_ratio = (
            f"; per CPU second {o['ess_per_cpu_s'] / b['ess_per_cpu_s']:.1f}x"
            if o.get("ess_per_cpu_s") and b.get("ess_per_cpu_s")
            else ""
        )
        out.append(
            (
                name,
                "PASS" if ok else "FAIL",
                f"ratio {ratio:.1f}x (ESS per wall second){cpu_ratio}; ours R-hat "
                f"{o['max_rhat']:.4f}, {o['divergences']} divergences",
            )
        )
    else:
        out.append((name, "NOT MEASURED", "needs ours and Bambi+PyMC default at 40,000"))
    o1m, o40 = ours.get(1_000_000), ours.get(40_000)
    name = f"1M: ours wall <= {WALL_RATIO_TARGET:g}x ours at 40k"
    if o1m and o40:
        ratio = o1m["wall_s"] / o40["wall_s"]
        out.append(
            (
                name,
                "PASS" if ratio <= WALL_RATIO_TARGET else "FAIL",
                f"{o1m['wall_s']:.1f} s / {o40['wall_s']:.1f} s = {ratio:.2f}x",
            )
        )
    else:
        out.append((name, "NOT MEASURED", "needs ours at 40,000 and 1,000,000"))
    name = f"peak RSS < {RSS_LIMIT_MB / 1024:g} GB (ours, every size)"
    if ours:
        worst = max(ours.values(), key=lambda r: r["peak_rss_mb"])
        ok = all(max(r["peak_rss_mb"], r["peak_tree_rss_mb"]) < RSS_LIMIT_MB for r in ours.values())
        out.append(
            (
                name,
                "PASS" if ok else "FAIL",
                f"largest {worst['peak_rss_mb']:.0f} MB at N={worst['n_students']:,}",
            )
        )
    if quick:
        out = [(t, f"{v} (quick mode: not a real measurement)", d) for t, v, d in out]
    return out


def stage_table(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        if r["config"] != OURS[0] or "stages" not in r:
            continue
        lines.append(f"\nN = {r['n_students']:,} (ours):\n")
        lines.append("| stage | seconds | peak RSS in stage (MB) | RSS after (MB) |")
        lines.append("|---|---|---|---|")
        for stage, s in r["stages"].items():
            lines.append(
                f"| {stage} | {s['seconds']:.2f} | {s['peak_mb']:.0f} | {s['after_mb']:.0f} |"
            )
    return "\n".join(lines)


def write_report(out: Path, rows, meta, quick: bool) -> str:
    add_cpu(rows)
    add_ratios(rows)
    verdicts = targets(rows, quick)
    text = [
        "# Benchmark: flagship fit, collapsed backend vs plain Bambi",
        "",
        f"Generated by `bench/bench_fit.py` on {meta['date']}"
        f" from commit {meta.get('commit', 'unknown')}."
        + (" **QUICK MODE (smoke test; numbers mean nothing).**" if quick else ""),
        "",
        "## Machine",
        "",
        f"- CPU: {meta['machine']['cpu_model']}; {meta['machine']['cores']} cores "
        f"({meta['machine']['usable_cores']} usable); {meta['machine']['mem_total_gb']} GB RAM",
        f"- Platform: {meta['machine']['platform']}; Python {meta['machine']['python']}",
        f"- Load average at start: {meta['loadavg_start']} (end: {meta.get('loadavg_end', '-')}); "
        "the machine is shared, so other jobs may have competed for the cores.",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}",
        f"- Command: `{meta['command']}`",
        *[f"- Merged from: {m}" for m in meta.get("merged_from", [])],
        *(
            [
                "- Rows of different runs come from different commits and loads: read a ratio "
                "between them (`ess_s_vs_pymc`) as such."
            ]
            if meta.get("merged_from")
            else []
        ),
        f"- Settings: {meta['settings']['chains']} chains x ({meta['settings']['tune']} tune + "
        f"{meta['settings']['draws']} draws); {meta['settings']['n_schools']} schools; "
        f"data as {meta['settings']['format']}; seed {SEED}",
        "",
        "## Results",
        "",
        table(rows),
        "",
        "Columns: `wall_s` = seconds from reading the survey file to the finished posterior, "
        "in a fresh process (model compile included; Python imports excluded); "
        "`read_stats_s` = read + scale (+ the sufficient statistics for ours); "
        "`sample_s` = compile + NUTS as the backend times it (ours: model build + compile "
        "+ sampling of the variance parameters, without the exact coefficient draws); "
        "`min_ess_bulk` = smallest bulk ESS over every posterior variable and coordinate "
        "(coefficients and SDs); `ess_bulk_per_s` = min_ess_bulk / wall_s; "
        "`cpu_s` = CPU seconds (user + sys, chain worker processes included) over the same "
        "span as wall_s (the first rows of an interrupted run may include imports); "
        "`ess_per_cpu_s` = min_ess_bulk / cpu_s, less sensitive to other jobs on a shared "
        "machine than ESS per wall second; "
        "`peak_rss_mb` = peak resident memory of the fitting process (kernel high-water "
        "mark); `peak_tree_rss_mb` = peak of the summed RSS of the process and its worker "
        "processes, sampled every 0.1 s (PyMC's default sampler runs chains in processes); "
        "`ess_s_vs_pymc` = ESS/s relative to Bambi + PyMC default at the same N.",
        "",
        "## Targets",
        "",
        *[f"- **{v}** - {t}: {d}" for t, v, d in verdicts],
        "",
        "## Where the memory goes (ours, peak RSS per stage)",
        stage_table(rows),
        "",
    ]
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        text += ["## Failures", ""]
        for r in failed:
            text += [
                f"- {r['config']} N={r['n_students']:,}: {r['status']}",
                "",
                "```",
                r.get("error_tail", ""),
                "```",
                "",
            ]
    report = "\n".join(text)
    out.mkdir(parents=True, exist_ok=True)
    replace_section(out / "RESULTS.md", "fit", report)
    (out / "results.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "targets": verdicts}, indent=1, default=str)
    )
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    p.add_argument(
        "--reference-sizes",
        type=int,
        nargs="+",
        default=list(REFERENCE_SIZES),
        help="sizes (among --sizes) at which the Bambi references also run",
    )
    p.add_argument("--skip-reference", action="store_true", help="only our backend")
    p.add_argument("--quick", action="store_true", help="2 chains x (100 tune + 100 draws)")
    p.add_argument("--out", type=Path, default=HERE, help="folder for RESULTS.md")
    p.add_argument("--schools", type=int, default=N_SCHOOLS)
    p.add_argument("--format", choices=("csv", "parquet"), default="csv")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per configuration")
    p.add_argument(
        "--configs",
        nargs="+",
        choices=tuple(CONFIG_KEYS),
        default=list(CONFIG_KEYS),
        help="which configurations to run (default: all)",
    )
    p.add_argument(
        "--report-from",
        type=Path,
        nargs="+",
        help="re-render RESULTS.md from results.json file(s) (rows concatenated; the first "
        "file gives the machine description)",
    )
    # worker mode (internal)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--backend", help=argparse.SUPPRESS)
    p.add_argument("--sampler", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--draws", type=int, default=1000, help=argparse.SUPPRESS)
    p.add_argument("--tune", type=int, default=1000, help=argparse.SUPPRESS)
    p.add_argument("--chains", type=int, default=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    if args.report_from:
        saved = [json.loads(f.read_text()) for f in args.report_from]
        meta = saved[0]["meta"]
        rows = [r for s in saved for r in s["rows"]]
        if len(saved) > 1:
            meta["merged_from"] = [
                f"{f} (started {s['meta']['date']}, load {s['meta']['loadavg_start']}, "
                f"`{s['meta']['command']}`)"
                for f, s in zip(args.report_from, saved, strict=True)
            ]
        quick = meta["settings"].get("draws", 1000) < 1000
        print(write_report(args.out, rows, meta, quick))
        return 0
    sys.path.insert(0, str(ROOT / "src"))
    from omlbayes.model.spec import load_spec

    sampler = load_spec("flagship").sampler
    opts = {
        "draws": 100 if args.quick else sampler.draws,
        "tune": 100 if args.quick else sampler.tune,
        "chains": 2 if args.quick else sampler.chains,
        "timeout": args.timeout,
    }
    meta = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": machine_info(),
        "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "versions": versions(),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "settings": {**opts, "n_schools": args.schools, "format": args.format},
    }

    def log(msg: str) -> None:
        print(msg, flush=True)

    log(
        f"bench: {meta['machine']['cpu_model']}, {meta['machine']['cores']} cores, "
        f"load {meta['loadavg_start']}"
    )
    plan = [(OURS, n) for n in args.sizes] if "ours" in args.configs else []
    if not args.skip_reference:
        refs = [CONFIG_KEYS[k] for k in ("bambi-pymc", "bambi-nutpie") if k in args.configs]
        plan += [(ref, n) for ref in refs for n in args.sizes if n in args.reference_sizes]
    rows: list[dict] = []
    for (label, backend, sampler_name), n in plan:
        t = time.perf_counter()
        data = make_data(n, args.schools, args.format)
        if time.perf_counter() - t > 1:
            log(f"   simulated N={n:,} -> {data} in {time.perf_counter() - t:.1f} s")
        row = run_config(label, backend, sampler_name, n, data, opts, log)
        rows.append(row)
        if row["status"] == "ok":
            log(
                f"   wall {row['wall_s']:.1f} s, min ESS bulk {row['min_ess_bulk']:.0f} "
                f"({row['ess_bulk_per_s']:.2f}/s), R-hat {row['max_rhat']:.4f}, "
                f"{row['divergences']} divergences, peak RSS {row['peak_rss_mb']:.0f} MB "
                f"(tree {row['peak_tree_rss_mb']:.0f} MB)"
            )
        meta["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        write_report(args.out, rows, meta, args.quick)
    report = write_report(args.out, rows, meta, args.quick)
    print()
    print(report)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
