"""OpenMP's wait policy, set before torch loads its OpenMP runtime.

With its default (active) wait policy, each of torch's OpenMP threads spins after a parallel region, waiting
for the next one. On a machine where another process is busy on the same cores, the spinning threads and the
other process take turns, and every parallel region then waits for a descheduled thread: on this project's
2-core machines the closed-form GMM velocity (n = 10⁵, d = 16, K = 16, float32) took 38 ms idle and 97–285 ms
(issue reports up to 4.8 s) with one other CPU-bound process, against 75 ms with ``OMP_WAIT_POLICY=PASSIVE``
(figures in the README, "Threads").

The policy is read once, when the OpenMP runtime starts, which is when torch is first imported. So
:func:`prefer_passive_wait` sets ``OMP_WAIT_POLICY=PASSIVE`` (unless the user has set it) only if torch has not
been imported yet; ``import fmcore`` (or ``fmbench``) before ``torch`` guarantees it. A user who imported torch
first gets a warning with the one-liner that fixes it: ``OMP_WAIT_POLICY=PASSIVE python ...``.
"""

from __future__ import annotations

import os
import sys
import warnings

WAIT_POLICY = "OMP_WAIT_POLICY"


def prefer_passive_wait() -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` if nobody chose a policy and torch's OpenMP runtime has not started."""
    if WAIT_POLICY in os.environ:
        return
    if "torch" not in sys.modules:
        os.environ[WAIT_POLICY] = "PASSIVE"
        return
    import torch

    if torch.get_num_threads() > 1:
        warnings.warn(
            "torch was imported before fmcore, so its OpenMP threads spin-wait (OMP_WAIT_POLICY is unset): on a "
            "machine where other processes are busy this can make closed-form fields several times slower. Run "
            "with `OMP_WAIT_POLICY=PASSIVE python ...`, import fmcore before torch, or torch.set_num_threads(1).",
            RuntimeWarning,
            stacklevel=3,
        )
