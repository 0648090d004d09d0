r"""A sampler's exact error on a Gaussian target as a differentiable function of its time grid.

On a Gaussian target a linear sampler maps its start and its Gaussian increments affinely, per eigendirection j:
:math:`z_N = P_jz_0 + Q_j + (\text{noise of variance } W_j)` (``fmcore/solvers/laws.py``). For a one-step method
P, Q, W are products and sums of its steps' affine maps, whose coefficients are smooth in the grid times; a method
whose law is written in tensors of the times (``LawRecursion.differentiable``: every Runge–Kutta tableau,
Euler–Maruyama with any diffusion, DDIM with any η, EDM's Heun with any churn, DPM-Solver++(2M), UniPC) gives the
exact error as a float64 function that autograd differentiates. With the start :math:`z_0 \sim N(m_0, v_0)` and the
target :math:`N(m, \lambda)` in its eigenbasis:

.. math::
    W_2^2 = \sum_j (P_jm_{0,j} + Q_j - m_j)^2 + \big(\sqrt{v_{0,j}P_j^2 + W_j} - \sqrt{\lambda_j}\big)^2 ,

    E\|\hat x - x^*\|^2 = \sum_j \big((P_j - P^*_j)m_{0,j} + Q_j - Q^*_j\big)^2 + v_{0,j}(P_j - P^*_j)^2

(the second for ODE methods, against the exact flow map :math:`z^* = P^*z_0 + Q^*` from the grid's first time to the
data). These are :meth:`fmcore.exact.ExactLaw.w2_to_target` and
:meth:`~fmcore.exact.ExactLaw.strong_error`, here kept as tensors (the same
:func:`~fmcore.targets.spectral.squared_w2` and :func:`~fmcore.exact.mean_square_between_maps`); ``w2_marginal``
is the first with the path's marginal at the grid's last time, :math:`N(\alpha m, \alpha^2\lambda + \sigma^2)`, for
the target. The start law is differentiable in the grid's first time (a free start); the last time, and the exact
flow map of the strong error, are taken at the grid's ends and not differentiated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .._checks import check_choice, check_instance
from ..exact import STARTS, mean_square_between_maps, start_law
from ..grids import check_grid
from ..schedules import Schedule
from ..solvers.diffusions import Diffusion
from ..solvers.laws import GaussianProblem, LawRequest, propagate_distinct
from ..solvers.methods import METHODS, get_method
from ..solvers.sampling import method_grid, method_options
from ..targets import GaussianMixture
from ..targets.spectral import squared_w2

__all__ = ["GridObjective", "METRICS", "methods_differentiable_in_grid"]

F64 = torch.float64

METRICS = ("w2", "w2_marginal", "strong_error")
"""``w2``: exact W2 of the output law to the data; ``w2_marginal``: to the path's exact marginal at the grid's last
time (the same on a grid that ends at t = 1; on one that stops earlier, the sampler's own error without the stop's, which
an optimiser of ``w2`` may otherwise cancel against); ``strong_error``: exact RMS distance to the exact flow map of
the same start (ODE methods)."""


def methods_differentiable_in_grid() -> list[str]:
    """The methods whose exact law is a differentiable function of the grid (``LawRecursion.differentiable``)."""
    return sorted(name for name, method in METHODS.items()
                  if method.exact_law is not None and method.exact_law.differentiable)


@dataclass(frozen=True)
class GridObjective:
    """``objective(grid)``: the exact ``metric`` of ``method``'s output on the Gaussian ``target`` run on ``grid``, a
    0-d float64 tensor differentiable in the grid's times. Arguments as :func:`fmcore.exact.exact_output_law`'s."""

    target: GaussianMixture
    schedule: Schedule
    method: str
    diffusion: Diffusion | None = None
    start: str = "prior"
    metric: str = "w2"
    options: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self):
        check_instance("target", self.target, GaussianMixture, "a Gaussian target: get_target('gaussian')")
        check_instance("schedule", self.schedule, Schedule, "see fmcore.schedules.get_schedule")
        check_choice("start", self.start, STARTS)
        check_choice("metric", self.metric, METRICS)
        if self.target.num_components != 1:
            raise ValueError(f"the exact law is for Gaussian targets (K = 1); this mixture has K = "
                             f"{self.target.num_components}")
        spec = get_method(self.method)
        if spec.exact_law is None or not spec.exact_law.differentiable:
            raise ValueError(f"method {self.method!r} has no exact law that is differentiable in its grid (its law is "
                             f"probed from its own code, or it has none); methods with one: "
                             f"{methods_differentiable_in_grid()}")
        options = method_options(spec, dict(self.options))
        method_grid(spec, self.schedule, 1, None, self.diffusion)  # the diffusion's checks, as sample() makes them
        if self.metric == "strong_error" and (self.diffusion is not None or spec.draws_noise(options)):
            raise ValueError(f"metric 'strong_error' is for ODE methods; {self.method!r} with these options injects "
                             "noise: use metric='w2'")
        component = self.target.component(0)
        object.__setattr__(self, "options", options)
        object.__setattr__(self, "_component", component)
        object.__setattr__(self, "_problem", GaussianProblem(component.variances, component.eigen_mean, self.schedule))

    def default_grid(self, steps: int) -> Tensor:
        """The grid ``sample`` gives the method for ``steps`` (uniform from where the method and its diffusion start)."""
        return method_grid(get_method(self.method), self.schedule, steps, None, self.diffusion)

    def __call__(self, grid: Tensor) -> Tensor:
        """The metric on ``grid`` (1-D float64, increasing; it may require grad)."""
        check_instance("grid", grid, Tensor, "a 1-D float64 tensor of increasing times")
        if grid.dtype != F64:
            raise ValueError(f"grid must be a float64 tensor (the law is computed in float64), got {grid.dtype}")
        check_grid(grid.detach())
        problem = self._problem
        law = propagate_distinct(get_method(self.method).exact_law, problem,
                                 LawRequest(self.method, grid, self.diffusion, self.options), on_grid=True)
        start_mean, start_variance = start_law(self.start, problem, grid[0])  # differentiable in a free start
        if self.metric in ("w2", "w2_marginal"):
            target = self._component
            if self.metric == "w2_marginal":  # at the grid's last time, which is fixed
                end = self.schedule(float(grid[-1].detach()))
                target = target.marginal(float(end.alpha), float(end.sigma))
            value = squared_w2(law.P * start_mean + law.Q, _output_std(law.P, law.W, start_variance),
                               target.eigen_mean, target.variances.sqrt()).sqrt()
        else:
            start, end = self.schedule(float(grid[0].detach())), self.schedule(1.0)
            exact_gain, exact_offset = self._component.flow_map((float(start.alpha), float(start.sigma)),
                                                                (float(end.alpha), float(end.sigma)))
            value = mean_square_between_maps(law.P, law.Q, exact_gain, exact_offset, start_mean, start_variance).sqrt()
        if not math.isfinite(float(value.detach())):
            raise ValueError(f"the exact {self.metric} of {self.method!r} is not finite on this grid (its law "
                             "overflowed, or the field is singular at one of its times)")
        return value


def _output_std(gain: Tensor, noise_variance: Tensor, start_variance: Tensor) -> Tensor:
    r"""The output's standard deviation per eigendirection, :math:`\sqrt{v_0P^2 + W}`; for an ODE method (W = 0)
    :math:`\sqrt{v_0}\,|P|`, whose gradient is finite where P = 0 (a step that maps a zero-variance direction of the
    target exactly onto its point mass, as Euler's last step does on ``cond_ot``)."""
    if not bool(noise_variance.detach().any()):
        return start_variance.sqrt() * gain.abs()
    return (start_variance * gain**2 + noise_variance).sqrt()
