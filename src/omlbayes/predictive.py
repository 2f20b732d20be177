"""Prior and posterior predictive draws of the index for a subsample of students.

Only used for the predictive-check figures; the draws are never saved (student rows).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pymc as pm
import xarray as xr

from omlbayes.backends.priors import pymc_prior
from omlbayes.design import DesignLayout, design_matrix
from omlbayes.estimands import coefficient_draws
from omlbayes.spec import ModelSpec


def subsample(frame: pd.DataFrame, *, size: int, seed: int) -> pd.DataFrame:
    if len(frame) <= size:
        return frame
    return frame.sample(n=size, random_state=seed)


def prior_predictive(
    frame: pd.DataFrame, layout: DesignLayout, spec: ModelSpec, *, draws: int, seed: int
) -> np.ndarray:
    """(draws x rows) index values simulated from the priors alone."""
    rng = np.random.default_rng(seed)
    with pm.Model():
        sigma = pymc_prior("sigma", spec.prior_for("sigma", "sigma"))
        scales = []
        for term in layout.terms:
            if term.kind == "group":
                scale = pymc_prior(f"{term.name}_sigma", spec.prior_for(term.name, "group_sigma"))
            else:
                kind = "Intercept" if term.kind == "intercept" else "common"
                scale = spec.prior_for(term.name, kind).params["sigma"]
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
    return mu + rng.standard_normal(mu.shape) * sigma_draws[:, None]


def posterior_predictive(
    frame: pd.DataFrame, layout: DesignLayout, posterior: xr.Dataset, *, draws: int, seed: int
) -> np.ndarray:
    """(draws x rows) replicated index values from the fitted model."""
    rng = np.random.default_rng(seed)
    coefs = coefficient_draws(posterior, layout.coef_names, seed=seed)
    flat = coefs.stack(sample=("chain", "draw")).transpose("sample", "coef").to_numpy()
    sigma = posterior["sigma"].stack(sample=("chain", "draw")).to_numpy()
    pick = rng.choice(flat.shape[0], size=min(draws, flat.shape[0]), replace=False)
    mu = (design_matrix(frame, layout) @ flat[pick].T).T
    return mu + rng.standard_normal(mu.shape) * sigma[pick, None]
