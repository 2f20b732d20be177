"""A streamed data pass over a survey stored as parts (a folder or glob of Parquet/CSV files).

After one pass the collapsed fit and every table of a run need only sums, so the client
never holds more than one batch of rows (``batch_rows``, however large a part) and the
statistics, whatever the number of students:

* pass 1 (per batch of a part, summed): ingest checks of the batch (the same one-line
  errors, file = the part, rows of the part), exclusion counts, counted patterns of the
  categorical columns with exact sums of age and the raw index (the standardisation
  constants, rounded once from the exact totals; cell counts,
  the pooled composition behind the g-computation weights, Table 1, school x wave counts),
  item answer counts and complete-case item moments (items, alpha, omega, item-total),
  student-id hashes (duplicates across parts) and school -> region pairs, and a bottom-k
  sample of rows (the predictive-check subsample, fixed by the seed);
* W'W, W'y, y'y and n per residual group then follow from the counted patterns alone
  (:func:`stats_from_patterns`); only a model reading another column needs pass 2 (per
  part, summed), with the index standardised and age centred by the pass-1 constants.

Each per-part step is a plain function of (part, settings) returning summable objects, so
the same reduction runs in this process or on a Dask cluster.
"""

from __future__ import annotations

import glob
import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from omlbayes.constants import DEFAULT_SEED, ITEM_COLUMNS, ITEM_MAX, ITEM_MIN, MIN_ITEMS
from omlbayes.data import exactsum, scale
from omlbayes.data.ingest import BATCH_ROWS, SUFFIXES, ColumnMap, Survey, iter_survey
from omlbayes.data.schema import CATEGORICAL_COLUMNS
from omlbayes.errors import InputError

SAMPLE_ROWS = 4000  # the predictive-check subsample (the in-memory run's size)
PATTERN_COLUMNS = ("school_id", *CATEGORICAL_COLUMNS)
# Summed per pattern: the means give the numeric columns (g-computation), and with the
# squares and the cross-product they give W'W, W'y and y'y exactly (see stats_from_patterns).
# Summed as exact integer limbs (omlbayes.data.exactsum), so every split of the rows (one file,
# parts, batches, Dask tasks) gives the same bits, and the sampler the same draws.
PATTERN_SUMS = ("age", "index_raw", "age_sq", "index_raw_sq", "age_x_index_raw")
LIMB_COLUMNS = {c: [f"{c}#{k}" for k in range(exactsum.LIMBS)] for c in PATTERN_SUMS}
ANSWERS = np.arange(ITEM_MIN, ITEM_MAX + 1)


def is_parts(data: Path | str) -> bool:
    """Whether ``data`` names several parts: a folder or a glob pattern."""
    text = str(data)
    return Path(text).is_dir() or any(ch in text for ch in "*?[")


def list_parts(data: Path | str) -> list[Path]:
    """The part files of a folder (``*.parquet``, ``*.csv`` ...) or glob, sorted by name."""
    text = str(data)
    if Path(text).is_dir():
        parts = [p for p in sorted(Path(text).iterdir()) if p.suffix.lower() in SUFFIXES]
    else:
        parts = [Path(p) for p in sorted(glob.glob(text)) if Path(p).is_file()]
    if not parts:
        raise InputError(
            f"{text}: no survey parts found; give a folder of .parquet/.csv files or a glob "
            "such as 'data/parts/*.parquet'"
        )
    kinds = {SUFFIXES.get(p.suffix.lower()) for p in parts}
    if len(kinds) > 1:
        raise InputError(
            f"{text}: the parts mix file types ({', '.join(sorted(map(str, kinds)))}); "
            "keep one type per folder"
        )
    return parts


# --------------------------------------------------------------------------- summable pieces


@dataclass
class Moments:
    """Count, mean and centred cross-products of vectors, merged exactly (Chan et al.)."""

    n: float
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray) -> Moments:
        x = np.asarray(x, dtype=np.float64)
        x = x.reshape(len(x), -1)
        n = float(len(x))
        if n == 0:
            k = x.shape[1]
            return cls(0.0, np.zeros(k), np.zeros((k, k)))
        mean = x.mean(axis=0)
        dev = x - mean
        return cls(n, mean, dev.T @ dev)

    def __add__(self, other: Moments) -> Moments:
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.m2 + other.m2 + np.outer(delta, delta) * (self.n * other.n / n)
        return Moments(n, mean, m2)

    def cov(self) -> np.ndarray:
        return self.m2 / (self.n - 1.0)


@dataclass
class PartSummary:
    """Pass 1 of one part (or of several, summed with ``+``)."""

    parts: list[str]
    sha256: list[str]
    n_read: int
    exclusions: dict[str, int]
    notes: dict[str, int]
    levels: dict[str, tuple[str, ...]]  # levels found in the data (levels_from_data columns)
    ingest_excluded: int  # rows removed by ingest (before the index's own exclusion)
    wave_counts: dict[str, int]  # students per wave after ingest's exclusions
    patterns: pd.DataFrame  # PATTERN_COLUMNS (as text) + n + the limbs of PATTERN_SUMS
    item_counts: np.ndarray  # (items, answers + 1): counts of 1..5 and of missing
    complete: dict[str, Moments]  # "all" and each wave: complete-case item moments
    id_hashes: list[np.ndarray]  # one array per part
    school_region: dict[str, tuple[str, str]]  # school -> (region, part)
    sample: pd.DataFrame  # bottom-k rows by their random key
    monitor: str = ""
    area: str = ""
    declared: object = None  # the column map's Levels
    min_items: int = MIN_ITEMS
    sample_rows: int = SAMPLE_ROWS
    cmap: ColumnMap | None = None  # to read a part back for an error message
    batch_rows: int = BATCH_ROWS  # ... in the batches of the pass

    def __add__(self, other: PartSummary) -> PartSummary:
        for school, (region, part) in other.school_region.items():
            mine = self.school_region.get(school)
            if mine is not None and mine[0] != region:
                where = "in other rows of this file" if mine[1] == part else f"in {mine[1]}"
                raise InputError(
                    f"{part}: column 'region': school '{school}' is in region '{region}' here "
                    f"but in '{mine[0]}' {where}; a school lies in one region: fix the "
                    "region of those rows or give the schools distinct ids"
                )
        complete = {
            k: self.complete.get(k, _no_moments()) + other.complete.get(k, _no_moments())
            for k in dict.fromkeys([*self.complete, *other.complete])
        }
        sample = pd.concat([self.sample, other.sample], ignore_index=True)
        sample = sample.nsmallest(self.sample_rows, "_key").reset_index(drop=True)
        return replace(
            self,
            parts=self.parts + other.parts,
            sha256=self.sha256 + other.sha256,
            n_read=self.n_read + other.n_read,
            exclusions=_add_counts(self.exclusions, other.exclusions),
            notes=_add_counts(self.notes, other.notes),
            levels={
                c: tuple(sorted(set(self.levels.get(c, ())) | set(other.levels.get(c, ()))))
                for c in dict.fromkeys([*self.levels, *other.levels])
            },
            ingest_excluded=self.ingest_excluded + other.ingest_excluded,
            wave_counts=_add_counts(self.wave_counts, other.wave_counts),
            patterns=_merge_patterns(self.patterns, other.patterns),
            item_counts=self.item_counts + other.item_counts,
            complete=complete,
            id_hashes=self.id_hashes + other.id_hashes,
            school_region={**other.school_region, **self.school_region},
            sample=sample,
        )


def _no_moments() -> Moments:
    k = len(ITEM_COLUMNS)
    return Moments(0.0, np.zeros(k), np.zeros((k, k)))


def _add_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in dict.fromkeys([*a, *b])}


def _merge_patterns(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    both = pd.concat([a, b], ignore_index=True)
    sums = ["n", *(c for cols in LIMB_COLUMNS.values() for c in cols)]
    return both.groupby(list(PATTERN_COLUMNS), sort=False)[sums].sum().reset_index()


def count_patterns(kept: pd.DataFrame) -> pd.DataFrame:
    """Analysed rows (PATTERN_COLUMNS, ``age``, ``index_raw``) as counted patterns.

    One row per distinct pattern: its columns as text, ``n`` and the exact limb sums of
    PATTERN_SUMS (int64; add them across batches and parts, in any order).
    """
    age = kept["age"].to_numpy(dtype=np.float64)
    raw = kept["index_raw"].to_numpy(dtype=np.float64)
    values = {
        "age": age,
        "index_raw": raw,
        "age_sq": age * age,
        "index_raw_sq": raw * raw,
        "age_x_index_raw": age * raw,
    }
    columns: dict[str, object] = {c: kept[c].reset_index(drop=True) for c in PATTERN_COLUMNS}
    columns["n"] = np.ones(len(kept), dtype=np.int64)
    for name, x in values.items():
        for col, limb in zip(LIMB_COLUMNS[name], exactsum.limbs(x).T, strict=True):
            columns[col] = limb
    frame = pd.DataFrame(columns)
    counted = frame.groupby(list(PATTERN_COLUMNS), sort=False, observed=True).sum().reset_index()
    for col in PATTERN_COLUMNS:  # text keys: parts with other category sets merge alike
        counted[col] = counted[col].astype("str")
    return counted


def finish_patterns(counted: pd.DataFrame, levels) -> tuple[pd.DataFrame, dict[str, float]]:
    """Counted patterns in their canonical order (sorted by text) with float sums, and the
    standardisation constants (n, raw_mean, raw_sd, age_mean) from the exact totals.

    The same counted patterns give the same bits, however they were summed.
    """
    counted = counted.sort_values(list(PATTERN_COLUMNS), kind="stable").reset_index(drop=True)
    out = counted[[*PATTERN_COLUMNS, "n"]].copy()
    totals = {}
    for name, cols in LIMB_COLUMNS.items():
        limbs = counted[cols].to_numpy(dtype=np.int64)
        out[name] = exactsum.to_float(limbs)
        totals[name] = limbs.sum(axis=0)
    n = int(out["n"].sum())
    constants = {"n": float(n), "raw_mean": np.nan, "raw_sd": 0.0, "age_mean": np.nan}
    if n:
        raw_mean, raw_sd = exactsum.mean_sd(n, totals["index_raw"], totals["index_raw_sq"])
        age_mean = exactsum.mean(n, totals["age"])
        constants.update(raw_mean=raw_mean, raw_sd=raw_sd, age_mean=age_mean)
    return _categorised(out, levels), constants


def scan_part(
    path: Path | str,
    part_index: int,
    cmap: ColumnMap,
    *,
    min_items: int = MIN_ITEMS,
    seed: int = DEFAULT_SEED,
    sample_rows: int = SAMPLE_ROWS,
    batch_rows: int = BATCH_ROWS,
) -> PartSummary:
    """Pass 1 of one part, read in batches of ``batch_rows`` (``ingest.iter_survey``).

    Memory is bounded by one batch; the sums are those of the whole part, exactly (the
    counted patterns and counts), or to rounding (the item moments behind the tables).
    """
    # one stream of uniform keys per part (the bottom-k sample), whatever the batches
    keys = np.random.default_rng([seed, part_index])
    total = None
    hashes = []
    for survey in iter_survey(path, column_map=cmap, batch_rows=batch_rows):
        batch = _scan_batch(survey, str(path), keys, cmap, min_items, sample_rows)
        hashes += batch.id_hashes
        total = batch if total is None else total + batch
    return replace(
        total,
        parts=[str(path)],
        sha256=total.sha256[:1],
        id_hashes=[np.concatenate(hashes)],
        batch_rows=batch_rows,
    )


def _scan_batch(
    survey: Survey,
    name: str,
    keys: np.random.Generator,
    cmap: ColumnMap,
    min_items: int,
    sample_rows: int,
) -> PartSummary:
    """Pass 1 of one validated batch of a part."""
    frame = survey.frame
    keep, raw = scale.raw_index(frame, min_items=min_items)
    n_excluded = int((~keep).sum())
    exclusions = dict(survey.exclusions)
    if n_excluded:
        reason = scale.EXCLUSION_TOO_FEW_ITEMS.format(k=min_items)
        exclusions[reason] = exclusions.get(reason, 0) + n_excluded
    kept = frame.loc[keep].reset_index(drop=True)
    kept["index_raw"] = raw.to_numpy()
    # every row read counts for duplicate ids (the single-file check sees excluded rows too)
    all_ids = frame["student_id"].to_numpy(dtype=object)
    patterns = count_patterns(kept)
    items = kept[list(ITEM_COLUMNS)].astype("float64").to_numpy()
    counts = np.zeros((len(ITEM_COLUMNS), len(ANSWERS) + 1), dtype=np.int64)
    for j in range(len(ITEM_COLUMNS)):
        col = items[:, j]
        answered = col[~np.isnan(col)].astype(np.int64)
        counts[j, : len(ANSWERS)] = np.bincount(answered - ITEM_MIN, minlength=len(ANSWERS))[
            : len(ANSWERS)
        ]
        counts[j, -1] = int(np.isnan(col).sum())
    complete_rows = ~np.isnan(items).any(axis=1)
    wave = kept["wave"].astype("string").to_numpy()
    complete = {"all": Moments.of(items[complete_rows])}
    for level in dict.fromkeys(wave[complete_rows]):
        complete[str(level)] = Moments.of(items[complete_rows & (wave == level)])
    pairs = kept[["school_id", "region"]].drop_duplicates("school_id")
    row_keys = keys.random(len(kept))  # the part's key stream continues across its batches
    take = np.argsort(row_keys, kind="stable")[:sample_rows]
    sample = kept.iloc[take].assign(_key=row_keys[take]).reset_index(drop=True)
    found = {c: survey.levels.of(c) for c in cmap.levels_from_data}
    return PartSummary(
        parts=[name],
        sha256=[survey.sha256],
        n_read=survey.n_read,
        exclusions=exclusions,
        notes=dict(survey.notes),
        levels=found,
        ingest_excluded=sum(survey.exclusions.values()),
        wave_counts={
            str(k): int(v) for k, v in frame["wave"].astype("string").value_counts().items()
        },
        patterns=patterns,
        item_counts=counts,
        complete=complete,
        id_hashes=[pd.util.hash_array(all_ids)],
        school_region={
            str(s): (str(r), name) for s, r in zip(pairs.school_id, pairs.region, strict=True)
        },
        sample=sample,
        monitor=survey.monitor,
        area=survey.area,
        declared=survey.levels,
        min_items=min_items,
        sample_rows=sample_rows,
        cmap=cmap,
    )


# --------------------------------------------------------------------------- the whole pass


@dataclass
class StreamedSurvey:
    """Everything a run needs from the data, from sums over its parts."""

    source: str
    sha256: str
    n_read: int
    n_analysed: int
    exclusions: dict[str, int]
    notes: dict[str, int]
    levels: object  # schema.Levels (declared, with levels found for levels_from_data)
    monitor: str
    area: str
    raw_mean: float
    raw_sd: float
    age_mean: float
    min_items: int
    patterns: pd.DataFrame  # counted patterns: PATTERN_COLUMNS, n, age, age_c, index_raw, index
    pattern_sums: pd.DataFrame  # the same patterns: n and the raw PATTERN_SUMS
    item_counts: np.ndarray
    complete: dict[str, Moments]
    sample: pd.DataFrame  # <= SAMPLE_ROWS analysed rows, standardised like the fit's
    parts: list[str]

    def tables(self) -> dict[str, pd.DataFrame]:
        """The run's descriptive tables (as :func:`frame_tables` gives them from rows)."""
        from omlbayes.data.descriptives import composition_table

        table1 = composition_table(self.patterns, by_wave=True, weight="n")
        n = self.item_counts[:, : len(ANSWERS)].sum(axis=1)
        records = []
        for j, item in enumerate(ITEM_COLUMNS):
            row: dict[str, object] = {
                "item": item,
                "n": int(n[j]),
                "n_missing": int(self.item_counts[j, -1]),
                "mean": float(self.item_counts[j, : len(ANSWERS)] @ ANSWERS / n[j])
                if n[j]
                else np.nan,
            }
            for a, answer in enumerate(ANSWERS):
                row[f"pct_{answer}"] = (
                    100.0 * int(self.item_counts[j, a]) / n[j] if n[j] else np.nan
                )
            records.append(row)
        items = pd.DataFrame.from_records(records)
        reliability = pd.DataFrame.from_records(
            [
                {
                    "group": group,
                    "n_complete": int(m.n),
                    "alpha": scale.alpha_from_cov(m.cov()),
                    "omega": scale.omega_from_corr(_corr(m.cov())),
                }
                for group, m in self._reliability_groups()
            ]
        )
        item_total = scale.item_total_from_cov(self.complete["all"].cov(), ITEM_COLUMNS)
        schools = (
            self.patterns.groupby(["school_id", "region", "wave"], observed=True)["n"]
            .sum()
            .reset_index()
        )
        schools = schools[schools["n"] > 0].reset_index(drop=True)
        return {
            "table1": table1,
            "items": items,
            "reliability": reliability,
            "item_total": item_total,
            "schools": schools,
        }

    def _reliability_groups(self):
        yield "all", self.complete["all"]
        for wave in self.levels.of("wave"):
            if wave in self.complete and self.complete[wave].n > 0:
                yield wave, self.complete[wave]


def _corr(cov: np.ndarray) -> np.ndarray:
    sd = np.sqrt(np.diag(cov))
    return cov / np.outer(sd, sd)


def frame_tables(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The run's descriptive tables from the analysed rows (the in-memory path)."""
    from omlbayes.data.descriptives import composition_table, item_distribution

    schools = (
        frame.groupby(["school_id", "region", "wave"], observed=True)
        .size()
        .rename("n")
        .reset_index()
    )
    return {
        "table1": composition_table(frame, by_wave=True),
        "items": item_distribution(frame),
        "reliability": scale.reliability(frame),
        "item_total": scale.item_total_correlations(frame[list(ITEM_COLUMNS)]),
        "schools": schools,
    }


def summarise_parts(summaries: list[PartSummary], source: str) -> StreamedSurvey:
    """Sum pass-1 summaries and check what needs the whole data (ids, levels present)."""
    total = summaries[0]
    for s in summaries[1:]:
        total = total + s
    _check_duplicates(total)
    _check_whole(total, source)
    levels = total.declared
    if total.levels:
        levels = replace(levels, **{c: v for c, v in total.levels.items()})
    pattern_sums, constants = finish_patterns(total.patterns, levels)
    n = int(constants["n"])
    if n == 0:
        raise InputError(
            f"{source}: no student answered at least {total.min_items} of the "
            f"{len(ITEM_COLUMNS)} items; check the item columns or lower min_items"
        )
    raw_mean, raw_sd, age_mean = (constants[k] for k in ("raw_mean", "raw_sd", "age_mean"))
    if not raw_sd > 0:
        raise InputError("the index has no variation: every student has the same item mean")
    patterns = _standardised(pattern_sums, raw_mean, raw_sd, age_mean)
    sample = total.sample.drop(columns="_key")
    sample = _categorised(sample, levels)
    sample["index"] = (sample["index_raw"] - raw_mean) / raw_sd
    sample["age_c"] = sample["age"] - age_mean
    digest = hashlib.sha256("\n".join(total.sha256).encode()).hexdigest()
    return StreamedSurvey(
        source=source,
        sha256=digest,
        n_read=total.n_read,
        n_analysed=n,
        exclusions=total.exclusions,
        notes=total.notes,
        levels=levels,
        monitor=total.monitor,
        area=total.area,
        raw_mean=raw_mean,
        raw_sd=raw_sd,
        age_mean=age_mean,
        min_items=total.min_items,
        patterns=patterns,
        pattern_sums=pattern_sums,
        item_counts=total.item_counts,
        complete=total.complete,
        sample=sample,
        parts=total.parts,
    )


def _categorised(frame: pd.DataFrame, levels) -> pd.DataFrame:
    out = frame.copy()
    for col in CATEGORICAL_COLUMNS:
        out[col] = pd.Categorical(
            out[col].astype("string"),
            categories=pd.Index(levels.of(col), dtype="str"),
            ordered=True,
        )
    out["school_id"] = out["school_id"].astype("str")
    return out


def _standardised(patterns: pd.DataFrame, raw_mean: float, raw_sd: float, age_mean: float):
    out = patterns.drop(columns=[c for c in PATTERN_SUMS if c not in ("age", "index_raw")])
    out["age"] = out["age"] / out["n"]
    out["age_c"] = out["age"] - age_mean
    out["index_raw"] = out["index_raw"] / out["n"]
    out["index"] = (out["index_raw"] - raw_mean) / raw_sd
    return out


def _check_whole(total: PartSummary, source: str) -> None:
    """The checks of ``ingest`` that need every row, made on the sums (same messages)."""
    from omlbayes.data.ingest import MAX_EXCLUDED_SHARE

    if total.ingest_excluded > MAX_EXCLUDED_SHARE * total.n_read:
        reasons = ", ".join(
            f"{k}: {v}" for k, v in sorted(total.exclusions.items(), key=lambda kv: -kv[1])
        )
        raise InputError(
            f"{source}: {total.ingest_excluded} of {total.n_read} rows would be excluded "
            f"({reasons}); more than half: check that the columns are mapped right and that "
            "missing_values in the column map does not list a real value"
        )
    waves = total.levels.get("wave") or total.declared.of("wave")
    empty = [w for w in waves if total.wave_counts.get(w, 0) == 0]
    if empty:
        raise InputError(
            f"{source}: column 'wave' has no students in declared "
            f"wave{'s' if len(empty) > 1 else ''} {', '.join(repr(w) for w in empty)} in any "
            "part; declare the waves you have, in order, with [levels] wave = [...] in a "
            "column map (see data/column_maps/oml_default.toml)"
        )
    if total.item_counts[:, : len(ANSWERS)].sum() == 0:
        raise InputError(
            f"{source}: columns item_1..item_6 (the six items) are empty for every student in "
            "every part; map the item columns in [rename] of the column map or fix the files"
        )


def _check_duplicates(total: PartSummary) -> None:
    hashes = np.concatenate(total.id_hashes)
    part_of = np.repeat(np.arange(len(total.id_hashes)), [len(h) for h in total.id_hashes])
    order = np.argsort(hashes, kind="stable")
    same = hashes[order][1:] == hashes[order][:-1]
    if not same.any():
        return
    i = int(np.flatnonzero(same)[0])
    a, b = order[i], order[i + 1]
    parts = total.parts
    first, second = parts[part_of[a]], parts[part_of[b]]
    # only now, on the error path, read the id back (the pass keeps 8-byte hashes)
    offset = int(b - np.flatnonzero(part_of == part_of[b])[0])
    repeated = None
    for survey in iter_survey(second, column_map=total.cmap, batch_rows=total.batch_rows):
        if offset < len(survey.frame):
            repeated = survey.frame["student_id"].iloc[offset]
            break
        offset -= len(survey.frame)
    where = "in other rows of this file" if first == second else f"of {first}"
    across = "across batches" if first == second else "across parts"
    raise InputError(
        f"{second}: column 'student_id' repeats id '{repeated}' {where} (duplicate ids "
        f"{across}); each row must be one student: delete the repeated rows or fix the ids"
    )


def analysed_batches(
    path: Path | str, cmap: ColumnMap, survey: StreamedSurvey, batch_rows: int = BATCH_ROWS
):
    """A part's analysed rows, batch by batch, scaled with the whole data's constants."""
    for batch in iter_survey(path, column_map=cmap, batch_rows=batch_rows):
        yield _analysed(batch.frame, cmap, survey)


def _analysed(frame: pd.DataFrame, cmap: ColumnMap, survey: StreamedSurvey) -> pd.DataFrame:
    keep, raw = scale.raw_index(frame, min_items=survey.min_items)
    kept = frame.loc[keep].reset_index(drop=True)
    for col in cmap.levels_from_data:  # the levels of all parts, as one file would have
        kept[col] = pd.Categorical(
            kept[col].astype("string"),
            categories=pd.Index(survey.levels.of(col), dtype="str"),
            ordered=True,
        )
    kept["index_raw"] = raw.to_numpy()
    kept["index"] = (kept["index_raw"] - survey.raw_mean) / survey.raw_sd
    kept["age_c"] = kept["age"].astype("float64") - survey.age_mean
    return kept
