"""Regenerate the bad-input corpus: ``python tests/bad_inputs/_make_corpus.py``.

Each file is a small valid survey with one defect. The files are committed; this
script documents how they were made and writes ``expected.toml`` next to them.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pyreadstat

HERE = Path(__file__).parent
DUTCH_MAP = "../../data/column_maps/example_dutch_spss.toml"
WAVES = ("2014", "2016", "2018", "2020_0", "2020_1", "2020_2", "2022")
REGION_OF = {"S1": "noord_limburg", "S2": "midden_limburg", "S3": "sittard_geleen"}
HEADER = [
    "student_id",
    "school_id",
    "region",
    "wave",
    "gender",
    "school_type",
    "parent_edu",
    "age",
    *(f"item_{k}" for k in range(1, 7)),
]


def base_rows() -> list[dict[str, str]]:
    """14 students, two per wave, three schools each in one region."""
    rows = []
    for i in range(14):
        school = f"S{i % 3 + 1}"
        rows.append(
            {
                "student_id": f"L{1001 + i}",
                "school_id": school,
                "region": REGION_OF[school],
                "wave": WAVES[i // 2],
                "gender": ("boy", "girl")[i % 2],
                "school_type": ("vmbo_bk", "vmbo_gt", "havo", "vwo")[i % 4],
                "parent_edu": ("max_mbo", "hbo", "wo")[i % 3],
                "age": f"{14 + (i % 3) * 0.5:g}",
                **{f"item_{k}": str((i + k) % 5 + 1) for k in range(1, 7)},
            }
        )
    return rows


def write_csv(name: str, rows: list[dict[str, str]], header: list[str] | None = None, sep=","):
    header = header or list(rows[0])
    with (HERE / name).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter=sep, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow([row.get(h, "") for h in header])


def edit(changes: dict[int, dict[str, str]]) -> list[dict[str, str]]:
    """Base rows with ``{data row (1-based): {column: value}}`` applied."""
    rows = base_rows()
    for row, values in changes.items():
        rows[row - 1].update(values)
    return rows


CASES: list[tuple[str, str | None, list[str]]] = []


def case(file: str, expect: list[str], map_: str | None = None) -> None:
    CASES.append((file, map_, expect))


def main() -> None:
    for old in HERE.iterdir():
        if old.name not in {"_make_corpus.py", "maps"} and old.is_file():
            old.unlink()
    write_csv("ok_canonical.csv", base_rows())  # read with bad maps below

    # --- structure
    write_csv("missing_column.csv", base_rows(), [h for h in HEADER if h != "gender"])
    case("missing_column.csv", ["missing column 'gender'", "add a [rename] entry"])
    rows = [{("gendr" if k == "gender" else k): v for k, v in r.items()} for r in base_rows()]
    write_csv("column_typo.csv", rows)
    case("column_typo.csv", ["'gender' (did you mean 'gendr'?)", "[rename]"])
    write_csv("duplicate_header.csv", base_rows(), [*HEADER, "age"])
    case("duplicate_header.csv", ["column 'age' appears twice", "rename or delete one"])
    (HERE / "empty.csv").write_bytes(b"")
    case("empty.csv", ["the file is empty", "export the survey again"])
    (HERE / "header_only.csv").write_text(",".join(HEADER) + "\n")
    case("header_only.csv", ["header but no data rows", "export it with data"])
    write_csv("pipe_delimited.csv", base_rows(), sep="|")
    case("pipe_delimited.csv", ["every value is in one column", "comma, semicolon or tab"])
    write_csv("semicolon.csv", base_rows(), sep=";")
    (HERE / "maps/delimiter_comma.toml").write_text('delimiter = ","\n')
    case(
        "semicolon.csv",
        ["every value is in one column", 'set delimiter = ";"'],
        "maps/delimiter_comma.toml",
    )
    text = (HERE / "ok_canonical.csv").read_text().splitlines()
    text[5] = text[5].replace(",14.5,", ",14,5,")  # unquoted decimal comma: extra field
    (HERE / "extra_field.csv").write_text("\n".join(text) + "\n")
    case("extra_field.csv", ["row 5 has 15 fields but the header has 14", "quote values"])
    rows = [{**r, "opmerking": "ok"} for r in base_rows()]
    rows[2]["opmerking"] = "één keer"
    write_csv("latin1.csv", rows)
    data = (HERE / "latin1.csv").read_text(encoding="utf-8")
    (HERE / "latin1.csv").write_bytes(data.encode("latin-1"))
    case("latin1.csv", ["column 'opmerking' row 3", 'set encoding = "cp1252"'])
    rows = [{**r, "gender": "boy"} for r in base_rows()]
    write_csv("rename_collision.csv", [{**r, "geslacht": "jongen"} for r in rows])
    (HERE / "maps/rename_gender.toml").write_text('[rename]\ngeslacht = "gender"\n')
    case(
        "rename_collision.csv",
        ["column 'gender' is in the file", "remove the rename"],
        "maps/rename_gender.toml",
    )

    # --- ids
    write_csv("missing_student_id.csv", edit({4: {"student_id": ""}, 9: {"student_id": "NA"}}))
    case("missing_student_id.csv", ["column 'student_id' is empty in rows 4, 9", "fill it in"])
    write_csv("missing_school_id.csv", edit({6: {"school_id": " "}}))
    case("missing_school_id.csv", ["column 'school_id' is empty in row 6", "fill it in"])
    write_csv("duplicate_ids.csv", edit({8: {"student_id": "L1001"}}))
    case(
        "duplicate_ids.csv",
        ["column 'student_id' has duplicate ids in rows 1, 8", "delete the repeated rows"],
    )
    write_csv("school_two_regions.csv", edit({7: {"region": "parkstad_limburg"}}))
    case(
        "school_two_regions.csv",
        ["school 'S1' appears in several regions", "in row 7", "fix the region of those rows"],
    )

    # --- categories
    write_csv("unknown_level.csv", edit({3: {"gender": "x"}}))
    case(
        "unknown_level.csv",
        [
            "column 'gender' has unknown level 'x' in row 3",
            "expected one of boy, girl",
            "add it to the column map",
        ],
    )
    write_csv("unknown_wave.csv", edit({r: {"wave": "2019"} for r in (2, 5, 6, 11, 12)}))
    case(
        "unknown_wave.csv",
        [
            "column 'wave' has unknown level '2019' in rows 2, 5, 6 (+2 more)",
            "add it to the column map",
        ],
    )
    write_csv("unknown_school_type.csv", edit({1: {"school_type": "praktijkonderwijs"}}))
    case(
        "unknown_school_type.csv",
        [
            "column 'school_type' has unknown level 'praktijkonderwijs'",
            "vmbo_bk, vmbo_gt, havo, vwo",
        ],
    )
    write_csv("empty_wave.csv", [r for r in base_rows() if r["wave"] != "2016"])
    case("empty_wave.csv", ["no students in declared wave '2016'", "[levels] wave"])
    (HERE / "maps/three_waves.toml").write_text('[levels]\nwave = ["2014", "2016", "2018"]\n')
    write_csv("empty_wave_map.csv", [r for r in base_rows() if r["wave"] in ("2014", "2018")])
    case(
        "empty_wave_map.csv",
        ["no students in declared wave '2016'", "remove '2016' from [levels] wave"],
        "maps/three_waves.toml",
    )
    write_csv("too_many_excluded.csv", edit({r: {"gender": ""} for r in range(1, 9)}))
    case(
        "too_many_excluded.csv",
        ["8 of 14 rows would be excluded (missing gender: 8)", "missing_values"],
    )

    # --- numbers
    write_csv("item_out_of_range.csv", edit({4: {"item_3": "7"}}))
    case(
        "item_out_of_range.csv",
        ["column 'item_3' has answers outside 1..5 in row 4", "missing_values in the column map"],
    )
    write_csv("item_zero.csv", edit({10: {"item_1": "0"}}))
    case("item_zero.csv", ["column 'item_1' has answers outside 1..5 in row 10", "fix the file"])
    write_csv("item_non_numeric.csv", edit({5: {"item_2": "vaak"}}))
    case(
        "item_non_numeric.csv",
        ["column 'item_2' is not a number in row 5 (e.g. 'vaak')", "answers must be 1..5 or empty"],
    )
    write_csv("item_non_integer.csv", edit({2: {"item_4": "2.5"}}))
    case(
        "item_non_integer.csv",
        ["column 'item_4' has non-integer answers in row 2", "whole numbers"],
    )
    write_csv(
        "all_items_missing.csv",
        [{**r, **{f"item_{k}": "" for k in range(1, 7)}} for r in base_rows()],
    )
    case(
        "all_items_missing.csv",
        ["columns item_1..item_6 (the six items) are empty for every", "[rename]"],
    )
    write_csv("age_impossible.csv", edit({2: {"age": "45"}, 3: {"age": "1.5"}}))
    case(
        "age_impossible.csv",
        ["column 'age' has impossible ages in rows 2, 3", "ages must be 10 to 22 years"],
    )
    write_csv("age_non_numeric.csv", edit({12: {"age": "vijftien"}}))
    case("age_non_numeric.csv", ["column 'age' is not a number in row 12", "in years"])

    # --- file types
    case("does_not_exist.csv", ["file not found", "check the path"])
    (HERE / "survey.xlsx").write_bytes(b"PK\x03\x04 not really a spreadsheet")
    case("survey.xlsx", ["unknown file type '.xlsx'", "save the survey as"])
    (HERE / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet at all, just junk bytes")
    case("corrupt.parquet", ["cannot read as Parquet", "export it again"])
    (HERE / "corrupt.sav").write_bytes(b"$FL2 junk junk junk junk junk junk junk junk")
    case("corrupt.sav", ["cannot read as SPSS", "export it again"])
    (HERE / "corrupt.dta").write_bytes(b"<stata_dta> junk junk junk junk")
    case("corrupt.dta", ["cannot read as Stata", "export it again"])

    # --- Dutch SPSS export through the example map
    dutch = pd.DataFrame(
        {
            "leerling_id": [f"{5000 + i}" for i in range(8)],
            "brin": ["01AB", "01AB", "02CD", "02CD", "03EF", "03EF", "01AB", "02CD"],
            "regio": ["Noord-Limburg"] * 2
            + ["Parkstad Limburg"] * 2
            + ["Maastricht-Heuvelland"] * 2
            + ["Noord-Limburg", "Parkstad Limburg"],
            "meting": [3.0, 7.0] * 4,
            "geslacht": [1.0, 2.0, 3.0, 1.0, 2.0, 1.0, 2.0, 1.0],
            "schooltype": ["HAVO", "VWO", "VMBO-BB/KB", "VMBO-GT/TL"] * 2,
            "opl_ouders": [1.0, 2.0, 3.0, 9.0] * 2,
            "leeftijd": [14.0, 15.0, 14.5, 15.5, 14.0, 16.0, 15.0, 14.0],
            **{f"v{k}": [float((i + k) % 5 + 1) for i in range(8)] for k in range(1, 7)},
        }
    )
    labels = {
        "geslacht": {1.0: "jongen", 2.0: "meisje", 3.0: "anders"},
        "opl_ouders": {1.0: "maximaal mbo", 2.0: "hbo", 3.0: "wo (universiteit)", 9.0: "onbekend"},
        "meting": {3.0: "OML 2018", 7.0: "OML 2022"},
    }
    pyreadstat.write_sav(dutch, HERE / "dutch_unknown_label.sav", variable_value_labels=labels)
    case(
        "dutch_unknown_label.sav",
        [
            "column 'geslacht' (gender) has unknown level '3' (label 'anders') in row 3",
            "add it to the column map",
        ],
        DUTCH_MAP,
    )
    renamed = dutch.rename(columns={"leerling_id": "leerlingid"})
    renamed.to_csv(HERE / "dutch_typo.csv", index=False, sep=";")
    case(
        "dutch_typo.csv",
        [
            "the map renames 'leerling_id' to it, but the file has no "
            "'leerling_id'; did you mean 'leerlingid'?"
        ],
        DUTCH_MAP,
    )

    # --- column maps (read with the valid ok_canonical.csv)
    (HERE / "maps/bad_syntax.toml").write_text('[rename]\ngeslacht = "gender\n')
    case(
        "ok_canonical.csv",
        ["bad_syntax.toml: column map is not valid TOML", "fix the syntax"],
        "maps/bad_syntax.toml",
    )
    (HERE / "maps/unknown_canonical.toml").write_text('[rename]\ngeslacht = "sex"\n')
    case(
        "ok_canonical.csv",
        ["maps 'geslacht' to 'sex', which is not a canonical column", "use one of student_id"],
        "maps/unknown_canonical.toml",
    )
    (HERE / "maps/undeclared_level.toml").write_text('[recode.gender]\njongen = "boys"\n')
    case(
        "ok_canonical.csv",
        [
            "[recode.gender] maps 'jongen' to 'boys', which is not a declared "
            "level of gender (boy, girl)",
            "add it under [levels] gender",
        ],
        "maps/undeclared_level.toml",
    )
    (HERE / "maps/unknown_key.toml").write_text('[renames]\ngeslacht = "gender"\n')
    case(
        "ok_canonical.csv",
        ["unknown key 'renames' (did you mean 'rename'?)", "a column map has only"],
        "maps/unknown_key.toml",
    )
    (HERE / "maps/levels_unknown_column.toml").write_text('[levels]\nsex = ["m", "f"]\n')
    case(
        "ok_canonical.csv",
        ["[levels] names 'sex', which is not a categorical column", "use one of region"],
        "maps/levels_unknown_column.toml",
    )
    (HERE / "maps/recode_item.toml").write_text('[recode.item_1]\neens = "4"\n')
    case(
        "ok_canonical.csv",
        ["[recode.item_1] names 'item_1', which is not a categorical", "canonical names"],
        "maps/recode_item.toml",
    )
    (HERE / "maps/bad_encoding.toml").write_text('encoding = "klingon"\n')
    case("ok_canonical.csv", ["unknown encoding 'klingon'", '"cp1252"'], "maps/bad_encoding.toml")
    (HERE / "maps/rename_twice.toml").write_text('[rename]\ngeslacht = "gender"\nsexe = "gender"\n')
    case(
        "ok_canonical.csv",
        ["maps both 'geslacht' and 'sexe' to 'gender'", "keep one"],
        "maps/rename_twice.toml",
    )
    case("ok_canonical.csv", ["column map not found", "check the path"], "maps/not_there.toml")

    lines = ["# Generated by _make_corpus.py: file (and column map) -> substrings of the error.\n"]
    for file, map_, expect in CASES:
        lines.append("[[case]]")
        lines.append(f'file = "{file}"')
        if map_:
            lines.append(f'map = "{map_}"')
        quoted = ", ".join('"' + e.replace("\\", "\\\\").replace('"', '\\"') + '"' for e in expect)
        lines.append(f"expect = [{quoted}]\n")
    (HERE / "expected.toml").write_text("\n".join(lines))
    print(f"{len(CASES)} cases")


if __name__ == "__main__":
    main()
