"""Keep the kernels' working arrays on the heap: glibc's malloc thresholds, pinned.

Each evaluation of the sparse kernel allocates its factor, selected inverse and work
arrays afresh (about 1 MB each at 40k students, 4 MB at 200k). glibc serves an allocation
above its mmap threshold (128 KiB at start) with a fresh mmap, and returns freed memory
at the top of the heap beyond its trim threshold to the system: either way the next
evaluation touches fresh pages, a page fault and a zero-fill for every 4 KiB. glibc
raises both thresholds by itself once a process frees a large mmapped block (reading a
CSV does), so whether a fit ran at full speed depended on what the process had done
before: the same 20,324 leapfrog steps of the 40k default took 76 s in a fresh process
and 49 s with the thresholds raised (``bench/RESULTS.md``, "glibc's malloc thresholds");
a run whose data pass ran on Dask sampled 13% slower than one that read the file itself.

:func:`pin_thresholds` sets them to the values glibc's own rule reaches at most (mmap
32 MiB, trim 64 MiB), so a fit runs the same whatever ran before it. Freed memory kept:
at most the trim threshold at the top of each malloc arena (peak RSS of a 40k default run
1,690 MB pinned, 1,657 MB not). Other C libraries: nothing to do.
"""

from __future__ import annotations

import ctypes
import sys

# mallopt parameters (glibc's malloc.h) and the values of glibc's dynamic rule at its
# cap: DEFAULT_MMAP_THRESHOLD_MAX on 64-bit, and twice that for trimming
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD

_pinned: bool | None = None


def pin_thresholds() -> bool:
    """Pin glibc's mmap and trim thresholds (once per process); False where malloc is not
    glibc's or refuses the values."""
    global _pinned
    if _pinned is None:
        _pinned = _mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and _mallopt(
            _M_TRIM_THRESHOLD, TRIM_THRESHOLD
        )
    return _pinned


def _mallopt(param: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no C library to load, or no mallopt in it
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(param, value) == 1  # musl's mallopt refuses everything
