"""Generic mode: any Bambi formula on any table (``scripts/fit.py --formula``).

The same machinery as the survey path, pointed at a plain table, so it can be checked
against public multilevel data with known results (``validation/studies.py``).

Which backend fits
------------------
A Gaussian formula whose terms are plain column names and random intercepts ``(1|g)`` /
``(1|g1:g2)`` goes to the exact collapsed backend (fast, no funnels), unless the spec
asks for ``backend = "bambi"`` (``--backend bambi``). Anything else (other families,
slopes ``(x|g)``, interactions ``a:b``, transformations ``log(x)``) goes to Bambi; the
run records which backend fitted and why.

Priors
------
The flagship priors are written for a standardized response, so they are not reused
as they stand on a raw response such as ``mAch`` (SD about 7):

- Collapsed path: the response is standardized inside (``z = (y - mean) / sd``) and
  numeric predictors too, the model is fitted on that scale with weakly informative
  priors (``GENERIC_PRIORS``: Intercept and slopes Normal(0, 2.5), group SDs and sigma
  HalfNormal(1), in SD units of the response per SD of the predictor), and every draw
  is transformed back to the data's scale (slopes ``* sd_y / sd_x``, group effects,
  group SDs and sigma ``* sd_y``, the Intercept ``mean_y + sd_y * a - sum b_j mean_x_j``).
  These are the same priors, up to the HalfNormal for the scales, that Bambi's
  autoscaling picks, so both paths fit comparable models. A spec named with ``--model``
  (``spec_priors=True``) supplies its own priors instead, read on the standardized scale.
- Bambi path: Bambi's own default priors (scaled to the data) unless a spec is named
  with ``--model``; then its priors go through ``bambi_backend.spec_priors`` (on the
  data's scale, as that spec's author wrote them).

Rows with a missing value in a column the formula reads are excluded and counted per
column (a row is counted under the first such column in formula order), never dropped
silently. The saved posterior holds no rows of the table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from omlbayes.criticism import diagnose
from omlbayes.errors import InputError, SpecError
from omlbayes.model.design import variance_names
from omlbayes.model.spec import FAMILIES, ModelSpec, Prior
from omlbayes.results import runs, summarise

SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
# Weakly informative priors on the standardized scale (response and numeric predictors
# in SD units): an effect of 5 SD is already extreme.
GENERIC_PRIORS = {
    "Intercept": Prior("Normal", {"mu": 0.0, "sigma": 2.5}),
    "common": Prior("Normal", {"mu": 0.0, "sigma": 2.5}),
    "group_sigma": Prior("HalfNormal", {"sigma": 1.0}),
    "sigma": Prior("HalfNormal", {"sigma": 1.0}),
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_GROUP = re.compile(
    r"^\(\s*1\s*\|\s*([A-Za-z_][A-Za-z0-9_.]*(?:\s*:\s*[A-Za-z_][A-Za-z0-9_.]*)*)\s*\)$"
)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


@dataclass(frozen=True)
class ParsedFormula:
    """A formula split into response and right-hand-side terms (as written)."""

    text: str
    response: str
    terms: tuple[str, ...]
    intercept: bool

    @property
    def common(self) -> tuple[str, ...]:
        return tuple(t for t in self.terms if not t.startswith("("))

    @property
    def group(self) -> tuple[tuple[str, ...], ...]:
        out = []
        for t in self.terms:
            m = _GROUP.match(t)
            if m:
                out.append(tuple(p.strip() for p in m.group(1).split(":")))
        return tuple(out)

    def collapsible(self) -> tuple[bool, str]:
        """Whether the collapsed backend can fit it, and why not."""
        if not self.intercept:
            return False, "the formula has no intercept"
        for t in self.terms:
            if t.startswith("("):
                if not _GROUP.match(t):
                    return False, f"group term {t} is not a random intercept (1|g)"
            elif not _NAME.match(t):
                return False, f"term {t} is not a plain column name"
        return True, ""


def _split_top(text: str, sep: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def parse_formula(formula: str) -> ParsedFormula:
    """``"y ~ x + (1|g)"`` -> response ``y``, terms ``("x", "(1|g)")``."""
    if formula.count("~") != 1:
        raise SpecError(f"formula {formula!r} needs exactly one '~' (response ~ terms)")
    lhs, rhs = (s.strip() for s in formula.split("~"))
    if not _NAME.match(lhs):
        raise SpecError(f"formula {formula!r}: the response must be a column name, got {lhs!r}")
    terms, intercept = [], True
    for raw in _split_top(rhs, "+"):
        term = re.sub(r"\s+", "", raw) if raw.startswith("(") else raw
        if term in ("", "1"):
            if term == "":
                raise SpecError(f"formula {formula!r} has an empty term; check the '+' signs")
            continue
        if term in ("0", "-1"):
            intercept = False
            continue
        terms.append(term)
    return ParsedFormula(formula, lhs, tuple(terms), intercept)


def _formula_columns(parsed: ParsedFormula) -> tuple[list[str], list[str]]:
    """Names the formula uses as columns (identifiers not called as functions), in order."""
    text = parsed.text
    names: list[str] = []
    for m in _IDENT.finditer(text):
        after = text[m.end() :].lstrip()
        if after.startswith("("):
            continue  # a function name: log(x), C(x), scale(x)
        if m.group(0) not in names:
            names.append(m.group(0))
    return names, []


# --- reading ------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame
    source: str
    sha256: str
    n_read: int
    exclusions: dict[str, int]


def read_table(path: Path | str | None, parsed: ParsedFormula) -> Table:
    """Read a CSV/TSV/Parquet table; keep the formula's columns; exclude (and count)
    rows with missing values in them."""
    if path is None:
        raise InputError("--formula needs --data: a .csv or .parquet table")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; give --data a .csv or .parquet table")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(
            f"{path}: unknown file type {suffix or '(none)'!r}; generic mode reads "
            f"{', '.join(SUFFIXES)}"
        )
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    except Exception as err:  # parser errors: one line naming the file
        raise InputError(f"{path}: cannot be read as {suffix} ({err})") from None
    names, _ = _formula_columns(parsed)
    columns = [c for c in names if c in frame.columns]
    if parsed.response not in frame.columns:
        raise InputError(
            f"{path}: the response column {parsed.response!r} is not in the table; "
            f"columns: {', '.join(map(str, frame.columns[:20]))}"
        )
    missing = [
        c for c in names if c not in frame.columns and c not in ("C", "I", "np", "True", "False")
    ]
    if missing:
        raise InputError(
            f"{path}: formula column(s) {', '.join(missing)} not in the table; "
            f"columns: {', '.join(map(str, frame.columns[:20]))}"
        )
    frame = frame[columns]
    exclusions: dict[str, int] = {}
    gone = np.zeros(len(frame), dtype=bool)
    for col in columns:
        miss = frame[col].isna().to_numpy() & ~gone
        if miss.any():
            exclusions[f"missing_{col}"] = int(miss.sum())
            gone |= miss
    kept = frame.loc[~gone].reset_index(drop=True)
    if len(kept) == 0:
        raise InputError(f"{path}: no row has all of {', '.join(columns)}; nothing to fit")
    return Table(kept, str(path), sha, len(frame), exclusions)


# --- the collapsed path -------------------------------------------------------------


@dataclass(frozen=True)
class Standardization:
    """Constants of the internal standardization (response and numeric predictors)."""

    y_mean: float
    y_sd: float
    x_mean: dict[str, float]
    x_sd: dict[str, float]


def _is_numeric(series: pd.Series) -> bool:
    return (
        pd.api.types.is_numeric_dtype(series)
        and not pd.api.types.is_bool_dtype(series)
        and not isinstance(series.dtype, pd.CategoricalDtype)
    )


def _collapsed_frame(
    frame: pd.DataFrame, parsed: ParsedFormula
) -> tuple[pd.DataFrame, Standardization, tuple[tuple[str, ...], ...]]:
    """The standardized frame; each multi-column group term becomes one column of the
    observed combinations (so only observed cells get coefficients, as in Bambi)."""
    out = pd.DataFrame(index=frame.index)
    y = frame[parsed.response].to_numpy(dtype=np.float64)
    y_sd = float(np.std(y, ddof=1)) if len(y) > 1 else 0.0
    if not y_sd > 0:
        raise InputError(f"the response {parsed.response!r} is constant; nothing to model")
    out[parsed.response] = (y - y.mean()) / y_sd
    x_mean, x_sd = {}, {}
    for col in parsed.common:
        values = frame[col]
        if _is_numeric(values):
            v = values.to_numpy(dtype=np.float64)
            sd = float(np.std(v, ddof=1))
            if not sd > 0:
                raise InputError(f"predictor {col!r} is constant; drop it from the formula")
            x_mean[col], x_sd[col] = float(v.mean()), sd
            out[col] = (v - v.mean()) / sd
        else:
            out[col] = values.astype(str)
    group = []
    for cols in parsed.group:
        name = ":".join(cols)
        if name not in out:
            out[name] = frame[list(cols)].astype(str).agg(":".join, axis=1)
        group.append((name,))
    return out, Standardization(float(y.mean()), y_sd, x_mean, x_sd), tuple(group)


def _back_transform(posterior: xr.Dataset, st: Standardization, layout) -> xr.Dataset:
    """Draws on the standardized scale -> draws on the data's scale (Bambi's names)."""
    out = {}
    intercept = st.y_mean + st.y_sd * posterior["Intercept"]
    for term in layout.terms:
        if term.kind == "numeric":
            col = term.columns[0]
            slope = posterior[term.name] * st.y_sd / st.x_sd[col]
            out[term.name] = slope
            intercept = intercept - slope * st.x_mean[col]
        elif term.kind in ("categorical", "group"):
            out[term.name] = posterior[term.name] * st.y_sd
            if term.kind == "group":
                out[f"{term.name}_sigma"] = posterior[f"{term.name}_sigma"] * st.y_sd
    out["Intercept"] = intercept
    out["sigma"] = posterior["sigma"] * st.y_sd
    ordered = {"Intercept": out.pop("Intercept"), **out}
    return xr.Dataset(ordered, coords={"chain": posterior["chain"], "draw": posterior["draw"]})


def _fit_collapsed(table, parsed, spec, seed, progressbar, timings, spec_priors):
    from omlbayes.backends.collapsed import fit_collapsed
    from omlbayes.model.design import build_layout, grouped_stats

    frame, st, group = _collapsed_frame(table.frame, parsed)
    priors = dict(spec.priors) if spec_priors else GENERIC_PRIORS
    model = dataclasses.replace(
        spec,
        name="generic",
        description=parsed.text,
        response=parsed.response,
        family="gaussian",
        common=parsed.common,
        group=group,
        school_by_wave=False,
        priors=priors,
        breakdowns=(),
        wave_contrasts=(),
    )
    t = time.perf_counter()
    layout = build_layout(frame, model)
    stats = grouped_stats(frame, layout, parsed.response)
    timings["sufficient_stats_s"] = time.perf_counter() - t
    tree, fit_timings, fit_facts = fit_collapsed(
        stats, layout, model, seed=seed, progressbar=progressbar
    )
    timings.update(fit_timings)
    tree["posterior"] = xr.DataTree(_back_transform(tree["posterior"].to_dataset(), st, layout))
    info = {
        "standardization": dataclasses.asdict(st),
        "priors": {k: str(v) for k, v in priors.items()},
        "priors_scale": "standardized response (and numeric predictors); see generic.py",
        "n_coefficients": layout.n_coef,
        "fit": fit_facts,
    }
    return tree, info


# --- the Bambi path -----------------------------------------------------------------


def _fit_bambi(table, parsed, spec, family, seed, progressbar, timings, spec_priors):
    from omlbayes.backends import bambi_backend as bb

    model_spec = dataclasses.replace(spec, family=family)
    if spec_priors:
        tree, fit_timings = bb.fit_bambi(
            table.frame, model_spec, seed=seed, formula=parsed.text, progressbar=progressbar
        )
        timings.update(fit_timings)
        return tree, {"priors": {k: str(v) for k, v in spec.priors.items()}}
    import bambi as bmb

    data = bb.model_frame(table.frame, parsed.text)
    t0 = time.perf_counter()
    try:
        model = bmb.Model(parsed.text, data, family=bb.FAMILY_NAMES[family], dropna=False)
        model.build()
    except Exception as err:
        raise SpecError(f"Bambi cannot build {parsed.text!r}: {err}") from None
    timings["build_s"] = time.perf_counter() - t0
    dt, timings["sample_s"] = bb.sample_model(
        model, spec.sampler, seed=seed, progressbar=progressbar
    )
    priors = {}
    for comp in model.distributional_components.values():
        for name, term in comp.terms.items():
            priors[name] = str(getattr(term, "prior", ""))
    for name, prior in getattr(model.family.likelihood, "priors", {}).items() or {}:
        priors[name] = str(prior)
    return dt, {"priors": priors, "priors_scale": "Bambi defaults"}


# --- the run ------------------------------------------------------------------------


def choose_backend(parsed: ParsedFormula, family: str, spec: ModelSpec) -> tuple[str, str]:
    """``("collapsed" | "bambi", reason)``."""
    if spec.sampler.backend == "bambi":
        return "bambi", "asked for (--backend bambi or the spec)"
    if family != "gaussian":
        return "bambi", f"family {family} (the collapsed backend is Gaussian only)"
    ok, why = parsed.collapsible()
    if not ok:
        return "bambi", why
    return "collapsed", "Gaussian with random intercepts only: exact collapsed fit"


def fit_formula_run(
    formula: str,
    *,
    data: Path | str | None,
    family: str = "gaussian",
    spec: ModelSpec,
    options,
    spec_priors: bool = False,
    progress=None,
):
    """Fit any formula on any table and write a run folder (no factsheet parts).

    Parameters
    ----------
    formula
        A Bambi formula, e.g. ``"mAch ~ meanses + (1|school)"``.
    data
        A ``.csv``/``.tsv``/``.parquet`` table.
    family
        Response family (``spec.FAMILIES``).
    spec
        Sampler settings (and priors with ``spec_priors``: see the module docstring).
    spec_priors
        Use the spec's priors (the user named a spec with ``--model``) instead of the
        generic defaults.
    options
        ``survey_run.RunOptions`` (seed, out_dir, name, progressbar).

    Returns
    -------
    survey_run.RunResult
        Run folder path, diagnostics, and an empty headline table.
    """
    from omlbayes.pipeline import survey_run
    from omlbayes.plots import diagnostics as diag_plots

    progress = progress or survey_run.log.info
    if family not in FAMILIES:
        raise SpecError(f"family {family!r} unknown; use one of {', '.join(FAMILIES)}")
    if spec.residual_sd_by is not None:
        if spec_priors:  # the user named this spec: its residual groups cannot apply
            raise SpecError(
                f"--formula fits one residual SD, but model {spec.name!r} has residual_sd_by = "
                f"{spec.residual_sd_by!r}; drop --model or name one without it (e.g. flagship)"
            )
        # the default survey model's residual groups are survey structure, like its terms
        spec = dataclasses.replace(spec, residual_sd_by=None)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    parsed = parse_formula(formula)
    table = read_table(data, parsed)
    progress(
        f"{table.n_read} rows read, {len(table.frame)} analysed"
        + (f"; excluded: {table.exclusions}" if table.exclusions else "; nothing excluded")
    )
    backend, reason = choose_backend(parsed, family, spec)
    progress(f"backend {backend}: {reason}")
    name = options.name or runs.run_name("generic")
    output = options.output
    with runs.staged_run(options.out_dir, name) as stage:
        staging = stage.path
        if backend == "collapsed":
            tree, info = _fit_collapsed(
                table, parsed, spec, options.seed, options.progressbar, timings, spec_priors
            )
        else:
            tree, info = _fit_bambi(
                table, parsed, spec, family, options.seed, options.progressbar, timings,
                spec_priors,
            )  # fmt: skip
        timings["fit_s"] = time.perf_counter() - t0
        diagnostics = diagnose.check(tree)
        progress(diagnose.verdict_line(diagnostics))
        runs.write_posterior(tree, staging / runs.POSTERIOR)
        runs.write_json(staging / runs.DIAGNOSTICS, diagnostics)
        posterior = tree["posterior"].to_dataset()
        summarise.parameter_summary(posterior, options=output).to_csv(
            staging / "summary.csv", index_label="parameter"
        )
        figures = staging / "figures"
        figures.mkdir()
        hyper = variance_names(posterior.data_vars)
        if hyper:
            diag_plots.plot_rank_hyper(tree, hyper, figures / "rank_hyper.png")
        if "sample_stats" in tree.children and "energy" in tree["sample_stats"].dataset:
            diag_plots.plot_energy(tree, figures / "energy.png")
        timings["total_s"] = time.perf_counter() - t0
        priors = info.pop("priors", {})
        stage.write_record(
            runs.RunRecord.new(
                model="generic",
                kind="formula",
                options=output.to_dict(),
                seed=options.seed,
                data={
                    "source": table.source,
                    "sha256": table.sha256,
                    "n_read": table.n_read,
                    "n_analysed": len(table.frame),
                    "exclusions": table.exclusions,
                },
                spec={"source": spec.source, "family": family},
                sampler={**spec.sampler.__dict__, "backend": backend},
                priors=priors,
                formula=formula,
                n_coefficients=info.pop("n_coefficients", None),
                timings=timings,
                fit={"backend": backend, "backend_reason": reason, **info},
            )
        )
    path = stage.final
    return survey_run.RunResult(path, diagnostics, pd.DataFrame(), output)
