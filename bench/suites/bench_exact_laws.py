"""The exact output law at image scale: its cost against the bytes it must touch.

Workload: the law of rk4 (1000 steps, 4 stages) and of euler (1000 steps) on the vp path, stopped at t = 1 − 1e-3, for
the ADSN Gaussian (``get_target("adsn")``, d = 3 × 256 × 256 = 196 608, zero mean; 65 511 distinct eigenvalues, on
which the law is computed: ``GaussianProblem.distinct``), and for the CIFAR-10 Gaussian (d = 3072) at the paper's NFE
1000. ``extra_info`` records the limit it is measured against: the time to stream the per-stage vectors once through
memory (each stage of each step reads λ and writes its gain and its contribution, 3 × 8 bytes per distinct
eigenvalue), at the machine's copy bandwidth measured beside it. The recursion runs in unfused torch operations (about
19 per rk4 step) on parts of ``LAW_CHUNK`` eigendirections (``fmcore/solvers/laws.py``); a fused kernel is what would
reach that limit.
"""

from __future__ import annotations

import os
import time

import pytest
import torch

from fmcore import get_schedule, get_target
from fmcore.exact import exact_output_law

F64 = torch.float64
ADSN_SIZE = 3 * 256 * 256


def _copy_bandwidth(dim: int) -> float:
    """Bytes per second of ``y.copy_(x)`` on float64 vectors of ``dim`` (read + write counted), best of 20."""
    x, y = torch.randn(dim, dtype=F64), torch.empty(dim, dtype=F64)
    best = float("inf")
    for _ in range(20):
        began = time.perf_counter()
        y.copy_(x)
        best = min(best, time.perf_counter() - began)
    return 2 * 8 * dim / best


@pytest.mark.slow
@pytest.mark.benchmark(group="exact law d=196608, 1000 steps")
@pytest.mark.parametrize("method, stages", [("rk4", 4), ("euler", 1)])
def test_exact_law_at_adsn_size(benchmark, method, stages):
    from fmcore.grids import get_grid

    target, schedule = get_target("adsn"), get_schedule("vp")
    grid = get_grid("uniform", 1000, t1=1 - 1e-3)
    law = benchmark.pedantic(exact_output_law, args=(target, schedule, method), kwargs={"grid": grid}, rounds=5)
    distinct = int(torch.unique(target.eigenvalues[0]).numel())
    streaming = 1000 * stages * 3 * 8 * distinct / _copy_bandwidth(distinct)
    benchmark.extra_info.update(d=ADSN_SIZE, distinct_eigenvalues=distinct, steps=1000, w2=law.w2_to_target(),
                                streaming_limit_s=streaming, ratio_to_limit=benchmark.stats.stats.median / streaming,
                                threads=torch.get_num_threads())


@pytest.mark.benchmark(group="exact law cifar10, NFE 1000")
@pytest.mark.parametrize("method", ["euler", "pg_ei", "euler_maruyama"])
def test_exact_law_cifar10(benchmark, method):
    from fmcore.solvers import get_diffusion

    options = {"diffusion": get_diffusion("forward")} if method == "euler_maruyama" else {}
    target, schedule = get_target("cifar10"), get_schedule("vp")
    benchmark.pedantic(exact_output_law, args=(target, schedule, method), kwargs={"steps": 999, **options}, rounds=3)


@pytest.fixture(params=[False, True], ids=["glibc-defaults", "heap-reuse"])
def heap_reuse(request):
    """The process's allocator as the library leaves it, then with the harness's heap reuse (fmbench.allocator),
    restored to glibc's defaults afterwards."""
    from fmbench.allocator import set_heap_reuse

    if request.param and not set_heap_reuse(True):
        pytest.skip("heap reuse needs glibc")
    yield request.param
    if request.param:
        set_heap_reuse(False)


@pytest.mark.benchmark(group="closed form at image dimension")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_cifar10_velocity_against_memory_bandwidth(benchmark, dtype, heap_reuse):
    """The closed-form velocity of the CIFAR-10 Gaussian (a shared basis: the axes) at n = 4096: it must read x and
    write u, 2·n·d elements; ``extra_info`` holds that time at the measured copy bandwidth, the ratio, whether torch
    allocates on huge pages (``THP_MEM_ALLOC_ENABLE=1 tox -e bench``, as the harness does) and whether glibc keeps
    freed memory for reuse (the harness's setting; README, "Threads and memory"). Goal: within 2× with the harness's
    settings. The field also sums its output once to check it is finite (a third pass over n·d elements)."""
    from fmcore import AnalyticField

    target, schedule = get_target("cifar10"), get_schedule("cosine")
    field = AnalyticField(target, schedule)
    x = target.marginal(0.5, schedule).sample(4096, generator=0).to(dtype)
    field(0.5, x)
    benchmark.pedantic(field, args=(0.5, x), rounds=15, warmup_rounds=1)
    limit = 2 * x.numel() * x.element_size() / _copy_bandwidth(x.numel())
    benchmark.extra_info.update(n=4096, d=3072, bandwidth_limit_s=limit,
                                ratio_to_limit=benchmark.stats.stats.median / limit,
                                huge_pages=os.environ.get("THP_MEM_ALLOC_ENABLE"), heap_reuse=heap_reuse)


@pytest.mark.benchmark(group="sampler at image dimension")
def test_cifar10_sampler_run_field_fraction(benchmark):
    """rk4, 50 steps (200 field calls), n = 1024 on the CIFAR-10 Gaussian, float32: ``extra_info`` holds the fraction of
    the run spent in the field (200 × one bare call, timed beside it) and the rest in the solver's own arithmetic."""
    from fmcore import AnalyticField
    from fmcore.grids import get_grid
    from fmcore.solvers import sample

    target, schedule = get_target("cifar10"), get_schedule("cosine")
    field = AnalyticField(target, schedule)
    x0 = torch.randn(1024, target.dim, generator=torch.Generator().manual_seed(0))
    grid = get_grid("uniform", 50, t1=0.999)
    result = benchmark.pedantic(sample, args=(field, x0, "rk4"), kwargs={"grid": grid}, rounds=3, warmup_rounds=1)
    began = time.perf_counter()
    for _ in range(20):
        field(0.5, x0)
    one_call = (time.perf_counter() - began) / 20
    benchmark.extra_info.update(n=1024, d=3072, steps=50, nfe=result.nfe, one_field_call_s=one_call,
                                field_fraction=result.nfe * one_call / benchmark.stats.stats.median)
