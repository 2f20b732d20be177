"""The graded-response run: fit, item checks, reliability, and latent vs index side by side.

``fit_graded_run`` is the workflow's fit stage for ``backend = "graded"``: it fits the
graded model (``backends.graded``), computes what needs the latent draws of every student
while they are in memory (posterior predictive checks of the item answers per wave and
group, a posterior predictive DIF statistic per item by wave and gender, reliability from
the model), and fits the index model on the same students (collapsed Gaussian kernel)
for the side by side. The latent draws themselves are never written (student rows).

``write_latent_vs_index`` is a later stage (it reads the run folder only); the report's
section on the measurement model is ``report.graded``.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pandas as pd
import xarray as xr

from omlbayes.backends.graded import GradedFit, MeasurementSettings, fit_graded, long_items
from omlbayes.backends.sampling import derived_seed
from omlbayes.constants import ITEM_MIN
from omlbayes.criticism import diagnose
from omlbayes.errors import SpecError
from omlbayes.model import estimands
from omlbayes.model.design import DesignLayout
from omlbayes.model.spec import ModelSpec
from omlbayes.results import summarise
from omlbayes.results.options import OutputOptions, draw_interval
from omlbayes.results.runs import (
    ATTENUATION,
    DIF_CSV,
    ITEM_PPC_CSV,
    LATENT_VS_INDEX_CSV,
    RELIABILITY_MODEL_CSV,
    Run,
)

PPC_DRAWS = 200  # posterior draws replicated for the item checks
PPC_GROUPS = ("wave", "gender", "school_type")
DIF_GROUPS = ("wave", "gender")
INDEX_GROUP = "index_posterior"
PRIOR_KEYS = ("cutpoint_sigma", "gap_log_sigma", "loading_log_sigma")


def settings_of(spec: ModelSpec) -> MeasurementSettings:
    m = spec.measurement
    if not m.get("items"):
        raise SpecError(f"model {spec.name}: the graded backend needs a [measurement] section")
    return MeasurementSettings(
        items=tuple(m["items"]),
        **{k: float(m[k]) for k in PRIOR_KEYS if k in m},
    )


def check_graded_spec(spec: ModelSpec) -> None:
    """Refuse, before any work, what the graded backend cannot fit (one line each), rather
    than fit another model: one residual SD per group (the latent residual SD is fixed at 1,
    it sets the latent scale) and group SDs sampled other than on the log scale."""
    if spec.residual_sd_by is not None:
        raise SpecError(
            f"model {spec.name!r}: the graded model cannot fit residual_sd_by = "
            f"{spec.residual_sd_by!r} (its latent residual SD is fixed at 1 to set the latent "
            "scale); use --model graded_full for the default's other terms"
        )
    if spec.sampler.sd_parameterization != "log":
        raise SpecError(
            f"model {spec.name!r}: the graded backend samples its group SDs on the log scale "
            f"only, not sd_parameterization = {spec.sampler.sd_parameterization!r}; drop "
            "--sd-parameterization"
        )


def index_spec(spec: ModelSpec) -> ModelSpec:
    """The index model of a graded spec: the same terms, priors and sampler."""
    return replace(
        spec,
        family="gaussian",
        measurement={},
        sampler=replace(spec.sampler, backend="collapsed"),
    )


def fit_graded_run(
    frame: pd.DataFrame,
    layout: DesignLayout,
    spec: ModelSpec,
    *,
    seed: int,
    output: OutputOptions,
    progressbar: bool = True,
    progress=print,
) -> tuple[xr.DataTree, dict[str, float], dict, dict[str, pd.DataFrame]]:
    """Graded fit + item checks (with the run's interval) + the index model on the same
    students.

    Returns the tree (posterior on the standardized latent scale, plus the index model's
    coefficients as group ``index_posterior``), timings, the run record's ``fit`` section
    and the tables to write into the run folder.
    """
    from omlbayes.backends.collapsed import fit_collapsed
    from omlbayes.model.design import sufficient_stats

    check_graded_spec(spec)
    settings = settings_of(spec)
    fit = fit_graded(frame, layout, spec, settings, seed=seed, progressbar=progressbar)
    timings = {f"graded_{k}": v for k, v in fit.timings.items()}
    t0 = time.perf_counter()
    progress("graded model: item posterior predictive checks, DIF, reliability")
    tables = {
        ITEM_PPC_CSV: item_ppc_table(frame, fit, settings, seed=seed, options=output),
        DIF_CSV: dif_table(frame, fit, settings, seed=seed, options=output),
        RELIABILITY_MODEL_CSV: model_reliability(
            fit, index=frame[spec.response].to_numpy(dtype=float), options=output
        ),
    }
    timings["item_checks_s"] = time.perf_counter() - t0
    latent_diag = latent_diagnostics(fit.theta)
    fit.theta = np.empty(0)  # free the student draws before the index fit
    progress("fitting the index model on the same students (for the side by side)")
    t1 = time.perf_counter()
    ispec = index_spec(spec)
    stats = sufficient_stats(frame, layout, ispec.response)
    index_tree, _, _ = fit_collapsed(
        stats, layout, ispec, seed=derived_seed(seed, "index model"), progressbar=False
    )
    index_diag = diagnose.check(index_tree)
    timings["index_model_s"] = time.perf_counter() - t1
    tree = fit.tree
    index_post = index_tree["posterior"].to_dataset()
    keep = [t.name for t in layout.terms] + [f"{t.name}_sigma" for t in layout.group_terms]
    tree[INDEX_GROUP] = xr.DataTree(index_post[[*keep, "sigma"]])
    info = {
        **fit.info,
        "latent_values": latent_diag,
        "index_model": {
            "backend": "collapsed",
            "diagnostics_passed": bool(index_diag["passed"]),
            "verdict": diagnose.verdict_line(index_diag),
        },
        "tables": sorted(tables),
    }
    return tree, timings, info, tables


def latent_diagnostics(theta: np.ndarray) -> dict:
    """R-hat and ESS over every student's standardized latent value (not stored)."""
    import arviz as az

    z = (theta - theta.mean(axis=-1, keepdims=True)) / theta.std(axis=-1, ddof=1, keepdims=True)
    ds = xr.Dataset({"z": (("chain", "draw", "student"), z)})
    rhat = az.rhat(ds)["z"].to_numpy()
    bulk = az.ess(ds, method="bulk")["z"].to_numpy()
    tail = az.ess(ds, method="tail")["z"].to_numpy()
    return {
        "what": "standardized latent value of every analysed student",
        "max_r_hat": float(np.nanmax(rhat)),
        "min_ess_bulk": float(np.nanmin(bulk)),
        "min_ess_tail": float(np.nanmin(tail)),
        "share_r_hat_above_1_01": float(np.mean(rhat > 1.01)),
    }


def _replicates(fit: GradedFit, data, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Replicated answers (draws x answers, 0-based categories) for a subset of draws."""
    n_chain, n_draw = fit.theta.shape[:2]
    rng = np.random.default_rng(seed)
    total = n_chain * n_draw
    picks = rng.choice(total, size=min(PPC_DRAWS, total), replace=False)
    out = np.empty((picks.size, data.obs_student.size), dtype=np.int8)
    for k, flat in enumerate(picks):
        c, d = divmod(int(flat), n_draw)
        theta = fit.theta[c, d]
        z = (theta - theta.mean()) / theta.std(ddof=1)
        latent = fit.loadings[c, d][data.obs_item] * z[data.obs_student]
        ystar = latent + rng.standard_normal(latent.size)
        cuts = fit.cutpoints[c, d][data.obs_item]  # (answers, K-1)
        out[k] = (ystar[:, None] > cuts).sum(axis=1)
    return out, picks


def _group_codes(frame: pd.DataFrame, column: str, data) -> tuple[np.ndarray, list[str]]:
    values = frame[column].astype("string").to_numpy()
    levels = [str(v) for v in dict.fromkeys(frame[column].dropna())]
    if isinstance(frame[column].dtype, pd.CategoricalDtype):
        present = set(levels)
        levels = [str(c) for c in frame[column].cat.categories if str(c) in present]
    codes = pd.Index(levels).get_indexer(values)
    return codes[data.obs_student], levels


def item_ppc_table(
    frame: pd.DataFrame,
    fit: GradedFit,
    settings: MeasurementSettings,
    *,
    seed: int,
    options: OutputOptions,
) -> pd.DataFrame:
    """Share of each answer per item and group: observed vs replicated (the run's interval).

    ``ppp`` is the posterior predictive p-value P(replicated share >= observed share);
    values near 0 or 1 mean the model misses that share. A group whose item fewer than the
    run's ``min_cell_n`` students answered is ``suppressed`` (no count, no shares).
    """
    data = long_items(frame, settings.items)
    reps, _ = _replicates(fit, data, seed=seed)
    n_cat = fit.cutpoints.shape[-1] + 1
    n_items = len(settings.items)
    rows = []
    groupings = [("all", np.zeros(data.obs_student.size, dtype=np.int64), ["all"])]
    groupings += [(col, *_group_codes(frame, col, data)) for col in PPC_GROUPS if col in frame]
    for column, codes, levels in groupings:
        size = len(levels) * n_items * n_cat
        key = (codes * n_items + data.obs_item) * n_cat
        observed = np.bincount(key + data.obs_cat, minlength=size).reshape(-1, n_items, n_cat)
        answered = observed.sum(axis=-1, keepdims=True)
        rep = np.stack([np.bincount(key + r, minlength=size) for r in reps])
        rep = rep.reshape(len(reps), -1, n_items, n_cat) / np.maximum(answered, 1)
        obs_share = observed / np.maximum(answered, 1)
        lower, upper = draw_interval(rep, options.interval, options.prob, axis=0)
        ppp = (rep >= obs_share[None]).mean(axis=0)
        for g, level in enumerate(levels):
            for j, item in enumerate(settings.items):
                for k in range(n_cat):
                    rows.append(
                        {
                            "grouping": column,
                            "group": level,
                            "item": item,
                            "answer": ITEM_MIN + k,
                            "n": int(answered[g, j, 0]),
                            "observed": obs_share[g, j, k],
                            "predicted": rep[:, g, j, k].mean(),
                            "lower": lower[g, j, k],
                            "upper": upper[g, j, k],
                            "ppp": ppp[g, j, k],
                        }
                    )
    return suppress_small(pd.DataFrame.from_records(rows), options=options)


def dif_table(
    frame: pd.DataFrame,
    fit: GradedFit,
    settings: MeasurementSettings,
    *,
    seed: int,
    options: OutputOptions,
) -> pd.DataFrame:
    """Posterior predictive DIF: each item's mean answer per group, observed vs replicated.

    Given each student's latent value, the model says an item works the same in every
    group; an item whose observed group mean falls outside the replicated interval
    (``ppp`` near 0 or 1) answers differently in that group than the trait predicts.
    ``difference`` is observed minus predicted, in answer points; ``flagged`` when ``ppp``
    lies in either tail outside the run's interval probability. Groups under the run's
    ``min_cell_n`` are ``suppressed`` as in :func:`item_ppc_table`.
    """
    tail = (1.0 - options.prob) / 2.0
    data = long_items(frame, settings.items)
    reps, _ = _replicates(fit, data, seed=derived_seed(seed, "dif replications"))
    n_items = len(settings.items)
    rows = []
    for column in DIF_GROUPS:
        if column not in frame:
            continue
        codes, levels = _group_codes(frame, column, data)
        key = codes * n_items + data.obs_item
        size = len(levels) * n_items
        count = np.bincount(key, minlength=size)
        obs = np.bincount(key, weights=data.obs_cat + ITEM_MIN, minlength=size) / np.maximum(
            count, 1
        )
        rep = np.stack(
            [np.bincount(key, weights=r + ITEM_MIN, minlength=size) for r in reps]
        ) / np.maximum(count, 1)
        lower, upper = draw_interval(rep, options.interval, options.prob, axis=0)
        ppp = (rep >= obs[None]).mean(axis=0)
        for g, level in enumerate(levels):
            for j, item in enumerate(settings.items):
                k = g * n_items + j
                rows.append(
                    {
                        "grouping": column,
                        "group": level,
                        "item": item,
                        "n": int(count[k]),
                        "observed_mean": obs[k],
                        "predicted_mean": rep[:, k].mean(),
                        "lower": lower[k],
                        "upper": upper[k],
                        "difference": obs[k] - rep[:, k].mean(),
                        "ppp": ppp[k],
                        "flagged": bool(ppp[k] < tail or ppp[k] > 1.0 - tail),
                    }
                )
    table = suppress_small(pd.DataFrame.from_records(rows), options=options)
    table["flagged"] = table["flagged"] & ~table["suppressed"]
    return table


def suppress_small(table: pd.DataFrame, *, options: OutputOptions) -> pd.DataFrame:
    """Rows answered by fewer than the run's ``min_cell_n`` students: no count and no
    values, marked ``suppressed`` (disclosure control, as the other tables)."""
    out = table.copy()
    small = out["n"] < options.min_cell_n
    values = [c for c in out.columns if c not in ("grouping", "group", "item", "answer", "n")]
    values = [c for c in values if out[c].dtype.kind == "f"]
    out.loc[small, values] = np.nan
    out["n"] = out["n"].astype("Int64").mask(small)
    out["suppressed"] = small.to_numpy()
    return out


def model_reliability(fit: GradedFit, *, index: np.ndarray, options: OutputOptions) -> pd.DataFrame:
    """Reliability from the graded model, to set next to alpha and omega, and the index's
    attenuation factor.

    * latent-response omega, per draw: (sum a)^2 / ((sum a)^2 + J) with the loadings a on
      the standardized latent (the reliability of the sum of the items' latent responses;
      the ordinal counterpart of omega);
    * empirical (EAP) reliability of the latent values: Var(posterior means) /
      (Var(posterior means) + mean posterior variance). It counts what the covariates tell
      about a student as well as the items (the latent regression), so it is an upper
      reference, not a property of the six items alone;
    * ``index_attenuation``, per draw: the correlation over students of the standardized
      index with the standardized latent values z. It estimates lambda = Cov(index, z) with
      Var(z) = 1, the factor an SD-unit contrast shrinks by on the index scale
      (index contrast ~ lambda x latent contrast; lambda = sqrt(reliability of the index as
      a measure of z)): the posterior draw of z differs from the true z by an error
      uncorrelated with any function of the data, the index included.
    """
    a = fit.loadings
    total = a.sum(axis=-1)
    omega = (total**2 / (total**2 + a.shape[-1])).ravel()
    lo, hi = draw_interval(omega, options.interval, options.prob)
    theta = fit.theta
    z = (theta - theta.mean(axis=-1, keepdims=True)) / theta.std(axis=-1, ddof=1, keepdims=True)
    flat = z.reshape(-1, z.shape[-1])
    means = flat.mean(axis=0)
    post_var = flat.var(axis=0, ddof=1).mean()
    eap = float(means.var(ddof=1) / (means.var(ddof=1) + post_var))
    y = (index - index.mean()) / index.std(ddof=1)
    attenuation = flat @ y / (y.size - 1)  # z has mean 0 and SD 1 per draw
    a_lo, a_hi = draw_interval(attenuation, options.interval, options.prob)
    return pd.DataFrame(
        [
            {
                "measure": "latent_response_omega",
                "mean": float(omega.mean()),
                "lower": float(lo),
                "upper": float(hi),
            },
            {"measure": "eap_reliability", "mean": eap, "lower": np.nan, "upper": np.nan},
            {
                "measure": ATTENUATION,
                "mean": float(attenuation.mean()),
                "lower": float(a_lo),
                "upper": float(a_hi),
            },
        ]
    )


# --- later stages: from the run folder only --------------------------------------------

KEYS = ["breakdown", "group", "wave", "reference", "reference_group", "kind"]


def latent_vs_index_table(
    run: Run,
    contrast_defs: list[estimands.Contrast],
    latent_contrasts: pd.DataFrame,
    *,
    suppressed: set[tuple[str, str, str]],
) -> pd.DataFrame:
    """Every contrast on both scales: the graded model's latent trait and the index model's
    standardized index, fitted on the same students (both in SD units)."""
    index_post = run.tree[INDEX_GROUP].to_dataset()
    index_effects = estimands.effect_draws(index_post, run.gcomp, seed=run.record.seed)
    index_contrasts = summarise.contrasts_table(
        estimands.contrast_draws(index_effects, contrast_defs),
        suppressed=suppressed,
        options=run.options,
    )
    values = ["mean", "lower", "upper", "p_direction"]
    latent = latent_contrasts[KEYS + values + ["suppressed"]].rename(
        columns={v: f"latent_{v}" for v in values}
    )
    index = index_contrasts[KEYS + values].rename(columns={v: f"index_{v}" for v in values})
    table = latent.merge(index, on=KEYS, how="left", validate="one_to_one")
    return table[KEYS + [f"{s}_{v}" for s in ("latent", "index") for v in values] + ["suppressed"]]


def write_latent_vs_index(
    run: Run,
    contrast_defs: list[estimands.Contrast],
    latent_contrasts: pd.DataFrame,
    *,
    suppressed: set[tuple[str, str, str]],
) -> None:
    """latent_vs_index.csv and its figure, plus the item-check figure (graded runs only)."""
    import matplotlib.pyplot as plt

    from omlbayes.plots.measurement import plot_item_ppc, plot_latent_vs_index
    from omlbayes.plots.save import save_png

    if INDEX_GROUP not in run.tree.children:
        return
    path, options = run.path, run.options
    table = latent_vs_index_table(run, contrast_defs, latent_contrasts, suppressed=suppressed)
    table.to_csv(path / LATENT_VS_INDEX_CSV, index=False)
    figures = path / "figures"
    fig = plot_latent_vs_index(table, options=options)
    save_png(fig, figures / "latent_vs_index.png", bbox_inches="tight")
    plt.close(fig)
    if (path / ITEM_PPC_CSV).is_file():
        ppc = pd.read_csv(path / ITEM_PPC_CSV, dtype={"group": str})
        fig = plot_item_ppc(ppc, options=options)
        save_png(fig, figures / "item_ppc.png", bbox_inches="tight")
        plt.close(fig)
