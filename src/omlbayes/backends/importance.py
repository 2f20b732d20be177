"""Importance sampling of the variance parameters from an approximation at the mode, with
Pareto-smoothed weights (PSIS), a gate of its own, and NUTS where it fails.

Why: the default's posterior has ~20 variance parameters and a gradient whose selected
inverse is two thirds of its cost. Importance sampling needs the log density alone (the
factor and one solve, ``sparse_marginal_loglik_value``), independent proposals (both cores
busy, no warm-up, no checkpoints) and no Markov chain. It is exact in the limit: the
self-normalised estimates converge for any proposal that covers the posterior, and the
Pareto k of the weights says when a finite number of proposals cannot be trusted
(Vehtari et al. 2024, "Pareto smoothed importance sampling").

The proposal (``proposal.ScannedCopula``): each variance parameter's margin is the 1-D scan
of the log density at the mode (tempered), joined by a Student-t copula with the Laplace
correlations; the scans are the split-t's (``proposal.SplitT``, which starts NUTS), so it
costs no further density evaluation. Its margins follow the skewed, heavy left tails of
weakly identified log SDs that a split-t's one shape misses: on harder surveys the
weights' ESS is 1.3-2 times the split-t's.

The draws a run keeps: each of ``chains`` batches of independent proposals is resampled
(systematic resampling) by its own smoothed weights into ``draws`` equally weighted draws.
The batches are independent estimates of the same posterior, so R-hat across them is a
real check; a resampled draw repeats its proposal, so the draws' ESS is counted over
proposals (``criticism/mcmc_stats.py``, the ``proposal`` coordinate), not over draws.

The gate (:func:`sample`): Pareto k at most ArviZ's threshold for the number of
proposals, and the run's early-stop gate on the resampled draws (R-hat, bulk and tail ESS
with its margin; the variance parameters first, then every parameter); proposals are
added in rounds until both hold or ``MAX_ROUNDS`` pass (up to ``EXTRA_ROUNDS`` more where
the ESS is within reach). A k above the threshold ends the attempt once
``DECISIVE_PROPOSALS`` are in, or at once where it is above ``HOPELESS_K``:
the estimate of k from a few thousand proposals is noisy (a proposal whose k settles near
0.5 gave 0.96 from 1,000 and 0.74 from 4,000 on a harder survey; bench/RESULTS.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from omlbayes.backends.proposal import ScannedCopula, SplitT, _flip_folded
from omlbayes.backends.psis import _psis_one, good_k, tail_draws

ROUND = 500  # proposals per batch (chain) and round
# At most 48,000 proposals with 4 chains: about half of what the NUTS fall-back costs (4 x
# ~750 iterations x ~11 gradients, each 2.6 log densities' worth), so a failed attempt adds
# at most about half to a fit
MAX_ROUNDS = 24
# Past MAX_ROUNDS, up to EXTRA_ROUNDS more where the gate's smallest ESS, grown in
# proportion to the proposals, would reach its target within them: a near miss (a harder
# survey's tail ESS 498 of 500 after 48,000 proposals) costs a round or two, not NUTS
EXTRA_ROUNDS = 4
# below this many proposals a k above the threshold is not yet trusted (unless hopeless)
DECISIVE_PROPOSALS = 10_000
HOPELESS_K = 1.0  # the weights' tail has no finite mean: more proposals cannot help


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
    proposal: ScannedCopula | SplitT,
    check: Callable[[np.ndarray, np.ndarray], dict],
    *,
    chains: int,
    draws: int,
    seed: int,
    workers: int,
    ess_target: float = np.inf,
) -> ImportanceResult:
    """Importance-sample the posterior of ``log_density`` with ``proposal``.

    ``check(points, index)``: the gate on resampled draws (chain, draw, coordinate) and
    their proposals' indices (chain, draw), a dict with ``passed`` and its numbers. Returns
    ``chains`` x ``draws`` resampled draws, or ``draws=None`` with the reason where the
    gate fails (the caller then samples with NUTS). ``ess_target``: the ESS the gate asks
    for (the rounds past ``MAX_ROUNDS``).
    """
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    xs, log_ratio, owner = [], [], []
    facts: dict = {"method": "importance", "proposal": proposal.description}
    with ThreadPoolExecutor(workers) as pool:
        for round_ in range(1, MAX_ROUNDS + EXTRA_ROUNDS + 1):
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
                if n >= DECISIVE_PROPOSALS or not k <= HOPELESS_K:
                    break
                continue
            index = _resample(rng, w, np.concatenate(owner), chains, draws)
            points = np.concatenate(xs)[index]
            if not proposal.symmetric:  # the proposal kept one sign; the target is symmetric
                flat = _flip_folded(rng, points.reshape(-1, points.shape[-1]), proposal.folded)
                points = flat.reshape(points.shape)
            gate = check(points, index)
            facts["gate"] = {k: _plain(v) for k, v in gate.items() if k != "passed"}
            if gate["passed"]:
                facts.pop("reason", None)
                break
            # more rounds, even where the ESS so far grows slowly: with heavy-ish weights a
            # tail ESS grows faster than the proposals until the tail is filled (a survey
            # of 1,500 students: 116 after 8,000 proposals, 545 after 18,000)
            facts.update(reason=f"the gate failed after {n} proposals")
            more = (MAX_ROUNDS + EXTRA_ROUNDS - round_) * chains * ROUND  # proposals left
            if round_ >= MAX_ROUNDS and not _within_reach(gate, n, more, ess_target):
                break
    facts["seconds"] = round(time.perf_counter() - t0, 2)
    if "reason" in facts:
        return ImportanceResult(None, None, facts)
    facts["draws_kept"] = draws
    facts["unique_proposals_kept"] = int(np.unique(index).size)
    return ImportanceResult(points, index, facts)


def _within_reach(gate: dict, proposals: int, more: int, target: float) -> bool:
    """Whether the gate's smallest ESS after ``proposals``, grown in proportion to them,
    reaches ``target`` within ``more`` proposals."""
    ess = min(gate.get("min_ess_bulk", 0.0), gate.get("min_ess_tail", 0.0))
    return more > 0 and ess * (proposals + more) / proposals >= target


def _resample(rng, w: np.ndarray, owner: np.ndarray, chains: int, draws: int) -> np.ndarray:
    """(chains, draws) proposal indices: chain c resampled from its own proposals."""
    index = np.empty((chains, draws), dtype=np.int64)
    for c in range(chains):
        mine = np.flatnonzero(owner == c)
        index[c] = mine[systematic_resample(rng, w[mine] / w[mine].sum(), draws)]
    return index


def _plain(value):
    """A gate's number for run.json (rounded; numpy scalars as Python's)."""
    if isinstance(value, float | np.floating):
        return round(float(value), 4)
    if isinstance(value, np.integer):
        return int(value)
    return value
