"""Sweeps: a grid of cells read from a TOML file or a named preset, run through any executor, with rows
saved as they finish and a rerun resuming where the last one stopped.

A sweep file has a ``[sweep]`` table of axes (lists) and fixed values, and optional ``[[solver]]`` entries
that say which step counts or tolerances go with which method::

    [sweep]
    target = ["seed000", "gaussian"]
    schedule = ["cond_ot", "cosine"]
    dtype = ["float64"]
    n = 2000

    [[solver]]
    method = ["euler", "heun", "rk4"]
    steps = [4, 8, 16, 32]

    [[solver]]
    method = ["dopri5"]
    rtol = [1e-4, 1e-6]
    atol = [1e-6]

Every axis may also carry parameters: ``target_params = {gaussian = {d = 8}}`` maps a target name to its
parameters (likewise ``schedule_params`` and ``diffusion_params`` keyed by diffusion name).

Rows go to ``<out>/rows.parquet`` (rewritten atomically after every cell), the environment to
``<out>/environment.json`` and the expanded grid to ``<out>/sweep.json``.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from dataclasses import fields
from importlib import metadata
from pathlib import Path

import pandas as pd
import torch

from bench.cells import CellSpec, run_cell

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

PRESETS_DIR = Path(__file__).parent / "presets"
SPEC_FIELDS = {f.name for f in fields(CellSpec)}
PARAMETER_AXES = {"target_params": "target", "schedule_params": "schedule", "diffusion_params": "diffusion"}


def load_sweep(source: str | Path) -> dict:
    """A preset name (``bench/presets/<name>.toml``) or a path to a TOML file."""
    path = Path(source)
    if not path.suffix:
        path = PRESETS_DIR / f"{source}.toml"
        if not path.exists():
            available = sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))
            raise KeyError(f"unknown preset {source!r}; available: {available}")
    if not path.exists():
        raise FileNotFoundError(f"sweep file {path} does not exist")
    return tomllib.loads(path.read_text())


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def expand(config: dict) -> list[CellSpec]:
    """The cells of a sweep: the product of every ``[sweep]`` axis with each ``[[solver]]`` entry's axes."""
    base = dict(config.get("sweep", {}))
    solvers = config.get("solver", [{}])
    parameter_maps = {name: base.pop(name, {}) for name in PARAMETER_AXES}
    cells: list[CellSpec] = []
    for solver in solvers:
        axes = {**base, **solver}
        unknown = set(axes) - SPEC_FIELDS
        if unknown:
            raise ValueError(f"unknown sweep keys {sorted(unknown)}; allowed: {sorted(SPEC_FIELDS - set(PARAMETER_AXES))}")
        names = list(axes)
        for values in itertools.product(*(_as_list(axes[name]) for name in names)):
            spec = dict(zip(names, values, strict=True))
            for parameter, axis in PARAMETER_AXES.items():
                spec[parameter] = dict(parameter_maps[parameter].get(spec.get(axis), {}))
            cells.append(CellSpec(**spec))
    keys = [cell.key() for cell in cells]
    unique = dict(zip(keys, cells, strict=True))
    return list(unique.values())


def environment() -> dict:
    """What produced the rows: package versions, Python, CPU, devices, threads, git commit."""
    packages = {}
    for name in ("torch", "torchdiffeq", "numpy", "scipy", "pandas", "pot", "seaborn", "fmbench"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                                cwd=Path(__file__).parent).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                                    cwd=Path(__file__).parent).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, None
    return {
        "packages": packages,
        "python": sys.version,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "git_commit": commit,
        "git_dirty": dirty,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _write_atomically(path: Path, write) -> None:
    temporary = path.with_name(path.name + ".tmp")
    write(temporary)
    os.replace(temporary, path)


def load_rows(out: Path) -> pd.DataFrame:
    path = Path(out) / "rows.parquet"
    return pd.read_parquet(path) if path.exists() else pd.DataFrame()


class InProcessExecutor(Executor):
    """Runs each submitted call at once, in this process: the default (deterministic, no pickling)."""

    def submit(self, function, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(function(*args, **kwargs))
        except BaseException as error:  # noqa: BLE001 — handed to the caller through the future
            future.set_exception(error)
        return future


def run_sweep(
    cells: Iterable[CellSpec], out: str | Path, executor: Executor | None = None, progress: bool = True
) -> pd.DataFrame:
    """Run every cell not already in ``<out>/rows.parquet`` and return all rows.

    ``executor`` is any ``concurrent.futures.Executor`` (a ``ProcessPoolExecutor``, or a Dask cluster's
    ``distributed.Client(...).get_executor()``); by default cells run one after another in this process.
    Rows are saved after every finished cell, so an interrupted sweep loses at most the cells in flight.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cells = list(cells)
    existing = load_rows(out)
    done = set(existing["cell"]) if "cell" in existing else set()
    pending = [cell for cell in cells if cell.key() not in done]
    (out / "environment.json").write_text(json.dumps(environment(), indent=2))
    (out / "sweep.json").write_text(json.dumps([cell.key() for cell in cells]))
    rows = existing.to_dict("records") if len(existing) else []
    if progress:
        print(f"{len(cells)} cells, {len(cells) - len(pending)} already done, {len(pending)} to run -> {out}", file=sys.stderr)
    executor = executor or InProcessExecutor()
    start = time.perf_counter()
    futures = {executor.submit(run_cell, cell): cell for cell in pending}
    for count, future in enumerate(as_completed(futures), start=1):
        row = future.result()
        rows.append(row)
        frame = pd.DataFrame(rows)
        _write_atomically(out / "rows.parquet", lambda path, frame=frame: frame.to_parquet(path, index=False))
        if progress:
            elapsed = time.perf_counter() - start
            remaining = elapsed / count * (len(pending) - count)
            status = row["status"] if row["status"] == "ok" else f"FAILED ({row['error'][:80]})"
            cell = futures[future]
            print(f"[{count}/{len(pending)}] {cell.target} {cell.schedule} {cell.field} {cell.method} steps={cell.steps} "
                  f"{cell.dtype}: {status}  ({elapsed:.0f} s, ~{remaining:.0f} s left)", file=sys.stderr)
    return pd.DataFrame(rows)


def make_executor(workers: int) -> Executor | None:
    """``workers`` ≤ 1: in process; more: a process pool (each worker single-threaded in torch)."""
    if workers <= 1:
        return None
    return ProcessPoolExecutor(max_workers=workers, initializer=torch.set_num_threads, initargs=(1,))
