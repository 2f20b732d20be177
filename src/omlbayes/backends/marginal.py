"""The collapsed Gaussian marginal likelihood and its analytic gradient, as a PyTensor Op.

For y ~ N(W b, s2 I) with b ~ N(0, diag(lam)), integrating b out gives

    ll = -n/2 log(2 pi s2) - 1/2 sum log lam - 1/2 log|M| + p/2 log s2
         - (y'y - w'bhat) / (2 s2),   M = W'W + s2 diag(1/lam),  w = W'y,  bhat = M^-1 w.

With d_j = s2 / lam_j and S = M^-1 (only its diagonal is needed):

    d ll / d log lam_j = -1/2 + s2 S_jj / (2 lam_j) + bhat_j^2 / (2 lam_j)
    d ll / d log s2    = -(n - p)/2 - 1/2 sum_j S_jj s2/lam_j + (y'y - w'bhat)/(2 s2)
                         - 1/2 sum_j bhat_j^2 / lam_j

One Cholesky factor and one triangular inverse per evaluation: O(p^3), independent of n.
Autodiff through PyTensor's Cholesky gives the same numbers at several times the cost.

Two implementations of the same arithmetic:

* ``MarginalLoglik.perform`` (via ``marginal_loglik``) is the Python/scipy reference, used by
  the default C/Python linkers and by tests.
* ``dense_marginal_loglik``, cacheable numba code (``nogil``) that the sampler's density
  (``backends/density.py``) calls, and that the PyTensor Op's numba kernel wraps. It calls
  LAPACK (dpotrf, dpotrs, dtrtri) through ``backends/lapack.py`` on a column-major copy of M.
"""

from __future__ import annotations

import ctypes
import math

import numba
import numpy as np
import pytensor.tensor as pt
from numba.extending import get_cython_function_address
from pytensor.gradient import DisconnectedType
from pytensor.graph import Apply, Op
from pytensor.link.numba.dispatch import numba_funcify
from pytensor.link.numba.dispatch.basic import numba_njit
from scipy.linalg import lapack

from omlbayes.backends import lapack as blas
from omlbayes.model.design import SufficientStats


def marginal_loglik(
    stats: SufficientStats, log_s2: float, log_lam: np.ndarray
) -> tuple[float, float, np.ndarray]:
    """Log marginal likelihood and its gradient w.r.t. log s2 and each log lam_j."""
    s2 = np.exp(log_s2)
    lam = np.exp(log_lam)
    p = lam.size
    m = stats.wtw + np.diag(s2 / lam)
    chol, info = lapack.dpotrf(m, lower=1, clean=1)
    if info != 0:
        return -np.inf, 0.0, np.zeros(p)
    bhat, _ = lapack.dpotrs(chol, stats.wty, lower=1)
    inv_chol, _ = lapack.dtrtri(chol, lower=1)
    s_diag = np.einsum("ij,ij->j", inv_chol, inv_chol)  # diag(M^-1) = col sums of L^-T L^-1
    resid = stats.yty - stats.wty @ bhat
    logdet_m = 2.0 * np.sum(np.log(np.diag(chol)))
    n = stats.n
    ll = (
        -0.5 * n * np.log(2.0 * np.pi * s2)
        - 0.5 * np.sum(log_lam)
        - 0.5 * logdet_m
        + 0.5 * p * log_s2
        - 0.5 * resid / s2
    )
    g_lam = -0.5 + 0.5 * s2 * s_diag / lam + 0.5 * bhat**2 / lam
    g_s2 = (
        -0.5 * (n - p)
        - 0.5 * np.sum(s_diag * s2 / lam)
        + 0.5 * resid / s2
        - 0.5 * np.sum(bhat**2 / lam)
    )
    return float(ll), float(g_s2), g_lam


class MarginalLoglik(Op):
    """``(log_s2, log_lam, W'W, W'y, y'y, n) -> (ll, d ll/d log_s2, d ll/d log_lam)``.

    The statistics are inputs (not constants) so a compiled model can be refitted to new
    data (``pm.Data`` + nutpie's ``with_data``), e.g. for simulation-based calibration.
    """

    __props__ = ()

    def make_node(self, log_s2, log_lam, wtw, wty, yty, n_obs):
        inputs = [
            pt.as_tensor(log_s2, dtype="float64"),
            pt.as_tensor(log_lam, dtype="float64"),
            pt.as_tensor(wtw, dtype="float64"),
            pt.as_tensor(wty, dtype="float64"),
            pt.as_tensor(yty, dtype="float64"),
            pt.as_tensor(n_obs, dtype="float64"),
        ]
        outputs = [pt.dscalar(), pt.dscalar(), pt.dvector()]
        return Apply(self, inputs, outputs)

    def perform(self, node, inputs, output_storage):
        log_s2, log_lam, wtw, wty, yty, n_obs = inputs
        stats = SufficientStats(np.asarray(wtw), np.asarray(wty), float(yty), float(n_obs))
        ll, g_s2, g_lam = marginal_loglik(stats, float(log_s2), np.asarray(log_lam))
        output_storage[0][0] = np.asarray(ll)
        output_storage[1][0] = np.asarray(g_s2)
        output_storage[2][0] = g_lam

    def connection_pattern(self, node):
        # only the parameters carry gradients; the data statistics are constants
        return [[True, True, True], [True, True, True]] + [[False, False, False]] * 4

    def pullback(self, inputs, outputs, cotangents):
        # The gradient outputs are the node's own outputs: no second evaluation.
        _, g_s2, g_lam = outputs
        data_grads = [DisconnectedType()() for _ in inputs[2:]]
        return [cotangents[0] * g_s2, cotangents[0] * g_lam, *data_grads]


# --- numba nopython kernel ---------------------------------------------------------------

_LOG_2PI = math.log(2.0 * math.pi)
_UPLO_L = ord("L")
_DIAG_N = ord("N")


def _lapack_fn(name: str, n_args: int):
    """A ctypes pointer to scipy's Cython LAPACK routine ``name`` (all arguments by pointer)."""
    addr = get_cython_function_address("scipy.linalg.cython_lapack", name)
    return ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * n_args))(addr)


# void dpotrf(char *uplo, int *n, double *a, int *lda, int *info)
_dpotrf = _lapack_fn("dpotrf", 5)
# void dpotrs(char *uplo, int *n, int *nrhs, double *a, int *lda, double *b, int *ldb, int *info)
_dpotrs = _lapack_fn("dpotrs", 8)
# void dtrtri(char *uplo, char *diag, int *n, double *a, int *lda, int *info)
_dtrtri = _lapack_fn("dtrtri", 6)


@numba.njit(cache=True, nogil=True)
def dense_marginal_loglik(log_s2, log_lam, wtw, wty, yty, n_obs):
    """The kernel above as cacheable numba code for Python callers (one residual group):
    ``(ll, d ll/d log s2 (1,), d ll/d log lam (p,))``, with ``log_s2``, ``yty`` and
    ``n_obs`` arrays of one value (the sparse kernel's signature with G = 1)."""
    p = wtw.shape[0]
    g_lam = np.zeros(p)
    g_s2 = np.zeros(1)
    s2 = math.exp(log_s2[0])
    lam = np.exp(log_lam)
    m = np.empty(p * p)  # column-major M = W'W + diag(s2 / lam), lower triangle used
    for j in range(p):
        for i in range(p):
            m[j * p + i] = wtw[i, j]
        m[j * p + j] += s2 / lam[j]
    if blas.dpotrf(_UPLO_L, p, m, 0, p) != 0:
        return -np.inf, g_s2, g_lam
    logdet_m = 0.0
    for j in range(p):
        logdet_m += 2.0 * math.log(m[j * p + j])
    bhat = np.ascontiguousarray(wty).copy()
    if blas.dpotrs(_UPLO_L, p, 1, m, 0, p, bhat, 0, p) != 0:
        return -np.inf, g_s2, g_lam
    if blas.dtrtri(_UPLO_L, _DIAG_N, p, m, 0, p) != 0:
        return -np.inf, g_s2, g_lam
    resid = yty[0]
    sum_log_lam = 0.0
    sum_s = 0.0
    sum_b = 0.0
    for j in range(p):
        s_jj = 0.0  # diag(M^-1)_j = sum_i (L^-1)_ij^2, column j of L^-1 from row j down
        for i in range(j, p):
            s_jj += m[j * p + i] * m[j * p + i]
        resid -= wty[j] * bhat[j]
        sum_log_lam += log_lam[j]
        b2_over_lam = bhat[j] * bhat[j] / lam[j]
        s_over_lam = s2 * s_jj / lam[j]
        sum_s += s_over_lam
        sum_b += b2_over_lam
        g_lam[j] = -0.5 + 0.5 * s_over_lam + 0.5 * b2_over_lam
    n = n_obs[0]
    ll = (
        -0.5 * n * (_LOG_2PI + log_s2[0])
        - 0.5 * sum_log_lam
        - 0.5 * logdet_m
        + 0.5 * p * log_s2[0]
        - 0.5 * resid / s2
    )
    g_s2[0] = -0.5 * (n - p) - 0.5 * sum_s + 0.5 * resid / s2 - 0.5 * sum_b
    return ll, g_s2, g_lam


@numba_funcify.register(MarginalLoglik)
def _numba_funcify_marginal_loglik(op, node=None, **kwargs):
    # PyTensor's numba backend wants 0-d arrays for the scalars; the arithmetic is the
    # cacheable kernel's (one implementation)
    @numba_njit
    def marginal_loglik_numba(log_s2, log_lam, wtw, wty, yty, n_obs):
        ll, g_s2, g_lam = dense_marginal_loglik(
            np.full(1, log_s2.item()), log_lam, wtw, wty, np.full(1, yty.item()),
            np.full(1, n_obs.item()),
        )  # fmt: skip
        return np.asarray(ll), np.asarray(g_s2[0]), g_lam

    return marginal_loglik_numba
