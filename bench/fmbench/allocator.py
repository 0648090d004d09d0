"""Large tensors on transparent huge pages, and freed memory kept for reuse, for the harness's processes.

A closed form at image dimension is one pass over its points (``addcmul``: read x, write the output), and its output
is a fresh allocation each call: glibc maps every large block anew, so the kernel zeroes it 4 KiB page by page on
first touch, and those page faults cost more than the pass itself. Measured on this suite's 2-core EPYC (n = 4096,
d = 3072, float32, ``addcmul`` alone, medians of 15, three processes each): 29–30 ms with 4 KiB pages against
8.7–11.5 ms with PyTorch's ``THP_MEM_ALLOC_ENABLE=1`` (allocations of 2 MiB and more aligned and ``madvise``-d for
huge pages, where the kernel allows it: ``/sys/kernel/mm/transparent_hugepage/enabled`` is ``always`` or
``madvise``). ``import fmbench`` before torch turns it on for the harness's processes (the CLI guarantees the order,
and its workers inherit it) unless the environment already says otherwise, and a run records the setting in
``environment.json``; the library, and the benchmark suites that measure it as a user imports it (torch first),
leave the process alone (README, "Threads and memory").

Huge pages make the zeroing cheaper; keeping freed memory removes it. glibc returns every block above its mmap
threshold (at most 32 MiB) to the kernel when it is freed, so a closed form's 50 MB output (n = 4096, d = 3072,
float32) is new memory on every call. :func:`use_heap_reuse` keeps freed blocks in the heap instead (glibc's
``mallopt``: no mmap for large blocks, no trimming of the heap's top), so the next call's output reuses pages that are
already mapped: the velocity above took 1.8× the machine's copy time for the bytes it touches with it, against 2.6×
with huge pages alone and 6.9× with neither (a 2-core Intel Xeon VM, best of 20; ``bench/suites/bench_exact_laws.py``). The cost
is memory: freed memory stays resident until :func:`release_freed_memory` (the harness calls it after every cell),
and the heap first grows by a few blocks before it reuses them (an aligned request does not fit a freed block of its
own size until freed neighbours merge: a loop allocating 64 MB per iteration grew by 8 blocks, 512 MB, before it
settled). The default sweep took 71–73 s with it against 92–98 s without, at a peak resident size of 825 MB
against 690 MB. ``import fmbench`` before torch turns it on unless the environment sets either of glibc's variables
for it (``MALLOC_MMAP_MAX_``, ``MALLOC_TRIM_THRESHOLD_``: then they rule),
exports them for its child processes, and a run records them; it does nothing where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

__all__ = ["HUGE_PAGES", "HEAP_REUSE", "use_huge_pages", "huge_pages_setting", "use_heap_reuse", "set_heap_reuse",
           "heap_reuse_setting", "release_freed_memory"]

HUGE_PAGES = "THP_MEM_ALLOC_ENABLE"
"""PyTorch's switch for huge-page-aligned CPU allocations (read when it first allocates a large block)."""


def use_huge_pages() -> None:
    """Ask PyTorch for huge-page allocations in this process and its children, unless the variable is already set or
    torch is already loaded (a process that imported torch first, as the benchmark suites do, keeps its defaults)."""
    if "torch" not in sys.modules:
        os.environ.setdefault(HUGE_PAGES, "1")


def huge_pages_setting() -> str | None:
    """The variable's value in this process (``None``: unset, PyTorch's default of 4 KiB pages)."""
    return os.environ.get(HUGE_PAGES)


HEAP_REUSE = {"MALLOC_MMAP_MAX_": 0, "MALLOC_TRIM_THRESHOLD_": 2**31 - 1}
"""glibc's variables for heap reuse and the values :func:`use_heap_reuse` gives them: no block is served by its own
mmap, and the heap's top is trimmed only beyond 2 GiB free (the largest value ``mallopt`` takes)."""
_GLIBC_DEFAULTS = {"MALLOC_MMAP_MAX_": 65536, "MALLOC_TRIM_THRESHOLD_": 128 * 1024}
_MALLOPT_OPTION = {"MALLOC_MMAP_MAX_": -4, "MALLOC_TRIM_THRESHOLD_": -1}  # M_MMAP_MAX, M_TRIM_THRESHOLD (malloc.h)


@functools.cache
def _glibc():
    """The process's C library where it is glibc (it has ``mallopt``), else None (looked up once per process)."""
    library = ctypes.CDLL(None)
    return library if hasattr(library, "gnu_get_libc_version") and hasattr(library, "mallopt") else None


def set_heap_reuse(enabled: bool) -> bool:
    """Keep freed memory in this process's heap (``enabled``) or restore glibc's defaults (65 536 mmapped blocks, a
    128 KiB trim threshold); False where the C library is not glibc (nothing is changed)."""
    library = _glibc()
    if library is None:
        return False
    values = HEAP_REUSE if enabled else _GLIBC_DEFAULTS
    return all(library.mallopt(_MALLOPT_OPTION[name], value) == 1 for name, value in values.items())


def use_heap_reuse() -> None:
    """Heap reuse for this process and its children, unless the environment already sets either variable (then glibc
    read them when this process started, and they rule) or torch is already loaded (as for huge pages: a process that
    imported torch first keeps its defaults)."""
    if "torch" in sys.modules or any(name in os.environ for name in HEAP_REUSE):
        return
    if set_heap_reuse(True):
        for name, value in HEAP_REUSE.items():
            os.environ[name] = str(value)


def heap_reuse_setting() -> str | None:
    """glibc's heap variables in this process's environment, ``NAME=value`` joined by spaces (``None``: unset, glibc's
    defaults)."""
    shown = [f"{name}={os.environ[name]}" for name in HEAP_REUSE if name in os.environ]
    return " ".join(shown) or None


def release_freed_memory() -> None:
    """Give the heap's free memory back to the system (glibc's ``malloc_trim(0)``; nothing elsewhere): the harness
    calls it after each cell, so that heap reuse keeps pages within a cell's loops but a run does not hold one cell's
    freed memory into the next."""
    library = _glibc()
    if library is not None and hasattr(library, "malloc_trim"):
        library.malloc_trim(0)
