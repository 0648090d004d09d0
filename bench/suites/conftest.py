"""pytest-benchmark suites. Run with ``tox -e bench`` (or ``pytest bench/suites``).

``fmcore`` is imported before torch, as the ``fmbench`` command does, so OpenMP's passive wait policy is in force
(README, "Threads")."""

import fmcore  # noqa: F401


def pytest_configure(config):
    import torch

    torch.manual_seed(0)
