"""Pinned malloc thresholds: the kernels' freed working arrays are reused, not re-faulted."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# A fresh process (malloc's state is per process): six 1 MiB arrays written and freed 40
# times, as a kernel evaluation allocates its factor and work arrays; prints the minor page
# faults per cycle after the first (256 per fresh MiB).
_CYCLES = """
import resource, sys
import numpy as np
from omlbayes.backends import heap

pinned = heap.pin_thresholds() if sys.argv[1] == "pin" else None


def cycle():
    arrays = [np.ones(131_072) for _ in range(6)]
    del arrays


def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


cycle()
start = faults()
for _ in range(40):
    cycle()
print(pinned, (faults() - start) / 40)
"""


def _faults_per_cycle(mode: str) -> tuple[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _CYCLES, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], float(out[1])


# skipped by what the C library is, not by pinning: collecting must not change this
# process's malloc
@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc is not glibc's")
def test_pinned_thresholds_reuse_freed_arrays():
    pinned, faults = _faults_per_cycle("pin")
    assert pinned == "True"
    # unpinned, glibc trims the 6 MiB freed at the heap's top (its dynamic trim threshold is
    # twice the largest block freed, 2 MiB) and each cycle faults ~1,500 fresh pages
    assert faults < 50
    _, unpinned = _faults_per_cycle("nopin")
    assert unpinned > 10 * max(faults, 1.0)
