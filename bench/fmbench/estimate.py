"""How long a sweep will take, said before it runs (``fmbench run --dry-run``).

The committed baselines (``results/baselines/<preset>/``) hold every cell's measured cost (``cell_s``: from the
cell's start to its scored row, learned-model training aside) and the calibration workload's time on the machine
that measured it (``calibration_s``, :mod:`fmbench.calibration`). A cell to run is costed by

1. its own measurement, where a baseline holds the same cell (the same ``CellSpec.key``);
2. else the median measured cost of the same method at the same number of points and field (a cell's cost is
   mostly its sampler's NFE × one field call, and a method's step counts are alike across presets);
3. else it is counted as not estimated.

Each measured cost is first divided by its own row's calibration time (a cost in calibration units, comparable across
the machines the baselines were measured on), then multiplied by this machine's calibration time (measured here: the
median of 7 repeats, about 0.1 s in all), and the total divided over the workers; the unscaled sum is given beside
it, since that short calibration is itself noisy (an earlier default baseline recorded 59 ms where the ci baseline,
measured hours before on the same kind of VM, recorded 15 ms). Cells already saved ``ok`` in the run directory are
not run again. The estimate is of the cells alone — process start-up, model training and the report come on top — and
says how many cells each way went into it: a guide, not a promise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fmbench.calibration import calibration_seconds
from fmbench.cellspec import CellSpec
from fmbench.store import load_rows

__all__ = ["BASELINES_DIR", "SweepEstimate", "estimate_sweep", "measured_costs", "saved_cells"]

BASELINES_DIR = Path(__file__).resolve().parents[2] / "results" / "baselines"
"""The committed baselines of a clone of the repository (absent from an installed wheel: then nothing is estimated)."""


@dataclass(frozen=True)
class SweepEstimate:
    cells: int
    saved: int
    measured: int
    by_method: int
    not_estimated: int
    seconds: float
    as_measured_s: float
    calibration_s: float
    models: int
    workers: int

    def __str__(self) -> str:
        to_run = self.cells - self.saved
        lines = [f"{self.cells} cells; {self.saved} already saved ok, {to_run} to run"]
        if to_run and self.measured + self.by_method:
            lines.append(
                f"estimated {_duration(self.seconds)} for the cells on {self.workers} worker(s), scaled to this "
                f"machine by its calibration time ({self.calibration_s * 1e3:.0f} ms); {_duration(self.as_measured_s)} "
                "as the baselines' machines measured them. Start-up, training and the report come on top. From "
                f"{self.measured} cell(s)' own measured cost, {self.by_method} from the same method's at the same n "
                f"and field; {self.not_estimated} not estimated")
        elif to_run:
            lines.append(f"no measured costs for these cells (baselines: {BASELINES_DIR}): no estimate")
        if self.models:
            lines.append(f"{self.models} learned model(s) to train unless cached (training time is not in the estimate)")
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def measured_costs(directory: Path = BASELINES_DIR) -> pd.DataFrame:
    """Every ok row of every baseline under ``directory``: ``cell``, ``method``, ``n``, ``field`` and ``cost``, its
    ``cell_s`` over its ``calibration_s`` (empty where there are none)."""
    frames = [load_rows(baseline) for baseline in sorted(directory.glob("*")) if baseline.is_dir()] \
        if directory.is_dir() else []
    frames = [frame for frame in frames if not frame.empty]
    columns = ["cell", "method", "n", "field", "cost", "cell_s"]
    if not frames:
        return pd.DataFrame(columns=columns)
    rows = pd.concat(frames, ignore_index=True)
    rows = rows[(rows["status"] == "ok") & (rows["calibration_s"] > 0)].dropna(subset=["cell_s", "calibration_s"])
    return rows.assign(cost=rows["cell_s"] / rows["calibration_s"])[columns]


def estimate_sweep(cells: list[CellSpec], saved: set[str], threads: int = 1, workers: int = 1,
                   costs: pd.DataFrame | None = None) -> SweepEstimate:
    """The estimate for ``cells``, of which those whose key is in ``saved`` are done; ``costs`` as
    :func:`measured_costs` (read from the committed baselines by default)."""
    costs = measured_costs() if costs is None else costs
    keyed = [(cell, cell.key()) for cell in cells]  # each spec hashed once
    to_run = [(cell, key) for cell, key in keyed if key not in saved]
    models = {(cell.target, cell.schedule, cell.field) for cell, _ in to_run if cell.learned_objective()}
    if costs.empty:
        return SweepEstimate(len(cells), len(cells) - len(to_run), 0, 0, len(to_run), 0.0, 0.0, 0.0, len(models), workers)
    by_cell = costs.groupby("cell")[["cost", "cell_s"]].median()
    by_method = costs.groupby(["method", "n", "field"])[["cost", "cell_s"]].median()
    units, seconds, measured, similar = 0.0, 0.0, 0, 0
    for cell, key in to_run:
        if key in by_cell.index:
            found, measured = by_cell.loc[key], measured + 1
        elif (cell.method, cell.n, cell.field) in by_method.index:
            found, similar = by_method.loc[(cell.method, cell.n, cell.field)], similar + 1
        else:
            continue
        units, seconds = units + float(found["cost"]), seconds + float(found["cell_s"])
    calibration = calibration_seconds(threads)
    return SweepEstimate(len(cells), len(cells) - len(to_run), measured, similar, len(to_run) - measured - similar,
                         units * calibration / workers, seconds / workers, calibration, len(models), workers)


def saved_cells(out: Path) -> set[str]:
    """The keys of the cells saved ``ok`` in the run directory ``out`` (none where it does not exist yet)."""
    rows = load_rows(out) if Path(out).is_dir() else pd.DataFrame()
    return set(rows.loc[rows["status"] == "ok", "cell"]) if len(rows) else set()
