"""Compare fitted runs: LOO (arviz.compare) and the same contrasts side by side.

Reads run folders only (``run.json``, ``loo.json``, ``contrasts.csv``): nothing is
refitted. Writes ``comparison.csv`` (every contrast, one column block per run, and each
run's difference from the first), ``loo_comparison.csv`` and a self-contained
``comparison.html`` (forest plot of the overall and one-way wave comparisons, the LOO
table, the largest differences).
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from omlbayes.criticism import loo
from omlbayes.errors import RunError
from omlbayes.plots.save import save_png
from omlbayes.results import runs

KEY = ["breakdown", "group", "wave", "reference", "reference_group", "kind"]
# The forest plot shows these kinds of contrast for the overall and one-way breakdowns.
FOREST_KINDS = ("spec_pair",)
TOP_DIFFERENCES = 25
# The scale a run's effects are on (the run record's fit.scale; runs without one are index runs).
SCALE_TEXT = {
    "index": "SD units of the standardized index",
    "latent": "SD units of the latent trait (graded measurement model)",
}


def run_scale(path: Path) -> str:
    """``index`` or ``latent``: the scale of a run's effects, from its run record."""
    return str(runs.read_record(path).fit.get("scale", "index"))


def _labels(paths: list[Path]) -> list[str]:
    """Run labels: the model name, made unique with the folder name where needed."""
    records = [runs.read_record(p) for p in paths]
    names = [r.model for r in records]
    return [
        n if names.count(n) == 1 else f"{n} ({p.name})" for n, p in zip(names, paths, strict=True)
    ]


def loo_table(paths: list[Path], labels: list[str]) -> tuple[pd.DataFrame | None, str]:
    """``arviz_stats.compare`` of the runs' loo.json, or None and the reason it is not valid."""
    import arviz_stats as azs

    records = [runs.read_record(p) for p in paths]
    shas = {r.data.get("sha256") for r in records}
    sizes = {r.data.get("n_analysed") for r in records}
    if len(shas) > 1 or len(sizes) > 1:
        return None, "the runs were fitted to different data; LOO compares models on the same data"
    if len({run_scale(p) for p in paths}) > 1:
        return None, (
            "the runs model different responses (the items' latent trait vs the index); LOO "
            "compares models of the same response"
        )
    missing = [p.name for p in paths if not (p / loo.LOO_JSON).is_file()]
    if missing:
        return None, f"no {loo.LOO_JSON} in {', '.join(missing)} (refit to get LOO)"
    elpds = {label: loo.read_loo(p) for label, p in zip(labels, paths, strict=True)}
    table = azs.compare(elpds, round_to="none")
    if any(loo.subsample_scale(p) != 1.0 for p in paths):
        # Above the subsample size the pointwise values are scaled by N / m, right for sums
        # and SEs but not for stacking, which weighs each student's predictive density: the
        # weights come from the unscaled values of the same (shared, seeded) subsample.
        unscaled = {
            label: loo.read_loo(p, unscaled=True) for label, p in zip(labels, paths, strict=True)
        }
        weights = azs.compare(unscaled, round_to="none")["weight"]
        table["weight"] = weights.reindex(table.index)
    return table, ""


def _contrasts(path: Path) -> pd.DataFrame:
    """A run's (or a multiple-imputation folder's, ``imputation.py``) contrasts.csv."""
    for name in (runs.RUN_JSON, "contrasts.csv"):
        if not (path / name).is_file():
            raise RunError(
                f"{path}: not a complete run folder (no {name}); give a folder under outputs/"
            )
    runs.read_record(path)
    return pd.read_csv(path / "contrasts.csv", keep_default_na=True)


def contrasts_side_by_side(paths: list[Path], labels: list[str]) -> pd.DataFrame:
    """Every contrast present in all runs: mean, lower, upper per run; differences from the
    first run (in SD units and in units of the first run's interval half-width)."""
    merged = None
    for label, path in zip(labels, paths, strict=True):
        table = _contrasts(path)
        part = table[~table.suppressed.astype(bool)][[*KEY, "mean", "lower", "upper"]].copy()
        if "model_implied" in table:
            part["model_implied"] = table.loc[part.index, "model_implied"].astype(bool)
        part = part.rename(
            columns={c: f"{c}__{label}" for c in ("mean", "lower", "upper", "model_implied")}
        )
        merged = part if merged is None else merged.merge(part, on=KEY, how="inner")
    if merged is None or merged.empty:
        raise RunError("the runs share no contrast; compare runs of the same survey")
    for label, path in zip(labels, paths, strict=True):
        merged[f"scale__{label}"] = run_scale(path)
    first = labels[0]
    half = (merged[f"upper__{first}"] - merged[f"lower__{first}"]) / 2.0
    for label in labels[1:]:
        diff = merged[f"mean__{label}"] - merged[f"mean__{first}"]
        merged[f"diff__{label}"] = diff
        merged[f"diff_in_halfwidths__{label}"] = diff / half
    return merged.reset_index(drop=True)


def forest_figure(table: pd.DataFrame, labels: list[str], path: Path) -> None:
    """Overall and one-way wave comparisons, each run's mean and interval, side by side."""
    rows = table[table.kind.isin(FOREST_KINDS) & ~table.breakdown.str.contains(" x ")]
    rows = rows.reset_index(drop=True)
    n = len(rows)
    scales = [str(rows[f"scale__{label}"].iloc[0]) if n else "index" for label in labels]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.28 * n * max(1, len(labels)) / 2))
    offsets = np.linspace(-0.25, 0.25, len(labels)) if len(labels) > 1 else [0.0]
    colors = plt.get_cmap("tab10").colors
    for k, label in enumerate(labels):
        y = np.arange(n) + offsets[k]
        mean = rows[f"mean__{label}"].to_numpy()
        ax.errorbar(
            mean,
            y,
            xerr=[mean - rows[f"lower__{label}"], rows[f"upper__{label}"] - mean],
            fmt="o",
            ms=3,
            lw=1,
            color=colors[k % len(colors)],
            label=f"{label} ({scales[k]} scale)",
        )
    ax.axvline(0.0, color="0.5", lw=0.8)
    ax.set_yticks(np.arange(n))
    ax.set_yticklabels(
        [f"{r.breakdown}: {r.group}  {r.wave} vs {r.reference}" for r in rows.itertuples()],
        fontsize=7,
    )
    ax.invert_yaxis()
    unit = (
        SCALE_TEXT.get(scales[0], scales[0])
        if len(set(scales)) == 1
        else "SD units of each run's scale"
    )
    ax.set_xlabel(f"contrast ({unit}), posterior mean and interval")
    ax.set_title("The factsheet's wave comparisons in each model")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def write_comparison(paths: list[Path | str], out: Path | str) -> Path:
    """comparison.csv, loo_comparison.csv, forest.png and comparison.html in ``out``."""
    from omlbayes.report.html import esc, png_data_uri

    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise RunError("compare needs at least two run folders")
    for p in paths:
        _contrasts(p)  # one line if a folder is not a run (or a multiple-imputation folder)
    labels = _labels(paths)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    side = contrasts_side_by_side(paths, labels)
    side.to_csv(out / "comparison.csv", index=False)
    table, why_not = loo_table(paths, labels)
    if table is not None:
        table.to_csv(out / "loo_comparison.csv", index_label="model")
    forest_figure(side, labels, out / "forest.png")
    buffer = io.BytesIO((out / "forest.png").read_bytes())
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<title>Model comparison</title><style>body{font-family:sans-serif;max-width:1000px;"
        "margin:2em auto}table{border-collapse:collapse;font-size:13px}td,th{border:1px solid "
        "#ccc;padding:2px 6px;text-align:right}th{background:#eee}</style></head><body>",
        "<h1>Model comparison</h1><ul>",
        *(
            f"<li><b>{esc(label)}</b>: {esc(p)}; effects in "
            f"{esc(SCALE_TEXT.get(run_scale(p), run_scale(p)))}</li>"
            for label, p in zip(labels, paths, strict=True)
        ),
        "</ul><h2>Predictive accuracy (PSIS-LOO, arviz.compare)</h2>",
    ]
    if table is None:
        parts.append(f"<p>No LOO comparison: {esc(why_not)}.</p>")
    else:
        parts.append(
            "<p>elpd: expected log predictive density of a left-out student (higher is "
            "better); elpd_diff and dse: difference from the best model and its standard "
            "error (paired over students); weight: stacking weight.</p>"
        )
        cols = ["rank", "elpd", "se", "p", "elpd_diff", "dse", "weight", "diag_elpd"]
        parts.append(table[[c for c in cols if c in table]].to_html(float_format="%.2f"))
    parts += [
        "<h2>The same contrasts in each model</h2>",
        f"<img alt='forest plot' style='max-width:100%' src='{png_data_uri(buffer.getvalue())}'>",
    ]
    if len(labels) > 1:
        last = labels[-1]
        worst = side.reindex(
            side[f"diff_in_halfwidths__{last}"].abs().sort_values(ascending=False).index
        ).head(TOP_DIFFERENCES)
        shown = [*KEY] + [c for c in worst.columns if c.startswith(("mean__", "diff"))]
        parts += [
            f"<h2>Largest differences ({esc(last)} minus {esc(labels[0])})</h2>",
            f"<p>{len(side)} contrasts in all runs; these {len(worst)} differ most, in units of "
            f"the half-width of {esc(labels[0])}'s interval. All are in comparison.csv.</p>",
            worst[shown].to_html(index=False, float_format="%.3f"),
        ]
    parts.append("</body></html>")
    target = out / "comparison.html"
    target.write_text("\n".join(parts), encoding="utf-8")
    return target
