"""A split Student-t approximation of the variance parameters' posterior, and chain starts
drawn from the posterior through it (sampling-importance-resampling).

Why: the collapsed posterior of the SDs is skewed. A log SD whose data allow values near
zero has a long left tail, and its mode lies to the right of its mean. Chains started at
the mode spend their first draws on the mode's side: on a harder survey (agreement study,
survey 103) every chain of a default fit drew the wave x region SD 0.1-0.13 posterior SD
high over its first 600 draws and 0.03 over draws 600-2,000. Starts drawn from the
posterior itself leave no such transient to wash out.

The proposal (measured in bench/RESULTS.md, "Importance sampling of the default's 20
variance parameters"): around the mode, the Laplace approximation's correlations, and per
coordinate a left and a right scale from a 1-D scan of the log density along the
coordinate's conditional-mean line (the Laplace covariance's column), widened by
``WIDEN``; Student-t tails (``DF``). The Laplace scales alone are 0.5-0.66 of the
posterior SDs of the skewed coordinates; the scanned ones 0.8-1.0. A folded SD's
coordinate ``w`` (``tau = |w|``) has a density symmetric in ``w``: it is proposed with
either sign.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln

DF = 5.0
WIDEN = 1.2
# Points of each coordinate's scan, in Laplace SDs on either side of the mode: out to 25
# (a log SD's left tail can reach far beyond the mode's curvature).
SCAN = np.array([0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 9.0, 13.0, 18.0, 25.0])
STEP = 1e-4  # central differences of the gradient for the Hessian
# The density of a proposal symmetric in every folded coordinate sums over their sign
# patterns; beyond this many the proposal keeps one sign (see ``SplitT.symmetric``)
MAX_SIGN_PATTERNS = 1024

Logp = Callable[[np.ndarray], tuple[float, np.ndarray]]


@dataclass(frozen=True)
class SplitT:
    """x = centre + s(y) * y, y ~ t_DF(0, R), s = ``left`` where y < 0 else ``right``;
    coordinates in ``folded`` then take either sign with probability 1/2 (when
    ``symmetric``; otherwise the proposal keeps one sign, still covering every point, and
    :func:`resampled_start` flips the signs after resampling: the target is symmetric)."""

    centre: np.ndarray
    chol: np.ndarray  # Cholesky factor of the correlation matrix R
    left: np.ndarray
    right: np.ndarray
    folded: np.ndarray  # bool per coordinate

    @classmethod
    def fit(
        cls,
        logp: Logp,
        centre: np.ndarray,
        folded: np.ndarray,
        *,
        workers: int = 1,
        value: Callable[[np.ndarray], float] | None = None,
    ) -> SplitT:
        """The proposal at the mode ``centre`` of ``logp`` (value, gradient): Hessian by
        central differences of the gradient, then the scans (with ``value``, the log density
        alone, where given); ``workers`` threads evaluate them (a kernel that releases the
        GIL runs them in parallel)."""
        n = centre.size
        steps = STEP * np.eye(n)
        with ThreadPoolExecutor(workers) as pool:
            grads = list(pool.map(lambda x: logp(x)[1], [*(centre + steps), *(centre - steps)]))
        hessian = (np.array(grads[:n]) - np.array(grads[n:])).T / (2 * STEP)
        precision = -0.5 * (hessian + hessian.T)
        eigval, eigvec = np.linalg.eigh(precision)
        # a flat or non-concave direction (a mode on a ridge) gets unit curvature
        eigval = np.where(eigval > 1e-8, eigval, 1.0)
        cov = (eigvec / eigval) @ eigvec.T
        sd = np.sqrt(np.diag(cov))
        grid = np.r_[-SCAN[::-1], 0.0, SCAN]
        points = [centre + t * cov[:, i] / sd[i] for i in range(n) for t in grid]
        with ThreadPoolExecutor(workers) as pool:
            scan = value if value is not None else (lambda x: _value(logp, x))
            values = np.array(list(pool.map(scan, points)))
        left, right = np.empty(n), np.empty(n)
        for i, drop in enumerate(values.reshape(n, grid.size)):
            left[i], right[i] = _side_scales(grid * sd[i], drop)
        return cls(
            centre=centre,
            chol=np.linalg.cholesky(cov / np.outer(sd, sd)),
            left=WIDEN * left,
            right=WIDEN * right,
            folded=np.asarray(folded, dtype=bool),
        )

    @property
    def n_dim(self) -> int:
        return self.centre.size

    @property
    def symmetric(self) -> bool:
        """Whether draws and density are symmetric in every folded coordinate."""
        return 2 ** int(self.folded.sum()) <= MAX_SIGN_PATTERNS

    def draw(self, rng: np.random.Generator, m: int) -> np.ndarray:
        """``m`` draws (rows)."""
        y = rng.standard_normal((m, self.n_dim)) @ self.chol.T
        y /= np.sqrt(rng.chisquare(DF, m) / DF)[:, None]
        x = self.centre + y * np.where(y < 0, self.left, self.right)
        if not self.symmetric:
            return x
        return _flip_folded(rng, x, self.folded)

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        """Log density of rows ``x``."""
        x = np.atleast_2d(x)
        if not self.symmetric:
            return self._logpdf_one_sign(x)
        signs = list(itertools.product((1.0, -1.0), repeat=int(self.folded.sum())))
        parts = []
        for combo in signs:
            s = np.ones(self.n_dim)
            s[self.folded] = combo
            parts.append(self._logpdf_one_sign(x * s))
        return np.logaddexp.reduce(np.stack(parts), axis=0) - math.log(len(signs))

    def _logpdf_one_sign(self, x: np.ndarray) -> np.ndarray:
        z = x - self.centre
        scale = np.where(z < 0, self.left, self.right)
        y = z / scale
        u = np.linalg.solve(self.chol, y.T).T  # R = chol chol'
        n = self.n_dim
        log_t = (
            gammaln((DF + n) / 2)
            - gammaln(DF / 2)
            - n / 2 * math.log(DF * math.pi)
            - np.log(np.diag(self.chol)).sum()
            - (DF + n) / 2 * np.log1p((u**2).sum(axis=1) / DF)
        )
        return log_t - np.log(scale).sum(axis=1)


def _flip_folded(rng: np.random.Generator, x: np.ndarray, folded: np.ndarray) -> np.ndarray:
    """Rows ``x`` with each folded coordinate's sign flipped with probability 1/2."""
    flip = rng.integers(0, 2, size=x.shape).astype(bool) & folded
    return np.where(flip, -x, x)


def _value(logp: Logp, x: np.ndarray) -> float:
    value = logp(x)[0]
    return value if np.isfinite(value) else -np.inf


def _side_scales(offsets: np.ndarray, drop: np.ndarray) -> tuple[float, float]:
    """Root mean square offset below and above the mode of the scanned density (trapezoid
    weights on the uneven grid): a half-normal's RMS about its mode is its scale."""
    dens = np.exp(drop - np.max(drop))  # the mode (offset 0) is on the grid: finite
    width = np.gradient(offsets)
    out = []
    for side in (offsets <= 0, offsets >= 0):
        w = dens[side] * width[side]
        out.append(math.sqrt(np.sum(w * offsets[side] ** 2) / np.sum(w)))
    return out[0], out[1]


def importance_weights(log_target: np.ndarray, log_proposal: np.ndarray) -> np.ndarray:
    """Self-normalised importance weights (a proposal where the target's density is not
    finite gets weight 0)."""
    ratio = np.where(np.isfinite(log_target), log_target - log_proposal, -np.inf)
    if not np.isfinite(ratio).any():
        raise ValueError("no proposal has a finite log density")
    w = np.exp(ratio - np.max(ratio))
    return w / w.sum()


def resampled_start(logp: Logp, proposal: SplitT, rng: np.random.Generator, m: int) -> np.ndarray:
    """One point drawn from ``m`` proposals by their importance weights (SIR): close to a
    draw from the posterior when the weights are even, the proposal's own draw when not."""
    x = proposal.draw(rng, m)
    log_target = np.array([_value(logp, row) for row in x])
    w = importance_weights(log_target, proposal.logpdf(x))
    start = x[rng.choice(m, p=w)]
    if proposal.symmetric:
        return start
    return _flip_folded(rng, start[None, :], proposal.folded)[0]
