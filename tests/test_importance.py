"""Importance sampling of the variance parameters (backends/importance.py): a known posterior
recovered, a proposal that misses it refused, and the ESS of resampled draws."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy.special import digamma, polygamma

from omlbayes.backends import importance
from omlbayes.backends.proposal import ScannedCopula, SplitT
from omlbayes.constants import PROPOSAL_COORD
from omlbayes.criticism import mcmc_stats

# log of a Gamma(a, 1) variable on each coordinate: skewed, with a long left tail, as a log
# SD's posterior; E = digamma(a), Var = trigamma(a)
SHAPES = np.array([1.5, 3.0, 8.0])


def log_gamma_density(x: np.ndarray) -> float:
    return float(np.sum(SHAPES * x - np.exp(x)))


def with_gradient(x: np.ndarray) -> tuple[float, np.ndarray]:
    return log_gamma_density(x), SHAPES - np.exp(x)


def resampled(points: np.ndarray, index: np.ndarray) -> xr.Dataset:
    return xr.Dataset(
        {"x": (("chain", "draw", "k"), points)},
        coords={PROPOSAL_COORD: (("chain", "draw"), index)},
    )


def gate(points: np.ndarray, index: np.ndarray) -> dict:
    """The early stop's numbers on the resampled draws, as a run's gate computes them."""
    d = mcmc_stats.diagnostics(resampled(points, index))["x"]
    out = {
        "max_r_hat": float(d.sel(summary="r_hat").max()),
        "min_ess_bulk": float(d.sel(summary="ess_bulk").min()),
        "min_ess_tail": float(d.sel(summary="ess_tail").min()),
    }
    out["passed"] = (
        out["max_r_hat"] <= 1.01 and min(out["min_ess_bulk"], out["min_ess_tail"]) >= TARGET
    )
    return out


TARGET = 400 * 1.25


def run(proposal: SplitT, seed: int = 1) -> importance.ImportanceResult:
    return importance.sample(
        log_gamma_density, proposal, gate,
        chains=4, draws=500, seed=seed, workers=1,
    )  # fmt: skip


@pytest.fixture(scope="module")
def fitted() -> SplitT:
    mode = np.log(SHAPES)
    return SplitT.fit(with_gradient, mode, np.zeros(3, bool))


@pytest.mark.parametrize("kind", ["split-t", "copula"])
def test_recovers_a_skewed_posterior_within_its_monte_carlo_error(fitted, kind):
    result = run(fitted if kind == "split-t" else ScannedCopula.of(fitted))
    assert result.passed, result.facts
    facts = result.facts
    assert facts["pareto_k"] <= facts["pareto_k_threshold"]
    assert min(facts["gate"]["min_ess_bulk"], facts["gate"]["min_ess_tail"]) >= TARGET
    draws = result.draws.reshape(-1, 3)
    posterior = resampled(result.draws, result.proposal)
    mcse = mcmc_stats.diagnostics(posterior)["x"].sel(summary="mcse_mean").to_numpy()
    assert np.all(np.abs(draws.mean(axis=0) - digamma(SHAPES)) < 4 * mcse)
    assert np.allclose(draws.var(axis=0), polygamma(1, SHAPES), rtol=0.15)
    # the left tail (the one the mode's curvature misses) is there
    lower = np.quantile(draws, 0.025, axis=0)
    exact = np.log([np.quantile(np.random.default_rng(0).gamma(a, size=400_000), 0.025)
                    for a in SHAPES])  # fmt: skip
    assert np.all(np.abs(lower - exact) < 0.25 * np.sqrt(polygamma(1, SHAPES)))


def test_same_seed_same_draws(fitted):
    assert np.array_equal(run(fitted, seed=4).draws, run(fitted, seed=4).draws)


def test_a_proposal_that_misses_the_posterior_is_refused(fitted):
    # centred 5 posterior SDs too high with a third of the width: the weights' tail is heavy
    sd = np.sqrt(polygamma(1, SHAPES))
    narrow = SplitT(
        centre=digamma(SHAPES) + 5 * sd,
        chol=np.eye(3),
        left=sd / 3,
        right=sd / 3,
        folded=np.zeros(3, bool),
    )
    result = run(narrow)
    assert not result.passed
    assert result.draws is None
    assert "Pareto k" in result.facts["reason"]
    assert result.facts["rounds"] == 1  # refused at once, not after every round


@pytest.mark.parametrize(
    ("ks", "rounds", "passed"),
    [
        ([0.85], importance.DECISIVE_PROPOSALS // 2000, False),  # noisy until 10,000
        ([1.2], 1, False),  # hopeless: refused at once
        ([0.85, 0.3], None, True),  # a high first estimate, then a good one
    ],
)
def test_a_high_pareto_k_ends_the_attempt_once_it_can_be_trusted(
    fitted, monkeypatch, ks, rounds, passed
):
    seen = iter([*ks, *[ks[-1]] * importance.MAX_ROUNDS])

    def psis(log_ratio, _tail):  # the proposal's own weights, with the k of the scenario
        return log_ratio - np.logaddexp.reduce(log_ratio), next(seen)

    monkeypatch.setattr(importance, "_psis_one", lambda neg, tail: psis(-neg, tail))
    result = run(fitted)
    assert result.passed is passed
    if rounds is not None:
        assert result.facts["rounds"] == rounds
        assert "Pareto k" in result.facts["reason"]


@pytest.mark.parametrize(
    ("ess_last", "rounds", "passed"),
    [
        (498.0, importance.MAX_ROUNDS + 1, True),  # within reach: one round more
        (300.0, importance.MAX_ROUNDS, False),  # 350 after every extra round: NUTS at once
    ],
)
def test_a_near_miss_at_the_last_round_gets_a_few_more(fitted, ess_last, rounds, passed):
    calls = []

    def scripted(points: np.ndarray, index: np.ndarray) -> dict:  # the gate's tail ESS
        calls.append(index.size)
        last = len(calls) - importance.MAX_ROUNDS  # 0 at the last regular round
        ess = 100.0 if last < 0 else ess_last if last == 0 else 600.0
        return {"passed": ess >= TARGET, "min_ess_bulk": 900.0, "min_ess_tail": ess}

    result = importance.sample(
        log_gamma_density, fitted, scripted, chains=4, draws=500, seed=2, workers=1,
        ess_target=TARGET,
    )  # fmt: skip
    assert result.passed is passed
    assert result.facts["rounds"] == len(calls) == rounds


def test_ess_of_resampled_draws_counts_proposals():
    rng = np.random.default_rng(2)
    values = rng.normal(size=(4, 250))
    singles = np.arange(1000).reshape(4, 250)
    x = values[None]
    assert mcmc_stats.cluster_ess(x, mcmc_stats.one_hot(singles))[0] == pytest.approx(1000)
    # every proposal drawn four times: a quarter of the draws' information
    repeated = np.repeat(values[:, :63], 4, axis=1)[:, :250]
    ids = np.repeat(np.arange(4 * 63).reshape(4, 63), 4, axis=1)[:, :250]
    ess = mcmc_stats.cluster_ess(repeated[None], mcmc_stats.one_hot(ids))[0]
    assert ess == pytest.approx(1000 / 4, rel=0.02)


def test_systematic_resampling_keeps_the_weights():
    rng = np.random.default_rng(3)
    w = rng.dirichlet(np.ones(50))
    index = importance.systematic_resample(rng, w, 10_000)
    counts = np.bincount(index, minlength=50)
    assert np.all(np.abs(counts - 10_000 * w) <= 1)  # systematic: within one of its share


def test_the_default_run_is_importance_sampled_and_its_ess_counts_proposals(default_run):
    """The default as users run it (conftest's default_run): importance sampling served,
    and every file says so."""
    import json

    from omlbayes.criticism import diagnose

    record = json.loads((default_run / "run.json").read_text(encoding="utf-8"))
    sampling = record["fit"]["sampling"]
    assert sampling["method"] == "importance", sampling
    assert sampling["pareto_k"] <= sampling["pareto_k_threshold"]
    with xr.open_datatree(default_run / "posterior.nc", engine="h5netcdf") as tree:
        assert "sample_stats" not in tree.children  # no Hamiltonian, no energy
        posterior = tree["posterior"].to_dataset().load()
    assert PROPOSAL_COORD in posterior.coords
    diagnostics = json.loads((default_run / "diagnostics.json").read_text(encoding="utf-8"))
    assert diagnostics["passed"]
    # the same draws read as independent (the coordinate dropped) claim more information
    hyper = posterior[["sigma", "1|school_id_sigma"]]
    as_if_independent = diagnose.check(
        xr.DataTree.from_dict({"/posterior": hyper.drop_vars(PROPOSAL_COORD)})
    )
    counted = diagnose.check(xr.DataTree.from_dict({"/posterior": hyper}))
    assert counted["min_ess_bulk"] < 0.9 * as_if_independent["min_ess_bulk"]
    assert not (default_run / "figures" / "energy.png").exists()
    report = (default_run / "report.html").read_text(encoding="utf-8")
    assert "scanned density, joined by a Student-t copula" in report
    assert sampling["proposal"] == ScannedCopula.description
    # no Hamiltonian sampler: divergences and E-BFMI are not checks of these draws
    assert diagnostics["not_applicable"] == list(diagnose.HAMILTONIAN_CHECKS)
    assert "E-BFMI" not in diagnose.verdict_line(diagnostics)
    assert report.count("not applicable (no Hamiltonian sampler)") == 2
    energy = xr.Dataset(
        {"energy": (("chain", "draw"), np.random.default_rng(1).normal(size=(4, 500)))}
    )
    nuts = diagnose.check(xr.DataTree.from_dict({"/posterior": hyper, "/sample_stats": energy}))
    assert nuts["not_applicable"] == [] and "E-BFMI" in diagnose.verdict_line(nuts)


def test_the_setting_follows_the_sampler_a_user_chooses():
    from omlbayes.errors import SpecError
    from omlbayes.model.spec import load_spec
    from omlbayes.pipeline.survey_run import with_overrides

    full = load_spec("full")
    assert full.sampler.importance  # the default model's
    assert not with_overrides(full, importance=False).sampler.importance
    # another sampler chosen on the command line goes alone, the spec's setting with it
    assert not with_overrides(full, backend="bambi").sampler.importance
    assert not with_overrides(full, sampler="pymc").sampler.importance
    with pytest.raises(SpecError, match="--no-importance"):
        with_overrides(full, backend="bambi", importance=True)
    assert not load_spec("flagship").sampler.importance
