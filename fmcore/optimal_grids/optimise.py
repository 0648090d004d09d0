r"""The grid that minimises a sampler's exact error: L-BFGS-B on the increment logits, exact gradients by autograd.

The objective is :math:`\log E(\text{grid}(\theta))` for the :class:`~.objective.GridObjective` E (a monotone
transform: the same minimiser, gradients on a relative scale) over :class:`~.parameterisation.MonotoneGrid` θ,
whose ends are those of the method's own default grid (where it and its diffusion start; the data end), or with the
start free (``free_start``: anywhere from that earliest start on, as EDM-style grids choose their σ_max). SciPy's
L-BFGS-B is run from the method's default grid and two warps of it (:data:`START_WARPS`; or from ``initial``) with
the gradient from autograd, within :data:`LOGIT_BOUND` (and a free start within its interval), and each run stops at
the first of: every component of the projected gradient of log E in θ at most ``gradient_tolerance`` (scipy's
``gtol``); a decrease of log E by at most
:data:`DECREASE_TOLERANCE` (relative to max(|log E|, 1)) over one iteration (``ftol``: E then moves by a few parts in
10¹² at most); a line search that finds no decrease, with the gradient at the round-off level
(:data:`ROUND_OFF_GRADIENT`); ``max_iterations``. The best of
the runs is kept, with what happened in it recorded on the result. The computation is deterministic, so a grid is
reproduced from its arguments; :func:`optimal_grid` keeps each result in memory, keyed by the method and its
options, the steps, the schedule, the target's fingerprint, the start, the metric, the diffusion and the ends.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy
import scipy.optimize
import torch
from torch import Tensor

from .._checks import check_int, check_number
from ..schedules import Schedule
from ..solvers.diffusions import Diffusion
from ..targets import GaussianMixture
from .objective import GridObjective
from .parameterisation import LATEST_START, MonotoneGrid

__all__ = ["OptimalGrid", "optimal_grid"]

F64 = torch.float64


@dataclass(frozen=True)
class OptimalGrid:
    """An optimised grid and how the optimiser got there."""

    grid: Tensor
    """The optimal grid, float64, ``steps + 1`` times (its ends are the method's default grid's, or the given
    ``ends``; with a free start, its first time is the optimiser's)."""
    value: float
    """The metric on it."""
    initial_value: float
    """The metric on the method's default grid between the same ends (on ``initial``, where it was given)."""
    metric: str
    iterations: int
    evaluations: int
    gradient_norm: float
    """Largest component of the projected gradient of log(metric) in the parameters at the end (the stopping rule's
    quantity: a component that pushes a parameter against its bound, :data:`LOGIT_BOUND` or a free start's earliest or
    latest time, counts 0)."""
    converged: bool
    """The gradient test or the relative-decrease test stopped it, or its line search found no decrease with the
    gradient at :data:`ROUND_OFF_GRADIENT` or below (not ``max_iterations``)."""
    message: str
    seconds: float
    """Wall time of all the optimiser's runs."""


_CACHE: dict[tuple, OptimalGrid] = {}


def optimal_grid(
    target: GaussianMixture,
    schedule: Schedule,
    method: str,
    steps: int,
    diffusion: Diffusion | None = None,
    start: str = "prior",
    metric: str = "w2",
    initial: Tensor | None = None,
    ends: tuple[float, float] | None = None,
    gradient_tolerance: float = 1e-9,
    max_iterations: int = 1000,
    free_start: bool = False,
    **options: float,
) -> OptimalGrid:
    """The ``steps``-step grid minimising the exact ``metric`` (:data:`~.objective.METRICS`) of ``method`` on the
    Gaussian ``target`` (module docstring for the optimiser and its stopping rule). Results started from the default
    grid are cached in memory; ``initial`` (a grid with the same ends) starts elsewhere and is not cached. ``ends``
    fixes the grid's first and last times instead of the default grid's (to compare with a grid that starts later,
    such as EDM's at σ/α = 80), with the uniform grid between them as the default. ``free_start``: the first time is
    optimised too, from that earliest start up to :data:`~.parameterisation.LATEST_START` of the way to the end (the
    start law is placed there; not for the strong error, whose reference flow moves with the start)."""
    steps = check_int("steps", steps, minimum=1)
    gradient_tolerance = check_number("gradient_tolerance", gradient_tolerance, 0.0, 1.0)
    max_iterations = check_int("max_iterations", max_iterations, minimum=1)
    objective = GridObjective(target, schedule, method, diffusion, start, metric, options)
    if free_start and metric == "strong_error":
        raise ValueError("free_start=True is for the W2 metrics (the strong error's reference, the exact flow from the "
                         "grid's first time, moves with the start)")
    default = objective.default_grid(steps)
    if ends is not None:
        if len(ends) != 2:
            raise ValueError(f"ends must be (first time, last time), got {ends!r}")
        first, last = check_number("ends[0]", ends[0], 0.0, 1.0), check_number("ends[1]", ends[1], 0.0, 1.0)
        default = torch.linspace(first, last, steps + 1, dtype=F64)
    key = (method, tuple(sorted(objective.options.items())), steps, repr(schedule), target.fingerprint(), start,
           metric, repr(diffusion), float(default[0]), float(default[-1]), gradient_tolerance, max_iterations,
           bool(free_start))
    if initial is None and key in _CACHE:
        return _CACHE[key]
    began = time.perf_counter()
    grids = MonotoneGrid(float(default[0]), float(default[-1]), steps, bool(free_start))
    if initial is not None:
        starts = [initial]
    elif free_start:  # from the best grid with the start fixed (found from the three starts): it is no worse
        starts = [optimal_grid(target, schedule, method, steps, diffusion, start, metric, None,
                               (float(default[0]), float(default[-1])), gradient_tolerance, max_iterations,
                               **options).grid]
    else:
        starts = [_warped(default, power) for power in START_WARPS]
    results = [_minimise(objective, grids, grids.parameters(grid), gradient_tolerance, max_iterations)
               for grid in starts]
    best = min(results, key=lambda result: result.value)
    best = dataclasses.replace(best, initial_value=float(objective(default if initial is None else initial)),
                               seconds=time.perf_counter() - began)
    if initial is None:
        _CACHE[key] = best
    return best


START_WARPS = (1.0, 2.0, 0.5)
"""The optimiser starts from the default grid :math:`t_k = t_0 + (t_N - t_0)k/N` and from it warped,
:math:`t_0 + (t_N - t_0)(k/N)^p` — bunched toward the noise end (p = 2) and toward the data end (p = ½) — and keeps
the best of the three: the exact W2 of a few-step grid can have more than one local minimum (heun on vp, 2 steps,
1-D: at t₁ = 0.655 and 0.95), and on a spectrum spread over decades many (heun on the CIFAR-10 Gaussian clusters
steps where its stiff directions need damping, and the optimum found depends on where it starts). With a free start
it starts from the optimum with the start fixed instead (itself the best of the three), so that it is never worse
than that."""

DECREASE_TOLERANCE = 1e-12
"""L-BFGS-B's ``ftol`` (module docstring)."""

ROUND_OFF_GRADIENT = 1e-6
"""A run whose line search finds no decrease at all (L-BFGS-B's "ABNORMAL" stop: log E has reached its float64
round-off floor along the search direction) also counts as converged when every gradient component is at most this:
moving a logit by 0.01 then changes E by about 1e-8 relative. Where the floor lies depends on the CPU's kernels:
heun on vp, 2 steps, 1-D target, stops at the brute-force optimum with the gradient test met under AVX2, and with
this stop at a gradient of 1.5e-8 under ``ATEN_CPU_CAPABILITY=default``."""

LOGIT_BOUND = 12.0
r"""Each logit is kept in [−12, 12] (L-BFGS-B's bounds): no increment falls below :math:`e^{-24}` ≈ 4e-11 of the
largest, so every grid the line search tries is strictly increasing in float64 (an increment the optimiser drives to
0 marks a step it would drop: the grid is then optimal for fewer steps)."""


def _warped(grid: Tensor, power: float) -> Tensor:
    start, end = grid[0], grid[-1]
    warped = start + (end - start) * ((grid - start) / (end - start)) ** power
    warped[-1] = end
    return warped


def _minimise(objective: GridObjective, grids: MonotoneGrid, first: Tensor, gradient_tolerance: float,
              max_iterations: int) -> OptimalGrid:
    """One L-BFGS-B run from the parameters ``first``."""
    began = time.perf_counter()

    def log_metric_and_gradient(parameters: numpy.ndarray) -> tuple[float, numpy.ndarray]:
        theta = torch.tensor(parameters, dtype=F64, requires_grad=True)
        value = torch.log(objective(grids.grid(theta)))
        (gradient,) = torch.autograd.grad(value, theta)
        return float(value.detach()), gradient.numpy()

    bounds = numpy.array([(0.0, LATEST_START)] * int(grids.free_start) + [(-LOGIT_BOUND, LOGIT_BOUND)] * grids.steps)
    found = scipy.optimize.minimize(log_metric_and_gradient, numpy.clip(first.numpy(), bounds[:, 0], bounds[:, 1]),
                                    jac=True, method="L-BFGS-B", bounds=bounds,
                                    options={"gtol": gradient_tolerance, "ftol": DECREASE_TOLERANCE,
                                             "maxiter": max_iterations})
    grid = grids.grid(torch.tensor(found.x, dtype=F64)).detach()
    _, gradient = log_metric_and_gradient(found.x)
    pushed_out = ((found.x <= bounds[:, 0]) & (gradient > 0)) | ((found.x >= bounds[:, 1]) & (gradient < 0))
    gradient_norm = float(numpy.abs(numpy.where(pushed_out, 0.0, gradient)).max())
    at_round_off = str(found.message).startswith("ABNORMAL") and gradient_norm <= ROUND_OFF_GRADIENT
    return OptimalGrid(grid, float(objective(grid)), float(objective(grids.grid(first))), objective.metric,
                       int(found.nit), int(found.nfev), gradient_norm, bool(found.success) or at_round_off,
                       str(found.message), time.perf_counter() - began)
