"""Ingest: read a survey file, apply the column map, validate, return the canonical frame.

Readers: CSV (``,`` ``;`` or tab, sniffed from the header; UTF-8 unless the map says
otherwise), Parquet, SPSS ``.sav``/``.zsav`` and Stata ``.dta``, chosen by suffix.

A column map (TOML, see ``data/column_maps/oml_default.toml``) renames the file's
columns to the canonical schema (``omlbayes.data.schema``), recodes values to canonical
levels and declares the levels and their order.

How a categorical value finds its level, first match wins:

1. a missing-value string (built-in ones plus the map's ``missing_values``) -> missing;
2. an exact key of ``[recode.<column>]`` (numeric codes as written, ``1`` not ``1.0``);
3. an exact declared level;
4. for SPSS/Stata numeric codes with value labels (``use_value_labels``): the label,
   tried as in 2 and 3;
5. the same lookups ignoring case and treating runs of spaces, ``-`` and ``_`` alike
   (``"Noord-Limburg"`` -> ``noord_limburg``, ``" HAVO"`` -> ``havo``), but only when
   exactly one level fits; an ambiguous value is an error asking for an exact recode.

Every problem raises ``InputError`` with one line: the file, the column (as named in the
file, with the canonical name), example rows and the fix. Row numbers are 1-based data
rows: row 1 is the first row below the header (the case number in SPSS's Data View;
sheet row 2 in Excel). Rows with a missing covariate are excluded and counted per
reason in ``Survey.exclusions`` (a row missing several is counted once, under the first
in the order region, wave, gender, school_type, parent_edu, age); all validation is
vectorized (categorical values are resolved once per distinct value).
"""

from __future__ import annotations

import codecs
import csv
import difflib
import hashlib
import io
import os
import re
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from omlbayes.constants import AGE_RANGE, ITEM_COLUMNS, ITEM_MAX, ITEM_MIN
from omlbayes.data.schema import CATEGORICAL_COLUMNS, ID_COLUMNS, REQUIRED_COLUMNS, Levels
from omlbayes.errors import InputError

# Strings that mean "missing" in every file; a column map may add more (e.g. "-9").
DEFAULT_MISSING = ("", "NA", "N/A", "NaN", "nan", "NULL", "null", ".")
DELIMITERS = (",", ";", "\t")
SUFFIXES = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".sav": "sav",
    ".zsav": "sav",
    ".dta": "dta",
}
LEVELS_FROM_DATA = "from_data"
MAX_EXCLUDED_SHARE = 0.5
BATCH_ROWS = 250_000  # rows per batch of a streamed read (iter_survey)
# Exclusion order: a row missing several covariates is counted under the first.
EXCLUSION_ORDER = (*CATEGORICAL_COLUMNS, "age")
NOTE_PARENT_EDU_UNKNOWN = "parent_edu missing -> unknown"
EXCLUSION_BLANK_ROW = "blank row"

# Names real exports use, to suggest a [rename] entry when a canonical column is missing.
_COLUMN_HINTS = {
    "student_id": ("leerling_id", "leerlingnummer", "leerling", "respondent", "id", "resp_id"),
    "school_id": ("brin", "brinnummer", "school", "vestiging", "brin_vest"),
    "region": ("regio", "gemeente", "rmc"),
    "wave": ("meting", "jaar", "year", "ronde", "golf"),
    "gender": ("geslacht", "sexe", "sex"),
    "school_type": ("schooltype", "onderwijstype", "niveau", "opleiding"),
    "parent_edu": ("opl_ouders", "opleiding_ouders", "ses", "ouderopleiding"),
    "age": ("leeftijd", "lft"),
}
_MAP_KEYS = (
    "encoding",
    "delimiter",
    "use_value_labels",
    "missing_values",
    "rename",
    "levels",
    "recode",
    "monitor",
)
_MONITOR_KEYS = ("name", "area")
# The shipped OML data (no column map) name their monitor; a column map names its own.
OML_MONITOR = ("OnderwijsMonitor Limburg", "Limburg")

# Resolution codes for categorical values (non-negative codes are level positions).
_MISSING, _UNKNOWN, _AMBIGUOUS = -1, -2, -3


@dataclass(frozen=True)
class ColumnMap:
    """How a real file maps onto the canonical schema (parsed from a TOML column map).

    ``ColumnMap()`` is the identity map with the OML default levels.
    """

    rename: dict[str, str] = field(default_factory=dict)  # file column -> canonical column
    recode: dict[str, dict[str, str]] = field(default_factory=dict)  # column -> {value: level}
    levels: Levels = field(default_factory=Levels)  # declared levels, in order
    missing_values: tuple[str, ...] = ()  # extra strings meaning "missing"
    use_value_labels: bool = True  # resolve SPSS/Stata codes through their value labels
    delimiter: str | None = None  # CSV delimiter; None sniffs , ; or tab from the header
    encoding: str = "utf-8"  # CSV text encoding
    levels_from_data: tuple[str, ...] = ()  # columns whose levels are the values found
    source: str = "the default column map"  # for messages
    monitor: str = OML_MONITOR[0]  # the survey's name for the report ("" names none)
    area: str = OML_MONITOR[1]  # the area all schools together cover ("" names none)


@dataclass(frozen=True)
class Survey:
    """A validated survey in the canonical schema, with its provenance and exclusions."""

    frame: pd.DataFrame
    levels: Levels
    source: str
    sha256: str
    n_read: int
    exclusions: dict[str, int]  # reason -> rows removed at ingest
    notes: dict[str, int] = field(default_factory=dict)  # recodes that kept rows
    monitor: str = ""  # from the column map's [monitor]
    area: str = ""


# --------------------------------------------------------------------------- column map


def load_column_map(path: Path | str | None) -> ColumnMap:
    """Parse and validate a TOML column map; ``None`` gives the OML identity map.

    Raises
    ------
    InputError
        The file is missing, not TOML, has unknown keys, renames to an unknown canonical
        column, or recodes to a level that is not declared.
    """
    if path is None:
        return ColumnMap()
    name = str(path)
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{name}: column map not found; check the path")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{name}: column map is not UTF-8 text; save it as UTF-8") from None
    except tomllib.TOMLDecodeError as err:
        raise InputError(
            f"{name}: column map is not valid TOML ({_one_line(err)}); fix the syntax "
            '(quote keys and values with special characters, e.g. "VMBO-BB/KB" = "vmbo_bk")'
        ) from None
    unknown = sorted(set(doc) - set(_MAP_KEYS))
    if unknown:
        raise InputError(
            f"{name}: unknown key {_quote(unknown)}{_did_you_mean(unknown[0], _MAP_KEYS)}; "
            f"a column map has only {', '.join(_MAP_KEYS)}"
        )
    cmap = ColumnMap(
        rename=_str_table(doc, "rename", name),
        recode={
            col: _str_table(doc["recode"], col, name, "recode.") for col in doc.get("recode", {})
        },
        levels=Levels(),
        missing_values=_str_list(doc.get("missing_values", []), "missing_values", name),
        use_value_labels=_bool(doc.get("use_value_labels", True), "use_value_labels", name),
        delimiter=_delimiter(doc.get("delimiter", "auto"), name),
        encoding=_encoding(doc.get("encoding", "utf-8"), name),
        source=name,
        monitor=_monitor(doc, "name", name),
        area=_monitor(doc, "area", name),
    )
    levels_doc = doc.get("levels", {})
    if not isinstance(levels_doc, dict):
        raise InputError(f"{name}: 'levels' must be a table ([levels]); see oml_default.toml")
    declared: dict[str, tuple[str, ...]] = {}
    from_data: list[str] = []
    for col, value in levels_doc.items():
        if col not in CATEGORICAL_COLUMNS:
            raise InputError(
                f"{name}: [levels] names '{col}', which is not a categorical column"
                f"{_did_you_mean(col, CATEGORICAL_COLUMNS)}; use one of "
                f"{', '.join(CATEGORICAL_COLUMNS)}"
            )
        if value == LEVELS_FROM_DATA:
            from_data.append(col)
            declared[col] = ()
            continue
        values = _str_list(value, f"levels.{col}", name)
        if not values:
            raise InputError(f"{name}: [levels] {col} is empty; list its levels in order")
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            raise InputError(f"{name}: [levels] {col} lists {_quote(dupes)} twice; list each once")
        declared[col] = values
    cmap = replace(cmap, levels=replace(Levels(), **declared), levels_from_data=tuple(from_data))
    _check_map(cmap)
    return cmap


def _monitor(doc: dict, key: str, name: str) -> str:
    """``[monitor] name`` / ``area`` of a column map; "" when not given (names none)."""
    table = doc.get("monitor", {})
    if not isinstance(table, dict):
        raise InputError(f"{name}: 'monitor' must be a table ([monitor] name = ..., area = ...)")
    unknown = sorted(set(table) - set(_MONITOR_KEYS))
    if unknown:
        raise InputError(
            f"{name}: [monitor] has unknown key {unknown[0]!r}; allowed: {', '.join(_MONITOR_KEYS)}"
        )
    value = table.get(key, "")
    if not isinstance(value, str):
        raise InputError(f"{name}: [monitor] {key} must be text")
    return value.strip()


def _check_map(cmap: ColumnMap) -> None:
    """Cross-checks of a column map (also run on a ``ColumnMap`` built in code)."""
    name = cmap.source
    targets: dict[str, str] = {}
    for file_col, canon in cmap.rename.items():
        if canon not in REQUIRED_COLUMNS:
            raise InputError(
                f"{name}: [rename] maps '{file_col}' to '{canon}', which is not a canonical "
                f"column{_did_you_mean(canon, REQUIRED_COLUMNS)}; use one of "
                f"{', '.join(REQUIRED_COLUMNS)}"
            )
        if canon in targets:
            raise InputError(
                f"{name}: [rename] maps both '{targets[canon]}' and '{file_col}' to '{canon}'; "
                "keep one of them"
            )
        targets[canon] = file_col
    for col, table in cmap.recode.items():
        if col not in CATEGORICAL_COLUMNS:
            raise InputError(
                f"{name}: [recode.{col}] names '{col}', which is not a categorical column"
                f"{_did_you_mean(col, CATEGORICAL_COLUMNS)}; recode tables use the canonical "
                f"names {', '.join(CATEGORICAL_COLUMNS)}"
            )
        if col in cmap.levels_from_data:
            continue
        declared = cmap.levels.of(col)
        for value, level in table.items():
            if level not in declared:
                raise InputError(
                    f"{name}: [recode.{col}] maps '{value}' to '{level}', which is not a "
                    f"declared level of {col} ({', '.join(declared)}); use one of them or "
                    f"add it under [levels] {col}"
                )


def _str_table(doc: dict, key: str, name: str, prefix: str = "") -> dict[str, str]:
    table = doc.get(key, {})
    if not isinstance(table, dict):
        raise InputError(f"{name}: '{prefix}{key}' must be a table ([{prefix}{key}])")
    out = {}
    for k, v in table.items():
        # Bare numbers are fine as targets (waves like 2014); anything else is a mistake.
        if isinstance(v, bool) or not isinstance(v, str | int):
            raise InputError(
                f"{name}: [{prefix}{key}] '{k}' must map to a string, got {v!r}; quote it"
            )
        out[str(k).strip()] = str(v).strip()
    return out


def _str_list(value: object, key: str, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(
        isinstance(v, str | int) and not isinstance(v, bool) for v in value
    ):
        raise InputError(f'{name}: {key} must be a list of strings, e.g. ["a", "b"]')
    return tuple(str(v).strip() for v in value)


def _bool(value: object, key: str, name: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{name}: {key} must be true or false, got {value!r}")
    return value


def _delimiter(value: object, name: str) -> str | None:
    if value == "auto":
        return None
    if value not in DELIMITERS:
        raise InputError(
            f'{name}: delimiter must be "auto", ",", ";" or "\\t", got {value!r}; fix the map'
        )
    return str(value)


def _encoding(value: object, name: str) -> str:
    try:
        return codecs.lookup(str(value)).name
    except LookupError:
        raise InputError(
            f'{name}: unknown encoding {value!r}; use e.g. "utf-8", "cp1252" or "latin-1"'
        ) from None


# --------------------------------------------------------------------------- readers


@dataclass(frozen=True)
class _Raw:
    frame: pd.DataFrame  # file columns as read; index = 0-based data row in the file
    header: tuple[str, ...]  # column names as in the file (duplicates kept)
    value_labels: dict[str, dict[str, str]]  # file column -> {code as str -> label}


def read_survey(
    path: Path | str,
    *,
    column_map: Path | str | ColumnMap | None = None,
    whole_file: bool = True,
) -> Survey:
    """Read a survey file, map it onto the canonical schema and validate it.

    Parameters
    ----------
    path
        A ``.csv``/``.tsv``/``.txt``, ``.parquet``, ``.sav``/``.zsav`` or ``.dta`` file.
    column_map
        A TOML column map, a parsed ``ColumnMap``, or ``None`` for the OML defaults.
    whole_file
        False for one part of a survey stored in parts: the checks that need every row
        (each declared wave has students, at most half excluded, some item answered) are
        then left to the streamed pass, which makes them on the sums (``datapass``).

    Returns
    -------
    Survey
        The canonical frame (schema column order; ordered categoricals with the declared
        levels; ``age`` float64; items ``Int64``) plus hash, row count and exclusions.

    Raises
    ------
    InputError
        One line naming the file, column, rows and the fix.
    """
    cmap, name, path, kind = _open_survey_file(path, column_map)
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if not data.strip():
        raise InputError(f"{name}: the file is empty; export the survey again")
    if kind == "csv":
        raw = _read_csv(data, name, cmap)
    elif kind == "parquet":
        raw = _read_parquet(path, name)
    else:
        raw = _read_stat(path, name, kind)
    n_read = len(raw.frame)
    if n_read == 0:
        raise InputError(f"{name}: the file has a header but no data rows; export it with data")
    frame, origin = _rename(raw, name, cmap)
    return _validate(frame, origin, raw.value_labels, name, cmap, sha, n_read, whole_file)


def _open_survey_file(
    path: Path | str, column_map: Path | str | ColumnMap | None
) -> tuple[ColumnMap, str, Path, str]:
    """The column map and the checks every survey file passes before it is read: it exists,
    is a file, and its suffix names a reader. (map, name as given, path, reader kind)."""
    cmap = column_map if isinstance(column_map, ColumnMap) else load_column_map(column_map)
    if isinstance(column_map, ColumnMap):
        _check_map(cmap)
    name = str(path)
    path = Path(path)
    if not path.exists():
        raise InputError(f"{name}: file not found; check the path (relative to {os.getcwd()})")
    if not path.is_file():
        raise InputError(f"{name}: is a directory, not a survey file; give the file's path")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise InputError(
            f"{name}: unknown file type '{path.suffix}'; save the survey as "
            f"{', '.join(SUFFIXES)} (the suffix chooses the reader)"
        )
    return cmap, name, path, kind


def iter_survey(
    path: Path | str,
    *,
    column_map: Path | str | ColumnMap | None = None,
    batch_rows: int = BATCH_ROWS,
) -> Iterator[Survey]:
    """One part of a survey in batches of at most ``batch_rows`` rows, memory bounded by one.

    Each batch is validated as :func:`read_survey` validates a part (``whole_file=False``),
    with row numbers counted from the file's first data row, so errors name the same rows;
    ``sha256`` is the whole file's (hashed in blocks) and ``n_read`` the batch's rows. Parquet
    is read by row batches, CSV in chunks (trailing blank rows are not rows, as in
    ``read_survey``); SPSS and Stata files have no streamed reader here and come whole.
    Checks across batches (duplicate ids, a school in two regions) are the caller's.
    """
    if batch_rows < 1:
        raise InputError(f"batch_rows must be at least 1, got {batch_rows}")
    cmap, name, path, kind = _open_survey_file(path, column_map)
    sha, blank_file = _hash_file(path)
    if blank_file:
        raise InputError(f"{name}: the file is empty; export the survey again")
    if kind == "csv":
        raws = _csv_batches(path, name, cmap, batch_rows)
    elif kind == "parquet":
        raws = _parquet_batches(path, name, batch_rows)
    else:
        raws = iter([_read_stat(path, name, kind)])
    start = 0
    for raw in raws:
        n = len(raw.frame)
        if n == 0:
            continue
        raw.frame.index = pd.RangeIndex(start, start + n)  # rows of the file, for messages
        frame, origin = _rename(raw, name, cmap)
        yield _validate(frame, origin, raw.value_labels, name, cmap, sha, n, whole_file=False)
        start += n
    if start == 0:
        raise InputError(f"{name}: the file has a header but no data rows; export it with data")


def _hash_file(path: Path, block: int = 1 << 22) -> tuple[str, bool]:
    """The file's SHA-256, read in blocks, and whether it holds nothing but whitespace."""
    digest = hashlib.sha256()
    blank = True
    with path.open("rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
            blank = blank and not chunk.strip()
    return digest.hexdigest(), blank


def _parquet_batches(path: Path, name: str, batch_rows: int) -> Iterator[_Raw]:
    import pyarrow
    import pyarrow.parquet as pq

    def damaged(err: BaseException) -> InputError:
        return InputError(
            f"{name}: cannot read as Parquet ({_first_sentence(err)}); the file is damaged or "
            "not Parquet: export it again"
        )

    try:
        reader = pq.ParquetFile(path)
        header = tuple(str(c) for c in reader.schema_arrow.names)
        batches = reader.iter_batches(batch_size=batch_rows)
    except (pyarrow.ArrowException, OSError, ValueError) as err:
        raise damaged(err) from None
    while True:
        try:
            batch = next(batches, None)
            if batch is None:
                return
            # through a table, so the file's pandas metadata applies as in pd.read_parquet
            frame = pyarrow.Table.from_batches([batch]).to_pandas()
        except (pyarrow.ArrowException, OSError, ValueError) as err:
            raise damaged(err) from None
        yield _Raw(frame.reset_index(drop=True), header, {})


def _csv_batches(path: Path, name: str, cmap: ColumnMap, batch_rows: int) -> Iterator[_Raw]:
    """CSV in chunks of text cells, as ``_read_csv`` reads the whole file.

    Blank rows at the end of a chunk wait for the next one: they are rows only if a data
    row follows them (trailing blank rows of the file are dropped, as ``_read_csv`` does).
    """
    encoding = "utf-8-sig" if cmap.encoding == "utf-8" else cmap.encoding  # Excel's BOM
    with path.open("rb") as fh:
        first = fh.readline()
    try:
        header_line = first.decode(encoding).rstrip("\r\n")
    except UnicodeDecodeError as err:
        _read_csv(path.read_bytes(), name, cmap)  # the whole file's one-line message
        raise InputError(f"{name}: cannot decode as {cmap.encoding} ({err.reason})") from None
    sep = cmap.delimiter or max(DELIMITERS, key=header_line.count)
    header = tuple(next(csv.reader([header_line], delimiter=sep), []))
    chunks = pd.read_csv(
        path,
        sep=sep,
        dtype=str,
        keep_default_na=False,
        na_values=[],
        skip_blank_lines=False,
        encoding=encoding,
        chunksize=batch_rows,
    )
    waiting: pd.DataFrame | None = None
    first_chunk = True
    while True:
        try:
            chunk = next(chunks, None)
        except UnicodeDecodeError as err:
            _read_csv(path.read_bytes(), name, cmap)  # error path: the whole file's message
            raise InputError(f"{name}: cannot decode as {cmap.encoding} ({err.reason})") from None
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            _csv_careful(path.read_text(encoding=encoding), sep, name)  # its one line
            raise InputError(
                f"{name}: cannot parse as CSV ({_one_line(err)}); fix the file"
            ) from None
        if chunk is None:
            return
        if first_chunk and chunk.shape[1] == 1 and len(REQUIRED_COLUMNS) > 1:
            _read_csv(first, name, cmap)  # the header alone gives the one-column message
        first_chunk = False
        if waiting is not None:
            chunk = pd.concat([waiting, chunk], ignore_index=True)
        blank = (chunk.isna() | chunk.eq("")).all(axis=1).to_numpy()
        last = np.flatnonzero(~blank)
        end = int(last[-1]) + 1 if len(last) else 0
        waiting = chunk.iloc[end:] if end < len(chunk) else None
        if end:
            yield _Raw(chunk.iloc[:end].reset_index(drop=True), header, {})


def _read_csv(data: bytes, name: str, cmap: ColumnMap) -> _Raw:
    encoding = "utf-8-sig" if cmap.encoding == "utf-8" else cmap.encoding  # Excel's BOM
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        raise InputError(_encoding_message(data, err, name, cmap)) from None
    header_line = text.split("\n", 1)[0].rstrip("\r")
    sep = cmap.delimiter or max(DELIMITERS, key=header_line.count)
    header = tuple(next(csv.reader([header_line], delimiter=sep), []))
    frame = _csv_fast(data, text, sep, header, encoding)
    if frame is None:
        frame = _csv_careful(text, sep, name)
    if frame.shape[1] == 1 and len(REQUIRED_COLUMNS) > 1:
        other = [d for d in DELIMITERS if d != sep and d in header_line]
        fix = (
            f'set delimiter = "{other[0]}" in the column map or remove delimiter to auto-detect'
            if other and cmap.delimiter
            else "save it separated by comma, semicolon or tab"
        )
        raise InputError(
            f"{name}: every value is in one column '{frame.columns[0][:40]}' "
            f"(separator {_sep_name(sep)} not found in the header); {fix}"
        )
    # Trailing empty rows (blank lines, or ";;;;" rows from Excel) are not rows;
    # interior ones are kept so row numbers match, and are counted as blank rows later.
    blank = (frame.isna() | frame.eq("")).all(axis=1).to_numpy()
    if blank.any():
        last = np.flatnonzero(~blank)
        frame = frame.iloc[: (last[-1] + 1) if len(last) else 0]
    return _Raw(frame, header, {})


def _csv_fast(
    data: bytes, text: str, sep: str, header: tuple[str, ...], encoding: str
) -> pd.DataFrame | None:
    """pyarrow's multi-threaded parser (4x faster at a million rows), for clean files.

    ``None`` sends the file to the careful parser: interior blank lines (rows there, so
    row numbers stay right) or anything pyarrow rejects (the careful one says which row).
    """
    import pyarrow
    import pyarrow.csv as pacsv

    body = data.rstrip(b"\r\n")
    if b"\n\n" in body or b"\n\r\n" in body or len(set(header)) < len(header):
        return None
    payload = data if encoding == "utf-8-sig" and not data.startswith(codecs.BOM_UTF8) else None
    try:
        table = pacsv.read_csv(
            io.BytesIO(payload if payload is not None else text.encode("utf-8")),
            parse_options=pacsv.ParseOptions(delimiter=sep, newlines_in_values=True),
            # All as text: we parse numbers ourselves to report bad cells by row.
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(header, pyarrow.string()),
                null_values=[],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pyarrow.ArrowException:
        return None
    text_dtype = pd.StringDtype("pyarrow", na_value=np.nan)
    return table.to_pandas(types_mapper={pyarrow.string(): text_dtype}.get)


def _csv_careful(text: str, sep: str, name: str) -> pd.DataFrame:
    try:
        # Blank lines are kept as rows so row numbers match the file; dropped below.
        return pd.read_csv(
            io.StringIO(text),
            sep=sep,
            dtype=str,
            keep_default_na=False,
            na_values=[],
            skip_blank_lines=False,
        )
    except pd.errors.ParserError as err:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
        if found:
            want, line, saw = found.groups()
            raise InputError(
                f"{name}: row {int(line) - 1} has {saw} fields but the header has {want} "
                f"(separator {_sep_name(sep)}); quote values that contain the separator "
                "(e.g. a decimal comma) or fix the row"
            ) from None
        raise InputError(f"{name}: cannot parse as CSV ({_one_line(err)}); fix the file") from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{name}: the file is empty; export the survey again") from None


def _encoding_message(data: bytes, err: UnicodeDecodeError, name: str, cmap: ColumnMap) -> str:
    start = data.rfind(b"\n", 0, err.start) + 1
    line_no = data.count(b"\n", 0, err.start)
    header = data.split(b"\n", 1)[0].decode(cmap.encoding, errors="replace")
    sep = cmap.delimiter or max(DELIMITERS, key=header.count)
    before = data[start : err.start].decode(cmap.encoding, errors="replace")
    cols = next(csv.reader([header.rstrip("\r")], delimiter=sep), [])
    pos = before.count(sep)
    where = "the header" if line_no == 0 else f"row {line_no}"
    col = f"column '{cols[pos]}' " if line_no and pos < len(cols) else ""
    bad = data[err.start : err.start + 4]
    return (
        f"{name}: {col}{where} has bytes that are not {cmap.encoding} ({bad!r}); the file is "
        'probably Windows/latin-1 text: set encoding = "cp1252" in the column map, '
        "or save the file as UTF-8"
    )


def _read_parquet(path: Path, name: str) -> _Raw:
    import pyarrow

    try:
        frame = pd.read_parquet(path)
    except (pyarrow.ArrowException, OSError, ValueError) as err:
        raise InputError(
            f"{name}: cannot read as Parquet ({_first_sentence(err)}); the file is damaged or "
            "not Parquet: export it again"
        ) from None
    # A saved index (e.g. after filtering) must not decide our row numbers.
    frame = frame.reset_index(drop=True)
    return _Raw(frame, tuple(str(c) for c in frame.columns), {})


def _read_stat(path: Path, name: str, kind: str) -> _Raw:
    import pyreadstat

    reader = pyreadstat.read_sav if kind == "sav" else pyreadstat.read_dta
    label = "SPSS" if kind == "sav" else "Stata"
    try:
        # Codes, not labels: labels are applied per categorical column, so items keep 1..5.
        frame, meta = reader(str(path), apply_value_formats=False)
    except (pyreadstat.ReadstatError, pyreadstat.PyreadstatError, OSError, ValueError) as err:
        raise InputError(
            f"{name}: cannot read as {label} ({_first_sentence(err)}); the file is damaged or "
            f"not {label} data: export it again"
        ) from None
    labels = {
        col: {_key(code): str(text) for code, text in table.items()}
        for col, table in (meta.variable_value_labels or {}).items()
    }
    return _Raw(frame, tuple(frame.columns), labels)


# --------------------------------------------------------------------------- rename


def _rename(raw: _Raw, name: str, cmap: ColumnMap) -> tuple[pd.DataFrame, dict[str, str]]:
    """Canonical columns only (extra columns are ignored); ``origin``: canonical -> file."""
    seen: dict[str, int] = {}
    for pos, col in enumerate(raw.header, start=1):
        if col in seen:
            raise InputError(
                f"{name}: column '{col}' appears twice in the header (columns {seen[col]} and "
                f"{pos}); rename or delete one of them"
            )
        seen[col] = pos
    columns = list(raw.frame.columns)
    origin: dict[str, str] = {}
    for file_col, canon in cmap.rename.items():
        if file_col in columns:
            origin[canon] = file_col
    for canon in REQUIRED_COLUMNS:
        if canon not in columns or canon in cmap.rename:
            continue  # absent, or itself renamed to another canonical column
        if canon in origin:
            raise InputError(
                f"{name}: column '{canon}' is in the file and the column map also renames "
                f"'{origin[canon]}' to it; delete one of the two columns or remove the rename"
            )
        origin[canon] = canon
    missing = [c for c in REQUIRED_COLUMNS if c not in origin]
    if missing:
        unused = [c for c in columns if c not in origin.values()]
        parts = []
        for canon in missing:
            hint = ""
            wanted = [k for k, v in cmap.rename.items() if v == canon]
            if wanted:
                hint = f" (the map renames '{wanted[0]}' to it, but the file has no '{wanted[0]}'"
                close = _close(wanted[0], unused)
                hint += f"; did you mean '{close[0]}'?)" if close else ")"
            else:
                close = _close(canon, unused, _COLUMN_HINTS.get(canon, ()))
                hint = f" (did you mean '{close[0]}'?)" if close else ""
            parts.append(f"'{canon}'{hint}")
        plural = "s" if len(missing) > 1 else ""
        raise InputError(
            f"{name}: missing column{plural} {', '.join(parts)}; add a [rename] entry "
            '(file column = "canonical name") to the column map or fix the header'
        )
    frame = raw.frame[[origin[c] for c in REQUIRED_COLUMNS]]
    frame.columns = list(REQUIRED_COLUMNS)
    return frame, origin


# --------------------------------------------------------------------------- validation


def _validate(
    frame: pd.DataFrame,
    origin: dict[str, str],
    value_labels: dict[str, dict[str, str]],
    name: str,
    cmap: ColumnMap,
    sha: str,
    n_read: int,
    whole_file: bool = True,
) -> Survey:
    missing_str = frozenset((*DEFAULT_MISSING, *cmap.missing_values))
    missing_num = _numeric_codes(cmap.missing_values)
    rows = frame.index.to_numpy()  # 0-based data rows in the file

    def where(col: str) -> str:
        file_col = origin[col]
        return f"column '{file_col}'" + (f" ({col})" if file_col != col else "")

    text = {c: _text(frame[c]) for c in REQUIRED_COLUMNS}
    # The map's missing codes never apply to ids: "99" is a fine student number.
    missing = {
        c: _missing(frame[c], text[c], missing_str, missing_num)
        if c not in ID_COLUMNS
        else _missing(frame[c], text[c], frozenset(DEFAULT_MISSING), frozenset())
        for c in REQUIRED_COLUMNS
    }
    # Fully blank rows (an interior empty line, an empty spreadsheet row): counted, not errors.
    blank = np.logical_and.reduce([missing[c] for c in REQUIRED_COLUMNS])

    ids = {}
    for col in ID_COLUMNS:
        bad = missing[col] & ~blank
        if bad.any():
            raise InputError(
                f"{name}: {where(col)} is empty in {_rows(rows, bad)}; every row needs a "
                f"{col}: fill it in or delete those rows"
            )
        ids[col] = _id_strings(frame[col], text[col])

    levels: dict[str, tuple[str, ...]] = {}
    codes: dict[str, np.ndarray] = {}
    for col in CATEGORICAL_COLUMNS:
        codes[col], levels[col] = _categorical(
            frame[col],
            text[col],
            col,
            where(col),
            rows,
            name,
            cmap,
            value_labels.get(origin[col], {}) if cmap.use_value_labels else {},
            missing_str,
            missing_num,
        )

    age, bad_age = _numbers(frame["age"], text["age"], missing["age"])
    if bad_age.any():
        raise InputError(
            f"{name}: {where('age')} is not a number in {_rows(rows, bad_age)} "
            f"(e.g. {_example(text['age'], bad_age)}); write ages in years like 15 or 15.5, "
            "or leave them empty"
        )
    lo, hi = AGE_RANGE
    impossible = ~np.isnan(age) & ((age < lo) | (age > hi))
    if impossible.any():
        raise InputError(
            f"{name}: {where('age')} has impossible ages in {_rows(rows, impossible)} "
            f"(e.g. {_example(text['age'], impossible)}); ages must be {lo:g} to {hi:g} years: "
            "fix them, or add the code to missing_values in the column map if it means missing"
        )

    items = {}
    for col in ITEM_COLUMNS:
        values, bad = _numbers(frame[col], text[col], missing[col], decimal_comma=False)
        if bad.any():
            raise InputError(
                f"{name}: {where(col)} is not a number in {_rows(rows, bad)} "
                f"(e.g. {_example(text[col], bad)}); answers must be {ITEM_MIN}..{ITEM_MAX} or "
                "empty: fix the file, or add the code to missing_values in the column map"
            )
        fraction = ~np.isnan(values) & (values % 1 != 0)
        if fraction.any():
            raise InputError(
                f"{name}: {where(col)} has non-integer answers in {_rows(rows, fraction)} "
                f"(e.g. {_example(text[col], fraction)}); answers must be whole numbers "
                f"{ITEM_MIN}..{ITEM_MAX}: fix the file (an averaged or imputed value?)"
            )
        outside = ~np.isnan(values) & ((values < ITEM_MIN) | (values > ITEM_MAX))
        if outside.any():
            raise InputError(
                f"{name}: {where(col)} has answers outside {ITEM_MIN}..{ITEM_MAX} in "
                f"{_rows(rows, outside)} (e.g. {_example(text[col], outside)}); fix the file, "
                "or add the code to missing_values in the column map if it means missing"
            )
        items[col] = values

    student = ids["student_id"]
    dup = student.duplicated(keep=False).to_numpy() & ~blank
    if dup.any():
        first = student[dup].iloc[0]
        raise InputError(
            f"{name}: {where('student_id')} has duplicate ids in {_rows(rows, dup)} "
            f"(e.g. '{first}'); each row must be one student: delete the repeated rows or "
            "fix the ids"
        )

    _check_school_regions(ids["school_id"], codes["region"], levels["region"], rows, name, where)

    # Exclusions: each row once, under the first missing covariate.
    notes: dict[str, int] = {}
    excluded = blank.copy()
    exclusions: dict[str, int] = {}
    if blank.any():
        exclusions[EXCLUSION_BLANK_ROW] = int(blank.sum())
    parent_unknown = "unknown" in levels["parent_edu"] and "parent_edu" not in cmap.levels_from_data
    for col in EXCLUSION_ORDER:
        gone = np.isnan(age) if col == "age" else codes[col] == _MISSING
        if col == "parent_edu" and parent_unknown:
            continue  # kept as "unknown" below, not excluded
        new = gone & ~excluded
        if new.any():
            exclusions[f"missing {col}"] = int(new.sum())
            excluded |= new
    if parent_unknown:
        gone = codes["parent_edu"] == _MISSING
        if (gone & ~excluded).any():
            notes[NOTE_PARENT_EDU_UNKNOWN] = int((gone & ~excluded).sum())
        codes["parent_edu"] = np.where(
            gone, levels["parent_edu"].index("unknown"), codes["parent_edu"]
        )
    n_excluded = int(excluded.sum())
    if whole_file and n_excluded > MAX_EXCLUDED_SHARE * n_read:
        reasons = ", ".join(
            f"{k}: {v}" for k, v in sorted(exclusions.items(), key=lambda kv: -kv[1])
        )
        raise InputError(
            f"{name}: {n_excluded} of {n_read} rows would be excluded ({reasons}); more than "
            "half: check that the columns are mapped right and that missing_values in the "
            "column map does not list a real value"
        )

    keep = ~excluded
    for col in CATEGORICAL_COLUMNS:
        codes[col] = codes[col][keep]
    wave_counts = np.bincount(codes["wave"], minlength=len(levels["wave"]))
    empty = [lvl for lvl, n in zip(levels["wave"], wave_counts, strict=True) if n == 0]
    if empty and whole_file:
        if cmap.source == ColumnMap().source:
            fix = (
                "declare the waves you have, in order, with [levels] wave = [...] in a column "
                "map (see data/column_maps/oml_default.toml)"
            )
        else:
            fix = f"remove {_quote(empty)} from [levels] wave in {cmap.source}"
        raise InputError(
            f"{name}: {where('wave')} has no students in declared "
            f"wave{'s' if len(empty) > 1 else ''} {_quote(empty)}; {fix}"
        )

    answered = np.zeros(int(keep.sum()), dtype=bool)
    for col in ITEM_COLUMNS:
        answered |= ~np.isnan(items[col][keep])
    if whole_file and not answered.any():
        names = [origin[c] for c in ITEM_COLUMNS]
        shown = f"{names[0]}..{names[-1]}" if names == list(ITEM_COLUMNS) else ", ".join(names)
        raise InputError(
            f"{name}: columns {shown} (the six items) are empty for every student; map the "
            "item columns in [rename] of the column map or fix the file"
        )

    out = pd.DataFrame(index=pd.RangeIndex(int(keep.sum())))
    for col in ID_COLUMNS:
        out[col] = ids[col][keep].to_numpy()
        out[col] = out[col].astype("str")
    for col in CATEGORICAL_COLUMNS:
        out[col] = pd.Categorical.from_codes(
            codes[col], categories=pd.Index(levels[col], dtype="str"), ordered=True
        )
    out["age"] = age[keep].astype("float64")
    for col in ITEM_COLUMNS:
        out[col] = pd.array(items[col][keep], dtype="Int64")
    out = out[list(REQUIRED_COLUMNS)]
    final_levels = replace(cmap.levels, **levels)
    return Survey(out, final_levels, name, sha, n_read, exclusions, notes, cmap.monitor, cmap.area)


def _check_school_regions(
    school: pd.Series,
    region: np.ndarray,
    levels: tuple[str, ...],
    rows: np.ndarray,
    name: str,
    where: Callable[[str], str],
) -> None:
    known = region >= 0
    pairs = pd.DataFrame({"school": school.to_numpy()[known], "region": region[known]})
    n_regions = pairs.drop_duplicates().groupby("school", sort=False)["region"].size()
    split = n_regions[n_regions > 1]
    if split.empty:
        return
    first = split.index[0]
    sub = pairs[pairs["school"] == first]
    modal = sub["region"].mode().iloc[0]
    odd = known & (school.to_numpy() == first) & (region != modal)
    names = ", ".join(levels[r] for r in sorted(sub["region"].unique()))
    more = f" (+{len(split) - 1} more schools)" if len(split) > 1 else ""
    raise InputError(
        f"{name}: {where('region')}: school '{first}' appears in several regions ({names}) in "
        f"{_rows(rows, odd)}{more}; a school lies in one region: fix the region of those rows "
        f"or give the schools distinct ids in {where('school_id')}"
    )


def _categorical(
    series: pd.Series,
    text: pd.Series | None,
    col: str,
    where: str,
    rows: np.ndarray,
    name: str,
    cmap: ColumnMap,
    labels: dict[str, str],
    missing_str: frozenset[str],
    missing_num: frozenset[float],
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Level codes per row (``_MISSING`` for missing) and the levels, resolved per value."""
    source = text if text is not None else series
    row_codes, uniques = pd.factorize(source, use_na_sentinel=True)
    keys = [_key(u) for u in uniques]
    recode = cmap.recode.get(col, {})
    from_data = col in cmap.levels_from_data
    if from_data:
        found = sorted(
            {_resolve_open(k, recode, labels, missing_str, missing_num) for k in keys} - {None}
        )
        levels = tuple(found)
        resolved = [_resolve_open(k, recode, labels, missing_str, missing_num) for k in keys]
        lookup_codes = [_MISSING if r is None else levels.index(r) for r in resolved]
    else:
        levels = cmap.levels.of(col)
        exact = {lvl: i for i, lvl in enumerate(levels)}
        exact.update({k: levels.index(v) for k, v in recode.items()})
        loose: dict[str, set[int]] = {}
        for k, i in exact.items():
            loose.setdefault(_norm(k), set()).add(i)
        lookup_codes = [_resolve(k, exact, loose, labels, missing_str, missing_num) for k in keys]
    table = np.array([*lookup_codes, _MISSING], dtype=np.int64)  # last slot: NA sentinel
    codes = table[row_codes]
    for problem in (_AMBIGUOUS, _UNKNOWN):
        bad = codes == problem
        if not bad.any():
            continue
        values = [_show(k, labels) for k, c in zip(keys, lookup_codes, strict=True) if c == problem]
        shown = ", ".join(values[:3]) + (f" (+{len(values) - 3} more)" if len(values) > 3 else "")
        if problem == _AMBIGUOUS:
            raise InputError(
                f"{name}: {where} has value {shown} in {_rows(rows, bad)} that matches several "
                f"levels when case is ignored; add an exact entry under [recode.{col}] in the "
                "column map"
            )
        plural = "s" if len(values) > 1 else ""
        raise InputError(
            f"{name}: {where} has unknown level{plural} {shown} in {_rows(rows, bad)}; expected "
            f"one of {', '.join(levels)}; add it to the column map ([recode.{col}] or "
            f"[levels] {col}) or fix the file"
        )
    return codes, levels


def _resolve(
    key: str | None,
    exact: dict[str, int],
    loose: dict[str, set[int]],
    labels: dict[str, str],
    missing_str: frozenset[str],
    missing_num: frozenset[float],
) -> int:
    if key is None or key in missing_str or _as_float(key) in missing_num:
        return _MISSING
    candidates = [key]
    if key in labels:
        label = labels[key].strip()
        if label in missing_str:  # a code labelled "onbekend" when that means missing
            return _MISSING
        candidates.append(label)
    for cand in candidates:
        if cand in exact:
            return exact[cand]
    for cand in candidates:
        hits = loose.get(_norm(cand), set())
        if len(hits) == 1:
            return next(iter(hits))
        if len(hits) > 1:
            return _AMBIGUOUS
    return _UNKNOWN


def _resolve_open(
    key: str | None,
    recode: dict[str, str],
    labels: dict[str, str],
    missing_str: frozenset[str],
    missing_num: frozenset[float],
) -> str | None:
    """Levels taken from the data: recode if mapped, else the label, else the value."""
    if key is None or key in missing_str or _as_float(key) in missing_num:
        return None
    label = labels.get(key, "").strip()
    if label and label in missing_str:
        return None
    for cand in (key, label):
        if cand and cand in recode:
            return recode[cand]
    loose = {_norm(k): v for k, v in recode.items()}
    for cand in (key, label):
        if cand and _norm(cand) in loose:
            return loose[_norm(cand)]
    return label or key


# --------------------------------------------------------------------------- helpers


def _text(series: pd.Series) -> pd.Series | None:
    """Stripped text of a text column; ``None`` for numeric columns (handled as numbers)."""
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        return None
    return series.astype("str").str.strip()


def _missing(
    series: pd.Series,
    text: pd.Series | None,
    missing_str: frozenset[str],
    missing_num: frozenset[float],
) -> np.ndarray:
    if text is None:
        out = series.isna() | series.isin(list(missing_num))
    else:
        out = text.isna() | text.isin(list(missing_str))
    return out.to_numpy(dtype=bool)


def _numbers(
    series: pd.Series, text: pd.Series | None, missing: np.ndarray, *, decimal_comma: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Float values (NaN where missing) and a mask of non-numeric cells."""
    if text is None:
        values = series.to_numpy(dtype="float64", na_value=np.nan).copy()
        values[missing] = np.nan
        return values, np.zeros(len(values), dtype=bool)
    # Parse each distinct value once: survey columns have few (to_numeric on a million
    # arrow strings is ten times slower than factorize + parse of the uniques).
    row_codes, uniques = pd.factorize(text.mask(missing), use_na_sentinel=True)
    cleaned = pd.Series(np.asarray(uniques, dtype=object), dtype=object)
    if decimal_comma:
        # Dutch exports write 15,5; only for ages, an item 2,5 is wrong either way.
        cleaned = cleaned.str.replace(",", ".", regex=False)
    parsed = pd.to_numeric(cleaned, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    values = np.append(parsed, np.nan)[row_codes]  # last slot: the NA sentinel -1
    bad = np.isnan(values) & ~missing
    return values, bad


def _id_strings(series: pd.Series, text: pd.Series | None) -> pd.Series:
    if text is not None:
        return text
    values = series.astype("float64")
    if bool((values % 1 == 0).all()):
        # SPSS stores numeric ids as floats: 1234.0 is the id "1234".
        return values.astype("int64").astype("str")
    return values.astype("str")


def _numeric_codes(values: tuple[str, ...]) -> frozenset[float]:
    return frozenset(v for v in (_as_float(s) for s in values) if v is not None)


def _as_float(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _key(value: object) -> str | None:
    """A file value as the string a column map uses: ``1.0`` -> ``"1"``."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, float | np.floating):
        return str(int(value)) if float(value).is_integer() else str(float(value))
    text = str(value).strip()
    # "1.0" written by some exports is the code "1" of the column map.
    return text[: text.index(".")] if re.fullmatch(r"-?\d+\.0+", text) else text


def _norm(text: str) -> str:
    return re.sub(r"[\s_\-]+", "_", text.strip().casefold()).strip("_")


def _show(key: str | None, labels: dict[str, str]) -> str:
    return f"'{key}' (label '{labels[key]}')" if key in labels else f"'{key}'"


def _quote(values: list[str] | tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def _rows(rows: np.ndarray, mask: np.ndarray, shown: int = 3) -> str:
    hits = rows[mask] + 1
    word = "row" if len(hits) == 1 else "rows"
    more = f" (+{len(hits) - shown} more)" if len(hits) > shown else ""
    return f"{word} {', '.join(str(int(r)) for r in hits[:shown])}{more}"


def _example(text: pd.Series | None, mask: np.ndarray) -> str:
    if text is None:
        return "a number"
    return repr(str(text[mask].iloc[0]))


def _close(word: str, options: list[str], aliases: tuple[str, ...] = ()) -> list[str]:
    folded = {o.casefold(): o for o in options}
    for alias in aliases:
        if alias in folded:
            return [folded[alias]]
    hits = difflib.get_close_matches(word.casefold(), list(folded), n=1, cutoff=0.6)
    return [folded[h] for h in hits]


def _did_you_mean(word: str, options: tuple[str, ...] | list[str]) -> str:
    close = _close(word, list(options))
    return f" (did you mean '{close[0]}'?)" if close else ""


def _sep_name(sep: str) -> str:
    return {"\t": "tab", ",": "comma", ";": "semicolon"}[sep]


def _first_sentence(err: BaseException) -> str:
    return _one_line(err).split(". ")[0][:120]


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


__all__ = [
    "DEFAULT_MISSING",
    "ColumnMap",
    "Survey",
    "load_column_map",
    "read_survey",
]
