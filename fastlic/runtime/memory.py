"""Keep freed tensor memory in the process instead of handing it back to the kernel.

A decode allocates and frees the same few large buffers (g_s activations: 25 MB
each for a Kodak image) on every call. glibc's malloc serves blocks above its mmap
threshold with fresh ``mmap`` pages and returns freed memory above its trim
threshold to the kernel, so each call page-faults (and the kernel zeroes) its whole
working set again. ONNX Runtime avoids this with its own arena; PyTorch on the CPU
does not. :func:`keep_freed_memory` raises both glibc thresholds so freed blocks
are reused: ``python -m experiments.allocator`` measures the effect.

This is a process-wide setting, made once: the ``fastlic`` command makes it at start;
a service embedding :class:`fastlic.runtime.codec.Codec` calls it itself (or sets
``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` in its environment).
The cost is that the process keeps its peak heap instead of shrinking after it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1     # mallopt parameters, from glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 2**20   # glibc refuses more on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 2**30


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version      # musl and others: no mallopt worth tuning
        return libc
    except (OSError, AttributeError):
        return None


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD_MAX,
                      trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Tell glibc malloc to serve blocks up to ``mmap_threshold`` bytes from its heap
    and keep up to ``trim_threshold`` freed bytes; True if it took both settings,
    False where there is no glibc (the call is then a no-op)."""
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    took_mmap = libc.mallopt(M_MMAP_THRESHOLD, min(mmap_threshold, MMAP_THRESHOLD_MAX))
    took_trim = libc.mallopt(M_TRIM_THRESHOLD, min(trim_threshold, 2**31 - 1))
    return bool(took_mmap and took_trim)
