"""A fixed calibration workload, timed in the process that runs the cells, so timings can be compared across
machines and loads as ratios: ``wall_s_normalised = wall_s / calibration_s``.

The workload is what the suite's cells spend their time on, at the sizes they use: the GEMMs of a closed-form
field (2000 × 16 points into 256 eigen-coordinates, float32 and float64) and the forward pass of seed 000's network
(width 64, depth 4) on 2000 points. It runs with the same number of torch threads as the cells, once per process
(about 0.1 s), and its median over 7 repeats is recorded in every row (``calibration_s``).
"""

from __future__ import annotations

import functools
import statistics
import time

import torch

from fmcore.models import SinusoidalMLP

REPEATS = 7


def _workload() -> None:
    generator = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        points = torch.randn(2000, 16, dtype=dtype, generator=generator)
        basis = torch.randn(16, 256, dtype=dtype, generator=generator)
        for _ in range(5):
            (points @ basis) @ basis.T
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network = SinusoidalMLP(3)
    x, t = torch.randn(2000, 3, generator=generator), torch.rand(2000, generator=generator)
    with torch.no_grad():
        for _ in range(5):
            network(t, x)


@functools.lru_cache(maxsize=8)
def calibration_seconds(threads: int) -> float:
    """Median seconds of the workload with ``threads`` torch threads (once per process and thread count)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _workload()  # warm-up
        times = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            _workload()
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return statistics.median(times)
