"""`pip install .` works: the wheel carries models/ as omlbayes/_models/ and the `omlbayes`
command, and an installed omlbayes finds its specs outside the source checkout."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT

# what a build reads from the checkout (pyproject names README.md as the long description)
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "src", "models")


def build_wheel(dest: Path) -> Path:
    """A wheel built from a copy of the checkout's build inputs (no build/ left in the repo)."""
    tree = dest / "tree"
    tree.mkdir()
    for name in BUILD_INPUTS:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, tree / name)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(dest / "dist"), str(tree)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = (dest / "dist").glob("omlbayes-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(wheel, venv): the wheel installed without dependencies into a new venv that sees
    this interpreter's packages after its own (so the checkout's omlbayes cannot leak in)."""
    work = tmp_path_factory.mktemp("packaging")
    wheel = build_wheel(work)
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    own = subprocess.run(
        [str(python), "-c", "import site; print(site.getsitepackages()[0])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    stack = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(own) / "zz_stack.pth").write_text("\n".join(stack) + "\n")
    return wheel, venv


def run_installed(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        args, capture_output=True, text=True, timeout=300, cwd=cwd,
        env={**env, "MPLBACKEND": "Agg", "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}"},
    )  # fmt: skip


@pytest.mark.slow
def test_wheel_ships_the_model_specs_and_the_command(installed):
    wheel, _ = installed
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = zf.read(entry_points).decode()
    shipped = {n.removeprefix("omlbayes/_models/") for n in names if "/_models/" in n}
    expected = {p.relative_to(ROOT / "models").as_posix() for p in ROOT.glob("models/**/*.toml")}
    assert shipped == expected and "full.toml" in shipped and "findings/oml.toml" in shipped
    assert "omlbayes = omlbayes.pipeline.commands:main" in scripts


@pytest.mark.slow
def test_installed_package_loads_specs_outside_the_checkout(installed, tmp_path):
    _, venv = installed
    code = (
        "import omlbayes, omlbayes.resources as r; from omlbayes.model.spec import load_spec; "
        "from omlbayes.report.findings import load_findings; "
        "s = load_spec('flagship'); print(omlbayes.__file__); print(r.models_dir()); "
        "print(r.source_root()); print(s.name, load_spec().name, s.findings); "
        "print(load_findings(None).name)"
    )
    result = run_installed(venv, tmp_path, "python", "-c", code)
    assert result.returncode == 0, result.stderr[-3000:]
    module, models, root, spec, findings = result.stdout.splitlines()
    assert module.startswith(str(venv)) and models.startswith(str(venv))
    assert models.endswith("omlbayes/_models") and root == "None"
    name, default, findings_file = spec.split()
    assert (name, default, findings) == ("flagship", "full", "generic")
    assert findings_file.startswith(models) and findings_file.endswith("findings/oml.toml")


@pytest.mark.slow
def test_installed_command_dispatches_to_the_scripts(installed, tmp_path):
    _, venv = installed
    helped = run_installed(venv, tmp_path, "omlbayes", "fit", "--help")
    assert helped.returncode == 0 and helped.stdout.startswith("usage: omlbayes fit")
    assert "--replot RUN" in helped.stdout
    listed = run_installed(venv, tmp_path, "omlbayes", "fit", "--list-models")
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "* full" in listed.stdout and "flagship" in listed.stdout
    for command in ("report", "compare"):
        result = run_installed(venv, tmp_path, "omlbayes", command, "--help")
        assert result.returncode == 0 and f"usage: omlbayes {command}" in result.stdout
    missing = run_installed(venv, tmp_path, "omlbayes", "report", str(tmp_path / "no_run"))
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")
    no_data = run_installed(venv, tmp_path, "omlbayes", "fit", "--out", str(tmp_path / "out"))
    assert no_data.returncode == 2 and "pass --data FILE" in no_data.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    unknown = run_installed(venv, tmp_path, "omlbayes", "refit")
    assert unknown.returncode == 2 and "invalid choice: 'refit'" in unknown.stderr
