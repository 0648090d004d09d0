r"""Restart sampling (Xu et al. 2023, "Restart Sampling for Improving Generative Processes"), as ComfyUI's
``sample_restart`` ships it: EDM's Heun ODE steps on the grid, and once the solve reaches the noise level
``restart_sigma`` it is sent back up to ``restart_max`` with fresh forward noise and re-solved down again on a Karras
ρ = 7 grid of ``restart_steps`` levels — ``restart_times`` times — before going on along the grid.

In EDM's coordinates :math:`\tilde x = x/\alpha`, :math:`\tilde\sigma = \sigma/\alpha` (the path's own SNR, so on any
schedule): a restart from :math:`\tilde\sigma_{min}` to :math:`\tilde\sigma_{max}` is the forward process there,
:math:`\tilde x \leftarrow \tilde x + \sqrt{\tilde\sigma_{max}^2 - \tilde\sigma_{min}^2}\,\xi`, one Brownian draw. The
restart's ends are the positive grid levels nearest ``restart_sigma`` and ``restart_max`` (ComfyUI's ``argmin``,
which can pick the grid's final 0 and then steps from σ̃ = 0 to 0), and it is skipped where the second is not above
the first. NFE: two per Heun step, one on a step to σ̃ = 0, for the grid's
steps and each restart's ``restart_steps`` − 1. ComfyUI applies its default restart only to grids of ≥ 19 steps;
here the options say whether (``restart_times`` = 0: EDM's Heun on the grid alone).
"""

from __future__ import annotations

import math

from torch import Tensor

from .diffusion_samplers import _checked, _edm_coordinates, _values, edm_start_time
from .laws import PROBED
from .methods import Method, register_method
from .sde import brownian_increment


def karras_levels(count: int, low: float, high: float, rho: float = 7.0) -> list[float]:
    r""":math:`(\tilde\sigma_{max}^{1/\rho} + \tfrac{i}{n-1}(\tilde\sigma_{min}^{1/\rho} -
    \tilde\sigma_{max}^{1/\rho}))^\rho`, i = 0 … n − 1, from ``high`` down to ``low`` (k-diffusion's
    ``get_sigmas_karras`` without its appended 0)."""
    top, bottom = high ** (1.0 / rho), low ** (1.0 / rho)
    return [(top + i / (count - 1) * (bottom - top)) ** rho for i in range(count)]


def _heun(field, schedule, scaled: Tensor, level_s: float, level_t: float, time_at) -> Tensor:
    """One Heun step in (x̃, σ̃) from ``level_s`` to ``level_t`` (Euler to σ̃ = 0), each evaluation at our time of its
    level, ``time_at(level)``."""

    def data_at(level: float, sample: Tensor) -> Tensor:
        t = time_at(level)
        return field.data_prediction(t, _values(schedule, t)[0] * sample)

    slope = (scaled - data_at(level_s, scaled)) / level_s
    euler = scaled + (level_t - level_s) * slope
    if level_t == 0.0:
        return euler
    slope_next = (euler - data_at(level_t, euler)) / level_t
    return scaled + (level_t - level_s) * 0.5 * (slope + slope_next)


def _nearest(levels: list[float], value: float) -> int:
    """The index of the positive level nearest ``value`` (a restart cannot start from or go up to σ̃ = 0)."""
    return min((i for i in range(len(levels)) if levels[i] > 0.0), key=lambda i: abs(levels[i] - value))


def restart_plan(levels: list[float], restart_sigma: float, restart_max: float, restart_steps: int,
                 restart_times: int) -> list[tuple[float, float]]:
    """The (from, to) noise levels of every Heun step: the grid's, with ``restart_times`` copies of the restart's
    Karras levels after the step that reaches the level nearest ``restart_sigma`` (ComfyUI's step list)."""
    low_index, high_index = _nearest(levels, restart_sigma), _nearest(levels, restart_max)
    restart = karras_levels(restart_steps, levels[low_index], levels[high_index]) if high_index < low_index else []
    plan = []
    for i in range(len(levels) - 1):
        plan.append((levels[i], levels[i + 1]))
        if i + 1 == low_index and restart:
            plan.extend(list(zip(restart[:-1], restart[1:], strict=True)) * restart_times)
    return plan


def integrate_restart(request) -> tuple[Tensor, None, dict]:
    """The solve of the module docstring on ``request.grid``."""
    options = request.options
    steps, times = options["restart_steps"], options["restart_times"]
    if steps != int(steps) or steps < 2 or times != int(times):
        raise ValueError(f"restart: restart_steps must be an integer ≥ 2 and restart_times an integer ≥ 0, got "
                         f"{steps:g} and {times:g}")
    schedule, grid = request.schedule, request.grid.tolist()
    _edm_coordinates(schedule, grid[0], grid[1], "restart")  # refuses a start at α = 0
    values = [_values(schedule, t) for t in grid]
    levels = [sigma / alpha for alpha, sigma in values]
    time_of = dict(zip(levels, grid, strict=True))

    def time_at(level: float) -> float:
        """The grid's own time of a grid level (no round trip through the SNR), the SNR's time of any other."""
        return time_of[level] if level in time_of else float(schedule.t_from_snr(1.0 / level))

    plan = restart_plan(levels, options["restart_sigma"], options["restart_max"], int(steps), int(times))
    scaled = request.x0 / values[0][0]
    reached = levels[0]
    for index, (level_s, level_t) in enumerate(plan):
        if level_s > reached:  # a restart: the forward process from the level reached up to level_s
            scaled = scaled + math.sqrt(level_s**2 - reached**2) * brownian_increment(scaled.shape, request.generator,
                                                                                       scaled)
        scaled = _checked(_heun(request.field, schedule, scaled, level_s, level_t, time_at), "restart", index,
                          time_at(level_s), time_at(level_t))
        reached = level_t
    return values[-1][0] * scaled, None, {}


register_method(Method(
    "restart", integrate_restart,
    options={"restart_sigma": 0.1, "restart_max": 2.0, "restart_steps": 10.0, "restart_times": 2.0},
    random="restart_times", order=2, family="diffusion", predictions=("data",), needs_schedule=True,
    start=edm_start_time, exact_law=PROBED,
    caveat="restart sampling re-solves part of the path: its error at a step count is not an ODE solver's; it draws "
           "fresh noise at each restart (an SDE's law, not a flow map)",
))
