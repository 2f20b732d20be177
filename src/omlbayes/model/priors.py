"""The one prior object: a spec's prior and everything the project does with it.

Every stage that needs a prior asks this object: the PyMC variable (collapsed, graded and
predictive models), Bambi's prior, the log density (prior sensitivity), numpy draws (SBC),
its scale (the kernel's typical point, the boundary search) and the symmetric twin a
folded SD is sampled from. A new family is one entry in :data:`FAMILIES`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Family -> its parameters, in the order the spec writes them.
FAMILIES: dict[str, tuple[str, ...]] = {
    "Normal": ("mu", "sigma"),
    "HalfNormal": ("sigma",),
    "Exponential": ("lam",),
    "HalfStudentT": ("nu", "sigma"),
    "HalfCauchy": ("beta",),
}
POSITIVE = ("HalfNormal", "Exponential", "HalfStudentT", "HalfCauchy")
# The symmetric twin of each positive prior that can be folded: |w| has exactly the prior.
# Exponential has none that is smooth (Laplace has a kink at zero, which NUTS handles badly).
_TWINS = {
    "HalfNormal": lambda p: ("Normal", {"mu": 0.0, "sigma": p["sigma"]}),
    "HalfStudentT": lambda p: ("StudentT", {"nu": p["nu"], "mu": 0.0, "sigma": p["sigma"]}),
    "HalfCauchy": lambda p: ("Cauchy", {"alpha": 0.0, "beta": p["beta"]}),
}


@dataclass(frozen=True)
class Prior:
    """A prior as the spec writes it: ``Prior("HalfNormal", {"sigma": 0.5})``."""

    dist: str
    params: dict[str, float]

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        return f"{self.dist}({args})"

    @property
    def scale(self) -> float:
        """Its scale: sigma, beta, or the mean 1/lam of an Exponential."""
        for key in ("sigma", "beta"):
            if key in self.params:
                return float(self.params[key])
        return 1.0 / float(self.params["lam"])

    @property
    def foldable(self) -> bool:
        """Whether a smooth symmetric twin exists (see :meth:`twin`)."""
        return self.dist in _TWINS

    def twin(self) -> tuple[str, dict[str, float]]:
        """The PyMC family and parameters of the symmetric density whose half is this prior."""
        return _TWINS[self.dist](self.params)

    def pymc(self, name: str, **kwargs: object):
        """A PyMC random variable named ``name`` with this prior."""
        import pymc as pm

        return getattr(pm, self.dist)(name, **self.params, **kwargs)

    def bambi(self):
        """This prior as Bambi's ``bmb.Prior``."""
        import bambi as bmb

        return bmb.Prior(self.dist, **self.params)

    def logpdf(self, values: np.ndarray) -> np.ndarray:
        """The log density at ``values`` (scipy: nothing to compile)."""
        from scipy import stats

        k = self.params
        if self.dist == "Normal":
            return stats.norm.logpdf(values, loc=k["mu"], scale=k["sigma"])
        if self.dist == "HalfNormal":
            return stats.halfnorm.logpdf(values, scale=k["sigma"])
        if self.dist == "Exponential":
            return stats.expon.logpdf(values, scale=1.0 / k["lam"])
        if self.dist == "HalfStudentT":
            return np.where(
                np.asarray(values) >= 0,
                np.log(2.0) + stats.t.logpdf(values, k["nu"], scale=k["sigma"]),
                -np.inf,
            )
        if self.dist == "HalfCauchy":
            return stats.halfcauchy.logpdf(values, scale=k["beta"])
        raise ValueError(f"no log density for {self.dist}")

    def sample(self, size, rng: np.random.Generator) -> np.ndarray:
        """Draws from this prior."""
        k = self.params
        if self.dist == "Normal":
            return rng.normal(k["mu"], k["sigma"], size)
        if self.dist == "HalfNormal":
            return np.abs(rng.normal(0.0, k["sigma"], size))
        if self.dist == "Exponential":
            return rng.exponential(1.0 / k["lam"], size)
        if self.dist == "HalfStudentT":
            return np.abs(k["sigma"] * rng.standard_t(k["nu"], size))
        if self.dist == "HalfCauchy":
            return np.abs(k["beta"] * rng.standard_cauchy(size))
        raise ValueError(f"no sampler for {self.dist}")
