"""Speed that survives a busy machine: each workload timed idle, then beside one other CPU-bound process.

Workloads: the closed-form GMM velocity (n = 10⁵, d = 16, K = 16, float32) and one sampler cell of the default
sweep (gaussian d = 8, cosine, rk4, 32 steps, n = 2000, float64, as ``fmbench.cells.run_cell`` runs it), each
with 1 torch thread (the harness's default) and 2. The benchmark's own timing is the busy case;
``extra_info`` holds the idle and busy medians and their ratio (busy / idle), so a stored run keeps the ratio.
"""

from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
import torch
from fmbench.cells import CellSpec, run_cell
from fmbench.timing import median_time

from fmcore import AnalyticField, get_schedule, get_target


@contextmanager
def one_busy_process():
    """One other CPU-bound process for the duration (it spins in pure Python)."""
    competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.5)
    try:
        yield
    finally:
        competitor.kill()
        competitor.wait()


def closed_form_field():
    field = AnalyticField(get_target("gmm", K=16, d=16), get_schedule("cond_ot"))
    x = torch.randn(100_000, 16, generator=torch.Generator().manual_seed(0))
    return lambda: field(0.5, x)


def sampler_cell():
    spec = CellSpec(target="gaussian", target_params={"d": 8, "condition_number": 100}, schedule="cosine",
                    method="rk4", steps=32, n=2000)
    return lambda: run_cell(spec)


WORKLOADS = {"closed_form_field": closed_form_field, "sampler_cell": sampler_cell}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_busy_over_idle(benchmark, workload, threads):
    call = WORKLOADS[workload]()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        idle = median_time(call, repeats=7, warmup=2)
        with one_busy_process():
            busy = median_time(call, repeats=7, warmup=1)
            benchmark.pedantic(call, rounds=3, iterations=1)
    finally:
        torch.set_num_threads(previous)
    ratio = busy.median_s / idle.median_s
    benchmark.extra_info.update(threads=threads, idle_median_s=idle.median_s, busy_median_s=busy.median_s,
                                busy_over_idle=ratio)
    print(f"\n{workload}, {threads} thread(s): idle {idle.median_s * 1e3:.1f} ms, busy {busy.median_s * 1e3:.1f} ms, "
          f"busy/idle {ratio:.2f}")
