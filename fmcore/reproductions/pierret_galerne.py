r"""Pierret & Galerne's two reverse-SDE schemes, as their code computes them: ``pg_ei`` and ``pg_ddpm``.

E. Pierret and B. Galerne, "Diffusion models for Gaussian distributions: Exact solutions and Wasserstein errors",
ICML 2025 (arXiv 2405.14250), study the VP SDE :math:`dx = -\beta_\tau x\,d\tau + \sqrt{2\beta_\tau}\,dW` in diffusion
time τ (data at τ = 0). In this suite's time t = 1 − τ the same path is ``vp`` (α_t = e^{-B(1-t)},
:math:`B(\tau) = \int_0^\tau\beta`) and :math:`\beta = \dot\alpha_t/\alpha_t`. Their reverse SDE is
:math:`dy = \beta(y + 2\nabla\log p)\,dt + \sqrt{2\beta}\,dW`; on a step s → t (h = t − s) with the score
:math:`s_\theta = \nabla\log p_s(y)` taken at the step's start, and ξ ~ N(0, I):

* **exponential integrator** (``pg_ei``, their eq. 12 as coded):
  :math:`y' = y + \gamma_1(y + 2s_\theta) + \sqrt{2\gamma_2}\,\xi` with :math:`\gamma_1 = \alpha_t/\alpha_s - 1`
  (= :math:`e^{B(\tau_s) - B(\tau_t)} - 1`) and :math:`\gamma_2 = \tfrac12\big((\alpha_t/\alpha_s)^2 - 1\big)`;
* **DDPM step** (``pg_ddpm``): :math:`b = 2h\beta_s` (β at the step's *starting* time, as their code computes it),
  :math:`y' = (y + b\,s_\theta)/\sqrt{1 - b} + \sqrt b\,\xi`.

Their grid is uniform with N points ending at :math:`1 - \varepsilon` (``get_grid("uniform", N - 1, t1=1 - ε)``);
the last score is taken at the last step's start, so neither scheme evaluates the field at t = 1 − ε, nor at 1.
Both are written for a variance-preserving path (α² + σ² = 1, where g² = 2β is the reverse SDE's diffusion) and
refuse any other. Their exact laws are their recursions per eigendirection (score :math:`-(z - \alpha m)/c`):
EI :math:`z \mapsto (1 + \gamma_1(1 - 2/c))z + 2\gamma_1\alpha m/c + \sqrt{2\gamma_2}\xi`, DDPM
:math:`z \mapsto ((1 - b/c)z + b\alpha m/c)/\sqrt{1 - b} + \sqrt b\xi` — checked against Monte Carlo and against a
probe of the integrators themselves in ``tests/test_laws.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..solvers.errors import SolverDivergenceError
from ..solvers.laws import AffineLaw, GaussianProblem, LawRequest, StepLaw
from ..solvers.methods import Method, register_method
from ..solvers.runge_kutta import is_finite
from ..solvers.sde import brownian_increment

VARIANCE_PRESERVING_TOLERANCE = 1e-12
"""``|α² + σ² − 1|`` allowed at a grid time before a path is refused as not variance preserving."""


Scalars = Callable[[float], tuple[float, float, float, float]]
"""t ↦ (α, σ, α̇, σσ̇) at t: :meth:`~fmcore.solvers.laws.GaussianProblem.scalars` for the laws (computed once per
time), :func:`_scalars_of` a schedule for the integrators."""


def _scalars_of(schedule) -> Scalars:
    def scalars(t: float) -> tuple[float, float, float, float]:
        values = schedule(t)
        return float(values.alpha), float(values.sigma), float(values.d_alpha), float(values.sigma_d_sigma)

    return scalars


def _beta_and_alpha(scalars: Scalars, schedule, t: float, method: str) -> tuple[float, float]:
    """``(β_t = α̇/α, α_t)`` on a variance-preserving path; refuse any other path by name."""
    alpha, sigma, d_alpha, _ = scalars(t)
    if abs(alpha**2 + sigma**2 - 1.0) > VARIANCE_PRESERVING_TOLERANCE or alpha <= 0.0:
        raise ValueError(f"{method} is Pierret & Galerne's scheme for a variance-preserving path (α² + σ² = 1, α > 0); "
                         f"{schedule!r} has α² + σ² = {alpha**2 + sigma**2:.6g}, α = {alpha:.3g} at t = {t:g}. "
                         "Use a VP path with α > 0 on the grid, e.g. the 'vp' schedule")
    return d_alpha / alpha, alpha


def _ei_coefficients(scalars: Scalars, schedule, s: float, t: float) -> tuple[float, float]:
    """``(γ₁, γ₂)`` of the exponential integrator on s → t."""
    _, alpha_s = _beta_and_alpha(scalars, schedule, s, "pg_ei")
    _, alpha_t = _beta_and_alpha(scalars, schedule, t, "pg_ei")
    ratio = alpha_t / alpha_s
    return ratio - 1.0, 0.5 * (ratio**2 - 1.0)


def _ddpm_coefficient(scalars: Scalars, schedule, s: float, t: float) -> float:
    """``b = 2 h β_s`` of the DDPM step on s → t; it must stay below 1 (the step divides by √(1 − b))."""
    beta, _ = _beta_and_alpha(scalars, schedule, s, "pg_ddpm")
    b = 2.0 * (t - s) * beta
    if not b < 1.0:
        raise ValueError(f"pg_ddpm's step from t = {s:g} to {t:g} has b = 2hβ = {b:.3g} ≥ 1 (it divides by √(1 − b)); "
                         "use more steps")
    return b


def _integrate(field, x0: Tensor, grid: Tensor, schedule, generator, return_trajectory: bool, name: str, update):
    times = grid.tolist()
    x, points = x0, ([x0] if return_trajectory else None)
    for step, (s, t) in enumerate(zip(times[:-1], times[1:], strict=True)):
        noise = brownian_increment(x.shape, generator, x)
        x = update(x, field.score(s, x), noise, s, t)
        if not is_finite(x):
            raise SolverDivergenceError(name, step, t, t_start=s)
        if points is not None:
            points.append(x)
    return x, (torch.stack(points) if points is not None else None), {}


def integrate_pg_ei(field, x0, grid, schedule, generator, return_trajectory: bool = False):
    scalars = _scalars_of(schedule)

    def update(x, score, noise, s, t):
        gamma_1, gamma_2 = _ei_coefficients(scalars, schedule, s, t)
        return x + gamma_1 * (x + 2.0 * score) + math.sqrt(2.0 * gamma_2) * noise

    return _integrate(field, x0, grid, schedule, generator, return_trajectory, "pg_ei", update)


def integrate_pg_ddpm(field, x0, grid, schedule, generator, return_trajectory: bool = False):
    scalars = _scalars_of(schedule)

    def update(x, score, noise, s, t):
        b = _ddpm_coefficient(scalars, schedule, s, t)
        return (x + b * score) / math.sqrt(1.0 - b) + math.sqrt(b) * noise

    return _integrate(field, x0, grid, schedule, generator, return_trajectory, "pg_ddpm", update)


class ExponentialIntegratorLaw(StepLaw):
    """``pg_ei``'s step per eigendirection (module docstring)."""

    def step(self, problem: GaussianProblem, state: AffineLaw, t: float, t_next: float, request: LawRequest):
        gamma_1, gamma_2 = _ei_coefficients(problem.scalars, problem.schedule, t, t_next)
        _, _, variance, alpha_mean = problem.coefficients(t)
        return state.then(1.0 + gamma_1 * (1.0 - 2.0 / variance), 2.0 * gamma_1 * alpha_mean / variance, 2.0 * gamma_2)


class DDPMLaw(StepLaw):
    """``pg_ddpm``'s step per eigendirection (module docstring)."""

    def step(self, problem: GaussianProblem, state: AffineLaw, t: float, t_next: float, request: LawRequest):
        b = _ddpm_coefficient(problem.scalars, problem.schedule, t, t_next)
        _, _, variance, alpha_mean = problem.coefficients(t)
        root = math.sqrt(1.0 - b)
        return state.then((1.0 - b / variance) / root, b * alpha_mean / variance / root, b)


def _register(name: str, integrate, law: StepLaw) -> None:
    register_method(Method(
        name, lambda r: integrate(r.field, r.x0, r.grid, r.schedule, r.generator, r.return_trajectory),
        stages=1, random=True, predictions=("score",), needs_schedule=True, order=1,
        family="reproduction (Pierret & Galerne)", exact_law=law,
    ))


_register("pg_ei", integrate_pg_ei, ExponentialIntegratorLaw())
_register("pg_ddpm", integrate_pg_ddpm, DDPMLaw())
