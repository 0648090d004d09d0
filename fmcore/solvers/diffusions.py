r"""Diffusion ("σ") schedules :math:`g_t` for the reverse-time SDE (``docs/design.md``, "Samplers").

.. math:: dX = \big[u_t(X) + \tfrac12 g_t^2\, s_t(X)\big]\,dt + g_t\, dW,\qquad t: 0 \to 1 .

Every :math:`g` gives the same marginals :math:`p_t` (seed 003); the discretisation error differs.
Adding one is one class with ``@register_diffusion("name")``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from .._checks import check_positive
from .._registry import Registry
from ..schedules import Schedule, ScheduleValues

__all__ = ["Diffusion", "get_diffusion", "register_diffusion", "DIFFUSIONS"]

DIFFUSIONS = Registry("diffusion")
register_diffusion = DIFFUSIONS.register


def get_diffusion(name: str, **params: float) -> Diffusion:
    """``get_diffusion("constant", c=0.5)``, ``get_diffusion("forward", eta=1.0)``, ..."""
    return DIFFUSIONS.build(name, **params)


class Diffusion(ABC):
    name: str = "diffusion"

    @abstractmethod
    def __call__(self, values: ScheduleValues) -> Tensor:
        """:math:`g_t` from the schedule's values at t."""

    def start_time(self, schedule: Schedule) -> float:
        """The earliest t where :math:`g_t` is finite on ``schedule`` (0 unless the diffusion is singular there)."""
        return 0.0

    @property
    def params(self) -> dict[str, float]:
        return {}

    def __repr__(self) -> str:
        return f"{self.name}(" + ", ".join(f"{key}={value!r}" for key, value in self.params.items()) + ")"


@register_diffusion("zero")
class Zero(Diffusion):
    """:math:`g = 0`: the probability-flow ODE, integrated by Euler–Maruyama (= Euler)."""

    def __call__(self, values: ScheduleValues) -> Tensor:
        return torch.zeros_like(values.alpha)


@register_diffusion("constant")
class Constant(Diffusion):
    """:math:`g_t = c`."""

    def __init__(self, c: float = 1.0):
        self.c = check_positive("c", c, allow_zero=True)

    @property
    def params(self) -> dict[str, float]:
        return {"c": self.c}

    def __call__(self, values: ScheduleValues) -> Tensor:
        return torch.full_like(values.alpha, self.c)


@register_diffusion("proportional")
class Proportional(Diffusion):
    """:math:`g_t = c\\,\\sigma_t^p` (``power`` p = 1 by default): noise in proportion to the noise level.
    Seed 000's sampler uses :math:`g^2 = \\sigma_t`, i.e. c = 1, p = ½."""

    def __init__(self, c: float = 1.0, power: float = 1.0):
        self.c = check_positive("c", c, allow_zero=True)
        self.power = check_positive("power", power)

    @property
    def params(self) -> dict[str, float]:
        return {"c": self.c} if self.power == 1.0 else {"c": self.c, "power": self.power}

    def __call__(self, values: ScheduleValues) -> Tensor:
        return self.c * values.sigma**self.power


@register_diffusion("forward")
class Forward(Diffusion):
    r""":math:`g_t^2 = \eta^2\,(2\sigma_t^2\dot\alpha_t/\alpha_t - 2\sigma_t\dot\sigma_t)`: η times the diffusion of the
    noising SDE that generates the path (η = 1 the classic reverse SDE, η = 0 the probability-flow ODE;
    seed 000's α). Singular where :math:`\alpha_t = 0`: there it starts at ``t_eps``.
    """

    def __init__(self, eta: float = 1.0, t_eps: float = 1e-3):
        self.eta = check_positive("eta", eta, allow_zero=True)
        self.t_eps = check_positive("t_eps", t_eps)
        if self.t_eps >= 1:
            raise ValueError(f"t_eps must lie in (0, 1), got {t_eps}")

    @property
    def params(self) -> dict[str, float]:
        return {"eta": self.eta, "t_eps": self.t_eps}

    def __call__(self, values: ScheduleValues) -> Tensor:
        if self.eta == 0:
            return torch.zeros_like(values.alpha)
        squared = 2 * values.sigma**2 * values.d_alpha / values.alpha - 2 * values.sigma_d_sigma
        return self.eta * torch.sqrt(squared.clamp_min(0.0))

    def start_time(self, schedule: Schedule) -> float:
        singular_at_zero = self.eta > 0 and float(schedule(0.0).alpha) == 0
        return self.t_eps if singular_at_zero else 0.0
