"""Draws sized to the gate: the checkpoints, and the same draws as a run without them."""

from __future__ import annotations

import numpy as np

from omlbayes.backends.sampling import Plan, sample_nutpie

SCALES = np.array([1.0, 0.1, 3.0])


def _gaussian():
    """A 3-d Gaussian as a nutpie pyfunc model."""
    from nutpie.compiled_pyfunc import from_pyfunc

    def make_logp():
        def logp(x):
            z = x / SCALES
            return -0.5 * float(z @ z), -z / SCALES

        return logp

    def make_expand(seed1, seed2, chain):
        def expand(x):
            return {"x": np.asarray(x, dtype=np.float64)}

        return expand

    return from_pyfunc(
        ndim=3,
        make_logp_fn=make_logp,
        make_expand_fn=make_expand,
        expanded_dtypes=[np.dtype("float64")],
        expanded_shapes=[(3,)],
        expanded_names=["x"],
        make_initial_point_fn=lambda seed: np.random.default_rng(seed).normal(size=3),
    )


def test_early_stop_keeps_the_first_draws_of_the_same_chains():
    plan = Plan(tune=50, draws=300, chains=4, checkpoints=(60, 120, 300))
    verdicts = []

    def check(head):
        k = head["posterior"].sizes["draw"]
        verdicts.append(k)
        return {"passed": k >= 120}

    kept, facts = sample_nutpie(_gaussian(), plan, seed=11, check=check)
    assert verdicts == [60, 120]
    assert facts["draws_kept"] == 120 and facts["stopped_early"]
    assert [c["draws"] for c in facts["checkpoints"]] == [60, 120]
    full, _ = sample_nutpie(_gaussian(), Plan(50, 300, 4, (300,)), seed=11)
    np.testing.assert_array_equal(
        kept["posterior"]["x"].to_numpy(), full["posterior"]["x"].to_numpy()[:, :120]
    )


def test_a_divergence_ends_the_checks():
    # a divergence in the first k draws stays in every longer prefix: no later checkpoint
    plan = Plan(tune=50, draws=300, chains=4, checkpoints=(60, 120, 300))
    kept, facts = sample_nutpie(
        _gaussian(), plan, seed=2, check=lambda head: {"passed": False, "divergences": 1}
    )
    assert facts["draws_kept"] == 60 and len(facts["checkpoints"]) == 1
