r"""Diffusion samplers, native, on any schedule: DDIM, Euler-ancestral, DPM-Solver++(2M) and (3M) and their SDE
variants, UniPC, the multisteps in noise level (iPNDM, DEIS, LMS), and EDM's Heun sampler with stochastic churn.
The singlestep samplers (DPM-Solver-2/3, DPM-Solver++(2S), DPM++ SDE) are in :mod:`.singlestep_samplers`.

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
``dpmpp_3m``        :math:`x_t = (\sigma_t/\sigma_s)\rho^{\eta}x + \alpha_t(1 - \rho^{1+\eta})D_s                2
                    + \alpha_t(\varphi_2 d_1 - \varphi_3 d_2)` from the last three data predictions
                    (:func:`integrate_dpmpp_3m`), η = 0: third order by its authors' count, second
                    as shipped (its d₂ is half the second difference φ₃ needs; see there)
``dpmpp_3m_sde``    the same with η = 1 and the noise of ``dpmpp_2m_sde`` (k-diffusion's                    1 (strong)
                    ``sample_dpmpp_3m_sde``)
``unipc``           predictor: ``dpmpp_2m``'s step; then, with :math:`D_t` at the predicted end, the step is  3
                    redone with :math:`\hat D = D_s + a(D_s - D_{prev})/r + b(D_t - D_s)` (UniC, bh2:
                    a, b from a 2×2 system in h and r; a = 0, b = ½ after a first-order step)
``ipndm``           Adams–Bashforth in :math:`(\tilde x, \tilde\sigma)` with the constant-step                2
                    weights of orders 1…4 on :math:`d = (\tilde x - D)/\tilde\sigma` (warm start
                    by the lower orders); :math:`\tilde x = D` on a last step to σ̃ = 0
``deis``            :math:`\tilde x_t = \tilde x_s + \sum_j c_j\hat\varepsilon_{s-j}`, :math:`c_j` the integral  3
                    over :math:`\tilde\sigma` of the Lagrange basis in :math:`\log\tilde\sigma` through the
                    last ``max_order`` (3) steps (diffusers' DEIS); DDIM's step to σ̃ = 0
``lms``             the same with the Lagrange basis in :math:`\tilde\sigma` itself, ``max_order`` 4          4
                    (k-diffusion's and diffusers' LMS)
``edm_heun``        Heun in :math:`(\tilde x, \tilde\sigma)`, Euler on a last step to :math:`\tilde\sigma = 0`;      2
                    with ``churn`` > 0 each step first raises :math:`\tilde\sigma` by
                    :math:`\gamma = \min(\text{churn}/N, \sqrt2 - 1)` and adds the matching noise
=================== =========================================================================== ===========

Each integrates from ``request.x0`` at ``request.grid[0]``; NFE: one data prediction per step (two for
``edm_heun`` except on a final step to :math:`\tilde\sigma = 0`). The helpers ``_values``, ``_edm_coordinates``,
``_checked``, ``_trajectory`` and ``_register`` are shared with :mod:`.singlestep_samplers`.
"""

from __future__ import annotations

import math

import numpy
import torch
from numpy.polynomial import Polynomial
from torch import Tensor

from .diffusion_laws import DDIMLaw, DPMSolver2MLaw, EDMHeunLaw, UniPCLaw
from .errors import SolverDivergenceError
from .laws import PROBED, LawRecursion
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


def _edm_coordinates(schedule, s: float, t: float, name: str) -> tuple[float, float, float, float]:
    r"""(α_s, σ̃_s, α_t, σ̃_t) of a step s → t in EDM's coordinates :math:`\tilde x = x/\alpha`,
    :math:`\tilde\sigma = \sigma/\alpha`, refused where α_s = 0 (σ̃ infinite): these samplers start at a finite level."""
    alpha_s, sigma_s = _values(schedule, s)
    alpha_t, sigma_t = _values(schedule, t)
    if alpha_s == 0.0:
        raise ValueError(f"{name} needs α > 0 where it starts (σ/α finite); start the grid at t ≥ {edm_start_time(schedule)}")
    return alpha_s, sigma_s / alpha_s, alpha_t, sigma_t / alpha_t


def _step_in_log_snr(schedule, s: float, t: float) -> tuple[float, float, float, float, float, float]:
    """(α_s, σ_s, α_t, σ_t, ρ, h) of a step s → t: ρ = e^{−h} (:func:`_ratio`), h = λ_t − λ_s (∞ where ρ = 0)."""
    alpha_s, sigma_s = _values(schedule, s)
    alpha_t, sigma_t = _values(schedule, t)
    rho = _ratio(alpha_s, sigma_s, alpha_t, sigma_t)
    return alpha_s, sigma_s, alpha_t, sigma_t, rho, (-math.log(rho) if rho > 0.0 else math.inf)


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
        alpha_s, sigma_s, alpha_t, sigma_t, rho, h = _step_in_log_snr(schedule, s, t)
        data = field.data_prediction(s, x)
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


def integrate_dpmpp_3m(field, x0: Tensor, grid: Tensor, schedule, eta: float, generator, return_trajectory: bool,
                       name: str = "dpmpp_3m"):
    r"""DPM-Solver++(3M) — the third-order multistep of diffusers' ``DPMSolverMultistepScheduler`` (``solver_order=3``)
    for η = 0, k-diffusion's ``sample_dpmpp_3m_sde`` for η > 0 — written as k-diffusion writes it, in the path's time.

    A step s → t of :math:`h = \lambda_t - \lambda_s` (:math:`\rho = e^{-h}`), :math:`h_\eta = (1 + \eta)h`, with the
    data predictions :math:`D_s, D_1, D_2` of this and the two previous steps (their h: :math:`h_1, h_2`):

    .. math::
        r_0 = h_1/h,\ r_1 = h_2/h,\quad d_{1,0} = (D_s - D_1)/r_0,\ d_{1,1} = (D_1 - D_2)/r_1,\\
        d_1 = d_{1,0} + \frac{r_0}{r_0 + r_1}(d_{1,0} - d_{1,1}),\quad d_2 = \frac{d_{1,0} - d_{1,1}}{r_0 + r_1},\\
        \varphi_2 = \frac{e^{-h_\eta} - 1}{h_\eta} + 1,\quad \varphi_3 = \frac{\varphi_2}{h_\eta} - \tfrac12,\\
        x_t = \frac{\sigma_t}{\sigma_s}\rho^\eta x + \alpha_t(1 - \rho^{1+\eta})D_s + \alpha_t(\varphi_2 d_1 -
        \varphi_3 d_2) + \sigma_t\sqrt{1 - \rho^{2\eta}}\,\xi .

    With one previous prediction the correction is :math:`\alpha_t\varphi_2 (D_s - D_1)/r_0` (second order), with none,
    or wherever an h involved is infinite (a start at α = 0, an end at σ = 0), nothing (first order).

    **Its order is 2, not 3.** This is the update of the reference code (``dpm_solver_pytorch``), diffusers'
    ``multistep_dpm_solver_third_order_update`` and k-diffusion, and it matches k-diffusion's to 1e-14. With
    :math:`D(\lambda_s + uh) = D_s + a u + b u^2`, the divided differences give :math:`d_1 = a = hD'` and
    :math:`d_2 = b = h^2 D''/2`, while the exponential integrator's term in :math:`D''` is
    :math:`\alpha_t\int_0^h e^{-(h-\tau)}\tfrac{\tau^2}{2}d\tau\,D'' = -\alpha_t\varphi_3 h^2 D''`: the update takes
    half of it, a local error :math:`\alpha_t h^3 D''/12`, so a global error O(h²). Measured on a grid uniform in λ
    (``tests/test_diffusion_samplers.py``): local order 2.03 at N = 128 → 256, against 2.99 with :math:`2d_2`."""
    times = grid.tolist()
    x, points = x0, ([x0] if return_trajectory else None)
    history: list[tuple[Tensor, float]] = []  # (data prediction, h) of the last two steps, oldest first
    for step, (s, t) in enumerate(zip(times[:-1], times[1:], strict=True)):
        alpha_s, sigma_s, alpha_t, sigma_t, rho, h = _step_in_log_snr(schedule, s, t)
        data = field.data_prediction(s, x)
        decay = rho**eta if eta > 0.0 else 1.0
        update = (sigma_t / sigma_s) * decay * x + alpha_t * (1.0 - rho ** (1.0 + eta)) * data
        usable = [entry for entry in history[::-1] if math.isfinite(h)]  # newest first
        usable = usable[: next((i for i, (_, h_i) in enumerate(usable) if not math.isfinite(h_i)), len(usable))]
        if usable:
            h_eta = (1.0 + eta) * h
            phi_2 = math.expm1(-h_eta) / h_eta + 1.0
            r_0 = usable[0][1] / h
            d_1_0 = (data - usable[0][0]) / r_0
            if len(usable) == 2:
                r_1 = usable[1][1] / h
                d_1_1 = (usable[0][0] - usable[1][0]) / r_1
                d_1 = d_1_0 + (d_1_0 - d_1_1) * (r_0 / (r_0 + r_1))
                d_2 = (d_1_0 - d_1_1) / (r_0 + r_1)
                update = update + alpha_t * (phi_2 * d_1 - (phi_2 / h_eta - 0.5) * d_2)
            else:
                update = update + alpha_t * phi_2 * d_1_0
        if eta > 0.0 and sigma_t > 0.0:
            update = update + sigma_t * math.sqrt(max(0.0, 1.0 - rho ** (2.0 * eta))) * brownian_increment(
                x.shape, generator, x)
        x = _checked(update, name, step, s, t)
        if points is not None:
            points.append(x)
        history = [*history[-1:], (data, h)]
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


def _lagrange_basis(nodes: list[float]) -> list[Polynomial]:
    r""":math:`\ell_j(u) = \prod_{m \ne j}(u - u_m)/(u_j - u_m)`, the Lagrange basis on ``nodes``."""
    basis = []
    for j, node in enumerate(nodes):
        polynomial = Polynomial([1.0])
        for m, other in enumerate(nodes):
            if m != j:
                polynomial = polynomial * Polynomial([-other, 1.0]) / (node - other)
        basis.append(polynomial)
    return basis


def lms_weights(levels: list[float], level_t: float) -> list[float]:
    r"""Linear multistep in the noise level: :math:`c_j = \int_{\tilde\sigma_0}^{\tilde\sigma_t}\ell_j(\tilde\sigma)
    \,d\tilde\sigma`, the Lagrange basis on the levels ``levels`` (newest first, :math:`\tilde\sigma_0` the current
    one), integrated exactly (k-diffusion's ``linear_multistep_coeff`` integrates it with ``scipy.integrate.quad``)."""
    nodes = [level - levels[0] for level in levels]  # centred on the current level, for conditioning
    return [float(basis.integ()(level_t - levels[0])) for basis in _lagrange_basis(nodes)]


def deis_weights(levels: list[float], level_t: float) -> list[float]:
    r"""DEIS's quadrature in diffusers' form: the Lagrange basis in :math:`u = \log\tilde\sigma` integrated over
    :math:`\tilde\sigma = e^u`, :math:`c_j = \int_{u_0}^{u_t} e^{u}\ell_j(u)\,du`, exactly, from
    :math:`\int e^u p\,du = e^u(p - p' + p'' - \dots)` for a polynomial p (diffusers writes out the integrals of orders
    2 and 3; this is the same for any order)."""
    nodes = [math.log(level / levels[0]) for level in levels]  # u − u_0
    end = math.log(level_t / levels[0])
    weights = []
    for basis in _lagrange_basis(nodes):
        alternating = sum(((-1) ** k) * basis.deriv(k) for k in range(1, len(nodes))) + basis
        weights.append(levels[0] * (math.exp(end) * float(alternating(end)) - float(alternating(0.0))))
    return weights


def _noise_level_multistep(field, x0: Tensor, grid: Tensor, schedule, max_order: float, return_trajectory: bool,
                           name: str, weights) -> tuple:
    r"""A linear multistep for :math:`d\tilde x/d\tilde\sigma = \hat\varepsilon = (\tilde x - D)/\tilde\sigma` in EDM's
    coordinates :math:`\tilde x = x/\alpha`, :math:`\tilde\sigma = \sigma/\alpha`:
    :math:`\tilde x_t = \tilde x_s + \sum_j c_j\hat\varepsilon_{s-j}` over the last :math:`k = \min(\text{max\_order},
    i + 1)` noise predictions, with ``weights(levels, level_t)`` → the :math:`c_j`."""
    order_cap = int(max_order)
    if order_cap != max_order or not 1 <= order_cap <= 4:
        raise ValueError(f"{name}: max_order must be 1, 2, 3 or 4, got {max_order:g}")
    times = grid.tolist()
    x, points = x0, ([x0] if return_trajectory else None)
    history: list[tuple[Tensor, float]] = []  # (noise prediction, its level), newest first
    for step, (s, t) in enumerate(zip(times[:-1], times[1:], strict=True)):
        alpha_s, level_s, alpha_t, level_t = _edm_coordinates(schedule, s, t, name)
        scaled = x / alpha_s
        data = field.data_prediction(s, x)
        history = [((scaled - data) / level_s, level_s), *history][:order_cap]
        coefficients = weights([level for _, level in history], level_t)
        scaled = scaled + sum(c * noise for c, (noise, _) in zip(coefficients, history, strict=True))
        x = _checked(alpha_t * scaled, name, step, s, t)
        if points is not None:
            points.append(x)
    return x, _trajectory(points), {}


ADAMS_BASHFORTH = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}
"""The constant-step Adams–Bashforth weights of orders 1 to 4, newest slope first."""


def _to_the_data(levels: list[float]) -> list[float]:
    r"""DDIM's weights on a last step to σ̃ = 0: :math:`\tilde x_t = \tilde x_s - \tilde\sigma_s\hat\varepsilon_s = D_s`."""
    return [-levels[0]] + [0.0] * (len(levels) - 1)


def ipndm_weights(levels: list[float], level_t: float) -> list[float]:
    r"""iPNDM's :math:`c_j = (\tilde\sigma_t - \tilde\sigma_0)\,b^{(k)}_j` with the constant-step weights of order
    k = ``len(levels)`` (:data:`ADAMS_BASHFORTH`), whatever the steps; :math:`c = (-\tilde\sigma_0, 0, \dots)`,
    :math:`\tilde x_t = D`, on a last step to σ̃ = 0."""
    if level_t == 0.0:
        return _to_the_data(levels)
    return [(level_t - levels[0]) * weight for weight in ADAMS_BASHFORTH[len(levels)]]


def integrate_ipndm(field, x0: Tensor, grid: Tensor, schedule, max_order: float, generator, return_trajectory: bool,
                    name: str = "ipndm"):
    r"""iPNDM (Zhang & Chen 2023, "improved PNDM": PNDM's linear multistep with a lower-order warm start instead of its
    Runge–Kutta one) as zju-pi's ``diff-sampler`` and ComfyUI's k-diffusion write it: in EDM's coordinates
    :math:`\tilde x = x/\alpha`, :math:`\tilde\sigma = \sigma/\alpha`, with the slope
    :math:`d_i = (\tilde x_i - D_i)/\tilde\sigma_i`,

    .. math:: \tilde x_{i+1} = \tilde x_i + (\tilde\sigma_{i+1} - \tilde\sigma_i)\sum_j b^{(k)}_j d_{i-j},
        \quad k = \min(\text{max\_order}, i + 1)

    with the constant-step weights :data:`ADAMS_BASHFORTH` whatever the steps are, and :math:`\tilde x = D` on a last
    step to σ̃ = 0. It is second order: constant-step weights on steps that are not constant (EDM's ρ = 7 grid: 2.11
    at N = 128 → 256), and on constant steps its Euler first step's O(h²) error bounds it at 2 in the end (local orders
    3.1, 4.2, 3.6 over N = 32 → 256 from σ/α = 10 to 0.1, falling). It matches a transcription of the reference code to
    1e-12 (``tests/test_diffusion_samplers.py``). Like ``edm_heun`` it needs σ/α finite where it starts.
    :func:`_noise_level_multistep` with :func:`ipndm_weights`."""
    return _noise_level_multistep(field, x0, grid, schedule, max_order, return_trajectory, name, ipndm_weights)


def integrate_lms(field, x0: Tensor, grid: Tensor, schedule, max_order: float, generator, return_trajectory: bool,
                  name: str = "lms"):
    r"""LMS: k-diffusion's ``sample_lms`` and diffusers' ``LMSDiscreteScheduler`` — the Adams–Bashforth method of
    order ``max_order`` (4) on the grid's own levels, :func:`lms_weights`, warm-started by the lower orders, in
    :func:`_noise_level_multistep`. Its last step to σ̃ = 0 integrates the polynomial there (no special case)."""
    return _noise_level_multistep(field, x0, grid, schedule, max_order, return_trajectory, name, lms_weights)


def integrate_deis(field, x0: Tensor, grid: Tensor, schedule, max_order: float, generator, return_trajectory: bool,
                   name: str = "deis"):
    r"""DEIS (Zhang & Chen 2023) as diffusers' ``DEISMultistepScheduler`` writes it (``algorithm_type="deis"``): the
    noise prediction extrapolated by its Lagrange polynomial in :math:`\log\tilde\sigma` through the last ``max_order``
    (3) steps and integrated exactly in :math:`\tilde\sigma` (:func:`deis_weights`; order 1 is DDIM). This is DEIS's
    ρAB with the polynomial in log ρ; the paper's tAB takes it in the time of its own VP schedule instead
    (``deis_tab``). A last step to σ̃ = 0 (log σ̃ = −∞) is DDIM's, :math:`\tilde x = D` (a polynomial in log σ̃
    extrapolated to −∞ would amplify its nodes' differences by 1/h^{k-1}), as DPM-Solver++ ends."""

    def weights(levels: list[float], level_t: float) -> list[float]:
        return deis_weights(levels, level_t) if level_t > 0.0 else _to_the_data(levels)

    return _noise_level_multistep(field, x0, grid, schedule, max_order, return_trajectory, name, weights)


TAB_QUADRATURE_POINTS = 64
"""Gauss–Legendre points per step for :func:`tab_weights`' integrals in σ̃. Their integrands are analytic on a step,
its last one to σ̃ = 0 included, but on vp t(σ̃) turns sharply near σ̃ = 0 (where β is small): on that last step 16
points are off by 7e-8 relative, 32 by 4e-11, 64 agree with ``scipy.integrate.quad`` to 1e-12
(``tests/test_diffusion_samplers.py``)."""


def tab_weights(levels: list[float], level_t: float, schedule) -> list[float]:
    r"""DEIS's tAB: the Lagrange basis in the path's own time t through the levels' times :math:`t_j = t(\tilde\sigma_j)`
    (newest first), integrated in :math:`\tilde\sigma` over the step,
    :math:`c_j = \int_{\tilde\sigma_0}^{\tilde\sigma_t}\ell_j(t(\tilde\sigma))\,d\tilde\sigma`, by Gauss–Legendre in σ̃
    (:data:`TAB_QUADRATURE_POINTS`); t(σ̃) is the schedule's inverse SNR, finite at σ̃ = 0, so the last step to the data
    integrates the polynomial there too."""
    times = [float(schedule.t_from_snr(1.0 / level)) for level in levels]
    basis = _lagrange_basis([t - times[0] for t in times])  # centred on the current time, for conditioning
    unit_points, unit_weights = numpy.polynomial.legendre.leggauss(TAB_QUADRATURE_POINTS)
    half = 0.5 * (level_t - levels[0])
    points = levels[0] + half * (unit_points + 1.0)
    at = schedule.t_from_snr(torch.as_tensor(1.0 / points, dtype=torch.float64)).numpy() - times[0]
    return [float(half * numpy.dot(unit_weights, polynomial(at))) for polynomial in basis]


def integrate_deis_tab(field, x0: Tensor, grid: Tensor, schedule, max_order: float, generator, return_trajectory: bool,
                       name: str = "deis_tab"):
    r"""DEIS's tAB (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator"): the noise
    prediction extrapolated by its Lagrange polynomial in time through the last ``max_order`` (3) steps and integrated
    against the exponential integrator's kernel, which in EDM's coordinates is :math:`d\tilde\sigma`
    (:func:`tab_weights`), in :func:`_noise_level_multistep`. The paper's time is its VP schedule's; here it is the
    path's own t (a Lagrange polynomial does not see an affine change of time). Order 1 is DDIM."""

    def weights(levels: list[float], level_t: float) -> list[float]:
        return tab_weights(levels, level_t, schedule)

    return _noise_level_multistep(field, x0, grid, schedule, max_order, return_trajectory, name, weights)


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
        alpha_s, level_s, alpha_t, level_t = _edm_coordinates(schedule, s, t, name)
        scaled = x / alpha_s
        raised = level_s * (1.0 + gamma)
        if gamma > 0.0 and 1.0 / raised >= lowest_snr:  # churn: to the time where σ̃ = (1 + γ) σ̃_s
            scaled = scaled + math.sqrt(raised**2 - level_s**2) * brownian_increment(scaled.shape, generator, scaled)
            s_hat = max(0.0, float(schedule.t_from_snr(1.0 / raised)))
            alpha_s = _values(schedule, s_hat)[0]
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

def _register(name: str, integrate, order: int, option: str | None = None, default: float = 0.0,
              noisy_option: bool = True, exact_law: LawRecursion = PROBED, **declared) -> None:
    """One diffusion sampler: ``integrate(field, x0, grid, schedule, option value, generator, trajectory, name)``,
    its own ``option`` at ``default`` (which makes it draw noise when > 0, unless ``noisy_option`` is False); a
    sampler without one gets 0. Its exact law is probed from its own run unless one is written for it
    (:mod:`.diffusion_laws`)."""
    register_method(Method(
        name,
        lambda r: integrate(r.field, r.x0, r.grid, r.schedule, r.options.get(option, 0.0), r.generator,
                            r.return_trajectory, name),
        options={option: default} if option else {}, random=(option if noisy_option else False) or False, order=order,
        family="diffusion",
        predictions=("data",), needs_schedule=True, exact_law=exact_law, **declared,
    ))


_register("ddim", integrate_ddim, order=1, option="eta", default=0.0, stages=1, exact_law=DDIMLaw())
_register("euler_ancestral", integrate_ddim, order=1, option="eta", default=1.0, stages=1, exact_law=DDIMLaw())
_register("dpmpp_2m", integrate_dpmpp_2m, order=2, stages=1, exact_law=DPMSolver2MLaw())
_register("dpmpp_2m_sde", integrate_dpmpp_2m, order=1, option="eta", default=1.0, stages=1)
_THIRD_ORDER_AS_SHIPPED = ("DPM-Solver++(3M) as its reference code, diffusers and k-diffusion write it is second order, "
                          "not third: its second difference is half what its φ₃ term needs (fmcore/solvers/"
                          "diffusion_samplers.py, integrate_dpmpp_3m)")
_register("dpmpp_3m", integrate_dpmpp_3m, order=2, stages=1, caveat=_THIRD_ORDER_AS_SHIPPED)
_register("dpmpp_3m_sde", integrate_dpmpp_3m, order=1, option="eta", default=1.0, stages=1)
_register("unipc", integrate_unipc, order=3, stages=1, exact_law=UniPCLaw())
_register("ipndm", integrate_ipndm, order=2, option="max_order", default=4.0, noisy_option=False, stages=1,
          start=edm_start_time,
          caveat="fourth-order Adams–Bashforth weights for constant steps, an Euler first step: second order on the "
                 "grids samplers use (2.1 on EDM's ρ = 7 grid), not fourth")
_register("deis", integrate_deis, order=3, option="max_order", default=3.0, noisy_option=False, stages=1,
          start=edm_start_time)
_register("deis_tab", integrate_deis_tab, order=3, option="max_order", default=3.0, noisy_option=False, stages=1,
          start=edm_start_time)
_register("lms", integrate_lms, order=4, option="max_order", default=4.0, noisy_option=False, stages=1,
          start=edm_start_time)
_register("edm_heun", integrate_edm_heun, order=2, option="churn", default=0.0, start=edm_start_time,
          exact_law=EDMHeunLaw())
