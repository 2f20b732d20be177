"""Ingest: readers, column maps, validation messages and exclusions."""

from __future__ import annotations

import hashlib
import time
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pyreadstat
import pytest

from omlbayes.constants import ITEM_COLUMNS
from omlbayes.data import schema
from omlbayes.data.ingest import (
    NOTE_PARENT_EDU_UNKNOWN,
    ColumnMap,
    Survey,
    load_column_map,
    read_survey,
)
from omlbayes.errors import InputError

HERE = Path(__file__).parent
BAD = HERE / "bad_inputs"
MAPS = HERE.parent / "data" / "column_maps"
CASES = tomllib.loads((BAD / "expected.toml").read_text(encoding="utf-8"))["case"]


def survey_frame(n: int = 70, seed: int = 1) -> pd.DataFrame:
    """A canonical survey: every wave, schools nested in regions."""
    rng = np.random.default_rng(seed)
    school = rng.integers(0, 10, n)
    frame = pd.DataFrame(
        {
            "student_id": [f"L{i:05d}" for i in range(n)],
            "school_id": [f"S{k}" for k in school],
            "region": np.array(schema.REGIONS)[school % 5],
            "wave": np.array(schema.WAVES)[np.arange(n) % 7],
            "gender": rng.choice(schema.GENDERS, n),
            "school_type": rng.choice(schema.SCHOOL_TYPES, n),
            "parent_edu": rng.choice(schema.PARENT_EDU[:3], n),
            "age": np.round(rng.uniform(13, 16, n), 1),
        }
    )
    for col in ITEM_COLUMNS:
        frame[col] = rng.integers(1, 6, n)
    return frame


def write_map(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "map.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- bad inputs


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30
    assert len({c["file"] for c in CASES}) >= 30


@pytest.mark.parametrize(
    "case", CASES, ids=[f"{c['file']}|{Path(c.get('map', '-')).name}" for c in CASES]
)
def test_bad_input_message(case: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BAD)  # messages name the file as given: short relative paths
    with pytest.raises(InputError) as info:
        read_survey(case["file"], column_map=case.get("map"))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith((f"{case['file']}: ", f"{case.get('map')}: "))
    for part in case["expect"]:
        assert part in message


# --------------------------------------------------------------------------- good paths


def test_canonical_csv(tmp_path: Path) -> None:
    frame = survey_frame()
    path = tmp_path / "survey.csv"
    frame.to_csv(path, index=False)
    survey = read_survey(path)
    assert isinstance(survey, Survey)
    out = survey.frame
    assert list(out.columns) == list(schema.REQUIRED_COLUMNS)
    assert survey.n_read == len(out) == len(frame)
    assert survey.exclusions == {} and survey.notes == {}
    assert survey.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert survey.source == str(path)
    for col in schema.CATEGORICAL_COLUMNS:
        assert isinstance(out[col].dtype, pd.CategoricalDtype) and out[col].cat.ordered
        assert tuple(out[col].cat.categories) == schema.Levels().of(col)
        assert (out[col].astype(str) == frame[col].astype(str)).all()
    assert out["age"].dtype == np.float64
    assert all(out[c].dtype == "Int64" for c in ITEM_COLUMNS)
    assert (out["student_id"] == frame["student_id"]).all()
    assert pd.api.types.is_string_dtype(out["school_id"])
    assert out["item_3"].tolist() == frame["item_3"].tolist()


def test_extra_columns_are_ignored_and_order_of_file_columns_does_not_matter(
    tmp_path: Path,
) -> None:
    frame = survey_frame()
    frame["opmerking"] = "x"
    frame["unnamed"] = 3.5
    path = tmp_path / "survey.csv"
    frame[frame.columns[::-1]].to_csv(path, index=False)
    survey = read_survey(path)
    assert list(survey.frame.columns) == list(schema.REQUIRED_COLUMNS)


@pytest.mark.parametrize("sep", [";", "\t"])
def test_delimiter_is_sniffed_and_decimal_comma_ages_are_read(tmp_path: Path, sep: str) -> None:
    frame = survey_frame()
    path = tmp_path / "survey.csv"
    frame.to_csv(path, index=False, sep=sep, decimal=",")
    survey = read_survey(path)
    np.testing.assert_allclose(survey.frame["age"], frame["age"])


def test_exclusions_are_counted_per_reason_and_add_up(tmp_path: Path) -> None:
    frame = survey_frame().astype(object)
    frame.loc[[0, 7], "gender"] = ""
    frame.loc[3, "age"] = "NA"
    frame.loc[7, "age"] = ""  # missing twice: counted once, under gender
    frame.loc[9, "region"] = ""
    frame.loc[[5, 12], "parent_edu"] = "-9"
    frame.loc[20, "item_2"] = "-9"
    path = tmp_path / "survey.csv"
    frame.to_csv(path, index=False)
    text = path.read_text().splitlines()
    text.insert(30, "")  # an interior blank line is a blank row, counted
    path.write_text("\n".join(text) + "\n\n\n")  # trailing blank lines are not rows
    survey = read_survey(path, column_map=write_map(tmp_path, 'missing_values = ["-9"]'))
    assert survey.exclusions == {
        "blank row": 1,
        "missing region": 1,
        "missing gender": 2,
        "missing age": 1,
    }
    assert survey.notes == {NOTE_PARENT_EDU_UNKNOWN: 2}
    assert survey.n_read == len(frame) + 1
    assert survey.n_read == len(survey.frame) + sum(survey.exclusions.values())
    assert survey.frame["item_2"].isna().sum() == 1
    assert "L00005" in set(survey.frame["student_id"])
    kept = survey.frame.set_index("student_id")
    assert kept.loc["L00005", "parent_edu"] == "unknown"


def test_missing_parent_edu_is_excluded_when_unknown_is_not_declared(tmp_path: Path) -> None:
    frame = survey_frame()
    frame.loc[4, "parent_edu"] = ""
    path = tmp_path / "survey.csv"
    frame.to_csv(path, index=False)
    cmap = write_map(tmp_path, '[levels]\nparent_edu = ["max_mbo", "hbo", "wo"]\n')
    survey = read_survey(path, column_map=cmap)
    assert survey.exclusions == {"missing parent_edu": 1}
    assert survey.notes == {}


def test_category_order_follows_the_config(tmp_path: Path) -> None:
    frame = survey_frame()
    frame["wave"] = np.where(frame.index % 2 == 0, "2022", "2014")
    path = tmp_path / "survey.csv"
    frame.to_csv(path, index=False)
    regions = list(schema.REGIONS[::-1])
    cmap = write_map(
        tmp_path,
        f'[levels]\nwave = ["2022", "2014"]\nregion = {regions!r}\n'.replace("'", '"'),
    )
    survey = read_survey(path, column_map=cmap)
    assert list(survey.frame["wave"].cat.categories) == ["2022", "2014"]
    assert list(survey.frame["region"].cat.categories) == regions
    assert survey.levels.wave == ("2022", "2014")
    assert survey.frame["wave"].min() == "2022"  # ordered as declared


def test_labels_match_ignoring_case_spaces_and_dashes(tmp_path: Path) -> None:
    frame = survey_frame()
    frame["school_type"] = frame["school_type"].str.upper().str.replace("_", "-") + " "
    frame["region"] = frame["region"].str.replace("_", "-").str.title()
    path = tmp_path / "survey.csv"
    frame.to_csv(path, index=False)
    out = read_survey(path).frame
    assert set(out["school_type"].astype(str)) <= set(schema.SCHOOL_TYPES)
    assert set(out["region"].astype(str)) == set(schema.REGIONS)


def test_ambiguous_loose_match_is_an_error(tmp_path: Path) -> None:
    frame = survey_frame()
    frame["gender"] = np.where(frame.index % 2 == 0, "man", "vrouw")
    path = tmp_path / "survey.csv"
    frame.to_csv(path, index=False)
    cmap = write_map(tmp_path, '[recode.gender]\nMan = "boy"\nMAN = "girl"\nvrouw = "girl"\n')
    with pytest.raises(InputError, match=r"matches several levels .*\[recode.gender\]"):
        read_survey(path, column_map=cmap)


def test_levels_from_data(tmp_path: Path) -> None:
    frame = survey_frame()
    frame["region"] = frame["school_id"].map(lambda s: "Oost" if s in {"S1", "S2"} else "West")
    path = tmp_path / "survey.csv"
    frame.to_csv(path, index=False)
    survey = read_survey(path, column_map=write_map(tmp_path, '[levels]\nregion = "from_data"\n'))
    assert survey.levels.region == ("Oost", "West")
    assert list(survey.frame["region"].cat.categories) == ["Oost", "West"]


def test_map_missing_codes_do_not_touch_ids(tmp_path: Path) -> None:
    frame = survey_frame()
    frame.loc[0, "student_id"] = "99"
    path = tmp_path / "survey.csv"
    frame.to_csv(path, index=False)
    survey = read_survey(path, column_map=write_map(tmp_path, 'missing_values = ["99"]'))
    assert survey.frame["student_id"].iloc[0] == "99"


def test_column_map_object_and_cp1252(tmp_path: Path) -> None:
    frame = survey_frame()
    frame["opmerking"] = "één"
    path = tmp_path / "survey.csv"
    path.write_bytes(frame.to_csv(index=False).encode("cp1252"))
    with pytest.raises(InputError, match="cp1252"):
        read_survey(path)
    survey = read_survey(path, column_map=ColumnMap(encoding="cp1252"))
    assert len(survey.frame) == len(frame)


def test_default_map_file_is_the_identity() -> None:
    assert load_column_map(MAPS / "oml_default.toml").levels == ColumnMap().levels
    assert load_column_map(MAPS / "oml_default.toml").rename == {}
    assert load_column_map(None) == ColumnMap()


# --------------------------------------------------------------------------- other formats


def dutch_export(n: int = 40) -> tuple[pd.DataFrame, dict[str, dict[float, str]]]:
    """An SPSS-style export: Dutch names, numeric codes with value labels, -9/99 missing."""
    rng = np.random.default_rng(3)
    brin = np.array(["01AB", "02CD", "03EF", "04GH"])[np.arange(n) % 4]
    regio = {"01AB": "Noord-Limburg", "02CD": "Parkstad Limburg", "03EF": "Westelijke Mijnstreek"}
    frame = pd.DataFrame(
        {
            "leerling_id": np.arange(5000, 5000 + n, dtype=float),
            "brin": brin,
            "regio": [regio.get(b, "Maastricht-Heuvelland") for b in brin],
            "meting": np.where(np.arange(n) % 2 == 0, 3.0, 7.0),
            "geslacht": rng.choice([1.0, 2.0], n),
            "schooltype": rng.choice(["VMBO-BB/KB", "VMBO-GT/TL", "HAVO", "VWO"], n),
            "opl_ouders": rng.choice([1.0, 2.0, 3.0], n),
            "leeftijd": np.round(rng.uniform(13.5, 16, n), 1),
            "klas": 3.0,
            **{f"v{k}": rng.integers(1, 6, n).astype(float) for k in range(1, 7)},
        }
    )
    frame.loc[0, "opl_ouders"] = 9.0  # "onbekend"
    frame.loc[1, "v3"] = -9.0  # geen antwoord
    frame.loc[2, "leeftijd"] = 99.0  # missing code -> excluded
    labels = {
        "geslacht": {1.0: "jongen", 2.0: "meisje"},
        "opl_ouders": {1.0: "maximaal mbo", 2.0: "hbo", 3.0: "wo (universiteit)", 9.0: "onbekend"},
        "meting": {3.0: "OML 2018", 7.0: "OML 2022"},
        "v1": {1.0: "helemaal mee oneens", 5.0: "helemaal mee eens"},
    }
    return frame, labels


def test_dutch_spss_through_the_example_map(tmp_path: Path) -> None:
    frame, labels = dutch_export()
    path = tmp_path / "oml_export.sav"
    pyreadstat.write_sav(frame, path, variable_value_labels=labels)
    survey = read_survey(path, column_map=MAPS / "example_dutch_spss.toml")
    out = survey.frame
    assert survey.exclusions == {"missing age": 1}
    assert survey.notes == {NOTE_PARENT_EDU_UNKNOWN: 1}
    assert survey.n_read == len(out) + 1
    assert list(out["wave"].cat.categories) == ["2018", "2022"]
    kept = frame.drop(index=2).reset_index(drop=True)
    assert out["student_id"].tolist() == [str(int(v)) for v in kept["leerling_id"]]
    assert (
        out["gender"].astype(str).tolist()
        == kept["geslacht"].map({1.0: "boy", 2.0: "girl"}).tolist()
    )
    assert (
        out["school_type"].astype(str).tolist()
        == kept["schooltype"]
        .map({"VMBO-BB/KB": "vmbo_bk", "VMBO-GT/TL": "vmbo_gt", "HAVO": "havo", "VWO": "vwo"})
        .tolist()
    )
    assert set(out["region"].astype(str)) == {
        "noord_limburg",
        "parkstad_limburg",
        "sittard_geleen",
        "maastricht_heuvelland",
    }
    assert out.loc[0, "parent_edu"] == "unknown"
    assert pd.isna(out.loc[1, "item_3"])
    assert out["item_1"].tolist() == kept["v1"].astype(int).tolist()  # codes, not labels


def test_spss_codes_via_explicit_code_maps(tmp_path: Path) -> None:
    frame, labels = dutch_export()
    path = tmp_path / "export.sav"
    pyreadstat.write_sav(frame, path, variable_value_labels=labels)
    example = (MAPS / "example_dutch_spss.toml").read_text(encoding="utf-8")
    text = example.replace("use_value_labels = true", "use_value_labels = false")
    text = text.replace('jongen = "boy"\nmeisje = "girl"', '"1" = "boy"\n"2" = "girl"')
    text = text.replace('"maximaal mbo" = "max_mbo"', '"1" = "max_mbo"\n"9" = "unknown"')
    text = text.replace('"hbo" = "hbo"', '"2" = "hbo"').replace('"wo (universiteit)"', '"3"')
    out = read_survey(path, column_map=write_map(tmp_path, text)).frame
    kept = frame.drop(index=2).reset_index(drop=True)
    assert (
        out["gender"].astype(str).tolist()
        == kept["geslacht"].map({1.0: "boy", 2.0: "girl"}).tolist()
    )
    assert out.loc[0, "parent_edu"] == "unknown"


def test_stata_round_trip(tmp_path: Path) -> None:
    original, labels = dutch_export()
    sav = tmp_path / "export.sav"
    pyreadstat.write_sav(original, sav, variable_value_labels=labels)
    expected = read_survey(sav, column_map=MAPS / "example_dutch_spss.toml")
    frame = original.astype({"geslacht": "int32", "meting": "int32", "opl_ouders": "int32"})
    path = tmp_path / "export.dta"
    pyreadstat.write_dta(
        frame,
        path,
        variable_value_labels={
            k: {int(code): text for code, text in labels[k].items()}
            for k in ("geslacht", "opl_ouders")
        },
    )
    survey = read_survey(path, column_map=MAPS / "example_dutch_spss.toml")
    pd.testing.assert_frame_equal(survey.frame, expected.frame)


def test_parquet_round_trip(tmp_path: Path) -> None:
    frame = survey_frame()
    csv_path, pq_path = tmp_path / "s.csv", tmp_path / "s.parquet"
    frame.to_csv(csv_path, index=False)
    frame.astype({"wave": "category"}).to_parquet(pq_path)
    from_csv, from_pq = read_survey(csv_path), read_survey(pq_path)
    pd.testing.assert_frame_equal(from_pq.frame, from_csv.frame)
    assert from_pq.levels == from_csv.levels


@pytest.mark.bench
def test_a_million_rows_is_fast(tmp_path: Path) -> None:
    frame = survey_frame(n=1_000_000)
    path = tmp_path / "big.csv"
    frame.to_csv(path, index=False)
    start = time.perf_counter()
    survey = read_survey(path)
    assert time.perf_counter() - start < 30
    assert len(survey.frame) == 1_000_000
