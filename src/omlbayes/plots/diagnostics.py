"""Sampler and model-check figures drawn with arviz-plots from a saved posterior.

Each function reads a DataTree (or plain arrays already drawn by the fit stage) and saves
one PNG; nothing is sampled or fitted here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import arviz_base as azb
import arviz_plots as azp
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from omlbayes import labels
from omlbayes.criticism import ppc
from omlbayes.errors import SpecError
from omlbayes.plots.save import save_png

PPC_NUM_SAMPLES = 50  # replicated densities drawn over the observed one
DPI = 150
INDEX_VAR = "index"


def _figure(pc: azp.PlotCollection) -> Figure:
    return pc.viz["figure"].item()


def _save(pc: azp.PlotCollection, path: Path | str) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = _figure(pc)
    save_png(fig, out, dpi=DPI, bbox_inches="tight")
    plt.close(fig)  # arviz-plots creates figures through pyplot; free them
    return out


def _group(dt: xr.DataTree, name: str, what: str) -> xr.Dataset:
    if name not in dt.children:
        raise SpecError(
            f"{what}: the posterior has no {name!r} group (groups: "
            f"{', '.join(dt.children) or 'none'}); re-run the fit or load the full posterior.nc"
        )
    return dt[name].to_dataset()


def plot_rank_hyper(dt: xr.DataTree, var_names: Sequence[str], path: Path | str) -> Path:
    """Marginal densities per chain and fractional-rank ECDF plots of hyper-parameters.

    Parameters
    ----------
    dt : xarray.DataTree
        Posterior with a ``posterior`` group (dims ``chain``, ``draw``).
    var_names : sequence of str
        Variables to show, e.g. ``("sigma", "1|school_sigma", "1|wave:gender_sigma")``.
    path : path-like
        PNG to write.

    Returns
    -------
    pathlib.Path
        The written file. Chains that disagree show as separated densities and rank
        ECDFs leaving the envelope (with the test's p-value per variable).
    """
    posterior = _group(dt, "posterior", "plot_rank_hyper")
    names = list(var_names)
    if not names:
        raise SpecError("plot_rank_hyper: var_names is empty; name at least one hyper-parameter")
    unknown = [v for v in names if v not in posterior.data_vars]
    if unknown:
        raise SpecError(
            f"plot_rank_hyper: unknown variable(s) {', '.join(unknown)}; the posterior has "
            f"{', '.join(map(str, posterior.data_vars))}"
        )
    # one row per coordinate (a residual SD per group gets a row, and a p-value, per group);
    # overlaid, its chains and groups were one tangle with no test shown
    pc = azp.plot_rank_dist(dt, var_names=names, compact=False, backend="matplotlib")
    fig = _figure(pc)
    rows = sum(posterior[v].isel(chain=0, draw=0).size for v in names)  # one per coordinate
    fig.suptitle(
        "Rank plots (hyper-parameters). p: each row's test that its chains' ranks are uniform;\n"
        f"with {rows} rows, a p below 0.01 somewhere has probability {1 - 0.99**rows:.2f} when "
        "all chains agree (the gate reads R-hat and ESS)",
        fontsize=10,
    )
    _names_as_row_titles(fig)
    # the row title names the parameter; repeated under the axis it read as the next row's
    for ax in fig.axes:
        if ax.get_xlabel() != "Fractional ranks":
            ax.set_xlabel("")
    return _save(pc, path)


def _names_as_row_titles(fig: Figure) -> None:
    """Long parameter names overlap as rotated y labels: show each as its row's title."""
    axes = fig.axes
    for ax in axes:
        label = ax.get_ylabel()
        if not label:
            continue
        ax.set_ylabel("")
        row = ax.get_position()
        left = [
            other
            for other in axes
            if abs(other.get_position().y0 - row.y0) < 1e-3 and other.get_position().x0 < row.x0
        ]
        title = label.replace("\n", ": ")  # a coordinate's name ("sigma", "vmbo_bk") on one line
        (left[0] if left else ax).set_title(title, fontsize=9, loc="left", pad=2)
    if fig.get_layout_engine() is None:
        fig.subplots_adjust(hspace=0.9, top=0.95)
    else:
        fig.get_layout_engine().set(h_pad=0.15)


def plot_energy(dt: xr.DataTree, path: Path | str) -> Path:
    """Marginal vs transition energy and E-BFMI per chain (from ``sample_stats.energy``)."""
    stats = _group(dt, "sample_stats", "plot_energy")
    if "energy" not in stats.data_vars:
        raise SpecError(
            "plot_energy: sample_stats has no 'energy'; this sampler did not record it "
            "(use an HMC/NUTS sampler, or skip the energy plot)"
        )
    pc = azp.plot_energy(dt, backend="matplotlib")
    fig = _figure(pc)
    for ax in fig.axes:
        if ax.get_ylabel() == "Chain":  # chains are integers, not 0.5 steps
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(
        "Energy: marginal vs transition (E-BFMI per chain, threshold dashed)",
        x=0.01,
        y=1.04,
        ha="left",
        fontsize=11,
    )
    return _save(pc, path)


def _predictive_tree(group: str, draws: np.ndarray, observed: np.ndarray) -> xr.DataTree:
    observed = np.asarray(observed, dtype=float)
    draws = np.asarray(draws, dtype=float)
    if observed.ndim != 1 or draws.ndim != 2 or draws.shape[1] != observed.size:
        raise SpecError(
            f"expected observed as (n,) and draws as (draws, n); got {observed.shape} "
            f"and {draws.shape}"
        )
    if np.isnan(observed).any() or np.isnan(draws).any():
        raise SpecError("predictive check: observed or simulated values contain NaN")
    return azb.from_dict(
        {group: {INDEX_VAR: draws[np.newaxis]}, "observed_data": {INDEX_VAR: observed}},
        dims={INDEX_VAR: ["student"]},
    )


def _predictive_plot(
    dt: xr.DataTree, group: str, path: Path | str, *, lang: str, title: str, draws_text: str
) -> Path:
    n_shown = min(PPC_NUM_SAMPLES, dt[group].sizes["draw"])
    pc = azp.plot_ppc_dist(
        dt,
        group=group,
        kind="kde",
        num_samples=n_shown,
        backend="matplotlib",
        visuals={"observed_dist": {"color": "black", "linewidth": 2}, "title": False},
        figure_kwargs={"figsize": (7.0, 3.8)},
    )
    text = labels.PPC_TEXT[lang]
    fig = _figure(pc)
    ax = pc.viz["plot"][INDEX_VAR].item()
    ax.set_xlabel(text["xlabel"])
    ax.legend(
        handles=[
            Line2D([], [], color="black", linewidth=2, label=text["observed"]),
            Line2D(
                [],
                [],
                color="C0",
                alpha=0.5,
                label=f"{draws_text}, {text['draws'].format(k=n_shown)}",
            ),
        ],
        frameon=False,
        fontsize=8,
        loc="upper right",
    )
    fig.suptitle(title, fontsize=11)
    return _save(pc, path)


def plot_ppc_index(
    observed: np.ndarray, replicated: np.ndarray, path: Path | str, *, lang: str
) -> Path:
    """Posterior predictive check: observed index density over ~50 replicated densities.

    Parameters
    ----------
    observed : numpy.ndarray
        The standardized index per student, shape ``(n,)``.
    replicated : numpy.ndarray
        Posterior predictive draws, shape ``(draws, n)``.
    path : path-like
        PNG to write.
    lang : {"nl", "en"}
        Language of the texts.
    """
    labels.check_lang(lang)
    dt = _predictive_tree("posterior_predictive", replicated, observed)
    text = labels.PPC_TEXT[lang]
    return _predictive_plot(
        dt,
        "posterior_predictive",
        path,
        lang=lang,
        title=text["title"],
        draws_text=text["replicated"],
    )


def plot_prior_predictive(
    prior_draws: np.ndarray, observed: np.ndarray, path: Path | str, *, lang: str
) -> Path:
    """Prior predictive check: densities simulated from the priors, with the observed index.

    ``prior_draws`` has shape ``(draws, n)``; ``observed`` shape ``(n,)``. The priors should
    put mass on plausible index values (a few SD around 0), not on impossible ones.
    """
    labels.check_lang(lang)
    dt = _predictive_tree("prior_predictive", prior_draws, observed)
    text = labels.PPC_TEXT[lang]
    return _predictive_plot(
        dt,
        "prior_predictive",
        path,
        lang=lang,
        title=text["prior_title"],
        draws_text=text["prior"],
    )


def plot_ppc_pvalues(pvalues: dict, path: Path) -> None:
    """Histogram of the Bayesian p-values per family, with the extreme bands shaded."""
    fig, axes = plt.subplots(1, len(pvalues), figsize=(4 * len(pvalues), 3), squeeze=False)
    for ax, (name, values) in zip(axes[0], pvalues.items(), strict=True):
        ax.hist(values, bins=np.linspace(0, 1, 21), color="#4c72b0", edgecolor="white")
        one_sided = name in ppc.ONE_SIDED
        bands = ((0, ppc.ALPHA / 2),) if one_sided else ((0, ppc.ALPHA / 2), (1 - ppc.ALPHA / 2, 1))
        for lo, hi in bands:
            ax.axvspan(lo, hi, color="#b00020", alpha=0.3)
        extreme = np.mean(ppc.is_extreme(values, one_sided=one_sided)) if values.size else 0
        ax.set_title(f"{name.removeprefix('ppc_')}\n{values.size} statistics, "
                     f"{100 * extreme:.1f}% extreme", fontsize=9)  # fmt: skip
        ax.set_xlabel("Bayesian p-value P(T(y_rep) >= T(y))", fontsize=8)
    axes[0][0].set_ylabel("statistics")
    half = ppc.ALPHA / 2
    fig.suptitle(
        f"Posterior predictive checks (red: extreme, outside [{half}, {1 - half}]; "
        f"dispersion: below {half} only)",
        fontsize=10,
    )
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def plot_loo_pit(summary: dict, path: Path) -> None:
    """Histogram of the LOO-PIT values (``loo.json``'s ``loo_pit``) against the uniform, with
    the 99% band of a bin's count under uniformity (binomial)."""
    counts = np.asarray(summary["counts"], dtype=float)
    n, bins = float(summary["n"]), len(counts)
    edges = np.linspace(0, 1, bins + 1)
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.bar(edges[:-1], counts, width=1 / bins, align="edge", color="#9db4d8", edgecolor="white")
    expected = n / bins
    half = 2.576 * np.sqrt(n * (1 / bins) * (1 - 1 / bins))
    # the band and the line over the bars, so a bar outside the band shows
    ax.axhspan(expected - half, expected + half, color="#7f7f7f", alpha=0.35, lw=0, zorder=3)
    ax.axhline(expected, color="black", lw=1, zorder=4)
    ax.set_xlim(0, 1)
    ax.set_xlabel("LOO-PIT: P(y_rep_i <= y_i | y_-i)", fontsize=8)
    ax.set_ylabel("students")
    ax.set_title(
        f"LOO-PIT of {int(n):,} students (grey: 99% band under uniformity)\n"
        f"largest ECDF gap {summary['ecdf_max_gap']:.3f}, KS p = {summary['ks_p']:.3f}; "
        f"outside [0.025, 0.975]: "
        f"{summary['share_below_0_025'] + summary['share_above_0_975']:.3f} (0.05 expected)",
        fontsize=8,
    )
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)
