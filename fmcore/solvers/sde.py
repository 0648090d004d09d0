"""Euler–Maruyama for the reverse-time SDE with any diffusion schedule."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .diffusions import Diffusion
from .errors import SolverDivergenceError
from .laws import EulerMaruyamaLaw, NoiseProbe
from .methods import Method, register_method
from .runge_kutta import is_finite


def brownian_increment(shape: torch.Size, generator: torch.Generator | NoiseProbe, like: Tensor) -> Tensor:
    """Standard normal noise drawn on the CPU in float64, then cast and moved (identical on every device); the probe's
    designed increments when the exact law is being probed (:class:`~fmcore.solvers.laws.NoiseProbe`)."""
    if isinstance(generator, NoiseProbe):
        return generator.draw(shape, like)
    return torch.randn(shape, dtype=torch.float64, generator=generator).to(dtype=like.dtype, device=like.device)


def integrate_euler_maruyama(
    field, x0: Tensor, grid: Tensor, diffusion: Diffusion, schedule, generator: torch.Generator,
    return_trajectory: bool = False,
) -> tuple[Tensor, Tensor | None, dict]:
    r""":math:`x_{i+1} = x_i + \big[u(t_i, x_i) + \tfrac12 g_{t_i}^2 s(t_i, x_i)\big]h_i + g_{t_i}\sqrt{h_i}\,\xi_i`.

    One NFE per step (velocity and score come from one evaluation when the field offers
    ``velocity_and_score``). Where :math:`g_{t_i} = 0` the score is not evaluated, so the step is exactly
    Euler's. Noise is drawn at every step whatever g is, so every diffusion schedule with the same seed sees
    the same Brownian increments (common random numbers).
    """
    times = grid.tolist()
    x = x0
    trajectory = [x0] if return_trajectory else None
    for step, (t, t_next) in enumerate(zip(times[:-1], times[1:], strict=True)):
        h = t_next - t
        noise = brownian_increment(x.shape, generator, x)
        g = float(diffusion(schedule(t)))
        if g == 0.0:
            x = torch.add(x, field(t, x), alpha=h)  # exactly the Euler step of integrate_explicit_rk
        else:
            velocity, score = field.velocity_and_score(t, x)
            drift = torch.add(velocity, score, alpha=0.5 * g * g)
            x = torch.add(torch.add(x, drift, alpha=h), noise, alpha=g * math.sqrt(h))
        if not is_finite(x):
            raise SolverDivergenceError(f"euler_maruyama[{diffusion!r}]", step, t_next, t_start=t)
        if trajectory is not None:
            trajectory.append(x)
    return x, (torch.stack(trajectory) if trajectory is not None else None), {}


register_method(Method(
    "euler_maruyama",
    lambda r: integrate_euler_maruyama(r.field, r.x0, r.grid, r.diffusion, r.schedule, r.generator, r.return_trajectory),
    stages=1, diffusion=True, random=True, predictions=("velocity", "score"), needs_schedule=True, order=1,
    family="reverse SDE", exact_law=EulerMaruyamaLaw(),
))
