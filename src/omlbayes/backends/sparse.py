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
share a row, so their block of W'W is diagonal. Its pattern is fixed across evaluations,
so all symbolic work is done once (:class:`SparsePattern`): a fill-reducing ordering (the
best of several candidates by the flops of the factor), its elimination tree, and a
supernodal layout of L. The columns are reordered within what the tree allows (the same
factor) so that each supernode, a set of columns stored as one dense column-major panel
with their rows, is contiguous. The last supernode is D, the trailing block that the
small common part (fixed effects, wave x group cells) fills (almost) completely; the
others form the lead. Lead supernodes come from chains of columns with nested rows and
from absorbing children into their parent (explicit zeros, no fill elsewhere), and the
lead supernodes with rows in D are grouped by similar D rows. Where D starts, the
supernodes and the groups are chosen by a cost model of the kernel
(``SparsePattern.predicted_s``, which the kernel choice also uses).

Each evaluation factors right-looking: a lead supernode's panel is factored by dpotrf and
dtrsm (plain loops for a single column), its update is subtracted from its lead ancestors
at positions found once (``_update_maps``), and its rows in D are copied into its group's
block; D then takes one dsyrk per group and dpotrf. The selected inverse S on the panels
(the supernodal Takahashi recursion; it holds every entry of S that tr(S A_g) and diag(S)
need) starts from D's dense inverse, forms S_DD U_D for each group with one dsymm
(U = L_RJ L_JJ^-1), and then goes back through the lead supernodes reading S at their
lead rows in place. Single columns with few rows in D may skip the groups and update and
read those rows entry by entry too. The last residual group's trace follows from the
others' (sum_g tr(S A_g) / s2_g = p - sum_j S_jj / lam_j), so G = 1 needs no pass over the
pattern. Exact, no stochastic trace. Everything is numba nopython code with ``nogil``
calling scipy's BLAS/LAPACK (through named symbols: the compiled code stays cacheable), so
nutpie's threaded chains run in parallel; callers limit BLAS to one thread, as the blocks
are small.

The pattern travels into the kernel as one int64 array (an Op input, held as ``pm.Data``),
not as a compiled-in constant: numba would otherwise freeze megabytes into machine code.
"""

from __future__ import annotations

import hashlib
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
import pytensor.tensor as pt
import scipy.sparse as sp
from pytensor.gradient import DisconnectedType
from pytensor.graph import Apply, Op
from pytensor.link.numba.dispatch import numba_funcify
from scipy.sparse.linalg import splu

from omlbayes.backends import lapack

_SQRT2 = math.sqrt(2.0)
_LOG_2PI = math.log(2.0 * math.pi)
# p, nnz of P's upper pattern, supernodes, their rows below, update chunks, relative
# indices, panel storage, most rows below a supernode, widest supernode, groups, their rows,
# their blocks' storage, most rows of a group, runs of the groups' rows
_HEADER = 14
# Cost model (seconds per evaluation, factor and selected inverse together) that decides
# the supernodes and the groups. A lead supernode of w columns with rl rows below in the
# lead and rd in D: a fixed cost (BLAS calls; far less for a single column, done by plain
# loops), each entry of its update scattered into (factor) and gathered from (selected
# inverse) its lead ancestors, its D rows copied into and out of its group's block, and its
# dense multiply-adds, at a rate that falls for narrow panels. D of n columns: ~n^3
# multiply-adds (factor, inverse). A group of lead supernodes in D's products: a BLAS
# multiply-add in its two products, a gathered or scattered entry of its square block,
# and a fixed cost.
_S_FIXED_BLAS = 4.0e-6
_S_FIXED_COLUMN = 2.0e-7
_S_PER_ENTRY = 1.5e-9
_S_PER_COPY = 1.0e-9
_S_PER_FMA = 1.0e-10
_FMA_HALF_WIDTH = 4.0
_S_PER_DENSE_FMA = 4.0e-11
_GROUP_S_PER_FMA = 1.0e-10
_GROUP_S_PER_ENTRY = 3.0e-9
_GROUP_S_FIXED = 3e-6
_GROUP_MAX_RUN = 400
# Starts of D compared: the fully dense tail, and those whose columns of L are all at least
# this full; at most _TAIL_MAX columns (dense work grows with its cube).
_TAIL_DENSITIES = (0.75, 0.5, 0.35, 0.25)
# Orderings: minimum degree with a term's columns last (:func:`_class_orderings`) up to
# this p (its graph is a p x p bitset); one gives up past this multiple of the least factor
# flops so far; those within _ORDER_SLACK of the least flops, at most _ORDER_KEEP, are laid
# out and the one of least predicted seconds wins.
_CLASS_MAX_P = 20_000
_CLASS_GIVE_UP = 4.0
_ORDER_SLACK = 1.3
_ORDER_KEEP = 3
_TAIL_MAX = 1500
# Predicted seconds per non-zero of P (assembly, gradient sums) and per stored entry of the
# panels (zeroing, solves).
_S_PER_P_NONZERO = 2e-9
_S_PER_L_NONZERO = 2e-9
# Triangular inverses below this size are LAPACK's dtrtri; above, halved recursively so
# that the bulk is dtrmm/dtrsm (OpenBLAS's dtrtri is slow on one thread).
_TRI_BASE = 32
# Column blocks of the dgemm that forms a lower triangle A A' (:func:`_syrk_lower`).
_SYRK_BLOCK = 32
# Entries of P's pattern per chunk of the trace sums (they stay in the L1 cache).
_CHUNK = 1024
_CHAR_L, _CHAR_N, _CHAR_T, _CHAR_R = ord("L"), ord("N"), ord("T"), ord("R")


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
def _column_structure(p, ap, ai, parent):
    """Rows of each column of L (L L' = P) below the diagonal, sorted: ``li[lp[j]:lp[j+1]]``.

    Row k of L reaches, from each entry of P's column k, up the elimination tree."""
    flag = np.full(p, -1, dtype=np.int64)
    count = np.zeros(p, dtype=np.int64)
    for k in range(p):
        flag[k] = k
        for q in range(ap[k], ap[k + 1]):
            i = ai[q]
            while flag[i] != k:
                count[i] += 1
                flag[i] = k
                i = parent[i]
    lp = np.zeros(p + 1, dtype=np.int64)
    for j in range(p):
        lp[j + 1] = lp[j] + count[j]
    li = np.empty(lp[p], dtype=np.int64)
    nxt = lp[:-1].copy()
    flag[:] = -1
    for k in range(p):  # rows in increasing order: each column's list comes out sorted
        flag[k] = k
        for q in range(ap[k], ap[k + 1]):
            i = ai[q]
            while flag[i] != k:
                li[nxt[i]] = k
                nxt[i] += 1
                flag[i] = k
                i = parent[i]
    return lp, li


def _symbolic(upper: sp.csc_matrix) -> tuple[np.ndarray, ...]:
    """``(parent, lp, li)`` of the permuted upper pattern (:func:`_column_structure`)."""
    p = upper.shape[0]
    ap = upper.indptr.astype(np.int64)
    ai = upper.indices.astype(np.int64)
    parent = _etree(p, ap, ai)
    return (parent, *_column_structure(p, ap, ai, parent))


def _factor_flops(lp: np.ndarray) -> float:
    """Sum of squared column counts of L (diagonal included)."""
    counts = np.diff(lp).astype(np.float64) + 1.0
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


def _class_orderings(p: int, blocks: list[np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """Classes for :func:`_class_min_degree`: each block (term) last, with the others in
    one class before it, and also with the largest block (the finest grouping, whose cells
    are the leaves) first. A grouping term last is a separator: e.g. schools last leaves
    the waves' cells of a school x wave design to eliminate apart."""
    largest = max(range(len(blocks)), key=lambda k: (blocks[k].size, -k))
    out = []
    for k, block in enumerate(blocks):
        classes = np.zeros(p, dtype=np.int64)
        classes[block] = 1
        out.append((f"min_degree_block{k}_last", classes))
        if k != largest:
            classes = np.ones(p, dtype=np.int64)
            classes[blocks[largest]] = 0
            classes[block] = 2
            out.append((f"min_degree_block{largest}_first_block{k}_last", classes))
    return out


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


@numba.njit(cache=True, nogil=True)
def _class_min_degree(p, ap, ai, cls, limit):
    """Minimum-degree order of a symmetric pattern (full CSC) in which every column of class
    0 comes before every column of class 1, and so on: each step eliminates, among the
    columns of the lowest class left, one of least degree in the graph of the remaining
    columns with the fill so far (lowest index on ties; the graph as a bitset). Gives up
    (returns an empty order) once the summed squared degrees pass ``limit``."""
    nw = (p + 63) // 64
    adj = np.zeros((p, nw), dtype=np.uint64)
    deg = np.zeros(p, dtype=np.int64)
    one = np.uint64(1)
    for j in range(p):
        for q in range(ap[j], ap[j + 1]):
            i = ai[q]
            if i == j:
                continue
            for a, b in ((i, j), (j, i)):
                bit = one << np.uint64(b % 64)
                if not adj[a, b // 64] & bit:
                    adj[a, b // 64] |= bit
                    deg[a] += 1
    alive = np.ones(p, dtype=np.bool_)
    order = np.empty(p, dtype=np.int64)
    nbrs = np.empty(p, dtype=np.int64)
    work = 0.0
    for step in range(p):
        v = -1
        for j in range(p):
            if alive[j] and (v < 0 or cls[j] < cls[v] or (cls[j] == cls[v] and deg[j] < deg[v])):
                v = j
        order[step] = v
        alive[v] = False
        n = 0
        for word in range(nw):
            x = adj[v, word]
            b = 0
            while x:
                if x & one:
                    nbrs[n] = word * 64 + b
                    n += 1
                x >>= one
                b += 1
        work += float(n + 1) ** 2
        if work > limit:
            return np.zeros(0, dtype=np.int64)
        vbit = ~(one << np.uint64(v % 64))
        for s in range(n):
            i = nbrs[s]
            adj[i, v // 64] &= vbit
            deg[i] -= 1
            for t in range(n):
                k = nbrs[t]
                bit = one << np.uint64(k % 64)
                if k != i and not adj[i, k // 64] & bit:
                    adj[i, k // 64] |= bit
                    deg[i] += 1
    return order


@numba.njit(cache=True, nogil=True)
def _node_seconds(w, rl, rd):
    """Predicted seconds of a lead supernode of ``w`` columns with ``rl`` rows below them in
    the lead and ``rd`` in the dense block D (factor and selected inverse together)."""
    fw, fl, fd = float(w), float(rl), float(rd)
    fr = fl + fd
    entries = fl * fr - 0.5 * fl * (fl - 1.0)  # scattered (factor) and gathered (inverse)
    seconds = 2.0 * entries * _S_PER_ENTRY + 3.0 * fd * fw * _S_PER_COPY
    seconds += fw * fd * fd * _GROUP_S_PER_FMA  # its share of its group's products
    if w == 1:
        return _S_FIXED_COLUMN + seconds
    fma = fw**3 + 2.0 * fr * fw * fw + 2.0 * fr * fl * fw
    return _S_FIXED_BLAS + seconds + fma * _S_PER_FMA * (1.0 + _FMA_HALF_WIDTH / fw)


@numba.njit(cache=True, nogil=True)
def _dense_seconds(n):
    """Predicted seconds of the dense block D of n columns (factor, inverse)."""
    return _S_FIXED_BLAS + float(n) ** 3 * _S_PER_DENSE_FMA


@numba.njit(cache=True, nogil=True)
def _group_seconds(rows, cols, n):
    """Predicted seconds of a group of lead columns in D's products: its Schur update and
    selected-inverse product (BLAS), its gathered and scattered square block; or, if less,
    those products over all n rows of D in place (a dense group: nothing gathered)."""
    fr, fn, fc = float(rows), float(n), float(cols)
    gathered = fr * fr * (fc * _GROUP_S_PER_FMA + _GROUP_S_PER_ENTRY)
    return min(gathered, fn * fn * fc * _GROUP_S_PER_FMA) + _GROUP_S_FIXED


@numba.njit(cache=True, nogil=True)
def _group_is_dense(rows, cols, n):
    """Whether a group's products over all of D's rows are predicted cheaper (see
    :func:`_group_seconds`)."""
    fr, fn, fc = float(rows), float(n), float(cols)
    return fn * fn * fc * _GROUP_S_PER_FMA <= fr * fr * (fc * _GROUP_S_PER_FMA + _GROUP_S_PER_ENTRY)


@numba.njit(cache=True, nogil=True)
def _chain_segments(rl, rd):
    """Cheapest split of a chain of columns (top first, each column's rows those of the one
    above plus that one) into supernodes of consecutive columns, by dynamic programming: a
    segment from column i down is a supernode with column i's rows. Returns the boundaries."""
    k = rl.shape[0]
    best = np.full(k + 1, np.inf)
    best[0] = 0.0
    prev = np.zeros(k + 1, dtype=np.int64)
    for j in range(1, k + 1):
        for i in range(j):
            cost = best[i] + _node_seconds(j - i, rl[i], rd[i])
            if cost < best[j]:
                best[j] = cost
                prev[j] = i
    return _cuts(prev, k)


@numba.njit(cache=True, nogil=True)
def _cuts(prev, n):
    n_cuts = 1
    k = n
    while k > 0:
        k = prev[k]
        n_cuts += 1
    cuts = np.empty(n_cuts, dtype=np.int64)
    k = n
    for t in range(n_cuts - 1, -1, -1):
        cuts[t] = k
        k = prev[k]
    return cuts


@numba.njit(cache=True, nogil=True)
def _group_runs(ptr, idx, widths, m, max_run):
    """Cheapest split of a sequence of lead supernodes into runs (groups), by dynamic
    programming: a run costs :func:`_group_seconds` of the union of its rows in D
    (``idx[ptr[k]:ptr[k+1]]``, below ``m``) and its summed widths; a single column may
    instead stay out of the groups, its D rows then updated and read entry by entry like
    its lead rows. Returns the run boundaries, which single columns stay out, and the
    predicted seconds."""
    n = widths.shape[0]
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    prev = np.zeros(n + 1, dtype=np.int64)
    alone = np.zeros(n + 1, dtype=np.bool_)
    seen = np.zeros(m, dtype=np.bool_)
    touched = np.empty(m, dtype=np.int64)
    for i in range(n):
        n_rows = 0
        cols = 0
        for j in range(i, min(n, i + max_run)):
            for t in range(ptr[j], ptr[j + 1]):
                x = idx[t]
                if not seen[x]:
                    seen[x] = True
                    touched[n_rows] = x
                    n_rows += 1
            cols += widths[j]
            cost = best[i] + _group_seconds(n_rows, cols, m)
            if cost < best[j + 1]:
                best[j + 1] = cost
                prev[j + 1] = i
                alone[j + 1] = False
            if j == i and cols == 1:
                cost = best[i] + n_rows * (n_rows + 1.0) * _S_PER_ENTRY
                if cost < best[j + 1]:
                    best[j + 1] = cost
                    prev[j + 1] = i
                    alone[j + 1] = True
        for t in range(n_rows):
            seen[touched[t]] = False
    return _cuts(prev, n), alone, best[n]


@numba.njit(cache=True, nogil=True)
def _postorder(parent):
    """Columns in a postorder of the elimination tree (children in increasing order)."""
    p = parent.shape[0]
    head = np.full(p, -1, dtype=np.int64)
    nxt = np.full(p, -1, dtype=np.int64)
    for j in range(p - 1, -1, -1):
        if parent[j] >= 0:
            nxt[j] = head[parent[j]]
            head[parent[j]] = j
    out = np.empty(p, dtype=np.int64)
    stack = np.empty(p, dtype=np.int64)
    k = 0
    for root in range(p):
        if parent[root] != -1:
            continue
        top = 0
        stack[0] = root
        while top >= 0:
            j = stack[top]
            c = head[j]
            if c == -1:
                top -= 1
                out[k] = j
                k += 1
            else:
                head[j] = nxt[c]
                top += 1
                stack[top] = c
    return out


def _supernode_partition(parent: np.ndarray, lp: np.ndarray, li: np.ndarray, t0: int) -> tuple:
    """Columns of L merged into supernodes (dense panels); returns the columns in an
    equivalent order (one the elimination tree allows: the same factor) with each supernode
    contiguous, and the supernodes' first positions (and the end).

    D, the trailing columns from ``t0`` (an ancestor-closed set), is one supernode, last. Chains of
    columns whose rows are those of their parent plus the parent (no explicit zeros) are
    split into supernodes by :func:`_chain_segments`; then, bottom-up, each supernode
    absorbs child supernodes (their columns get its rows, explicit zeros where they had
    none), cheapest first, while that lowers the predicted cost (:func:`_node_seconds`,
    :func:`_dense_seconds`). A child's rows all lie in its parent's columns and rows, so
    no fill appears outside the merged supernode.
    """
    p = parent.shape[0]
    count = np.diff(lp)
    in_d = np.zeros(p, dtype=bool)
    in_d[t0:] = True
    rd = np.array([np.count_nonzero(in_d[li[lp[j] : lp[j + 1]]]) for j in range(p)])
    rl = count - rd
    # chains: c continues q's chain when its rows are q and q's rows
    below = np.full(p, -1, dtype=np.int64)
    for c in range(t0):
        q = parent[c]
        if 0 <= q < t0 and count[c] == count[q] + 1 and below[q] == -1:
            below[q] = c
    is_top = np.ones(p, dtype=bool)
    is_top[below[below >= 0]] = False
    node_of = np.full(p, -1, dtype=np.int64)
    heads, cols = [], []
    for q in range(t0):
        if not is_top[q]:
            continue
        chain = [q]
        while below[chain[-1]] != -1:
            chain.append(int(below[chain[-1]]))
        chain = np.asarray(chain, dtype=np.int64)
        cuts = _chain_segments(rl[chain], rd[chain])
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            node_of[chain[a:b]] = len(heads)
            heads.append(int(chain[a]))
            cols.append([int(c) for c in chain[a:b][::-1]])  # descendants first
    d_node = len(heads)
    node_of[t0:] = d_node
    heads.append(p - 1)
    cols.append(list(range(t0, p)))
    n_nodes = len(heads)
    width = [len(c) for c in cols]
    cost = [_node_seconds(width[n], rl[heads[n]], rd[heads[n]]) for n in range(d_node)]
    cost.append(_dense_seconds(width[d_node]))
    kids: list[list[int]] = [[] for _ in range(n_nodes)]
    subs: list[list[int]] = [[] for _ in range(n_nodes)]
    roots = []
    post = np.empty(p, dtype=np.int64)
    post[_postorder(parent)] = np.arange(p)
    for n in sorted(range(n_nodes), key=lambda n: post[heads[n]]):  # children first
        h = heads[n]
        for k in sorted(kids[n], key=lambda k: _absorb_gain(n, k, d_node, width, cost, rl, rd, h)):
            gain = _absorb_gain(n, k, d_node, width, cost, rl, rd, h)
            if gain < 0.0:
                cols[n] = cols[k] + cols[n]
                subs[n] += subs[k]
                width[n] += width[k]
                cost[n] += cost[k] + gain
            else:
                subs[n].append(k)
        if n == d_node or parent[h] == -1:
            roots.append(n)
        else:
            kids[node_of[parent[h]]].append(n)
    order: list[int] = []
    first = [0]
    roots.sort(key=lambda n: n == d_node)  # D last
    for root in roots:  # each supernode after its children: a depth-first walk
        stack = [(root, 0)]
        while stack:
            n, k = stack.pop()
            if k < len(subs[n]):
                stack.append((n, k + 1))
                stack.append((subs[n][k], 0))
            else:
                order += cols[n]
                first.append(len(order))
    return np.asarray(order, dtype=np.int64), np.asarray(first, dtype=np.int64)


def _absorb_gain(n, k, d_node, width, cost, rl, rd, h) -> float:
    """Change of predicted seconds if supernode n (head column h) absorbs its child k."""
    if n == d_node:
        merged = _dense_seconds(width[n] + width[k])
    else:
        merged = _node_seconds(width[n] + width[k], rl[h], rd[h])
    return float(merged - cost[n] - cost[k])


def _tail_candidates(p: int, lp: np.ndarray) -> list[int]:
    """Starts of D to compare: the fully dense tail, and the longest tails whose columns of
    L are all at least a given fraction full; at most ``_TAIL_MAX`` columns."""
    density = (np.diff(lp) + 1) / (p - np.arange(p))
    full = int(_dense_tail_start(p, lp))
    out = {full}
    for least in _TAIL_DENSITIES:
        below = np.flatnonzero(density < least)
        out.add(int(below[-1]) + 1 if below.size else 0)
    return sorted(t for t in out if t == full or p - t <= _TAIL_MAX)


@numba.njit(cache=True, nogil=True)
def _dense_tail_start(p, lp):
    """First column of the trailing block where L is completely dense (``lp``: rows below
    the diagonal)."""
    t0 = p
    while t0 > 0 and lp[t0] - lp[t0 - 1] == p - t0:
        t0 -= 1
    return t0


def _tail_groups(first, srp, srow, rl) -> tuple[list[np.ndarray], float]:
    """Groups of lead supernodes for D's products: the Schur update of D and the selected
    inverse's S_DD products, one BLAS product per group over the union of its members' rows
    in D. The members' D patterns are sorted so that those sharing rare rows are adjacent
    (rows compared rarest first) and split into runs of least predicted cost
    (:func:`_group_runs`). Returns the groups' members and the predicted seconds; lead
    supernodes with rows in D that are in no group update and read them directly."""
    ns = first.size - 1
    t0 = int(first[-2])
    nd = int(first[-1]) - t0
    members = [s for s in range(ns - 1) if srp[s + 1] - srp[s] > rl[s]]
    masks = np.zeros((len(members), nd), dtype=bool)
    for k, s in enumerate(members):
        masks[k, srow[srp[s] + rl[s] : srp[s + 1]] - t0] = True
    rarest_first = np.argsort(masks.sum(axis=0), kind="stable")
    order = np.lexsort(masks[:, rarest_first[::-1]].T) if members else np.zeros(0, int)
    members = np.asarray(members, dtype=np.int64)[order]
    widths = np.diff(first)[members]
    ptr = np.zeros(members.size + 1, dtype=np.int64)
    ptr[1:] = np.cumsum(np.diff(srp)[members] - rl[members])
    idx = np.concatenate(
        [srow[srp[s] + rl[s] : srp[s + 1]] - t0 for s in members] + [np.zeros(0, np.int64)]
    )
    cuts, alone, predicted = _group_runs(ptr, idx, widths, max(nd, 1), _GROUP_MAX_RUN)
    groups = [members[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True) if not alone[b]]
    return groups, float(predicted)


def _tail_order(first, srp, srow, rl, groups) -> np.ndarray:
    """An order of D's columns in which each group's rows form few contiguous runs (D is
    dense: any order of its columns gives the same fill): sorted by which groups use them,
    the largest groups' membership compared first."""
    t0 = int(first[-2])
    nd = int(first[-1]) - t0
    member = np.zeros((nd, len(groups)), dtype=bool)
    for g, ss in enumerate(groups):
        for s in ss:
            member[srow[srp[s] + rl[s] : srp[s + 1]] - t0, g] = True
    largest_first = np.argsort(-member.sum(axis=0), kind="stable")
    return np.lexsort(member[:, largest_first[::-1]].T) if groups else np.arange(nd)


def _group_arrays(first, srp, srow, rl, groups) -> tuple:
    """The groups' arrays: each supernode's group (-1: none) and first column in its group's
    block, the groups' rows in D (``grow[grp[g]:grp[g+1]]``, relative to D's first column)
    also as contiguous runs (``(local start, D row, length)`` rows of ``gruns[grunp[g]:
    grunp[g+1]]``), each D row's index among its group's rows (aligned with ``srow``), and
    the blocks' offsets. A dense group (:func:`_group_is_dense`) has all of D's rows."""
    ns = first.size - 1
    t0 = int(first[-2])
    nd = int(first[-1]) - t0
    sg = np.full(ns, -1, dtype=np.int64)
    sgc = np.zeros(ns, dtype=np.int64)
    spos = np.full(srow.size, -1, dtype=np.int64)
    grp, grow, boff, grunp, gruns = [0], [], [0], [0], []
    index = np.full(nd, -1, dtype=np.int64)
    for g, ss in enumerate(groups):
        rows = np.unique(np.concatenate([srow[srp[s] + rl[s] : srp[s + 1]] - t0 for s in ss]))
        if _group_is_dense(rows.size, int(np.sum(first[ss + 1] - first[ss])), nd):
            rows = np.arange(nd)
        index[rows] = np.arange(rows.size)
        col = 0
        for s in ss:
            sg[s] = g
            sgc[s] = col
            col += first[s + 1] - first[s]
            t = np.arange(srp[s] + rl[s], srp[s + 1])
            spos[t] = index[srow[t] - t0]
        starts = np.flatnonzero(np.diff(rows, prepend=-2) != 1)
        lengths = np.diff(np.append(starts, rows.size))
        gruns.append(np.stack([starts, rows[starts], lengths], axis=1))
        grunp.append(grunp[-1] + starts.size)
        grow.append(rows)
        grp.append(grp[-1] + rows.size)
        boff.append(boff[-1] + rows.size * col)
    empty = np.zeros((0, 3), dtype=np.int64)
    return (
        sg,
        sgc,
        np.asarray(grp, dtype=np.int64),
        np.concatenate(grow).astype(np.int64) if grow else empty[:, 0],
        spos,
        np.asarray(boff, dtype=np.int64),
        np.asarray(grunp, dtype=np.int64),
        np.concatenate(gruns).astype(np.int64).ravel() if gruns else empty.ravel(),
    )


@numba.njit(cache=True, nogil=True)
def _supernodal_rows(p, ap, ai, first):
    """Rows of each supernode below its columns (sorted), from P's upper pattern (in the
    final order) and the children's rows: ``srow[srp[J]:srp[J+1]]``; and each column's
    supernode."""
    ns = first.shape[0] - 1
    count = np.zeros(p + 1, dtype=np.int64)  # the lower pattern: P[k, i], k >= i, by column i
    for k in range(p):
        for q in range(ap[k], ap[k + 1]):
            count[ai[q] + 1] += 1
    lap = np.cumsum(count)
    lai = np.empty(lap[p], dtype=np.int64)
    nxt = lap[:-1].copy()
    for k in range(p):
        for q in range(ap[k], ap[k + 1]):
            lai[nxt[ai[q]]] = k
            nxt[ai[q]] += 1
    col_sn = np.empty(p, dtype=np.int64)
    for s in range(ns):
        col_sn[first[s] : first[s + 1]] = s
    head = np.full(ns, -1, dtype=np.int64)
    sib = np.full(ns, -1, dtype=np.int64)
    mark = np.full(p, -1, dtype=np.int64)
    tmp = np.empty(p, dtype=np.int64)
    srp = np.zeros(ns + 1, dtype=np.int64)
    buf = np.empty(max(16, 4 * p), dtype=np.int64)
    for s in range(ns):
        last = first[s + 1]
        n = 0
        for j in range(first[s], last):
            for t in range(lap[j], lap[j + 1]):
                i = lai[t]
                if i >= last and mark[i] != s:
                    mark[i] = s
                    tmp[n] = i
                    n += 1
        c = head[s]
        while c != -1:
            for t in range(srp[c], srp[c + 1]):
                i = buf[t]
                if i >= last and mark[i] != s:
                    mark[i] = s
                    tmp[n] = i
                    n += 1
            c = sib[c]
        if srp[s] + n > buf.shape[0]:
            grown = np.empty(2 * (srp[s] + n), dtype=np.int64)
            grown[: srp[s]] = buf[: srp[s]]
            buf = grown
        buf[srp[s] : srp[s] + n] = np.sort(tmp[:n])
        srp[s + 1] = srp[s] + n
        if n:
            par = col_sn[buf[srp[s]]]
            sib[s] = head[par]
            head[par] = s
    return srp, buf[: srp[ns]].copy(), col_sn


@numba.njit(cache=True, nogil=True)
def _row_position(first, srp, srow, s, i):
    """Where row ``i`` sits among supernode s's rows (its columns, then those below)."""
    if i < first[s + 1]:
        return i - first[s]
    rows = srow[srp[s] : srp[s + 1]]
    t = np.searchsorted(rows, i)
    if t >= rows.shape[0] or rows[t] != i:
        raise ValueError("supernodal structure is not closed")
    return first[s + 1] - first[s] + t


@numba.njit(cache=True, nogil=True)
def _update_maps(first, srp, srow, col_sn, sg):
    """Where each lead supernode's update lands outside D: its rows below, split into chunks
    by the supernode T that holds their column (the rows are sorted, so each T is one run),
    and for each chunk (T, b0, b1) the position in T's rows of every row from b0 on
    (``rel[ro:ro + r - b0]``). Entry (a, b) of the update, a >= b, goes to column
    row b - first[T] of T's panel, at row position rel[ro + a - b0]. Rows in D (the last
    supernode) end the list; those of a supernode in a group (``sg`` >= 0) are left to the
    grouped products (:func:`_tail_groups`)."""
    ns = first.shape[0] - 1
    n_chunks = 0
    n_rel = 0
    for s in range(ns):
        r = srp[s + 1] - srp[s]
        b = 0
        while b < r:
            t = col_sn[srow[srp[s] + b]]
            if t == ns - 1 and sg[s] >= 0:
                break
            n_chunks += 1
            n_rel += r - b
            while b < r and col_sn[srow[srp[s] + b]] == t:
                b += 1
    chp = np.zeros(ns + 1, dtype=np.int64)
    cht = np.empty(n_chunks, dtype=np.int64)
    chb0 = np.empty(n_chunks, dtype=np.int64)
    chb1 = np.empty(n_chunks, dtype=np.int64)
    chro = np.empty(n_chunks, dtype=np.int64)
    rel = np.empty(n_rel, dtype=np.int64)
    k = 0
    o = 0
    for s in range(ns):
        r = srp[s + 1] - srp[s]
        b = 0
        while b < r:
            t = col_sn[srow[srp[s] + b]]
            if t == ns - 1 and sg[s] >= 0:
                break
            cht[k] = t
            chb0[k] = b
            chro[k] = o
            for a in range(b, r):
                rel[o] = _row_position(first, srp, srow, t, srow[srp[s] + a])
                o += 1
            while b < r and col_sn[srow[srp[s] + b]] == t:
                b += 1
            chb1[k] = b
            k += 1
        chp[s + 1] = k
    return chp, cht, chb0, chb1, chro, rel


@numba.njit(cache=True, nogil=True)
def _panel_positions(p, ap, ai, first, srp, srow, col_sn, soff):
    """Where each entry of P's lower pattern (``ap``, ``ai``: column i, rows k >= i, at L[k,
    i]) and each diagonal entry sits in the panels."""
    apos = np.empty(ap[p], dtype=np.int64)
    for i in range(p):
        for q in range(ap[i], ap[i + 1]):
            k = ai[q]
            s = col_sn[i]
            m = first[s + 1] - first[s] + srp[s + 1] - srp[s]
            apos[q] = soff[s] + (i - first[s]) * m + _row_position(first, srp, srow, s, k)
    dpos = np.empty(p, dtype=np.int64)
    for j in range(p):
        s = col_sn[j]
        m = first[s + 1] - first[s] + srp[s + 1] - srp[s]
        dpos[j] = soff[s] + (j - first[s]) * (m + 1)
    return apos, dpos


_ANALYSED: dict[str, SparsePattern] = {}  # SparsePattern.build's results in this process


@dataclass(frozen=True)
class SparsePattern:
    """The fixed symbolic analysis of P: ordering, supernodes, and index maps.

    ``perm[new] = old``. ``packed`` is every integer array the numeric kernel needs, in
    one int64 array (see :func:`_unpack`). ``ordering`` names the candidate that won and
    ``factor_flops`` its cost (sum of squared column counts of L); ``nnz_factor`` counts
    the non-zeros of L, ``nnz_panels`` the entries the supernodes store (explicit zeros
    included). ``tail_start`` is the first column of the last supernode (the dense
    trailing block).
    """

    p: int
    perm: np.ndarray
    upper: sp.csc_matrix  # pattern of P, permuted, upper triangle, sorted
    packed: np.ndarray
    ordering: str
    factor_flops: float
    nnz_factor: int
    candidates: dict[str, float]
    tail_start: int  # first column of D, the dense trailing block (the last supernode)
    n_supernodes: int
    n_groups: int  # groups of lead supernodes in D's products
    nnz_panels: int
    predicted_s: float  # predicted seconds per evaluation (cost model), for kernel choice
    entry_order: np.ndarray  # the kernel's entries of P (lower triangle, CSC) in ``upper``

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
        # the analysis depends on the pattern and the blocks only: within a process (the
        # fit, then LOO) it is done once
        key = hashlib.sha256(
            b"".join(
                [np.int64(p).tobytes(), full.indptr.astype(np.int64).tobytes()]
                + [full.indices.astype(np.int64).tobytes()]
                + [np.asarray(b, dtype=np.int64).tobytes() + b"|" for b in (blocks or ())]
            )
        ).hexdigest()
        if key not in _ANALYSED:
            _ANALYSED[key] = cls._analyse(full, blocks)
        return _ANALYSED[key]

    @classmethod
    def _analyse(cls, full: sp.csc_matrix, blocks) -> SparsePattern:
        p = full.shape[0]
        orderings = {"natural": np.arange(p, dtype=np.int64)}
        if blocks:
            orderings["blocks"] = _block_ordering(full, blocks)
        if p > 1:
            orderings["minimum_degree"] = _mmd_ordering(full)
        candidates, analysed = {}, {}
        for name, perm in orderings.items():
            sym = _symbolic(_permuted_upper(full, perm))
            candidates[name] = _factor_flops(sym[1])
            analysed[name] = (perm, sym)
        workers = max(1, len(os.sched_getaffinity(0)))
        if blocks and 1 < p <= _CLASS_MAX_P:
            ap, ai = full.indptr.astype(np.int64), full.indices.astype(np.int64)
            # one thread each (the ordering releases the GIL); an ordering that passes this
            # limit can never be kept (below), so the order of the searches does not matter
            limit = _CLASS_GIVE_UP * min(candidates.values())

            def class_ordering(classes):
                perm = _class_min_degree(p, ap, ai, classes, limit)
                return (perm, _symbolic(_permuted_upper(full, perm))) if perm.size else None

            orderings = _class_orderings(p, blocks)
            with ThreadPoolExecutor(workers) as pool:
                results = list(pool.map(class_ordering, [c for _, c in orderings]))
            for (name, _), result in zip(orderings, results, strict=True):
                if result is not None:
                    candidates[name] = _factor_flops(result[1][1])
                    analysed[name] = result
        least = min(candidates.values())
        kept = sorted((f, name) for name, f in candidates.items() if f <= _ORDER_SLACK * least)
        jobs = [
            (name, flops, t0)
            for flops, name in kept[:_ORDER_KEEP]
            for t0 in _tail_candidates(p, analysed[name][1][1])
        ]

        def layout(job):
            name, flops, t0 = job
            perm, (parent, lp, li) = analysed[name]
            return (*_layout(full, perm, parent, lp, li, t0), name, flops, lp)

        with ThreadPoolExecutor(workers) as pool:
            layouts = list(pool.map(layout, jobs))
        best = min(layouts, key=lambda x: x[0])
        predicted, perm, upper, packed, t0, ns, n_groups, nnz_panels, order, name, flops, lp = best
        return cls(
            p,
            perm,
            upper,
            packed,
            name,
            flops,
            int(lp[-1]) + p,
            candidates,
            t0,
            ns,
            n_groups,
            nnz_panels,
            float(predicted),
            order,
        )

    def values(self, matrix: sp.spmatrix) -> np.ndarray:
        """The entries of symmetric ``matrix`` (original order) on the permuted pattern, in the
        kernel's order (its lower triangle by columns: the order of the panels).

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
        return out[self.entry_order]

    def panel_positions(self) -> np.ndarray:
        """Where each entry of ``upper`` (its CSC order) sits in the panels of the factor and
        the selected inverse."""
        out = np.empty(self.entry_order.size, dtype=np.int64)
        out[self.entry_order] = _unpack(self.packed)[25]
        return out

    def factor_entries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rows, cols, positions)`` (permuted order) of every entry of L's lower
        trapezoids in the panels: ``lx[positions]`` (``_factor``) is L[rows, cols] and the
        selected inverse ``sx[positions]`` is P^-1[perm[rows], perm[cols]]."""
        p, first, soff, srp, srow = (_unpack(self.packed)[k] for k in (0, 4, 5, 6, 7))  # noqa: F841
        rows, cols, pos = [], [], []
        for s in range(first.size - 1):
            below = srow[srp[s] : srp[s + 1]]
            members = np.arange(first[s], first[s + 1])
            height = members.size + below.size
            for c, j in enumerate(members):
                these = np.concatenate([members[c:], below])
                rows.append(these)
                cols.append(np.full(these.size, j))
                pos.append(soff[s] + c * height + np.arange(c, height))
        return tuple(np.concatenate(x).astype(np.int64) for x in (rows, cols, pos))


@numba.njit(cache=True, nogil=True)
def _unpack(packed):
    """``p, perm, ap, ai, first, soff, srp, srow, col_sn, dpos, rl, chp, cht, chb0, chb1,
    chro, rel, sg, sgc, grp, grow, spos, boff, grunp, gruns, apos`` (see
    ``SparsePattern.build``); ``ap``, ``ai``: P's lower pattern by columns (the kernel's order
    of P's entries), ``apos`` (where they sit in the panels) last."""
    p, nnz_a, ns, n_srow = packed[0], packed[1], packed[2], packed[3]
    n_chunks, n_rel, n_groups, n_grow = packed[4], packed[5], packed[9], packed[10]
    o = _HEADER
    perm = packed[o : o + p]
    o += p
    ap = packed[o : o + p + 1]
    o += p + 1
    ai = packed[o : o + nnz_a]
    o += nnz_a
    first = packed[o : o + ns + 1]
    o += ns + 1
    soff = packed[o : o + ns + 1]
    o += ns + 1
    srp = packed[o : o + ns + 1]
    o += ns + 1
    srow = packed[o : o + n_srow]
    o += n_srow
    col_sn = packed[o : o + p]
    o += p
    dpos = packed[o : o + p]
    o += p
    rl = packed[o : o + ns]
    o += ns
    chp = packed[o : o + ns + 1]
    o += ns + 1
    cht = packed[o : o + n_chunks]
    o += n_chunks
    chb0 = packed[o : o + n_chunks]
    o += n_chunks
    chb1 = packed[o : o + n_chunks]
    o += n_chunks
    chro = packed[o : o + n_chunks]
    o += n_chunks
    rel = packed[o : o + n_rel]
    o += n_rel
    sg = packed[o : o + ns]
    o += ns
    sgc = packed[o : o + ns]
    o += ns
    grp = packed[o : o + n_groups + 1]
    o += n_groups + 1
    grow = packed[o : o + n_grow]
    o += n_grow
    spos = packed[o : o + n_srow]
    o += n_srow
    boff = packed[o : o + n_groups + 1]
    o += n_groups + 1
    grunp = packed[o : o + n_groups + 1]
    o += n_groups + 1
    gruns = packed[o : o + 3 * packed[13]]
    o += 3 * packed[13]
    apos = packed[o : o + nnz_a]
    return (
        p,
        perm,
        ap,
        ai,
        first,
        soff,
        srp,
        srow,
        col_sn,
        dpos,
        rl,
        chp,
        cht,
        chb0,
        chb1,
        chro,
        rel,
        sg,
        sgc,
        grp,
        grow,
        spos,
        boff,
        grunp,
        gruns,
        apos,
    )


def _layout(full, perm, parent, lp, li, t0) -> tuple:
    """Supernodes, their maps and groups for D starting at ``t0`` of the ordering ``perm``:
    ``(predicted seconds, perm, upper, packed, D's start, supernodes, groups, panel
    entries)``."""
    p = full.shape[0]
    order, first = _supernode_partition(parent, lp, li, t0)
    perm = perm[order]  # an equivalent order: the same factor, supernodes contiguous
    ns = first.size - 1
    t0 = int(first[-2])
    srp, srow, rl = _structure(full, perm, first)[3:6]
    groups, group_s = _tail_groups(first, srp, srow, rl)
    perm[t0:] = perm[t0:][_tail_order(first, srp, srow, rl, groups)]
    upper, ap, ai, srp, srow, rl, col_sn = _structure(full, perm, first)
    widths = np.diff(first)
    below = np.diff(srp)
    heights = widths + below
    soff = np.concatenate([[0], np.cumsum(widths * heights)]).astype(np.int64)
    sg, sgc, grp, grow, spos, boff, grunp, gruns = _group_arrays(first, srp, srow, rl, groups)
    chp, cht, chb0, chb1, chro, rel = _update_maps(first, srp, srow, col_sn, sg)
    # the kernel's entries of P (``a_data``) in the order of the panels: P's lower triangle by
    # columns, rows sorted (the diagonal first); entry_order[q]: its index in ``upper``
    tagged = sp.csc_matrix((np.arange(ap[-1], dtype=np.float64) + 1.0, ai, ap), shape=(p, p))
    lower = sp.csc_matrix(tagged.T)
    lower.sort_indices()
    entry_order = lower.data.astype(np.int64) - 1
    ap, ai = lower.indptr.astype(np.int64), lower.indices.astype(np.int64)
    apos, dpos = _panel_positions(p, ap, ai, first, srp, srow, col_sn, soff)
    header = np.array(
        [p, ap[-1], ns, srow.size, cht.size, rel.size, soff[-1], below.max(), widths.max()]
        + [grp.size - 1, grow.size, boff[-1], np.diff(grp).max(initial=0), grunp[-1]],
        dtype=np.int64,
    )
    packed = np.concatenate(
        [header, perm, ap, ai, first, soff, srp, srow, col_sn, dpos, rl, chp, cht, chb0]
        + [chb1, chro, rel, sg, sgc, grp, grow, spos, boff, grunp, gruns, apos]
    )
    lead_s = sum(
        _node_seconds(int(widths[s]), int(rl[s]), int(below[s] - rl[s]))
        - (0.0 if sg[s] >= 0 else int(widths[s] * (below[s] - rl[s]) ** 2) * _GROUP_S_PER_FMA)
        for s in range(ns - 1)
    )
    nnz_panels = int(np.sum(widths * heights - widths * (widths - 1) // 2))
    predicted = lead_s + _dense_seconds(int(widths[-1])) + group_s
    predicted += _S_PER_P_NONZERO * ap[-1] + _S_PER_L_NONZERO * nnz_panels
    return float(predicted), perm, upper, packed, t0, ns, grp.size - 1, nnz_panels, entry_order


def _structure(full, perm, first) -> tuple:
    """``(upper, ap, ai, srp, srow, rl, col_sn)`` of the supernodes ``first`` in the order
    ``perm``; ``rl``: rows below each supernode that are not in D (the last supernode)."""
    p = full.shape[0]
    upper = _permuted_upper(full, perm)
    ap = upper.indptr.astype(np.int64)
    ai = upper.indices.astype(np.int64)
    srp, srow, col_sn = _supernodal_rows(p, ap, ai, first)
    lead = np.concatenate([[0], np.cumsum(srow < first[-2])])
    rl = (lead[srp[1:]] - lead[srp[:-1]]).astype(np.int64)
    return upper, ap, ai, srp, srow, rl, col_sn


# --- numeric kernel (per evaluation) -----------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _assemble(p, ap, ai, perm, a_data, inv_s2, lam):
    """Values of P = sum_g A_g / s2_g + diag(1 / lam) on its lower pattern (permuted)."""
    px = np.zeros(ap[p])
    for g in range(a_data.shape[0]):
        w = inv_s2[g]
        for q in range(ap[p]):
            px[q] += a_data[g, q] * w
    for k in range(p):
        # the diagonal is the first entry of each sorted lower column
        px[ap[k]] += 1.0 / lam[perm[k]]
    return px


@numba.njit(cache=True, nogil=True, inline="always")
def _dot(x, xo, y, yo, n):
    """sum_t x[xo + t] y[yo + t] with eight partial sums (independent chains; always the
    same order, so the result is reproducible)."""
    xs = x[xo : xo + n]
    ys = y[yo : yo + n]
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    n8 = n - n % 8
    for t in range(0, n8, 8):
        a0 += xs[t] * ys[t]
        a1 += xs[t + 1] * ys[t + 1]
        a2 += xs[t + 2] * ys[t + 2]
        a3 += xs[t + 3] * ys[t + 3]
        a4 += xs[t + 4] * ys[t + 4]
        a5 += xs[t + 5] * ys[t + 5]
        a6 += xs[t + 6] * ys[t + 6]
        a7 += xs[t + 7] * ys[t + 7]
    for t in range(n8, n):
        a0 += xs[t] * ys[t]
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@numba.njit(cache=True, nogil=True, inline="always")
def _dot2(x, xo, y, z, n):
    """(sum_t x[xo + t] y[t], sum_t x[xo + t] z[t]) in one pass over x, four partial sums
    each (a fixed order)."""
    xs = x[xo : xo + n]
    a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = 0.0
    n4 = n - n % 4
    for t in range(0, n4, 4):
        x0, x1, x2, x3 = xs[t], xs[t + 1], xs[t + 2], xs[t + 3]
        a0 += x0 * y[t]
        a1 += x1 * y[t + 1]
        a2 += x2 * y[t + 2]
        a3 += x3 * y[t + 3]
        b0 += x0 * z[t]
        b1 += x1 * z[t + 1]
        b2 += x2 * z[t + 2]
        b3 += x3 * z[t + 3]
    for t in range(n4, n):
        a0 += xs[t] * y[t]
        b0 += xs[t] * z[t]
    return (a0 + a1) + (a2 + a3), (b0 + b1) + (b2 + b3)


@numba.njit(cache=True, nogil=True)
def _tri_inverse(x, off, n, ld):
    """L^-1, in place, of the lower triangular n x n block at ``x[off]`` (column-major,
    leading dimension ``ld``): halved recursively, [A 0; B C]^-1 = [A^-1 0; -C^-1 B A^-1
    C^-1], so that the bulk is BLAS's dtrmm and dtrsm (an explicit stack: numba's cache
    mishandles recursive functions)."""
    stack = np.empty((64, 3), dtype=np.int64)  # (offset, size, stage)
    stack[0, 0], stack[0, 1], stack[0, 2] = off, n, 0
    top = 0
    while top >= 0:
        o, k, stage = stack[top, 0], stack[top, 1], stack[top, 2]
        top -= 1
        if k <= _TRI_BASE:
            lapack.dtrtri(_CHAR_L, _CHAR_N, k, x, o, ld)
            continue
        k1 = k // 2
        if stage == 0:  # A^-1 first
            stack[top + 1, 0], stack[top + 1, 1], stack[top + 1, 2] = o, k, 1
            stack[top + 2, 0], stack[top + 2, 1], stack[top + 2, 2] = o, k1, 0
            top += 2
        else:  # B := -C^-1 B A^-1 with C not yet inverted, then C^-1
            b = o + k1
            c = o + k1 + k1 * ld
            lapack.dtrmm(_CHAR_R, _CHAR_L, _CHAR_N, _CHAR_N, k - k1, k1, 1.0, x, o, ld, x, b, ld)
            lapack.dtrsm(_CHAR_L, _CHAR_L, _CHAR_N, _CHAR_N, k - k1, k1, -1.0, x, c, ld, x, b, ld)
            top += 1
            stack[top, 0], stack[top, 1], stack[top, 2] = c, k - k1, 0


@numba.njit(cache=True, nogil=True)
def _factor(packed, px):
    """The Cholesky factor of P (values ``px`` on its lower pattern) in the supernodes' panels, and
    ok (False if P is not positive definite): see :func:`_factor_panels`."""
    apos = _unpack(packed)[25]
    lx = np.zeros(packed[6])
    for q in range(apos.shape[0]):
        lx[apos[q]] = px[q]
    return lx, _factor_panels(packed, lx, np.zeros(0))


@numba.njit(cache=True, nogil=True)
def _assemble_panels(packed, a_data, inv_s2, lam):
    """P = sum_g A_g / s2_g + diag(1 / lam) in the panels (zero elsewhere)."""
    p, perm, ap, ai = _unpack(packed)[:4]
    dpos, apos = _unpack(packed)[9], _unpack(packed)[25]
    px = a_data[0] * inv_s2[0]  # a group at a time: contiguous, vectorised
    for g in range(1, a_data.shape[0]):
        w = inv_s2[g]
        for q in range(ap[p]):
            px[q] += a_data[g, q] * w
    lx = np.zeros(packed[6])
    for q in range(ap[p]):  # in the panels' order
        lx[apos[q]] = px[q]
    for k in range(p):
        lx[dpos[k]] += 1.0 / lam[perm[k]]
    return lx


@numba.njit(cache=True, nogil=True)
def _factor_panels(packed, lx, y):
    """The Cholesky factor, in place, of P in the supernodes' panels (:func:`_assemble_panels`);
    False if P is not positive definite. Unless ``y`` is empty, it is overwritten by L^-1 y
    on the way (each supernode's part of the solve while its panel is at hand).

    Supernode s holds columns first[s]..first[s+1]-1 as one dense column-major panel at
    ``soff[s]``: its w columns' rows (the w x w diagonal block, lower triangle) then its r
    rows below (``srow``: rl in the lead, then those in D). Right-looking: each lead
    supernode, once its panel has received all updates, is factored (dpotrf of the diagonal
    block, dtrsm for the rows below; plain loops for a single column); the columns of its
    update L_R L_RL' that are lead rows (dgemm) are subtracted from its lead ancestors'
    panels at the positions ``_update_maps`` found once, and its rows in D are copied into
    its group's block. D's Schur complement then takes one dsyrk per group, and dpotrf.
    """
    (
        p, perm, ap, ai, first, soff, srp, srow, col_sn, dpos, rl, chp, cht, chb0, chb1, chro,
        rel, sg, sgc, grp, grow, spos, boff, grunp, gruns, apos,
    ) = _unpack(packed)  # fmt: skip
    ns = first.shape[0] - 1
    update = np.empty(max(packed[7] * packed[7], packed[12] * packed[12]))
    inverse = np.empty(packed[8] * packed[8])
    column = np.empty(packed[7])
    blocks = np.zeros(packed[11])
    for s in range(ns):
        w = first[s + 1] - first[s]
        r = srp[s + 1] - srp[s]
        m = w + r
        off = soff[s]
        if s == ns - 1:  # D: first the grouped Schur updates
            for g in range(grp.shape[0] - 1):
                nu = grp[g + 1] - grp[g]
                width = (boff[g + 1] - boff[g]) // nu
                if nu == w:  # dense: subtracted from D in place
                    _syrk_lower(nu, width, -1.0, blocks, boff[g], nu, 1.0, lx, off, m)
                    continue
                _syrk_lower(nu, width, 1.0, blocks, boff[g], nu, 0.0, update, 0, nu)
                for b in range(nu):  # its lower triangle into D, by runs of rows
                    base = off + grow[grp[g] + b] * m
                    for k in range(grunp[g], grunp[g + 1]):
                        start, row, length = gruns[3 * k], gruns[3 * k + 1], gruns[3 * k + 2]
                        a0 = max(start, b)
                        src = a0 + b * nu
                        dst = base + row + a0 - start
                        for t in range(start + length - a0):
                            lx[dst + t] -= update[src + t]
        if w == 1:
            d = lx[off]
            if not (d > 0.0 and d < np.inf):
                return False
            ljj = math.sqrt(d)
            lx[off] = ljj
            inv = 1.0 / ljj
            for a in range(1, m):
                lx[off + a] *= inv
        else:
            if lapack.dpotrf(_CHAR_L, w, lx, off, m) != 0:
                return False
            for c in range(w):
                d = lx[off + c * (m + 1)]
                if not (d > 0.0 and d < np.inf):
                    return False
            if s < ns - 1:  # L_JJ^-1, kept transposed in the block's upper triangle
                for c in range(w):
                    for i in range(c, w):
                        inverse[i + c * w] = lx[off + i + c * m]
                _tri_inverse(inverse, 0, w, w)
                for c in range(w):
                    for i in range(c + 1, w):
                        lx[off + c + i * m] = inverse[i + c * w]
                if r > 0:  # L_RJ = A_RJ L_JJ^-T (OpenBLAS's dtrsm is slow for these shapes)
                    lapack.dtrmm(
                        _CHAR_R, _CHAR_L, _CHAR_T, _CHAR_N, r, w, 1.0, inverse, 0, w, lx, off + w,
                        m,
                    )  # fmt: skip
        if y.shape[0]:
            f = first[s]
            for c in range(w):
                col = off + c * m
                yk = y[f + c] / lx[col + c]
                y[f + c] = yk
                for i in range(c + 1, w):
                    y[f + i] -= lx[col + i] * yk
            if w == 1:
                for a in range(r):
                    y[srow[srp[s] + a]] -= lx[off + 1 + a] * y[f]
            elif r > 0:  # L_RJ y_J summed over the columns, then scattered once
                for a in range(r):
                    column[a] = 0.0
                for c in range(w):
                    yk = y[f + c]
                    col = off + c * m + w
                    for a in range(r):
                        column[a] += lx[col + a] * yk
                for a in range(r):
                    y[srow[srp[s] + a]] -= column[a]
        nl = rl[s]
        if nl > 0 and w > 1:
            lapack.dgemm(
                _CHAR_N, _CHAR_T, r, nl, w, 1.0, lx, off + w, m, lx, off + w, m, 0.0, update, 0, r
            )  # fmt: skip
        for k in range(chp[s], chp[s + 1]):
            t = cht[k]
            mt = first[t + 1] - first[t] + srp[t + 1] - srp[t]
            ro = chro[k] - chb0[k]
            for b in range(chb0[k], chb1[k]):
                base = soff[t] + (srow[srp[s] + b] - first[t]) * mt
                if w == 1:
                    vb = lx[off + 1 + b]
                    for a in range(b, r):
                        lx[base + rel[ro + a]] -= lx[off + 1 + a] * vb
                else:
                    for a in range(b, r):
                        lx[base + rel[ro + a]] -= update[a + b * r]
        if sg[s] >= 0:
            g = sg[s]
            nu = grp[g + 1] - grp[g]
            bo = boff[g] + sgc[s] * nu
            for c in range(w):
                for t in range(nl, r):
                    blocks[bo + c * nu + spos[srp[s] + t]] = lx[off + w + t + c * m]
    return True


@numba.njit(cache=True, nogil=True, inline="always")
def _syrk_lower(n, k, alpha, a, ao, lda, beta, c, co, ldc):
    """The lower triangle of C := alpha A A' + beta C (n x n, A n x k) by dgemm on column
    blocks of _SYRK_BLOCK (faster than OpenBLAS's dsyrk for these shapes); it also writes the
    upper triangles of the diagonal blocks, which no caller reads."""
    j = 0
    while j < n:
        jb = min(_SYRK_BLOCK, n - j)
        lapack.dgemm(
            _CHAR_N, _CHAR_T, n - j, jb, k, alpha, a, ao + j, lda, a, ao + j, lda, beta, c,
            co + j + j * ldc, ldc,
        )  # fmt: skip
        j += jb


@numba.njit(cache=True, nogil=True)
def selected_inverse(packed, lx):
    """The entries of S = P^-1 on the panels of the factor ``lx`` (:func:`_factor`): the
    supernodal Takahashi recursion, last supernode first.

    D: S_DD = L_DD^-T L_DD^-1 (:func:`_tri_inverse`, dlauum), then made symmetric in place
    (both triangles, for dgemm). For a lead supernode with diagonal block L_JJ, rows below
    L_RJ and U = L_RJ L_JJ^-1: S_RJ = -S_RR U and S_JJ = L_JJ^-T L_JJ^-1 - U' S_RJ, S_RR
    being known from the ancestors. First every lead supernode's L_JJ^-1 (in S's diagonal
    block) and U (``ux``, the panels' rows below) are formed, U's rows in D also into its
    group's block; then the part S_DD U_D of S_RR U is one dgemm per group (the group's
    gathered square block of S_DD, or all of S_DD in place for a dense group); then, going
    back through the lead supernodes, the rest reads S_RR's columns of lead rows in place
    (at the factor's update positions): dgemm for wide supernodes, plain loops for one
    column.
    """
    (
        p, perm, ap, ai, first, soff, srp, srow, col_sn, dpos, rl, chp, cht, chb0, chb1, chro,
        rel, sg, sgc, grp, grow, spos, boff, grunp, gruns, apos,
    ) = _unpack(packed)  # fmt: skip
    ns = first.shape[0] - 1
    max_r = packed[7]
    sx = np.empty(packed[6])  # upper triangles of lead diagonal blocks: never read
    ux = np.empty(packed[6])  # U below each lead supernode's diagonal block
    gathered = np.empty(max(max_r * max_r, packed[12] * packed[12]))
    z = np.empty(max_r)
    column = np.empty(max_r)
    s = ns - 1  # D
    n = first[s + 1] - first[s]
    dd = soff[s]
    for c in range(n):
        for i in range(c, n):
            sx[dd + i + c * n] = lx[dd + i + c * n]
    _tri_inverse(sx, dd, n, n)
    lapack.dlauum(_CHAR_L, n, sx, dd, n)
    for c in range(n):  # S_DD's upper triangle
        for i in range(c + 1, n):
            sx[dd + c + i * n] = sx[dd + i + c * n]
    bu = np.zeros(packed[11])  # U_D of each group's members, then S_DD U_D
    prod = np.empty(packed[11])
    for s in range(ns - 1):
        w = first[s + 1] - first[s]
        m = w + srp[s + 1] - srp[s]
        off = soff[s]
        if w == 1:
            inv = 1.0 / lx[off]
            sx[off] = inv
            for a in range(1, m):
                ux[off + a] = lx[off + a] * inv
        else:  # L_JJ^-1 from the factor (the upper triangle, transposed)
            for c in range(w):
                sx[off + c + c * m] = 1.0 / lx[off + c + c * m]
                for i in range(c + 1, w):
                    sx[off + i + c * m] = lx[off + c + i * m]
                for a in range(w, m):
                    ux[off + a + c * m] = lx[off + a + c * m]
            if m > w:
                lapack.dtrmm(
                    _CHAR_R, _CHAR_L, _CHAR_N, _CHAR_N, m - w, w, 1.0, sx, off, m, ux, off + w, m
                )  # fmt: skip
        g = sg[s]
        if g >= 0:
            nu = grp[g + 1] - grp[g]
            bo = boff[g] + sgc[s] * nu
            for c in range(w):
                for t in range(rl[s], m - w):
                    bu[bo + c * nu + spos[srp[s] + t]] = ux[off + w + t + c * m]
    for g in range(grp.shape[0] - 1):
        nu = grp[g + 1] - grp[g]
        width = (boff[g + 1] - boff[g]) // nu
        if nu == n:  # dense: all of S_DD in place
            lapack.dgemm(
                _CHAR_N, _CHAR_N, n, width, n, 1.0, sx, dd, n, bu, boff[g], n, 0.0, prod,
                boff[g], n,
            )  # fmt: skip
            continue
        for b in range(nu):  # S_DD at the group's rows, by runs of rows
            base = dd + grow[grp[g] + b] * n
            for k in range(grunp[g], grunp[g + 1]):
                start, row, length = gruns[3 * k], gruns[3 * k + 1], gruns[3 * k + 2]
                dst = start + b * nu
                src = base + row
                for t in range(length):
                    gathered[dst + t] = sx[src + t]
        lapack.dgemm(
            _CHAR_N, _CHAR_N, nu, width, nu, 1.0, gathered, 0, nu, bu, boff[g], nu, 0.0, prod,
            boff[g], nu,
        )  # fmt: skip
    for s in range(ns - 2, -1, -1):
        g = sg[s]
        w = first[s + 1] - first[s]
        r = srp[s + 1] - srp[s]
        m = w + r
        off = soff[s]
        nl = rl[s]
        nu = grp[g + 1] - grp[g] if g >= 0 else 0
        bo = boff[g] + sgc[s] * nu if g >= 0 else 0
        if w == 1:  # z = S_RR u: S_DD u_D from the group, S_RR's lead columns read in place
            inv = sx[off]
            for a in range(r):
                z[a] = prod[bo + spos[srp[s] + a]] if a >= nl and g >= 0 else 0.0
            for k in range(chp[s], chp[s + 1]):
                t = cht[k]
                mt = first[t + 1] - first[t] + srp[t + 1] - srp[t]
                ro = chro[k] - chb0[k]
                for b in range(chb0[k], chb1[k]):
                    base = soff[t] + (srow[srp[s] + b] - first[t]) * mt
                    ub = ux[off + 1 + b]
                    if r - b < 16:  # short: one loop
                        acc = sx[base + rel[ro + b]] * ub
                        for a in range(b + 1, r):
                            v = sx[base + rel[ro + a]]
                            z[a] += v * ub
                            acc += v * ux[off + 1 + a]
                        z[b] += acc
                        continue
                    for a in range(b, r):
                        column[a] = sx[base + rel[ro + a]]
                    for a in range(b + 1, r):
                        z[a] += column[a] * ub
                    z[b] += column[b] * ub + _dot(column, b + 1, ux, off + 2 + b, r - b - 1)
            sjj = inv * inv
            for a in range(r):
                sx[off + 1 + a] = -z[a]
                sjj += ux[off + 1 + a] * z[a]
            sx[off] = sjj
            continue
        if r > 0:  # S_RJ = -S_RR U, written in place
            for c in range(w):
                for a in range(r):
                    v = prod[bo + c * nu + spos[srp[s] + a]] if a >= nl else 0.0
                    sx[off + w + a + c * m] = -v
            if nl > 0:
                for k in range(chp[s], chp[s + 1]):  # S_RR's lead columns, lower part
                    t = cht[k]
                    mt = first[t + 1] - first[t] + srp[t + 1] - srp[t]
                    ro = chro[k] - chb0[k]
                    for b in range(chb0[k], chb1[k]):
                        base = soff[t] + (srow[srp[s] + b] - first[t]) * mt
                        for a in range(b, r):
                            gathered[a + b * r] = sx[base + rel[ro + a]]
                for b in range(nl):  # S_LL's upper part
                    for a in range(b):
                        gathered[a + b * r] = gathered[b + a * r]
                lapack.dgemm(
                    _CHAR_N, _CHAR_N, r, w, nl, -1.0, gathered, 0, r, ux, off + w, m, 1.0, sx,
                    off + w, m,
                )  # fmt: skip
                if r > nl:
                    lapack.dgemm(
                        _CHAR_T, _CHAR_N, nl, w, r - nl, -1.0, gathered, nl, r, ux, off + w + nl,
                        m, 1.0, sx, off + w, m,
                    )  # fmt: skip
        lapack.dlauum(_CHAR_L, w, sx, off, m)
        if r > 0:
            lapack.dgemm(
                _CHAR_T, _CHAR_N, w, w, r, -1.0, ux, off + w, m, sx, off + w, m, 1.0, sx, off, m
            )  # fmt: skip
    return sx


@numba.njit(cache=True, nogil=True)
def _solve_lt(packed, lx, x):
    """L' y = x, in place."""
    first, soff, srp, srow = _unpack(packed)[4:8]
    gathered = np.empty(packed[7])
    for s in range(first.shape[0] - 2, -1, -1):
        f = first[s]
        w = first[s + 1] - f
        r = srp[s + 1] - srp[s]
        m = w + r
        off = soff[s]
        if w == 1 and r < 16:
            acc = x[f]
            for a in range(r):
                acc -= lx[off + 1 + a] * x[srow[srp[s] + a]]
            x[f] = acc / lx[off]
            continue
        for a in range(r):
            gathered[a] = x[srow[srp[s] + a]]
        for c in range(w - 1, -1, -1):
            col = off + c * m
            acc = x[f + c] - _dot(lx, col + w, gathered, 0, r)
            for i in range(c + 1, w):
                acc -= lx[col + i] * x[f + i]
            x[f + c] = acc / lx[col + c]


@numba.njit(cache=True, nogil=True)
def sparse_marginal_loglik(log_s2, log_lam, a_data, wty, yty, n_obs, packed):
    """``(ll, d ll/d log s2_g, d ll/d log lam_j)`` (0-d array, (G,), (p,)).

    ``a_data[g]``: A_g on the pattern's permuted upper entries; ``wty[g]``, ``log_lam``:
    original coefficient order.
    """
    p, perm, ap, ai = _unpack(packed)[:4]
    dpos, apos = _unpack(packed)[9], _unpack(packed)[25]
    n_groups = a_data.shape[0]
    g_lam = np.zeros(p)
    g_s2 = np.zeros(n_groups)
    if log_lam.shape[0] != p or wty.shape[1] != p or a_data.shape[1] != ap[p]:
        raise ValueError("log_lam, W'W and W'y do not match the sparse pattern")
    if log_s2.shape[0] != n_groups or wty.shape[0] != n_groups:
        raise ValueError("one residual variance per group of W'W, W'y, y'y and n")
    inv_s2 = np.exp(-log_s2)
    lam = np.exp(log_lam)
    lx, r, bhat, ok = _factor_and_mean(packed, a_data, wty, inv_s2, lam)
    if not ok:
        return np.asarray(-np.inf), g_s2, g_lam
    sx = selected_inverse(packed, lx)

    logdet = 0.0
    quad = 0.0
    for k in range(p):
        logdet += 2.0 * math.log(lx[dpos[k]])
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
        sjj = sx[dpos[k]]
        g_lam[j] = -0.5 + 0.5 * sjj / lam[j] + 0.5 * b2 / lam[j]
        trace_rest -= sjj / lam[j]
        bab_rest -= b2 / lam[j]
    # tr(S A_g) and bhat'A_g bhat: S and bhat bhat' on P's pattern (off-diagonal entries
    # twice), a chunk at a time, and its dot products with each group's A_g but the last's
    traces = np.zeros(n_groups)
    babs = np.zeros(n_groups)
    if n_groups > 1:
        s_on = np.empty(_CHUNK + p)  # a chunk of whole columns
        b_on = np.empty(_CHUNK + p)
        q0 = 0
        for k in range(p):
            bk = 2.0 * bhat[k]
            for q in range(ap[k], ap[k + 1]):
                s_on[q - q0] = 2.0 * sx[apos[q]]
                b_on[q - q0] = bhat[ai[q]] * bk
            q = ap[k]  # the diagonal, once
            s_on[q - q0] *= 0.5
            b_on[q - q0] *= 0.5
            if ap[k + 1] - q0 >= _CHUNK or k == p - 1:
                for g in range(n_groups - 1):
                    tr, bab = _dot2(a_data[g], q0, s_on, b_on, ap[k + 1] - q0)
                    traces[g] += tr
                    babs[g] += bab
                q0 = ap[k + 1]
    for g in range(n_groups):
        quad += yty[g] * inv_s2[g]
        ll -= 0.5 * n_obs[g] * (_LOG_2PI + log_s2[g])
        if g == n_groups - 1:
            trace = trace_rest / inv_s2[g]
            bab = bab_rest / inv_s2[g]
        else:
            trace = traces[g]
            bab = babs[g]
            trace_rest -= trace * inv_s2[g]
            bab_rest -= bab * inv_s2[g]
        bu = 0.0
        for k in range(p):
            bu += bhat[k] * wty[g, perm[k]]
        g_s2[g] = -0.5 * n_obs[g] + 0.5 * inv_s2[g] * (trace + yty[g] - 2.0 * bu + bab)
    ll -= 0.5 * quad
    return np.asarray(ll), g_s2, g_lam


@numba.njit(cache=True, nogil=True)
def sparse_marginal_loglik_value(log_s2, log_lam, a_data, wty, yty, n_obs, packed):
    """The marginal log likelihood of :func:`sparse_marginal_loglik` without its gradient:
    the factor and one solve, no selected inverse (about a third of the cost)."""
    p, perm = _unpack(packed)[:2]
    dpos = _unpack(packed)[9]
    inv_s2 = np.exp(-log_s2)
    lam = np.exp(log_lam)
    lx, r, bhat, ok = _factor_and_mean(packed, a_data, wty, inv_s2, lam)
    if not ok:
        return -np.inf
    ll = 0.0
    quad = 0.0
    for k in range(p):
        ll -= math.log(lx[dpos[k]]) + 0.5 * log_lam[perm[k]]
        quad -= r[k] * bhat[k]
    for g in range(a_data.shape[0]):
        quad += yty[g] * inv_s2[g]
        ll -= 0.5 * n_obs[g] * (_LOG_2PI + log_s2[g])
    return ll - 0.5 * quad


@numba.njit(cache=True, nogil=True)
def _factor_and_mean(packed, a_data, wty, inv_s2, lam):
    """The factor of P (:func:`_factor`), r = sum_g W_g'y_g / s2_g and the conditional mean
    P^-1 r (permuted order); ``ok`` is False where P is not positive definite."""
    p, perm = _unpack(packed)[:2]
    r = np.zeros(p)
    for g in range(a_data.shape[0]):
        for k in range(p):
            r[k] += wty[g, perm[k]] * inv_s2[g]
    lx = _assemble_panels(packed, a_data, inv_s2, lam)
    bhat = r.copy()
    if not _factor_panels(packed, lx, bhat):  # bhat = L^-1 r on the way
        return lx, r, r, False
    _solve_lt(packed, lx, bhat)
    return lx, r, bhat, True


@numba.njit(cache=True, nogil=True)
def sparse_conditional_draws(log_s2, log_lam, a_data, wty, packed, noise):
    """Exact draws b ~ N(P^-1 r, P^-1), one per row of ``log_s2``/``log_lam``/``noise``.

    Rows index posterior draws: ``log_s2`` (D, G), ``log_lam`` (D, p), ``noise`` (D, p)
    standard normal. Returns (D, p) in the original coefficient order.
    """
    p, perm = _unpack(packed)[:2]
    n_draws = noise.shape[0]
    out = np.empty((n_draws, p))
    for d in range(n_draws):
        inv_s2, lam = np.exp(-log_s2[d]), np.exp(log_lam[d])
        lx, _, mean, ok = _factor_and_mean(packed, a_data, wty, inv_s2, lam)
        if not ok:
            raise FloatingPointError("sparse Cholesky failed in the conditional draws")
        offset = noise[d].copy()  # covariance (L L')^-1 = P^-1
        _solve_lt(packed, lx, offset)
        for k in range(p):
            out[d, perm[k]] = mean[k] + offset[k]
    return out


@numba.njit(cache=True, nogil=True)
def loo_loglik_grouped(
    log_s2, log_lam, a_data, wty, packed,
    pat_cols, pat_kind, pair_pos, pair_coef, pair_class, n_class,
    student_pattern, mult, mean_mult, y, g,
):  # fmt: skip
    """log p(y_i | y_-i, theta_s), the in-sample log p(y_i | y, theta_s) and the LOO
    predictive CDF P(y_rep_i <= y_i | y_-i, theta_s) (for LOO-PIT), every draw s (rows) and
    student i (columns), for ``loo.conditional_loo``, with the students grouped by their
    design row's indicator columns.

    Here, not in loo.py, because numba's cache is checked against the source file of the
    cached function only: a kernel in another file that inlines this file's functions
    would keep running a stale copy (and read the pattern wrongly) after they change.

    Students of one pattern differ only in their numeric columns, so w_i' S w_i is a sum
    over pair classes (indicator x indicator, indicator x numeric j, numeric j x numeric l)
    of the pattern's class sums times the student's multipliers (1, x_j, x_j x_l), and
    w_i' bhat likewise: the selected inverse is read once per pattern, not per student.
    ``pat_kind[k, t]``: -1 for an indicator column, else the numeric column's index.
    """
    n_draws = log_s2.shape[0]
    n = student_pattern.shape[0]
    n_pat, k_nz = pat_cols.shape
    k_pairs = pair_pos.shape[1]
    n_mean = mean_mult.shape[1]
    out = np.empty((n_draws, n))
    within = np.empty((n_draws, n))
    cdf = np.empty((n_draws, n))
    sv = np.empty((n_pat, n_class))
    sm = np.empty((n_pat, n_mean))
    for d in range(n_draws):
        inv_s2 = np.exp(-log_s2[d])
        lx, _, bhat, ok = _factor_and_mean(packed, a_data, wty, inv_s2, np.exp(log_lam[d]))
        if not ok:
            raise FloatingPointError("sparse Cholesky failed in the LOO pass")
        sx = selected_inverse(packed, lx)
        sv[:] = 0.0
        sm[:] = 0.0
        for k in range(n_pat):
            for t in range(k_pairs):
                sv[k, pair_class[k, t]] += pair_coef[k, t] * sx[pair_pos[k, t]]
            for t in range(k_nz):
                kind = pat_kind[k, t]
                if kind >= -1:
                    sm[k, kind + 1] += bhat[pat_cols[k, t]]
        for i in range(n):
            k = student_pattern[i]
            v = 0.0
            for c in range(n_class):
                v += sv[k, c] * mult[i, c]
            mu = 0.0
            for c in range(n_mean):
                mu += sm[k, c] * mean_mult[i, c]
            s2 = math.exp(log_s2[d, g[i]])
            h = v / s2
            resid = y[i] - mu
            out[d, i] = -0.5 * (_LOG_2PI + log_s2[d, g[i]]) + 0.5 * math.log1p(-h)
            out[d, i] -= 0.5 * resid * resid / ((1.0 - h) * s2)
            within[d, i] = -0.5 * (_LOG_2PI + math.log(s2 + v)) - 0.5 * resid * resid / (s2 + v)
            # y_i | y_-i, theta ~ Normal(y_i - resid / (1 - h), s2 / (1 - h))
            z = resid / math.sqrt((1.0 - h) * s2)
            cdf[d, i] = 0.5 * math.erfc(-z / _SQRT2)
    return out, within, cdf


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
