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
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pandas as pd
import xarray as xr

from omlbayes.errors import RunError

POSTERIOR = "posterior.nc"
RUN_JSON = "run.json"
DIAGNOSTICS = "diagnostics.json"
# Groups that would carry student rows: never saved (privacy in the artefact).
PRIVATE_GROUPS = ("observed_data", "constant_data", "log_likelihood", "posterior_predictive")
PACKAGES = ("omlbayes", "pymc", "pytensor", "bambi", "arviz", "nutpie", "numpy", "pandas", "xarray")
ROOT = Path(__file__).resolve().parents[2]


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


def strip_private(tree: xr.DataTree) -> xr.DataTree:
    """A copy without the groups that hold student-level data."""
    keep = {
        f"/{name}": node.to_dataset()
        for name, node in tree.children.items()
        if name not in PRIVATE_GROUPS
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


@dataclass(frozen=True)
class Run:
    """A run folder read back from disk."""

    path: Path
    record: dict
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
    record = json.loads((path / RUN_JSON).read_text())
    diagnostics = json.loads((path / DIAGNOSTICS).read_text())
    tree = xr.open_datatree(path / POSTERIOR, engine="h5netcdf").load()
    return Run(path, record, diagnostics, tree)
