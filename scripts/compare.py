#!/usr/bin/env python
"""Compare fitted runs: LOO and the same contrasts (``omlbayes compare``; --help)."""

from __future__ import annotations

import sys

from omlbayes.pipeline.commands import compare_main

if __name__ == "__main__":
    sys.exit(compare_main(sys.argv[1:], prog="scripts/compare.py"))
