"""The vectorised diagnostics give ArviZ's own numbers, edge cases included."""

from __future__ import annotations

import arviz as az
import numpy as np
import pytest
import xarray as xr
from arviz_base import rc_context

from omlbayes.criticism import mcmc_stats
from omlbayes.results import summarise
from omlbayes.results.options import OutputOptions


def _posterior(n_chains: int = 4, n_draws: int = 203, seed: int = 0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    shape = (n_chains, n_draws, 7)
    noise = rng.normal(size=shape)
    ar1 = np.zeros(shape)
    for t in range(n_draws):  # strongly autocorrelated: ESS far below the draw count
        ar1[:, t] = (0.9 * ar1[:, t - 1] if t else 0.0) + noise[:, t]
    two = (n_chains, n_draws)
    with_nan = rng.normal(size=two)
    with_nan[0, 5] = np.nan
    return xr.Dataset(
        {
            "a": (("chain", "draw"), rng.normal(size=two)),
            "b": (("chain", "draw", "k"), ar1 + np.arange(7)),
            "constant": (("chain", "draw"), np.full(two, 2.5)),
            "ties": (("chain", "draw", "j"), np.round(rng.normal(size=(*two, 3)), 1)),
            "nan": (("chain", "draw"), with_nan),
            "stuck": (
                ("chain", "draw"),
                rng.normal(size=two) + 3.0 * (np.arange(n_chains) >= n_chains // 2)[:, None],
            ),
            "rare": (("chain", "draw"), (rng.random(two) < 0.05).astype(float)),
        },
        coords={"k": [f"x{i}" for i in range(7)]},
    )


def _assert_same(ref: xr.Dataset, got: xr.Dataset) -> None:
    assert list(ref["summary"].values) == list(got["summary"].values)
    assert set(ref.data_vars) == set(got.data_vars)
    for name in ref.data_vars:
        assert ref[name].dims == got[name].dims
        expected, actual = ref[name].to_numpy(), got[name].to_numpy()
        np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg=name)
        np.testing.assert_allclose(actual, expected, rtol=1e-10, err_msg=name)


@pytest.mark.parametrize(("n_chains", "n_draws"), [(4, 203), (2, 50), (1, 40)])
def test_diagnostics_equal_arviz(n_chains, n_draws):
    posterior = _posterior(n_chains, n_draws)
    ref = az.summary(posterior, kind="diagnostics", round_to="none", fmt="xarray")
    with np.errstate(all="ignore"):
        got = mcmc_stats.diagnostics(posterior)
    _assert_same(ref, got)
    # the tail ESS follows ArviZ's ci_prob, as ArviZ's does
    with rc_context({"stats.ci_prob": 0.8}):
        ref = az.summary(posterior, kind="diagnostics", round_to="none", fmt="xarray")
        got = mcmc_stats.diagnostics(posterior)
    _assert_same(ref, got)
    # the sampler's trouble is seen: the stuck chains' R-hat, the AR(1) chains' low ESS
    assert n_chains == 1 or float(got["stuck"].sel(summary="r_hat")) > 1.5
    assert float(got["b"].sel(summary="ess_bulk").max()) < 0.5 * n_chains * n_draws


def test_parameter_summary_equals_arviz_summary():
    posterior = _posterior()
    for kind, prob in (("eti", 0.95), ("hdi", 0.8)):
        ref = az.summary(posterior, ci_prob=prob, ci_kind=kind, round_to="none", fmt="xarray")
        with np.errstate(all="ignore"):
            options = OutputOptions(interval=kind, prob=prob)
            got = summarise.parameter_summary_dataset(posterior, options=options)
        _assert_same(ref, got)
        table_ref, table = summarise.summary_table(ref), summarise.summary_table(got)
        assert list(table.index) == list(table_ref.index)
        assert list(table.columns) == list(table_ref.columns)


def test_many_parameters_run_in_blocks(monkeypatch):
    monkeypatch.setattr(mcmc_stats, "_CHUNK", 3)  # several blocks, in threads
    posterior = _posterior()[["b", "ties"]]
    ref = az.summary(posterior, kind="diagnostics", round_to="none", fmt="xarray")
    _assert_same(ref, mcmc_stats.diagnostics(posterior))


def test_failed_mixing_names_the_parameter_and_what_to_try():
    """A parameter whose chains disagree fails the R-hat check, and the verdict line names it
    (and the smallest-ESS one) and says what to try; a mixing posterior passes silently."""
    from omlbayes.criticism.diagnose import check, verdict_line

    rng = np.random.default_rng(3)
    good = rng.normal(size=(4, 500))
    stuck = rng.normal(size=(4, 500)) + np.array([0.0, 0.0, 0.0, 1.0])[:, None]
    posterior = xr.Dataset(
        {
            "a": (("chain", "draw"), good),
            "tau": (("chain", "draw"), np.exp(stuck)),
        },
        coords={"chain": np.arange(4), "draw": np.arange(500)},
    )
    failed = check(xr.DataTree.from_dict({"/posterior": posterior}))
    assert not failed["checks"]["r_hat_below_1_01"] and failed["max_r_hat_at"] == "tau"
    line = verdict_line(failed)
    assert "largest R-hat at tau" in line and "--draws" in line
    passed = check(xr.DataTree.from_dict({"/posterior": posterior[["a"]]}))
    assert passed["passed"] and "--draws" not in verdict_line(passed)
