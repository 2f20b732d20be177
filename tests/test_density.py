"""The compiled collapsed density nutpie samples equals the PyMC model's, and compiles once."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from omlbayes.backends import collapsed
from omlbayes.data.scale import build_index
from omlbayes.model.design import build_layout, grouped_stats
from omlbayes.model.priors import Prior
from omlbayes.model.spec import load_spec
from omlbayes.simulate.survey import simulate_survey


@pytest.fixture(scope="module")
def frame():
    data = build_index(simulate_survey(n_students=1500, n_schools=16, seed=8).frame).frame
    return data.assign(age_c=data["age"] - data["age"].mean())


def _spec(name: str, **priors: Prior):
    spec = load_spec(name)
    return dataclasses.replace(spec, priors={**spec.priors, **priors})


CASES = {
    "flagship, dense": ("flagship", "dense", frozenset(), {}),
    "full, sparse, residual groups": ("full", "sparse", frozenset(), {}),
    "full, sparse, folded SDs": (
        "full",
        "sparse",
        frozenset({"1|school_id:wave", "1|wave:gender:school_type"}),
        {},
    ),
    "flagship, other SD priors": (
        "flagship",
        "dense",
        frozenset({"1|school_id"}),
        {
            "1|school_id": Prior("HalfStudentT", {"nu": 4.0, "sigma": 0.3}),
            "1|wave:gender": Prior("HalfCauchy", {"beta": 0.2}),
            "1|wave:region": Prior("Exponential", {"lam": 5.0}),
            "sigma": Prior("HalfStudentT", {"nu": 3.0, "sigma": 1.0}),
        },
    ),
}


# the fast tier keeps the dense flagship case; the others run in make test-all
SLOW_CASES = (
    "full, sparse, residual groups",
    "full, sparse, folded SDs",
    "flagship, other SD priors",
)


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_CASES else c for c in CASES]
)
def test_compiled_density_equals_the_pymc_model(frame, case):
    name, kernel, folded, priors = CASES[case]
    spec = _spec(name, **priors).with_sampler(kernel=kernel)
    layout = build_layout(frame, spec)
    stats = grouped_stats(frame, layout, spec.response, by=spec.residual_sd_by)
    choice = collapsed.choose_kernel(stats, layout, spec)
    assert choice.kernel == kernel
    model = collapsed.build_model(stats, layout, spec, choice, folded)
    compiled = collapsed.build_density(stats, layout, spec, choice, folded)
    logp_fn = model.compile_logp(jacobian=True)
    dlogp_fn = model.compile_dlogp(jacobian=True)
    names = [v.name for v in model.value_vars]
    sizes = [int(np.size(model.initial_point()[n])) for n in names]
    assert sum(sizes) == compiled.n_dim
    rng = np.random.default_rng(1)
    for k in range(6):
        x = compiled.initial_point(seed=k) + rng.normal(0.0, 0.5, compiled.n_dim)
        point, start = {}, 0
        for n, size in zip(names, sizes, strict=True):
            value = x[start : start + size]
            point[n] = value if model.initial_point()[n].shape else value[0]
            start += size
        value, grad = compiled.logp(x)
        assert value == pytest.approx(float(logp_fn(point)), rel=1e-10, abs=1e-8)
        np.testing.assert_allclose(grad, dlogp_fn(point), rtol=1e-8, atol=1e-8)
        posterior = compiled.values(x)
        assert float(np.sum(posterior["sigma"])) > 0
        assert set(posterior) == {"sigma", *(f"{t.name}_sigma" for t in layout.group_terms)}


@pytest.mark.parametrize("kernel", ["dense", "sparse"])
def test_an_underflowed_variance_has_zero_density_not_an_error(frame, kernel):
    """A divergent trajectory can send a log SD to about -400, where its variance underflows
    to 0 and the kernel divides by it (seed 15 of the estimand study: every chain was
    killed); that point must get zero density, which the sampler rejects as a divergence."""
    spec = load_spec("flagship").with_sampler(kernel=kernel)
    layout = build_layout(frame, spec)
    stats = grouped_stats(frame, layout, spec.response, by=spec.residual_sd_by)
    choice = collapsed.choose_kernel(stats, layout, spec)
    compiled = collapsed.build_density(stats, layout, spec, choice, frozenset({"1|school_id"}))
    x = compiled.initial_point(seed=0)
    folded = np.array([False] + [t == "1|school_id" for t in (g.name for g in layout.group_terms)])
    for bad in (np.flatnonzero(~folded)[1], np.flatnonzero(folded)[0]):
        y = x.copy()
        y[bad] = 0.0 if folded[bad] else -420.0
        value, grad = compiled.logp(y)
        assert value == -np.inf and np.all(grad == 0)
    assert np.isfinite(compiled.logp(x)[0])


def test_nutpie_samples_the_same_density_on_scaled_coordinates(frame):
    """nutpie's coordinates are the density's divided by the split-t scales: its log
    density at y is the density's at x = unit * y (a constant Jacobian), its gradient the
    chain rule's, and its SDs those at x."""
    spec = load_spec("flagship")
    layout = build_layout(frame, spec)
    stats = grouped_stats(frame, layout, spec.response, by=spec.residual_sd_by)
    choice = collapsed.choose_kernel(stats, layout, spec)
    density = collapsed.build_density(stats, layout, spec, choice, frozenset({"1|school_id"}))
    model, starts = density.nutpie_model()
    assert starts["coordinates"] == "each divided by the approximation's scale"
    logp = model._make_logp_func()
    expand = model._make_expand_func(0, 0, 0)
    shared = model._shared_data
    y = model._make_initial_points(3)
    # the scale of each coordinate, read back from the SDs nutpie stores
    sds = np.array([float(np.ravel(v)[0]) for v in expand(y, **shared).values()])
    folded = density.folded_mask
    unit = np.where(folded, sds / np.abs(y), np.log(sds) / y)
    assert np.all(unit > 0) and not np.allclose(unit, 1.0)
    rng = np.random.default_rng(0)
    for point in (y, y + rng.normal(0.0, 0.3, y.size)):
        value, grad = logp(point, **shared)
        value_x, grad_x = density.logp(unit * point)
        assert np.isfinite(value)
        assert value == pytest.approx(value_x, rel=1e-12)
        np.testing.assert_allclose(grad, unit * grad_x, rtol=1e-12)
