"""Configuration read strictly: spec sections, findings files, output options, run records,
and the monitor's name (never Limburg unless the config says so)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from conftest import ROOT, run_command
from test_report import make_fake_run

from omlbayes.errors import RunError, SpecError
from omlbayes.model import spec
from omlbayes.report.findings import load_findings, parse_findings
from omlbayes.report.page import write_report
from omlbayes.report.schools import write_school_pages
from omlbayes.results import runs
from omlbayes.results.options import OutputOptions

FLAGSHIP = (ROOT / "models" / "flagship.toml").read_text(encoding="utf-8")


def _spec_with(tmp_path: Path, old: str, new: str) -> Path:
    assert old in FLAGSHIP
    path = tmp_path / "typo.toml"
    path.write_text(FLAGSHIP.replace(old, new, 1), encoding="utf-8")
    (tmp_path / "findings").mkdir(exist_ok=True)
    (tmp_path / "findings" / "oml.toml").write_text(
        (ROOT / "models" / "findings" / "oml.toml").read_text(encoding="utf-8")
    )
    return path


@pytest.mark.parametrize(
    ("old", "new", "section", "key"),
    [
        ('family = "gaussian"', 'famly = "gaussian"', "[model]", "famly"),
        ("breakdowns = [", "breakdown = [", "[estimands]", "breakdown"),
        ("chains = 4", "chain = 4", "[sampler]", "chain"),
        ('findings = "findings/oml.toml"', 'finding = "x"', "[report]", "finding"),
        ("[sampler]", "[samplr]", "the top level", "samplr"),
    ],
)
def test_unknown_key_in_any_section_is_one_line_naming_it(tmp_path, old, new, section, key):
    with pytest.raises(SpecError) as err:
        spec.load_spec(_spec_with(tmp_path, old, new))
    message = str(err.value)
    assert "\n" not in message
    assert f"{section} has unknown key '{key}'" in message
    allowed = spec.ALLOWED_KEYS["" if section == "the top level" else section.strip("[]")]
    assert f"allowed: {', '.join(allowed)}" in message


def test_every_shipped_spec_key_is_in_the_allowed_table():
    raw = __import__("tomllib").loads(FLAGSHIP)
    for section, table in raw.items():
        assert section in spec.ALLOWED_KEYS[""]
        allowed = spec.ALLOWED_KEYS[section]
        assert allowed is None or set(table) <= set(allowed)


def test_findings_file_next_to_the_spec_must_exist(tmp_path):
    path = _spec_with(tmp_path, 'findings = "findings/oml.toml"', 'findings = "nowhere.toml"')
    with pytest.raises(SpecError, match="nowhere.toml"):
        spec.load_spec(path)


def test_bad_spec_through_the_cli_is_one_line_exit_2(tmp_path):
    path = _spec_with(tmp_path, 'family = "gaussian"', 'famly = "gaussian"')
    result = run_command("fit", "--model", str(path), "--out", str(tmp_path / "runs"))
    assert result.returncode == 2
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "famly" in errors[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"blocks": []}, "unknown key 'blocks'"),
        (
            {"block": [{"key": "a", "title": {"nl": "a", "en": "a"}, "statements": []}]},
            "statements",
        ),
        ({"block": [{"key": "a", "title": {"nl": "a"}}]}, "title needs a text for en"),
        (
            {
                "block": [
                    {"key": "a", "title": {"nl": "a", "en": "a"}, "statement": [{"kind": "x"}]}
                ]
            },
            "kind 'x' unknown",
        ),
        (
            {
                "block": [
                    {
                        "key": "a",
                        "title": {"nl": "a", "en": "a"},
                        "statement": [{"kind": "waves", "breakdown": "overall", "pairs": "all"}],
                    }
                ]
            },
            "pairs 'all' unknown",
        ),
        ({"factsheet_levels": "vlaanderen"}, "factsheet_levels"),
    ],
)
def test_findings_files_are_validated(raw, match):
    with pytest.raises(SpecError, match=match):
        parse_findings(raw)


def test_shipped_findings_files_parse():
    for path in sorted((ROOT / "models" / "findings").glob("*.toml")):
        assert load_findings(path).blocks


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prob": 1.0}, "between 0 and 1"),
        ({"interval": "hpd"}, "hpd"),
        ({"min_cell_n": 3}, "at least 5"),
        ({"lang": "de"}, "de"),
    ],
)
def test_output_options_are_validated(kwargs, match):
    with pytest.raises(SpecError, match=match):
        OutputOptions(**kwargs)


def test_interval_texts_follow_the_options():
    opts = OutputOptions(interval="hdi", prob=0.925, min_cell_n=15)
    assert opts.interval_name("en") == "92.5% interval (highest posterior density, HDI)"
    assert opts.interval_short("nl") == "92,5%-interval"
    assert opts.suppressed_text() == "n < 15"
    assert OutputOptions().whole("en") == "all schools together"
    assert OutputOptions(area="Testland").whole("nl") == "heel Testland"


def test_an_old_run_folder_gives_one_line_saying_what_to_do(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / runs.RUN_JSON).write_text(json.dumps({"model": "flagship", "options": {}}))
    with pytest.raises(RunError) as err:
        runs.read_record(folder)
    assert "older omlbayes" in str(err.value) and "refit" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_monitor_the_config_does_not_name_is_not_named(tmp_path):
    """Without [monitor] in the config the report and school pages name no monitor and
    no area (OML's level names aside, which this fake run keeps)."""
    run = make_fake_run(tmp_path / "fake", lang="en")
    record = runs.read_record(run)
    options = {**record.options, "monitor": "", "area": ""}
    runs.write_record(run, dataclasses.replace(record, options=options))
    html = write_report(run, lang="en").read_text(encoding="utf-8")
    subtitle = re.search(r"<p class='subtitle'>(.*?)</p>", html).group(1)
    assert "a school monitor survey" in subtitle and "Limburg" not in subtitle
    for page in write_school_pages(run, lang="en"):
        text = page.read_text(encoding="utf-8")
        assert "province" not in text
        if page.name.startswith("school-") and "<img" in text:
            assert "all schools together" in text and "All schools" in text
