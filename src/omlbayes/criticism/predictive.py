"""Prior and posterior predictive draws of the index for a subsample of students.

Only used for the predictive-check figures; the draws are never saved (student rows).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pymc as pm
import xarray as xr

from omlbayes.errors import SpecError
from omlbayes.model.design import SIGMA_DIM_SUFFIX, DesignLayout, design_matrix, residual_groups
from omlbayes.model.estimands import coefficient_draws
from omlbayes.model.spec import ModelSpec


def subsample(frame: pd.DataFrame, *, size: int, seed: int) -> pd.DataFrame:
    if len(frame) <= size:
        return frame
    return frame.sample(n=size, random_state=seed)


def prior_predictive(
    frame: pd.DataFrame, layout: DesignLayout, spec: ModelSpec, *, draws: int, seed: int
) -> np.ndarray:
    """(draws x rows) index values simulated from the priors alone."""
    rng = np.random.default_rng(seed)
    by = spec.residual_sd_by
    groups = residual_groups(frame, by)
    with pm.Model():
        sigma = spec.prior_for("sigma", "sigma").pymc("sigma", shape=len(groups))
        scales = []
        for term in layout.terms:
            if term.kind == "group":
                scale = spec.prior_for(term.name, "group_sigma").pymc(f"{term.name}_sigma")
            else:
                kind = "Intercept" if term.kind == "intercept" else "common"
                scale = spec.prior_for(term.name, kind).scale
            scales.append((scale, term.size))
        values = pm.draw(
            [sigma] + [s for s, _ in scales if not isinstance(s, float)],
            draws=draws,
            random_seed=seed,
        )
    sigma_draws, group_draws = values[0], iter(values[1:])
    sd = np.concatenate(
        [
            np.repeat(
                np.full((draws, 1), s) if isinstance(s, float) else next(group_draws)[:, None],
                size,
                axis=1,
            )
            for s, size in scales
        ],
        axis=1,
    )
    coefs = rng.standard_normal(sd.shape) * sd
    w = design_matrix(frame, layout)
    mu = (w @ coefs.T).T
    return mu + rng.standard_normal(mu.shape) * sigma_draws[:, _row_groups(frame, by, groups)]


def _row_groups(frame: pd.DataFrame, by: str | None, groups: tuple[str, ...]) -> np.ndarray:
    """Each row's residual-SD group (all 0 without ``residual_sd_by``)."""
    if by is None:
        return np.zeros(len(frame), dtype=np.int64)
    codes = pd.Index(groups).get_indexer(frame[by].astype("string"))
    if (codes < 0).any():
        raise SpecError(f"column {by!r} has a level without a residual SD in the fitted model")
    return codes


def posterior_predictive(
    frame: pd.DataFrame, layout: DesignLayout, posterior: xr.Dataset, *, draws: int, seed: int
) -> np.ndarray:
    """(draws x rows) replicated index values from the fitted model."""
    rng = np.random.default_rng(seed)
    coefs = coefficient_draws(posterior, layout.coef_names, seed=seed)
    flat = coefs.stack(sample=("chain", "draw")).transpose("sample", "coef").to_numpy()
    sigma_var = posterior["sigma"]
    extra = [d for d in sigma_var.dims if d not in ("chain", "draw")]
    sigma = sigma_var.stack(sample=("chain", "draw")).transpose("sample", *extra).to_numpy()
    if extra:  # one residual SD per level of a column
        by = extra[0].removesuffix(SIGMA_DIM_SUFFIX)
        groups = tuple(map(str, sigma_var[extra[0]].to_numpy()))
        rows = _row_groups(frame, by, groups)
    else:
        sigma, rows = sigma[:, None], np.zeros(len(frame), dtype=np.int64)
    pick = rng.choice(flat.shape[0], size=min(draws, flat.shape[0]), replace=False)
    mu = (design_matrix(frame, layout) @ flat[pick].T).T
    return mu + rng.standard_normal(mu.shape) * sigma[pick][:, rows]


def prior_predictive_check(prior_draws: np.ndarray, observed: np.ndarray) -> dict:
    """The whole model's prior predictive check: the spread and centre of the index that
    the priors alone generate (per draw, over the rows), against the observed. Priors that
    are weakly informative per parameter can add up to a total variance far beyond that of
    a standardized response; this says by how much."""
    sd = prior_draws.std(axis=1)
    centre = prior_draws.mean(axis=1)
    obs_sd = float(np.std(observed))
    q = [0.05, 0.5, 0.95]
    return {
        "what": "SD and mean of the index simulated from the priors alone, per prior draw",
        "draws": int(prior_draws.shape[0]),
        "rows": int(prior_draws.shape[1]),
        "observed_sd": obs_sd,
        "observed_mean": float(np.mean(observed)),
        "prior_sd_quantiles_5_50_95": [float(v) for v in np.quantile(sd, q)],
        "prior_mean_quantiles_5_50_95": [float(v) for v in np.quantile(centre, q)],
        "share_sd_within_half_to_double_observed": float(
            np.mean((sd >= 0.5 * obs_sd) & (sd <= 2.0 * obs_sd))
        ),
    }
