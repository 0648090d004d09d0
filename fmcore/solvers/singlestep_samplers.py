r"""Singlestep diffusion samplers, native, on any schedule: each step evaluates the model at intermediate noise levels
between its ends, and carries nothing to the next step.

Written, like :mod:`.diffusion_samplers`, in EDM's coordinates :math:`\tilde x = x/\alpha`, :math:`\tilde\sigma =
\sigma/\alpha`, with :math:`\lambda = -\log\tilde\sigma` (DPM-Solver's half log-SNR), the data prediction D and the
noise prediction :math:`\hat\varepsilon = (\tilde x - D)/\tilde\sigma`; a step s → t has :math:`h = \lambda_t -
\lambda_s`, and an intermediate point at :math:`\lambda_s + rh`, noise level :math:`\tilde\sigma_s^{1-r}
\tilde\sigma_t^{r}`, is evaluated at our time of that level. They need σ̃ finite where they start (α > 0), so on a
path with α₀ = 0 they start where σ̃ = 80.

======================= ======================================================================= =========
method                  step s → t                                                              order
======================= ======================================================================= =========
``dpm_solver_2s``       DPM-Solver-2 (noise prediction, r = ½): :math:`\tilde x_m = \tilde x_s +     2
                        (\tilde\sigma_m - \tilde\sigma_s)\hat\varepsilon_s`, :math:`\tilde x_t = \tilde x_s
                        + (\tilde\sigma_t - \tilde\sigma_s)\hat\varepsilon_m` (k-diffusion's ``sample_dpm_2``)
``dpm_solver_3s``       DPM-Solver-3 (noise prediction, r = ⅓, ⅔; :func:`integrate_dpm_solver_3s`)   3
``dpmpp_2s``            DPM-Solver++(2S) (data prediction, r = ½)                                   2
``dpmpp_2s_ancestral``  the same to k-diffusion's :math:`\tilde\sigma_{down}`, then noise              1 (weak)
                        :math:`\tilde\sigma_{up}\xi` (η = 1; :func:`integrate_dpmpp_2s_ancestral`)
``dpmpp_sde``           DPM++ SDE: both sub-steps ancestral, their noises correlated as increments   1 (weak)
                        of one Brownian motion in σ̃ (:func:`integrate_dpmpp_sde`; η = 1)
======================= ======================================================================= =========

A last step to σ̃ = 0 (λ = ∞) is DDIM's, :math:`\tilde x_t = D_s` (one NFE), as k-diffusion ends them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor

from .diffusion_samplers import _checked, _edm_coordinates, _register, _trajectory, _values, edm_start_time
from .sde import brownian_increment


def _data_at_level(field, schedule, level: float, scaled: Tensor) -> Tensor:
    """D at the sample :math:`\\tilde x` = ``scaled`` of noise level σ̃ = ``level``, evaluated at our time of that level."""
    t = float(schedule.t_from_snr(1.0 / level))
    return field.data_prediction(t, _values(schedule, t)[0] * scaled)


def _between(level_s: float, level_t: float, r: float) -> float:
    """The noise level at :math:`\\lambda_s + r h`: :math:`\\tilde\\sigma_s^{1-r}\\tilde\\sigma_t^r`."""
    return level_s ** (1.0 - r) * level_t**r


def _drive(field, x0: Tensor, grid: Tensor, schedule, return_trajectory: bool, name: str,
           step: Callable[[Tensor, Tensor, float, float], Tensor]):
    """The one loop of every singlestep sampler: for each step s → t, the sample :math:`\\tilde x_s`, its data
    prediction :math:`D_s` (one NFE) and ``step(scaled, data, level_s, level_t)`` → :math:`\\tilde x_t`; DDIM's
    :math:`\\tilde x_t = D_s` on a last step to σ̃ = 0."""
    times = grid.tolist()
    x, points = x0, ([x0] if return_trajectory else None)
    for index, (s, t) in enumerate(zip(times[:-1], times[1:], strict=True)):
        alpha_s, level_s, alpha_t, level_t = _edm_coordinates(schedule, s, t, name)
        data = field.data_prediction(s, x)
        scaled = data if level_t == 0.0 else step(x / alpha_s, data, level_s, level_t)
        x = _checked(alpha_t * scaled, name, index, s, t)
        if points is not None:
            points.append(x)
    return x, _trajectory(points), {}


def integrate_dpm_solver_2s(field, x0: Tensor, grid: Tensor, schedule, option: float, generator,
                            return_trajectory: bool, name: str = "dpm_solver_2s"):
    r"""DPM-Solver-2 (Lu et al. 2022, Algorithm 1, r₁ = ½) on the noise prediction. In :math:`\tilde x` its
    exponential integrator is a plain quadrature of :math:`d\tilde x/d\tilde\sigma = \hat\varepsilon`, and with
    :math:`\tilde\sigma_t(e^h - 1) = \tilde\sigma_s - \tilde\sigma_t` Algorithm 1 is the midpoint rule at the λ-midpoint,
    as k-diffusion's ``sample_dpm_2`` writes it (module table). Two NFE per step, one on a last step to σ̃ = 0."""

    def step(scaled: Tensor, data: Tensor, level_s: float, level_t: float) -> Tensor:
        noise = (scaled - data) / level_s
        level_m = _between(level_s, level_t, 0.5)
        middle = scaled + (level_m - level_s) * noise
        noise_m = (middle - _data_at_level(field, schedule, level_m, middle)) / level_m
        return scaled + (level_t - level_s) * noise_m

    return _drive(field, x0, grid, schedule, return_trajectory, name, step)


def integrate_dpm_solver_3s(field, x0: Tensor, grid: Tensor, schedule, option: float, generator,
                            return_trajectory: bool, name: str = "dpm_solver_3s"):
    r"""DPM-Solver-3 (Lu et al. 2022, Algorithm 2 with r₁ = ⅓, r₂ = ⅔; the reference code's
    ``singlestep_dpm_solver_third_order_update``, solver type "dpmsolver") on the noise prediction, in :math:`\tilde x`:

    .. math::
        u_1 = \tilde x_s - \tilde\sigma_{1}(e^{r_1h} - 1)\hat\varepsilon_s,\quad
        \Delta_1 = \hat\varepsilon(u_1) - \hat\varepsilon_s,\\
        u_2 = \tilde x_s - \tilde\sigma_{2}(e^{r_2h} - 1)\hat\varepsilon_s
              - \tilde\sigma_{2}\tfrac{r_2}{r_1}\big(\tfrac{e^{r_2h} - 1}{r_2h} - 1\big)\Delta_1,\quad
        \Delta_2 = \hat\varepsilon(u_2) - \hat\varepsilon_s,\\
        \tilde x_t = \tilde x_s - \tilde\sigma_t(e^h - 1)\hat\varepsilon_s
                     - \tfrac{\tilde\sigma_t}{r_2}\big(\tfrac{e^h - 1}{h} - 1\big)\Delta_2,

    :math:`\tilde\sigma_i` the level at :math:`\lambda_s + r_ih`. Three NFE per step, one on a last step to σ̃ = 0."""
    r_1, r_2 = 1.0 / 3.0, 2.0 / 3.0

    def step(scaled: Tensor, data: Tensor, level_s: float, level_t: float) -> Tensor:
        h = math.log(level_s / level_t)
        noise = (scaled - data) / level_s
        level_1, level_2 = _between(level_s, level_t, r_1), _between(level_s, level_t, r_2)
        u_1 = scaled - level_1 * math.expm1(r_1 * h) * noise
        delta_1 = (u_1 - _data_at_level(field, schedule, level_1, u_1)) / level_1 - noise
        u_2 = (scaled - level_2 * math.expm1(r_2 * h) * noise
               - level_2 * (r_2 / r_1) * (math.expm1(r_2 * h) / (r_2 * h) - 1.0) * delta_1)
        delta_2 = (u_2 - _data_at_level(field, schedule, level_2, u_2)) / level_2 - noise
        return scaled - level_t * math.expm1(h) * noise - (level_t / r_2) * (math.expm1(h) / h - 1.0) * delta_2

    return _drive(field, x0, grid, schedule, return_trajectory, name, step)


def ancestral_levels(level_s: float, level_t: float, eta: float) -> tuple[float, float]:
    r"""k-diffusion's ``get_ancestral_step`` in EDM noise levels: :math:`\tilde\sigma_{up} = \min(\tilde\sigma_t,
    \eta\,\tilde\sigma_t\sqrt{1 - \tilde\sigma_t^2/\tilde\sigma_s^2})` and :math:`\tilde\sigma_{down} =
    \sqrt{\tilde\sigma_t^2 - \tilde\sigma_{up}^2}`: a deterministic step to σ̃_down, then fresh noise back up to σ̃_t."""
    if eta == 0.0:
        return level_t, 0.0
    up = min(level_t, eta * math.sqrt(max(0.0, level_t**2 * (level_s**2 - level_t**2) / level_s**2)))
    return math.sqrt(max(0.0, level_t**2 - up**2)), up


def integrate_dpmpp_2s_ancestral(field, x0: Tensor, grid: Tensor, schedule, eta: float, generator,
                                 return_trajectory: bool, name: str = "dpmpp_2s_ancestral"):
    r"""DPM-Solver++(2S) (Lu et al. 2022, Algorithm 1 with r = ½) with k-diffusion's ancestral noise
    (``sample_dpmpp_2s_ancestral``; η = 0: the deterministic singlestep solver). A step s → t:
    :math:`(\tilde\sigma_{down}, \tilde\sigma_{up})` from :func:`ancestral_levels`, :math:`h = \lambda_{down} -
    \lambda_s`, then

    .. math::
        \tilde x_m = \frac{\tilde\sigma_m}{\tilde\sigma_s}\tilde x - (e^{-h/2} - 1)D_s,\quad
        \tilde\sigma_m = e^{-(\lambda_s + h/2)},\qquad
        \tilde x' = \frac{\tilde\sigma_{down}}{\tilde\sigma_s}\tilde x - (e^{-h} - 1)D(\tilde x_m; \tilde\sigma_m)
        + \tilde\sigma_{up}\xi;

    a step to σ̃_down = 0 is Euler, :math:`\tilde x' = D_s` (one NFE)."""

    def step(scaled: Tensor, data: Tensor, level_s: float, level_t: float) -> Tensor:
        down, up = ancestral_levels(level_s, level_t, eta)
        if down == 0.0:
            scaled = data
        else:
            h = math.log(level_s / down)
            level_mid = math.sqrt(level_s * down)
            middle = (level_mid / level_s) * scaled - math.expm1(-0.5 * h) * data
            scaled = (down / level_s) * scaled - math.expm1(-h) * _data_at_level(field, schedule, level_mid, middle)
        if up > 0.0:
            scaled = scaled + up * brownian_increment(scaled.shape, generator, scaled)
        return scaled

    return _drive(field, x0, grid, schedule, return_trajectory, name, step)


def substep_correlation(level_s: float, level_m: float, level_t: float) -> float:
    r"""The correlation of the normalised Brownian increments from σ̃_s to σ̃_m and from σ̃_s to σ̃_t (one Brownian
    motion in σ̃, as k-diffusion's ``BrownianTreeNoiseSampler``): :math:`\sqrt{(\tilde\sigma_s - \tilde\sigma_m)/
    (\tilde\sigma_s - \tilde\sigma_t)}`."""
    return math.sqrt((level_s - level_m) / (level_s - level_t))


def integrate_dpmpp_sde(field, x0: Tensor, grid: Tensor, schedule, eta: float, generator, return_trajectory: bool,
                        name: str = "dpmpp_sde"):
    r"""DPM++ SDE: k-diffusion's ``sample_dpmpp_sde`` (r = ½), DPM-Solver++(2S) with both sub-steps ancestral. A step
    s → t, :math:`\tilde\sigma_m = (\tilde\sigma_s\tilde\sigma_t)^{1/2}`, (down, up) from :func:`ancestral_levels`:

    .. math::
        \tilde x_m = D_s + \tfrac{d_1}{\tilde\sigma_s}(\tilde x - D_s) + u_1 n_1,\quad
        (d_1, u_1) = \mathrm{anc}(\tilde\sigma_s, \tilde\sigma_m),\qquad
        \tilde x' = D_m + \tfrac{d_2}{\tilde\sigma_s}(\tilde x - D_m) + u_2 n_2,\quad
        (d_2, u_2) = \mathrm{anc}(\tilde\sigma_s, \tilde\sigma_t),

    :math:`D_m = D(\tilde x_m; \tilde\sigma_m)`. Its noises are k-diffusion's Brownian tree in σ̃: the normalised
    increments :math:`n_1 \propto W(\tilde\sigma_m) - W(\tilde\sigma_s)` and :math:`n_2 \propto W(\tilde\sigma_t) -
    W(\tilde\sigma_s)` share the first, so :math:`\mathrm{corr}(n_1, n_2) = c` (:func:`substep_correlation`; 0.77 for
    σ̃_t = σ̃_s/2), drawn here as :math:`n_1 = \xi_1`, :math:`n_2 = c\,\xi_1 + \sqrt{1 - c^2}\,\xi_2`; different steps'
    increments are disjoint, so independent. η = 0: ``dpmpp_2s``. Two NFE per step, one on a last step to σ̃ = 0."""

    def step(scaled: Tensor, data: Tensor, level_s: float, level_t: float) -> Tensor:
        level_m = _between(level_s, level_t, 0.5)
        down_1, up_1 = ancestral_levels(level_s, level_m, eta)
        down_2, up_2 = ancestral_levels(level_s, level_t, eta)
        middle = data + (down_1 / level_s) * (scaled - data)
        second = None
        if eta > 0.0:
            first = brownian_increment(scaled.shape, generator, scaled)
            fresh = brownian_increment(scaled.shape, generator, scaled)
            c = substep_correlation(level_s, level_m, level_t)
            second = c * first + math.sqrt(1.0 - c * c) * fresh
            middle = middle + up_1 * first
        data_m = _data_at_level(field, schedule, level_m, middle)
        scaled = data_m + (down_2 / level_s) * (scaled - data_m)
        return scaled if second is None else scaled + up_2 * second

    return _drive(field, x0, grid, schedule, return_trajectory, name, step)


_register("dpm_solver_2s", integrate_dpm_solver_2s, order=2, start=edm_start_time)
_register("dpm_solver_3s", integrate_dpm_solver_3s, order=3, start=edm_start_time)
_register("dpmpp_2s", integrate_dpmpp_2s_ancestral, order=2, option="eta", default=0.0, start=edm_start_time)
_register("dpmpp_2s_ancestral", integrate_dpmpp_2s_ancestral, order=1, option="eta", default=1.0, start=edm_start_time)
_register("dpmpp_sde", integrate_dpmpp_sde, order=1, option="eta", default=1.0, start=edm_start_time, draws_per_step=2)
