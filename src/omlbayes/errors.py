"""Typed exceptions carrying one actionable line for the user."""

from __future__ import annotations

import sys
from collections.abc import Callable

from omlbayes.constants import EXIT_USER_ERROR


class ProjectError(Exception):
    """Base class: the message is shown to the user as is, without a traceback."""


class InputError(ProjectError):
    """Bad input data or column map: names the file, column, rows and the fix."""


class SpecError(ProjectError):
    """A model spec or command-line option that cannot be honoured."""


class RunError(ProjectError):
    """A run folder that is missing, incomplete or unreadable."""


class DiagnosticsFailed(ProjectError):
    """The sampler diagnostics gate failed (exit code 3 unless allowed)."""


def run_script(body: Callable[[], object]) -> int:
    """A script's body under the project's error contract: a ``ProjectError`` becomes one
    ``error:`` line on stderr and exit code 2, never a traceback."""
    try:
        body()
    except ProjectError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0
