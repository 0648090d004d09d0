"""torch's OpenMP threads on a shared machine, and the harness's policy for them.

With the default (active) wait policy, each of torch's OpenMP threads spins after a parallel region, waiting for
the next. When another process is busy on the same cores, the spinning threads and that process take turns, and
every parallel region waits for a descheduled thread. Measured on this project's 2-core machines (closed-form GMM
velocity, n = 10⁵, d = 16, K = 16, float32; README, "Threads and memory"):

========================  ==========  ===============================
torch threads, policy     idle        one other CPU-bound process
========================  ==========  ===============================
2, active (default)       38 ms       97–285 ms (up to 4.8 s reported)
2, ``PASSIVE``            77 ms       75 ms
1                         60 ms       60 ms
========================  ==========  ===============================

One thread is the robust choice, and it beats the passive policy even idle. So the harness runs each cell (and
each training) with one torch thread unless told otherwise (``--threads``), and parallelises across processes.
For ``--threads`` > 1 it wants the passive policy, which is read once, when torch starts its OpenMP runtime:
:func:`prefer_passive_wait` sets it when ``fmbench`` is imported before torch (the ``fmbench`` command guarantees
it), and :func:`check_threads` warns with the one-liner when it could not be set. The library (``fmcore``) leaves
torch's defaults alone: they are the fastest on an idle machine.
"""

from __future__ import annotations

import os
import sys
import warnings

WAIT_POLICY = "OMP_WAIT_POLICY"


def prefer_passive_wait() -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose a policy or torch's OpenMP runtime already started."""
    if WAIT_POLICY not in os.environ and "torch" not in sys.modules:
        os.environ[WAIT_POLICY] = "PASSIVE"


def check_threads(threads: int) -> None:
    """Warn when cells will run several spin-waiting threads (see the module docstring)."""
    if threads > 1 and os.environ.get(WAIT_POLICY, "").upper() != "PASSIVE":
        warnings.warn(
            f"cells will use {threads} torch threads with OpenMP's active wait policy (torch was imported before fmbench, "
            "or OMP_WAIT_POLICY is set otherwise): on a busy machine they can run several times slower. Run with "
            "`OMP_WAIT_POLICY=PASSIVE`, import fmbench before torch, or keep --threads 1.",
            RuntimeWarning,
            stacklevel=2,
        )
