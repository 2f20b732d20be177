"""The sparse collapsed kernel: same numbers as the dense ones, exact draws, kernel choice."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
import scipy.sparse as sp

from omlbayes.backends import collapsed, sparse
from omlbayes.backends.marginal import marginal_loglik
from omlbayes.backends.sparse import (
    SparseMarginalLoglik,
    SparsePattern,
    _assemble,
    _factor,
    _unpack,
    dense_grouped_loglik,
    selected_inverse,
    sparse_conditional_draws,
    sparse_marginal_loglik,
)
from omlbayes.errors import SpecError
from omlbayes.model.design import GroupedStats, SufficientStats, build_layout, grouped_stats
from omlbayes.model.spec import load_spec


def _design(kind: str, seed: int = 0, n: int = 1500):
    """A random-intercept design matrix: nested (schools in districts) or crossed."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    if kind == "nested":
        n_dist, n_school = 9, 60
        dist_of_school = rng.integers(0, n_dist, n_school)
        school = rng.integers(0, n_school, n)
        factors = [dist_of_school[school], school]
        sizes = [n_dist, n_school]
    else:  # crossed: schools x waves, plus the school x wave cells
        n_school, n_wave = 40, 5
        school, wave = rng.integers(0, n_school, n), rng.integers(0, n_wave, n)
        factors = [school, wave, school * n_wave + wave]
        sizes = [n_school, n_wave, n_school * n_wave]
    rows = [np.arange(n), np.arange(n)]
    cols = [np.zeros(n, dtype=int), np.ones(n, dtype=int)]
    vals = [np.ones(n), x]
    start = 2
    blocks = [np.array([0, 1])]
    for f, size in zip(factors, sizes, strict=True):
        rows.append(np.arange(n))
        cols.append(start + f)
        vals.append(np.ones(n))
        blocks.append(np.arange(start, start + size))
        start += size
    w = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, start)
    )
    y = w @ rng.normal(scale=0.5, size=start) + rng.normal(size=n)
    return w, y, blocks


def _grouped(w, y, group):
    ids = np.unique(group)
    mats = [sp.csc_matrix(w[group == g].T @ w[group == g]) for g in ids]
    wty = np.stack([w[group == g].T @ y[group == g] for g in ids])
    yty = np.array([y[group == g] @ y[group == g] for g in ids])
    n = np.array([np.sum(group == g) for g in ids], dtype=float)
    return GroupedStats(tuple(mats), wty, yty, n, tuple(map(str, ids)))


def _sparse(stats: GroupedStats, blocks, log_s2, log_lam):
    pattern = SparsePattern.build(stats.pattern(), blocks)
    a = np.stack([pattern.values(m) for m in stats.wtw])
    return sparse_marginal_loglik(log_s2, log_lam, a, stats.wty, stats.yty, stats.n, pattern.packed)


@pytest.mark.parametrize("kind", ["nested", "crossed"])
def test_sparse_matches_dense_kernel_one_residual_sd(kind):
    w, y, blocks = _design(kind)
    stats = _grouped(w, y, np.zeros(len(y), dtype=int))
    rng = np.random.default_rng(1)
    dense = stats.pooled()
    for _ in range(3):
        log_s2 = rng.normal(scale=0.5, size=1)
        log_lam = rng.normal(scale=1.0, size=w.shape[1])
        ll, g_s2, g_lam = _sparse(stats, blocks, log_s2, log_lam)
        ref_ll, ref_g_s2, ref_g_lam = marginal_loglik(dense, float(log_s2[0]), log_lam)
        assert float(ll) == pytest.approx(ref_ll, rel=1e-10)
        assert g_s2[0] == pytest.approx(ref_g_s2, rel=1e-8, abs=1e-8)
        np.testing.assert_allclose(g_lam, ref_g_lam, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("kind", ["nested", "crossed"])
def test_sparse_matches_dense_heteroscedastic(kind):
    w, y, blocks = _design(kind, seed=2)
    group = np.random.default_rng(3).integers(0, 3, len(y))
    stats = _grouped(w, y, group)
    log_s2 = np.array([-0.4, 0.1, 0.6])
    log_lam = np.random.default_rng(4).normal(size=w.shape[1])
    ll, g_s2, g_lam = _sparse(stats, blocks, log_s2, log_lam)
    dense = [m.toarray() for m in stats.wtw]
    ref = dense_grouped_loglik(dense, stats.wty, stats.yty, stats.n, log_s2, log_lam)
    assert float(ll) == pytest.approx(ref[0], rel=1e-10)
    np.testing.assert_allclose(g_s2, ref[1], rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(g_lam, ref[2], rtol=1e-8, atol=1e-8)
    # and against the plain multivariate normal density of y
    cov = np.diag(np.exp(log_s2)[group]) + (w @ np.diag(np.exp(log_lam)) @ w.T.toarray())
    sign, logdet = np.linalg.slogdet(cov)
    direct = -0.5 * (len(y) * np.log(2 * np.pi) + logdet + y @ np.linalg.solve(cov, y))
    assert float(ll) == pytest.approx(direct, rel=1e-9)


def test_sparse_gradient_matches_finite_differences():
    w, y, blocks = _design("nested", seed=5, n=400)
    stats = _grouped(w, y, np.arange(len(y)) % 2)
    pattern = SparsePattern.build(stats.pattern(), blocks)
    a = np.stack([pattern.values(m) for m in stats.wtw])
    rng = np.random.default_rng(6)
    log_s2, log_lam = rng.normal(scale=0.3, size=2), rng.normal(size=w.shape[1])

    def f(s, lam):
        return float(
            sparse_marginal_loglik(s, lam, a, stats.wty, stats.yty, stats.n, pattern.packed)[0]
        )

    _, g_s2, g_lam = sparse_marginal_loglik(
        log_s2, log_lam, a, stats.wty, stats.yty, stats.n, pattern.packed
    )
    h = 1e-5
    fd_s2 = [(f(log_s2 + h * e, log_lam) - f(log_s2 - h * e, log_lam)) / (2 * h) for e in np.eye(2)]
    pick = rng.choice(w.shape[1], 12, replace=False)
    fd_lam = [
        (f(log_s2, log_lam + h * e) - f(log_s2, log_lam - h * e)) / (2 * h)
        for e in np.eye(w.shape[1])[pick]
    ]
    np.testing.assert_allclose(g_s2, fd_s2, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(g_lam[pick], fd_lam, rtol=1e-6, atol=1e-6)


def test_ordering_reduces_fill_and_values_check_the_pattern():
    w, y, blocks = _design("nested", seed=7)
    stats = _grouped(w, y, np.zeros(len(y), dtype=int))
    pattern = SparsePattern.build(stats.pattern(), blocks)
    # the natural order puts the dense part (x, intercept) first: it fills L completely
    assert pattern.candidates["natural"] == pytest.approx(
        sum(k**2 for k in range(1, pattern.p + 1))
    )
    assert pattern.factor_flops < pattern.candidates["natural"] / 20
    # two schools never share a student: their cross entry is outside the pattern
    first_school = 2 + 9
    i, j = first_school, first_school + 1
    assert stats.wtw[0][i, j] == 0
    outside = sp.csc_matrix(([1.0, 1.0], ([i, j], [j, i])), shape=(pattern.p, pattern.p))
    with pytest.raises(ValueError, match="outside the sparse pattern"):
        pattern.values(outside)


def test_conditional_draws_are_exact():
    """Identity noise gives offsets O with O'O = P^-1 exactly; zero noise gives the mean."""
    w, y, blocks = _design("crossed", seed=8, n=600)
    stats = _grouped(w, y, np.arange(len(y)) % 3)
    p = w.shape[1]
    pattern = SparsePattern.build(stats.pattern(), blocks)
    a = np.stack([pattern.values(m) for m in stats.wtw])
    log_s2 = np.array([[0.2, -0.3, 0.0]])
    log_lam = np.random.default_rng(9).normal(size=(1, p))
    prec = sum(m.toarray() * np.exp(-s) for m, s in zip(stats.wtw, log_s2[0], strict=True))
    prec = prec + np.diag(np.exp(-log_lam[0]))
    mean = np.linalg.solve(prec, (stats.wty * np.exp(-log_s2[0])[:, None]).sum(axis=0))
    zero = sparse_conditional_draws(log_s2, log_lam, a, stats.wty, pattern.packed, np.zeros((1, p)))
    np.testing.assert_allclose(zero[0], mean, rtol=1e-9, atol=1e-10)
    eye = np.eye(p)
    draws = sparse_conditional_draws(
        np.repeat(log_s2, p, axis=0),
        np.repeat(log_lam, p, axis=0),
        a,
        stats.wty,
        pattern.packed,
        eye,
    )
    offsets = draws - mean
    np.testing.assert_allclose(offsets.T @ offsets, np.linalg.inv(prec), rtol=1e-7, atol=1e-10)


def test_numba_op_runs_without_object_mode():
    w, y, blocks = _design("crossed", seed=10, n=300)
    stats = _grouped(w, y, np.zeros(len(y), dtype=int))
    pattern = SparsePattern.build(stats.pattern(), blocks)
    a = np.stack([pattern.values(m) for m in stats.wtw])
    log_s2, log_lam = pt.dvector("log_s2"), pt.dvector("log_lam")
    data = [pytensor.shared(v) for v in (a, stats.wty, stats.yty, stats.n, pattern.packed)]
    outs = SparseMarginalLoglik()(log_s2, log_lam, *data)
    grad = pytensor.grad(outs[0], [log_s2, log_lam])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*object mode.*")
        fn = pytensor.function([log_s2, log_lam], [outs[0], *grad], mode="NUMBA")
    point = (np.array([0.1]), np.zeros(w.shape[1]))
    ll, g_s2, g_lam = fn(*point)
    ref = marginal_loglik(stats.pooled(), 0.1, point[1])
    assert float(ll) == pytest.approx(ref[0], rel=1e-10)
    assert g_s2[0] == pytest.approx(ref[1], rel=1e-8)
    np.testing.assert_allclose(g_lam, ref[2], rtol=1e-8, atol=1e-10)


# --- kernel choice -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def survey():
    from omlbayes.data.scale import build_index
    from omlbayes.simulate.survey import simulate_survey

    frame = build_index(simulate_survey(n_students=3000, n_schools=60, seed=3).frame).frame
    return frame.assign(age_c=frame["age"] - frame["age"].mean())


def _spec(**sampler):
    spec = load_spec("flagship")
    return spec.with_sampler(**sampler)


def test_kernel_choice_is_recorded_and_forced(survey):
    spec = dataclasses.replace(_spec(), school_by_wave=True)
    layout = build_layout(survey, spec)
    stats = grouped_stats(survey, layout, spec.response)
    auto = collapsed.choose_kernel(stats, layout, spec)
    assert auto.kernel in ("dense", "sparse")
    assert auto.facts["sparse_s_per_gradient"] > 0
    # the dense kernel is timed too, unless the sparse one is clearly (10x) faster
    clearly_sparse = 10 * auto.facts["sparse_s_per_gradient"] < auto.facts["dense_s_predicted"]
    assert clearly_sparse or auto.facts["dense_s_per_gradient"] > 0
    # decided by predicted cost (not by a timing), so the same data always get one kernel
    dense_wins = (
        auto.facts["dense_s_predicted"] < collapsed.SPARSE_MARGIN * auto.facts["sparse_s_predicted"]
    )
    assert auto.kernel == ("dense" if dense_wins else "sparse")
    assert collapsed.choose_kernel(stats, layout, spec).kernel == auto.kernel
    assert auto.facts["sparse_flops"] < auto.facts["dense_flops"]
    forced = collapsed.choose_kernel(stats, layout, _spec(kernel="sparse"))
    assert forced.kernel == "sparse" and forced.reason == "asked for"


def test_small_models_stay_dense(survey):
    spec = dataclasses.replace(_spec(), group=(("school_id",),))
    layout = build_layout(survey, spec)
    choice = collapsed.choose_kernel(grouped_stats(survey, layout, spec.response), layout, spec)
    assert layout.n_coef <= collapsed.DENSE_ALWAYS_P
    assert choice.kernel == "dense"


def test_a_fit_that_cannot_finish_is_refused(survey, monkeypatch):
    spec = _spec()
    layout = build_layout(survey, spec)
    stats = grouped_stats(survey, layout, spec.response)
    monkeypatch.setattr(collapsed, "MAX_EXPECTED_SAMPLING_S", 1e-6)
    with pytest.raises(SpecError, match=r"would take about .* h to sample .*kernel = "):
        collapsed.choose_kernel(stats, layout, spec)
    # forcing a kernel runs it anyway, with the estimate recorded
    forced = collapsed.choose_kernel(stats, layout, _spec(kernel="sparse"))
    assert forced.facts["expected_sampling_s"] > 0


def test_dense_kernel_refuses_residual_groups(survey):
    spec = dataclasses.replace(_spec(kernel="dense"), residual_sd_by="school_type")
    layout = build_layout(survey, spec)
    stats = grouped_stats(survey, layout, spec.response, by="school_type")
    assert stats.n_groups == survey["school_type"].nunique()
    assert stats.pooled().n == len(survey)
    with pytest.raises(SpecError, match="residual_sd_by needs kernel"):
        collapsed.choose_kernel(stats, layout, spec)


def test_chunked_statistics_add_up(survey):
    spec = _spec()
    layout = build_layout(survey, spec)
    whole = grouped_stats(survey, layout, spec.response, by="gender", chunk_rows=10**6)
    chunked = grouped_stats(survey, layout, spec.response, by="gender", chunk_rows=700)
    for a, b in zip(whole.wtw, chunked.wtw, strict=True):
        assert abs(a - b).max() < 1e-9
    np.testing.assert_allclose(whole.wty, chunked.wty)
    np.testing.assert_allclose(whole.n, chunked.n)
    assert whole.n.sum() == len(survey)


def test_sufficient_stats_convert_both_ways():
    w, y, _ = _design("nested", seed=11, n=200)
    dense = SufficientStats((w.T @ w).toarray(), w.T @ y, float(y @ y), 200)
    back = GroupedStats.from_pooled(dense).pooled()
    np.testing.assert_array_equal(back.wtw, dense.wtw)
    assert back.n == 200 and back.yty == dense.yty


def _check_against_dense(pattern, stats, log_s2, log_lam, rtol=1e-8):
    """ll, gradient, factor and selected inverse of the sparse kernel against dense algebra."""
    p = pattern.p
    a = np.stack([pattern.values(m) for m in stats.wtw])
    ll, g_s2, g_lam = sparse_marginal_loglik(
        log_s2, log_lam, a, stats.wty, stats.yty, stats.n, pattern.packed
    )
    dense = [m.toarray() for m in stats.wtw]
    ref = dense_grouped_loglik(dense, stats.wty, stats.yty, stats.n, log_s2, log_lam)
    assert float(ll) == pytest.approx(ref[0], rel=1e-10)
    scale = max(np.abs(ref[2]).max(), 1.0)
    np.testing.assert_allclose(g_s2, ref[1], rtol=rtol, atol=rtol * np.abs(ref[1]).max())
    np.testing.assert_allclose(g_lam, ref[2], rtol=rtol, atol=rtol * scale)
    # the factor and the selected inverse on every stored entry (explicit zeros included)
    prec = sum(m * np.exp(-s) for m, s in zip(dense, log_s2, strict=True))
    prec = prec + np.diag(np.exp(-log_lam))
    _, perm, ap, ai = _unpack(pattern.packed)[:4]
    px = _assemble(p, ap, ai, perm, a, np.exp(-log_s2), np.exp(log_lam))
    lx, ok = _factor(pattern.packed, px)
    assert ok
    rows, cols, pos = pattern.factor_entries()
    permuted = prec[np.ix_(perm, perm)]
    chol = np.linalg.cholesky(permuted)
    big = np.abs(chol).max()
    np.testing.assert_allclose(lx[pos], chol[rows, cols], rtol=1e-7, atol=1e-12 * big)
    sx = selected_inverse(pattern.packed, lx)
    inv = np.linalg.inv(permuted)
    np.testing.assert_allclose(sx[pos], inv[rows, cols], rtol=1e-7, atol=1e-11 * np.abs(inv).max())
    # every entry of the pattern of L is stored (and each stored entry once)
    assert np.unique(pos).size == pos.size
    true = np.abs(chol) > 1e-14 * big
    stored = np.zeros((p, p), dtype=bool)
    stored[rows, cols] = True
    assert not np.any(true & ~stored)
    return a


@pytest.mark.parametrize("tail", ["chosen", "widest"])
def test_supernodal_kernel_matches_dense_with_residual_groups(survey, tail, monkeypatch):
    """The survey design (school x wave, cross cells) has a dense trailing block D, lead
    supernodes with rows in D grouped for D's products, and lead rows updated entry by
    entry; with one residual SD per school type its log-likelihood, gradient, factor and
    selected inverse equal dense algebra. "widest" forces the widest candidate D, whose
    columns of L are not all full (explicit zeros inside D)."""
    spec = dataclasses.replace(_spec(), school_by_wave=True)
    layout = build_layout(survey, spec)
    stats = grouped_stats(survey, layout, spec.response, by="school_type")
    blocks = collapsed._term_blocks(layout)
    pattern = SparsePattern.build(stats.pattern(), blocks)
    p = layout.n_coef
    if tail == "widest":
        chosen = pattern.tail_start
        seen = []
        original = sparse._tail_candidates
        monkeypatch.setattr(
            sparse, "_tail_candidates", lambda p, lp: seen.append(original(p, lp)) or seen[-1]
        )
        SparsePattern.build(stats.pattern(), blocks)
        monkeypatch.setattr(sparse, "_tail_candidates", lambda p, lp: [min(seen[-1])])
        pattern = SparsePattern.build(stats.pattern(), blocks)
        assert pattern.tail_start <= chosen
    # the paths are really taken: a wide D, groups, lead supernodes whose updates reach
    # other lead supernodes, and (as chosen) lead supernodes of several columns
    first, srp, rl, chp = (_unpack(pattern.packed)[k] for k in (4, 6, 10, 11))
    assert p - pattern.tail_start >= 20 and pattern.n_groups >= 1
    assert rl.max() > 0 and chp[-1] > 0
    if tail == "chosen":
        assert pattern.n_groups >= 2 and np.diff(first)[:-1].max() > 1
    assert pattern.predicted_s > 0
    rng = np.random.default_rng(12)
    log_s2 = rng.normal(scale=0.3, size=stats.n_groups)
    log_lam = rng.normal(scale=1.0, size=p)
    a = _check_against_dense(pattern, stats, log_s2, log_lam)
    # a matrix that is not positive definite gives -inf, not an exception
    bad = sparse_marginal_loglik(log_s2, log_lam, -a, stats.wty, stats.yty, stats.n, pattern.packed)
    assert float(bad[0]) == -np.inf


def _supernodal_design(seed: int):
    """A small design whose factor has every kind of supernode: crossed groupings of
    different sizes (wide chains, single columns, columns merged with explicit zeros) and a
    few common columns (a dense trailing block)."""
    rng = np.random.default_rng(seed)
    n = 900
    sizes = (60, 12, 7, 30)
    codes = [rng.integers(0, k, n) for k in sizes]
    codes.append(codes[0] * 7 + codes[2])  # a nested cross cell
    sizes = (*sizes, 60 * 7)
    x = rng.normal(size=(n, 3))
    rows, cols, vals = [], [], []
    for j in range(3):
        rows.append(np.arange(n))
        cols.append(np.full(n, j))
        vals.append(x[:, j])
    start, blocks = 3, [np.arange(3)]
    for c, k in zip(codes, sizes, strict=True):
        rows.append(np.arange(n))
        cols.append(start + c)
        vals.append(np.ones(n))
        blocks.append(np.arange(start, start + k))
        start += k
    w = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, start)
    )
    used = np.flatnonzero(np.asarray(w.sum(axis=0)).ravel() != 0)  # drop empty cells
    remap = np.full(start, -1)
    remap[used] = np.arange(used.size)
    w = w[:, used]
    blocks = [remap[b][remap[b] >= 0] for b in blocks]
    y = w @ rng.normal(scale=0.5, size=w.shape[1]) + rng.normal(size=n)
    return w, y, blocks


@pytest.mark.parametrize("structure", ["chosen", "merged"])
@pytest.mark.parametrize("variances", ["realistic", "extreme"])
def test_supernodal_kernel_matches_dense_on_random_pattern(variances, structure, monkeypatch):
    """A random crossed design: ll, gradient, factor and selected inverse equal dense numpy
    algebra, also where P is badly scaled (prior variances from 1e-8 to 4), and repeated
    calls are bit-identical. "merged" makes every supernode absorb its children (wide
    panels with explicit zeros) instead of the cost model's choice."""
    if structure == "merged":
        original = sparse._absorb_gain
        monkeypatch.setattr(
            sparse,
            "_absorb_gain",
            lambda n, k, d_node, *rest: -1.0 if n != d_node else original(n, k, d_node, *rest),
        )
        monkeypatch.setattr(sparse, "_ANALYSED", {})  # analyse afresh, not from the cache
    w, y, blocks = _supernodal_design(13)
    stats = _grouped(w, y, np.arange(len(y)) % 3)
    pattern = SparsePattern.build(stats.pattern(), blocks)
    widths = np.diff(_unpack(pattern.packed)[4])
    assert widths[-1] >= 3 and (widths[:-1] == 1).any()
    if structure == "merged":
        assert widths[:-1].max() > 5 and pattern.nnz_panels > pattern.nnz_factor
    rng = np.random.default_rng(14)
    log_s2 = np.log(0.9) + rng.normal(scale=0.1, size=3)
    log_lam = np.zeros(w.shape[1])
    for b in blocks[1:]:
        if variances == "realistic":
            log_lam[b] = rng.uniform(np.log(1e-6), np.log(0.25))
        else:
            log_lam[b] = rng.choice(np.log([1e-8, 1e-6, 0.25, 4.0]), size=b.size)
    a = _check_against_dense(pattern, stats, log_s2, log_lam, rtol=1e-7)
    args = (log_s2, log_lam, a, stats.wty, stats.yty, stats.n, pattern.packed)
    first, again = sparse_marginal_loglik(*args), sparse_marginal_loglik(*args)
    for u, v in zip(first, again, strict=True):
        assert np.array_equal(u, v)
