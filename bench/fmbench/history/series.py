"""A history cut into series: one metric of one cell, on one machine, executor and thread count, over commits.

Records are put in commit order — the commit's depth in history and its own time (committer date), then the run's
time — so that a backfill run after later commits still lands where its commit belongs. Several runs of one commit
on one machine (a rerun,
a bisection) become one point: the median of their values, with the largest of their spreads and the half-range of
their values (log units for timings) as its spread.

Beside the cells' own series, each sweep record gives series of the run as a whole (group ``run``): the medians over
its cells of ``wall_s`` and ``wall_s_normalised`` (the run's speed, much less noisy than one cell's; the normalised
one divides by the run's one calibration measurement, whose own noise it carries whole) and the number of cells that
failed (an exact count).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

__all__ = ["Point", "Series", "SeriesKey", "build_series", "commit_order", "RUN_CELL"]

RUN_CELL = "(run)"


@dataclass(frozen=True)
class SeriesKey:
    preset: str
    machine: str
    executor: str | None
    threads: int | None
    cell: str
    metric: str

    def as_text(self) -> str:
        return f"{self.preset}/{self.cell}/{self.metric} on {self.machine} ({self.executor}, {self.threads} thread(s))"


@dataclass
class Point:
    commit: str
    subject: str
    value: float
    spread: float | None  # the point's own uncertainty (log units for timings); None: not measured
    runs: int = 1
    load: float | None = None  # the machine's 1-minute load average when the run started


@dataclass
class Series:
    key: SeriesKey
    group: str
    label: str
    dtype: str
    device: str
    metric_class: str
    points: list[Point] = field(default_factory=list)

    @property
    def values(self) -> list[float]:
        return [point.value for point in self.points]

    @property
    def commits(self) -> list[str]:
        return [point.commit for point in self.points]

    @property
    def is_timing(self) -> bool:
        return self.metric_class == "timing"


def commit_order(records: list[dict]) -> list[dict]:
    """Records in commit order: the commit's depth in history (its number of ancestors), then its time, then the
    run's time; records that know neither come last, by run time."""
    return sorted(records, key=lambda record: (record.get("commit_depth") or math.inf,
                                               record.get("commit_time") or math.inf, str(record.get("time"))))


def _run_series(record: dict) -> dict[str, tuple[float, float | None, str]]:
    series = {"cells_failed": (float(sum(cell.get("status") == "failed" for cell in record["cells"].values())), 0.0,
                               "nfe")}
    for timing in ("wall_s", "wall_s_normalised"):
        times = [cell["metrics"][timing][0] for cell in record["cells"].values() if timing in cell.get("metrics", {})]
        if times:
            series[f"median_{timing}"] = (statistics.median(times), None, "timing")
    return series


def _combined(points: list[Point], timing: bool) -> Point:
    if len(points) == 1:
        return points[0]
    values = [point.value for point in points]
    scale = [math.log(value) for value in values] if timing and min(values) > 0 else values
    spreads = [point.spread for point in points if point.spread is not None] + [0.5 * (max(scale) - min(scale))]
    loads = [point.load for point in points if point.load is not None]
    return Point(points[0].commit, points[0].subject, statistics.median(values), max(spreads), len(points),
                 max(loads) if loads else None)


def build_series(records: list[dict], metric: str | None = None, group: str | None = None) -> list[Series]:
    """Every series of ``records`` (optionally only ``metric``, only groups containing ``group``), each with one
    point per commit in commit order."""
    found: dict[SeriesKey, Series] = {}
    pending: dict[SeriesKey, dict[str, list[Point]]] = {}
    for record in commit_order(records):
        context = dict(preset=record.get("preset"), machine=record.get("machine"), executor=record.get("executor"),
                       threads=record.get("threads"))
        entries = [(cell_key, cell, name, tuple(value)) for cell_key, cell in record["cells"].items()
                   for name, value in cell.get("metrics", {}).items()]
        if record.get("kind") == "sweep":
            run_cell = {"group": "run", "label": "the whole run", "dtype": "", "device": "cpu"}
            entries += [(RUN_CELL, run_cell, name, value) for name, value in _run_series(record).items()]
        for cell_key, cell, name, (value, spread, metric_class) in entries:
            if (metric is not None and name != metric) or (group is not None and group not in cell["group"]):
                continue
            key = SeriesKey(cell=cell_key, metric=name, **context)
            if key not in found:
                found[key] = Series(key, cell["group"], cell["label"], cell.get("dtype", ""), cell.get("device", "cpu"),
                                    metric_class)
                pending[key] = {}
            pending[key].setdefault(record.get("commit"), []).append(
                Point(record.get("commit"), record.get("subject", ""), float(value), spread,
                      load=record.get("load_average")))
    for key, series in found.items():
        series.points = [_combined(points, series.is_timing) for points in pending[key].values()]
    return list(found.values())
