#!/usr/bin/env python
"""Write the HTML report of a run folder (``omlbayes report``; --help for options)."""

from __future__ import annotations

import sys

from omlbayes.pipeline.commands import report_main

if __name__ == "__main__":
    sys.exit(report_main(sys.argv[1:], prog="scripts/report.py"))
