r"""Diffusion samplers, native, on any schedule: DDIM, Euler-ancestral, DPM-Solver++(2M) and its SDE variant, UniPC,
and EDM's Heun sampler with stochastic churn.

They are written in the path's own time t (``grid[0]`` → 1) with :math:`x_t = \alpha_t x_1 + \sigma_t\varepsilon`,
from the field's data prediction :math:`D = E[x_1 | x_t]` (one NFE per call). The papers write them in other
coordinates; these are the same maps:

* **λ** (DPM-Solver): :math:`\lambda_t = \log(\alpha_t/\sigma_t)`, so :math:`e^{-h} = \rho = \alpha_s\sigma_t/(\alpha_t\sigma_s)`
  for a step s → t. Every step below is written with ρ, which stays finite at both ends of a path with
  :math:`\alpha_0 = 0` or :math:`\sigma_1 = 0` (there ρ = 0, where λ is infinite), so these samplers start at t = 0.
* **EDM** (Karras et al.): :math:`\tilde x = x/\alpha`, noise level :math:`\tilde\sigma = \sigma/\alpha`, and the
  probability-flow ODE :math:`d\tilde x/d\tilde\sigma = (\tilde x - D)/\tilde\sigma`. EDM's Heun needs a finite
  :math:`\tilde\sigma` to start from: on a path with :math:`\alpha_0 = 0` it starts where :math:`\tilde\sigma = 80`
  (EDM's σ_max; ``result.t0`` records it).

=================== =========================================================================== ===========
method              step s → t (ε̂ = (x − α_s D_s)/σ_s, ξ ~ N(0, I))                             order
=================== =========================================================================== ===========
``ddim``            :math:`x_t = \alpha_t D_s + \sqrt{\sigma_t^2 - \sigma_\eta^2}\,\hat\varepsilon + \sigma_\eta\xi`,    1
                    :math:`\sigma_\eta = \eta\,\sigma_t\sqrt{1 - \rho^2}` (η = 0: the probability-flow ODE)
``euler_ancestral`` Euler to :math:`\tilde\sigma_{down}`, then noise :math:`\tilde\sigma_{up}` (k-diffusion). It is   1 (weak)
                    exactly ``ddim`` with the same η (default 1): the two maps are identical
``dpmpp_2m``        :math:`x_t = (\sigma_t/\sigma_s)x + \alpha_t(1 - \rho)\,\hat D`, with                          2
                    :math:`\hat D = (1 + \tfrac{1}{2r})D_s - \tfrac{1}{2r}D_{prev}`, :math:`r = h_{prev}/h`;
                    first order (:math:`\hat D = D_s`) on the first step and wherever h is infinite
``dpmpp_2m_sde``    :math:`x_t = (\sigma_t/\sigma_s)\rho^{\eta}x + \alpha_t(1 - \rho^{1+\eta})\hat D                  1 (strong)
                    + \sigma_t\sqrt{1 - \rho^{2\eta}}\,\xi`, :math:`\hat D = D_s + \tfrac{1}{2r}(D_s - D_{prev})`
                    (k-diffusion's midpoint variant; η = 1)
``unipc``           predictor: ``dpmpp_2m``'s step; then, with :math:`D_t` at the predicted end, the step is  3
                    redone with :math:`\hat D = D_s + a(D_s - D_{prev})/r + b(D_t - D_s)` (UniC, bh2:
                    a, b from a 2×2 system in h and r; a = 0, b = ½ after a first-order step)
``edm_heun``        Heun in :math:`(\tilde x, \tilde\sigma)`, Euler on a last step to :math:`\tilde\sigma = 0`;      2
                    with ``churn`` > 0 each step first raises :math:`\tilde\sigma` by
                    :math:`\gamma = \min(\text{churn}/N, \sqrt2 - 1)` and adds the matching noise
=================== =========================================================================== ===========

Each integrates from ``request.x0`` at ``request.grid[0]``; NFE: one data prediction per step (two for
``edm_heun`` except on a final step to :math:`\tilde\sigma = 0`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .errors import SolverDivergenceError
from .laws import PROBED
from .methods import Method, register_method
from .runge_kutta import is_finite
from .sde import brownian_increment

EDM_SIGMA_MAX = 80.0
"""EDM's largest noise level :math:`\\tilde\\sigma`: where ``edm_heun`` starts on a path with α_0 = 0."""


def _values(schedule, t: float) -> tuple[float, float]:
    values = schedule(t)
    return float(values.alpha), float(values.sigma)


def _ratio(alpha_s: float, sigma_s: float, alpha_t: float, sigma_t: float) -> float:
    """:math:`\\rho = e^{-h} = \\alpha_s\\sigma_t/(\\alpha_t\\sigma_s)`, 0 where λ_s = −∞ or λ_t = +∞."""
    if alpha_s == 0.0 or sigma_t == 0.0:
        return 0.0
    return alpha_s * sigma_t / (alpha_t * sigma_s)


def _checked(x: Tensor, method: str, step: int, t_start: float, t: float) -> Tensor:
    if not is_finite(x):
        raise SolverDivergenceError(method, step, t, t_start=t_start)
    return x


def _trajectory(points: list[Tensor] | None) -> Tensor | None:
    return torch.stack(points) if points is not None else None


def integrate_ddim(field, x0: Tensor, grid: Tensor, schedule, eta: float, generator, return_trajectory: bool,
                   name: str = "ddim"):
    """DDIM with stochasticity η ≥ 0 (Song et al., eq. 12, written for any α, σ): see the module table."""
    times = grid.tolist()
    x, points = x0, ([x0] if return_trajectory else None)
    for step, (s, t) in enumerate(zip(times[:-1], times[1:], strict=True)):
        alpha_s, sigma_s = _values(schedule, s)
        alpha_t, sigma_t = _values(schedule, t)
        data = field.data_prediction(s, x)
        noise = (x - alpha_s * data) / sigma_s
        sigma_eta = eta * sigma_t * math.sqrt(max(0.0, 1.0 - _ratio(alpha_s, sigma_s, alpha_t, sigma_t) ** 2))
        x = alpha_t * data + math.sqrt(max(0.0, sigma_t**2 - sigma_eta**2)) * noise
        if sigma_eta > 0.0:
            x = x + sigma_eta * brownian_increment(x.shape, generator, x)
        x = _checked(x, name, step, s, t)
        if points is not None:
            points.append(x)
    return x, _trajectory(points), {}


def integrate_dpmpp_2m(field, x0: Tensor, grid: Tensor, schedule, eta: float, generator, return_trajectory: bool,
                       name: str = "dpmpp_2m"):
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) for η = 0; its SDE variant (k-diffusion's
    ``sample_dpmpp_2m_sde``, midpoint form) for η > 0. See the module table."""
    times = grid.tolist()
    x, points = x0, ([x0] if return_trajectory else None)
    previous_data, previous_h = None, None
    for step, (s, t) in enumerate(zip(times[:-1], times[1:], strict=True)):
        alpha_s, sigma_s = _values(schedule, s)
        alpha_t, sigma_t = _values(schedule, t)
        data = field.data_prediction(s, x)
        rho = _ratio(alpha_s, sigma_s, alpha_t, sigma_t)
        h = -math.log(rho) if rho > 0.0 else math.inf
        corrected = data
        if previous_data is not None and math.isfinite(h) and previous_h is not None and math.isfinite(previous_h):
            r = previous_h / h
            if eta == 0.0:
                corrected = (1.0 + 0.5 / r) * data - (0.5 / r) * previous_data
            else:
                corrected = data + (0.5 / r) * (data - previous_data)
        decay = rho**eta if eta > 0.0 else 1.0
        x = (sigma_t / sigma_s) * decay * x + alpha_t * (1.0 - rho ** (1.0 + eta)) * corrected
        if eta > 0.0 and sigma_t > 0.0:
            x = x + sigma_t * math.sqrt(max(0.0, 1.0 - rho ** (2.0 * eta))) * brownian_increment(x.shape, generator, x)
        x = _checked(x, name, step, s, t)
        if points is not None:
            points.append(x)
        previous_data, previous_h = data, h
    return x, _trajectory(points), {}


def integrate_unipc(field, x0: Tensor, grid: Tensor, schedule, option: float, generator, return_trajectory: bool,
                    name: str = "unipc"):
    """UniPC (Zhao et al. 2023) as diffusers' default ``UniPCMultistepScheduler``: UniP-2 predictor, UniC
    corrector, data prediction, B(h) = e^h − 1 ("bh2"); see the module table. One data prediction per step: the
    prediction at the end of a step both corrects that step and starts the next (it is not re-evaluated at the
    corrected state). The corrector raises the predictor's order by one: third order (measured, on Gaussian
    targets). First order on the first and last steps and wherever a step in λ is infinite."""
    times = grid.tolist()
    values = [_values(schedule, t) for t in times]
    steps = len(times) - 1
    x, points = x0, ([x0] if return_trajectory else None)
    data: list[Tensor] = []  # the last two data predictions
    h_values: list[float] = []  # h of each step so far
    start_state = x0  # the (corrected) state the last step started from
    for step in range(steps):
        prediction = field.data_prediction(times[step], x)
        if step > 0:  # UniC: redo step − 1 with the prediction at its end
            x = _unipc_update(start_state, values[step - 1], values[step], data, h_values, prediction)
            x = _checked(x, name, step - 1, times[step - 1], times[step])
            if points is not None:
                points[-1] = x
        data = [*data[-1:], prediction]
        rho = _ratio(*values[step], *values[step + 1])
        h_values.append(-math.log(rho) if rho > 0.0 else math.inf)
        start_state = x
        last = step == steps - 1
        x = _unipc_update(x, values[step], values[step + 1], data if not last else data[-1:], h_values, None)
        x = _checked(x, name, step, times[step], times[step + 1])
        if points is not None:
            points.append(x)
    return x, _trajectory(points), {}


def _unipc_update(x: Tensor, start: tuple[float, float], end: tuple[float, float], data: list[Tensor],
                  h_values: list[float], end_prediction: Tensor | None) -> Tensor:
    r"""One UniPC step s → t from ``x``: :math:`x_t = (\sigma_t/\sigma_s)x + \alpha_t(1 - \rho)\hat D`.

    ``data`` ends with :math:`D_s` (and holds :math:`D_{prev}` before it when the step is second order), h_values
    ends with this step's h. Predictor (``end_prediction`` None, UniP-2): :math:`\hat D = D_s + \tfrac{1}{2r}(D_s -
    D_{prev})` with :math:`r = h_{prev}/h` — DPM-Solver++(2M)'s step. Corrector (UniC, with :math:`D_t` at the
    predicted end): :math:`\hat D = D_s + a(D_s - D_{prev})/r + b(D_t - D_s)`, where (a, b) solve diffusers'
    bh2 system :math:`a + b = b_1,\ -r a + b = b_2` with :math:`b_1 = \varphi/(\rho - 1)`,
    :math:`b_2 = 2(\varphi/(-h) - \tfrac12)/(\rho - 1)`, :math:`\varphi = (\rho - 1)/(-h) - 1`; first order:
    a = 0, b = ½."""
    alpha_s, sigma_s = start
    alpha_t, sigma_t = end
    rho = _ratio(alpha_s, sigma_s, alpha_t, sigma_t)
    h = h_values[-1]
    second_order = len(data) == 2 and len(h_values) >= 2 and math.isfinite(h) and math.isfinite(h_values[-2])
    current = data[-1]
    if end_prediction is None:
        corrected = current
        if second_order:
            corrected = current + (0.5 * h / h_values[-2]) * (current - data[0])
    elif second_order:
        r = h_values[-2] / h
        phi = (rho - 1.0) / -h - 1.0
        b1 = phi / (rho - 1.0)
        b2 = 2.0 * (phi / -h - 0.5) / (rho - 1.0)
        a = (b1 - b2) / (1.0 + r)
        corrected = current + (a / r) * (current - data[0]) + (b1 - a) * (end_prediction - current)
    else:
        corrected = current + 0.5 * (end_prediction - current)
    return (sigma_t / sigma_s) * x + alpha_t * (1.0 - rho) * corrected


def edm_start_time(schedule) -> float:
    """Where ``edm_heun`` starts by default: t = 0 when α_0 > 0, else the t where σ/α = :data:`EDM_SIGMA_MAX`."""
    alpha, _ = _values(schedule, 0.0)
    if alpha > 0.0:
        return 0.0
    return float(schedule.t_from_snr(1.0 / EDM_SIGMA_MAX))


def integrate_edm_heun(field, x0: Tensor, grid: Tensor, schedule, churn: float, generator, return_trajectory: bool,
                       name: str = "edm_heun"):
    """EDM's Algorithm 2 (Karras et al. 2022) with S_tmin = 0, S_tmax = ∞, S_noise = 1, in the path's time: each step's
    noise level σ̃ = σ/α is raised by γ = min(churn/N, √2 − 1) (to the time where σ̃ is that high; skipped where the path
    never reaches that level), then a Heun step in (x̃ = x/α, σ̃) to the next grid time, Euler on a final step to
    σ̃ = 0."""
    times = grid.tolist()
    steps = len(times) - 1
    gamma = min(churn / steps, math.sqrt(2.0) - 1.0) if churn > 0 else 0.0
    lowest_snr = float(schedule.snr(0.0)) if gamma > 0.0 else math.inf  # the noisiest level the path reaches
    x, points = x0, ([x0] if return_trajectory else None)
    for step, (s, t) in enumerate(zip(times[:-1], times[1:], strict=True)):
        alpha_s, sigma_s = _values(schedule, s)
        alpha_t, sigma_t = _values(schedule, t)
        if alpha_s == 0.0:
            raise ValueError(f"{name} needs α > 0 where it starts (σ/α finite); start the grid at t ≥ {edm_start_time(schedule)}")
        level_s, level_t = sigma_s / alpha_s, sigma_t / alpha_t
        scaled = x / alpha_s
        raised = level_s * (1.0 + gamma)
        if gamma > 0.0 and 1.0 / raised >= lowest_snr:  # churn: to the time where σ̃ = (1 + γ) σ̃_s
            scaled = scaled + math.sqrt(raised**2 - level_s**2) * brownian_increment(scaled.shape, generator, scaled)
            s_hat = max(0.0, float(schedule.t_from_snr(1.0 / raised)))
            alpha_s, sigma_s = _values(schedule, s_hat)
            level_s, s = raised, s_hat
        slope = (scaled - field.data_prediction(s, alpha_s * scaled)) / level_s
        euler = scaled + (level_t - level_s) * slope
        if level_t > 0.0:
            slope_next = (euler - field.data_prediction(t, alpha_t * euler)) / level_t
            scaled = scaled + (level_t - level_s) * 0.5 * (slope + slope_next)
        else:
            scaled = euler
        x = _checked(alpha_t * scaled, name, step, s, t)
        if points is not None:
            points.append(x)
    return x, _trajectory(points), {}


# ---------------------------------------------------------------------- registration

def _register(name: str, integrate, order: int, option: str | None = None, default: float = 0.0, **declared) -> None:
    """One diffusion sampler: ``integrate(field, x0, grid, schedule, option value, generator, trajectory, name)``,
    its own ``option`` (which makes it draw noise when > 0) at ``default``; a sampler without one gets 0."""
    register_method(Method(
        name,
        lambda r: integrate(r.field, r.x0, r.grid, r.schedule, r.options.get(option, 0.0), r.generator,
                            r.return_trajectory, name),
        options={option: default} if option else {}, random=option or False, order=order, family="diffusion",
        predictions=("data",), needs_schedule=True, exact_law=PROBED, **declared,
    ))


_register("ddim", integrate_ddim, order=1, option="eta", default=0.0, stages=1)
_register("euler_ancestral", integrate_ddim, order=1, option="eta", default=1.0, stages=1)
_register("dpmpp_2m", integrate_dpmpp_2m, order=2, stages=1)
_register("dpmpp_2m_sde", integrate_dpmpp_2m, order=1, option="eta", default=1.0, stages=1)
_register("unipc", integrate_unipc, order=3, stages=1)
_register("edm_heun", integrate_edm_heun, order=2, option="churn", default=0.0, start=edm_start_time)
