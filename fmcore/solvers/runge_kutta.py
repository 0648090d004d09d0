"""One explicit Runge–Kutta engine for every fixed-step method, driven by a Butcher tableau, on any grid."""

from __future__ import annotations

import torch
from torch import Tensor

from .errors import SolverDivergenceError
from .tableaus import ButcherTableau


def integrate_explicit_rk(
    field, x0: Tensor, grid: Tensor, tableau: ButcherTableau, return_trajectory: bool = False
) -> tuple[Tensor, Tensor | None, dict]:
    r"""Integrate :math:`\dot x = f(t, x)` along ``grid`` (increasing or decreasing) with ``tableau``.

    Each step costs ``tableau.stages`` field calls. Zero coefficients are skipped, so e.g. the
    midpoint rule never adds :math:`0\cdot k_1`. After every step the state is checked for NaN/inf.
    """
    times = grid.tolist()
    x = x0
    trajectory = [x0] if return_trajectory else None
    for step, (t, t_next) in enumerate(zip(times[:-1], times[1:], strict=True)):
        h = t_next - t
        stages: list[Tensor] = []
        for c_i, a_i in zip(tableau.c, tableau.a, strict=True):
            x_stage = x
            for a_ij, k_j in zip(a_i, stages, strict=False):
                if a_ij != 0.0:
                    x_stage = torch.add(x_stage, k_j, alpha=h * a_ij)  # fused x + (h a_ij) k_j
            stages.append(field(t_next if c_i == 1.0 else t + c_i * h, x_stage))
        x = _weighted_step(x, h, tableau.b, stages)
        if not is_finite(x):
            raise SolverDivergenceError(tableau.name, step, t_next, t_start=t)
        if trajectory is not None:
            trajectory.append(x)
    return x, (torch.stack(trajectory) if trajectory is not None else None), {}


def _weighted_step(x: Tensor, h: float, weights: tuple[float, ...], stages: list[Tensor]) -> Tensor:
    """:math:`x + h\\sum_i b_i k_i`, skipping zero weights; a single-stage step is exactly ``x + h k``."""
    nonzero = [(b_i, k_i) for b_i, k_i in zip(weights, stages, strict=True) if b_i != 0.0]
    if len(nonzero) == 1 and nonzero[0][0] == 1.0:
        return torch.add(x, nonzero[0][1], alpha=h)
    increment = nonzero[0][0] * nonzero[0][1]
    for b_i, k_i in nonzero[1:]:
        increment = torch.add(increment, k_i, alpha=b_i)
    return torch.add(x, increment, alpha=h)


def is_finite(x: Tensor) -> bool:
    """True when every entry is finite: one reduction (a NaN or inf makes the sum non-finite), confirmed
    entry by entry only when the sum is not finite (it can also overflow on large but finite entries)."""
    if bool(torch.isfinite(x.sum())):
        return True
    return bool(torch.isfinite(x).all())
