"""Log density of the graded-response model with the linear coefficients integrated out.

Model (probit link, ``K`` answer categories, ``J`` items, student ``i``; z_i is the
student's latent value standardized over all analysed students, z = (theta - m) / s):

    P(y_ij <= k | theta_i) = Phi(c_jk - a_j z_i)            (cumulative probit)
    theta_i = W_i b + e_i,   e_i ~ N(0, 1),   b ~ N(0, diag(lam))

Given theta, b is the coefficient vector of a Gaussian linear model with residual
variance 1, so it integrates out exactly (the collapsed kernel with y = theta):

    log p(theta | lam) = -n/2 log 2pi - 1/2 sum log lam - 1/2 log|M|
                         - 1/2 (theta'theta - (W'theta)' bhat),
    M = W'W + diag(1/lam),   bhat = M^-1 W'theta,

    d/d theta      = -(theta - W bhat)
    d/d log lam_j  = -1/2 + (M^-1)_jj / (2 lam_j) + bhat_j^2 / (2 lam_j).

W'theta and theta'theta are one sparse pass per evaluation (O(nnz)); the Cholesky factor
of M is O(p^3), independent of the number of students. The item part is one pass over
the answered items (missing answers simply contribute nothing; no imputation).

Everything runs in one numba nopython function (``graded_logp``) that releases the GIL,
so nutpie's chain threads run in parallel. The PyTensor Op ``GradedLogp`` wraps it for
PyMC, with the analytic gradients as extra outputs (no second evaluation in the
backward pass). LAPACK (dpotrf, dpotrs, dtrtri) is called through scipy's Cython
exports; the C-order arrays handed to Fortran are seen transposed, harmless for the
symmetric M and accounted for when reading the triangular factor back.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedType
from pytensor.graph import Apply, Op
from pytensor.link.numba.dispatch import numba_funcify

from omlbayes.backends.marginal import _DIAG_N, _UPLO_L, _dpotrf, _dpotrs, _dtrtri

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_LOG_2PI = math.log(2.0 * math.pi)
# The running product of probabilities is logged once it falls below _PRODUCT_FLOOR;
# a probability below _SMALL_PROB is logged directly, so the product stays >= 1e-300.
_PRODUCT_FLOOR = 1e-280
_SMALL_PROB = 1e-20


@numba.njit(nogil=True, cache=False)
def item_logp(theta, cut, loading, obs_student, obs_item, obs_cat):
    """Sum of log P(answer) over the answered items, and its gradients.

    ``cut`` is (items x categories-1), ordered within each row; ``obs_cat`` is 0-based.
    Returns (logp, d/d theta, d/d cut, d/d loading); logp is -inf when a probability
    underflows (the sampler then rejects the point). One fused pass: the end categories
    need one tail probability, the middle ones a difference taken in the tail where it
    does not cancel; the probabilities are multiplied and the log taken only when the
    product nears underflow (one log per many answers instead of one each).
    """
    n_cut = cut.shape[1]
    g_theta = np.zeros(theta.shape[0])
    g_cut = np.zeros(cut.shape)
    g_load = np.zeros(loading.shape[0])
    total = 0.0
    product = 1.0
    for o in range(obs_student.shape[0]):
        i = obs_student[o]
        j = obs_item[o]
        k = obs_cat[o]
        zi = theta[i]
        eta = loading[j] * zi
        d_u = 0.0  # densities at the upper and lower cut
        d_l = 0.0
        if k == 0:
            u = cut[j, 0] - eta
            prob = 0.5 * math.erfc(-u * _SQRT_HALF)
            d_u = _INV_SQRT_2PI * math.exp(-0.5 * u * u)
        elif k == n_cut:
            low = cut[j, k - 1] - eta
            prob = 0.5 * math.erfc(low * _SQRT_HALF)
            d_l = _INV_SQRT_2PI * math.exp(-0.5 * low * low)
        else:
            u = cut[j, k] - eta
            low = cut[j, k - 1] - eta
            if low > 0.0:  # both in the upper tail: difference of the complements
                prob = 0.5 * (math.erfc(low * _SQRT_HALF) - math.erfc(u * _SQRT_HALF))
            else:
                prob = 0.5 * (math.erfc(-u * _SQRT_HALF) - math.erfc(-low * _SQRT_HALF))
            d_u = _INV_SQRT_2PI * math.exp(-0.5 * u * u)
            d_l = _INV_SQRT_2PI * math.exp(-0.5 * low * low)
        if not prob > 0.0:
            return -np.inf, g_theta, g_cut, g_load
        d_u /= prob
        d_l /= prob
        if k < n_cut:
            g_cut[j, k] += d_u
        if k > 0:
            g_cut[j, k - 1] -= d_l
        d_eta = d_l - d_u
        g_theta[i] += d_eta * loading[j]
        g_load[j] += d_eta * zi
        if prob < _SMALL_PROB:  # logged on its own: the product must never underflow
            total += math.log(prob)
        else:
            product *= prob
            if product < _PRODUCT_FLOOR:
                total += math.log(product)
                product = 1.0
    return total + math.log(product), g_theta, g_cut, g_load


@numba.njit(nogil=True, cache=False)
def latent_logp(theta, log_lam, w_indptr, w_indices, w_data, shift, wtw):
    """log p(theta | lam) with b integrated out, and its gradients.

    The design is ``W - 1 shift'`` (``shift``: column means to centre by, 0 for the
    intercept) without forming it: W'theta and W bhat are corrected by ``shift``; ``wtw``
    is the cross product of the shifted design. Returns (logp, d/d theta, d/d log lam);
    logp is -inf if M is not positive definite.
    """
    n = theta.shape[0]
    p = wtw.shape[0]
    lam = np.exp(log_lam)
    g_theta = np.zeros(n)
    g_lam = np.zeros(p)
    wty = np.zeros(p)
    yty = 0.0
    sum_theta = 0.0
    for i in range(n):
        yty += theta[i] * theta[i]
        sum_theta += theta[i]
        for idx in range(w_indptr[i], w_indptr[i + 1]):
            wty[w_indices[idx]] += w_data[idx] * theta[i]
    for j in range(p):
        wty[j] -= shift[j] * sum_theta
    m = np.ascontiguousarray(wtw).copy()
    for j in range(p):
        m[j, j] += 1.0 / lam[j]
    uplo = np.full(1, _UPLO_L, dtype=np.uint8)
    diag = np.full(1, _DIAG_N, dtype=np.uint8)
    ints = np.full(4, p, dtype=np.int32)  # [n, lda, nrhs, info]
    ints[2] = 1
    ints[3] = 0
    n_ = ints[0:1]
    nrhs = ints[2:3]
    info = ints[3:4]
    _dpotrf(uplo.ctypes, n_.ctypes, m.ctypes, n_.ctypes, info.ctypes)
    if info[0] != 0:
        return -np.inf, g_theta, g_lam
    logdet_m = 0.0
    for j in range(p):
        logdet_m += math.log(m[j, j])
    logdet_m *= 2.0
    bhat = wty.copy()
    _dpotrs(
        uplo.ctypes,
        n_.ctypes,
        nrhs.ctypes,
        m.ctypes,
        n_.ctypes,
        bhat.ctypes,
        n_.ctypes,
        info.ctypes,
    )
    if info[0] != 0:
        return -np.inf, g_theta, g_lam
    _dtrtri(uplo.ctypes, diag.ctypes, n_.ctypes, m.ctypes, n_.ctypes, info.ctypes)
    if info[0] != 0:
        return -np.inf, g_theta, g_lam
    resid = yty
    sum_log_lam = 0.0
    for j in range(p):
        s_jj = 0.0  # (M^-1)_jj = sum_i (L^-1)_ij^2; C row j holds (L^-1)[j:, j]
        for i in range(j, p):
            s_jj += m[j, i] * m[j, i]
        resid -= wty[j] * bhat[j]
        sum_log_lam += log_lam[j]
        g_lam[j] = -0.5 + 0.5 * s_jj / lam[j] + 0.5 * bhat[j] * bhat[j] / lam[j]
    logp = -0.5 * n * _LOG_2PI - 0.5 * sum_log_lam - 0.5 * logdet_m - 0.5 * resid
    shift_b = 0.0
    for j in range(p):
        shift_b += shift[j] * bhat[j]
    for i in range(n):
        fitted = -shift_b
        for idx in range(w_indptr[i], w_indptr[i + 1]):
            fitted += w_data[idx] * bhat[w_indices[idx]]
        g_theta[i] = fitted - theta[i]
    return logp, g_theta, g_lam


@numba.njit(nogil=True, cache=False)
def graded_logp(
    theta,
    z,
    cut,
    loading,
    log_lam,
    w_indptr,
    w_indices,
    w_data,
    shift,
    wtw,
    obs_student,
    obs_item,
    obs_cat,
):
    """Joint log density: the items given ``z`` plus the latent values ``theta`` (b out).

    ``z`` is the standardized latent (a function of theta computed in the graph), so the
    item parameters are per SD of the latent trait; gradients w.r.t. theta and z are
    returned separately and PyTensor's chain rule joins them.
    """
    lp_items, g_z, g_cut, g_load = item_logp(z, cut, loading, obs_student, obs_item, obs_cat)
    lp_latent, g_theta, g_lam = latent_logp(theta, log_lam, w_indptr, w_indices, w_data, shift, wtw)
    return np.asarray(lp_items + lp_latent), g_theta, g_z, g_cut, g_load, g_lam


N_PARAMS = 5  # theta, z, cut, loading, log_lam


class GradedLogp(Op):
    """``(theta, z, cut, loading, log_lam, *data) -> (logp, and its gradient w.r.t. each)``.

    The data (CSR arrays of W, W'W, the answered items) are inputs, not constants, so large
    arrays are never frozen into compiled code and a compiled model can take new data.
    """

    __props__ = ()

    def make_node(self, theta, z, cut, loading, log_lam, *data):
        params = [
            pt.as_tensor(theta, dtype="float64"),
            pt.as_tensor(z, dtype="float64"),
            pt.as_tensor(cut, dtype="float64"),
            pt.as_tensor(loading, dtype="float64"),
            pt.as_tensor(log_lam, dtype="float64"),
        ]
        data = [pt.as_tensor(d) for d in data]
        outputs = [
            pt.dscalar(),
            pt.dvector(),
            pt.dvector(),
            pt.dmatrix(),
            pt.dvector(),
            pt.dvector(),
        ]
        return Apply(self, params + data, outputs)

    def perform(self, node, inputs, output_storage):
        args = [np.ascontiguousarray(x) for x in inputs]
        for storage, value in zip(output_storage, graded_logp(*args), strict=True):
            storage[0] = np.asarray(value)

    def connection_pattern(self, node):
        n_out = N_PARAMS + 1
        n_data = len(node.inputs) - N_PARAMS
        return [[True] * n_out] * N_PARAMS + [[False] * n_out] * n_data

    def pullback(self, inputs, outputs, cotangents):
        # The gradient outputs are the node's own outputs: no second evaluation.
        data_grads = [DisconnectedType()() for _ in inputs[N_PARAMS:]]
        return [cotangents[0] * g for g in outputs[1:]] + data_grads


@numba_funcify.register(GradedLogp)
def _numba_funcify_graded(op, node=None, **kwargs):
    # Embeds raw LAPACK addresses: PyTensor gets no cache key and never caches it.
    return graded_logp
