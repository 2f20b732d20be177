"""Where the package finds its files: the model specs it ships and the checkout it runs from.

The top-level ``models/`` folder of the repository is the one source of the model specs and
the findings files. A wheel carries a copy of it as ``omlbayes/_models/`` (setup.py maps it
there), so an installed package finds its specs with :mod:`importlib.resources`; run from a
source checkout (``PYTHONPATH=src`` or an editable install) the package reads ``models/``
itself.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

from omlbayes.errors import SpecError

PACKAGED_MODELS = "_models"  # the wheel's copy of models/, inside the package


@cache
def source_root() -> Path | None:
    """The repository this package runs from (``src/omlbayes`` in a checkout), or None when
    it is installed (a wheel in site-packages)."""
    root = Path(__file__).resolve().parents[2]
    is_checkout = (root / "pyproject.toml").is_file() and (root / "src" / "omlbayes").is_dir()
    return root if is_checkout else None


def project_root() -> Path:
    """The folder defaults are relative to (``outputs/``, ``data/``): the source checkout,
    or the current folder for an installed package."""
    return source_root() or Path.cwd()


@cache
def models_dir() -> Path:
    """The model specs: the package's own copy first, then the checkout's ``models/``."""
    packaged = resources.files("omlbayes") / PACKAGED_MODELS
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    root = source_root()
    if root is not None and (root / "models").is_dir():
        return root / "models"
    raise SpecError(
        "the model specs are missing: this omlbayes has no omlbayes/_models/ and runs from no "
        "source checkout with a models/ folder; reinstall the package (pip install omlbayes)"
    )


def findings_dir() -> Path:
    """The findings files (``models/findings/``)."""
    return models_dir() / "findings"
