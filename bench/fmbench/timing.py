"""Wall-clock timing done right: warm-up, device synchronisation, median of repeats.

Used by the pytest-benchmark suites (for ratios measured side by side in one run) and by the sweep.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timing:
    """Seconds per call: the median and all repeats."""

    median_s: float
    repeats_s: tuple[float, ...]

    @property
    def min_s(self) -> float:
        return min(self.repeats_s)


def synchronize(device: torch.device | str | None = None) -> None:
    """Wait for queued work on ``device`` (a no-op on the CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def median_time(
    function: Callable[[], object], repeats: int = 5, warmup: int = 1, device: torch.device | str | None = None
) -> Timing:
    """Time ``function()``: ``warmup`` untimed calls, then ``repeats`` timed ones, each bracketed by a device sync."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be ≥ 1 and warmup ≥ 0, got repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        function()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return Timing(statistics.median(times), tuple(times))


def interleaved_medians(
    functions: dict[str, Callable[[], object]],
    repeats: int = 7,
    warmup: int = 1,
    device: torch.device | str | None = None,
) -> dict[str, Timing]:
    """Time several functions side by side: each round calls every function once, in turn.

    On a shared, noisy machine a slow spell then hits all of them alike, so the ratio of their medians
    is far steadier than the ratio of two separately timed medians.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be ≥ 1 and warmup ≥ 0, got repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        for function in functions.values():
            function()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: Timing(statistics.median(values), tuple(values)) for name, values in times.items()}
