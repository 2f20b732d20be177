"""Spec priors as PyMC distributions (one place, shared by both backends)."""

from __future__ import annotations

import pymc as pm

from omlbayes.model.spec import Prior


def pymc_prior(name: str, prior: Prior, **kwargs: object) -> pm.Distribution:
    """A PyMC random variable named ``name`` with the spec's prior."""
    return getattr(pm, prior.dist)(name, **prior.params, **kwargs)
