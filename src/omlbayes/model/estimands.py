"""Covariate-adjusted means by g-computation, and contrasts, as posterior draws.

What a diamond means: for wave w and group g of breakdown B, the expected index with
every student's wave set to w and B set to g, other covariates kept as they are in the
pooled sample (its composition), for a school drawn from the population (school effects
at their mean, zero), minus the same expectation without any substitution (the pooled
mean). The model is linear, so each estimand is a fixed weight vector times the
coefficients: ``effect = (a_target - a_pooled) . b``. The weights are computed once from
aggregated covariate patterns and stored in the run (group ``gcomp``), so every later
stage works from disk. Wave "all" keeps each student's own wave.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import combinations, product

import numpy as np
import pandas as pd
import scipy.sparse as sp
import xarray as xr

from omlbayes.constants import MIN_CELL_N
from omlbayes.data.schema import breakdown_name, group_label
from omlbayes.errors import RunError, SpecError
from omlbayes.model.composition import Composition, weight_row
from omlbayes.model.design import DesignLayout
from omlbayes.model.spec import ModelSpec

ALL_WAVES = "all"
POPULATION_LEVEL_COLUMNS = ("school_id",)  # terms with these are set to their mean (0)
_COEF = re.compile(r"^(?P<name>.+?)(\[(?P<coord>.*)\])?$")


@dataclass(frozen=True)
class Target:
    breakdown: str
    group: str
    wave: str
    substitute: tuple[tuple[str, str], ...]  # (column, level) pairs set for every student


def _targets(spec: ModelSpec, levels: dict[str, tuple[str, ...]]) -> list[Target]:
    waves = levels["wave"]
    out = []
    for columns in spec.breakdowns:
        for col in columns:
            if col not in levels:
                raise SpecError(f"breakdown column {col!r} is not a categorical term of the model")
        for cell in product(*(levels[c] for c in columns)):
            for wave in (*waves, ALL_WAVES):
                subst = tuple(zip(columns, cell, strict=True))
                if wave != ALL_WAVES:
                    subst = (("wave", wave), *subst)
                out.append(Target(breakdown_name(columns), group_label(cell), wave, subst))
    return out


def gcomp_weights(
    frame: pd.DataFrame,
    layout: DesignLayout,
    spec: ModelSpec,
    *,
    weight: str | None = None,
    min_cell_n: int = MIN_CELL_N,
    composition: Composition | None = None,
) -> xr.Dataset:
    """Weight vectors of every reported adjusted mean (targets x coefficients), the pooled
    mean removed, from the run's composition store (``model.composition``).

    ``weight`` names a column of counts when ``frame`` is a table of counted patterns (a
    streamed pass's); its numeric columns then hold the pattern means. ``n`` is each
    target cell's count (0 under the disclosure threshold); ``empty_share`` the share of
    students a target places in cells without (or with too few) observed students.
    """
    if composition is None:
        composition = Composition.build(frame, layout, min_cell_n=min_cell_n, weight=weight)
    targets = _targets(spec, layout.levels)
    pooled, _ = weight_row(layout, composition, {})
    rows, empty, counts = [], [], []
    for t in targets:
        row, share = weight_row(layout, composition, dict(t.substitute))
        rows.append(row)
        empty.append(share)
        cols = tuple(c for c, _ in t.substitute)
        if cols:
            counts.append(float(composition.table(cols).sel(dict(t.substitute))))
        else:
            counts.append(float(composition.wave_counts.sum()))
    return xr.Dataset(
        {
            "weights": (("target", "coef"), np.stack(rows) - pooled),
            "pooled": (("coef",), pooled),
            "n": (("target",), np.asarray(counts).round().astype(np.int64)),
            "empty_share": (("target",), np.asarray(empty)),
        },
        coords={
            "target": np.arange(len(targets)),
            "coef": layout.coef_names,
            "breakdown": ("target", [t.breakdown for t in targets]),
            "group": ("target", [t.group for t in targets]),
            "wave": ("target", [t.wave for t in targets]),
        },
    )


def coefficient_draws(posterior: xr.Dataset, coef_names: list[str], *, seed: int) -> xr.DataArray:
    """Posterior draws of the named coefficients (chain, draw, coef).

    A group cell the backend did not sample (Bambi keeps only observed cells) is drawn
    from its population distribution N(0, term_sigma), as a new level would be.
    """
    rng = np.random.default_rng(seed)
    shape = (posterior.sizes["chain"], posterior.sizes["draw"])
    columns = []
    # each variable's draws (chain, draw, cell) and cell positions, once per variable: the
    # thousands of school x wave cells of a national run are then a lookup each
    cells: dict[str, tuple[np.ndarray, dict]] = {}
    for full in coef_names:
        match = _COEF.match(full)
        name, coord = match["name"], match["coord"]
        if name not in posterior:
            raise RunError(f"posterior lacks coefficient {name!r}; was it fitted with this spec?")
        var = posterior[name]
        extra = [d for d in var.dims if d not in ("chain", "draw")]
        if coord is not None and name not in cells:
            labels = var[extra[0]].to_numpy()
            positions: dict = {}
            for k, label in enumerate(labels):
                positions.setdefault(label, k)
            cells[name] = (var.transpose("chain", "draw", extra[0]).to_numpy(), positions)
        if coord is None:
            columns.append(var.to_numpy())
        elif coord in cells[name][1]:
            columns.append(cells[name][0][..., cells[name][1][coord]])
        elif name.startswith("1|"):
            columns.append(rng.standard_normal(shape) * posterior[f"{name}_sigma"].to_numpy())
        else:
            raise RunError(f"posterior lacks {full!r}")
    return xr.DataArray(
        np.stack(columns, axis=-1),
        dims=("chain", "draw", "coef"),
        coords={"coef": coef_names},
    )


def effect_draws(posterior: xr.Dataset, gcomp: xr.Dataset, *, seed: int = 0) -> xr.DataArray:
    """Adjusted means minus the pooled mean, draws over (chain, draw, target)."""
    coefs = coefficient_draws(posterior, list(gcomp["coef"].to_numpy()), seed=seed)
    # a matrix product (BLAS) rather than einsum's plain loops: seconds less with thousands
    # of coefficients; the same sums up to the order of the floating-point additions
    draws = xr.dot(coefs, gcomp["weights"], dim="coef", optimize=True)
    return draws.assign_coords(
        breakdown=gcomp["breakdown"], group=gcomp["group"], wave=gcomp["wave"]
    )


GAP_CHANGE = "gap_change"


@dataclass(frozen=True)
class Contrast:
    """effect(group, wave) - effect(reference_group, reference); for ``kind == "gap_change"``
    a difference in differences: the change of ``group`` from ``reference`` to ``wave``
    minus the change of ``reference_group`` over the same waves."""

    breakdown: str
    group: str
    wave: str
    reference_group: str
    reference: str
    kind: str  # "vs_first" | "vs_previous" | "spec_pair" | "between_groups" | "gap_change"


def contrast_terms(
    breakdown: str, group: str, wave: str, reference_group: str, reference: str, kind: str
) -> tuple[tuple[int, tuple[str, str, str]], ...]:
    """The signed cells (breakdown, group, wave) whose effects a contrast adds up."""
    if kind == GAP_CHANGE:
        return (
            (1, (breakdown, group, wave)),
            (-1, (breakdown, group, reference)),
            (-1, (breakdown, reference_group, wave)),
            (1, (breakdown, reference_group, reference)),
        )
    return ((1, (breakdown, group, wave)), (-1, (breakdown, reference_group, reference)))


def contrast_list(
    targets: pd.DataFrame,
    *,
    waves: tuple[str, ...],
    wave_pairs: tuple[tuple[str, str], ...] = (),
) -> list[Contrast]:
    """Every wave against the first and the previous one (per breakdown and group), the
    factsheet's wave pairs, groups against each other within each wave, and how the gap
    between two groups changed from each wave to the next and over the factsheet's pairs
    (``gap_change``: did girls fall more than boys after the summer of 2020?).

    For a cross breakdown ``a x b`` the groups compared share one factor: levels of ``a``
    within each level of ``b`` and levels of ``b`` within each level of ``a``.
    """
    seen: set[tuple[str, str, str, str, str, str]] = set()
    out: list[Contrast] = []

    def add(c: Contrast) -> None:
        key = (c.breakdown, c.group, c.wave, c.reference_group, c.reference, c.kind)
        if key not in seen:
            seen.add(key)
            out.append(c)

    for (breakdown, group), _ in targets.groupby(["breakdown", "group"], sort=False):
        for i, wave in enumerate(waves[1:], start=1):
            add(Contrast(breakdown, group, wave, group, waves[0], "vs_first"))
            add(Contrast(breakdown, group, wave, group, waves[i - 1], "vs_previous"))
        for wave, ref in wave_pairs:
            if wave in waves and ref in waves:
                add(Contrast(breakdown, group, wave, group, ref, "spec_pair"))
    changes = [(waves[i], waves[i - 1]) for i in range(1, len(waves))]
    changes += [(w, r) for w, r in wave_pairs if w in waves and r in waves]
    changes = list(dict.fromkeys(changes))
    for breakdown, sub in targets.groupby("breakdown", sort=False):
        groups = list(dict.fromkeys(sub["group"]))
        if breakdown == "overall":
            continue
        parts = [g.split(":") for g in groups]
        for (ga, pa), (gb, pb) in combinations(zip(groups, parts, strict=True), 2):
            differ = sum(x != y for x, y in zip(pa, pb, strict=True))
            if differ != 1:
                continue  # compare cells that share all but one factor
            for wave in (*waves, ALL_WAVES):
                add(Contrast(breakdown, ga, wave, gb, wave, "between_groups"))
            for wave, ref in changes:
                add(Contrast(breakdown, ga, wave, gb, ref, GAP_CHANGE))
    return out


def contrast_draws(effects: xr.DataArray, contrasts: list[Contrast]) -> xr.DataArray:
    """Draws of each contrast: the signed sum of its cells' effects (``contrast_terms``)."""
    index = {
        (b, g, w): i
        for i, (b, g, w) in enumerate(
            zip(
                effects["breakdown"].to_numpy(),
                effects["group"].to_numpy(),
                effects["wave"].to_numpy(),
                strict=True,
            )
        )
    }
    values = effects.to_numpy()
    rows, cols, signs = [], [], []
    for k, c in enumerate(contrasts):
        for sign, cell in contrast_terms(
            c.breakdown, c.group, c.wave, c.reference_group, c.reference, c.kind
        ):
            rows.append(k)
            cols.append(index[cell])
            signs.append(float(sign))
    # one sparse product (contrasts x cells, entries +-1) instead of a loop over contrasts
    signed = sp.csr_matrix((signs, (rows, cols)), shape=(len(contrasts), values.shape[-1]))
    flat = values.reshape(-1, values.shape[-1])
    out = np.asarray((signed @ flat.T).T).reshape(*values.shape[:-1], len(contrasts))
    return xr.DataArray(
        out,
        dims=("chain", "draw", "contrast"),
        coords={
            "contrast": np.arange(len(contrasts)),
            "breakdown": ("contrast", [c.breakdown for c in contrasts]),
            "group": ("contrast", [c.group for c in contrasts]),
            "wave": ("contrast", [c.wave for c in contrasts]),
            "reference_group": ("contrast", [c.reference_group for c in contrasts]),
            "reference": ("contrast", [c.reference for c in contrasts]),
            "kind": ("contrast", [c.kind for c in contrasts]),
        },
    )


# --- any adjusted mean (the public API's questions) --------------------------------------

ADJUSTED_MEANS_GROUP = "adjusted_means"


def adjusted_mean_weights(
    layout: DesignLayout,
    composition: Composition,
    by: tuple[str, ...],
    *,
    waves: tuple[str, ...],
    reference: object = "pooled",
    schools: str = "any",
    deviation: bool = True,
) -> xr.Dataset:
    """Weight rows of the adjusted mean of every wave x level combination of ``by``.

    ``deviation``: minus the pooled mean (the standardized index scale of effects.csv);
    otherwise the mean itself. Returns ``weights`` (wave, *by, coef), the observed count
    ``n`` of each cell (0 under the disclosure threshold) and ``empty_share`` (the share
    of students placed in cells without observed students).
    """
    levels = {c: composition.levels[c] for c in by}
    pooled, _ = weight_row(layout, composition, {}) if deviation else (0.0, 0.0)
    shape = (len(waves), *(len(levels[c]) for c in by))
    rows = np.empty((*shape, layout.n_coef))
    empty, counts = np.empty(shape), np.empty(shape)
    for k, wave in enumerate(waves):
        for cell in product(*(range(len(levels[c])) for c in by)):
            setting = {"wave": wave, **{c: levels[c][j] for c, j in zip(by, cell, strict=True)}}
            row, share = weight_row(
                layout, composition, setting, reference=reference, schools=schools
            )
            rows[(k, *cell)] = row - pooled
            empty[(k, *cell)] = share
            counts[(k, *cell)] = float(composition.table(("wave", *by)).sel(setting))
    coords = {"wave": list(waves), **{c: list(levels[c]) for c in by}, "coef": layout.coef_names}
    dims = ("wave", *by)
    return xr.Dataset(
        {
            "weights": ((*dims, "coef"), rows),
            "n": (dims, counts.round().astype(np.int64)),
            "empty_share": (dims, empty),
        },
        coords=coords,
    )


def stored_adjusted_means(effects: xr.DataArray, n: np.ndarray, *, min_cell_n: int) -> xr.Dataset:
    """The draws of every reported adjusted mean as one variable per breakdown, with named
    dims (wave, then the breakdown's columns) and level coordinates, so ``az.summary`` and
    ``az.plot_forest`` read them directly. Cells under the disclosure threshold hold NaN."""
    out = {}
    table = pd.DataFrame(
        {
            "breakdown": effects["breakdown"].to_numpy(),
            "group": effects["group"].to_numpy(),
            "wave": effects["wave"].to_numpy(),
        }
    )
    values = effects.transpose("chain", "draw", "target").to_numpy()
    for breakdown, rows in table.groupby("breakdown", sort=False):
        columns = () if breakdown == "overall" else tuple(breakdown.split(" x "))
        waves = list(dict.fromkeys(rows["wave"]))
        cells = list(dict.fromkeys(rows["group"]))
        parts = [tuple(g.split(":")) if columns else () for g in cells]
        level_lists = [list(dict.fromkeys(p[i] for p in parts)) for i in range(len(columns))]
        shape = (*values.shape[:2], len(waves), *(len(lv) for lv in level_lists))
        block = np.full(shape, np.nan)
        for k, r in zip(rows.index, rows.itertuples(), strict=True):
            if n[k] < min_cell_n:
                continue
            part = tuple(r.group.split(":")) if columns else ()
            at = (
                waves.index(r.wave),
                *(lv.index(p) for lv, p in zip(level_lists, part, strict=True)),
            )
            block[(slice(None), slice(None), *at)] = values[..., k]
        out[variable_name(breakdown)] = xr.DataArray(
            block,
            dims=("chain", "draw", "wave", *columns),
            coords={"wave": waves, **dict(zip(columns, level_lists, strict=True))},
        )
    return xr.Dataset(out, coords={"chain": effects["chain"], "draw": effects["draw"]})


def variable_name(breakdown: str) -> str:
    """``"gender x school_type"`` -> ``"by_gender_x_school_type"``; ``"overall"`` stays
    (a name apart from the columns, which are the variables' dims)."""
    return breakdown if breakdown == "overall" else "by_" + breakdown.replace(" x ", "_x_")
