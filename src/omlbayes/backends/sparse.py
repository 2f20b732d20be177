"""The collapsed marginal likelihood with a sparse exact Cholesky factor, as a PyTensor Op.

Residual variances may differ between G groups of rows (G = 1 is the plain model). With
A_g = W_g'W_g, u_g = W_g'y_g, c_g = y_g'y_g, n_g rows in group g, residual variance s2_g
and b ~ N(0, diag(lam)), integrating b out gives

    P    = sum_g A_g / s2_g + diag(1 / lam)       (the posterior precision of b)
    r    = sum_g u_g / s2_g,   bhat = P^-1 r,     S = P^-1
    ll   = -1/2 sum_g n_g log(2 pi s2_g) - 1/2 sum log lam - 1/2 log|P|
           - 1/2 (sum_g c_g / s2_g - r'bhat)
    d ll / d log lam_j = -1/2 + S_jj / (2 lam_j) + bhat_j^2 / (2 lam_j)
    d ll / d log s2_g  = -n_g / 2 + (tr(S A_g) + c_g - 2 bhat'u_g + bhat'A_g bhat) / (2 s2_g)

For G = 1, P = M / s2 with the dense kernel's M = W'W + s2 diag(1/lam): the same numbers.

P is sparse when the model's group terms are many: the cells of one grouping term never
share a row, so their block of W'W is diagonal. The pattern of P is fixed across
evaluations, so the symbolic work is done once (:class:`SparsePattern`): a fill-reducing
ordering (the best of several candidates, judged by the flops of the factor), the
elimination tree and the pattern of the factor L, and a split of the columns into a sparse
lead and a trailing block D that the small common part (fixed effects, wave x group cells)
fills almost completely. Each evaluation then factors the lead with a scalar up-looking
Cholesky, forms the lead columns' rows in D left-looking (column by column, at positions
found once: ``_tail_map``), then D's Schur complement P_DD - L_DS L_DS' as one matrix
product per group of lead columns with similar row patterns in D (BLAS), and factors and
inverts it densely (LAPACK); the selected inverse reuses those groups' blocks of L. The
Takahashi recursion gives the entries of S = P^-1 on the pattern of L (which
holds every entry of S that tr(S A_g) and diag(S) need), its D-by-D part again as grouped
matrix products and the rest reading S at positions found once (``_relative_map``). The
last residual group's trace follows from the others' (sum_g tr(S A_g) / s2_g = p -
sum_j S_jj / lam_j), so G = 1 needs no pass over the pattern. Exact, no stochastic
trace. Where D starts and how the lead columns are grouped is chosen by a cost model of
the kernel's parts (``SparsePattern.predicted_s``, which the kernel choice also uses).
All of it is numba nopython code with ``nogil`` (BLAS and LAPACK through numba's own
bindings), so nutpie's threaded chains run in parallel; callers limit BLAS to one thread,
as the blocks are small.

The pattern travels into the kernel as one int64 array (an Op input, held as ``pm.Data``),
not as a compiled-in constant: numba would otherwise freeze megabytes into machine code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import pytensor.tensor as pt
import scipy.sparse as sp
from pytensor.gradient import DisconnectedType
from pytensor.graph import Apply, Op
from pytensor.link.numba.dispatch import numba_funcify
from scipy.sparse.linalg import splu

_LOG_2PI = math.log(2.0 * math.pi)
# p, nnz of P's upper pattern, nnz of L, t0, groups, rows of all groups, relmap, tailmap
_HEADER = 8
# Cost model of a group of lead columns in the blocked kernel (seconds): a BLAS multiply-add
# in the two products (Schur complement, selected inverse), a gathered or scattered entry of
# the group's square block, and a fixed cost per group. Lead columns with similar row
# patterns in the dense tail are merged while that lowers the predicted total.
_GROUP_S_PER_FMA = 2 * 1.5e-10
_GROUP_S_PER_ENTRY = 2 * 1.5e-9
_GROUP_S_FIXED = 4e-6
_GROUP_MAX_PATTERNS = 400
_TRI_BLOCK = 32
# Tails compared by the symbolic analysis: the fully dense one, and those whose columns of L
# are all at least this full; at most _TAIL_MAX columns (dense work grows with its cube).
_TAIL_DENSITIES = (0.75, 0.5, 0.35, 0.25)
_TAIL_MAX = 1500
# Predicted seconds of the rest of the kernel: a scalar inner-loop step (indirect access),
# the dense tail's ~nd^3 multiply-adds (Cholesky, inverse, product), and per non-zero of L
# (assembly, solves, gradient sums).
_S_PER_SCALAR_OP = 2e-9
_S_PER_DENSE_FMA = 1.0e-10
_S_PER_NONZERO = 3e-9


# --- symbolic analysis (once per pattern) ---------------------------------------------


@numba.njit(cache=True, nogil=True)
def _etree(p, ap, ai):
    """Elimination tree of a symmetric matrix from its upper-triangular CSC pattern."""
    parent = np.full(p, -1, dtype=np.int64)
    ancestor = np.full(p, -1, dtype=np.int64)
    for k in range(p):
        for q in range(ap[k], ap[k + 1]):
            i = ai[q]
            while i != -1 and i < k:
                inext = ancestor[i]
                ancestor[i] = k  # path compression
                if inext == -1:
                    parent[i] = k
                i = inext
    return parent


@numba.njit(cache=True, nogil=True)
def _factor_pattern(p, ap, ai, parent):
    """Row and column patterns of L (L L' = P) from the etree: rows by reachability."""
    flag = np.full(p, -1, dtype=np.int64)
    row_count = np.zeros(p, dtype=np.int64)
    for k in range(p):
        flag[k] = k
        for q in range(ap[k], ap[k + 1]):
            i = ai[q]
            while flag[i] != k:
                row_count[k] += 1
                flag[i] = k
                i = parent[i]
    rp = np.zeros(p + 1, dtype=np.int64)
    for k in range(p):
        rp[k + 1] = rp[k] + row_count[k]
    ri = np.empty(rp[p], dtype=np.int64)  # row k of L below the diagonal: its columns
    flag[:] = -1
    for k in range(p):
        flag[k] = k
        t = rp[k]
        for q in range(ap[k], ap[k + 1]):
            i = ai[q]
            while flag[i] != k:
                ri[t] = i
                t += 1
                flag[i] = k
                i = parent[i]
        ri[rp[k] : rp[k + 1]] = np.sort(ri[rp[k] : rp[k + 1]])
    col_count = np.ones(p, dtype=np.int64)  # the diagonal
    for t in range(rp[p]):
        col_count[ri[t]] += 1
    lp = np.zeros(p + 1, dtype=np.int64)
    for j in range(p):
        lp[j + 1] = lp[j] + col_count[j]
    li = np.empty(lp[p], dtype=np.int64)
    nxt = lp[:-1].copy()
    for j in range(p):
        li[nxt[j]] = j  # diagonal first in each column
        nxt[j] += 1
    rpos = np.empty(rp[p], dtype=np.int64)  # where L[k, ri[t]] sits in L's column storage
    for k in range(p):
        for t in range(rp[k], rp[k + 1]):
            j = ri[t]
            li[nxt[j]] = k
            rpos[t] = nxt[j]
            nxt[j] += 1
    # where each entry of P's upper pattern sits in L (P[i, k], i <= k  <->  L[k, i])
    apos = np.empty(ap[p], dtype=np.int64)
    for k in range(p):
        for q in range(ap[k], ap[k + 1]):
            i = ai[q]
            if i == k:
                apos[q] = lp[k]
            else:
                t = rp[k] + np.searchsorted(ri[rp[k] : rp[k + 1]], i)
                apos[q] = rpos[t]
    return lp, li, rp, ri, rpos, apos


def _symbolic(upper: sp.csc_matrix) -> tuple[np.ndarray, ...]:
    p = upper.shape[0]
    ap = upper.indptr.astype(np.int64)
    ai = upper.indices.astype(np.int64)
    parent = _etree(p, ap, ai)
    return (ap, ai, *_factor_pattern(p, ap, ai, parent))


def _factor_flops(lp: np.ndarray) -> float:
    counts = np.diff(lp).astype(np.float64)
    return float(np.sum(counts**2))


def _permuted_upper(pattern: sp.csc_matrix, perm: np.ndarray) -> sp.csc_matrix:
    permuted = sp.csc_matrix(pattern[perm][:, perm])
    upper = sp.triu(permuted, format="csc")
    upper.sort_indices()
    return upper


def _block_ordering(pattern: sp.csc_matrix, blocks: list[np.ndarray]) -> np.ndarray:
    """Largest blocks first, each block in order of fewest off-block neighbours first."""
    degree = np.diff(pattern.indptr)
    order = sorted(blocks, key=len, reverse=True)
    return np.concatenate([b[np.argsort(degree[b], kind="stable")] for b in order])


def _mmd_ordering(pattern: sp.csc_matrix) -> np.ndarray:
    """SuperLU's minimum-degree ordering of P + P' (its numeric factor is thrown away)."""
    p = pattern.shape[0]
    values = sp.csc_matrix((np.ones(pattern.nnz), pattern.indices, pattern.indptr), (p, p))
    dominant = values + sp.diags(np.asarray(np.abs(values).sum(axis=1)).ravel() + 1.0)
    lu = splu(
        sp.csc_matrix(dominant),
        permc_spec="MMD_AT_PLUS_A",
        diag_pivot_thresh=0.0,
        options={"SymmetricMode": True},
    )
    return np.asarray(lu.perm_c, dtype=np.int64).argsort()  # perm_c[i]: new position of i


def _group_cost(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    return (
        rows * rows * np.asarray(cols, dtype=np.float64) * _GROUP_S_PER_FMA
        + rows * rows * _GROUP_S_PER_ENTRY
        + _GROUP_S_FIXED
    )


@numba.njit(cache=True, nogil=True)
def _best_partition(masks, n_cols, max_len, s_fma, s_entry, s_fixed):
    """Cheapest split of the (sorted) patterns into runs, by dynamic programming.

    A run costs :func:`_group_cost` of the union of its patterns and its columns; runs are
    at most ``max_len`` patterns long. Returns the run boundaries (0, ..., n).
    """
    n, nd = masks.shape
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    prev = np.zeros(n + 1, dtype=np.int64)
    union = np.zeros(nd, dtype=np.bool_)
    for i in range(n):
        union[:] = False
        rows = 0
        cols = 0
        for j in range(i, min(n, i + max_len)):
            for r in range(nd):
                if masks[j, r] and not union[r]:
                    union[r] = True
                    rows += 1
            cols += n_cols[j]
            cost = best[i] + rows * rows * (cols * s_fma + s_entry) + s_fixed
            if cost < best[j + 1]:
                best[j + 1] = cost
                prev[j + 1] = i
    cuts = [n]
    while cuts[-1] > 0:
        cuts.append(prev[cuts[-1]])
    out = np.empty(len(cuts), dtype=np.int64)
    for k in range(len(cuts)):
        out[k] = cuts[len(cuts) - 1 - k]
    return out, best[n]


def _tail_groups(p: int, lp: np.ndarray, li: np.ndarray, t0: int) -> tuple:
    """Groups of lead columns (before ``t0``) for the blocked kernel's dense products.

    Each lead column's rows in the tail D form its pattern. Columns with the same pattern
    share a group; the distinct patterns are sorted so that those sharing rare rows are
    adjacent (rows compared rarest first) and split into runs of least predicted cost
    (:func:`_best_partition`), each run one group. Returns ``tpos`` (first tail entry of
    each column in L's storage), the group column pointers and columns, the group row
    pointers and (sorted, D-relative) rows, ``gpos`` (each tail entry's index among its
    group's rows), and the predicted seconds of the groups' products.
    """
    nd = p - t0
    tpos = lp[1:].copy()
    by_pattern: dict[bytes, tuple[np.ndarray, list[int]]] = {}
    for j in range(t0):
        rows = li[lp[j] + 1 : lp[j + 1]]
        first = lp[j] + 1 + int(np.searchsorted(rows, t0))
        tpos[j] = first
        tail = li[first : lp[j + 1]] - t0
        if tail.size:
            by_pattern.setdefault(tail.tobytes(), (tail, []))[1].append(j)
    items = list(by_pattern.values())
    masks = np.zeros((len(items), nd), dtype=bool)
    for k, (tail, _) in enumerate(items):
        masks[k, tail] = True
    n_cols = np.array([len(cols) for _, cols in items], dtype=np.int64)
    rarest_first = np.argsort(masks.sum(axis=0), kind="stable")
    order = np.lexsort(masks[:, rarest_first[::-1]].T[::1]) if len(items) else np.zeros(0, int)
    masks, n_cols = masks[order], n_cols[order]
    items = [items[k] for k in order]
    cuts, predicted = _best_partition(
        masks, n_cols, _GROUP_MAX_PATTERNS, _GROUP_S_PER_FMA, _GROUP_S_PER_ENTRY, _GROUP_S_FIXED
    )
    k = len(cuts) - 1
    sptr = np.zeros(k + 1, dtype=np.int64)
    srptr = np.zeros(k + 1, dtype=np.int64)
    scols, srows = [], []
    gpos = np.full(lp[p], -1, dtype=np.int64)
    index = np.full(nd, -1, dtype=np.int64)
    for g in range(k):
        rows = np.flatnonzero(masks[cuts[g] : cuts[g + 1]].any(axis=0))
        index[rows] = np.arange(rows.size)
        cols = np.sort(np.concatenate([np.asarray(c) for _, c in items[cuts[g] : cuts[g + 1]]]))
        for j in cols:
            gpos[tpos[j] : lp[j + 1]] = index[li[tpos[j] : lp[j + 1]] - t0]
        scols.append(cols.astype(np.int64))
        srows.append(rows.astype(np.int64))
        sptr[g + 1], srptr[g + 1] = sptr[g] + cols.size, srptr[g] + rows.size
    empty = np.zeros(0, dtype=np.int64)
    return (
        tpos,
        sptr,
        np.concatenate(scols) if scols else empty,
        srptr,
        np.concatenate(srows) if srows else empty,
        gpos,
        float(predicted),
    )


@numba.njit(cache=True, nogil=True)
def _scalar_work(p, lp, li, rp, ri, rpos, t0):
    """Inner-loop counts of the blocked kernel's scalar parts for a tail starting at t0:
    (factor, selected inverse)."""
    tpos = np.empty(t0, dtype=np.int64)
    for j in range(t0):
        q = lp[j] + 1
        while q < lp[j + 1] and li[q] < t0:
            q += 1
        tpos[j] = q
    factor = 0
    for k in range(t0):  # the lead, up-looking
        for t in range(rp[k], rp[k + 1]):
            factor += 1 + rpos[t] - lp[ri[t]]
    for j in range(t0):  # the lead columns' D rows, left-looking
        factor += lp[j + 1] - tpos[j]
        for t in range(rp[j], rp[j + 1]):
            factor += lp[ri[t] + 1] - tpos[ri[t]]
    selinv = 0
    for j in range(t0):
        m = lp[j + 1] - lp[j] - 1
        selinv += 1 + m
        for b in range(tpos[j] - lp[j] - 1):  # each later row of j, read via the relmap
            selinv += m - b
    return factor, selinv


@numba.njit(cache=True, nogil=True)
def _relative_map(lp, li, t0, tpos):
    """Where the selected inverse reads S[r_a, c] for each lead column j (last first), each
    lead row c of j and each later row r_a of j: its position in column c of L's pattern
    (which holds every later row of j: the elimination tree's nesting). Computed once, so
    each evaluation reads these entries directly instead of searching column c."""
    size = 0
    for j in range(t0):
        m = lp[j + 1] - lp[j] - 1
        for b in range(tpos[j] - lp[j] - 1):
            size += m - b - 1
    out = np.empty(size, dtype=np.int64)
    k = 0
    for j in range(t0 - 1, -1, -1):
        start, end = lp[j] + 1, lp[j + 1]
        for b in range(tpos[j] - start):
            c = li[start + b]
            q = lp[c] + 1
            for a in range(start + b + 1, end):
                while li[q] != li[a]:  # both sorted: a merge walk down column c
                    q += 1
                out[k] = q
                k += 1
    return out


@numba.njit(cache=True, nogil=True)
def _tail_map(lp, li, rp, ri, t0, tpos):
    """Where the factor adds L[r, i] L[j, i] for each lead column j (in order), each
    earlier lead column i of row j and each row r of i in D: the position of L[r, j] in
    column j (the pattern of L guarantees it). Computed once, so the D rows of the lead
    columns are formed column by column, reading L contiguously."""
    size = 0
    for j in range(t0):
        for t in range(rp[j], rp[j + 1]):
            i = ri[t]
            size += lp[i + 1] - tpos[i]
    out = np.empty(size, dtype=np.int64)
    m = 0
    for j in range(t0):
        for t in range(rp[j], rp[j + 1]):
            i = ri[t]
            q = tpos[j]
            for a in range(tpos[i], lp[i + 1]):
                while li[q] != li[a]:  # both sorted: a merge walk down column j
                    q += 1
                out[m] = q
                m += 1
    return out


def _tail_candidates(p: int, lp: np.ndarray) -> list[int]:
    """Starts of the dense trailing block to compare: the fully dense tail, and the longest
    tails whose columns of L are all at least a given fraction full."""
    counts = np.diff(lp)
    density = counts / (p - np.arange(p))
    full = int(_dense_tail_start(p, lp))
    out = {full}
    for least in _TAIL_DENSITIES:
        below = np.flatnonzero(density < least)
        out.add(int(below[-1]) + 1 if below.size else 0)
    return sorted(t for t in out if t == full or p - t <= _TAIL_MAX)


def _blocked_layout(p, lp, li, rp, ri, rpos) -> tuple:
    """The cheapest tail start by predicted seconds, with its groups: ``(t0, arrays,
    predicted seconds, per-candidate predictions)``."""
    best, predictions = None, {}
    for t0 in _tail_candidates(p, lp):
        arrays = _tail_groups(p, lp, li, t0)
        factor, selinv = _scalar_work(p, lp, li, rp, ri, rpos, t0)
        nd = p - t0
        seconds = (
            arrays[-1]
            + _S_PER_SCALAR_OP * (factor + selinv)
            + _S_PER_DENSE_FMA * nd**3
            + _S_PER_NONZERO * lp[p]
        )
        predictions[t0] = seconds
        if best is None or seconds < best[2]:
            best = (t0, arrays[:-1], seconds)
    return (*best, predictions)


@dataclass(frozen=True)
class SparsePattern:
    """The fixed symbolic analysis of P: ordering, the pattern of L, and index maps.

    ``perm[new] = old``. ``packed`` is every integer array the numeric kernel needs, in
    one int64 array (see :func:`_unpack`). ``ordering`` names the candidate that won and
    ``factor_flops`` its cost (sum of squared column counts of L).
    """

    p: int
    perm: np.ndarray
    upper: sp.csc_matrix  # pattern of P, permuted, upper triangle, sorted
    packed: np.ndarray
    ordering: str
    factor_flops: float
    nnz_factor: int
    candidates: dict[str, float]
    tail_start: int  # first column of the trailing block factored densely
    n_groups: int  # groups of lead columns in the dense products
    predicted_s: float  # predicted seconds per evaluation (cost model), for kernel choice
    tail_candidates: dict[int, float]  # predicted seconds per candidate tail start

    @classmethod
    def build(cls, pattern: sp.spmatrix, blocks: list[np.ndarray] | None = None) -> SparsePattern:
        """Analyse the symmetric ``pattern`` (any values; the diagonal is always included).

        ``blocks`` (index arrays, e.g. one per model term) enables the block ordering that
        eliminates the large grouping terms first and keeps the small dense part last.
        """
        p = pattern.shape[0]
        full = sp.csc_matrix(pattern, dtype=np.float64)
        full = sp.csc_matrix((np.ones(full.nnz), full.indices, full.indptr), shape=(p, p)) + sp.eye(
            p, format="csc"
        )
        full = sp.csc_matrix(((full + full.T) != 0).astype(np.float64))
        full.sort_indices()
        orderings = {"natural": np.arange(p, dtype=np.int64)}
        if blocks:
            orderings["blocks"] = _block_ordering(full, blocks)
        if p > 1:
            orderings["minimum_degree"] = _mmd_ordering(full)
        best = None
        candidates = {}
        for name, perm in orderings.items():
            upper = _permuted_upper(full, perm)
            sym = _symbolic(upper)
            flops = _factor_flops(sym[2])
            candidates[name] = flops
            if best is None or flops < best[2]:
                best = (name, perm, flops, upper, sym)
        name, perm, flops, upper, (ap, ai, lp, li, rp, ri, rpos, apos) = best
        t0, (tpos, sptr, scols, srptr, srows, gpos), predicted, tails = _blocked_layout(
            p, lp, li, rp, ri, rpos
        )
        relmap = _relative_map(lp, li, t0, tpos)
        tailmap = _tail_map(lp, li, rp, ri, t0, tpos)
        header = np.array(
            [p, ap[-1], lp[-1], t0, sptr.size - 1, srows.size, relmap.size, tailmap.size],
            dtype=np.int64,
        )
        packed = np.concatenate(
            [header, perm, ap, ai, lp, li, rp, ri, rpos, apos, tpos, sptr, scols, srptr]
            + [srows, gpos, relmap, tailmap]
        )
        return cls(
            p,
            perm,
            upper,
            packed,
            name,
            flops,
            int(lp[-1]),
            candidates,
            t0,
            sptr.size - 1,
            float(predicted),
            tails,
        )

    def values(self, matrix: sp.spmatrix) -> np.ndarray:
        """The entries of symmetric ``matrix`` (original order) on the permuted upper pattern.

        Raises if ``matrix`` has a non-zero outside the pattern.
        """
        upper = _permuted_upper(sp.csc_matrix(matrix, dtype=np.float64), self.perm)
        upper.eliminate_zeros()
        p = self.p
        want = self.upper.indices.astype(np.int64) + p * np.repeat(
            np.arange(p, dtype=np.int64), np.diff(self.upper.indptr)
        )
        have = upper.indices.astype(np.int64) + p * np.repeat(
            np.arange(p, dtype=np.int64), np.diff(upper.indptr)
        )
        pos = np.searchsorted(want, have)
        if have.size and (pos.max() >= want.size or np.any(want[pos] != have)):
            raise ValueError("matrix has non-zeros outside the sparse pattern")
        out = np.zeros(want.size)
        out[pos] = upper.data
        return out


@numba.njit(cache=True, nogil=True)
def _unpack(packed):
    p, nnz_a, nnz_l = packed[0], packed[1], packed[2]
    o = _HEADER
    perm = packed[o : o + p]
    o += p
    ap = packed[o : o + p + 1]
    o += p + 1
    ai = packed[o : o + nnz_a]
    o += nnz_a
    lp = packed[o : o + p + 1]
    o += p + 1
    li = packed[o : o + nnz_l]
    o += nnz_l
    rp = packed[o : o + p + 1]
    o += p + 1
    n_off = nnz_l - p
    ri = packed[o : o + n_off]
    o += n_off
    rpos = packed[o : o + n_off]
    o += n_off
    apos = packed[o : o + nnz_a]
    return p, perm, ap, ai, lp, li, rp, ri, rpos, apos


@numba.njit(cache=True, nogil=True)
def _unpack_tail(packed):
    """The blocked kernel's arrays: ``t0, tpos, sptr, scols, srptr, srows, gpos, relmap,
    tailmap``."""
    p, nnz_a, nnz_l = packed[0], packed[1], packed[2]
    t0, n_grp, n_rows, n_rel, n_tmap = packed[3], packed[4], packed[5], packed[6], packed[7]
    o = _HEADER + p + 3 * (p + 1) + 2 * nnz_a + nnz_l + 2 * (nnz_l - p)
    tpos = packed[o : o + p]
    o += p
    sptr = packed[o : o + n_grp + 1]
    o += n_grp + 1
    n_cols = sptr[n_grp]
    scols = packed[o : o + n_cols]
    o += n_cols
    srptr = packed[o : o + n_grp + 1]
    o += n_grp + 1
    srows = packed[o : o + n_rows]
    o += n_rows
    gpos = packed[o : o + nnz_l]
    o += nnz_l
    relmap = packed[o : o + n_rel]
    o += n_rel
    tailmap = packed[o : o + n_tmap]
    return t0, tpos, sptr, scols, srptr, srows, gpos, relmap, tailmap


# --- numeric kernel (per evaluation) -----------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _assemble(p, ap, ai, perm, a_data, inv_s2, lam):
    """Upper pattern values of P = sum_g A_g / s2_g + diag(1 / lam) (permuted)."""
    px = np.zeros(ap[p])
    for g in range(a_data.shape[0]):
        w = inv_s2[g]
        for q in range(ap[p]):
            px[q] += a_data[g, q] * w
    for k in range(p):
        # the diagonal is the last entry of each sorted upper column
        px[ap[k + 1] - 1] += 1.0 / lam[perm[k]]
    return px


@numba.njit(cache=True, nogil=True)
def _cholesky(
    p, ap, ai, px, lp, li, rp, ri, rpos, apos, t0, tpos, sptr, scols, srptr, srows, gpos, tailmap
):
    """Cholesky factor L (values on the fixed pattern, diagonal first per column) of P.

    Columns before ``t0`` (the sparse lead) are factored up-looking, row by row. The trailing
    block D = columns ``t0..p-1`` is done densely: the lead columns' rows in D (L_DS)
    left-looking, column by column (``tailmap`` says where each update lands), then the
    Schur complement P_DD - L_DS L_DS' as one small matrix product per group of lead
    columns with similar row patterns in D (BLAS), and a LAPACK Cholesky of that complement.
    """
    lx = np.zeros(lp[p])
    x = np.zeros(p)
    for k in range(t0):
        for q in range(ap[k], ap[k + 1]):
            x[ai[q]] = px[q]
        d = x[k]
        x[k] = 0.0
        # columns of row k in increasing order: each x[i] is final when reached
        for t in range(rp[k], rp[k + 1]):
            i = ri[t]
            lki = x[i] / lx[lp[i]]
            x[i] = 0.0
            for q in range(lp[i] + 1, rpos[t]):
                x[li[q]] -= lx[q] * lki
            d -= lki * lki
            lx[rpos[t]] = lki
        if not d > 0.0:
            return lx, False, np.zeros(0)
        lx[lp[k]] = math.sqrt(d)
    nd = p - t0
    schur = np.zeros((nd, nd))  # lower triangle used
    for k in range(t0, p):  # P's entries in the D rows: into L_DS, or D's own block
        for q in range(ap[k], ap[k + 1]):
            i = ai[q]
            if i < t0:
                lx[apos[q]] = px[q]
            else:
                schur[k - t0, i - t0] = px[q]
    # L[D, j] = (P[D, j] - sum_i L[D, i] L[j, i]) / L[j, j] over the earlier lead columns i
    # of row j, each final when j is reached; contiguous reads, writes where tailmap says
    m = 0
    for j in range(t0):
        for t in range(rp[j], rp[j + 1]):
            i = ri[t]
            lji = lx[rpos[t]]
            for q in range(tpos[i], lp[i + 1]):
                lx[tailmap[m]] -= lx[q] * lji
                m += 1
        inv_ljj = 1.0 / lx[lp[j]]
        for q in range(tpos[j], lp[j + 1]):
            lx[q] *= inv_ljj
    blocks = _group_blocks(lp, lx, tpos, sptr, scols, srptr, gpos)
    if nd == 0:
        return lx, True, blocks
    o = 0
    for g in range(sptr.shape[0] - 1):
        rows = srows[srptr[g] : srptr[g + 1]]
        size = (sptr[g + 1] - sptr[g]) * rows.shape[0]
        block = blocks[o : o + size].reshape((sptr[g + 1] - sptr[g], rows.shape[0]))
        o += size
        update = np.dot(block.T, block)
        for a in range(rows.shape[0]):
            for b in range(a + 1):  # rows ascending: the lower triangle
                schur[rows[a], rows[b]] -= update[a, b]
    try:
        ld = np.linalg.cholesky(schur)
    except Exception:  # not positive definite
        return lx, False, blocks
    for j in range(t0, p):
        for q in range(lp[j], lp[j + 1]):
            lx[q] = ld[li[q] - t0, j - t0]
    return lx, True, blocks


@numba.njit(cache=True, nogil=True)
def _group_blocks(lp, lx, tpos, sptr, scols, srptr, gpos):
    """Each group's D rows of its lead columns as a dense (columns x group rows) block, all
    in one flat array (group after group; each column of L fills a contiguous row). The
    factor forms them once and the selected inverse reuses them."""
    size = 0
    for g in range(sptr.shape[0] - 1):
        size += (sptr[g + 1] - sptr[g]) * (srptr[g + 1] - srptr[g])
    blocks = np.zeros(size)
    o = 0
    for g in range(sptr.shape[0] - 1):
        n_rows = srptr[g + 1] - srptr[g]
        for c in range(sptr[g], sptr[g + 1]):
            j = scols[c]
            for q in range(tpos[j], lp[j + 1]):
                blocks[o + gpos[q]] = lx[q]
            o += n_rows
    return blocks


@numba.njit(cache=True, nogil=True)
def _solve(p, lp, li, lx, rhs):
    """L L' x = rhs."""
    x = rhs.copy()
    for j in range(p):  # L y = rhs
        x[j] /= lx[lp[j]]
        for q in range(lp[j] + 1, lp[j + 1]):
            x[li[q]] -= lx[q] * x[j]
    for j in range(p - 1, -1, -1):  # L' x = y
        for q in range(lp[j] + 1, lp[j + 1]):
            x[j] -= lx[q] * x[li[q]]
        x[j] /= lx[lp[j]]
    return x


@numba.njit(cache=True, nogil=True)
def _solve_lt(p, lp, li, lx, rhs):
    """L' x = rhs."""
    x = rhs.copy()
    for j in range(p - 1, -1, -1):
        for q in range(lp[j] + 1, lp[j + 1]):
            x[j] -= lx[q] * x[li[q]]
        x[j] /= lx[lp[j]]
    return x


@numba.njit(cache=True, nogil=True)
def _dense_tail_start(p, lp):
    """First column of the trailing block where L is completely dense."""
    t0 = p
    while t0 > 0 and lp[t0] - lp[t0 - 1] == p - t0 + 1:
        t0 -= 1
    return t0


@numba.njit(cache=True, nogil=True)
def _lower_inverse(low):
    """L^-1 of a dense lower-triangular L, in blocks of columns (last first) so that the
    bulk of the work is matrix products (BLAS)."""
    n = low.shape[0]
    out = np.zeros((n, n))
    j = ((n - 1) // _TRI_BLOCK) * _TRI_BLOCK
    while j >= 0:
        e = min(n, j + _TRI_BLOCK)
        for c in range(j, e):  # the diagonal block, by substitution
            out[c, c] = 1.0 / low[c, c]
            for r in range(c + 1, e):
                s = 0.0
                for k in range(c, r):
                    s += low[r, k] * out[k, c]
                out[r, c] = -s / low[r, r]
        if e < n:  # X[e:, j:e] = -X[e:, e:] L[e:, j:e] X[j:e, j:e]
            below = np.dot(np.ascontiguousarray(low[e:, j:e]), np.ascontiguousarray(out[j:e, j:e]))
            out[e:, j:e] = -np.dot(np.ascontiguousarray(out[e:, e:]), below)
        j -= _TRI_BLOCK
    return out


@numba.njit(cache=True, nogil=True)
def _selected_inverse(p, lp, li, lx, t0, tpos, sptr, scols, srptr, srows, gpos, relmap, blocks):
    """Entries of S = (L L')^-1 on the pattern of L (Takahashi recursion, last column first).

    The trailing block D: S_DD = (L_DD L_DD')^-1, dense (LAPACK). For a lead column j the
    recursion needs S[r_a, r_b] L[r_b, j] summed over its rows below the diagonal; the part
    with both rows in D is, for all lead columns of a group at once, one product of the
    gathered block of S_DD with their gathered L values (BLAS). Pairs with a lead row are
    read from the lead columns' own entries, as in the plain recursion.
    """
    sx = np.zeros(lp[p])
    nd = p - t0
    if nd > 0:
        ld = np.zeros((nd, nd))
        for j in range(t0, p):
            for q in range(lp[j], lp[j + 1]):
                ld[li[q] - t0, j - t0] = lx[q]
        inv_l = _lower_inverse(ld)
        tail = np.dot(np.ascontiguousarray(inv_l.T), inv_l)
        for j in range(t0, p):
            for q in range(lp[j], lp[j + 1]):
                sx[q] = tail[j - t0, li[q] - t0]  # symmetric: read along a row
        o = 0
        for g in range(sptr.shape[0] - 1):
            rows = srows[srptr[g] : srptr[g + 1]]
            cols = scols[sptr[g] : sptr[g + 1]]
            block = blocks[o : o + cols.shape[0] * rows.shape[0]].reshape(
                (cols.shape[0], rows.shape[0])
            )
            o += cols.shape[0] * rows.shape[0]
            s_block = np.empty((rows.shape[0], rows.shape[0]))
            for a in range(rows.shape[0]):
                for b in range(rows.shape[0]):
                    s_block[a, b] = tail[rows[a], rows[b]]
            prod = np.dot(block, s_block)  # (S_DD[rows, rows] L[rows, cols])', S symmetric
            for c in range(cols.shape[0]):  # parked in sx until the recursion reaches j
                j = cols[c]
                for q in range(tpos[j], lp[j + 1]):
                    sx[q] = prod[c, gpos[q]]
    max_len = 1
    for j in range(t0):
        max_len = max(max_len, lp[j + 1] - lp[j])
    acc = np.zeros(max_len)
    k = 0  # position in relmap, which lists the reads in this loop's order
    for j in range(t0 - 1, -1, -1):
        start, end = lp[j] + 1, lp[j + 1]
        m = end - start
        ljj = lx[lp[j]]
        for a in range(m):
            # rows in D start from sum_{b in D} S[r_a, r_b] L[r_b, j] (parked above)
            acc[a] = sx[start + a] if start + a >= tpos[j] else 0.0
        # add L[r_b, j] S[r_a, r_b] over the lead rows r_b; S[r_a, r_b] (a > b) sits in
        # column r_b of S at relmap's position, which the pattern guarantees.
        for b in range(tpos[j] - start):
            c = li[start + b]
            lcj = lx[start + b]
            acc[b] += lcj * sx[lp[c]]
            for a in range(b + 1, m):
                s = sx[relmap[k]]
                k += 1
                acc[a] += lcj * s
                acc[b] += lx[start + a] * s
        sjj = 1.0 / (ljj * ljj)
        for a in range(m):
            sx[start + a] = -acc[a] / ljj
            sjj -= lx[start + a] * sx[start + a] / ljj
        sx[lp[j]] = sjj
    return sx


@numba.njit(cache=True, nogil=True)
def _trace_and_quad(p, ap, ai, apos, a_values, sx, bhat):
    """tr(S A) and bhat'A bhat for one group's A (values on P's upper pattern)."""
    trace = 0.0
    bab = 0.0
    for k in range(p):
        for q in range(ap[k], ap[k + 1]):
            i = ai[q]
            a = a_values[q]
            if i == k:
                trace += sx[apos[q]] * a
                bab += a * bhat[k] * bhat[k]
            else:
                trace += 2.0 * sx[apos[q]] * a
                bab += 2.0 * a * bhat[i] * bhat[k]
    return trace, bab


@numba.njit(cache=True, nogil=True)
def sparse_marginal_loglik(log_s2, log_lam, a_data, wty, yty, n_obs, packed):
    """``(ll, d ll/d log s2_g, d ll/d log lam_j)`` (0-d array, (G,), (p,)).

    ``a_data[g]``: A_g on the pattern's permuted upper entries; ``wty[g]``, ``log_lam``:
    original coefficient order.
    """
    p, perm, ap, ai, lp, li, rp, ri, rpos, apos = _unpack(packed)
    n_groups = a_data.shape[0]
    g_lam = np.zeros(p)
    g_s2 = np.zeros(n_groups)
    if log_lam.shape[0] != p or wty.shape[1] != p or a_data.shape[1] != ap[p]:
        raise ValueError("log_lam, W'W and W'y do not match the sparse pattern")
    if log_s2.shape[0] != n_groups or wty.shape[0] != n_groups:
        raise ValueError("one residual variance per group of W'W, W'y, y'y and n")
    inv_s2 = np.exp(-log_s2)
    lam = np.exp(log_lam)
    lx, blocks, r, bhat, ok = _factor_and_mean(packed, a_data, wty, inv_s2, lam)
    if not ok:
        return np.asarray(-np.inf), g_s2, g_lam
    sx = selected_inverse(packed, lx, blocks)

    logdet = 0.0
    quad = 0.0
    for k in range(p):
        logdet += 2.0 * math.log(lx[lp[k]])
        quad -= r[k] * bhat[k]
    ll = -0.5 * logdet
    # sum_g tr(S A_g) / s2_g = tr(S P) - tr(S diag(1/lam)) = p - sum_j S_jj / lam_j, and
    # sum_g bhat'A_g bhat / s2_g = bhat'r - sum_j bhat_j^2 / lam_j: the last group's two
    # sums follow from the others' without a pass over the pattern (for G = 1, no pass).
    trace_rest = float(p)
    bab_rest = -quad  # bhat'r
    for k in range(p):
        j = perm[k]
        ll -= 0.5 * log_lam[j]
        b2 = bhat[k] * bhat[k]
        g_lam[j] = -0.5 + 0.5 * sx[lp[k]] / lam[j] + 0.5 * b2 / lam[j]
        trace_rest -= sx[lp[k]] / lam[j]
        bab_rest -= b2 / lam[j]
    for g in range(n_groups):
        quad += yty[g] * inv_s2[g]
        ll -= 0.5 * n_obs[g] * (_LOG_2PI + log_s2[g])
        if g == n_groups - 1:
            trace = trace_rest / inv_s2[g]
            bab = bab_rest / inv_s2[g]
        else:
            trace, bab = _trace_and_quad(p, ap, ai, apos, a_data[g], sx, bhat)
            trace_rest -= trace * inv_s2[g]
            bab_rest -= bab * inv_s2[g]
        bu = 0.0
        for k in range(p):
            bu += bhat[k] * wty[g, perm[k]]
        g_s2[g] = -0.5 * n_obs[g] + 0.5 * inv_s2[g] * (trace + yty[g] - 2.0 * bu + bab)
    ll -= 0.5 * quad
    return np.asarray(ll), g_s2, g_lam


@numba.njit(cache=True, nogil=True)
def _factor_blocks(packed, px):
    """The Cholesky factor of P (upper pattern values ``px``), ok (False if P is not PD),
    and the group blocks (:func:`_group_blocks`) it formed, which the selected inverse reuses."""
    p, perm, ap, ai, lp, li, rp, ri, rpos, apos = _unpack(packed)
    t0, tpos, sptr, scols, srptr, srows, gpos, _, tailmap = _unpack_tail(packed)
    return _cholesky(
        p, ap, ai, px, lp, li, rp, ri, rpos, apos, t0, tpos, sptr, scols, srptr, srows, gpos,
        tailmap,
    )  # fmt: skip


@numba.njit(cache=True, nogil=True)
def selected_inverse(packed, lx, blocks):
    """The entries of P^-1 on the pattern of its factor ``lx`` (see :func:`_selected_inverse`);
    ``blocks``: the factor's group blocks (:func:`_factor_blocks`)."""
    p, perm, ap, ai, lp, li, rp, ri, rpos, apos = _unpack(packed)
    t0, tpos, sptr, scols, srptr, srows, gpos, relmap, _ = _unpack_tail(packed)
    return _selected_inverse(
        p, lp, li, lx, t0, tpos, sptr, scols, srptr, srows, gpos, relmap, blocks
    )  # fmt: skip


@numba.njit(cache=True, nogil=True)
def _factor_and_mean(packed, a_data, wty, inv_s2, lam):
    """The factor of P and its group blocks, r = sum_g W_g'y_g / s2_g and the conditional
    mean P^-1 r (permuted order); ``ok`` is False where P is not positive definite."""
    p, perm, ap, ai, lp, li, rp, ri, rpos, apos = _unpack(packed)
    px = _assemble(p, ap, ai, perm, a_data, inv_s2, lam)
    lx, ok, blocks = _factor_blocks(packed, px)
    r = np.zeros(p)
    if not ok:
        return lx, blocks, r, r, False
    for g in range(a_data.shape[0]):
        for k in range(p):
            r[k] += wty[g, perm[k]] * inv_s2[g]
    return lx, blocks, r, _solve(p, lp, li, lx, r), True


@numba.njit(cache=True, nogil=True)
def sparse_conditional_draws(log_s2, log_lam, a_data, wty, packed, noise):
    """Exact draws b ~ N(P^-1 r, P^-1), one per row of ``log_s2``/``log_lam``/``noise``.

    Rows index posterior draws: ``log_s2`` (D, G), ``log_lam`` (D, p), ``noise`` (D, p)
    standard normal. Returns (D, p) in the original coefficient order.
    """
    p, perm, ap, ai, lp, li, rp, ri, rpos, apos = _unpack(packed)
    n_draws = noise.shape[0]
    out = np.empty((n_draws, p))
    for d in range(n_draws):
        inv_s2, lam = np.exp(-log_s2[d]), np.exp(log_lam[d])
        lx, _, _, mean, ok = _factor_and_mean(packed, a_data, wty, inv_s2, lam)
        if not ok:
            raise FloatingPointError("sparse Cholesky failed in the conditional draws")
        offset = _solve_lt(p, lp, li, lx, noise[d])  # covariance (L L')^-1 = P^-1
        for k in range(p):
            out[d, perm[k]] = mean[k] + offset[k]
    return out


@numba.njit(cache=True, nogil=True)
def loo_loglik(log_s2, log_lam, a_data, wty, packed, cols, vals, pair_pos, pair_coef, y, g):
    """log p(y_i | y_-i, theta_s) and the in-sample log p(y_i | y, theta_s), every draw s
    (rows) and student i (columns), for ``loo.conditional_loo``.

    Here, not in loo.py, because numba's cache is checked against the source file of the
    cached function only: a kernel in another file that inlines this file's functions
    would keep running a stale copy (and read the pattern wrongly) after they change.
    """
    p, perm, ap, ai, lp, li, rp, ri, rpos, apos = _unpack(packed)
    n_draws, n_groups = log_s2.shape
    n, k_nz = cols.shape
    k_pairs = pair_pos.shape[1]
    out = np.empty((n_draws, n))
    within = np.empty((n_draws, n))
    for d in range(n_draws):
        inv_s2 = np.exp(-log_s2[d])
        lx, blocks, _, bhat, ok = _factor_and_mean(packed, a_data, wty, inv_s2, np.exp(log_lam[d]))
        if not ok:
            raise FloatingPointError("sparse Cholesky failed in the LOO pass")
        sx = selected_inverse(packed, lx, blocks)
        for i in range(n):
            mu = 0.0
            for t in range(k_nz):
                mu += vals[i, t] * bhat[cols[i, t]]
            v = 0.0
            for t in range(k_pairs):
                v += pair_coef[i, t] * sx[pair_pos[i, t]]
            s2 = math.exp(log_s2[d, g[i]])
            h = v / s2
            resid = y[i] - mu
            out[d, i] = -0.5 * (_LOG_2PI + log_s2[d, g[i]]) + 0.5 * math.log1p(-h)
            out[d, i] -= 0.5 * resid * resid / ((1.0 - h) * s2)
            within[d, i] = -0.5 * (_LOG_2PI + math.log(s2 + v)) - 0.5 * resid * resid / (s2 + v)
    return out, within


class SparseMarginalLoglik(Op):
    """``(log_s2 (G,), log_lam, A data (G, nnz), W'y (G, p), y'y (G,), n (G,), pattern)
    -> (ll, d ll/d log_s2, d ll/d log_lam)``.

    The statistics are inputs so a compiled model can be refitted to new data
    (``with_data``); the pattern (``SparsePattern.packed``) is an input too, fixed per model.
    """

    __props__ = ()

    def make_node(self, log_s2, log_lam, a_data, wty, yty, n_obs, packed):
        inputs = [
            pt.as_tensor(log_s2, dtype="float64"),
            pt.as_tensor(log_lam, dtype="float64"),
            pt.as_tensor(a_data, dtype="float64"),
            pt.as_tensor(wty, dtype="float64"),
            pt.as_tensor(yty, dtype="float64"),
            pt.as_tensor(n_obs, dtype="float64"),
            pt.as_tensor(packed, dtype="int64"),
        ]
        outputs = [pt.dscalar(), pt.dvector(), pt.dvector()]
        return Apply(self, inputs, outputs)

    def perform(self, node, inputs, output_storage):
        ll, g_s2, g_lam = sparse_marginal_loglik(*(np.asarray(x) for x in inputs))
        output_storage[0][0] = np.asarray(ll)
        output_storage[1][0] = g_s2
        output_storage[2][0] = g_lam

    def connection_pattern(self, node):
        return [[True, True, True], [True, True, True]] + [[False, False, False]] * 5

    def pullback(self, inputs, outputs, cotangents):
        _, g_s2, g_lam = outputs
        data_grads = [DisconnectedType()() for _ in inputs[2:]]
        return [cotangents[0] * g_s2, cotangents[0] * g_lam, *data_grads]


@numba_funcify.register(SparseMarginalLoglik)
def _numba_funcify_sparse(op, node=None, **kwargs):
    return sparse_marginal_loglik


# --- a dense reference (tests, and the dense choice when G > 1 is small) ------------------


def dense_grouped_loglik(
    wtw: list[np.ndarray],
    wty: np.ndarray,
    yty: np.ndarray,
    n_obs: np.ndarray,
    log_s2: np.ndarray,
    log_lam: np.ndarray,
) -> tuple[float, np.ndarray, np.ndarray]:
    """The same quantities as :func:`sparse_marginal_loglik`, with dense numpy algebra."""
    inv_s2 = np.exp(-np.asarray(log_s2))
    lam = np.exp(log_lam)
    prec = sum(a * w for a, w in zip(wtw, inv_s2, strict=True)) + np.diag(1.0 / lam)
    r = (wty * inv_s2[:, None]).sum(axis=0)
    chol = np.linalg.cholesky(prec)
    s = np.linalg.inv(prec)
    bhat = s @ r
    ll = (
        -0.5 * np.sum(n_obs * (_LOG_2PI + log_s2))
        - 0.5 * np.sum(log_lam)
        - np.sum(np.log(np.diag(chol)))
        - 0.5 * (np.sum(yty * inv_s2) - r @ bhat)
    )
    g_lam = -0.5 + 0.5 * np.diag(s) / lam + 0.5 * bhat**2 / lam
    g_s2 = np.array(
        [
            -0.5 * n + 0.5 * w * (np.sum(s * a) + c - 2.0 * bhat @ u + bhat @ a @ bhat)
            for a, u, c, n, w in zip(wtw, wty, yty, n_obs, inv_s2, strict=True)
        ]
    )
    return float(ll), g_s2, g_lam
