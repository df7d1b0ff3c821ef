"""Large buffers go back to the operating system when freed, so RSS follows what the node holds.

glibc's malloc serves an allocation of 128 KiB or more with its own mmap and unmaps it when freed, but
after the first such free it raises that threshold (up to 32 MiB) and serves later large allocations
from its heaps, which it rarely shrinks. A node that reads a few 8 MiB request bodies or P2P frames at
once then keeps hundreds of MiB it no longer uses (4 clients posting 8 MiB bodies for 20 s grew a node
from 65 to 1,100 MiB). Fixing the threshold at `MMAP_THRESHOLD` turns that adjustment off. Other C
libraries (musl, macOS) do not have the problem or the call; there this is a no-op.
Rule: called once at node start; changes nothing but malloc's policy for large blocks.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h
MMAP_THRESHOLD = 256 * 1024


def return_large_buffers() -> bool:
    """Fix glibc's mmap threshold; True when the C library took it."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
