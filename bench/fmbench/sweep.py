"""Running a sweep: cells through an executor, each finished row saved at once, a rerun resuming exactly.

* **Saved as they finish.** In-process (the default) cells run one at a time and each row is committed to
  ``<run>/rows.sqlite`` before the next starts; with a pool, rows are committed as their futures complete
  (at most ``2 × workers`` cells are in flight). A SIGKILL loses at most the cells in flight.
* **Ctrl-C** stops after saving what finished, cancels what was queued, stops the workers, and prints how to
  resume; a second Ctrl-C exits at once.
* **Resumed exactly.** A rerun of the same sweep skips the cells whose saved row is ``ok`` and runs the rest:
  new cells, failed cells (retried) and skipped ones (a CUDA cell may find a device next time).
* **Checked first.** The output directory must be writable, and may hold only cells of this sweep (a sweep
  that adds cells to an earlier one resumes it); one holding another sweep's cells is refused unless
  ``force``, which moves it aside to ``<run>.old-<time>`` and starts afresh.
* **Learned models** the pending cells need are trained once, here, before dispatch (with progress), into an
  explicit cache directory, so two workers never train the same model.

``sweep.json`` holds the normalised cell specs; ``environment.json`` what produced the rows (package versions,
CPU, devices, threads, load average, git commit).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pandas as pd
import torch

from fmbench.allocator import heap_reuse_setting, huge_pages_setting
from fmbench.cells import DTYPES, CellContext, CellSpec, failed_row, run_cell, train_for
from fmbench.faults import DEFAULT_TIME_LIMIT_S, RETRIED_ONCE, describe_exit, hard_limit
from fmbench.files import RUN_MARKERS, RunLock, UnsafePathError, check_output_directory, probe_writable, refuse_link, write_text
from fmbench.provenance import code_fingerprint, fingerprint_key, git_output, what_changed
from fmbench.roofline import measure_peaks
from fmbench.store import RowStore, StoreError, StoreWarning, export_parquet, load_rows, store_error
from fmbench.sweepfile import SweepError
from fmbench.threads import check_threads

__all__ = ["run_sweep", "SweepOutcome", "open_executor", "environment", "default_cache_dir"]


# ---------------------------------------------------------------------- what produced the rows


def environment(threads: int | None = None, executor: str = "in-process") -> dict:
    """Package versions, Python, CPU, devices, threads, load average, the huge-page and
    heap-reuse settings (:mod:`fmbench.allocator`) and git commit."""
    packages = {}
    for name in ("torch", "torchdiffeq", "numpy", "scipy", "pandas", "pot", "seaborn", "distributed", "fmbench"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    here = Path(__file__).parent
    commit = git_output(["rev-parse", "HEAD"], here)
    status = git_output(["status", "--porcelain", "--untracked-files=no"], here) if commit else None
    commit, dirty = (commit.strip(), bool(status.strip())) if commit and status is not None else (None, None)
    cuda = []
    for index in range(torch.cuda.device_count()):
        properties = torch.cuda.get_device_properties(index)
        cuda.append({"name": properties.name, "memory_gib": round(properties.total_memory / 2**30, 1),
                     "capability": f"{properties.major}.{properties.minor}",
                     "multiprocessors": properties.multi_processor_count})
    return {
        "packages": packages,
        "python": sys.version,
        "platform": platform.platform(),
        "processor": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "cell_threads": threads,
        "executor": executor,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "huge_pages": huge_pages_setting(),
        "heap_reuse": heap_reuse_setting(),
        "cuda_devices": cuda,
        "cuda_version": torch.version.cuda,
        "cuda_driver": _cuda_driver_version() if torch.cuda.is_available() else None,
        "cudnn_version": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "git_commit": commit,
        "git_dirty": dirty,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def device_peaks(cells: list[CellSpec]) -> list[dict]:
    """The measured GEMM and copy peaks (:func:`fmbench.roofline.measure_peaks`, on torch's current threads) of each
    device and state dtype the sweep's timed analytic-field cells use (``timing_repeats > 0``: a sweep that asks for
    careful timing), where the device exists: the report's roofline fractions are taken against these. About a
    second per device and dtype on the CPU."""
    pairs = sorted({(cell.device, DTYPES.get(cell.dtype)) for cell in cells
                    if cell.field == "analytic" and cell.timing_repeats > 0}, key=str)
    return [measure_peaks(device, dtype).as_dict() for device, dtype in pairs
            if dtype is not None and (not device.startswith("cuda") or torch.cuda.is_available())]


def _cuda_driver_version() -> str | None:
    """The NVIDIA driver's version from ``nvidia-smi`` (torch does not expose it); None where it cannot be read."""
    try:
        output = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return output.split()[0] if output.split() else None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---------------------------------------------------------------------- executors


def _worker_init(parent: int) -> None:
    """In each pool worker: one torch thread, Ctrl-C left to the parent, and exit if the parent dies (SIGKILL)."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch_parent() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch_parent, daemon=True).start()


DASK_CONNECT_TIMEOUT_S = 10
"""How long ``--dask ADDRESS`` waits for the scheduler before the run is refused (exit 2)."""


def _local_workers(dask: str) -> int:
    """N of ``--dask local[:N]``: a whole number ≥ 1 (default: the CPU count)."""
    text = dask.partition(":")[2]
    if not text:
        return os.cpu_count() or 1
    if not text.isdigit() or int(text) < 1:
        raise SweepError(f"--dask local:N needs a whole number N ≥ 1 of workers, got {dask!r}")
    return int(text)


class IsolatedPool(Executor):
    """A pool of worker processes in which no cell can harm another: each cell runs in a worker of its own at a time
    (``pebble.ProcessPool``), so a worker that dies (killed for memory, a crash in native code, ``os._exit``) fails
    only the cell it was running — ``pebble.ProcessExpired`` with its exit code — and is replaced at once, and a cell
    still running at its hard time limit (:func:`fmbench.faults.hard_limit`) has its worker killed and replaced
    (``TimeoutError``). A pool that breaks all the same is started afresh for the next cell."""

    def __init__(self, workers: int, time_limit_s: float | None = None):
        self._max_workers, self.timeout = workers, hard_limit(time_limit_s)  # _max_workers: as ProcessPoolExecutor's
        self._pool = self._start()

    def _start(self):
        import multiprocessing

        from pebble import ProcessPool

        return ProcessPool(max_workers=self._max_workers, initializer=_worker_init, initargs=(os.getpid(),),
                           context=multiprocessing.get_context("spawn"))

    def submit(self, fn, /, *args, **kwargs) -> Future:
        if not self._pool.active:
            self._pool = self._start()
        return self._pool.schedule(fn, args, kwargs, timeout=self.timeout)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures or not wait:
            self._pool.stop()
        else:
            self._pool.close()
        self._pool.join(timeout=30 if wait else 1)


@contextmanager
def open_executor(workers: int = 1, dask: str | None = None,
                  time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> Iterator[tuple[Executor | None, str, int]]:
    """``(executor, description, parallelism)``: None for in-process (``workers`` ≤ 1, no ``dask``), an
    :class:`IsolatedPool`, or Dask; ``parallelism`` is how many cells can run at once (a Dask cluster's total worker
    threads). ``time_limit_s``: a cell's time limit, which the pool enforces by killing the worker past it.

    ``dask`` is ``"local"`` / ``"local:N"`` (start a ``LocalCluster`` of N single-threaded worker processes) or
    the address of a running scheduler (``"tcp://host:8786"``). Dask runs a cell in a worker thread, where the
    in-cell timer cannot run, and cannot stop a running task: under Dask a cell has no time limit.
    """
    if dask:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise SweepError("--dask needs the optional extra: pip install 'fmbench[dask]'") from None
        if dask == "local" or dask.startswith("local:"):
            count = _local_workers(dask)
            cluster = LocalCluster(n_workers=count, threads_per_worker=1, processes=True, dashboard_address=None)
            client, description = Client(cluster), f"dask LocalCluster of {count} workers"
        else:
            try:
                client = Client(dask, timeout=DASK_CONNECT_TIMEOUT_S)
            except (OSError, ValueError) as error:  # refused, unreachable, timed out, or not an address at all
                raise SweepError(f"cannot reach the Dask scheduler at {dask!r} within {DASK_CONNECT_TIMEOUT_S} s: "
                                 f"{type(error).__name__}: {error}") from None
            cluster, description = None, f"dask scheduler {dask}"
        try:
            yield client.get_executor(), description, max(1, sum(client.nthreads().values()))
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
        return
    if workers <= 1:
        yield None, "in-process", 1
        return
    pool = IsolatedPool(workers, time_limit_s)
    try:
        yield pool, f"process pool of {workers}", workers
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _stop(executor: Executor | None) -> None:
    """Cancel what is queued and stop what runs, now (after Ctrl-C or SIGTERM, or when the disk is full)."""
    if isinstance(executor, IsolatedPool):
        executor.shutdown(wait=False, cancel_futures=True)  # kills its workers
    elif executor is not None:  # Dask's executor cancels its futures on shutdown(wait=False), and takes no other option
        executor.shutdown(wait=False)


def _results(pending: list[tuple[int, CellSpec]], executor: Executor | None, context: CellContext, window: int,
             on_start: Callable[[CellSpec], None]) -> Iterator[tuple[int, dict]]:
    """``(position, row)`` as cells finish: one at a time in process, else ≤ ``window`` futures in flight;
    ``on_start(cell)`` is called as each cell is started (in process) or submitted.

    A cell never raises, but its worker can die, outrun the pool's hard time limit, or be lost with its Dask worker:
    that cell becomes a failed row saying so (:func:`_worker_failure`), and the sweep goes on."""
    if executor is None:
        for position, cell in pending:
            on_start(cell)
            yield position, run_cell(cell, context)
        return
    queue = iter(pending)
    in_flight: dict[Future, tuple[int, CellSpec]] = {}

    def refill() -> None:
        for position, cell in queue:
            on_start(cell)
            try:
                in_flight[executor.submit(run_cell, cell, context)] = (position, cell)
            except RuntimeError as error:  # an executor that refuses new work: record the cell, try the next
                failed_rows.append((position, _worker_failure(cell, error, context)))
            if len(in_flight) >= window:
                return

    failed_rows: list[tuple[int, dict]] = []
    refill()
    while in_flight or failed_rows:
        while failed_rows:
            yield failed_rows.pop()
        if not in_flight:
            refill()
            continue
        done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
        for future in done:
            position, cell = in_flight.pop(future)
            try:
                row = future.result()
            except Exception as error:  # noqa: BLE001 — the worker's failure, not the cell's: record it
                row = _worker_failure(cell, error, context)
            yield position, row
        refill()


def _worker_failure(cell: CellSpec, error: BaseException, context: CellContext) -> dict:
    """The row of a cell whose worker failed it: died (``pebble.ProcessExpired``), killed at the hard time limit
    (``TimeoutError``), or anything else the executor raised."""
    exitcode = getattr(error, "exitcode", None)
    if type(error).__name__ == "ProcessExpired":
        row = failed_row(cell, f"the worker process running this cell died: {describe_exit(exitcode)}; the worker was "
                         "replaced and the other cells ran on", fault="died")
    elif isinstance(error, TimeoutError):
        row = failed_row(cell, f"the cell was still running at the pool's hard limit of {hard_limit(context.time_limit_s):g} s "
                         f"(time limit {context.time_limit_s:g} s, which the in-cell timer could not enforce: a native "
                         "loop?); its worker was killed and replaced", fault="time_limit")
    else:
        row = failed_row(cell, f"the worker running this cell failed: {type(error).__name__}: {error}", fault="died")
    return {**row, "threads": context.threads, "time_limit_s": context.time_limit_s}


# ---------------------------------------------------------------------- the output directory


def default_cache_dir(out: Path) -> Path:
    """Learned models are cached beside the runs: ``<out's parent>/cache`` (e.g. ``results/runs/cache``)."""
    return Path(out).resolve().parent / "cache"


def _move_aside(out: Path, lock: RunLock) -> RunLock:
    """Move the run in ``out`` aside to ``<out>.old-<time>`` and start an empty ``out``; return its new lock."""
    aside = out.with_name(f"{out.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    lock.release()
    shutil.move(str(out), str(aside))
    (aside / RunLock.filename).unlink(missing_ok=True)
    print(f"moved the old run aside to {aside}", file=sys.stderr)
    out.mkdir(parents=True)
    return RunLock(out)


def _recorded_code(out: Path) -> dict | None:
    """The code fingerprint the earlier run in ``out`` recorded in its environment.json, if any."""
    try:
        return json.loads((out / "environment.json").read_text()).get("code")
    except (OSError, ValueError, AttributeError):
        return None


def prepare_output(out: Path, cells: list[CellSpec], force: bool = False, code: dict | None = None) -> RunLock:
    """Make ``out`` ready for this sweep and lock it (the returned :class:`~fmbench.files.RunLock`, to release when the
    sweep ends), or raise :class:`SweepError` before any work (see the module docstring).

    ``out`` may not be a filesystem root, the home directory, or a non-empty directory that holds no run
    (:func:`fmbench.files.check_output_directory`). ``code`` is this run's
    :func:`fmbench.provenance.code_fingerprint`: rows saved ``ok`` by other code are not resumed (they would sit beside
    rows of this code as if one had computed both); the run is refused, naming what changed, unless ``force`` moves it
    aside."""
    if out.exists() and not out.is_dir():
        raise SweepError(f"the output path {out} exists and is not a directory")
    check_output_directory(out)
    holds_run = any((out / name).exists() for name in RUN_MARKERS)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe_writable(out)
    except OSError as error:
        if holds_run:  # an earlier run's store that cannot be written (read-only media): a store problem
            raise store_error(error, out / RowStore.filename) from None
        raise SweepError(f"cannot write to the output directory {out}: {error.strerror or error}") from None
    lock = RunLock(out)
    try:
        with warnings.catch_warnings():  # a damaged store is refused below (RowStore.check), not read around
            warnings.simplefilter("ignore", StoreWarning)
            rows = load_rows(out)
        foreign = (set(rows["cell"]) if "cell" in rows else set()) - {cell.key() for cell in cells}
        stale = 0
        if code is not None and "status" in rows:
            recorded = rows["code"] if "code" in rows else pd.Series([None] * len(rows), index=rows.index)
            stale = int(((rows["status"] == "ok") & (recorded != fingerprint_key(code))).sum())
        if foreign and not force:
            raise SweepError(
                f"{out} holds {len(foreign)} cell(s) of another sweep; refusing to mix them. Use another --out, or "
                "--force to start afresh (the old run is kept aside)"
            )
        if stale and not force:
            raise SweepError(
                f"{out} holds {stale} row(s) computed by other code: {what_changed(_recorded_code(out), code)}. Resuming "
                "would keep those rows as if this code had computed them. Use another --out, or --force to start "
                "afresh (the old run is kept aside)"
            )
        if foreign or stale:
            lock = _move_aside(out, lock)
        specs = [{"cell": cell.key(), **cell.as_dict()} for cell in cells]
        write_text(out / "sweep.json", json.dumps({"cells": specs}, indent=1))
    except BaseException:
        lock.release()
        raise
    return lock


# ---------------------------------------------------------------------- progress


class Progress:
    """A tqdm bar (cells done / failed / ETA) on a terminal; plain lines when stderr is not one; nothing if quiet."""

    def __init__(self, total: int, enabled: bool = True):
        self.enabled, self.total, self.failed, self.done = enabled, total, 0, 0
        self.started = time.perf_counter()
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="cell", dynamic_ncols=True, file=sys.stderr)

    def update(self, cell: CellSpec, row: dict) -> None:
        self.done += 1
        self.failed += row["status"] == "failed"
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix(failed=self.failed, refresh=False)
            self.bar.update(1)
            return
        elapsed = time.perf_counter() - self.started
        remaining = elapsed / self.done * (self.total - self.done)
        status = row["status"] if row["status"] != "failed" else f"FAILED ({str(row.get('error'))[:80]})"
        detail = f"steps={cell.steps}" if cell.steps is not None else f"rtol={cell.rtol}"
        print(f"[{self.done}/{self.total}] {cell.target} {cell.schedule} {cell.field} {cell.method} {detail} {cell.dtype}: "
              f"{status}  ({elapsed:.0f} s, ~{remaining:.0f} s left)", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------- the sweep


def _record_end_load(out: Path) -> None:
    """Add the load average at the end of the run to environment.json (the one at its start lags the run's own load
    by a minute): ``fmbench compare --timing`` reads it to tell whether two runs were timed under the same load."""
    path = out / "environment.json"
    if not hasattr(os, "getloadavg") or not path.exists():
        return
    refuse_link(path)
    record = json.loads(path.read_text())
    record["load_average_end"] = list(os.getloadavg())
    write_text(path, json.dumps(record, indent=2))


@dataclass
class SweepOutcome:
    """The rows of the run (all of them, in sweep order) and what this invocation did."""

    rows: pd.DataFrame
    ran: int
    failed: int
    interrupted: bool
    kept_failed: int = 0


def _pretrain(
    pending: list[tuple[int, CellSpec]], cache_dir: Path, say: Callable[[str], None], progress: bool
) -> dict[str, str]:
    """Train each learned model the pending cells need, once; return ``cell key → error`` for models that failed."""
    needed: dict[tuple, list[CellSpec]] = {}
    for _, cell in pending:
        if cell.learned_objective() is not None:
            key = (cell.target, json.dumps(cell.target_params, sort_keys=True), cell.schedule,
                   json.dumps(cell.schedule_params, sort_keys=True), cell.field, cell.seed, cell.train_steps)
            needed.setdefault(key, []).append(cell)
    failures = {}
    for index, cells in enumerate(needed.values(), start=1):
        cell = cells[0]
        say(f"learned model {index}/{len(needed)}: {cell.field} on {cell.target} / {cell.schedule}, "
            f"{cell.train_steps} steps (cached in {cache_dir})")
        try:
            train_for(cell, cache_dir, progress=progress)
        except Exception as error:  # noqa: BLE001 — its cells become failed rows, the sweep goes on
            failures.update({c.key(): f"training failed: {type(error).__name__}: {error}" for c in cells})
    return failures


def _died_in_process(store: RowStore, cells: list[CellSpec], code_key: str) -> int:
    """Turn each cell the last in-process run died in (started, never saved) into a failed row naming it."""
    positions = {cell.key(): (position, cell) for position, cell in enumerate(cells)}
    attempts = store.attempts()
    died = [key for key in store.died_running() if key in positions]
    for key in died:
        position, cell = positions[key]
        error = (f"the run died while this cell was running in process (start {attempts[key]}; it was recorded as "
                 "started and never finished): killed, perhaps for memory, or a crash in native code")
        store.append({**failed_row(cell, error, fault="died"), "attempt": attempts[key], "code": code_key}, position)
    return len(died)


def run_sweep(
    cells: list[CellSpec],
    out: str | Path,
    executor: Executor | None = None,
    progress: bool = True,
    force: bool = False,
    cache_dir: str | Path | None = None,
    threads: int = 1,
    executor_description: str = "in-process",
    plugins: tuple[str, ...] = (),
    parallelism: int | None = None,
    time_limit_s: float | None = DEFAULT_TIME_LIMIT_S,
    retry_failed: bool = False,
) -> SweepOutcome:
    """Run every cell of ``cells`` not already saved ``ok`` in ``out``; save each row as it finishes.

    ``executor`` is any ``concurrent.futures.Executor`` (see :func:`open_executor`); None runs cells here, one at
    a time; ``parallelism`` (how many cells it runs at once; default: its ``_max_workers``, else the CPU count)
    sets how many are kept in flight (twice that). ``threads`` is torch's intra-op threads per cell;
    ``time_limit_s`` each cell's time limit; ``retry_failed`` runs again the cells kept failed after their process
    died or they hit the time limit twice (:mod:`fmbench.faults`). Validate ``cells`` first
    (:func:`fmbench.sweepfile.check_cells`).

    Raises :class:`fmbench.store.StoreError` when the store is damaged or read-only, and
    :class:`~fmbench.store.StoreFullError` (after stopping the workers; every saved row kept) when the disk fills.
    """
    out = Path(out)
    check_threads(threads)
    code = code_fingerprint(plugins)
    lock = prepare_output(out, cells, force, code)
    try:
        return _run_locked(cells, out, executor, progress, cache_dir, threads, executor_description, plugins,
                           parallelism, time_limit_s, retry_failed, code)
    finally:
        lock.release()


def _run_locked(cells, out, executor, progress, cache_dir, threads, executor_description, plugins, parallelism,
                time_limit_s, retry_failed, code) -> SweepOutcome:
    code_key = fingerprint_key(code)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(out)
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if progress else (lambda text: None)
    store = RowStore(out)
    interrupted = False
    try:
        store.check()
        died = _died_in_process(store, cells, code_key)
        if died:
            print(f"the last run died in {died} cell(s) running in process: they are failed rows now (fault 'died'), "
                  "retried once after the others", file=sys.stderr, flush=True)
        statuses, attempts = store.statuses(), store.attempts()
        faulted = {key for key, fault in store.faults().items() if fault in RETRIED_ONCE}
        # kept failed: a fault of its process (died, time limit) on its second start or later, unless asked again
        kept = set() if retry_failed else {key for key in faulted if attempts.get(key, 1) >= 2}
        pending = [(position, cell) for position, cell in enumerate(cells)
                   if statuses.get(cell.key()) != "ok" and cell.key() not in kept]
        pending.sort(key=lambda item: item[1].key() in faulted)  # innocents first: a cell that died goes last
        retried = sum(1 for _, cell in pending if cell.key() in statuses)
        kept_note = (f"; {len(kept)} kept failed (their process died or they hit the time limit on a second start: "
                     "--retry-failed runs them again)" if kept else "")
        limit_note = f", time limit {time_limit_s:g} s" if time_limit_s else ", no time limit"
        say(f"{len(cells)} cells: {len(cells) - len(pending) - len(kept)} already done, {len(pending)} to run"
            f"{f' ({retried} retried)' if retried else ''}{kept_note}; {executor_description}, {threads} torch "
            f"thread(s) per cell{limit_note} -> {out}")
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)  # training, like the cells, uses the threads asked for
        try:
            record = {**environment(threads, executor_description), "cache_dir": str(cache_dir), "plugins": list(plugins),
                      "time_limit_s": time_limit_s, "code": code, "peaks": device_peaks(cells)}
            write_text(out / "environment.json", json.dumps(record, indent=2))
            training_failures = _pretrain(pending, cache_dir, say, progress)
        except OSError as error:
            raise _as_store_error(error, out) from None
        finally:
            torch.set_num_threads(previous_threads)
        for position, cell in pending:
            if cell.key() in training_failures:
                store.append({**failed_row(cell, training_failures[cell.key()]), "code": code_key}, position)
        pending = [(p, c) for p, c in pending if c.key() not in training_failures]
        tracker = Progress(len(pending), progress)
        context = CellContext(threads=threads, cache_dir=str(cache_dir), plugins=tuple(plugins), time_limit_s=time_limit_s)
        window = 2 * max(1, parallelism or getattr(executor, "_max_workers", None) or os.cpu_count() or 1)
        by_position = dict(pending)
        attempt: dict[str, int] = {}

        def on_start(cell: CellSpec) -> None:
            attempt[cell.key()] = store.start(cell.key(), running=executor is None)

        try:
            for position, row in _results(pending, executor, context, window, on_start):
                store.append({**row, "attempt": attempt.get(row["cell"]), "code": code_key}, position)
                tracker.update(by_position[position], row)
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, lambda *_: os._exit(130))  # a second Ctrl-C exits at once
            interrupted = True
            _stop(executor)
            store.clear_running()  # stopped by the user, not died: the cell in flight is simply not finished
        except StoreError:
            _stop(executor)
            raise
        finally:
            tracker.close()
        rows = store.frame()
    finally:
        store.close()
    try:
        _record_end_load(out)
        export_parquet(out, rows)
    except OSError as error:
        raise _as_store_error(error, out) from None
    if interrupted:  # said even when quiet: the user must know what was kept and how to go on
        print(f"interrupted: {tracker.done} cell(s) finished in this run and are saved ({len(rows)} rows in {out}). "
              "Run the same command again to resume.", file=sys.stderr, flush=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return SweepOutcome(rows, tracker.done, tracker.failed + len(training_failures), interrupted, len(kept))


def _as_store_error(error: OSError, out: Path) -> OSError:
    """A file system error while writing the run's files, as the store's error (a full disk, read-only media); a
    refused link stays what it is."""
    return error if isinstance(error, UnsafePathError) else store_error(error, out / RowStore.filename)
