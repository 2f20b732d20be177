"""The Bambi backend: the reference path, and the one for non-Gaussian families.

The model is the spec's formula (or any Bambi formula, "generic mode") fitted by Bambi
with the spec's priors. Three choices keep it the same model as the collapsed path, with
the same names (``Intercept``, ``wave[2016]``, ``1|wave:gender[2014:boy]``):

- Categorical columns keep only the levels present in the data, in declared order, so
  the first present level is the reference (as in ``design.build_layout``). formulae
  itself keeps unused declared levels: an absent first level would become a reference
  with no rows, and every group term would get cells for levels nobody has.
- String columns become categoricals with sorted levels (``design`` sorts them too).
- ``center_predictors=False``: Bambi otherwise puts the Intercept prior on the intercept
  of the centered design, which is not the spec's ``Intercept``.

The returned DataTree holds no student rows: ``observed_data``, ``constant_data``,
``log_likelihood`` and any group with an observation dimension are removed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import time

import bambi as bmb
import pandas as pd
import xarray as xr

from omlbayes.errors import SpecError
from omlbayes.model.spec import ModelSpec, Prior, SamplerSettings

# Our family names -> Bambi's (the same words today; one table so they can diverge).
FAMILY_NAMES = {
    "gaussian": "gaussian",
    "t": "t",
    "bernoulli": "bernoulli",
    "poisson": "poisson",
    "negativebinomial": "negativebinomial",
    "cumulative": "cumulative",
}
# Our sampler names -> Bambi's inference_method, and the packages each one needs.
INFERENCE_METHODS = {"nutpie": "nutpie", "pymc": "pymc", "numpyro": "numpyro"}
_NEEDS = {"nutpie": ("nutpie",), "pymc": (), "numpyro": ("numpyro", "jax")}
_FIX = {"nutpie": "pip install nutpie", "numpyro": "pip install -e .[jax]"}
# Families whose likelihood has a residual scale called ``sigma`` (the spec's ``sigma``).
_SIGMA_FAMILIES = ("gaussian", "t")
# Groups that carry one value per student (privacy: never in a saved posterior).
STUDENT_GROUPS = ("observed_data", "constant_data", "log_likelihood", "predictions_constant_data")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def _formula_columns(formula: str, frame: pd.DataFrame) -> list[str]:
    """The frame's columns a formula names (plain identifiers; enough for our formulas)."""
    tokens = set(_IDENTIFIER.findall(formula))
    return [c for c in frame.columns if c in tokens]


def model_frame(frame: pd.DataFrame, formula: str) -> pd.DataFrame:
    """The columns the formula reads, coded as ``design.build_layout`` codes them.

    Returns a new frame: categoricals keep only the levels present (declared order);
    string columns become categoricals with sorted levels. Missing values raise (Bambi
    would otherwise refuse, or with ``dropna`` drop rows silently).
    """
    columns = _formula_columns(frame=frame, formula=formula)
    if not columns:
        raise SpecError(f"formula {formula!r} names none of the data's columns; check the names")
    out = frame[columns].copy()
    for col in columns:
        n_missing = int(out[col].isna().sum())
        if n_missing:
            raise SpecError(
                f"column {col!r} has {n_missing} missing value(s); the model reads every row, "
                "so drop or impute them before fitting"
            )
        values = out[col]
        if isinstance(values.dtype, pd.CategoricalDtype):
            out[col] = values.cat.remove_unused_categories()
        elif pd.api.types.is_string_dtype(values) or pd.api.types.is_object_dtype(values):
            text = values.astype(str)
            out[col] = pd.Categorical(text, categories=sorted(text.unique()))
    return out.reset_index(drop=True)


def _group_prior(prior: Prior) -> bmb.Prior:
    """A partially pooled term: Normal(0, tau) with tau from the spec's group_sigma prior."""
    return bmb.Prior("Normal", mu=0.0, sigma=prior.bambi())


def spec_priors(model: bmb.Model, spec: ModelSpec) -> dict[str, bmb.Prior]:
    """The spec's priors for the terms ``model`` has; other terms keep Bambi's defaults.

    ``Intercept`` and ``sigma`` take the spec's entries; a common term takes its own entry
    or the ``common`` default when the spec knows the term (one of ``spec.common``, or
    named in ``[priors]``); an intercept-only group term ``1|g`` takes its own entry or
    ``group_sigma`` as the prior of its SD. So with the spec's own formula every term gets
    the spec's prior, and in generic mode a term the spec does not know (a new covariate,
    a group slope) gets Bambi's default, scaled to the data. Spec terms absent from the
    formula are ignored.
    """
    parent = model.family.likelihood.parent
    out: dict[str, bmb.Prior] = {}
    for name in model.parameters[parent].terms:
        if name == "Intercept":
            out[name] = spec.prior_for("Intercept", "Intercept").bambi()
        elif "|" not in name:  # a common term
            if name in spec.common or name in spec.priors:
                out[name] = spec.prior_for(name, "common").bambi()
        elif name.startswith("1|") or name in spec.priors:  # a group term "expr|factor"
            out[name] = _group_prior(spec.prior_for(name, "group_sigma"))
    if spec.family in _SIGMA_FAMILIES and "sigma" in model.parameters:
        out["sigma"] = spec.prior_for("sigma", "sigma").bambi()
    return out


def build_bambi_model(
    frame: pd.DataFrame, spec: ModelSpec, *, formula: str | None = None
) -> bmb.Model:
    """The Bambi model of ``spec`` (or of ``formula``) on ``frame``, with the spec's priors.

    Parameters
    ----------
    frame
        Student rows; only the columns the formula names are passed on to Bambi.
    spec
        The model spec: family, priors and (unless ``formula`` is given) the formula.
    formula
        Generic mode: any Bambi formula. The spec's priors then apply only to the terms
        the formula has (see ``spec_priors``); the others get Bambi's defaults.

    Returns
    -------
    bmb.Model
        Built, ready to fit; ``print(model)`` shows every prior.
    """
    if spec.family not in FAMILY_NAMES:
        raise SpecError(f"family {spec.family!r} unknown; use one of {', '.join(FAMILY_NAMES)}")
    text = spec.formula() if formula is None else formula
    data = model_frame(frame, text)
    try:
        model = bmb.Model(
            text, data, family=FAMILY_NAMES[spec.family], center_predictors=False, dropna=False
        )
    except Exception as err:  # formulae/Bambi parse and coding errors: one line for the user
        raise SpecError(f"Bambi cannot build {text!r}: {err}") from None
    model.set_priors(priors=spec_priors(model, spec))
    model.build()
    return model


def _check_installed(sampler: str) -> str:
    if sampler not in INFERENCE_METHODS:
        known = ", ".join(INFERENCE_METHODS)
        raise SpecError(f"sampler {sampler!r} unknown to the bambi backend; use one of {known}")
    missing = [pkg for pkg in _NEEDS[sampler] if importlib.util.find_spec(pkg) is None]
    if missing:
        raise SpecError(
            f"sampler {sampler!r} needs {', '.join(missing)}, not installed; run: {_FIX[sampler]}"
        )
    return INFERENCE_METHODS[sampler]


def strip_student_rows(dt: xr.DataTree) -> xr.DataTree:
    """A copy of ``dt`` without student-level groups and without ``*_offset`` variables."""
    groups = {}
    for name, node in dt.children.items():
        ds = node.to_dataset()
        if name in STUDENT_GROUPS or "__obs__" in ds.dims:
            continue
        if name == "posterior":
            ds = ds.drop_vars([v for v in ds.data_vars if str(v).endswith("_offset")])
        groups[name] = ds
    return xr.DataTree.from_dict(groups)


def fit_bambi(
    frame: pd.DataFrame,
    spec: ModelSpec,
    *,
    seed: int,
    progressbar: bool = True,
    formula: str | None = None,
) -> tuple[xr.DataTree, dict[str, float]]:
    """Fit ``spec`` (or ``formula``) with Bambi; every sampler setting is passed explicitly.

    Returns
    -------
    (DataTree, timings)
        ``posterior`` named as Bambi names it (``Intercept``, ``wave`` over ``wave_dim``,
        ``1|wave:gender`` over ``wave:gender__factor_dim``, ``1|wave:gender_sigma``,
        ``sigma``) and ``sample_stats``; no student rows. ``timings`` has ``build_s`` and
        ``sample_s``.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    model = build_bambi_model(frame, spec, formula=formula)
    timings["build_s"] = time.perf_counter() - t0
    dt, sample_s = sample_model(model, spec.sampler, seed=seed, progressbar=progressbar)
    timings["sample_s"] = sample_s
    return dt, timings


def sample_model(
    model: bmb.Model, settings: SamplerSettings, *, seed: int, progressbar: bool = True
) -> tuple[xr.DataTree, float]:
    """Sample a built Bambi model with every setting explicit; no student rows returned."""
    method = _check_installed(settings.sampler)
    t0 = time.perf_counter()
    dt = model.fit(
        inference_method=method,
        draws=settings.draws,
        tune=settings.tune,
        chains=settings.chains,
        cores=min(settings.chains, os.cpu_count() or 1),
        random_seed=seed,
        progressbar=progressbar,
        omit_offsets=True,
        include_response_params=False,
        compute_convergence_checks=False,
    )
    return strip_student_rows(dt), time.perf_counter() - t0
