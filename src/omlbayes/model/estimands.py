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
import xarray as xr

from omlbayes.data.schema import breakdown_name, group_label
from omlbayes.errors import RunError, SpecError
from omlbayes.model.design import DesignLayout, encode, weighted_mean_row
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


def _targets(frame: pd.DataFrame, spec: ModelSpec, levels: dict[str, tuple[str, ...]]):
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


def _cell_counts(frame: pd.DataFrame, targets: list[Target], weight: str | None) -> np.ndarray:
    """Students observed in each target cell (the wave x group n of effects.csv)."""
    tables: dict[tuple[str, ...], pd.Series] = {}
    counts = np.empty(len(targets), dtype=np.int64)
    for i, t in enumerate(targets):
        columns = tuple(col for col, _ in t.substitute)
        if not columns:
            counts[i] = len(frame) if weight is None else int(frame[weight].sum())
            continue
        if columns not in tables:  # one groupby per set of columns, not one scan per target
            grouped = frame.groupby(list(columns), observed=True)
            table = grouped.size() if weight is None else grouped[weight].sum()
            table.index = table.index.map(lambda key: tuple(map(str, np.atleast_1d(key))))
            tables[columns] = table
        counts[i] = int(tables[columns].get(tuple(lvl for _, lvl in t.substitute), 0))
    return counts


def gcomp_weights(
    frame: pd.DataFrame, layout: DesignLayout, spec: ModelSpec, *, weight: str | None = None
) -> xr.Dataset:
    """Weight vectors of every adjusted mean (targets x coefficients), pooled mean removed.

    ``weight`` names a column of counts when ``frame`` is a table of counted patterns (a
    streamed pass's); its numeric columns then hold the pattern means. Either gives the
    same weights: only the pooled composition and the cell counts enter.
    """
    categorical = [c for c in layout.levels if c not in POPULATION_LEVEL_COLUMNS]
    numeric = [t.columns[0] for t in layout.terms if t.kind == "numeric"]
    if weight is None:
        patterns = (
            frame.groupby(categorical, observed=True)
            .agg(n=(spec.response, "size"), **{c: (c, "mean") for c in numeric})
            .reset_index()
        )
    else:
        sums = frame[numeric].mul(frame[weight], axis=0).assign(n=frame[weight])
        for c in categorical:
            sums[c] = frame[c]
        patterns = sums.groupby(categorical, observed=True)[["n", *numeric]].sum().reset_index()
        for c in numeric:
            patterns[c] = patterns[c] / patterns["n"]
    for col in POPULATION_LEVEL_COLUMNS:
        if col in layout.levels:  # any valid level; its columns are zeroed below
            patterns[col] = layout.levels[col][0]
    zero = np.zeros(layout.n_coef, dtype=bool)
    for term, sl in zip(layout.terms, layout.slices().values(), strict=True):
        if set(term.columns) & set(POPULATION_LEVEL_COLUMNS):
            zero[sl] = True
    share = patterns["n"].to_numpy(dtype=np.float64) / patterns["n"].sum()
    encoded = encode(patterns, layout)

    def average_row(substitute: tuple[tuple[str, str], ...]) -> np.ndarray:
        codes = dict(encoded)
        for col, lvl in substitute:
            codes[col] = np.full(len(patterns), layout.levels[col].index(lvl))
        row = weighted_mean_row(codes, share, layout)
        row[zero] = 0.0
        return row

    targets = _targets(frame, spec, layout.levels)
    pooled = average_row(())
    weights = np.stack([average_row(t.substitute) - pooled for t in targets])
    return xr.Dataset(
        {
            "weights": (("target", "coef"), weights),
            "pooled": (("coef",), pooled),
            "n": (("target",), _cell_counts(frame, targets, weight)),
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
    out = np.zeros((*values.shape[:-1], len(contrasts)))
    terms = [
        contrast_terms(c.breakdown, c.group, c.wave, c.reference_group, c.reference, c.kind)
        for c in contrasts
    ]
    for position in range(max((len(t) for t in terms), default=0)):
        which = [k for k, t in enumerate(terms) if len(t) > position]
        signs = np.array([terms[k][position][0] for k in which], dtype=float)
        cells = [index[terms[k][position][1]] for k in which]
        out[..., which] += signs * values[..., cells]
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
