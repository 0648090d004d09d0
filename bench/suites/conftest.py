"""pytest-benchmark suites. Run with ``tox -e bench`` (or ``pytest bench/suites``).

They measure the library as the harness runs it: torch's default threads and wait policy (``fmbench.threads``
explains the trade-off), and large allocations on huge pages (:mod:`fmbench.allocator`; ``THP_MEM_ALLOC_ENABLE=0``
measures 4 KiB pages)."""

import fmbench  # noqa: F401 — before torch: the harness's wait policy and huge pages
import torch


def pytest_configure(config):
    torch.manual_seed(0)
