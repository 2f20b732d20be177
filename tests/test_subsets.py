"""Sensitivity-analysis subsets: the rows kept, the levels dropped, one-line errors."""

from __future__ import annotations

import importlib.util

import pandas as pd
import pytest
from conftest import ROOT, run_script

from omlbayes.data import subsets
from omlbayes.data.ingest import read_survey
from omlbayes.errors import InputError


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "school_id": ["a", "a", "a", "b", "b", "c", "c"],
            "wave": ["2020_0", "2020_1", "2020_2", "2020_0", "2020_1", "2018", "2020_0"],
            "parent_edu": pd.Categorical(["wo", "unknown", "hbo", "wo", "wo", "unknown", "hbo"]),
        }
    )


def test_schools_in_all_restricts_only_the_named_waves():
    out = subsets.schools_in_all(_frame(), ["2020_0", "2020_1", "2020_2"])
    assert out.school_id.tolist() == ["a", "a", "a", "c"]  # c keeps its 2018 row only
    assert out.wave.tolist() == ["2020_0", "2020_1", "2020_2", "2018"]
    with pytest.raises(InputError, match="not in the survey"):
        subsets.schools_in_all(_frame(), ["2020_0", "2024"])


def test_exclude_drops_the_rows_and_the_level():
    out = subsets.exclude(_frame(), "parent_edu", "unknown")
    assert len(out) == 5 and "unknown" not in out.parent_edu.cat.categories
    with pytest.raises(InputError, match="no row has"):
        subsets.exclude(_frame(), "parent_edu", "none")


def test_subset_script_writes_a_survey_fit_can_read(small_survey, tmp_path, capsys):
    target = tmp_path / "no_unknown.csv"
    result = run_script(
        "subset.py", "--data", str(small_survey), "--out", str(target),
        "--exclude", "parent_edu=unknown",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    survey = read_survey(target)
    before = read_survey(small_survey).frame
    assert len(survey.frame) == int((before.parent_edu != "unknown").sum())
    assert not (survey.frame.parent_edu == "unknown").any()
    # the error path in this process (the same main() the script calls; no second start-up)
    script = importlib.util.spec_from_file_location("subset_script", ROOT / "scripts/subset.py")
    module = importlib.util.module_from_spec(script)
    script.loader.exec_module(module)
    code = module.main(["--data", str(small_survey), "--out", str(tmp_path / "x.csv")])
    err = capsys.readouterr().err
    assert code != 0 and err.startswith("error:") and "Traceback" not in err
    assert not (tmp_path / "x.csv").exists()
