r"""Exact log-likelihood by the augmented probability-flow ODE (instantaneous change of variables).

With :math:`\dot x = u_t(x)` and :math:`\dot\Delta = \nabla\cdot u_t(x)`, integrated from
:math:`t = 1` (the data point, :math:`\Delta = 0`) to :math:`t = 0`,

.. math:: \log p_1(x_1) = \log p_0(x(0)) + \Delta(0),

with the prior :math:`p_0 = N(0, \sigma_0^2 I)` (``schedule.prior_std``). The divergence is ``exact``
(the field's closed form, else autograd, one backward pass per dimension) or ``hutchinson``
(:math:`E[\varepsilon^\top J\varepsilon]` over ``probes`` Rademacher vectors, fixed for the whole solve).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def autograd_divergence(field, t, x: Tensor) -> tuple[Tensor, Tensor]:
    """Velocity and :math:`\\operatorname{tr} \\partial u/\\partial x` by d backward passes (exact; for small d)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        velocity = field(t, x)
        trace = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        if not velocity.requires_grad:  # the velocity does not depend on x (e.g. u ≡ 0): its divergence is 0
            return velocity.detach(), trace
        for i in range(x.shape[1]):
            gradient = torch.autograd.grad(velocity[:, i].sum(), x, retain_graph=i < x.shape[1] - 1, allow_unused=True)[0]
            if gradient is not None:
                trace = trace + gradient[:, i]
    return velocity.detach(), trace


def hutchinson_divergence(field, t, x: Tensor, probes: Tensor) -> tuple[Tensor, Tensor]:
    """Velocity and the Hutchinson trace :math:`\\frac1k\\sum_j \\varepsilon_j^\\top (\\partial u/\\partial x)\\,\\varepsilon_j`
    (k vector-Jacobian products)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        velocity = field(t, x)
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        if not velocity.requires_grad:  # constant in x: every probe sees a zero Jacobian
            return velocity.detach(), total
        for j in range(probes.shape[0]):
            vjp = torch.autograd.grad(velocity, x, probes[j], retain_graph=j < probes.shape[0] - 1, allow_unused=True)[0]
            if vjp is not None:
                total = total + (vjp * probes[j]).sum(-1)
    return velocity.detach(), total / probes.shape[0]


class AugmentedDynamics:
    """The right-hand side :math:`(u_t(x), \\nabla\\cdot u_t(x))` on the state ``[x | Δ]`` of shape ``(n, d + 1)``."""

    def __init__(self, field, divergence: str, probes: Tensor | None = None):
        self.field = field
        self.divergence = divergence
        self.probes = probes
        self.closed_form = callable(getattr(field, "divergence", None))
        self.joint = getattr(field, "velocity_and_divergence", None)

    @property
    def dim(self) -> int:
        return self.field.dim + 1

    def __call__(self, t, state: Tensor) -> Tensor:
        x = state[:, :-1]
        if self.divergence == "hutchinson":
            velocity, trace = hutchinson_divergence(self.field, t, x, self.probes)
        elif self.joint is not None:
            velocity, trace = self.joint(t, x)  # one evaluation of the closed forms for both
        elif self.closed_form:
            velocity, trace = self.field(t, x), self.field.divergence(t, x)
        else:
            velocity, trace = autograd_divergence(self.field, t, x)
        return torch.cat([velocity, trace.detach().unsqueeze(1)], dim=1)


def gaussian_prior_log_prob(x: Tensor, std: float) -> Tensor:
    """:math:`\\log N(x; 0, \\mathrm{std}^2 I)`, ``(n,)``."""
    d = x.shape[1]
    return -0.5 * (x**2).sum(1) / std**2 - d * math.log(std) - 0.5 * d * math.log(2 * math.pi)
