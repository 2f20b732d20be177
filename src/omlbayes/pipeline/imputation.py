"""Multiple imputation of a coded-missing level ("unknown" parental education).

The third way of handling "unknown" next to keeping it as its own category (the default)
and excluding those rows (``subsets.exclude``). Assumption: whether a parent's education
is reported does not depend on what it is, given everything the imputation model sees
(missing at random given the school, the analysis model's covariates and the index).

1. ``fit_imputation_model``: a multinomial logit of the column on the known rows. It is
   *congenial* with the analysis model: it conditions on the school, every covariate of
   the analysis (school type, region, wave, gender, age) and the outcome (the index), with
   the index's slope free to differ by wave, gender, school type and region (the analysis
   lets the parental-education effect differ by those). Without the index, imputed rows
   carry no link between parental education and the index, and the analysis's gaps are
   pulled towards zero by about the "unknown" share. A Normal(0, prior_sd) prior on every
   coefficient (schools with few rows borrow from the rest); Newton's method to the
   posterior mode, and its Laplace approximation.
2. ``impute``: M completed data sets; each draws its own coefficients from that posterior
   (a "proper" imputation: the imputation model's uncertainty reaches the analysis) and then
   a level for every "unknown" row.
3. ``multiple_imputation_run``: each completed data set fitted with the run's model
   (``survey_run.fit_frame``); the draws of the M posteriors are pooled so that their spread
   is Rubin's total variance W + (1 + 1/M) B: mixing the draws as they are gives only
   W + (1 - 1/M) B, so each imputation's draws are shifted by (c - 1) times its mean's
   distance to the mean over imputations, c = sqrt((M + 1) / (M - 1)) (the same shift for
   every adjusted mean, so every contrast gets it too). Written as a folder with
   ``contrasts.csv`` / ``effects.csv`` in the run's format and ``run.json``, so
   ``scripts/compare.py`` puts it next to the own-category and excluded runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from omlbayes import constants as C
from omlbayes.backends.sampling import derived_seed
from omlbayes.criticism import diagnose
from omlbayes.data import schema
from omlbayes.errors import InputError
from omlbayes.model import estimands
from omlbayes.model.spec import ModelSpec
from omlbayes.pipeline.outputs import implied_by_structure
from omlbayes.results import runs, summarise

# Categorical predictors (one-hot), numeric ones (standardized), and the numeric one whose
# slope may differ by the levels of ``MI_INTERACTIONS`` (the analysis model's cells).
MI_PREDICTORS = ("school_id", "school_type", "region", "wave", "gender")
MI_NUMERIC = ("age", "index")
MI_INTERACTIONS = ("index", ("wave", "gender", "school_type", "region"))
PRIOR_SD = 1.0  # each coefficient's log-odds effect (per level, per SD of a numeric one)
INTERCEPT_SD = 5.0
IMPUTATION_CSV = "imputations.csv"
log = logging.getLogger("omlbayes")


@dataclass(frozen=True)
class ImputationModel:
    """A fitted multinomial logit of ``column`` (levels ``levels``, the first the reference)
    on ``features`` (one-hot levels, standardized numeric columns and their interactions):
    posterior mode ``coef`` (features x (K-1)) and the Laplace covariance ``cov`` of its
    flattened form."""

    column: str
    missing: str
    levels: tuple[str, ...]
    predictors: tuple[str, ...]
    features: tuple[str, ...]
    coef: np.ndarray
    cov: np.ndarray
    n_known: int
    n_missing: int
    numeric: tuple[tuple[str, float, float], ...] = ()  # (column, mean, sd)
    interaction: str = ""  # the numeric column whose slope varies by level
    interacts: tuple[str, ...] = ()  # ... of these categorical columns

    def design(self, frame: pd.DataFrame) -> np.ndarray:
        """The features of the rows (levels unseen when fitted get no column)."""
        index = {name: j for j, name in enumerate(self.features)}
        x = np.zeros((len(frame), len(self.features)))
        x[:, 0] = 1.0
        values = {col: (frame[col].to_numpy(float) - mu) / sd for col, mu, sd in self.numeric}
        for col, value in values.items():
            x[:, index[col]] = value
        for col in self.predictors:
            names = col + "=" + frame[col].astype(str).to_numpy().astype(object)
            j = np.array([index.get(n, -1) for n in names])
            rows = np.flatnonzero(j >= 0)
            x[rows, j[rows]] = 1.0
            if col in self.interacts:
                k = np.array([index.get(f"{self.interaction}:{n}", -1) for n in names])
                rows = np.flatnonzero(k >= 0)
                x[rows, k[rows]] = values[self.interaction][rows]
        return x

    def probabilities(self, frame: pd.DataFrame, coef: np.ndarray | None = None) -> np.ndarray:
        """P(level | predictors) per row (rows x K), at ``coef`` (default: the mode)."""
        return _softmax(self.design(frame) @ (self.coef if coef is None else coef))


def _softmax(eta: np.ndarray) -> np.ndarray:
    """Probabilities of K levels from the K-1 log-odds against the reference level."""
    full = np.column_stack([np.zeros(len(eta)), eta])
    full -= full.max(axis=1, keepdims=True)
    p = np.exp(full)
    return p / p.sum(axis=1, keepdims=True)


def _check(frame: pd.DataFrame, column: str, missing: str, predictors: Sequence[str]) -> None:
    absent = [c for c in (column, *predictors) if c not in frame.columns]
    if absent:
        raise InputError(f"imputation: no column {absent[0]!r} in the survey")
    values = frame[column].astype(str)
    if not (values == missing).any():
        raise InputError(f"imputation: no row has {column} = {missing!r}; nothing to impute")
    if (values != missing).sum() == 0:
        raise InputError(f"imputation: every row has {column} = {missing!r}; nothing to learn")


def _levels_seen(frame: pd.DataFrame, col: str) -> list[str]:
    seen = frame[col].astype(str)
    order = (
        [str(c) for c in frame[col].cat.categories]
        if isinstance(frame[col].dtype, pd.CategoricalDtype)
        else sorted(set(seen))
    )
    return [lv for lv in order if (seen == lv).any()]


def fit_imputation_model(
    frame: pd.DataFrame,
    *,
    column: str = "parent_edu",
    missing: str = "unknown",
    predictors: Sequence[str] = MI_PREDICTORS,
    numeric: Sequence[str] = MI_NUMERIC,
    interactions: tuple[str, Sequence[str]] | None = MI_INTERACTIONS,
    prior_sd: float = PRIOR_SD,
    max_iter: int = 50,
) -> ImputationModel:
    """Posterior mode and Laplace covariance of the multinomial logit (see module doc).

    A default predictor the frame lacks is left out (and logged); one the caller names must
    exist. The outcome-free model of earlier versions is ``numeric=(), interactions=None``
    with ``predictors=("school_id", "school_type", "region", "wave")``.
    """
    absent = [c for c in (*predictors, *numeric) if c not in frame.columns]
    named = [c for c in absent if c not in (*MI_PREDICTORS, *MI_NUMERIC)]
    if named:
        raise InputError(f"imputation: no column {named[0]!r} in the survey")
    if absent:
        log.info("imputation: the survey has no %s; left out of the model", ", ".join(absent))
    predictors = tuple(c for c in predictors if c in frame.columns)
    numeric = tuple(c for c in numeric if c in frame.columns)
    _check(frame, column, missing, predictors)
    values = frame[column].astype(str)
    known = frame[values != missing]
    if isinstance(frame[column].dtype, pd.CategoricalDtype):
        levels = tuple(str(c) for c in frame[column].cat.categories if str(c) != missing)
    else:
        levels = tuple(sorted(set(values) - {missing}))
    levels = tuple(lv for lv in levels if (known[column].astype(str) == lv).any())
    if len(levels) < 2:
        raise InputError(f"imputation: {column} has fewer than two known levels; nothing to model")
    scales = tuple((c, float(frame[c].mean()), float(frame[c].std()) or 1.0) for c in numeric)
    slope, by = interactions if interactions is not None else ("", ())
    by = tuple(c for c in by if c in predictors) if slope in numeric else ()
    features = ["(intercept)", *numeric]
    for col in predictors:
        features += [f"{col}={lv}" for lv in _levels_seen(frame, col)]
    for col in by:
        features += [f"{slope}:{col}={lv}" for lv in _levels_seen(frame, col)]
    model = ImputationModel(
        column, missing, levels, predictors, tuple(features),
        np.zeros((len(features), len(levels) - 1)), np.empty((0, 0)),
        len(known), int((values == missing).sum()), scales, slope, by,
    )  # fmt: skip
    x = model.design(known)
    y = pd.Categorical(known[column].astype(str), categories=levels).codes
    onehot = np.eye(len(levels))[y][:, 1:]
    n_feat, k1 = x.shape[1], len(levels) - 1
    prior_prec = np.full(n_feat, 1.0 / prior_sd**2)
    prior_prec[0] = 1.0 / INTERCEPT_SD**2
    precision = np.tile(prior_prec, k1)  # flattened column by column (level-major)
    beta = np.zeros(n_feat * k1)

    def hessian(p: np.ndarray) -> np.ndarray:
        h = np.empty((n_feat * k1, n_feat * k1))
        for a in range(k1):
            for b in range(k1):
                w = p[:, a] * ((a == b) - p[:, b])
                h[a * n_feat : (a + 1) * n_feat, b * n_feat : (b + 1) * n_feat] = (
                    x * w[:, None]
                ).T @ x
        return h + np.diag(precision)

    for _ in range(max_iter):
        p = _softmax(x @ beta.reshape(k1, n_feat).T)[:, 1:]
        grad = (x.T @ (onehot - p)).T.ravel() - precision * beta
        step = np.linalg.solve(hessian(p), grad)
        beta = beta + step
        if np.max(np.abs(step)) < 1e-8:
            break
    p = _softmax(x @ beta.reshape(k1, n_feat).T)[:, 1:]
    cov = np.linalg.inv(hessian(p))
    return replace(model, coef=beta.reshape(k1, n_feat).T.copy(), cov=(cov + cov.T) / 2)


def impute(frame: pd.DataFrame, model: ImputationModel, *, m: int, seed: int) -> list[pd.DataFrame]:
    """``m`` completed copies of ``frame``: the missing level replaced by draws, each copy
    with its own coefficients drawn from the imputation model's posterior; the missing
    level is dropped from the column's categories."""
    if m < 2:
        raise InputError(f"--imputations {m}: multiple imputation needs at least 2")
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(frame[model.column].astype(str).to_numpy() == model.missing)
    x = model.design(frame.iloc[rows])
    chol = np.linalg.cholesky(model.cov)
    k1 = len(model.levels) - 1
    out = []
    for _ in range(m):
        flat = model.coef.T.ravel() + chol @ rng.standard_normal(model.coef.size)
        coef = flat.reshape(k1, -1).T
        p = _softmax(x @ coef)
        pick = (rng.random(len(rows))[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
        values = frame[model.column].astype(str).to_numpy().copy()
        values[rows] = np.asarray(model.levels)[np.minimum(pick, len(model.levels) - 1)]
        done = frame.copy()
        done[model.column] = pd.Categorical(values, categories=list(model.levels), ordered=True)
        out.append(done)
    return out


@dataclass(frozen=True)
class PooledFit:
    """The M fits' effect and contrast draws pooled over imputations (chains stacked)."""

    effects: xr.DataArray
    contrasts: xr.DataArray
    suppressed: set[tuple[str, str, str]]
    n: np.ndarray
    per_imputation: pd.DataFrame  # diagnostics and imputed shares per imputation
    single: list[xr.DataArray]  # each imputation's contrast draws


def fit_imputations(
    frames: list[pd.DataFrame],
    spec: ModelSpec,
    *,
    seed: int,
    min_cell_n: int,
    column: str = "parent_edu",
    progress: Callable[[str], None] = log.info,
) -> PooledFit:
    """Fit every completed data set with ``spec``; pool the effect and contrast draws."""
    from omlbayes.pipeline import survey_run

    effects, contrasts, infos, suppressed, counts = [], [], [], set(), []
    defs = None
    for k, frame in enumerate(frames):
        fitted = survey_run.fit_frame(frame, spec, seed=derived_seed(seed, f"imputation/{k}"))
        diag = diagnose.check(fitted.tree)
        progress(f"imputation {k + 1}/{len(frames)}: {diagnose.verdict_line(diag)}")
        eff = estimands.effect_draws(
            fitted.tree["posterior"].to_dataset(),
            fitted.gcomp,
            seed=derived_seed(seed, f"imputation/{k}"),
        )
        n = fitted.gcomp["n"].to_numpy()
        cells = {k: eff[k].to_numpy() for k in ("breakdown", "group", "wave")}
        table = summarise.suppress_small_cells(
            pd.DataFrame({**cells, "n": n}), min_cell_n=min_cell_n
        )
        suppressed |= {(r.breakdown, r.group, r.wave) for r in table.itertuples() if r.suppressed}
        if defs is None:
            waves = tuple(
                w
                for w in dict.fromkeys(fitted.gcomp["wave"].to_numpy())
                if w != estimands.ALL_WAVES
            )
            present = set(waves)
            pairs = tuple(p for p in spec.wave_contrasts if set(p) <= present)
            defs = estimands.contrast_list(
                table[["breakdown", "group"]], waves=waves, wave_pairs=pairs
            )
        effects.append(eff)
        counts.append(n)
        shares = frame[column].astype(str).value_counts(normalize=True)
        infos.append(
            {
                "imputation": k + 1,
                "diagnostics_passed": diag["passed"],
                "max_r_hat": diag["max_r_hat"],
                "min_ess_bulk": diag["min_ess_bulk"],
                "min_ess_tail": diag["min_ess_tail"],
                **{
                    f"share_{lv}": float(shares.get(lv, 0.0)) for lv in frame[column].cat.categories
                },
            }
        )

    # each imputation's own contrasts (``single``); pooled with Rubin's spread (a shift
    # that is the same affine map for effects and, through them, for contrasts)
    contrasts = [estimands.contrast_draws(eff, defs) for eff in effects]

    def stack(draws: list[xr.DataArray]) -> xr.DataArray:
        if all(C.PROPOSAL_COORD in d.coords for d in draws):  # importance-sampled fits:
            offsets = np.cumsum([0] + [int(d[C.PROPOSAL_COORD].max()) + 1 for d in draws])
            draws = [  # one fit's proposals are not another's
                d.assign_coords({C.PROPOSAL_COORD: d[C.PROPOSAL_COORD] + int(o)})
                for d, o in zip(draws, offsets, strict=False)
            ]
        pooled = xr.concat(draws, dim="chain")
        return pooled.assign_coords(chain=np.arange(pooled.sizes["chain"]))

    return PooledFit(
        stack(rubin_spread(effects)), stack(rubin_spread(contrasts)), suppressed,
        np.min(np.stack(counts), axis=0), pd.DataFrame(infos), contrasts,
    )  # fmt: skip


def rubin_spread(draws: list[xr.DataArray]) -> list[xr.DataArray]:
    """Each imputation's draws shifted so that the pooled draws' variance is Rubin's total
    W + (1 + 1/M) B rather than the W + (1 - 1/M) B of plain mixing: each imputation's
    mean moves (c - 1) times its distance to the mean over imputations, c =
    sqrt((M + 1) / (M - 1)); within-imputation spread and shape are kept."""
    m = len(draws)
    means = [d.mean(("chain", "draw")) for d in draws]
    centre = sum(means) / m
    c = np.sqrt((m + 1) / (m - 1))
    return [d + (c - 1.0) * (mu - centre) for d, mu in zip(draws, means, strict=True)]


def multiple_imputation_run(
    spec: ModelSpec,
    *,
    data: Path | str,
    column_map: Path | str | None = None,
    options,  # survey_run.RunOptions
    m: int = 5,
    column: str = "parent_edu",
    missing: str = "unknown",
    progress: Callable[[str], None] = log.info,
) -> Path:
    """Impute ``column == missing`` M times, fit each, pool: a comparison folder (see doc)."""
    from omlbayes.data import scale
    from omlbayes.data.ingest import read_survey
    from omlbayes.pipeline import survey_run

    survey = read_survey(data, column_map=column_map)
    scaled = scale.build_index(survey.frame)
    frame = scaled.frame
    model = fit_imputation_model(frame, column=column, missing=missing)
    progress(
        f"imputation model: {model.n_known} known and {model.n_missing} {missing!r} rows of "
        f"{column}, {len(model.features)} features"
    )
    frames = impute(frame, model, m=m, seed=options.seed)
    output = replace(options.output, monitor=survey.monitor, area=survey.area)
    pooled = fit_imputations(
        frames, spec, seed=options.seed, min_cell_n=output.min_cell_n, column=column,
        progress=progress,
    )  # fmt: skip
    name = options.name or runs.run_name(f"{spec.name}_mi_{column}")
    with runs.staged_run(options.out_dir, name) as stage:
        effects = summarise.effects_table(pooled.effects, pooled.n, options=output)
        effects.to_csv(stage.path / "effects.csv", index=False)
        contrasts = summarise.contrasts_table(
            pooled.contrasts, suppressed=pooled.suppressed, options=output
        )
        contrasts["model_implied"] = implied_by_structure(contrasts, spec.to_dict())
        contrasts.to_csv(stage.path / "contrasts.csv", index=False)
        known = frame[frame[column].astype(str) != missing][column].astype(str)
        per = pooled.per_imputation.assign(
            **{f"known_share_{lv}": float((known == lv).mean()) for lv in model.levels}
        )
        per.to_csv(stage.path / IMPUTATION_CSV, index=False)
        passed = bool(per["diagnostics_passed"].all())
        runs.write_json(
            stage.path / runs.DIAGNOSTICS,
            {"passed": passed, "imputations": per.to_dict(orient="records")},
        )
        levels = {c: list(survey.levels.of(c)) for c in schema.CATEGORICAL_COLUMNS}
        levels[column] = list(model.levels)
        stage.write_record(
            runs.RunRecord.new(
                model=f"{spec.name} (MI {column}, M={m})",
                kind="survey",
                options=output.to_dict(),
                seed=options.seed,
                levels=levels,
                spec=spec.to_dict(),
                spec_sha256=spec.sha256(),
                data=survey_run.survey_facts(
                    survey,
                    column_map,
                    len(frame),
                    {**survey.exclusions, **scaled.exclusions},
                    imputation={
                        "column": column,
                        "missing": missing,
                        "m": m,
                        "predictors": list(model.predictors),
                        "model": "multinomial logit on the school, the analysis covariates "
                        "and the index (its slope by wave, gender, school type and region), "
                        "Normal(0, 1) per coefficient, Laplace posterior",
                        "numeric": [c for c, _, _ in model.numeric],
                        "pooling": "draws mixed over imputations, each imputation's mean "
                        "moved so the pooled variance is Rubin's W + (1 + 1/M) B",
                        "n_imputed": model.n_missing,
                    },
                ),
                sampler={**spec.sampler.__dict__},
            )
        )
    return stage.final
