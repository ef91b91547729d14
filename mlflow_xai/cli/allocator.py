"""Keep freed memory in the process instead of handing it back to the OS after every pass (glibc).

Each forward/backward pass frees its activations and the next pass asks for the same sizes again.
By default glibc serves large blocks with a fresh ``mmap`` (pages that fault in zero-filled) and
trims the top of its heap back to the OS, so on the CPU an audit spends much of its time in the
kernel. Measured on the example CNN, 20 forward+backward passes of 512 images on 2 cores: 3.8 s
wall with 3.1 s of system time and 1.4M page faults by default, 1.9 s with 0.02 s and 12k page
faults once both thresholds below are raised.

The command line does this for its own process. A program that calls ``mlflow_xai.audit`` or
``mlflow.models.evaluate`` decides for itself: call ``keep_freed_memory()`` first, or set
``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` in the environment. The cost is memory
the process keeps after a peak (up to ``TRIM_THRESHOLD`` of free heap is not returned).
"""

from __future__ import annotations

import ctypes
import os
import platform

MMAP_THRESHOLD = 256 << 20  # blocks below this come from the heap, which reuses them
TRIM_THRESHOLD = 1 << 30  # free heap kept before any is returned to the OS
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers (malloc.h)
ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True if both were set.

    Does nothing and returns False off Linux/glibc, or when either variable of ``ENVIRONMENT`` is
    set: thresholds chosen in the environment win.
    """
    if any(name in os.environ for name in ENVIRONMENT):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    mmap_set = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    trim_set = libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return mmap_set and trim_set
