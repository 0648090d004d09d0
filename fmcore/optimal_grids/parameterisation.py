r"""Strictly increasing grids with fixed ends, parameterised without constraints.

A grid :math:`t_0 < t_1 < \dots < t_N` with its ends fixed is given by the logits :math:`\theta \in \mathbb{R}^N` of its
increments,

.. math::
    \Delta_k = (t_N - t_0)\,\operatorname{softmax}(\theta)_k, \qquad t_k = t_0 + \sum_{i<k}\Delta_i ,

so every θ is a valid grid, θ and θ + c are the same grid, and the map is smooth: a function of the grid that is
differentiable in the times is differentiable in θ, with no constraint for the optimiser to keep.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import check_int, check_number

F64 = torch.float64


@dataclass(frozen=True)
class MonotoneGrid:
    """Grids of ``steps`` intervals from ``start`` to ``end`` (both fixed), as functions of increment logits."""

    start: float
    end: float
    steps: int

    def __post_init__(self):
        check_int("steps", self.steps, minimum=1)
        check_number("start", self.start, 0.0, 1.0)
        check_number("end", self.end, 0.0, 1.0)
        if not self.start < self.end:
            raise ValueError(f"a grid needs start < end, got start={self.start}, end={self.end}")

    def grid(self, logits: Tensor) -> Tensor:
        """The grid of ``logits`` (shape ``(steps,)``), float64, differentiable in them; its ends are exact."""
        if logits.shape != (self.steps,):
            raise ValueError(f"logits must have shape ({self.steps},), got {tuple(logits.shape)}")
        increments = torch.softmax(logits.to(F64), 0) * (self.end - self.start)
        interior = self.start + torch.cumsum(increments, 0)[:-1]
        ends = torch.tensor([self.start, self.end], dtype=F64)
        return torch.cat([ends[:1], interior, ends[1:]])

    def logits(self, grid: Tensor) -> Tensor:
        """The logits of ``grid`` (its increments' logarithms): ``grid(logits(g))`` is ``g`` to round-off."""
        grid = torch.as_tensor(grid, dtype=F64)
        if grid.shape != (self.steps + 1,):
            raise ValueError(f"grid must have {self.steps + 1} times, got shape {tuple(grid.shape)}")
        if abs(float(grid[0]) - self.start) > 1e-12 or abs(float(grid[-1]) - self.end) > 1e-12:
            raise ValueError(f"grid must run from {self.start} to {self.end}, got {float(grid[0])} … {float(grid[-1])}")
        increments = grid[1:] - grid[:-1]
        if not bool((increments > 0).all()):
            raise ValueError("grid must be strictly increasing")
        return torch.log(increments / increments.sum())
