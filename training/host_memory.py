"""Host memory between training steps: keep what a step frees for the next step instead of returning it to the OS.

Every training step frees and allocates again the same batch-sized tensors (views, activations, gradients). glibc's
malloc serves blocks above its mmap threshold with fresh `mmap`s and trims the top of the heap once more than its
trim threshold lies free, so on the CPU each step hands megabytes back to the OS and page-faults them in again. The
PyTorch performance tuning guide (https://pytorch.org/tutorials/recipes/recipes/tuning_guide.html, "Switch Memory
allocator") advises a caching allocator (jemalloc, TCMalloc) for this reason; raising the two thresholds with
`mallopt` gets the same reuse from glibc itself, with no preload. Measured on 2 CPU cores (resnet-tiny-cpu, 64 px,
batch 64, and the cub100_init recipe; 3 runs each: benchmarks/results/step_floor/floor_runs.md): a moco step
105.1 -> 101.1 ms and 118.5 -> 98.3 ms. The cost: the process keeps up to its peak of freed memory instead of
returning it.

The console scripts apply it at start (`training.cli.console_entry`); the benchmarks that time a step call it as
well. `FGSSL_KEEP_FREED_MEMORY=0` turns it off, and a `MALLOC_TRIM_THRESHOLD_` / `MALLOC_MMAP_THRESHOLD_` already in
the environment (the user's own tuning) is left alone. Only Linux glibc; elsewhere nothing happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: glibc's <malloc.h> parameter numbers.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: Free memory kept at the top of the heap, and the size above which blocks get their own mmap: 1 GiB each, so
#: batch-sized tensors (tens of MB at 224 px) are reused from the heap.
KEEP_BYTES = 1 << 30
ENV = "FGSSL_KEEP_FREED_MEMORY"
USER_TUNING = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Raise glibc's trim and mmap thresholds to `KEEP_BYTES` for this process (once); True when they are set."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if (not sys.platform.startswith("linux") or os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no")
            or any(name in os.environ for name in USER_TUNING)):
        return _applied
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return _applied
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _applied = bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES)) and bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES))
    return _applied


__all__ = ["ENV", "KEEP_BYTES", "keep_freed_memory"]
