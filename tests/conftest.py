"""Shared fixtures: a small simulated survey and one real end-to-end fit through the CLI."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL_FIT_ARGS = ("--draws", "250", "--tune", "250", "--chains", "2", "--no-progress")


def start_script(script: str, *args: str) -> subprocess.Popen:
    """Start one of scripts/*.py as a user would, its output captured."""
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def finish(process: subprocess.Popen, timeout: int) -> subprocess.CompletedProcess:
    """Wait for a started script; past ``timeout`` seconds it is killed (as subprocess.run)."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def run_script(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run one of scripts/*.py as a user would, capturing its output."""
    return finish(start_script(script, *args), timeout)


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
    return run_script("fit.py", *_small_fit_args(survey, out, name))


def _small_fit_args(survey: Path, out: Path, name: str) -> tuple[str, ...]:
    return (
        "--data", str(survey), "--model", "flagship", *SMALL_FIT_ARGS, "--seed", "3",
        "--out", str(out), "--name", name, "--allow-failed", "--lang", "en",
    )  # fmt: skip


# ---- the whole runs the run-folder tests share ------------------------------------------
#
# Each is one scripts/fit.py process. When the first test of the session runs, a thread
# starts the ones the collected tests use, one after the other in the order the tests need
# them, and each fixture waits for its own. A run beside the in-process tests uses the core
# they leave idle; one at a time, each finds the numba kernels its predecessor compiled.
# Same seeds, same numbers.


def _default_fit_args(survey: Path, out: Path) -> tuple[str, ...]:
    """No --model and no sampler settings (the default model as users run it: importance
    sampling), seed 3."""
    return (
        "--data", str(survey), "--no-progress", "--seed", "3", "--out", str(out),
        "--name", "default", "--allow-failed", "--lang", "en",
    )  # fmt: skip


def _strict_fit_args(survey: Path, out: Path) -> tuple[str, ...]:
    """Non-default settings on chains far too short for the gate (2 x 25 draws: the ESS
    cannot reach 400): a failed run must exit 3, be whole and honour every setting. (50
    draws: no probability k/50 reads as a default's 95%, 97.5% or 2.5%.)"""
    return (
        "--data", str(survey), "--model", "flagship", "--draws", "25", "--tune", "20",
        "--chains", "2", "--no-progress", "--seed", "5", "--out", str(out), "--name", "strict",
        "--quiet", "--prob", "0.9", "--interval", "hdi", "--min-cell-n", "20", "--lang", "en",
        "--sd-parameterization", "folded",
    )  # fmt: skip


SHARED_RUNS = {  # fixture -> (its arguments, the run folder's name), in the order needed
    "default_run": (_default_fit_args, "default"),
    "small_run": (lambda survey, out: _small_fit_args(survey, out, "small"), "small"),
    "strict_failed": (_strict_fit_args, "strict"),
}


@dataclass
class _Background:
    args: tuple[str, ...]  # scripts/fit.py's
    folder: Path
    done: threading.Event = field(default_factory=threading.Event)
    outcome: subprocess.CompletedProcess | None = None

    def result(self) -> subprocess.CompletedProcess:
        if not self.done.wait(timeout=1800):
            raise TimeoutError(f"shared run {self.folder.name} did not end in 30 minutes")
        assert self.outcome is not None
        return self.outcome


_NEEDED = pytest.StashKey[set]()


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected what will not run
def pytest_collection_modifyitems(session, config, items) -> None:
    config.stash[_NEEDED] = {f for item in items for f in item.fixturenames} & set(SHARED_RUNS)
    items[:] = _shared_runs_last(items)


def _shared_runs_last(items: list[pytest.Item]) -> list[pytest.Item]:
    """The modules that need no shared run first, then the others in the order their runs
    end: the in-process tests keep one core busy while the runs use the other, instead of
    waiting for a run near the start. Each module stays whole and in its own order (its
    module-scoped fixtures are built once)."""
    order = list(SHARED_RUNS)
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)

    def last_run_needed(module: list[pytest.Item]) -> int:
        needed = {f for item in module for f in item.fixturenames} & set(order)
        return max((order.index(f) for f in needed), default=-1)

    return [item for module in sorted(modules.values(), key=last_run_needed) for item in module]


@pytest.fixture(scope="session", autouse=True)
def _shared_runs(request, tmp_path_factory):
    """Start the shared runs the collected tests need, in a thread, one at a time; at the
    end of the session, stop the one still running (a session cut short by -x, say)."""
    needed = request.config.stash.get(_NEEDED, set())
    jobs: dict[str, _Background] = {}
    current: list[subprocess.Popen] = []  # the run now running
    lock, stop = threading.Lock(), threading.Event()
    if needed:
        survey = request.getfixturevalue("small_survey")
        for name in (n for n in SHARED_RUNS if n in needed):
            make_args, folder = SHARED_RUNS[name]
            out = tmp_path_factory.mktemp(name)
            jobs[name] = _Background(make_args(survey, out), out / folder)

        def run_all() -> None:
            for job in jobs.values():
                try:
                    with lock:  # no run starts once the session has ended
                        if stop.is_set():
                            raise RuntimeError("the session ended first")
                        current[:] = [start_script("fit.py", *job.args)]
                    job.outcome = finish(current[0], timeout=900)
                except Exception as error:  # a timeout: the fixture's assertion says so
                    job.outcome = subprocess.CompletedProcess(job.args, -1, "", repr(error))
                finally:
                    job.done.set()

        threading.Thread(target=run_all, name="shared-runs", daemon=True).start()
    yield jobs
    with lock:
        stop.set()
        for process in current:
            if process.poll() is None:
                process.kill()


@pytest.fixture(scope="session")
def small_run(_shared_runs) -> tuple[Path, subprocess.CompletedProcess]:
    """The flagship fitted end to end through scripts/fit.py on the small survey."""
    job = _shared_runs["small_run"]
    result = job.result()
    assert result.returncode == 0, result.stderr[-3000:]
    return job.folder, result


@pytest.fixture(scope="session")
def default_run(_shared_runs) -> Path:
    """scripts/fit.py with no --model (the default model) on the small survey."""
    job = _shared_runs["default_run"]
    result = job.result()
    assert result.returncode == 0, result.stderr[-3000:]
    return job.folder


@pytest.fixture(scope="session")
def strict_failed(_shared_runs) -> tuple[Path, subprocess.CompletedProcess]:
    """The run with non-default settings whose chains are too short for the gate."""
    job = _shared_runs["strict_failed"]
    return job.folder, job.result()
