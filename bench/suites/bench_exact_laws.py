"""The exact output law at image scale: its cost against the bytes it must touch.

Workload: the law of rk4 (1000 steps, 4 stages) and of euler (1000 steps) on the vp path, for an axis-aligned
Gaussian of d = 3 × 256 × 256 = 196 608 (ADSN's size) with eigenvalues log-spaced over five decades, and for the
CIFAR-10 Gaussian (d = 3072) at the paper's NFE 1000. ``extra_info`` records the limit it is measured against: the
time to stream the per-stage vectors once through memory (each stage of each step reads λ and writes its gain and
offset, 3 × 8 × d bytes), at the machine's copy bandwidth measured beside it.
"""

from __future__ import annotations

import time

import pytest
import torch

from fmcore import GaussianMixture, get_schedule, get_target
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


def _spectral_gaussian(dim: int) -> GaussianMixture:
    eigenvalues = torch.logspace(1.0, -4.0, dim, dtype=F64).unsqueeze(0)
    return GaussianMixture(torch.ones(1, dtype=F64), torch.zeros(1, dim, dtype=F64), eigenvalues, covariance_type="diag")


@pytest.mark.slow
@pytest.mark.benchmark(group="exact law d=196608, 1000 steps")
@pytest.mark.parametrize("method, stages", [("rk4", 4), ("euler", 1)])
def test_exact_law_at_adsn_size(benchmark, method, stages):
    target, schedule = _spectral_gaussian(ADSN_SIZE), get_schedule("vp")
    law = benchmark.pedantic(exact_output_law, args=(target, schedule, method), kwargs={"steps": 1000}, rounds=1)
    streaming = 1000 * stages * 3 * 8 * ADSN_SIZE / _copy_bandwidth(ADSN_SIZE)
    benchmark.extra_info.update(d=ADSN_SIZE, steps=1000, w2=law.w2_to_target(), streaming_limit_s=streaming,
                                threads=torch.get_num_threads())


@pytest.mark.benchmark(group="exact law cifar10, NFE 1000")
@pytest.mark.parametrize("method", ["euler", "pg_ei", "euler_maruyama"])
def test_exact_law_cifar10(benchmark, method):
    from fmcore.solvers import get_diffusion

    options = {"diffusion": get_diffusion("forward")} if method == "euler_maruyama" else {}
    target, schedule = get_target("cifar10"), get_schedule("vp")
    benchmark.pedantic(exact_output_law, args=(target, schedule, method), kwargs={"steps": 999, **options}, rounds=3)
