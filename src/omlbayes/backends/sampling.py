"""The one place a posterior is sampled: settings, seeds, threads, and draws sized to the gate.

Every backend samples through :func:`sample_nutpie` (the collapsed density, the graded
model) with the spec's settings: ``tune`` warm-up iterations, at most ``draws`` draws per
chain, ``chains`` chains in parallel threads (one BLAS thread each) and the seed.

Draws sized to the gate: instead of a fixed number, sampling stops at the first checkpoint
(``CHECKPOINTS`` draws per chain, below the maximum) at which the first K draws of every
chain pass the caller's check (the diagnostics gate with a margin); exactly those K draws
are kept. Each chain has its own random stream, so its first K draws do not
depend on when sampling stops or on thread scheduling: the check, the K chosen and the
posterior are the same for the same seed. Without a check, all ``draws`` are taken.

Seeds: each use of a run's seed (sampling, coefficient draws, replications) gets its own
stream from :func:`derived_seed`, not a hand-made offset.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import xarray as xr
from threadpoolctl import threadpool_limits

from omlbayes.backends import heap

# Checkpoints (draws per chain) below the maximum. Fewer than ~400 draws per chain rarely
# pass: R-hat's own noise makes its maximum over a thousand coefficients exceed 1.01 by
# chance (15% of independent-draw simulations at 350 draws, 2.5% at 400, none at 450).
CHECKPOINTS = (400, 500, 600, 800, 1000, 1250, 1500, 2000, 3000, 4000)
# Above nutpie's 0.8: with very large N the residual SD is pinned down far more tightly than
# the group SDs, and a slightly smaller step removes the rare divergence seen at 1M students.
TARGET_ACCEPT = 0.9
# nutpie's own cap is 10 (1,023 leapfrog steps). The collapsed density's 10-60 coordinates
# take 7-31 steps a draw once warmed up; at 10, one early iteration that dual averaging sent
# to a 0.003 step size cost up to 1,023 steps per iteration for 10-20 iterations, half the
# warm-up's gradients (bench/RESULTS.md). The cap keeps NUTS exact (a shorter trajectory).
COLLAPSED_MAX_TREE_DEPTH = 7
_WAIT_S = 0.05


def derived_seed(seed: int, purpose: str) -> int:
    """The seed of one use of a run's seed: the same (seed, purpose) always gives the same
    number, different purposes independent streams."""
    digest = hashlib.sha256(f"{int(seed)}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


@dataclass(frozen=True)
class Plan:
    """How much to sample: warm-up, the most draws per chain, chains, and the checkpoints."""

    tune: int
    draws: int
    chains: int
    checkpoints: tuple[int, ...]

    @classmethod
    def of(cls, settings, *, early_stop: bool) -> Plan:
        draws = int(settings.draws)
        points = tuple(k for k in CHECKPOINTS if k < draws) if early_stop else ()
        return cls(int(settings.tune), draws, int(settings.chains), (*points, draws))


Check = Callable[[xr.DataTree], dict]


def first_draws(tree: xr.DataTree, k: int) -> xr.DataTree:
    """``posterior`` and ``sample_stats`` of the first ``k`` draws of every chain."""
    return xr.DataTree.from_dict(
        {
            f"/{group}": tree[group].to_dataset().isel(draw=slice(0, k))
            for group in ("posterior", "sample_stats")
            if group in tree.children
        }
    )


def sample_nutpie(
    model,
    plan: Plan,
    *,
    seed: int,
    progressbar: bool = False,
    check: Check | None = None,
    target_accept: float = TARGET_ACCEPT,
    adaptation: str = "diag",
    save_warmup: bool = True,
    max_tree_depth: int = 10,
) -> tuple[xr.DataTree, dict]:
    """Sample a compiled nutpie model; with a ``check``, stop at the first checkpoint whose
    first K draws pass it (see the module docstring). Returns the posterior tree (K draws per
    chain) and facts for the run record: the draws kept, each checkpoint's verdict, the
    leapfrog steps spent."""
    import nutpie

    heap.pin_thresholds()  # the same speed per gradient whatever the process did before
    cond = threading.Condition()
    done = {"min": 0}

    def on_progress(chains) -> None:  # nutpie's progress thread: never call the sampler here
        with cond:
            done["min"] = min(c.finished_draws for c in chains)
            cond.notify_all()

    t0 = time.perf_counter()
    # one BLAS thread per chain: the chains run in parallel threads, and a multithreaded
    # BLAS inside each of them oversubscribes the cores many times over
    with threadpool_limits(1, user_api="blas"):
        sampler = nutpie.sample(
            model,
            tune=plan.tune,
            draws=plan.draws,
            chains=plan.chains,
            # every chain on its own thread: chains beyond ``cores`` would only start when
            # the first ones end, and no checkpoint could be reached early
            cores=plan.chains,
            seed=seed,
            progress_bar=progressbar,
            blocking=False,
            progress_callback=on_progress if check is not None else None,
            target_accept=target_accept,
            adaptation=adaptation,
            save_warmup=save_warmup,
            maxdepth=max_tree_depth,
        )
        checks: list[dict] = []
        try:
            if check is not None:
                for k in plan.checkpoints[:-1]:
                    snapshot = _wait_for(sampler, cond, done, plan.tune + k, k)
                    if snapshot is None:  # sampling ended first
                        break
                    sampler.pause()  # the check draws coefficients: give it the cores
                    verdict = {"draws": k, **check(first_draws(snapshot, k))}
                    checks.append(verdict)
                    if verdict["passed"] or verdict.get("divergences", 0) > 0:
                        # a divergence in the first k draws stays in every longer prefix:
                        # no later checkpoint can pass, so stop (the gate then says so)
                        tree = sampler.abort()
                        return _result(tree, k, checks, t0, plan, max_tree_depth)
                    sampler.resume()
            tree = sampler.wait()
        except BaseException:
            sampler.cancel()
            raise
    return _result(tree, plan.draws, checks, t0, plan, max_tree_depth)


def _wait_for(sampler, cond, done, total: int, k: int):
    """Wait until every chain has ``total`` iterations; a snapshot with ``k`` complete draws
    per chain, or None when sampling ended before."""
    while True:
        with cond:
            cond.wait_for(lambda: done["min"] >= total, timeout=1.0)
            reached = done["min"] >= total
        if reached or _finished(sampler):
            break
    while True:
        snapshot = sampler.inspect()
        if _complete(snapshot) >= k:
            return snapshot
        if _finished(sampler):
            return None
        time.sleep(_WAIT_S)  # the callback ran ahead of the stored trace


def _complete(tree: xr.DataTree) -> int:
    """Draws present in every chain (shorter chains are padded with NaN)."""
    if "sample_stats" not in tree.children:
        return 0
    step = tree["sample_stats"].to_dataset()["step_size"]
    return int(step.notnull().sum("draw").min()) if step.sizes.get("draw", 0) else 0


def _finished(sampler) -> bool:
    try:
        return bool(sampler.is_finished)
    except TimeoutError:  # nutpie raises while the chains still run
        return False


def _result(tree: xr.DataTree, k: int, checks: list, t0: float, plan: Plan, max_tree_depth: int):
    kept = first_draws(tree, k)
    stats = tree["sample_stats"].to_dataset()
    steps = stats["n_steps"].to_numpy()
    warm = (
        tree["warmup_sample_stats"].to_dataset()["n_steps"].to_numpy()
        if "warmup_sample_stats" in tree.children
        else np.zeros(0)
    )
    facts = {
        "draws_kept": int(k),
        "draws_max": plan.draws,
        "tune": plan.tune,
        "chains": plan.chains,
        "max_tree_depth": max_tree_depth,
        "checkpoints": checks,
        "stopped_early": k < plan.draws,
        "leapfrog_steps_kept": int(np.nansum(steps[:, :k])),
        "leapfrog_steps_total": int(np.nansum(steps) + np.nansum(warm)),
        "steps_per_draw": float(np.nanmean(steps[:, :k])),
        "sampling_s": time.perf_counter() - t0,
    }
    return kept, facts


def cores() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0))
