r"""Seed 000's SDE sampler, as written, with time reversed to our convention (t = 0 noise, t = 1 data).

The seed trains ``model(t_s, x)`` on :math:`x = (1 - t_s)x_1 + (0.001 + 0.999t_s)\varepsilon` with target
:math:`0.999\varepsilon - x_1`: in our time :math:`t = 1 - t_s` that is ``cond_ot(sigma_min=0.001)`` and its
velocity is :math:`-u_t`. Its sampler, for ``i, t_s in enumerate(linspace(1, 0, N))`` with ``dt = 1/N``:

.. code-block:: text

    v     = model(t_s, x)                                  # = −u(1 − t_s, x)
    score = (α v − α̇ x) / ((σ + 1e-6)(α̇ σ − α σ̇ + 1e-6))   # α = 1 − t_s, σ = 0.001 + 0.999 t_s
    dx    = v dt − ½ σ score dt + √(σ dt) ξ
    x     = x − dx

which is Euler–Maruyama for the reverse SDE with :math:`g^2 = \sigma_t` (``proportional(c=1, power=0.5)``) —
except that it evaluates the model at N times spaced 1/(N − 1) while advancing the state by 1/N per step
(a time warp of relative size 1/N), and the two 1e-6 regularisers. Reproduced verbatim here (constants
included, so it is only meaningful for fields on ``cond_ot(sigma_min=0.001)``) to measure it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..solvers.errors import SolverDivergenceError
from ..solvers.laws import AffineLaw, GaussianProblem, LawRecursion, LawRequest
from ..solvers.methods import Method, register_method
from ..solvers.runge_kutta import is_finite
from ..solvers.sde import brownian_increment


def integrate_seed000_sde(field, x0: Tensor, steps: int, generator: torch.Generator, return_trajectory: bool = False):
    dt = 1.0 / steps
    seed_times = torch.linspace(1, 0, steps, dtype=torch.float64).tolist()
    x = x0
    trajectory = [x0] if return_trajectory else None
    for i, t_seed in enumerate(seed_times):
        noise = brownian_increment(x.shape, generator, x)
        velocity = -field(1.0 - t_seed, x)
        alpha, d_alpha = 1.0 - t_seed, -1.0
        sigma, d_sigma = 0.001 + 0.999 * t_seed, 0.999
        score = 1 / (sigma + 1e-6) * (alpha * velocity - d_alpha * x) / (d_alpha * sigma - alpha * d_sigma + 1e-6)
        dx = velocity * dt
        dx = dx + -1 / 2 * sigma * score * dt
        dx = dx + math.sqrt(sigma * dt) * noise
        x = x - dx
        if not is_finite(x):
            raise SolverDivergenceError("seed000_sde", i, 1.0 - t_seed)
        if trajectory is not None:
            trajectory.append(x)
    evaluated = torch.tensor([1.0 - t for t in seed_times], dtype=torch.float64)
    return x, (torch.stack(trajectory) if trajectory is not None else None), {"model_times": evaluated}


class Seed000Law(LawRecursion):
    """The sampler's law per eigendirection, step for step as :func:`integrate_seed000_sde` runs: model times
    ``1 − linspace(1, 0, N)``, state steps of 1/N, its own score formula with its 1e-6 regularisers and constants."""

    def propagate(self, problem: GaussianProblem, request: LawRequest) -> AffineLaw:
        dt = 1.0 / request.steps
        state = AffineLaw.identity(problem.dim)
        for t_seed in torch.linspace(1, 0, request.steps, dtype=torch.float64).tolist():
            gain, shift, _, _ = problem.coefficients(1.0 - t_seed)
            velocity_gain, velocity_shift = -gain, -shift  # the seed's model predicts −u
            alpha, sigma = 1.0 - t_seed, 0.001 + 0.999 * t_seed
            kappa = 1.0 / ((sigma + 1e-6) * (-sigma - alpha * 0.999 + 1e-6))  # score = κ(α v + x)
            score_gain, score_shift = kappa * (alpha * velocity_gain + 1.0), kappa * alpha * velocity_shift
            increment_gain = (velocity_gain - 0.5 * sigma * score_gain) * dt
            increment_shift = (velocity_shift - 0.5 * sigma * score_shift) * dt
            state = state.then(1.0 - increment_gain, -increment_shift, sigma * dt)
        return state


register_method(Method(
    "seed000_sde",
    lambda r: integrate_seed000_sde(r.field, r.x0, len(r.grid) - 1, r.generator, r.return_trajectory),
    stepping="own_grid", stages=1, random=True, order=1, family="reproduction (seed 000)", exact_law=Seed000Law(),
))
