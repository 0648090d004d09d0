"""The suite in one call, for a notebook: :func:`evaluate` runs a sweep in this process and returns its rows;
:func:`report` writes the same report ``fmbench run`` does.

>>> import fmbench
>>> def my_euler(field, x0, grid):
...     x = x0
...     for t, t_next in zip(grid[:-1], grid[1:]):
...         x = x + (t_next - t) * field(t, x)
...     return x
>>> rows = fmbench.evaluate([my_euler, "dpmpp_2m", "unipc"], targets=["gaussian"], nfe=[5, 10, 20])
>>> fmbench.report(rows)

The rows are a sweep's (:func:`fmbench.sweep.run_sweep`, in-process): every metric with its standard error where
one exists, NFE, time, and the cells that failed with why. A callable is a method ``user:<its name>``
(:func:`fmcore.solvers.user_method`); ``field`` is ``"analytic"``, ``"learned:<objective>"``, ``"module:…"``
(:mod:`fmbench.user_models`) or a :class:`fmcore.model_field.TrainedNetwork` handed over directly.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pandas as pd

from fmbench.cells import CellSpec
from fmbench.reporting import write_report
from fmbench.store import load_rows
from fmbench.sweep import run_sweep
from fmbench.sweepfile import check_cells
from fmbench.user_models import given_network
from fmcore.model_field import TrainedNetwork
from fmcore.models import default_cache_dir
from fmcore.solvers import get_method, user_method

__all__ = ["evaluate", "report"]


def _method_name(method: str | Callable) -> str:
    if isinstance(method, str):
        return method
    if callable(method):
        return user_method(method).name
    raise TypeError(f"each method must be a registered name or a callable sampler(field, x0, grid) -> x, got "
                    f"{type(method).__name__}")


def _steps_for(method: str, nfe: int) -> int:
    """The steps that spend at most ``nfe`` field calls: ``nfe // stages`` (a method with a fixed count per step)."""
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
        raise ValueError(f"each nfe must be an integer ≥ 1 (a budget of field calls), got {nfe!r}")
    stages = get_method(method).stages
    if not get_method(method).takes_steps or stages is None:
        raise ValueError(f"{method!r} has no fixed number of field calls per step (an adaptive method): evaluate "
                         "compares methods at a given NFE; run it in a sweep with rtol/atol instead")
    return max(1, nfe // stages)


def _listed(name: str, value) -> list:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return [value]
    values = list(value)
    if not values:
        raise ValueError(f"{name} must not be empty")
    return values


def evaluate(
    methods: str | Callable | Sequence[str | Callable],
    targets: str | Sequence[str] = ("gaussian",),
    nfe: int | Sequence[int] = (5, 10, 20),
    field: str | TrainedNetwork = "analytic",
    schedules: str | Sequence[str] = ("cond_ot",),
    seeds: int | Sequence[int] = (0,),
    n: int = 2000,
    dtype: str = "float64",
    grid: str = "uniform",
    target_params: dict | None = None,
    out: str | Path | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Every method at every NFE budget on every target, schedule and seed; the rows, in sweep order.

    ``nfe`` is a budget of field calls: a method of s calls per step runs ``nfe // s`` steps (the rows record the NFE
    spent). ``target_params`` maps a target name to its parameters (``{"gaussian": {"d": 8}}``). The run is kept in
    ``out`` (a fresh temporary directory by default; given, it is overwritten), which ``frame.attrs["run"]`` names
    for :func:`report`; the suite's own learned models are cached where :func:`fmcore.models.train_model` keeps
    them."""
    names = [_method_name(method) for method in _listed("methods", methods)]
    field_name = given_network(field) if isinstance(field, TrainedNetwork) else field
    if not isinstance(field_name, str):
        raise TypeError(f"field must be a name ('analytic', 'learned:cfm', 'module:<module>.<factory>') or a "
                        f"TrainedNetwork, got {type(field).__name__}")
    target_params = target_params or {}
    cells = [
        CellSpec(target=target, schedule=schedule, method=name, target_params=target_params.get(target, {}),
                 field=field_name, steps=_steps_for(name, budget), grid=grid, dtype=dtype, seed=seed, n=n)
        for target in _listed("targets", targets) for schedule in _listed("schedules", schedules)
        for name in names for budget in _listed("nfe", nfe) for seed in _listed("seeds", seeds)
    ]
    cells = list({cell.key(): cell for cell in cells}.values())  # two budgets that give the same steps: one cell
    check_cells(cells)
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="fmbench-evaluate-"))
    outcome = run_sweep(cells, out, progress=progress, force=True, threads=1, cache_dir=default_cache_dir())
    rows = load_rows(out)
    rows.attrs["run"] = str(out)
    if outcome.interrupted:
        raise KeyboardInterrupt(f"interrupted; the rows finished so far are in {out}")
    return rows


def report(rows: pd.DataFrame | str | Path, to: str | Path | None = None) -> Path:
    """Write the report of :func:`evaluate`'s rows (or of a run directory) — ``report.md``, its figures and
    ``cells.csv`` — into ``to`` (default: the run's directory); return the report's path."""
    if isinstance(rows, pd.DataFrame):
        run = rows.attrs.get("run")
        if run is None:
            raise ValueError("report needs the rows evaluate returned (their run directory is in rows.attrs['run']) "
                             "or a run directory")
    else:
        run = rows
    return write_report(Path(run), to=to)
