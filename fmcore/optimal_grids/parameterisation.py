r"""Strictly increasing grids, parameterised by the logits of their increments (and, where the start is free, by where
the grid starts).

A grid :math:`t_0 < t_1 < \dots < t_N` ending at :math:`t_N` is given by the logits :math:`\theta \in \mathbb{R}^N` of
its increments,

.. math::
    \Delta_k = (t_N - t_0)\,\operatorname{softmax}(\theta)_k, \qquad t_k = t_0 + \sum_{i<k}\Delta_i ,

so every θ is a valid grid, θ and θ + c are the same grid, and the map is smooth: a function of the grid that is
differentiable in the times is differentiable in θ. Its start is fixed, or free: :math:`t_0 = s + (t_N - s)v` for
the earliest start s and :math:`v \in [0, v_{max}]` (:data:`LATEST_START`), a box constraint the optimiser keeps
(L-BFGS-B), so that the start can sit exactly at its earliest with a gradient that still says whether to move it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import check_int, check_number

F64 = torch.float64

LATEST_START = 0.99
"""A free start lies in the first 99 % of the interval from its earliest time to the end."""


@dataclass(frozen=True)
class MonotoneGrid:
    """Grids of ``steps`` intervals from ``start`` to ``end`` as functions of a parameter vector: the ``steps``
    increment logits, preceded by the start's position v (module docstring) when ``free_start``."""

    start: float
    end: float
    steps: int
    free_start: bool = False

    def __post_init__(self):
        check_int("steps", self.steps, minimum=1)
        check_number("start", self.start, 0.0, 1.0)
        check_number("end", self.end, 0.0, 1.0)
        if not self.start < self.end:
            raise ValueError(f"a grid needs start < end, got start={self.start}, end={self.end}")

    @property
    def size(self) -> int:
        """The number of parameters."""
        return self.steps + int(self.free_start)

    def first_time(self, parameters: Tensor) -> Tensor | float:
        """The grid's first time: ``start``, or :math:`s + (t_N - s)v` when it is free."""
        if not self.free_start:
            return self.start
        return self.start + (self.end - self.start) * parameters[0].to(F64)

    def grid(self, parameters: Tensor) -> Tensor:
        """The grid of ``parameters`` (shape ``(size,)``), float64, differentiable in them; its end is exact, and its
        start too where it is fixed."""
        if parameters.shape != (self.size,):
            raise ValueError(f"parameters must have shape ({self.size},), got {tuple(parameters.shape)}")
        first = self.first_time(parameters)
        logits = parameters[int(self.free_start):]
        increments = torch.softmax(logits.to(F64), 0) * (self.end - first)
        interior = first + torch.cumsum(increments, 0)[:-1]
        return torch.cat([torch.as_tensor(first, dtype=F64).reshape(1), interior, torch.tensor([self.end], dtype=F64)])

    def parameters(self, grid: Tensor) -> Tensor:
        """The parameters of ``grid``: ``grid(parameters(g))`` is ``g`` to round-off. The logits are centred (their
        largest and smallest sum to 0), so a grid an optimiser found within bounds on its logits maps back within
        them."""
        grid = torch.as_tensor(grid, dtype=F64)
        if grid.shape != (self.steps + 1,):
            raise ValueError(f"grid must have {self.steps + 1} times, got shape {tuple(grid.shape)}")
        first = float(grid[0])
        if abs(float(grid[-1]) - self.end) > 1e-12 or (not self.free_start and abs(first - self.start) > 1e-12):
            raise ValueError(f"grid must run from {self.start} to {self.end}, got {first} … {float(grid[-1])}")
        increments = grid[1:] - grid[:-1]
        if not bool((increments > 0).all()):
            raise ValueError("grid must be strictly increasing")
        logits = torch.log(increments)
        logits = logits - 0.5 * (logits.max() + logits.min())  # centred: within ±12 whenever its spread is ≤ 24
        if not self.free_start:
            return logits
        position = (first - self.start) / (self.end - self.start)
        if not -1e-12 <= position <= LATEST_START + 1e-12:
            raise ValueError(f"a free start must lie in [{self.start}, {self.start + LATEST_START * (self.end - self.start)}]"
                             f", got {first}")
        return torch.cat([torch.tensor([min(max(position, 0.0), LATEST_START)], dtype=F64), logits])
