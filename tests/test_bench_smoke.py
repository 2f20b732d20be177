"""Smoke test of the benchmark script: a tiny quick run writes a complete RESULTS table."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "bench_fit.py"


def _bench_module(name: str) -> ModuleType:
    """A module of bench/ (scripts, not a package: imported with bench/ on the path)."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "bench"))


@pytest.mark.bench
def test_bench_quick_writes_results(tmp_path: Path) -> None:
    # another bench's section of the shared results file must survive this bench's rewrite
    other = "<!-- scaling -->\n## Scaling\n\nkept row\n<!-- /scaling -->\n"
    (tmp_path / "RESULTS.md").write_text(other)
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--quick",
        "--sizes",
        "2000",
        "--skip-reference",
        "--out",
        str(tmp_path),
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    bench_fit = _bench_module("bench_fit")

    report = (tmp_path / "RESULTS.md").read_text()
    header = "| " + " | ".join(bench_fit.COLUMNS) + " |"
    assert header in report
    lines = report.splitlines()
    body = lines[lines.index(header) + 2]
    cells = [c.strip() for c in body.strip("|").split("|")]
    assert len(cells) == len(bench_fit.COLUMNS)
    row = dict(zip(bench_fit.COLUMNS, cells, strict=True))
    assert row["config"] == bench_fit.OURS[0]
    assert row["n_students"] == "2,000"
    assert row["status"] == "ok"
    for col in ("wall_s", "min_ess_bulk", "ess_bulk_per_s", "max_rhat", "peak_rss_mb"):
        assert row[col] not in ("", "-"), col
    for section in ("## Machine", "Load average at start", "Command:", "## Targets"):
        assert section in report

    data = json.loads((tmp_path / "results.json").read_text())
    (rec,) = data["rows"]
    assert rec["n_coef"] > 100
    assert rec["wall_s"] > 0 and rec["min_ess_bulk"] > 0 and rec["peak_rss_mb"] > 0
    # the table shows the run's own divergence count (an int, as diagnose counted it)
    assert isinstance(rec["divergences"], int)
    assert row["divergences"] == str(rec["divergences"])
    # the bench times the fit path users run (survey_run.fit_frame), not its own copy
    assert "survey_run.fit_frame" in rec["stages"]
    assert rec["timings"]["sufficient_stats_s"] > 0
    assert report.startswith("<!-- fit -->") and other.strip() in report
    assert report.count("<!-- fit -->") == 1


@pytest.mark.bench
def test_bench_scaling_quick_writes_its_section(tmp_path: Path) -> None:
    (tmp_path / "RESULTS.md").write_text("# Benchmark\n\nearlier content\n")
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "bench_scaling.py"),
        "--quick",
        "--skip-fits",
        "--out",
        str(tmp_path),
    ]
    for _ in range(2):  # the second run replaces the section instead of appending another
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = (tmp_path / "RESULTS.md").read_text()
    assert report.startswith("# Benchmark\n\nearlier content")
    assert report.count("<!-- scaling -->") == 1
    result = json.loads((tmp_path / "scaling.json").read_text())
    rows = {r["design"]: r for r in result["gradients"]}
    three = rows["three-level, 2,500 schools in 130 districts"]
    assert three["sparse_s"] < three["dense_s"]
    assert all(r["sparse_s"] > 0 for r in rows.values())


def test_bench_default_judges_each_default_against_the_same_surveys_flagship() -> None:
    judge = _bench_module("bench_default").judge

    def row(wall: float, same: float, passed: bool = True) -> dict:
        return {"wall_s": wall, "ratio_to_flagship_40k": same, "diagnostics_passed": passed,
                "ratio_to_flagship_same_survey": same}  # fmt: skip

    rows = {
        "default_40k": row(120.0, 1.9),
        "default_harder3": row(160.0, 1.5),  # over 150 s
        "default_harder4": row(90.0, 2.1),  # over 2x its own flagship
        "default_harder5": row(90.0, 1.2, passed=False),  # the gate failed
        "default_200k": {**row(190.0, 2.9), "ratio_to_flagship_40k": 4.2},
    }
    judge(rows)
    verdicts = {name: r["meets_target"] for name, r in rows.items()}
    assert verdicts == {
        "default_40k": True,
        "default_harder3": False,
        "default_harder4": False,
        "default_harder5": False,
        "default_200k": True,  # 2.9x its own flagship; 4.2x the 40k one is not judged
    }
    rows["default_200k"]["ratio_to_flagship_same_survey"] = 3.1
    judge(rows)
    assert rows["default_200k"]["meets_target"] is False
