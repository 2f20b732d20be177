#!/usr/bin/env python
"""Fit a model and write a run folder under outputs/ (``omlbayes fit``; --help for options)."""

from __future__ import annotations

import sys

from omlbayes.pipeline.commands import fit_main

if __name__ == "__main__":
    sys.exit(fit_main(sys.argv[1:], prog="scripts/fit.py"))
