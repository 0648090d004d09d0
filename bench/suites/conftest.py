"""pytest-benchmark suites. Run with ``tox -e bench`` (or ``pytest bench/suites``)."""

import torch


def pytest_configure(config):
    torch.manual_seed(0)
