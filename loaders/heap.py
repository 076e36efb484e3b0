"""Keep glibc from returning freed sample memory to the kernel after every batch.

A DataLoader batch of 256 samples of 40 kB is 10 MB of ``bytes`` objects,
allocated on the heap and freed together when the batch is dropped.  glibc
hands the freed top of its heap back to the kernel as soon as it exceeds
``M_TRIM_THRESHOLD`` (128 kB by default), so the next batch page-faults all
of that memory in again: about 9 faults per 40 kB sample, which made random
reads 2.5x slower in a fresh process (37 instead of 15 microseconds per
sample, ``scripts/bench_indexed.py``'s data, 2-core VM).

glibc raises these thresholds by itself the first time the process frees a
memory-mapped block of up to 32 MiB (to that block's size, and the trim
threshold to twice that), so long-running processes usually end up there
anyway; a process that only ever allocates samples never does.  We set the
same ceiling values at once: blocks under 32 MiB come from the heap, and up
to 64 MiB of freed heap is kept for reuse.

Nothing happens on other C libraries, or when the user has set glibc's own
``MALLOC_TRIM_THRESHOLD_`` or ``MALLOC_MMAP_THRESHOLD_``, or any
``glibc.malloc`` tunable in ``GLIBC_TUNABLES``: their choice wins (and is the
way to opt out).
"""

from __future__ import annotations

import os

MMAP_THRESHOLD = 32 << 20  # glibc's largest automatic value (64-bit)
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # what glibc pairs with it
_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from <malloc.h>
_M_MMAP_THRESHOLD = -3
_USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")

_done = False


def _user_chose() -> bool:
    return any(name in os.environ for name in _USER_SETTINGS) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")


def is_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return False


def keep_freed_heap() -> bool:
    """Apply the thresholds once per process; True if they were set now or
    before.  Forked children inherit them."""
    global _done
    if _done:
        return True
    if not is_glibc() or _user_chose():
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    except (ImportError, OSError, AttributeError):
        return False
    _done = ok
    return ok
