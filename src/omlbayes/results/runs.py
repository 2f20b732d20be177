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
from omlbayes.resources import project_root, source_root
from omlbayes.results.options import OutputOptions

POSTERIOR = "posterior.nc"
RUN_JSON = "run.json"
DIAGNOSTICS = "diagnostics.json"
# The graded run's extra tables (pipeline.graded writes them, report.graded reads them).
ITEM_PPC_CSV = "item_ppc.csv"
DIF_CSV = "dif.csv"
RELIABILITY_MODEL_CSV = "reliability_model.csv"
LATENT_VS_INDEX_CSV = "latent_vs_index.csv"
# reliability_model.csv's row with the factor index-scale contrasts are attenuated by
ATTENUATION = "index_attenuation"
# Groups that would carry student rows: never saved (privacy in the artefact). The per-draw
# log-likelihood totals go in ``log_likelihood_total`` (criticism/sensitivity.py), so a
# ``log_likelihood`` group is pointwise, and dropped, whatever it holds.
PRIVATE_GROUPS = ("observed_data", "constant_data", "log_likelihood", "posterior_predictive")
PACKAGES = ("omlbayes", "pymc", "pytensor", "bambi", "arviz", "nutpie", "numpy", "pandas", "xarray")
ROOT = project_root()  # the checkout, or the current folder for an installed package


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def git_commit() -> str:
    root = source_root()
    if root is None:  # an installed package: its version (in versions) says what ran
        return "unknown"
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
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


def write_posterior(tree: xr.DataTree, path: Path) -> xr.DataTree:
    """Write ``posterior.nc`` without student rows; returns the tree as written."""
    clean = strip_private(tree)
    for node in clean.subtree:  # netCDF cannot store object coords of mixed/None types
        for name, coord in node.dataset.coords.items():
            if coord.dtype == object:
                node.dataset[name] = coord.astype(str)
    clean.to_netcdf(path, engine="h5netcdf")
    return clean


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
    findings_reason: str = ""  # why these findings (the spec's, or generic for other levels)
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

    def as_written(self) -> RunRecord:
        """The record as ``run.json`` gives it back (JSON types: lists, str for the rest),
        so a run handed on in memory reads exactly as one opened from disk."""
        return RunRecord(**json.loads(json.dumps(self.to_dict(), default=str)))

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


class Run:
    """A run folder and what it holds, each part read at most once.

    :func:`open_run` makes one from disk (``--replot``, the report script, the public API);
    the pipeline makes one from what it has just computed, so no stage of a run reads back
    ``run.json`` or ``posterior.nc``. Derived values (the adjusted-mean draws, the tables)
    are computed once and shared by every later stage.
    """

    def __init__(
        self,
        path: Path | str,
        record: RunRecord,
        *,
        diagnostics: dict | None = None,
        tree: xr.DataTree | None = None,
        effects: xr.DataArray | None = None,
    ) -> None:
        self.path = Path(path)
        self.record = record
        self._diagnostics = diagnostics
        self._tree = tree
        self._cache: dict[str, object] = {} if effects is None else {"effect_draws": effects}

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, model={self.record.model!r})"

    @property
    def options(self) -> OutputOptions:
        """The run's output options: interval, probability, threshold, language."""
        return self.record.output_options

    @property
    def diagnostics(self) -> dict:
        if self._diagnostics is None:
            self._diagnostics = json.loads((self.path / DIAGNOSTICS).read_text(encoding="utf-8"))
        return self._diagnostics

    @property
    def tree(self) -> xr.DataTree:
        """``posterior.nc`` (loaded into memory once)."""
        if self._tree is None:
            self._tree = xr.open_datatree(self.path / POSTERIOR, engine="h5netcdf").load()
        return self._tree

    @property
    def posterior(self) -> xr.Dataset:
        return self._cached("posterior", lambda: self.tree["posterior"].to_dataset())

    @property
    def gcomp(self) -> xr.Dataset:
        """The g-computation weights of every adjusted mean (survey runs only)."""
        if "gcomp" not in self.tree.children:
            raise RunError(f"{self.path}: this run has no adjusted-mean weights (a --formula run)")
        return self._cached("gcomp", lambda: self.tree["gcomp"].to_dataset())

    def effect_draws(self) -> xr.DataArray:
        """Draws of every reported adjusted mean minus the pooled mean (chain, draw, target),
        computed once from the weights (a fit hands over the draws it computed)."""
        from omlbayes.model.estimands import effect_draws

        return self._cached(
            "effect_draws", lambda: effect_draws(self.posterior, self.gcomp, seed=self.record.seed)
        )

    # -- the public questions ---------------------------------------------------------
    @property
    def spec(self):
        """The model spec the run fitted (``model.spec.ModelSpec``)."""
        from omlbayes.model.spec import ModelSpec

        return self._cached("spec", lambda: ModelSpec.from_dict(self.record.spec))

    @property
    def composition(self):
        """The run's composition store (``model.composition.Composition``)."""
        from omlbayes.model.composition import Composition

        if "composition" not in self.tree.children:
            raise RunError(
                f"{self.path}: this run keeps no composition (a --formula run, or written by an "
                "older omlbayes); refit it to ask new questions"
            )
        return self._cached(
            "composition",
            lambda: Composition.from_dataset(self.tree["composition"].to_dataset()),
        )

    @property
    def layout(self):
        """The model's coefficient layout (``model.design.DesignLayout``)."""
        from omlbayes.model.design import layout_for

        return self._cached("layout", lambda: layout_for(self.spec, self.composition.levels))

    @property
    def waves(self) -> tuple[str, ...]:
        """The waves of the run, in their declared order."""
        present = set(self.composition.levels["wave"])
        return tuple(w for w in self.record.levels.get("wave", ()) if w in present)

    def adjusted_means(
        self,
        by: str | tuple[str, ...] = (),
        *,
        schools: str = "any",
        composition: str | pd.DataFrame = "pooled",
        scale: str = "index",
    ) -> xr.DataArray:
        """Draws of the adjusted mean of every wave and level (combination) of ``by``.

        Parameters
        ----------
        by : str or tuple of str
            A covariate column, or several for a cross breakdown; ``()`` for all students.
        schools : {"any", "surveyed"}
            ``"any"``: a school like any other (school effects at their mean, the report's
            default); ``"surveyed"``: the monitor's own schools, each student keeping their
            school and its realized deviation in the wave (for a school-level column in
            ``by``, the schools of that level).
        composition : {"pooled", "wave"} or pandas.DataFrame
            The students the mean is standardized to: all waves pooled (the report's
            default), each wave's own (the trend as observed, composition change included),
            or a population table (columns among the covariates plus ``n``, the count).
        scale : {"index", "raw"}
            ``"index"``: the standardized index, deviation from the pooled mean (the numbers
            of effects.csv); ``"raw"``: the mean on the scale of the items (1-5).

        Returns
        -------
        xarray.DataArray
            Dims (chain, draw, wave, *by) with level names as coordinates, and as
            coordinates over (wave, *by): ``n`` (students observed in the cell, 0 under the
            disclosure threshold) and ``empty_share``. Cells under the disclosure threshold
            hold NaN.
        """
        from omlbayes.model import estimands

        columns = (by,) if isinstance(by, str) else tuple(by)
        known = [c for c in self.composition.levels if c not in ("wave", "school_id")]
        for c in columns:
            if c not in known:
                raise RunError(
                    f"by={c!r}: not a covariate of this run; use one of {', '.join(known)}"
                )
        if len(set(columns)) != len(columns):
            raise RunError(f"by={columns!r} names a column twice")
        if scale not in ("index", "raw"):
            raise RunError(f"scale={scale!r}; use 'index' or 'raw'")
        if scale == "raw" and self.record.fit.get("scale") == "latent":
            raise RunError("scale='raw': this graded run's effects are on the latent scale only")
        if isinstance(composition, pd.DataFrame):
            composition = _population_table(composition, self.composition.levels)
        weights = estimands.adjusted_mean_weights(
            self.layout, self.composition, columns, waves=self.waves,
            reference=composition, schools=schools, deviation=scale == "index",
        )  # fmt: skip
        coefs = self._cached(
            "coefficients",
            lambda: estimands.coefficient_draws(
                self.posterior, self.layout.coef_names, seed=self.record.seed
            ),
        )
        draws = xr.dot(coefs, weights["weights"], dim="coef")
        if scale == "raw":
            draws = self.record.scale["raw_mean"] + self.record.scale["raw_sd"] * draws
        shown = weights["n"] >= self.options.min_cell_n
        draws = draws.where(shown).transpose("chain", "draw", "wave", *columns)
        draws = draws.assign_coords(n=weights["n"], empty_share=weights["empty_share"])
        draws.attrs.update(
            schools=schools,
            composition=composition if isinstance(composition, str) else "population table",
            scale=scale,
            what="adjusted mean" + (" minus the pooled mean" if scale == "index" else ""),
        )
        return draws

    def loo(self):
        """The run's LOO as ArviZ's ``ELPDData`` (for ``arviz.compare``)."""
        from omlbayes.criticism.loo import read_loo

        return read_loo(self.path)

    def table(self, name: str, **read_csv: object) -> pd.DataFrame:
        """A CSV of the run folder (read once; a copy is returned)."""

        def read() -> pd.DataFrame:
            path = self.path / name
            if not path.is_file():
                raise RunError(f"{self.path}: no {name} in this run")
            return pd.read_csv(path, **read_csv)

        return self._cached(f"table:{name}:{read_csv!r}", read).copy()

    def forget(self, *names: str) -> None:
        """Drop the cached reads of these tables after a stage rewrote them."""
        for key in [k for k in self._cache if k.split(":")[:2] in (["table", n] for n in names)]:
            del self._cache[key]

    def with_record(self, record: RunRecord) -> Run:
        """The same run with another record (new options or timings), sharing what was read."""
        other = Run(self.path, record, diagnostics=self._diagnostics, tree=self._tree)
        other._cache = self._cache
        return other

    def _cached(self, key: str, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]


def _population_table(table: pd.DataFrame, levels: dict) -> pd.DataFrame:
    """A population table checked: covariate columns with known levels and counts ``n``."""
    if "n" not in table.columns:
        raise RunError("composition table: needs a column 'n' (the population count per row)")
    columns = [c for c in table.columns if c != "n"]
    unknown = [c for c in columns if c not in levels or c in ("wave", "school_id")]
    if unknown:
        known = ", ".join(c for c in levels if c not in ("wave", "school_id"))
        raise RunError(f"composition table: column {unknown[0]!r} is not a covariate; use {known}")
    for c in columns:
        bad = sorted(set(table[c].astype(str)) - set(levels[c]))
        if bad:
            raise RunError(
                f"composition table: column {c!r} has unknown level {bad[0]!r}; "
                f"levels: {', '.join(levels[c])}"
            )
    counts = pd.to_numeric(table["n"], errors="coerce")
    if counts.isna().any() or (counts < 0).any() or counts.sum() <= 0:
        raise RunError("composition table: 'n' must be non-negative counts with a positive total")
    return table.assign(**{c: table[c].astype(str) for c in columns}, n=counts)


def as_run(run: Run | Path | str) -> Run:
    """``run`` itself, or the run in the folder it names."""
    return run if isinstance(run, Run) else open_run(run)


def open_run(path: Path | str) -> Run:
    """A run folder written by this package, read lazily (one line if it is not one)."""
    path = Path(path)
    for name in (POSTERIOR, RUN_JSON, DIAGNOSTICS):
        if not (path / name).is_file():
            raise RunError(
                f"{path}: not a complete run folder (no {name}); give a folder under outputs/"
            )
    return Run(path, read_record(path))
