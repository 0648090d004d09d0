"""How a cell's sampler is executed: eagerly, or with the launch overhead of one kernel per operation removed.

=============== ========================================================================================
``execution``   what runs
=============== ========================================================================================
``eager``       ``fmcore.solvers.sample``: the library's checked path (validation, NFE counting, a
                finiteness check after every step). The default.
``cuda_graph``  the fixed-step loop (:func:`~fmcore.solvers.runge_kutta.integrate_explicit_rk_unchecked`
                on the field's ``velocity_unchecked``) captured once as a CUDA graph and replayed: one
                launch for the whole solve.
``compile``     the same loop with the field's ``velocity_unchecked`` compiled by ``torch.compile``
                (``fullgraph=True``, so a graph break is a failure, not a silent slowdown).
=============== ========================================================================================

Both accelerated executions check the result once, at the end (a non-finite output raises
:class:`~fmcore.solvers.SolverDivergenceError` with the last time), instead of after every step, and count NFE
as stages × steps (a Butcher-tableau method's NFE is known in advance). Where one cannot run — a CUDA graph
on a machine without CUDA, a method whose loop needs the host (adaptive step-size control, Brownian increments
from a CPU generator), a field without ``velocity_unchecked``, a capture or compilation that fails — the cell
falls back to ``eager`` and its row says so: ``execution_used = "eager"`` and the reason in
``execution_fallback``. The one-off cost of capture or compilation (with its warm-up run) is ``setup_s``, kept
out of ``wall_s``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from fmbench.timing import synchronize
from fmcore.grids import get_grid
from fmcore.solvers import SolverDivergenceError, get_method, sample
from fmcore.solvers.runge_kutta import integrate_explicit_rk_unchecked, is_finite
from fmcore.solvers.tableaus import TABLEAUS

EXECUTIONS = ("eager", "cuda_graph", "compile")

@dataclass(frozen=True)
class Outcome:
    """What one run of a prepared sampler gives: the output, its NFE and the times the solve started and ended."""

    x: Tensor
    nfe: int
    t0: float
    t1: float = 1.0


@dataclass(frozen=True)
class Prepared:
    """A sampler ready to run: ``run()`` solves once from the cell's noise; ``used`` is the execution it runs
    with (``eager`` after a fallback, whose reason is ``fallback``); ``setup_s`` the capture/compile time."""

    run: Callable[[], Outcome]
    used: str
    fallback: str | None = None
    setup_s: float = 0.0


class Fallback(Exception):
    """The requested execution cannot run this cell; the message is the reason recorded in the row."""


def prepare(execution: str, field, x0: Tensor, method: str, options: dict) -> Prepared:
    """Prepare ``sample(field, x0, method, **options)`` for ``execution`` (one of :data:`EXECUTIONS`), falling
    back to eager with the reason when it cannot run."""
    if execution not in EXECUTIONS:
        raise ValueError(f"execution must be one of {EXECUTIONS}, got {execution!r}")
    eager = _eager(field, x0, method, options)
    if execution == "eager":
        return Prepared(eager, "eager")
    try:
        tableau, grid = _fixed_step_plan(field, method, options)
        build = _capture_graph if execution == "cuda_graph" else _compile
        started = time.perf_counter()
        run = build(field, x0, grid, tableau)
        synchronize(x0.device)
        setup_s = time.perf_counter() - started
    except Fallback as reason:
        return Prepared(eager, "eager", str(reason))
    except Exception as error:  # noqa: BLE001 — a capture or compilation that fails is a recorded fallback
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return Prepared(eager, "eager", f"{execution} failed: {type(error).__name__}: {first_line[:300]}")
    return Prepared(run, execution, None, setup_s)


def _eager(field, x0: Tensor, method: str, options: dict) -> Callable[[], Outcome]:
    def run() -> Outcome:
        result = sample(field, x0, method, **options)
        return Outcome(result.x, result.nfe, result.t0, result.t1)

    return run


def _fixed_step_plan(field, method: str, options: dict):
    """The tableau and the CPU grid of a cell that can run without the host, or :class:`Fallback` saying why not."""
    declared = get_method(method)
    if declared.adaptive:
        raise Fallback(f"{method} cannot run without the host: its step-size control decides on the host after every step")
    if declared.draws_noise(options):
        raise Fallback(f"{method} cannot run without the host: its noise comes from a CPU generator (the same noise on "
                       "every device)")
    if method not in TABLEAUS:
        raise Fallback(f"{method} is not one of our Butcher-tableau methods (the device-only loop runs tableaus)")
    if not callable(getattr(field, "velocity_unchecked", None)):
        raise Fallback(f"{type(field).__name__} has no velocity_unchecked (an evaluation with no host synchronisation)")
    grid = options.get("grid")
    if grid is None:
        grid = get_grid("uniform", options["steps"])
    return TABLEAUS[method], torch.as_tensor(grid, dtype=torch.float64)


def _finished(x: Tensor, method: str, grid: Tensor, stages: int) -> Outcome:
    if not is_finite(x):
        raise SolverDivergenceError(method, None, None, "found in the output: the accelerated loop checks once, at the end")
    return Outcome(x, stages * (len(grid) - 1), float(grid[0]), float(grid[-1]))


def _capture_graph(field, x0: Tensor, grid: Tensor, tableau) -> Callable[[], Outcome]:
    """Capture the whole fixed-step loop as one CUDA graph (after a warm-up on a side stream, as capture needs)."""
    if x0.device.type != "cuda":
        raise Fallback("CUDA graphs need a CUDA device")
    static_x = x0.clone()
    times = grid.to(dtype=x0.dtype, device=x0.device)

    def loop() -> Tensor:
        return integrate_explicit_rk_unchecked(field.velocity_unchecked, static_x, grid, tableau, times)

    side = torch.cuda.Stream(device=x0.device)
    side.wait_stream(torch.cuda.current_stream(x0.device))
    with torch.no_grad(), torch.cuda.stream(side):
        for _ in range(2):  # caches filled, kernels chosen, allocator pools warmed before capture
            loop()
    torch.cuda.current_stream(x0.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        static_output = loop()

    def run() -> Outcome:
        static_x.copy_(x0)
        graph.replay()
        return _finished(static_output.clone(), tableau.name, grid, tableau.stages)

    run()  # the first replay, part of the setup
    return run


def inductor_cache_per_cpu_capability() -> str:
    """Point torch.compile's on-disk cache at a folder of this process's ATen CPU capability, unless the user chose
    another than the default (``TORCHINDUCTOR_CACHE_DIR``, which inductor also sets to its default on first use);
    return the folder in use.

    Inductor's cache key does not include the capability: measured with torch 2.13.0, a kernel compiled and cached
    under this machine's AVX-512 and reloaded by a process with ``ATEN_CPU_CAPABILITY=avx2`` gave a heun strong error
    of 0.383 where eager (and a fresh compile under avx2) gives 0.0111, and under ``default`` the compile failed. A
    folder per capability keeps each one's kernels apart (``tests/test_performance.py``)."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    default = os.path.abspath(default_cache_dir())
    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if chosen is None or os.path.abspath(chosen) == default:  # unset, or set to the default by inductor itself
        capability = torch.backends.cpu.get_cpu_capability().lower()
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(default, f"fmbench-{capability}")
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]


def _compile(field, x0: Tensor, grid: Tensor, tableau) -> Callable[[], Outcome]:
    """The fixed-step loop with ``torch.compile`` of the field's ``velocity_unchecked``; compiled by a first run."""
    inductor_cache_per_cpu_capability()
    torch._dynamo.reset()  # each cell compiles afresh: earlier cells' graphs would count against dynamo's recompile limit
    compiled = torch.compile(field.velocity_unchecked, fullgraph=True, dynamic=False)
    times = grid.to(dtype=x0.dtype, device=x0.device)

    def run() -> Outcome:
        with torch.no_grad():
            x = integrate_explicit_rk_unchecked(compiled, x0, grid, tableau, times)
        return _finished(x, tableau.name, grid, tableau.stages)

    run()  # compiles (once per distinct input shape and dtype)
    return run
