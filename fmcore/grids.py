r"""Time grids for fixed-step samplers: 1-D increasing float64 tensors from :math:`t_0` to :math:`t_1`.

``get_grid(name, steps, schedule, **params)`` returns ``steps + 1`` times. Grids defined in noise level
(``karras``, ``logsnr``) live in the EDM noise level :math:`\varsigma = \sigma_t/\alpha_t = 1/\mathrm{SNR}`
and are mapped to t through ``schedule.t_from_snr``, so they work on every schedule. Those grids span the
schedule's noise levels on :math:`[t_0, t_1]` clipped to ``[sigma_min, sigma_max]`` (EDM's 0.002 and 80 by
default; the level is infinite where :math:`\alpha = 0` and zero where :math:`\sigma = 0`). A clipped start
makes the grid begin at ``grid[0] > t0`` (the sampler records it); a clipped end adds a last step to
:math:`t_1` exactly.

Adding a grid is one function with ``@register_grid("name")``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ._checks import check_allocation, check_instance, check_int, check_number, check_positive
from ._registry import Registry
from .schedules import Schedule

__all__ = ["get_grid", "register_grid", "GRIDS", "check_grid"]

GRIDS = Registry("grid")
register_grid = GRIDS.register

EDM_SIGMA_MIN = 0.002
EDM_SIGMA_MAX = 80.0


def get_grid(
    name: str, steps: int, schedule: Schedule | None = None, t0: float = 0.0, t1: float = 1.0, **params: float
) -> Tensor:
    """The named grid with ``steps`` intervals on ``[t0, t1]`` (float64, CPU)."""
    GRIDS.lookup(name)
    steps = check_int("steps", steps)
    check_allocation("steps", steps, f"a grid of {steps} steps (and its working copies)", 4 * 8.0 * (steps + 1))
    t0, t1 = check_number("t0", t0, 0.0, 1.0), check_number("t1", t1, 0.0, 1.0)
    if schedule is not None:
        check_instance("schedule", schedule, Schedule, "see fmcore.schedules.get_schedule")
    if not (t0 < t1):
        raise ValueError(f"the grid's interval must satisfy 0 ≤ t0 < t1 ≤ 1, got t0={t0}, t1={t1}")
    grid = GRIDS.build(name, steps, schedule=schedule, t0=t0, t1=t1, **params)
    check_grid(grid)
    return grid


def check_grid(grid: Tensor, increasing: bool = True) -> None:
    """Raise unless ``grid`` is a 1-D tensor of ≥ 2 finite times in [0, 1], strictly monotone."""
    check_instance("grid", grid, Tensor, "a 1-D tensor of times")
    if grid.dim() != 1 or grid.numel() < 2:
        raise ValueError(f"a grid must be a 1-D tensor of at least 2 times, got shape {tuple(grid.shape)}")
    if not bool(torch.isfinite(grid).all()) or float(grid.min()) < 0 or float(grid.max()) > 1:
        raise ValueError(f"grid times must be finite and lie in [0, 1], got min {float(grid.min())}, max {float(grid.max())}")
    steps = grid[1:] - grid[:-1]
    if increasing and not bool((steps > 0).all()):
        raise ValueError("grid times must be strictly increasing (t = 0 is noise, t = 1 is data)")
    if not increasing and not bool((steps < 0).all()):
        raise ValueError("grid times must be strictly decreasing here (likelihoods integrate from t = 1 to t = 0)")


def _require_schedule(name: str, schedule: Schedule | None) -> Schedule:
    if schedule is None:
        raise ValueError(f"grid {name!r} is defined in noise level and needs a schedule (get_grid(..., schedule=...))")
    check_instance("schedule", schedule, Schedule, "see fmcore.schedules.get_schedule")
    return schedule


def _noise_level_range(
    schedule: Schedule, t0: float, t1: float, sigma_min, sigma_max
) -> tuple[float, float, bool, bool]:
    """The noise levels :math:`\\varsigma = \\sigma/\\alpha` the grid spans: the schedule's own at t0 and t1,
    clipped to ``[sigma_min, sigma_max]`` (EDM's [0.002, 80] when not given); and whether each end was clipped."""
    ends = schedule(torch.tensor([t0, t1], dtype=torch.float64))
    level_start, level_end = (ends.sigma / ends.alpha).tolist()  # inf where α = 0
    sigma_min = EDM_SIGMA_MIN if sigma_min is None else check_positive("sigma_min", sigma_min)
    sigma_max = EDM_SIGMA_MAX if sigma_max is None else check_positive("sigma_max", sigma_max)
    high, low = min(sigma_max, level_start), max(sigma_min, level_end)
    if not low < high:
        raise ValueError(
            f"the noise-level range [{low:.4g}, {high:.4g}] is empty: sigma_min/sigma_max must overlap the schedule's "
            f"[{level_end:.4g}, {level_start:.4g}] on [t0, t1]"
        )
    return low, high, high < level_start, low > level_end


def _noise_level_grid(
    schedule: Schedule, steps: int, t0: float, t1: float, sigma_min, sigma_max, spacing: Callable[[float, float, int], Tensor]
) -> Tensor:
    """``spacing(high, low, count)`` decreasing noise levels mapped to increasing times, ``steps`` intervals in all.

    Unclipped ends are set to ``t0``/``t1`` exactly (no round-off from the SNR inversion); a clipped end at
    :math:`t_1` gets a last step to ``t1``, as EDM's final step to σ = 0.
    """
    low, high, clipped_start, clipped_end = _noise_level_range(schedule, t0, t1, sigma_min, sigma_max)
    count = steps if clipped_end else steps + 1
    if count < 2:
        raise ValueError("a noise-level grid needs steps ≥ 2 when it ends with a step to noise level 0")
    times = schedule.t_from_snr(1.0 / spacing(high, low, count))
    if not clipped_start:
        times[0] = t0
    if clipped_end:
        times = torch.cat([times, torch.tensor([t1], dtype=torch.float64)])
    else:
        times[-1] = t1
    return times


@register_grid("uniform")
def uniform_grid(steps: int, schedule: Schedule | None = None, t0: float = 0.0, t1: float = 1.0) -> Tensor:
    """:math:`t_i = t_0 + (t_1 - t_0)\\,i/N`."""
    return torch.linspace(t0, t1, steps + 1, dtype=torch.float64)


@register_grid("cosine")
def cosine_grid(steps: int, schedule: Schedule | None = None, t0: float = 0.0, t1: float = 1.0) -> Tensor:
    """:math:`t_i = t_0 + (t_1 - t_0)(1 - \\cos(\\pi i/N))/2`: dense at both ends."""
    fraction = 0.5 * (1.0 - torch.cos(math.pi * torch.arange(steps + 1, dtype=torch.float64) / steps))
    return t0 + (t1 - t0) * fraction


@register_grid("karras")
def karras_grid(
    steps: int,
    schedule: Schedule | None = None,
    t0: float = 0.0,
    t1: float = 1.0,
    rho: float = 7.0,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
) -> Tensor:
    r"""EDM's ρ-grid (Karras et al. 2022, eq. 5) in noise level, mapped to t through the schedule.

    :math:`\varsigma_i = (\varsigma_{max}^{1/\rho} + \tfrac{i}{N'-1}(\varsigma_{min}^{1/\rho} - \varsigma_{max}^{1/\rho}))^\rho`,
    with :math:`N' = N` points when a final step to :math:`t_1` is appended (:math:`\sigma_{t_1} = 0`) and
    :math:`N' = N + 1` otherwise, so that the grid always has ``steps`` intervals.
    """
    schedule = _require_schedule("karras", schedule)
    rho = check_positive("rho", rho)

    def rho_spacing(high: float, low: float, count: int) -> Tensor:
        fraction = torch.arange(count, dtype=torch.float64) / (count - 1)
        top, bottom = torch.tensor([high, low], dtype=torch.float64) ** (1 / rho)  # inf, not OverflowError, for tiny ρ
        levels = (top + fraction * (bottom - top)) ** rho
        if not bool(torch.isfinite(levels).all()) or not bool((levels[1:] < levels[:-1]).all()):
            raise ValueError(f"rho = {rho:g} is too {'large' if rho > 1 else 'small'} for float64: the {count} noise levels "
                             f"(ς_max^(1/ρ) + i/(N-1)·(ς_min^(1/ρ) - ς_max^(1/ρ)))^ρ from {high:g} to {low:g} no longer "
                             "decrease strictly (EDM uses ρ = 7)")
        return levels

    return _noise_level_grid(schedule, steps, t0, t1, sigma_min, sigma_max, rho_spacing)


@register_grid("logsnr")
def logsnr_grid(
    steps: int,
    schedule: Schedule | None = None,
    t0: float = 0.0,
    t1: float = 1.0,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
) -> Tensor:
    r"""Uniform in :math:`\lambda = \log(\alpha_t/\sigma_t)` (DPM-Solver's choice), clipped as described above."""
    schedule = _require_schedule("logsnr", schedule)

    def log_spacing(high: float, low: float, count: int) -> Tensor:
        return torch.exp(torch.linspace(math.log(high), math.log(low), count, dtype=torch.float64))

    return _noise_level_grid(schedule, steps, t0, t1, sigma_min, sigma_max, log_spacing)


def _times_of_levels(schedule: Schedule, levels: Tensor, t0: float, t1: float) -> Tensor:
    """Decreasing noise levels ς = σ/α (∞ allowed first, 0 last) as increasing times, clamped to [t0, t1]."""
    lowest, highest = float(schedule.snr(t0)), float(schedule.snr(t1))
    snr = 1.0 / levels
    times = schedule.t_from_snr(snr.clamp(lowest, highest)).clamp(t0, t1)
    at_start, at_end = snr <= lowest * (1 + 1e-12), snr >= highest * (1 - 1e-12)
    times = torch.where(at_start, t0, torch.where(at_end, t1, times))  # the path's ends exactly, no round-off
    if not bool((times[1:] > times[:-1]).all()):
        raise ValueError(f"{len(times) - 1} steps of these noise levels ({levels[0]:.4g} … {levels[-1]:.4g}) do not fit "
                         f"in the noise levels of {schedule!r} on [{t0}, {t1}]: more than one falls outside them")
    return times


FLUX_SHIFT = {"base_seq_len": 256, "max_seq_len": 4096, "base_shift": 0.5, "max_shift": 1.15}
"""The resolution-dependent shift's line (diffusers' ``calculate_shift``, FLUX.1's scheduler config): log s rises
linearly from ``base_shift`` at ``base_seq_len`` image tokens to ``max_shift`` at ``max_seq_len``."""


@register_grid("sd3_shift")
def sd3_shift_grid(
    steps: int,
    schedule: Schedule | None = None,
    t0: float = 0.0,
    t1: float = 1.0,
    shift: float | None = None,
    image_seq_len: int | None = None,
) -> Tensor:
    r"""Stable Diffusion 3's time shift (Esser et al. 2024) of a grid uniform in the rectified-flow noise level, mapped
    to our time through the SNR.

    A point of our path at SNR r = α/σ is, in rectified-flow coordinates :math:`x/(\alpha + \sigma)`, at noise level
    :math:`s_{rf} = \sigma/(\alpha + \sigma) = 1/(1 + r)`. The grid takes :math:`s` uniform, shifts each,
    :math:`s' = \mathrm{shift}\cdot s/(1 + (\mathrm{shift} - 1)s)` (SD3's default ``shift`` = 3; 1: no shift; on
    ``cond_ot`` that is the uniform grid), and maps :math:`s'` back to the time of SNR :math:`(1 - s')/s'`. The
    uniform :math:`s` runs between the levels that the shift maps onto :math:`s_{rf}` at ``t0`` and ``t1``
    (:math:`s = s'/(\mathrm{shift} - (\mathrm{shift} - 1)s')`), so the grid spans the path's own ends: from 1 to 0
    where the path runs from pure noise to data, as SD3's scheduler, and e.g. from σ_max on a ``ve`` path. With
    ``image_seq_len`` (image tokens) instead of ``shift``, FLUX.1's "dynamic" shift:
    :math:`\log\mathrm{shift}` linear in the token count (:data:`FLUX_SHIFT`).
    """
    schedule = _require_schedule("sd3_shift", schedule)
    if shift is not None and image_seq_len is not None:
        raise ValueError("give shift or image_seq_len (FLUX.1's resolution-dependent shift), not both")
    if image_seq_len is not None:
        tokens = check_int("image_seq_len", image_seq_len)
        slope = (FLUX_SHIFT["max_shift"] - FLUX_SHIFT["base_shift"]) / (FLUX_SHIFT["max_seq_len"] - FLUX_SHIFT["base_seq_len"])
        shift = math.exp(FLUX_SHIFT["base_shift"] + slope * (tokens - FLUX_SHIFT["base_seq_len"]))
    shift = 3.0 if shift is None else check_positive("shift", shift)
    ends = schedule(torch.tensor([t0, t1], dtype=torch.float64))
    ends_rf = ends.sigma / (ends.alpha + ends.sigma)
    start, end = (ends_rf / (shift - (shift - 1.0) * ends_rf)).tolist()  # the unshifted levels that shift onto the ends
    uniform = torch.linspace(start, end, steps + 1, dtype=torch.float64)
    shifted = shift * uniform / (1.0 + (shift - 1.0) * uniform)
    return _times_of_levels(schedule, shifted / (1.0 - shifted), t0, t1)  # ς = σ/α = s'/(1 − s')


AYS_SIGMAS = {
    "sd15": (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029),
    "sdxl": (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029),
}
"""Align Your Steps' published 10-step noise levels σ/α (Sabour et al. 2024; NVIDIA's "how to" page, which diffusers'
``AysSchedules`` and ComfyUI's ``AlignYourStepsScheduler`` copy), optimised for Stable Diffusion 1.5 and SDXL."""


@register_grid("ays")
def ays_grid(steps: int, schedule: Schedule | None = None, t0: float = 0.0, t1: float = 1.0, model: str = "sd15") -> Tensor:
    r"""Align Your Steps: the published 10-step noise levels of ``model`` (:data:`AYS_SIGMAS`), as its authors' how-to
    and ComfyUI apply them — ``steps + 1`` levels interpolated linearly in log σ over an even spacing of the 11
    published ones (the published values themselves at 10 steps), the last replaced by 0 — mapped to our time through
    the SNR. The first level (14.6) is a time after t = 0 on a path that starts at pure noise (the grid begins there;
    the sampler records it)."""
    schedule = _require_schedule("ays", schedule)
    if model not in AYS_SIGMAS:
        raise ValueError(f"model must be one of {sorted(AYS_SIGMAS)} (the published schedules), got {model!r}")
    published = torch.tensor(AYS_SIGMAS[model], dtype=torch.float64)
    position = torch.linspace(0, len(published) - 1, steps + 1, dtype=torch.float64)
    lower = position.floor().long().clamp(max=len(published) - 2)
    fraction = position - lower
    log_levels = torch.log(published)
    levels = torch.exp(log_levels[lower] + fraction * (log_levels[lower + 1] - log_levels[lower]))
    levels[-1] = 0.0
    return _times_of_levels(schedule, levels, t0, t1)


@register_grid("optimal")
def optimal(steps: int, schedule: Schedule | None = None, t0: float = 0.0, t1: float = 1.0, method: str | None = None,
            target: str = "gaussian", target_params: dict | None = None, diffusion: str | None = None,
            diffusion_params: dict | None = None, method_params: dict | None = None, start: str = "prior",
            metric: str = "w2", free_start: bool = False) -> Tensor:
    """The grid minimising ``method``'s exact ``metric`` on the Gaussian target ``get_target(target,
    **target_params)`` (W2 to the data by default), from :func:`fmcore.optimal_grids.optimal_grid`, for the method
    with its ``method_params`` and the diffusion ``get_diffusion(diffusion, **diffusion_params)`` where it takes one:
    between where the method starts on ``schedule`` (or ``t0``, if later; with ``free_start``, from there on) and
    ``t1``; cached, so a sweep computes it once per process. In a sweep a cell supplies its own method, target,
    diffusion and their parameters (``fmbench.cells.grid_arguments``)."""
    from .optimal_grids import GridObjective, optimal_grid  # it builds on the solvers, which build on this module
    from .solvers import get_diffusion
    from .targets import get_target

    if schedule is None:
        raise ValueError("grid 'optimal' is optimal for a schedule: get_grid('optimal', steps, schedule, method=...)")
    check_instance("schedule", schedule, Schedule, "see fmcore.schedules.get_schedule")
    if method is None:
        raise ValueError("the optimal grid needs method=: the method it is optimal for (one whose exact law is "
                         "differentiable in its grid: see fmcore.optimal_grids)")
    gaussian = get_target(target, **(target_params or {}))
    noise = get_diffusion(diffusion, **(diffusion_params or {})) if diffusion is not None else None
    options = dict(method_params or {})
    default = GridObjective(gaussian, schedule, method, noise, start, metric, options).default_grid(steps)
    return optimal_grid(gaussian, schedule, method, steps, noise, start=start, metric=metric,
                        ends=(max(t0, float(default[0])), t1), free_start=bool(free_start), **options).grid.clone()
