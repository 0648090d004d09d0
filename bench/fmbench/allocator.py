"""Large tensors on transparent huge pages, for the harness's processes.

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
"""

from __future__ import annotations

import os
import sys

__all__ = ["HUGE_PAGES", "use_huge_pages", "huge_pages_setting"]

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
