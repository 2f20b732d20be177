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
from scipy.special import exprel, gammaln, stdtr, stdtrit

DF = 5.0
WIDEN = 1.2
# Points of each coordinate's scan, in Laplace SDs on either side of the mode: out to 25
# (a log SD's left tail can reach far beyond the mode's curvature).
SCAN = np.array([0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 9.0, 13.0, 18.0, 25.0])
STEP = 1e-4  # central differences of the gradient for the Hessian
# The density of a proposal symmetric in every folded coordinate sums over their sign
# patterns; beyond this many the proposal keeps one sign (see ``SplitT.symmetric``)
MAX_SIGN_PATTERNS = 1024
# A scanned margin keeps the knots down to this far below its mode (e^-40: no mass left);
# its exponential tails go on from there
MARGIN_DROP = 40.0
# The copula's margins: the scanned log density divided by this (a Gaussian's SD times 1.3).
# 1.2^2 gave 10-25% more ESS on harder surveys but a Pareto k of 0.7 in one of 5 runs
COPULA_TEMPER = 1.3**2

Logp = Callable[[np.ndarray], tuple[float, np.ndarray]]


class _SignSymmetric:
    """Draws and density of a proposal on the sampler's coordinates, symmetric in each
    folded coordinate ``w`` (``tau = |w|``, a density symmetric in ``w``) where
    ``symmetric``: the subclass gives one sign's draws and density."""

    centre: np.ndarray
    folded: np.ndarray  # bool per coordinate

    @property
    def n_dim(self) -> int:
        return self.centre.size

    @property
    def symmetric(self) -> bool:
        """Whether draws and density are symmetric in every folded coordinate."""
        return 2 ** int(self.folded.sum()) <= MAX_SIGN_PATTERNS

    def draw(self, rng: np.random.Generator, m: int) -> np.ndarray:
        """``m`` draws (rows)."""
        x = self._draw_one_sign(rng, m)
        return _flip_folded(rng, x, self.folded) if self.symmetric else x

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

    def _draw_one_sign(self, rng: np.random.Generator, m: int) -> np.ndarray:
        raise NotImplementedError

    def _logpdf_one_sign(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class SplitT(_SignSymmetric):
    """x = centre + s(y) * y, y ~ t_DF(0, R), s = ``left`` where y < 0 else ``right``;
    coordinates in ``folded`` then take either sign with probability 1/2 (when
    ``symmetric``; otherwise the proposal keeps one sign, still covering every point, and
    :func:`resampled_start` flips the signs after resampling: the target is symmetric)."""

    centre: np.ndarray
    chol: np.ndarray  # Cholesky factor of the correlation matrix R
    left: np.ndarray
    right: np.ndarray
    folded: np.ndarray  # bool per coordinate
    # the scans behind the scales: offsets from the mode (n, K) and log densities there
    scan_offsets: np.ndarray | None = None
    scan_values: np.ndarray | None = None
    description = "split Student-t at the mode"

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
        offsets, values = np.outer(sd, grid), values.reshape(n, grid.size)
        left, right = np.empty(n), np.empty(n)
        for i, drop in enumerate(values):
            left[i], right[i] = _side_scales(offsets[i], drop)
        return cls(
            centre=centre,
            chol=np.linalg.cholesky(cov / np.outer(sd, sd)),
            left=WIDEN * left,
            right=WIDEN * right,
            folded=np.asarray(folded, dtype=bool),
            scan_offsets=offsets,
            scan_values=values,
        )

    def _draw_one_sign(self, rng: np.random.Generator, m: int) -> np.ndarray:
        y = rng.standard_normal((m, self.n_dim)) @ self.chol.T
        y /= np.sqrt(rng.chisquare(DF, m) / DF)[:, None]
        return self.centre + y * np.where(y < 0, self.left, self.right)

    def _logpdf_one_sign(self, x: np.ndarray) -> np.ndarray:
        z = x - self.centre
        scale = np.where(z < 0, self.left, self.right)
        y = z / scale
        return _log_t(y, self.chol) - np.log(scale).sum(axis=1)


@dataclass(frozen=True)
class ScanMargin:
    """A 1-D density on offsets from the mode: its log is linear between the scan's knots
    and falls off exponentially beyond the end knots; exact CDF and quantiles."""

    knots: np.ndarray  # increasing
    log_density: np.ndarray  # at the knots, normalised (the density integrates to 1)
    tails: tuple[float, float]  # exponential scales below the first and above the last knot
    cum: np.ndarray  # the CDF at each knot

    @classmethod
    def of(cls, knots: np.ndarray, log_density: np.ndarray, min_tail: float) -> ScanMargin:
        """From a scan's knots and (unnormalised) log densities: the run of knots around
        the highest down to ``MARGIN_DROP`` below it; each tail decays as the end segment
        (no faster than ``min_tail``, no slower than over the run's span), which beyond
        the run is heavier than the density."""
        top = int(np.argmax(log_density))
        kept = log_density >= log_density[top] - MARGIN_DROP  # False where not finite
        lo, hi = top, top
        while lo > 0 and kept[lo - 1]:
            lo -= 1
        while hi < knots.size - 1 and kept[hi + 1]:
            hi += 1
        k, ld = knots[lo : hi + 1], log_density[lo : hi + 1] - log_density[top]
        if k.size < 2:  # a spike: the mode alone is kept
            k, ld = np.array([-min_tail, min_tail]), np.zeros(2)
        drop = np.maximum(np.array([ld[1] - ld[0], ld[-2] - ld[-1]]), 1e-12)
        # an end segment that does not fall (a scan that rises again far out) would give a
        # tail of any length: at most the scanned span
        span = max(k[-1] - k[0], min_tail)
        tails = np.clip(np.array([k[1] - k[0], k[-1] - k[-2]]) / drop, min_tail, span)
        segments = _segment_mass(k[:-1], np.diff(k), ld[:-1], np.diff(ld) / np.diff(k))
        masses = np.r_[np.exp(ld[0]) * tails[0], segments, np.exp(ld[-1]) * tails[1]]
        total = masses.sum()
        cum = np.cumsum(masses[:-1]) / total
        return cls(k, ld - math.log(total), (float(tails[0]), float(tails[1])), cum)

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        k, ld = self.knots, self.log_density
        out = np.interp(x, k, ld)
        out = np.where(x < k[0], ld[0] - (k[0] - x) / self.tails[0], out)
        return np.where(x > k[-1], ld[-1] - (x - k[-1]) / self.tails[1], out)

    def cdf(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(P(X <= x), P(X > x)), each accurate in its own tail."""
        k, ld = self.knots, self.log_density
        s = np.clip(np.searchsorted(k, x, side="right") - 1, 0, k.size - 2)
        slope = (ld[s + 1] - ld[s]) / (k[s + 1] - k[s])
        inside = self.cum[s] + _segment_mass(k[s], np.clip(x - k[s], 0.0, None), ld[s], slope)
        below = np.exp(ld[0] - (k[0] - np.minimum(x, k[0])) / self.tails[0]) * self.tails[0]
        above = np.exp(ld[-1] - (np.maximum(x, k[-1]) - k[-1]) / self.tails[1]) * self.tails[1]
        lower = np.where(x < k[0], below, np.where(x > k[-1], 1.0 - above, inside))
        upper = np.where(x > k[-1], above, 1.0 - lower)
        return lower, upper

    def ppf(self, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
        """The quantiles of probabilities given below (``lower``) and above (``upper``)."""
        k, ld = self.knots, self.log_density
        s = np.clip(np.searchsorted(self.cum, lower, side="right") - 1, 0, k.size - 2)
        slope = (ld[s + 1] - ld[s]) / (k[s + 1] - k[s])
        mass = np.maximum(lower - self.cum[s], 0.0) * np.exp(-ld[s])  # in units of the knot's
        arg = np.maximum(mass * slope, -1.0 + 1e-15)
        flat = np.abs(slope) * (k[s + 1] - k[s]) < 1e-9
        step = np.where(flat, mass, np.log1p(arg) / np.where(flat, 1.0, slope))
        x = k[s] + np.clip(step, 0.0, k[s + 1] - k[s])
        t0, t1 = self.tails
        below = k[0] + t0 * (np.log(np.maximum(lower, 1e-300)) - ld[0] - math.log(t0))
        above = k[-1] - t1 * (np.log(np.maximum(upper, 1e-300)) - ld[-1] - math.log(t1))
        return np.where(lower < self.cum[0], below, np.where(lower > self.cum[-1], above, x))


def _segment_mass(a, width, la, slope):
    """Integral over [a, a + width] of exp(la + slope * (t - a))."""
    return np.exp(la) * width * exprel(slope * width)


@dataclass(frozen=True)
class ScannedCopula(_SignSymmetric):
    """Each coordinate's margin the tempered 1-D scan at the mode (``ScanMargin``: the
    skew and tails the scan saw, not a split-t's fixed shape), joined by a Student-t
    copula (``DF``) with the Laplace correlations. The importance proposal of
    ``backends/importance.py``: on harder surveys it gives 1.3-2 times the weights' ESS
    of the split-t from the same scans (bench/RESULTS.md), at no further density
    evaluation."""

    centre: np.ndarray
    chol: np.ndarray  # Cholesky factor of the copula's correlation matrix
    margins: tuple[ScanMargin, ...]
    folded: np.ndarray
    description = "Student-t copula of the scanned margins at the mode"

    @classmethod
    def of(cls, split: SplitT, temper: float = COPULA_TEMPER) -> ScannedCopula:
        """From the scans of ``split`` (``SplitT.fit``), their log densities divided by
        ``temper`` (a Gaussian's SD times sqrt(temper)), wider than the target: weights
        bounded in the tails."""
        if split.scan_offsets is None or split.scan_values is None:
            raise ValueError("the split-t approximation has no scans to build margins from")
        unit = np.sqrt(split.left * split.right) / WIDEN
        margins = tuple(
            ScanMargin.of(offsets, values / temper, min_tail=float(u))
            for offsets, values, u in zip(split.scan_offsets, split.scan_values, unit, strict=True)
        )
        return cls(centre=split.centre, chol=split.chol, margins=margins, folded=split.folded)

    def _draw_one_sign(self, rng: np.random.Generator, m: int) -> np.ndarray:
        z = rng.standard_normal((m, self.n_dim)) @ self.chol.T
        z /= np.sqrt(rng.chisquare(DF, m) / DF)[:, None]
        lower, upper = stdtr(DF, z), stdtr(DF, -z)
        offsets = [mg.ppf(lower[:, i], upper[:, i]) for i, mg in enumerate(self.margins)]
        return self.centre + np.column_stack(offsets)

    def _logpdf_one_sign(self, x: np.ndarray) -> np.ndarray:
        offsets = x - self.centre
        z = np.empty_like(offsets)
        log_margins = np.zeros(x.shape[0])
        for i, mg in enumerate(self.margins):
            lower, upper = mg.cdf(offsets[:, i])
            # the t quantile from the smaller tail probability (accurate far out)
            z[:, i] = np.where(
                lower < 0.5,
                stdtrit(DF, np.maximum(lower, 1e-300)),
                -stdtrit(DF, np.maximum(upper, 1e-300)),
            )
            log_margins += mg.logpdf(offsets[:, i])
        univariate = _LOG_T1 - (DF + 1) / 2 * np.log1p(z**2 / DF)
        return _log_t(z, self.chol) - univariate.sum(axis=1) + log_margins


_LOG_T1 = gammaln((DF + 1) / 2) - gammaln(DF / 2) - 0.5 * math.log(DF * math.pi)


def _log_t(y: np.ndarray, chol: np.ndarray) -> np.ndarray:
    """Log density of the multivariate t (``DF``, location 0, shape chol chol') at rows y."""
    n = y.shape[1]
    u = np.linalg.solve(chol, y.T).T
    return (
        gammaln((DF + n) / 2)
        - gammaln(DF / 2)
        - n / 2 * math.log(DF * math.pi)
        - np.log(np.diag(chol)).sum()
        - (DF + n) / 2 * np.log1p((u**2).sum(axis=1) / DF)
    )


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
