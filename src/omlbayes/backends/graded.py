"""The graded-response measurement model: six ordinal items of one latent relation trait.

    P(item_j <= k | theta_i) = Phi(c_jk - a_j z_i)              cumulative probit
    z_i = (theta_i - m) / s     m, s: mean and SD of theta over all analysed students
    theta_i = W_i b + e_i,   e_i ~ N(0, 1)                       the spec's terms

Probit, not logit: the latent regression has Gaussian errors, so with a probit link each
answer is the cut of a Gaussian latent response a_j z + N(0, 1); that is the simulator's
data-generating process and gives the usual latent-response reliability.

Identification: the scale of theta by Var(e) = 1; the items see the latent only through
its standardized values z, so cutpoints c_jk and loadings a_j > 0 are all free and are
per SD of the latent trait over the analysed students (the scale the effects are
reported on). The same likelihood as Phi(c'_jk - a'_j theta_i) with c' = c + a m / s,
a' = a / s; writing it on z removes the collective location and scale directions that
otherwise couple every theta_i with the item parameters and slow NUTS down tenfold.
With that, the location of theta is not seen by the items at all: it is a gauge, set
by the Intercept of a design whose other columns are centred (so the Intercept is the
mean of theta) with prior N(0, 1/n); the identified posterior does not depend on it.

Route (exact): NUTS samples theta (all students), the item parameters and the group SDs;
b (common effects and every group cell) is integrated out exactly given theta by the
collapsed Gaussian kernel (``graded_kernel``), and drawn afterwards from its exact
conditional N(M^-1 W'theta, M^-1), one draw per posterior draw. Students who skipped an
item contribute only the items they answered (no imputation); the analysed students are
the index model's (the min-items rule).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import scipy.sparse as sp
import xarray as xr
from scipy.linalg import lapack
from scipy.stats import norm
from threadpoolctl import threadpool_limits

from omlbayes.backends.collapsed import _fixed_prior_variances
from omlbayes.backends.graded_kernel import GradedLogp
from omlbayes.backends.sampling import Plan, derived_seed, sample_nutpie
from omlbayes.constants import ITEM_MAX, ITEM_MIN
from omlbayes.errors import SpecError
from omlbayes.model.design import DesignLayout, design_matrix
from omlbayes.model.spec import ModelSpec

N_CATEGORIES = ITEM_MAX - ITEM_MIN + 1
# Posterior draws of theta kept in posterior.nc for this many students (seeded choice), so
# the diagnostics gate also covers latent values without storing 40k x draws numbers.
THETA_KEPT = 100
TARGET_ACCEPT = 0.8
ADAPTATION = "diag"


@dataclass(frozen=True)
class MeasurementSettings:
    """The ``[measurement]`` section of a graded spec."""

    items: tuple[str, ...]
    cutpoint_sigma: float = 3.0  # Normal(0, .) on each item's first cutpoint
    gap_log_sigma: float = 1.0  # LogNormal(0, .) on the gaps between cutpoints
    loading_log_sigma: float = 1.0  # LogNormal(0, .) on the loadings (discriminations)


@dataclass(frozen=True)
class LongItems:
    """The answered items in long format: one entry per answer (missing ones left out)."""

    obs_student: np.ndarray
    obs_item: np.ndarray
    obs_cat: np.ndarray  # 0-based category


def long_items(frame: pd.DataFrame, items: tuple[str, ...]) -> LongItems:
    """Answered items of the analysed students, validated (whole numbers in range)."""
    missing = [c for c in items if c not in frame.columns]
    if missing:
        raise SpecError(f"graded model: data lack item column(s) {', '.join(missing)}")
    answers = frame[list(items)].astype("float64").to_numpy()
    student, item = np.nonzero(~np.isnan(answers))
    values = answers[student, item]
    if ((values < ITEM_MIN) | (values > ITEM_MAX) | (values != np.round(values))).any():
        raise SpecError(f"graded model: item answers must be whole numbers {ITEM_MIN}..{ITEM_MAX}")
    return LongItems(
        student.astype(np.int64), item.astype(np.int64), (values - ITEM_MIN).astype(np.int64)
    )


@dataclass(frozen=True)
class GradedData(LongItems):
    """The arrays the kernel reads: W (CSR), the centring shift, W'W, and the answers."""

    w: sp.csr_matrix
    shift: np.ndarray  # column means (0 for the intercept): the kernel's design is W - 1 shift'
    wtw: np.ndarray  # cross product of the shifted design
    n_items: int

    @property
    def n(self) -> int:
        return self.w.shape[0]


def graded_data(frame: pd.DataFrame, layout: DesignLayout, items: tuple[str, ...]) -> GradedData:
    """Design and answered items of the analysed students (missing answers are left out)."""
    answers = long_items(frame, items)
    w = design_matrix(frame, layout).tocsr()
    w.sort_indices()
    n = w.shape[0]
    colmeans = np.asarray(w.mean(axis=0)).ravel()
    shift = colmeans.copy()
    shift[0] = 0.0  # column 0 is the Intercept (a column of ones)
    # (W - 1 s')'(W - 1 s') = W'W - n (mu s' + s mu') + n s s', mu = column means
    wtw = (w.T @ w).toarray() - n * (np.outer(colmeans, shift) + np.outer(shift, colmeans))
    wtw += n * np.outer(shift, shift)
    return GradedData(
        obs_student=answers.obs_student,
        obs_item=answers.obs_item,
        obs_cat=answers.obs_cat,
        w=w,
        shift=shift,
        wtw=wtw,
        n_items=len(items),
    )


def cutpoints_from(start, gaps):
    """Ordered cutpoints (items x K-1): each item's first cutpoint plus cumulated gaps."""
    steps = pt.concatenate([pt.zeros((gaps.shape[0], 1)), pt.cumsum(gaps, axis=1)], axis=1)
    return start[:, None] + steps


def marginal_cutpoints(loadings, settings: MeasurementSettings):
    """Item cutpoints sampled as marginal thresholds: c_jk = sqrt(1 + a_j^2) tau_jk.

    With z ~ N(0, 1) over students, P(item_j <= k) = Phi(c_jk / sqrt(1 + a_j^2)), so the
    answer frequencies pin tau (the probit of the marginal cumulative proportions) whatever
    the loading a_j; on c itself the extreme cutpoints move with a_j, a correlation a
    diagonal mass matrix cannot follow. The prior stays the spec's prior on c (start
    Normal, gaps LogNormal): it is evaluated at c, plus the Jacobian (K-1) log sqrt(1+a^2)
    of the linear map tau -> c per item. Returns c's first cutpoint and gaps.
    """
    tau_start = pm.Flat("tau_start", dims="item")
    tau_gap = pm.HalfFlat("tau_gap", dims=("item", "gap"))
    scale = pt.sqrt(1.0 + loadings**2)
    start = scale * tau_start
    gaps = scale[:, None] * tau_gap
    n_cut = N_CATEGORIES - 1
    prior = (
        pm.logp(pm.Normal.dist(0.0, settings.cutpoint_sigma), start).sum()
        + pm.logp(pm.LogNormal.dist(0.0, settings.gap_log_sigma), gaps).sum()
        + n_cut * pt.log(scale).sum()
    )
    pm.Potential("cutpoint_prior", prior)
    return start, gaps


def latent_prior_variances(layout: DesignLayout, spec: ModelSpec, n: int) -> np.ndarray:
    """Prior variances of the common coefficients of theta; the Intercept's is the gauge 1/n.

    The spec's priors on the common effects apply; the Intercept (the mean of theta in the
    centred design) is unseen by the items, so its prior only pins the location.
    """
    out = _fixed_prior_variances(layout, spec)
    out[0] = 1.0 / n
    return out


def polar_theta(n: int):
    """theta = r u / |u| with log r and u sampled: the scale of theta is one coordinate.

    The items see theta only standardized, so its overall scale (the latent SD every effect
    is divided by) is pinned by the Gaussian prior of theta alone, a direction along all n
    students at once that NUTS with a diagonal mass matrix crosses slowly (bulk ESS 102 of
    2 x 1,000 draws at 1,500 students). Here log r is its own coordinate. u ~ N(0, I) makes
    u / |u| uniform on the sphere, independent of |u|, and the Jacobian of
    (log r, direction) -> theta is r^n, so the density of theta is unchanged:
    p(log r, u) = p_theta(r u / |u|) r^n N(u; 0, I).
    """
    u = pm.Normal("theta_u", 0.0, 1.0, dims="student")
    log_r = pm.Flat("theta_log_norm")
    pm.Potential("theta_jacobian", n * log_r)
    return polar_to_theta(u, log_r)


def polar_to_theta(u, log_r):
    """theta from its direction u (any length) and log norm (tensors or arrays)."""
    lib = pt if isinstance(u, pt.TensorVariable) else np
    return lib.exp(log_r)[..., None] * u / lib.sqrt((u**2).sum(axis=-1, keepdims=True))


def build_model(
    data: GradedData, layout: DesignLayout, spec: ModelSpec, settings: MeasurementSettings
) -> pm.Model:
    """The PyMC model: theta, item parameters and group SDs free; b integrated out."""
    fixed_var = latent_prior_variances(layout, spec, data.n)
    n_cut = N_CATEGORIES - 1
    coords = {
        "student": np.arange(data.n),
        "item": list(settings.items),
        "cut": [f"{k}|{k + 1}" for k in range(ITEM_MIN, ITEM_MAX)],
        "gap": [f"{k}|{k + 1}" for k in range(ITEM_MIN + 1, ITEM_MAX)],
    }
    with pm.Model(coords=coords) as model:
        theta = polar_theta(data.n)
        loadings = pm.LogNormal("loadings", 0.0, settings.loading_log_sigma, dims="item")
        start, gaps = marginal_cutpoints(loadings, settings)
        cut = pm.Deterministic("cutpoints", cutpoints_from(start, gaps), dims=("item", "cut"))
        taus = [
            spec.prior_for(t.name, "group_sigma").pymc(f"{t.name}_sigma")
            for t in layout.group_terms
        ]
        log_lam = pt.concatenate(
            [pt.log(pt.as_tensor(fixed_var))]
            + [
                pt.repeat(2.0 * pt.log(tau), t.size)
                for tau, t in zip(taus, layout.group_terms, strict=True)
            ]
        )
        arrays = [
            pm.Data("w_indptr", data.w.indptr.astype(np.int64)),
            pm.Data("w_indices", data.w.indices.astype(np.int64)),
            pm.Data("w_data", data.w.data.astype(np.float64)),
            pm.Data("shift", data.shift),
            pm.Data("wtw", data.wtw),
            pm.Data("obs_student", data.obs_student),
            pm.Data("obs_item", data.obs_item),
            pm.Data("obs_cat", data.obs_cat),
        ]
        z = (theta - pt.mean(theta)) / pt.std(theta, ddof=1)
        logp = GradedLogp()(theta, z, cut, loadings, log_lam, *arrays)[0]
        pm.Potential("graded_loglik", logp)
    assert cut.ndim == 2 and n_cut == len(coords["cut"])
    return model


def initial_point(data: GradedData, settings: MeasurementSettings) -> dict[str, np.ndarray]:
    """A sensible start: theta from the standardized item mean, loadings 1, and each
    item's marginal thresholds at the probits of its cumulative answer proportions."""
    n_items = data.n_items
    sums = np.bincount(data.obs_student, weights=data.obs_cat, minlength=data.n)
    counts = np.bincount(data.obs_student, minlength=data.n)
    mean = sums / np.maximum(counts, 1)
    theta = (mean - mean.mean()) / max(mean.std(), 1e-6)
    norm_theta = float(np.sqrt(np.sum(theta**2)))
    table = np.zeros((n_items, N_CATEGORIES))
    np.add.at(table, (data.obs_item, data.obs_cat), 1.0)
    table += 0.5  # every category possible: strictly increasing thresholds
    cumulative = np.cumsum(table, axis=1)[:, :-1] / table.sum(axis=1, keepdims=True)
    tau = norm.ppf(cumulative)
    return {
        "theta_u": theta * np.sqrt(data.n) / norm_theta,  # |u| near its typical sqrt(n)
        "theta_log_norm": np.array(np.log(norm_theta)),
        "tau_start": tau[:, 0],
        "tau_gap_log__": np.log(np.diff(tau, axis=1)),
        "loadings_log__": np.zeros(n_items),
    }


def draw_latent_coefficients(
    theta: np.ndarray,
    taus: list[np.ndarray],
    data: GradedData,
    layout: DesignLayout,
    spec: ModelSpec,
    *,
    seed: int,
) -> np.ndarray:
    """Exact draws of b given each draw of theta and the SDs: N(M^-1 W'theta, M^-1).

    ``theta`` is (chain, draw, student); returns (chain, draw, coef) on the latent scale,
    with the Intercept of the uncentred design (b0 = b0' - shift . b).
    """
    fixed_var = latent_prior_variances(layout, spec, data.n)
    sizes = [t.size for t in layout.group_terms]
    n_chain, n_draw = theta.shape[:2]
    rng = np.random.default_rng(seed)
    out = np.empty((n_chain, n_draw, layout.n_coef))
    wt = data.w.T.tocsr()
    with threadpool_limits(1, user_api="blas"):
        for c in range(n_chain):
            wty_all = (wt @ theta[c].T).T - np.outer(theta[c].sum(axis=1), data.shift)
            for d in range(n_draw):
                var = np.concatenate(
                    [fixed_var]
                    + [np.full(s, tau[c, d] ** 2) for tau, s in zip(taus, sizes, strict=True)]
                )
                chol, info = lapack.dpotrf(data.wtw + np.diag(1.0 / var), lower=1, clean=1)
                if info != 0:
                    raise FloatingPointError(f"Cholesky failed at chain {c}, draw {d}")
                mean, _ = lapack.dpotrs(chol, wty_all[d], lower=1)
                noise = rng.standard_normal(layout.n_coef)
                offset, _ = lapack.dtrtrs(chol, noise, lower=1, trans=1)
                out[c, d] = mean + offset
    out[..., 0] -= out @ data.shift
    return out


@dataclass
class GradedFit:
    """What the graded fit returns: the stored tree plus the in-memory latent draws."""

    tree: xr.DataTree  # posterior on the standardized latent scale, flagship names
    theta: np.ndarray  # (chain, draw, student), latent scale (Var e = 1); not stored
    cutpoints: np.ndarray  # (chain, draw, item, cut)
    loadings: np.ndarray  # (chain, draw, item)
    timings: dict[str, float]
    info: dict


def fit_graded(
    frame: pd.DataFrame,
    layout: DesignLayout,
    spec: ModelSpec,
    settings: MeasurementSettings,
    *,
    seed: int,
    progressbar: bool = True,
) -> GradedFit:
    """Sample the graded model with nutpie, then draw b exactly and rescale to SD units."""
    import nutpie

    if spec.sampler.sampler != "nutpie":
        raise SpecError("the graded backend samples with nutpie (its kernel is numba)")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    data = graded_data(frame, layout, settings.items)
    model = build_model(data, layout, spec, settings)
    compiled = nutpie.compile_pymc_model(
        model, initial_points=initial_point(data, settings), jitter_rvs=set()
    )
    timings["compile_s"] = time.perf_counter() - t0
    run = spec.sampler
    t1 = time.perf_counter()
    tree, sampled = sample_nutpie(
        compiled,
        Plan.of(run, early_stop=False),
        seed=derived_seed(seed, "nuts"),
        progressbar=progressbar,
        target_accept=TARGET_ACCEPT,
        adaptation=ADAPTATION,
        save_warmup=False,
    )
    timings["sample_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    post = tree["posterior"].to_dataset()
    theta = polar_to_theta(post["theta_u"].to_numpy(), post["theta_log_norm"].to_numpy())
    taus = [post[f"{t.name}_sigma"].to_numpy() for t in layout.group_terms]
    coef = draw_latent_coefficients(
        theta, taus, data, layout, spec, seed=derived_seed(seed, "coefficients")
    )
    latent = standardized_posterior(
        post, coef, theta, layout, seed=derived_seed(seed, "standardized")
    )
    tree["posterior"] = xr.DataTree(latent)
    timings["conditional_draws_s"] = time.perf_counter() - t2
    stats = tree["sample_stats"].to_dataset()
    info = {
        "scale": "latent",
        "scale_note": (
            "effects in SD units of the latent relation trait over all analysed students "
            "(per draw: the SD of the students' latent values)"
        ),
        "link": "probit",
        "identification": "Var(e) = 1; items see the latent standardized over students",
        "n_students": int(data.n),
        "n_answers": int(data.obs_student.size),
        "mean_tree_depth": float(stats["depth"].mean()) if "depth" in stats else None,
        "mean_leapfrog_steps": float(stats["n_steps"].mean()) if "n_steps" in stats else None,
    }
    return GradedFit(
        tree=tree,
        theta=theta,
        cutpoints=post["cutpoints"].to_numpy(),
        loadings=post["loadings"].to_numpy(),
        timings=timings,
        info=info,
    )


def standardized_posterior(
    post: xr.Dataset, coef: np.ndarray, theta: np.ndarray, layout: DesignLayout, *, seed: int
) -> xr.Dataset:
    """Coefficients in SD units of the latent trait, under the flagship's names.

    Per draw, with m and s the mean and SD of the students' latent values, the standardized
    latent z = (theta - m) / s = W b' + e / s with b' = b / s (Intercept: (b0 - m) / s),
    so every group SD is divided by s and the residual SD is 1 / s.
    """
    mean = theta.mean(axis=-1)
    sd = theta.std(axis=-1, ddof=1)
    scaled = coef / sd[..., None]
    out: dict[str, xr.DataArray] = {}
    dims2 = ("chain", "draw")
    for term, sl in zip(layout.terms, layout.slices().values(), strict=True):
        values = scaled[:, :, sl]
        if term.kind == "intercept":
            values = (coef[:, :, sl] - mean[..., None]) / sd[..., None]
        if term.coords:
            out[term.name] = xr.DataArray(
                values, dims=(*dims2, term.dim), coords={term.dim: list(term.coords)}
            )
        else:
            out[term.name] = xr.DataArray(values[:, :, 0], dims=dims2)
    for term in layout.group_terms:
        out[f"{term.name}_sigma"] = post[f"{term.name}_sigma"] / xr.DataArray(sd, dims=dims2)
    out["sigma"] = xr.DataArray(1.0 / sd, dims=dims2)
    out["latent_sd"] = xr.DataArray(sd, dims=dims2)
    out["loadings"] = post["loadings"]
    out["cutpoints"] = post["cutpoints"]
    rng = np.random.default_rng(seed)
    n = theta.shape[-1]
    keep = np.sort(rng.choice(n, size=min(THETA_KEPT, n), replace=False))
    # standardized values: theta itself carries the location gauge, z does not
    z = (theta[:, :, keep] - mean[..., None]) / sd[..., None]
    out["z_sample"] = xr.DataArray(
        z, dims=(*dims2, "student_sample"), coords={"student_sample": keep}
    )
    ds = xr.Dataset(out, coords={"chain": post["chain"], "draw": post["draw"]})
    # netCDF stores no object-dtype coordinates (PyMC gives the item labels as objects)
    return ds.assign_coords(
        {name: ds[name].astype(str) for name, c in ds.coords.items() if c.dtype == object}
    )
