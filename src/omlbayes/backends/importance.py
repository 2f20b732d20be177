"""Importance sampling of the variance parameters from the split-t approximation, with
Pareto-smoothed weights (PSIS), a gate of its own, and NUTS where it fails.

Why: the default's posterior has ~20 variance parameters and a gradient whose selected
inverse is two thirds of its cost. Importance sampling needs the log density alone (the
factor and one solve, ``sparse_marginal_loglik_value``), independent proposals (both cores
busy, no warm-up, no checkpoints) and no Markov chain. It is exact in the limit: the
self-normalised estimates converge for any proposal that covers the posterior, and the
Pareto k of the weights says when a finite number of proposals cannot be trusted
(Vehtari et al. 2024, "Pareto smoothed importance sampling").

The draws a run keeps: each of ``chains`` batches of independent proposals is resampled
(systematic resampling) by its own smoothed weights into ``draws`` equally weighted draws.
The batches are independent estimates of the same posterior, so R-hat across them is a
real check; a resampled draw repeats its proposal, so the draws' ESS is counted over
proposals (``criticism/mcmc_stats.py``, the ``proposal`` coordinate), not over draws.

The gate (:func:`sample`): Pareto k at most ArviZ's threshold for the number of
proposals, and every variance parameter's bulk and tail ESS at least the gate's minimum
times ``ESS_MARGIN`` (the early stop's margin); proposals are added in rounds until both
hold or ``MAX_ROUNDS`` pass. A k above the threshold ends the attempt at once (more
proposals do not lower it), and so does an ESS that, growing in proportion to the
proposals, would stay below the target after the last round.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import xarray as xr

from omlbayes.backends.proposal import SplitT, _flip_folded
from omlbayes.constants import PROPOSAL_COORD
from omlbayes.criticism.psis import _psis_one, good_k, tail_draws

ROUND = 500  # proposals per batch (chain) and round
MAX_ROUNDS = 12
ESS_MARGIN = 1.25


@dataclass(frozen=True)
class ImportanceResult:
    """``draws`` (chains, draws, n) on the sampler's coordinates, ``proposal`` (chains,
    draws) the index of each draw's proposal, and the facts for run.json."""

    draws: np.ndarray | None  # None where the gate failed
    proposal: np.ndarray | None
    facts: dict

    @property
    def passed(self) -> bool:
        return self.draws is not None


def systematic_resample(rng: np.random.Generator, w: np.ndarray, m: int) -> np.ndarray:
    """``m`` indices drawn by systematic resampling with weights ``w``, in random order."""
    points = (rng.uniform() + np.arange(m)) / m
    idx = np.searchsorted(np.cumsum(w), points, side="right")
    return rng.permutation(np.minimum(idx, w.size - 1))


def sample(
    log_density: Callable[[np.ndarray], float],
    proposal: SplitT,
    to_values: Callable[[np.ndarray], np.ndarray],
    *,
    chains: int,
    draws: int,
    seed: int,
    ess_min: float,
    rhat_max: float,
    workers: int,
) -> ImportanceResult:
    """Importance-sample the posterior of ``log_density`` with ``proposal``.

    ``to_values`` maps points (rows) to the posterior's variance parameters (columns),
    whose R-hat and ESS the gate checks on the resampled draws, as the run's diagnostics
    will. Returns ``chains`` x ``draws`` resampled draws, or ``draws=None`` with the reason
    where the gate fails (the caller samples with NUTS instead).
    """
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    xs, log_ratio, owner = [], [], []
    target = ess_min * ESS_MARGIN
    facts: dict = {"method": "importance", "proposal": "split Student-t at the mode"}
    with ThreadPoolExecutor(workers) as pool:
        for round_ in range(1, MAX_ROUNDS + 1):
            x = proposal.draw(rng, chains * ROUND)
            lt = np.fromiter(pool.map(log_density, x), float, count=x.shape[0])
            xs.append(x)
            log_ratio.append(np.where(np.isfinite(lt), lt - proposal.logpdf(x), -np.inf))
            owner.append(np.repeat(np.arange(chains), ROUND))
            ratio = np.concatenate(log_ratio)
            n, finite = ratio.size, np.isfinite(ratio)
            if finite.sum() < 0.5 * n:
                facts.update(reason="most proposals have zero posterior density")
                break
            # PSIS on the finite ratios (the others keep weight 0)
            lw = np.full(n, -np.inf)
            lw[finite], k = _psis_one(-ratio[finite], tail_draws(int(finite.sum()), 1.0))
            w = np.exp(lw)
            facts.update(
                rounds=round_,
                proposals=n,
                pareto_k=round(float(k), 4),
                pareto_k_threshold=round(good_k(n), 4),
                ess_weights=round(float(1.0 / np.sum(w**2)), 1),
            )
            if not k <= good_k(n):
                facts.update(reason=f"Pareto k {k:.2f} above {good_k(n):.2f}")
                break
            index = _resample(rng, w, np.concatenate(owner), chains, draws)
            points = np.concatenate(xs)[index]
            gate = _gate(to_values(points), index)
            facts.update(gate)
            lowest = min(gate["min_ess_bulk"], gate["min_ess_tail"])
            if gate["max_r_hat"] <= rhat_max and lowest >= target:
                facts.pop("reason", None)
                break
            facts.update(
                reason=f"R-hat above {rhat_max} or ESS below {target:.0f} after {n} proposals"
            )
            # the ESS grows about in proportion to the proposals: stop where the last
            # round could not reach the target at this rate
            if round_ >= 2 and lowest * MAX_ROUNDS / round_ < target:
                facts.update(
                    reason=f"ESS {lowest:.0f} after {n} proposals: {target:.0f} out of reach"
                )
                break
    facts["seconds"] = round(time.perf_counter() - t0, 2)
    if "reason" in facts:
        return ImportanceResult(None, None, facts)
    if not proposal.symmetric:  # the proposal kept one sign; the target is symmetric
        flat = _flip_folded(rng, points.reshape(-1, points.shape[-1]), proposal.folded)
        points = flat.reshape(points.shape)
    facts["draws_kept"] = draws
    facts["unique_proposals_kept"] = int(np.unique(index).size)
    return ImportanceResult(points, index, facts)


def _resample(rng, w: np.ndarray, owner: np.ndarray, chains: int, draws: int) -> np.ndarray:
    """(chains, draws) proposal indices: chain c resampled from its own proposals."""
    index = np.empty((chains, draws), dtype=np.int64)
    for c in range(chains):
        mine = np.flatnonzero(owner == c)
        index[c] = mine[systematic_resample(rng, w[mine] / w[mine].sum(), draws)]
    return index


def _gate(values: np.ndarray, index: np.ndarray) -> dict:
    """Max R-hat and min bulk/tail ESS of the resampled draws' variance parameters."""
    from omlbayes.criticism import mcmc_stats

    posterior = xr.Dataset(
        {"v": (("chain", "draw", "k"), values)},
        coords={PROPOSAL_COORD: (("chain", "draw"), index)},
    )
    d = mcmc_stats.diagnostics(posterior)["v"]
    return {
        "max_r_hat": round(float(d.sel(summary="r_hat").max()), 4),
        "min_ess_bulk": round(float(d.sel(summary="ess_bulk").min()), 1),
        "min_ess_tail": round(float(d.sel(summary="ess_tail").min()), 1),
    }
