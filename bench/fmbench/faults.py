"""How a cell can fail beyond raising: its process dies, it outruns its time limit, or it runs out of memory.

Each is one failed row saying which (``fault``) and why (``error``); the other cells run on.

=============== =====================================================================================================
``fault``       what happened
=============== =====================================================================================================
``died``        the process running the cell ended under it: killed (the out-of-memory killer sends SIGKILL), a crash
                in native code, ``os._exit``. With a pool the worker is replaced at once; in process the run itself
                ends, and the next run names the cell (each cell is recorded as started before it runs).
``time_limit``  the cell ran longer than its time limit (``time_limit_s``: the sweep file's, or ``--time-limit``). In
                the cell's own process a timer raises :class:`CellTimeLimit` when the limit passes, so the row comes
                back normally; a pool worker still busy :data:`HARD_LIMIT_GRACE` later (a loop in native code that the
                timer cannot interrupt) is killed and replaced.
``memory``      an allocation failed (``MemoryError``, torch's allocator or CUDA out of memory, a ``ulimit -v``).
``error``       any other exception: the cell's own error (a diverging solve, a bad spec found late).
=============== =====================================================================================================

A cell whose fault is ``died`` or ``time_limit`` is retried once by the next run (the fault may have been the
machine's: another process's memory, a killed run) and then kept failed: a rerun does not spend its time limit, or
the whole run, on it again until ``fmbench run --retry-failed``. Cells failed by an ``error`` or ``memory`` fault
fail fast and are retried by every run.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

RETRIED_ONCE = ("died", "time_limit")
"""Faults after which a cell is retried once, then kept failed until ``--retry-failed``."""
HARD_LIMIT_GRACE = (1.1, 5.0)
"""A pool worker is killed at ``1.1 × time limit + 5 s``: past the in-cell timer, which should have ended it."""
DEFAULT_TIME_LIMIT_S = 1800.0
"""A cell's time limit when neither the sweep file (``time_limit_s``) nor ``--time-limit`` sets one."""


class CellTimeLimit(Exception):
    """Raised inside a cell when its time limit has passed."""


def hard_limit(time_limit_s: float | None) -> float | None:
    """When a pool kills a worker still running a cell of this time limit."""
    return None if time_limit_s is None else HARD_LIMIT_GRACE[0] * time_limit_s + HARD_LIMIT_GRACE[1]


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`CellTimeLimit` in this block once ``seconds`` have passed (a ``SIGALRM`` timer).

    Only the main thread of a process can take signals: in any other thread (a Dask worker's) the block runs
    without a limit. The timer interrupts Python code and blocking calls such as ``time.sleep``; a native loop that
    never returns to Python is out of its reach (a pool's hard limit kills that worker)."""
    if seconds is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise CellTimeLimit(f"the cell exceeded its time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def fault_of(error: BaseException) -> str:
    """The ``fault`` of an exception a cell raised: ``time_limit``, ``memory`` or ``error``."""
    if isinstance(error, CellTimeLimit):
        return "time_limit"
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":  # torch.cuda's, and torch's
        return "memory"
    text = str(error)
    if isinstance(error, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text):
        return "memory"
    return "error"


def describe_exit(exitcode: int | None) -> str:
    """A worker's exit code in words: a negative code is the signal that killed it."""
    if exitcode is None:
        return "it ended without an exit code"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (what the out-of-memory killer sends)" if -exitcode == signal.SIGKILL else ""
        return f"it was killed by {name}{hint}"
    return f"it exited with status {exitcode}"
