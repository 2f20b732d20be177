"""Exact sums of floating-point values, the same bits however the rows are split.

A float sum depends on the order of its terms, so a file, its parts, its batches and the
tasks of a Dask cluster would give statistics that differ in the last bits, and a sampler
fed those statistics would draw other numbers for the same seed. Here each value is
written exactly as three int64 limbs on the binary grid 2**-GRID_BITS; integer addition is
exact and associative, so sums of limbs are identical for every partition and order, and
turning them into floats once, at the end, gives the same bits every time.

Values must be finite, below 2**29 in magnitude and on the grid (every double whose
magnitude is at least 2**-11 is): the survey's ages, item means and their products are.
Limb sums stay exact for up to 2**32 rows.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

GRID_BITS = 64
LIMB_BITS = 31
LIMBS = 3
_TOP_SHIFT = LIMB_BITS * (LIMBS - 1)  # 62
_MASK = (1 << LIMB_BITS) - 1


def limbs(values: np.ndarray) -> np.ndarray:
    """``values`` (n,) as (n, 3) int64 limbs [hi, mid, lo]: value = sum limb * 2**(31k - 64)."""
    x = np.asarray(values, dtype=np.float64)
    y = x * 2.0**GRID_BITS  # a power-of-two scaling: exact
    hi = np.floor(y * 2.0**-_TOP_SHIFT)
    rest = y - hi * 2.0**_TOP_SHIFT  # exact: 0 <= rest < 2**62, on y's own grid
    mid = np.floor(rest * 2.0**-LIMB_BITS)
    lo = rest - mid * 2.0**LIMB_BITS
    ok = np.isfinite(y) & (np.abs(hi) < 2.0**LIMB_BITS) & (lo == np.floor(lo))
    if not ok.all():
        bad = x[~ok][0]
        raise ValueError(
            f"exactsum: {bad!r} is not a finite value of magnitude 2**-11 .. 2**29 "
            "(an internal limit of the exact sums)"
        )
    return np.stack([hi, mid, lo], axis=-1).astype(np.int64)


def normalised(sums: np.ndarray) -> np.ndarray:
    """Summed limbs with the carries moved up: mid and lo in [0, 2**31)."""
    s = np.array(sums, dtype=np.int64, copy=True)
    for k in range(LIMBS - 1, 0, -1):
        carry = s[..., k] >> LIMB_BITS  # arithmetic shift: floor division, also below 0
        s[..., k] &= _MASK
        s[..., k - 1] += carry
    return s


def to_float(sums: np.ndarray) -> np.ndarray:
    """Summed limbs (..., 3) as float64: the same limbs give the same bits."""
    s = normalised(sums).astype(np.float64)  # mid and lo are exact; hi rounds once
    out = np.zeros(s.shape[:-1])
    for k in range(LIMBS - 1, -1, -1):  # smallest first
        out = out + s[..., k] * 2.0 ** (LIMB_BITS * (LIMBS - 1 - k) - GRID_BITS)
    return out


def to_fraction(sums: np.ndarray) -> Fraction:
    """One summed limb triple as the exact rational it stands for."""
    total = 0
    for limb in np.asarray(sums, dtype=np.int64).reshape(LIMBS).tolist():
        total = (total << LIMB_BITS) + int(limb)
    return Fraction(total, 1 << GRID_BITS)


def total(values: np.ndarray) -> np.ndarray:
    """The limb sum of ``values`` (3,) int64: add these across parts, exactly."""
    return limbs(values).sum(axis=0)


def mean_sd(n: int, sum_limbs: np.ndarray, sum_sq_limbs: np.ndarray) -> tuple[float, float]:
    """Mean and SD (ddof 1) of n values from the exact sums of the values and their squares.

    Computed in rational arithmetic and rounded once, so no cancellation and the same bits
    from any split of the rows.
    """
    s1, s2 = to_fraction(sum_limbs), to_fraction(sum_sq_limbs)
    mean = s1 / n
    var = (s2 - s1 * mean) / (n - 1) if n > 1 else Fraction(0)
    return float(mean), float(np.sqrt(float(max(var, Fraction(0)))))


def mean(n: int, sum_limbs: np.ndarray) -> float:
    """The mean of n values from the exact sum of their limbs, rounded once."""
    return float(to_fraction(sum_limbs) / n)
