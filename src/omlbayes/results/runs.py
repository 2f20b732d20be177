"""Run folders: written atomically, never overwritten, read back without refitting.

A run is assembled in a hidden staging folder next to its final place and renamed into
place only when complete, so a failed or interrupted run leaves no half-written folder.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path

import pandas as pd
import xarray as xr

from omlbayes.errors import RunError
from omlbayes.results.options import OutputOptions

POSTERIOR = "posterior.nc"
RUN_JSON = "run.json"
DIAGNOSTICS = "diagnostics.json"
# The graded run's extra tables (pipeline.graded writes them, report.graded reads them).
ITEM_PPC_CSV = "item_ppc.csv"
DIF_CSV = "dif.csv"
RELIABILITY_MODEL_CSV = "reliability_model.csv"
LATENT_VS_INDEX_CSV = "latent_vs_index.csv"
# Groups that would carry student rows: never saved (privacy in the artefact).
PRIVATE_GROUPS = ("observed_data", "constant_data", "log_likelihood", "posterior_predictive")
PACKAGES = ("omlbayes", "pymc", "pytensor", "bambi", "arviz", "nutpie", "numpy", "pandas", "xarray")
ROOT = Path(__file__).resolve().parents[3]


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def git_commit() -> str:
    try:
        result = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() or "unknown"


def provenance() -> dict:
    """What produced a run: package versions, git commit, Python, the command line."""
    import sys

    return {
        "versions": package_versions(),
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "command": sys.argv,
    }


def run_name(model: str, *, now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now()
    return f"{now:%Y%m%d-%H%M%S}_{model}"


def new_staging(out_dir: Path, name: str) -> Path:
    """An empty hidden folder in ``out_dir`` to assemble a run in."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".staging-{name}-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    return staging


def publish(staging: Path, out_dir: Path, name: str) -> Path:
    """Rename a complete staging folder into place; never overwrite an existing run."""
    final, k = out_dir / name, 1
    while final.exists():
        k += 1
        final = out_dir / f"{name}-{k}"
    staging.rename(final)
    return final


def discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


def _per_draw_totals(node: xr.DataTree) -> bool:
    """A group whose every variable has only the sample dims (chain, draw): no rows."""
    data = node.to_dataset()
    return len(data.data_vars) > 0 and all(
        set(v.dims) <= {"chain", "draw"} for v in data.data_vars.values()
    )


def strip_private(tree: xr.DataTree) -> xr.DataTree:
    """A copy without the groups that hold student-level data (a ``log_likelihood`` of
    per-draw totals only, for prior power-scaling, is kept)."""
    keep = {
        f"/{name}": node.to_dataset()
        for name, node in tree.children.items()
        if name not in PRIVATE_GROUPS or (name == "log_likelihood" and _per_draw_totals(node))
    }
    return xr.DataTree.from_dict(keep)


def write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


def write_posterior(tree: xr.DataTree, path: Path) -> None:
    clean = strip_private(tree)
    for node in clean.subtree:  # netCDF cannot store object coords of mixed/None types
        for name, coord in node.dataset.coords.items():
            if coord.dtype == object:
                node.dataset[name] = coord.astype(str)
    clean.to_netcdf(path, engine="h5netcdf")


RECORD_VERSION = 2


@dataclass(frozen=True)
class RunRecord:
    """What ``run.json`` holds: written once per run by :func:`staged_run`'s caller through
    :meth:`Stage.write_record`, read back only by :func:`read_record`.

    ``levels`` are the levels of every categorical column in their declared order (from
    the column map): later stages order and name groups by them, never by OML defaults.
    ``fit`` is free for backend facts (kernel, latent scale, extra timings), written
    verbatim.
    """

    model: str
    kind: str  # "survey" | "formula"
    options: dict  # OutputOptions.to_dict(): interval, prob, min_cell_n, lang, monitor, area
    seed: int
    data: dict  # source, sha256, column_map, n_read, n_analysed, exclusions, notes
    levels: dict[str, list[str]] = field(default_factory=dict)
    spec: dict = field(default_factory=dict)
    spec_sha256: str = ""
    scale: dict = field(default_factory=dict)  # min_items, raw_mean, raw_sd, age_mean
    sampler: dict = field(default_factory=dict)
    priors: dict = field(default_factory=dict)
    formula: str = ""
    n_coefficients: int | None = None
    findings: dict = field(default_factory=dict)  # the declared findings (findings.py)
    timings: dict = field(default_factory=dict)
    fit: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    git_commit: str = ""
    python: str = ""
    command: list = field(default_factory=list)
    record_version: int = RECORD_VERSION

    @property
    def output_options(self) -> OutputOptions:
        return OutputOptions.from_dict(self.options)

    @property
    def wave_pairs(self) -> tuple[tuple[str, str], ...]:
        return tuple((str(a), str(b)) for a, b in self.spec.get("wave_contrasts", ()))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def new(cls, **values: object) -> RunRecord:
        """A record with this process's provenance (versions, commit, Python, command)."""
        return cls(**{**provenance(), **values})


def read_record(path: Path | str) -> RunRecord:
    """The run record of a run folder; one line saying what to do when it is old or broken."""
    path = Path(path)
    file = path / RUN_JSON if path.is_dir() else path
    if not file.is_file():
        raise RunError(f"{file.parent}: not a run folder (no {RUN_JSON})")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RunError(f"{file}: not valid JSON ({err.msg}); the run folder is damaged") from None
    if raw.get("record_version") != RECORD_VERSION or "levels" not in raw:
        raise RunError(
            f"{file}: written by an older omlbayes (record version "
            f"{raw.get('record_version', 1)}, no saved levels); refit the run to report on it"
        )
    known = {f.name for f in fields(RunRecord)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise RunError(f"{file}: unknown field {unknown[0]!r}; written by a newer omlbayes?")
    return RunRecord(**raw)


@dataclass
class Stage:
    """A run being assembled in a hidden staging folder (see :func:`staged_run`)."""

    path: Path
    final: Path | None = None

    def write_record(self, record: RunRecord) -> None:
        write_record(self.path, record)


def write_record(path: Path, record: RunRecord) -> None:
    """Write ``run.json`` of a run folder (atomically: never a half-written record). Only a
    staged run and ``--replot`` (new output options) write it."""
    tmp = path / f".{RUN_JSON}.tmp"
    write_json(tmp, record.to_dict())
    tmp.replace(path / RUN_JSON)


@contextlib.contextmanager
def staged_run(out_dir: Path, name: str) -> Iterator[Stage]:
    """Assemble a run in a staging folder and publish it when the block ends without error;
    on any error (or Ctrl-C) the staging folder is removed and nothing is published."""
    stage = Stage(new_staging(out_dir, name))
    try:
        yield stage
        stage.final = publish(stage.path, out_dir, name)
    except BaseException:
        discard(stage.path)
        raise


@dataclass(frozen=True)
class Run:
    """A run folder read back from disk."""

    path: Path
    record: RunRecord
    diagnostics: dict
    tree: xr.DataTree

    def table(self, name: str) -> pd.DataFrame:
        path = self.path / name
        if not path.is_file():
            raise RunError(f"{self.path}: no {name} in this run")
        return pd.read_csv(path, keep_default_na=True)


def read_run(path: Path | str) -> Run:
    path = Path(path)
    for name in (POSTERIOR, RUN_JSON, DIAGNOSTICS):
        if not (path / name).is_file():
            raise RunError(
                f"{path}: not a complete run folder (no {name}); give a folder under outputs/"
            )
    record = read_record(path)
    diagnostics = json.loads((path / DIAGNOSTICS).read_text())
    tree = xr.open_datatree(path / POSTERIOR, engine="h5netcdf").load()
    return Run(path, record, diagnostics, tree)
