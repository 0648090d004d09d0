"""pytest-benchmark suites. Run with ``tox -e bench`` (or ``pytest bench/suites``).

They measure the library as a user imports it: torch's default threads and wait policy (``fmbench.threads``
explains the trade-off)."""

import torch


def pytest_configure(config):
    torch.manual_seed(0)
