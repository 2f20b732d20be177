"""Shared fixtures: a small simulated survey and one real end-to-end fit through the CLI."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL_FIT_ARGS = ("--draws", "250", "--tune", "250", "--chains", "2", "--no-progress")


def run_script(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run one of scripts/*.py as a user would, capturing its output."""
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def run_command(command: str, *args: str) -> subprocess.CompletedProcess:
    """``omlbayes <command> args`` in this process: the exit code and output a script run
    gives (same parser, same error contract) without a fresh interpreter's imports; for
    error paths and listings. End-to-end runs use ``run_script``."""
    from omlbayes.pipeline.commands import COMMANDS

    main = COMMANDS[command][0]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args), prog=command)
        except SystemExit as stop:  # argparse's own errors
            code = stop.code
    return subprocess.CompletedProcess([command, *args], code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def small_survey(tmp_path_factory) -> Path:
    """1,500 simulated students in 16 schools, with the truth file beside it."""
    from omlbayes.simulate.survey import simulate_survey, write_simulation

    folder = tmp_path_factory.mktemp("survey")
    sim = simulate_survey(n_students=1500, n_schools=16, seed=11)
    survey_path, _ = write_simulation(sim, folder / "small.csv")
    return survey_path


def fit_small(survey: Path, out: Path, name: str) -> subprocess.CompletedProcess:
    """scripts/fit.py, the flagship with the small-fit settings and seed 3 (same call, same
    numbers); the default model has its own end-to-end test (test_criticism)."""
    return run_script(
        "fit.py", "--data", str(survey), "--model", "flagship", *SMALL_FIT_ARGS, "--seed", "3",
        "--out", str(out), "--name", name, "--allow-failed", "--lang", "en",
    )  # fmt: skip


@pytest.fixture(scope="session")
def small_run(small_survey, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The flagship fitted end to end through scripts/fit.py on the small survey."""
    out = tmp_path_factory.mktemp("runs")
    result = fit_small(small_survey, out, "small")
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "small", result


@pytest.fixture(scope="session")
def default_run(small_survey, tmp_path_factory) -> Path:
    """scripts/fit.py with no --model (the default model) on the small survey, seed 3; short
    chains (2 x 150 draws): its tests check plumbing and exact identities, not the gate."""
    out = tmp_path_factory.mktemp("default")
    result = run_script(
        "fit.py", "--data", str(small_survey), "--draws", "150", "--tune", "150",
        "--chains", "2", "--no-progress", "--seed", "3",
        "--out", str(out), "--name", "default", "--allow-failed", "--lang", "en",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "default"
