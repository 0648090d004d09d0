"""Wall-clock timing done right: warm-up, device synchronisation, median of repeats.

Used by the pytest-benchmark suites (for ratios measured side by side in one run) and by the sweep.
"""

from __future__ import annotations

import os
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


def busy_cpu_seconds() -> float | None:
    """CPU-seconds every CPU of this machine has spent busy since boot — user, nice, system, irq, softirq and steal
    time from ``/proc/stat`` (guest time is inside user), at its clock-tick resolution (10 ms) — or None where there
    is no ``/proc/stat`` (not Linux)."""
    try:
        with open("/proc/stat") as file:
            fields = file.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """How many CPUs other processes kept busy, on average, while a block ran: the machine's busy CPU-seconds
    (:func:`busy_cpu_seconds`) less this process's own (``time.process_time``, all its threads), over the block's
    wall time. Unlike the load average (a 1-minute moving average of runnable processes, which lags a short cell and
    counts this process too), it is the competition the block's own timing met. ``cpus`` is None off Linux.

    It starts measuring when made; :meth:`stop` (or leaving its ``with`` block) sets and returns ``cpus``:

    >>> with OtherLoad() as load:
    ...     work()
    >>> load.cpus  # e.g. 0.01 idle, about 1 beside one CPU-bound process
    """

    def __init__(self):
        self.cpus: float | None = None
        self._busy, self._own, self._wall = busy_cpu_seconds(), time.process_time(), time.perf_counter()

    def stop(self) -> float | None:
        busy, wall = busy_cpu_seconds(), time.perf_counter() - self._wall
        if busy is not None and self._busy is not None and wall > 0:
            self.cpus = max(0.0, (busy - self._busy - (time.process_time() - self._own)) / wall)
        return self.cpus

    def __enter__(self) -> OtherLoad:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
