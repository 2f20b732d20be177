"""Packaging beside pyproject.toml: the wheel carries the repository's models/ folder.

The top-level ``models/`` (the model specs and findings files) stays the one source; the
build maps it into the package as ``omlbayes/_models/`` so an installed omlbayes finds its
specs with importlib.resources (``omlbayes/resources.py``). Everything else is in
pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages("src"), "omlbayes._models", "omlbayes._models.findings"],
    package_dir={"": "src", "omlbayes._models": "models"},
    package_data={"omlbayes._models": ["*.toml"], "omlbayes._models.findings": ["*.toml"]},
)
