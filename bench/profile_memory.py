"""Where the memory of the collapsed pipeline goes, stage by stage, on one survey file.

For each stage: peak RSS inside the stage (kernel high-water mark, reset before the
stage), RSS after it, the tracemalloc peak of Python/numpy allocations in the stage, and
(with ``--top``) the source lines that held most memory at that peak.

    python bench/profile_memory.py bench/_work/survey_n1000000_s80_seed20240611.csv --top 8
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
import warnings
from pathlib import Path


def _kb(key: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return float(line.split()[1])
    return 0.0


def _reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _trace_ingest() -> None:
    """Print the high-water mark after each internal step of ``read_survey``: the step
    where it jumps is where the stage's peak happened."""
    from omlbayes.data import ingest

    def wrap(name):
        inner = getattr(ingest, name)

        def traced(*a, **k):
            t = time.perf_counter()
            out = inner(*a, **k)
            print(
                f"    ingest.{name:22s} {time.perf_counter() - t:6.2f} s  "
                f"HWM {_kb('VmHWM') / 1024:6.0f} MB  RSS {_kb('VmRSS') / 1024:6.0f} MB"
            )
            return out

        setattr(ingest, name, traced)

    for name in ("_read_csv", "_csv_fast", "_read_parquet", "_rename", "_validate"):
        wrap(name)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("data", type=Path)
    p.add_argument("--top", type=int, default=0, help="top allocation sites per stage")
    p.add_argument(
        "--tracemalloc",
        action="store_true",
        help="also the Python/numpy allocation peak per stage (slow at 1M rows: minutes)",
    )
    p.add_argument("--no-fit", action="store_true", help="stop after the sufficient statistics")
    args = p.parse_args()
    warnings.filterwarnings("ignore")

    from omlbayes.data import scale
    from omlbayes.data.ingest import read_survey
    from omlbayes.model.design import build_layout, sufficient_stats
    from omlbayes.model.spec import load_spec

    spec = load_spec("flagship")
    state: dict = {}
    _trace_ingest()

    def stage_read():
        state["survey"] = read_survey(args.data)

    def stage_scale():  # the index and age_c
        state["frame"] = scale.build_index(state.pop("survey").frame).frame

    def stage_layout():
        state["layout"] = build_layout(state["frame"], spec)

    def stage_stats():
        state["stats"] = sufficient_stats(state["frame"], state["layout"], spec.response)

    def stage_fit():
        from omlbayes.backends.collapsed import fit_collapsed

        del state["frame"]
        state["tree"] = fit_collapsed(
            state["stats"], state["layout"], spec, seed=1, progressbar=False
        )

    stages = [
        ("ingest.read_survey", stage_read),
        ("scale.build_index", stage_scale),
        ("design.build_layout", stage_layout),
        ("design.sufficient_stats", stage_stats),
    ]
    if not args.no_fit:
        stages.append(("collapsed.fit_collapsed", stage_fit))

    print(f"start: RSS {_kb('VmRSS') / 1024:.0f} MB (after imports)")
    print(f"{'stage':28s} {'s':>7s} {'peak RSS':>9s} {'RSS after':>9s} {'py peak':>8s}  (MB)")
    for name, fn in stages:
        _reset_hwm()
        if args.tracemalloc or args.top:
            tracemalloc.start(25)
        t = time.perf_counter()
        fn()
        secs = time.perf_counter() - t
        _, py_peak = tracemalloc.get_traced_memory() if tracemalloc.is_tracing() else (0, 0)
        snap = tracemalloc.take_snapshot() if args.top else None
        tracemalloc.stop()
        print(
            f"{name:28s} {secs:7.2f} {_kb('VmHWM') / 1024:9.0f} {_kb('VmRSS') / 1024:9.0f} "
            f"{py_peak / 2**20:8.0f}"
        )
        if snap is not None:
            for stat in snap.statistics("lineno")[: args.top]:
                frame = stat.traceback[0]
                print(
                    f"      still held {stat.size / 2**20:7.1f} MB  {frame.filename}:{frame.lineno}"
                )


if __name__ == "__main__":
    main()
