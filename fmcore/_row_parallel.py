"""Independent row blocks on the CPU, one single-threaded worker per torch thread.

The closed forms are a few dozen torch operations on each block of points. Run as they are, each operation is
an OpenMP parallel region that waits for its slowest thread, so a call is hundreds of short regions: idle, that
costs little; with one other CPU-bound process on the machine (T torch threads and one more runnable thread on
T cores), every region waits for whichever thread the scheduler has just descheduled, and the mixture velocity
at n = 10⁵, K = d = 16 ran 2–4× slower than idle on a 2-core Xeon. Here the blocks go instead to T worker threads
whose torch runs single-threaded (``torch.set_num_threads(1)`` in each, which holds for that thread only), taken
from one queue: no thread ever waits for another within a block, a descheduled worker simply takes fewer blocks,
and the caller waits once, for the last block. torch releases the GIL inside its operations, so the workers'
arithmetic overlaps; only the Python between operations is serialised.

Rows must be independent: each block's result may depend only on its own rows, so the answer is the same as
computing the blocks one after another in the calling thread (what happens with one torch thread, inside a
worker, or when autograd must see the operations).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

__all__ = ["map_blocks"]

Result = TypeVar("Result")

_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}  # (process id, worker count) -> its pool
_pools_lock = threading.Lock()
_in_worker = threading.local()


def _single_threaded_worker() -> None:
    torch.get_num_threads()  # torch sets a thread's count lazily at its first use: let it, then override it
    torch.set_num_threads(1)
    _in_worker.active = True


def _pool(workers: int) -> ThreadPoolExecutor:
    """The process's pool of ``workers`` single-threaded workers, started at once (a forked child makes its own).

    ``torch.set_num_threads(1)`` in a worker also resets torch's process-wide default, which threads started
    later would inherit; once every worker has started, the caller sets it back to ``workers``."""
    key = (os.getpid(), workers)
    with _pools_lock:
        if key not in _pools:
            pool = ThreadPoolExecutor(workers, thread_name_prefix="fmcore-rows", initializer=_single_threaded_worker)
            started = threading.Barrier(workers + 1)
            for _ in range(workers):  # each blocks until all have started: the pool must start a thread for each
                pool.submit(started.wait)
            started.wait()
            torch.set_num_threads(workers)
            _pools[key] = pool
        return _pools[key]


def map_blocks(compute: Callable[[int], Result], count: int, parallel: bool = True) -> list[Result]:
    """``[compute(0), …, compute(count - 1)]``, the blocks spread over the row workers when that can help.

    In the calling thread instead when ``parallel`` is False (say, autograd must record the operations: the
    workers run with gradients off), when torch has one thread, when there is one block, or when called from a
    worker. The workers run under ``torch.no_grad``; an exception in a block is raised here."""
    workers = torch.get_num_threads()
    if not parallel or count < 2 or workers < 2 or getattr(_in_worker, "active", False):
        return [compute(block) for block in range(count)]

    def in_worker(block: int) -> Result:
        with torch.no_grad():
            return compute(block)

    return list(_pool(workers).map(in_worker, range(count)))
