"""environment.yml (conda users) and pyproject.toml (pip) pin the same package set."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)==([^\s;]+)\s*", line)
        assert match, f"not an exact pin: {line!r}"
        out[match[1].lower()] = match[2]
    return out


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _pins(project["dependencies"] + project["optional-dependencies"]["dev"])
    text = (ROOT / "environment.yml").read_text()
    pip_lines = re.findall(r"^ {6}- (.+)$", text, flags=re.M)
    assert _pins(pip_lines) == wanted
    assert re.search(r"^\s*- python=3\.12\s*$", text, flags=re.M)


def test_lock_pins_every_direct_dependency_at_the_same_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _pins(project["dependencies"] + project["optional-dependencies"]["dev"])
    lock = _pins([ln for ln in (ROOT / "requirements.lock").read_text().splitlines() if "==" in ln])
    for name, version in wanted.items():
        assert lock.get(name) == version, f"{name}: pyproject {version}, lock {lock.get(name)}"


def test_python_version_file_is_3_12():
    assert (ROOT / ".python-version").read_text().strip() == "3.12"
