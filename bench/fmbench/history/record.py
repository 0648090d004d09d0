"""One run summarised as one history record: what ``fmbench track`` appends.

A record is a JSON object (one line of the history file, :mod:`fmbench.history.store`):

* **where it ran** — ``commit`` (with its time, depth and subject, read from git), ``dirty``, ``machine`` (a name:
  the processor, the CPU count, torch's CPU kernels and any GPU, or the user's own ``--machine``), ``executor``,
  ``threads``, the load average, the torch version;
* **what it measured** — per cell (keyed by the cell's hash, stable across commits), its ``group`` (the page the
  dashboard draws it on: target and schedule), its ``label``, ``dtype``, ``device``, ``status`` and its ``metrics``:
  each ``name: [value, spread, class]`` where ``class`` is the comparison's metric class
  (:func:`fmbench.compare.metric_class`, or ``"timing"``) and ``spread`` the point's own uncertainty (None where
  not measured):

  ======================= ========================================================================================
  accuracy (exact law…)   0 — a deterministic number; a change is judged against the class's tolerance
  sampled (w2_sliced…)    the row's Monte-Carlo floor (``*_floor``)
  ``wall_s``, normalised  half the range of the timed repeats, in log units: ½·ln(max/min)
  ======================= ========================================================================================

A pytest-benchmark JSON file (``tox -e bench``'s stored runs) becomes a record the same way: one cell per benchmark,
``median_s`` with half its interquartile range in log units.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd

from fmbench.compare import SAMPLED_METRICS, _describer, _environment, _present, metric_class, metric_names
from fmbench.provenance import git_output
from fmbench.store import load_rows

FORMAT = 1
TIMINGS = ("wall_s", "wall_s_normalised")
SIGNIFICANT_DIGITS = 12
"""Values are written to 12 significant digits: 1000× finer than the float64 class's tolerance (1e-9 relative)."""


def _rounded(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}") if math.isfinite(value) else value


def machine_name(environment: dict) -> str:
    """``"AMD EPYC (2 CPUs, AVX512)"`` — processor, CPU count and the kernels torch used (where the run recorded
    them: two machines of one processor name may differ there, and their timings and round-off with them) — with
    ``" + NVIDIA H200"`` for each GPU the run saw."""
    capability = f", {environment['cpu_capability']}" if environment.get("cpu_capability") else ""
    name = f"{environment.get('processor') or 'unknown CPU'} ({environment.get('cpu_count') or '?'} CPUs{capability})"
    for device in environment.get("cuda_devices") or []:
        name += f" + {device.get('name')}"
    return name


def local_machine_name() -> str:
    """:func:`machine_name` of this machine, as a run here would record it."""
    import torch

    from fmbench.sweep import _cpu_name

    devices = [{"name": torch.cuda.get_device_properties(index).name} for index in range(torch.cuda.device_count())]
    return machine_name({"processor": _cpu_name(), "cpu_count": os.cpu_count(), "cuda_devices": devices,
                         "cpu_capability": torch.backends.cpu.get_cpu_capability()})


def commit_details(commit: str | None, repository: Path | None) -> dict:
    """The commit's time (Unix seconds, committer date), subject line and depth (its number of ancestors, itself
    included: ``git rev-list --count``, which orders commits along history even when their times tie), from git in
    ``repository``; empty where git or the commit is not there."""
    if not commit or repository is None:
        return {}
    output = git_output(["show", "-s", "--format=%ct%x00%s", commit], repository)
    depth = git_output(["rev-list", "--count", commit], repository)
    if not output or "\0" not in output or not depth:
        return {}
    stamp, subject = output.strip().split("\0", 1)
    return {"commit_time": int(stamp), "commit_depth": int(depth), "subject": subject}


def _timing_spread(row: pd.Series) -> float | None:
    low, high = row.get("wall_s_min"), row.get("wall_s_max")
    if _present(low) and _present(high) and low > 0 and high > 0:
        return 0.5 * math.log(high / low)
    return None


def _cell_metrics(row: pd.Series) -> dict:
    metrics = {}
    for name in metric_names(row):
        value = row.get(name)
        if not _present(value):
            continue
        floor = row.get(SAMPLED_METRICS[name]) if name in SAMPLED_METRICS else None
        metrics[name] = [_rounded(float(value)), _rounded(float(floor)) if _present(floor) else 0.0,
                         metric_class(row, name)]
    spread = _timing_spread(row)
    for name in TIMINGS:
        value = row.get(name)
        if _present(value) and value > 0:
            metrics[name] = [_rounded(float(value)), _rounded(spread) if spread is not None else None, "timing"]
    return metrics


def _group(row: pd.Series) -> str:
    return f"{row.get('target')} · {row.get('schedule')}"


def run_record(run: str | Path, preset: str | None = None, machine: str | None = None,
               repository: str | Path | None = None) -> dict:
    """The record of the sweep run in directory ``run`` (a run or a baseline). ``preset`` defaults to the directory's
    name; ``repository`` (where git finds the commit's subject) to the current directory."""
    run = Path(run)
    rows = load_rows(run)
    if rows.empty:
        raise ValueError(f"run {run} holds no rows: nothing to track (is it a run directory of fmbench run?)")
    environment = _environment(run)
    if not environment:
        raise ValueError(f"run {run} has no readable environment.json: its commit and machine are unknown")
    describe = _describer(rows)
    cells = {}
    for _, row in rows.iterrows():
        cells[str(row["cell"])] = {
            "group": _group(row), "label": describe(row), "dtype": str(row.get("dtype")),
            "device": str(row.get("device", "cpu")), "status": str(row.get("status")),
            "metrics": _cell_metrics(row) if row.get("status") == "ok" else {}}
    return _record("sweep", preset or run.name, environment, machine, repository, cells)


def benchmark_record(path: str | Path, preset: str = "bench", machine: str | None = None,
                     repository: str | Path | None = None) -> dict:
    """The record of one stored pytest-benchmark run (its JSON file): one cell per benchmark."""
    data = json.loads(Path(path).read_text())
    if "benchmarks" not in data:
        raise ValueError(f"{path} is not a pytest-benchmark JSON file (no 'benchmarks' list)")
    info = data.get("machine_info", {})
    environment = {"processor": info.get("cpu", {}).get("brand_raw") or info.get("processor"),
                   "cpu_count": info.get("cpu", {}).get("count"), "git_commit": data.get("commit_info", {}).get("id"),
                   "git_dirty": data.get("commit_info", {}).get("dirty"), "time": data.get("datetime"),
                   "executor": "pytest-benchmark", "cell_threads": None}
    cells = {}
    for benchmark in data["benchmarks"]:
        stats = benchmark["stats"]
        spread = 0.5 * math.log(stats["q3"] / stats["q1"]) if stats.get("q1", 0) > 0 else None
        cells[benchmark["fullname"]] = {
            "group": benchmark.get("group") or Path(benchmark["fullname"].split("::")[0]).stem,
            "label": benchmark["name"], "dtype": "", "device": "cpu", "status": "ok",
            "metrics": {"median_s": [_rounded(stats["median"]), spread, "timing"]}}
    return _record("pytest-benchmark", preset, environment, machine, repository, cells)


def _record(kind: str, preset: str, environment: dict, machine: str | None, repository, cells: dict) -> dict:
    """The record; a run that recorded no commit (fmbench installed outside a checkout, as in a tox environment)
    takes the commit checked out in ``repository``, noted as ``"commit_from": "repository"``."""
    commit, dirty, source = environment.get("git_commit"), environment.get("git_dirty"), "run"
    repository = Path(repository) if repository is not None else Path(os.getcwd())
    if not commit:
        head = git_output(["rev-parse", "HEAD"], repository)
        status = git_output(["status", "--porcelain", "--untracked-files=no"], repository) if head else None
        if head and status is not None:
            commit, dirty, source = head.strip(), bool(status.strip()), "repository"
    return {"format": FORMAT, "kind": kind, "preset": preset, "commit": commit, **commit_details(commit, repository),
            "commit_from": source, "dirty": dirty, "machine": machine or machine_name(environment),
            "executor": environment.get("executor"), "threads": environment.get("cell_threads"),
            "load_average": (environment.get("load_average") or [None])[0],
            "torch": (environment.get("packages") or {}).get("torch"), "time": environment.get("time"),
            "cells": cells}
