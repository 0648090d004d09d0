"""fmbench: the harness around :mod:`fmcore` — sweeps of cells, a store that saves each row as it finishes,
executors (in-process, a process pool, Dask), reports, regression comparisons, and the ``fmbench`` command.

Importing it before torch sets OpenMP's passive wait policy for the harness (``fmbench.threads`` explains why; the
``fmbench`` command guarantees the order), asks torch for huge-page allocations and glibc to keep freed memory for
reuse (``fmbench.allocator``). Its cells run with one torch thread unless told otherwise.

It imports nothing heavy itself — no torch, fmcore or peer library — so ``fmbench --help`` answers at once; the
harness's modules import what they use, and the peer adapters (``peer:<library>/<method>``) are registered by
``fmbench.peers``, which every module that looks a method up imports (``import fmbench.peers`` in your own code).
"""

from fmbench.allocator import use_heap_reuse, use_huge_pages  # imports no torch
from fmbench.threads import prefer_passive_wait  # imports no torch

prefer_passive_wait()
use_huge_pages()
use_heap_reuse()

__version__ = "0.2.0"
__all__ = ["evaluate", "report"]


def __getattr__(name: str):
    """``fmbench.evaluate`` and ``fmbench.report`` (:mod:`fmbench.api`), imported on first use: torch loads then."""
    if name in __all__:
        from fmbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'fmbench' has no attribute {name!r}")
