"""One optimal 10-step grid on the CIFAR-10 Gaussian (d = 3072, 9 zero eigenvalues), from the differentiable exact law.

Workload: ``optimal_grid`` (three L-BFGS-B runs, from the uniform grid and two warps of it, exact gradients by
autograd in float64) for euler and heun on vp and cond_ot, heun stopped at t = 1 − 1e-3 (it evaluates the field at its
step's end, singular at t = 1 on a rank-deficient target), and for the written diffusion laws: dpmpp_2m on vp, unipc on
cond_ot, edm_heun (from σ/α = 80) on vp, and the free start for dpmpp_2m on vp (from the fixed-start optimum).
``extra_info`` records the W2 on the uniform grid and on the optimum, the iterations, and one objective-and-gradient
evaluation's time: the optimiser's time divided by it is the number of such evaluations it took (the limit: an
optimiser that needs no evaluation beyond the ones it takes)."""

from __future__ import annotations

import time

import pytest
import torch

from fmcore import get_schedule, get_target
from fmcore.optimal_grids import GridObjective, optimal_grid
from fmcore.optimal_grids import optimise as optimiser

F64 = torch.float64


def _one_evaluation(objective: GridObjective, grid: torch.Tensor) -> float:
    """Seconds for the objective and its gradient on ``grid``, best of 5."""
    best = float("inf")
    for _ in range(5):
        began = time.perf_counter()
        times = grid.clone().requires_grad_(True)
        torch.autograd.grad(torch.log(objective(times)), times)
        best = min(best, time.perf_counter() - began)
    return best


@pytest.mark.benchmark(group="optimal 10-step grid, cifar10")
@pytest.mark.parametrize("method, schedule_name, free_start", [
    ("euler", "vp", False), ("euler", "cond_ot", False), ("heun", "vp", False), ("heun", "cond_ot", False),
    ("dpmpp_2m", "vp", False), ("unipc", "cond_ot", False), ("edm_heun", "vp", False), ("dpmpp_2m", "vp", True)])
def test_optimal_grid_cifar10(benchmark, method, schedule_name, free_start, monkeypatch):
    target, schedule = get_target("cifar10"), get_schedule(schedule_name)
    ends = (0.0, 1.0 - 1e-3) if method == "heun" else None

    def optimise():
        monkeypatch.setattr(optimiser, "_CACHE", {})  # each round computes it afresh
        return optimal_grid(target, schedule, method, 10, ends=ends, free_start=free_start)

    found = benchmark.pedantic(optimise, rounds=2)
    objective = GridObjective(target, schedule, method)
    evaluation = _one_evaluation(objective, found.grid)
    benchmark.extra_info.update(d=target.dim, steps=10, free_start=free_start, w2_uniform=found.initial_value,
                                w2_optimal=found.value,
                                iterations=found.iterations, evaluations_best_run=found.evaluations,
                                converged=found.converged, one_evaluation_s=evaluation,
                                evaluations_equivalent=benchmark.stats.stats.median / evaluation,
                                threads=torch.get_num_threads())
