"""Posterior predictive checks as named entries of the diagnostics gate.

For thinned posterior draws the index is replicated for every student (never saved; above
``PPC_MAX_ROWS`` students for a seeded random subsample of that many) and three families of
statistics are compared with the observed data:

- ``ppc_index_by_wave_group``: mean and SD of the index in each wave x group cell of each
  one-way breakdown (the distribution the factsheet reports);
- ``ppc_school_wave_means``: the mean index of each school in each wave (what a school
  x wave term would capture);
- ``ppc_residual_sd_by_school_type``: the SD of y - mu(theta) within each school type,
  a realized discrepancy (what one residual SD per school type would capture);
- ``ppc_cell_dispersion``: one omnibus statistic per set of cells, T = sum over cells of
  n_c zbar_c^2 with z = (y - mu(theta)) / sigma, for the school x wave cells and for the
  wave x a x b cells of every cross breakdown a x b of the spec. Under the model T is
  chi-square with one degree per cell; a variance component the model lacks (schools that
  drift between waves, a three-way effect) inflates it. One cell's mean has little power
  against such a component (the flagship on a harder simulated survey of 40k students, school
  x wave SD 0.105: 0 of 320 school means extreme); their sum has much (p = 0.000 there).
  Fitted terms make T(y) smaller than T(y_rep) (the cells' own effects are fitted), so only
  too large a T is extreme (one-sided).

One check is advisory (recorded in ``diagnostics.json`` and the report, not in the gate):

- ``ppc_school_drift_persistence``: do a school's successive waves resemble each other
  more than the model allows? The default model's school x wave deviations are independent
  across waves; a school whose drift persists (a new head, a slow change of staff) makes
  them correlated, which the other checks cannot see (every school x wave cell has its own
  effect). T = the lag-one autocorrelation, over each school's successive surveyed waves,
  of its cells' mean residuals without the school x wave term, each taken around the
  school's mean (so the school's own level drops out). Replications
  draw *new* school x wave deviations from their SD (a mixed replication: the fitted
  deviations would copy the data's persistence), so under the model T(y) and T(y_rep)
  agree and persistent drift makes T(y) too large (one-sided). Advisory because the
  default has no term for it: a flag says the trend's intervals rest on an independence the
  data question (``outputs/validation/validation.md`` measures what it costs), not that
  the draws are wrong.

Each statistic gets a Bayesian p-value P(T(y_rep) >= T(y)); it is extreme outside
[ALPHA / 2, 1 - ALPHA / 2] (below ALPHA / 2 for the one-sided dispersion family). A family
passes when at most MAX_EXTREME_SHARE of its statistics are extreme (for the few residual
SDs and dispersion statistics: none). Cells with fewer students than
the disclosure threshold are not used; only counts and p-values are saved, never cells.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
import xarray as xr

from omlbayes.model.design import DesignLayout, design_matrix
from omlbayes.model.estimands import coefficient_draws
from omlbayes.model.spec import ModelSpec

PPC_DRAWS = 400
# Above this many students the checks use a seeded random subsample of this size (observed
# and replicated statistics alike): the cost stays bounded in N, as LOO's does.
PPC_MAX_ROWS = 50_000
ALPHA = 0.01
MAX_EXTREME_SHARE = 0.05
# replicated values held at once (students x draws): memory stays flat in N
CHUNK_VALUES = 4_000_000
FAMILIES = (
    "ppc_index_by_wave_group",
    "ppc_school_wave_means",
    "ppc_residual_sd_by_school_type",
    "ppc_cell_dispersion",
)
# families whose statistics are extreme only when too large (p below ALPHA / 2)
ONE_SIDED = ("ppc_cell_dispersion", "ppc_school_drift_persistence")
# families reported but not part of the gate
ADVISORY = ("ppc_school_drift_persistence",)


def _indicator(codes: np.ndarray, n_cells: int) -> sp.csr_matrix:
    n = codes.size
    return sp.csr_matrix((np.ones(n), (codes, np.arange(n))), shape=(n_cells, n))


def _cells(frame: pd.DataFrame, columns: list[str], min_n: int) -> tuple[np.ndarray, list[str]]:
    """Cell code of each row (-1 for cells under ``min_n``) and the kept cells' labels."""
    # one integer key per row from each column's codes (no per-row string joins); cells are
    # numbered by first appearance, as factorising the joined labels would number them
    text = frame[columns].astype(str)
    key = np.zeros(len(frame), dtype=np.int64)
    for column in columns:
        col_codes, col_levels = pd.factorize(text[column])
        key = key * len(col_levels) + col_codes
    codes, uniques = pd.factorize(key)
    counts = np.bincount(codes, minlength=len(uniques))
    keep = counts >= min_n
    remap = np.full(len(uniques), -1)
    remap[keep] = np.arange(keep.sum())
    first_row = np.unique(codes, return_index=True)[1][keep]  # a row of each kept cell
    labels = text.iloc[first_row].agg(":".join, axis=1)
    return remap[codes], [f"{'/'.join(columns)}={u}" for u in labels]


def _group_moments(indicator: sp.csr_matrix, counts: np.ndarray, values: np.ndarray):
    """Mean and SD per cell of each column of ``values`` (rows x draws)."""
    s1 = indicator @ values
    s2 = indicator @ (values * values)
    mean = s1 / counts[:, None]
    var = np.maximum(s2 / counts[:, None] - mean * mean, 0.0)
    return mean, np.sqrt(var * counts[:, None] / np.maximum(counts[:, None] - 1, 1))


def _pvalue(rep: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """P(T_rep >= T_obs) per statistic (rows), ties counted half."""
    return (rep > obs).mean(axis=1) + 0.5 * (rep == obs).mean(axis=1)


def is_extreme(pvalues: np.ndarray, *, one_sided: bool = False) -> np.ndarray:
    low = pvalues < ALPHA / 2
    return low if one_sided else low | (pvalues > 1 - ALPHA / 2)


def _family(
    labels: list[str], pvalues: np.ndarray, *, max_share: float, one_sided: bool = False
) -> dict:
    extreme = is_extreme(pvalues, one_sided=one_sided)
    order = np.argsort(pvalues if one_sided else -np.abs(pvalues - 0.5))[:5]
    return {
        "passed": bool(extreme.mean() <= max_share) if pvalues.size else True,
        "one_sided": one_sided,
        "n_statistics": int(pvalues.size),
        "n_extreme": int(extreme.sum()),
        "share_extreme": float(extreme.mean()) if pvalues.size else 0.0,
        "alpha": ALPHA,
        "max_share_extreme": max_share,
        "most_extreme": [{"statistic": labels[k], "p": float(pvalues[k])} for k in order],
    }


def _school_wave_term(layout: DesignLayout):
    """The school x wave group term of the layout, or None."""
    for term in layout.group_terms:
        if set(term.columns) == {"school_id", "wave"}:
            return term
    return None


def _drift_pairs(frame: pd.DataFrame, codes: np.ndarray, waves: list[str]):
    """(school of each kept school x wave cell, and the cells a, b of each pair of a school's
    successive surveyed waves, in the run's wave order)."""
    keep = codes >= 0
    cells = pd.DataFrame(
        {
            "cell": codes[keep],
            "school": frame["school_id"].astype(str).to_numpy()[keep],
            "position": pd.Index(waves).get_indexer(frame["wave"].astype(str).to_numpy()[keep]),
        }
    ).drop_duplicates("cell")
    cells = cells.sort_values(["school", "position"])
    following = cells.groupby("school", sort=False)["cell"].shift(-1)
    pairs = following.notna()
    school = np.empty(len(cells), dtype=np.int64)
    school[cells["cell"].to_numpy()] = pd.factorize(cells["school"])[0]
    return school, cells["cell"].to_numpy()[pairs], following[pairs].to_numpy(dtype=np.int64)


def _drift_statistic(means: np.ndarray, school: np.ndarray, a: np.ndarray, b: np.ndarray):
    """T per draw (columns of ``means``, cells x draws): the lag-one autocorrelation of the
    cell means around their school's mean, over each school's successive waves."""
    per_school = np.bincount(school, minlength=school.max() + 1)
    centre = (
        np.stack([np.bincount(school, weights=col) for col in means.T], axis=1)
        / per_school[:, None]
    )
    e = means - centre[school]
    return (e[a] * e[b]).sum(axis=0) / (e * e).sum(axis=0)


def posterior_predictive_checks(
    frame: pd.DataFrame,
    layout: DesignLayout,
    spec: ModelSpec,
    posterior: xr.Dataset,
    *,
    seed: int,
    min_cell_n: int,
    breakdown_columns: list[str],
) -> tuple[dict, dict]:
    """(the gate's entries, the p-values per family for the figure)."""
    rng = np.random.default_rng(seed)
    n_students = len(frame)
    if n_students > PPC_MAX_ROWS:
        rows_used = np.sort(rng.choice(n_students, size=PPC_MAX_ROWS, replace=False))
        frame = frame.iloc[rows_used]
    coefs = coefficient_draws(posterior, layout.coef_names, seed=seed)
    flat = coefs.stack(sample=("chain", "draw")).transpose("sample", "coef").to_numpy()
    sigma_var = posterior["sigma"]
    extra = [d for d in sigma_var.dims if d not in ("chain", "draw")]
    sigma = sigma_var.stack(sample=("chain", "draw")).transpose("sample", *extra).to_numpy()
    if extra:
        by = spec.residual_sd_by
        groups = [str(g) for g in sigma_var[extra[0]].to_numpy()]
        rows = pd.Index(groups).get_indexer(frame[by].astype(str))
    else:
        sigma, rows = sigma[:, None], np.zeros(len(frame), dtype=np.int64)
    pick = np.sort(rng.choice(flat.shape[0], size=min(PPC_DRAWS, flat.shape[0]), replace=False))
    w = design_matrix(frame, layout)
    y = frame[spec.response].to_numpy(dtype=np.float64)

    # the statistics' cells
    wave_group = []
    for col in ["overall", *breakdown_columns]:
        cols = ["wave"] if col == "overall" else ["wave", col]
        codes, names = _cells(frame, cols, min_cell_n)
        wave_group.append((codes, names))
    school_codes, school_names = _cells(frame, ["school_id", "wave"], min_cell_n)
    drift_term = _school_wave_term(layout)
    drift = None
    if drift_term is not None:
        school, a, b = _drift_pairs(frame, school_codes, list(layout.levels["wave"]))
        if a.size:
            sl = layout.slices()[drift_term.name]
            sd_sw = posterior[f"{drift_term.name}_sigma"].stack(sample=("chain", "draw"))
            drift = (school, a, b, sl, w[:, sl], sd_sw.to_numpy())
    type_codes, type_names = _cells(frame, ["school_type"], min_cell_n)
    dispersion_sets = [["school_id", "wave"]] + [
        ["wave", *b] for b in spec.breakdowns if len(b) == 2 and "wave" not in b
    ]

    def prepared(codes, n_cells):
        keep = codes >= 0
        ind = _indicator(codes[keep], n_cells)
        return keep, ind, np.asarray(ind.sum(axis=1)).ravel()

    wg = [(prepared(c, len(n)), n) for c, n in wave_group]
    sc = prepared(school_codes, len(school_names))
    ty = prepared(type_codes, len(type_names))
    dispersion = []
    for cols in dispersion_sets:
        codes, names = _cells(frame, cols, min_cell_n)
        if names:
            dispersion.append(
                (prepared(codes, len(names)), f"{' x '.join(cols)} ({len(names)} cells)")
            )

    obs_wg = []
    for (keep, ind, cnt), _ in wg:
        m, s = _group_moments(ind, cnt, y[keep][:, None])
        obs_wg.append(np.concatenate([m[:, 0], s[:, 0]]))
    obs_sc = _group_moments(sc[1], sc[2], y[sc[0]][:, None])[0][:, 0]

    rep_wg = [[] for _ in wg]
    rep_sc, rep_ty, obs_ty = [], [], []
    rep_dispersion, obs_dispersion = [[] for _ in dispersion], [[] for _ in dispersion]
    rep_drift, obs_drift = [], []
    per_chunk = max(1, min(100, CHUNK_VALUES // max(len(frame), 1)))
    for start in range(0, pick.size, per_chunk):
        take = pick[start : start + per_chunk]
        mu = np.asarray(w @ flat[take].T)  # rows x draws
        noise_sd = sigma[take][:, rows].T
        y_rep = mu + rng.standard_normal(mu.shape) * noise_sd
        for k, ((keep, ind, cnt), _) in enumerate(wg):
            m, s = _group_moments(ind, cnt, y_rep[keep])
            rep_wg[k].append(np.concatenate([m, s]))
        rep_sc.append(_group_moments(sc[1], sc[2], y_rep[sc[0]])[0])
        keep, ind, cnt = ty
        resid, resid_rep = y[:, None] - mu, y_rep - mu
        rep_ty.append(_group_moments(ind, cnt, resid_rep[keep])[1])
        obs_ty.append(_group_moments(ind, cnt, resid[keep])[1])
        z_obs, z_rep = resid / noise_sd, resid_rep / noise_sd
        for k, ((keep, ind, cnt), _) in enumerate(dispersion):
            for z, out in ((z_obs, obs_dispersion), (z_rep, rep_dispersion)):
                cell_sums = ind @ z[keep]  # n_c zbar_c per cell and draw
                out[k].append((cell_sums * cell_sums / cnt[:, None]).sum(axis=0))
        if drift is not None:  # residuals without the school x wave term; new deviations
            school, a, b, sl, w_sw, sd_sw = drift
            keep, ind, cnt = sc
            free = resid + np.asarray(w_sw @ flat[take][:, sl].T)
            obs_means = _group_moments(ind, cnt, free[keep])[0]
            fresh = rng.standard_normal((cnt.size, take.size)) * sd_sw[take]
            rep_means = _group_moments(ind, cnt, resid_rep[keep])[0] + fresh
            obs_drift.append(_drift_statistic(obs_means, school, a, b))
            rep_drift.append(_drift_statistic(rep_means, school, a, b))

    labels_wg, p_wg = [], []
    for k, (_, names) in enumerate(wg):
        labels_wg += [f"mean {n}" for n in names] + [f"sd {n}" for n in names]
        p_wg.append(_pvalue(np.concatenate(rep_wg[k], axis=1), obs_wg[k][:, None]))
    p_wg = np.concatenate(p_wg)
    p_sc = _pvalue(np.concatenate(rep_sc, axis=1), obs_sc[:, None])
    p_ty = _pvalue(np.concatenate(rep_ty, axis=1), np.concatenate(obs_ty, axis=1))
    p_dispersion = np.array(
        [
            _pvalue(
                np.concatenate(rep_dispersion[k])[None], np.concatenate(obs_dispersion[k])[None]
            )[0]
            for k in range(len(dispersion))
        ]
    )
    entries = {
        "ppc_index_by_wave_group": _family(labels_wg, p_wg, max_share=MAX_EXTREME_SHARE),
        "ppc_school_wave_means": _family(
            [f"mean {n}" for n in school_names], p_sc, max_share=MAX_EXTREME_SHARE
        ),
        "ppc_residual_sd_by_school_type": _family(
            [f"residual sd {n}" for n in type_names], p_ty, max_share=0.0
        ),
        "ppc_cell_dispersion": _family(
            [f"dispersion {name}" for _, name in dispersion],
            p_dispersion,
            max_share=0.0,
            one_sided=True,
        ),
    }
    pvalues = {"ppc_index_by_wave_group": p_wg, "ppc_school_wave_means": p_sc,
               "ppc_residual_sd_by_school_type": p_ty,
               "ppc_cell_dispersion": p_dispersion}  # fmt: skip
    if drift is not None:
        p_drift = _pvalue(np.concatenate(rep_drift)[None], np.concatenate(obs_drift)[None])
        pvalues["ppc_school_drift_persistence"] = p_drift
        entries["ppc_school_drift_persistence"] = _family(
            [f"lag-one autocorrelation of school x wave means ({drift[1].size} pairs)"],
            p_drift,
            max_share=0.0,
            one_sided=True,
        ) | {"advisory": True}
    for entry in entries.values():
        entry["draws"] = int(pick.size)
        entry["students"] = len(frame)
        entry["students_in_data"] = n_students
    return entries, pvalues


def add_to_gate(diagnostics: dict, entries: dict) -> dict:
    """The diagnostics with the PPC families as named checks (``passed`` recomputed); the
    advisory families are recorded under ``ppc`` only."""
    gated = {k: v["passed"] for k, v in entries.items() if k not in ADVISORY}
    checks = {**diagnostics["checks"], **gated}
    return {**diagnostics, "checks": checks, "passed": all(checks.values()), "ppc": entries}
