"""The house keeps its shape: ARCHITECTURE.md lists every module, imports obey its layers."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "omlbayes"
ARCHITECTURE = ROOT / "ARCHITECTURE.md"
FOUNDATION = ("constants", "errors", "labels", "resources")
STUDIES = ("validation", "simulate")
# Everything after the fit reads a run folder: these stages never need a sampler.
NO_SAMPLER_STAGES = ("results", "plots", "report")
SAMPLER_PACKAGES = ("pymc", "pytensor", "bambi", "nutpie")


def _section(name: str) -> str:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    match = re.search(rf"<!-- {name} -->\n(.*?)<!-- /{name} -->", text, flags=re.S)
    assert match, f"ARCHITECTURE.md lacks the <!-- {name} --> section"
    return match.group(1)


def layer_ranks() -> dict[str, int]:
    """Stage (top-level module or folder) -> rank, from ARCHITECTURE.md's numbered list."""
    ranks = {}
    for line in _section("layers").splitlines():
        match = re.match(r"(\d+)\. (.*)", line.strip())
        if match:
            for name in re.findall(r"`([a-z_]+)`", match.group(2).split("(")[0]):
                ranks[name] = int(match.group(1))
    return ranks


def documented_modules() -> dict[str, str]:
    """Module path (relative to the package) -> its stage, from the module map."""
    rows = {}
    for line in _section("modules").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[1]
    return rows


def package_modules() -> list[Path]:
    """Every module of the package except the folders' ``__init__.py``."""
    return sorted(
        p.relative_to(PACKAGE)
        for p in PACKAGE.rglob("*.py")
        if p.name != "__init__.py" or p.parent == PACKAGE
    )


def stage_of(relative: Path) -> str:
    if relative.parts == ("__init__.py",):
        return "api"
    return relative.parts[0].removesuffix(".py")


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import, including those inside functions."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "omlbayes":
                out += [(node.lineno, f"omlbayes.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
    return out


def test_the_module_map_lists_every_module_and_nothing_else():
    listed = documented_modules()
    present = {p.as_posix(): stage_of(p) for p in package_modules()}
    assert sorted(set(present) - set(listed)) == [], "modules missing from ARCHITECTURE.md"
    assert sorted(set(listed) - set(present)) == [], "ARCHITECTURE.md lists absent modules"
    ranks = layer_ranks()
    for module, stage in listed.items():
        expected = "foundation" if present[module] in FOUNDATION else present[module]
        expected = "studies" if expected in STUDIES else expected
        assert stage == expected, f"{module}: listed under {stage}, lives in {expected}"
        assert expected in (*ranks, "foundation", "studies"), f"{module}: no layer {expected}"


def test_every_stage_folder_says_its_job_in_one_line():
    for folder in sorted(p for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()):
        tree = ast.parse((folder / "__init__.py").read_text(encoding="utf-8"))
        doc = ast.get_docstring(tree)
        assert doc and "\n" not in doc.strip(), f"{folder.name}/__init__.py: one-line docstring"
        assert len(tree.body) == 1, f"{folder.name}/__init__.py holds its docstring only"


def test_imports_follow_the_layer_order():
    ranks = layer_ranks()
    for name in FOUNDATION:
        assert ranks[name] == 0
    problems = []
    for relative in package_modules() + sorted(
        p.relative_to(PACKAGE) for p in PACKAGE.glob("*/__init__.py")
    ):
        stage = stage_of(relative)
        if stage in STUDIES:
            continue
        for line, module in imports_of(PACKAGE / relative):
            parts = module.split(".")
            if parts[0] in SAMPLER_PACKAGES and stage in NO_SAMPLER_STAGES:
                problems.append(f"{relative}:{line} imports {module} (no sampler after the fit)")
            if parts[0] != "omlbayes" or len(parts) < 2:
                continue
            target = parts[1]
            if target in STUDIES:
                problems.append(f"{relative}:{line} imports the study {module}")
            elif ranks.get(target, 0) > ranks[stage]:
                problems.append(f"{relative}:{line}: {stage} imports the later stage {module}")
    assert problems == []


@pytest.mark.parametrize("study", STUDIES)
def test_studies_exist_beside_the_flow(study):
    assert (PACKAGE / study / "__init__.py").is_file()
