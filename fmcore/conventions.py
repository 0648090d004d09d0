r"""How a network reads the noise level: what it is called with at a point :math:`(t, x)` of our path.

A network is trained on its own path and clock. Two Gaussian paths at the same signal-to-noise ratio
:math:`r = \alpha/\sigma` hold the same distribution up to a scale (:math:`x_t = \alpha x_1 + \sigma\varepsilon
= \rho(\bar\alpha x_1 + \bar\sigma\varepsilon)` with :math:`\rho = \sqrt{\alpha^2 + \sigma^2}`), so a network trained
on any of them can be asked at our time t: at its own time of SNR :math:`r_t`, on :math:`x` rescaled to its
coordinates. Its predictions of :math:`\varepsilon` and :math:`x_1` are the same in every coordinate system; only its
inputs change (the same mapping the peer adapters use for the libraries' schedulers).

==========================  =========================================  ================================================
convention                  the network is called as                   trained on
==========================  =========================================  ================================================
:class:`PathTime`           ``model(t, x)``                            our path and clock (the suite's own models)
:class:`DDPMTimesteps`      ``model(τ, x/ρ)``, τ ∈ [0, T − 1] the      a discrete DDPM table ᾱ_0 > … > ᾱ_{T−1}
                            (fractional) timestep of SNR r_t           (diffusers' ``alphas_cumprod``)
:class:`NoiseLevel`         ``model(σ/α, x/α)``                        EDM's x = x₁ + σ̃ε (σ̃ = 1/r; a denoiser D(x; σ))
==========================  =========================================  ================================================

Where our path reaches SNRs the network was never trained at (the table's ends, σ̃ outside a stated range, or
α = 0 for a noise level), the field evaluates at the nearest time inside the range (:meth:`TimeConvention.time_range`;
recorded in the field's ``clip``), as :class:`~fmcore.model_field.ModelField` does at singular ends.

A new convention is one subclass here.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor

from .schedules import Schedule

__all__ = ["TimeConvention", "PathTime", "DDPMTimesteps", "NoiseLevel"]


class TimeConvention(ABC):
    """A network's clock and coordinates."""

    @abstractmethod
    def network_inputs(self, schedule: Schedule, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(time argument, x argument)`` the network takes at our time ``t`` (0-d or ``(n,)``) and point ``x``."""

    def time_range(self, schedule: Schedule, t_eps: float) -> tuple[float, float]:
        """Our times ``[low, high]`` whose noise levels the network knows (all of [0, 1] unless said otherwise)."""
        return 0.0, 1.0

    @abstractmethod
    def fingerprint(self) -> str:
        """What defines the convention, for run records and cache keys."""


class PathTime(TimeConvention):
    """The network takes our own time and point: ``model(t, x)``."""

    def network_inputs(self, schedule: Schedule, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        return t, x

    def fingerprint(self) -> str:
        return "path_time"

    def __repr__(self) -> str:
        return "PathTime()"


def _snr_range_times(schedule: Schedule, low_snr: float, high_snr: float) -> tuple[float, float]:
    """Our times of SNR ``low_snr`` and ``high_snr``, each clamped to the SNRs the schedule covers on [0, 1]."""
    lowest, highest = float(schedule.snr(0.0)), float(schedule.snr(1.0))

    def time_of(snr: float) -> float:
        return float(schedule.t_from_snr(min(max(snr, lowest), highest)))

    return time_of(low_snr), time_of(high_snr)


class DDPMTimesteps(TimeConvention):
    r"""A discrete DDPM clock: timestep i has :math:`x = \sqrt{\bar\alpha_i}x_1 + \sqrt{1-\bar\alpha_i}\varepsilon`.

    At our time t the network gets the fractional timestep τ whose log-SNR, interpolated linearly between the
    table's integer entries (k-diffusion's ``DiscreteSchedule.sigma_to_t``, in log SNR), equals
    :math:`\log r_t`, and :math:`x/\rho` (variance-preserving coordinates). ``alphas_cumprod`` decreases strictly
    in (0, 1); outside its SNR range the field evaluates at the range's end."""

    def __init__(self, alphas_cumprod: Sequence[float] | Tensor):
        table = torch.as_tensor(alphas_cumprod, dtype=torch.float64).detach().cpu()
        if table.dim() != 1 or table.numel() < 2:
            raise ValueError(f"alphas_cumprod must be a 1-d table of at least 2 entries, got shape {tuple(table.shape)}")
        if not bool(((table > 0) & (table < 1)).all()):
            raise ValueError("alphas_cumprod must lie in (0, 1) (ᾱ = 0 or 1 has no finite SNR); got values from "
                             f"{float(table.min()):.6g} to {float(table.max()):.6g}")
        if not bool((table[1:] < table[:-1]).all()):
            raise ValueError("alphas_cumprod must decrease strictly (timestep 0 the least noisy)")
        self.alphas_cumprod = table
        self.log_snr = 0.5 * (torch.log(table) - torch.log1p(-table))  # log(α/σ) per timestep, decreasing

    @classmethod
    def linear(cls, beta_start: float = 1e-4, beta_end: float = 0.02, timesteps: int = 1000) -> DDPMTimesteps:
        """DDPM's table (Ho et al. 2020): β linear from ``beta_start`` to ``beta_end``, ᾱ_i = ∏_{j≤i}(1 − β_j)."""
        betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
        return cls(torch.cumprod(1.0 - betas, 0))

    @classmethod
    def scaled_linear(cls, beta_start: float = 0.00085, beta_end: float = 0.012, timesteps: int = 1000) -> DDPMTimesteps:
        """Stable Diffusion's table: √β linear from √``beta_start`` to √``beta_end``."""
        betas = torch.linspace(math.sqrt(beta_start), math.sqrt(beta_end), timesteps, dtype=torch.float64) ** 2
        return cls(torch.cumprod(1.0 - betas, 0))

    def timestep(self, log_snr: Tensor) -> Tensor:
        """The fractional timestep of each ``log_snr`` (clamped to the table's range), as a float64 tensor."""
        increasing = self.log_snr.flip(0).to(log_snr.device)
        last = len(increasing) - 1
        clamped = log_snr.to(torch.float64).clamp(float(increasing[0]), float(increasing[-1]))
        upper = torch.searchsorted(increasing, clamped).clamp(1, last)
        fraction = (clamped - increasing[upper - 1]) / (increasing[upper] - increasing[upper - 1])
        return last - (upper - 1 + fraction)

    def network_inputs(self, schedule: Schedule, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        values = schedule.values(t)
        log_snr = torch.log(values.alpha) - torch.log(values.sigma)
        scale = torch.hypot(values.alpha, values.sigma)
        return self.timestep(log_snr).to(x.dtype), x / (scale.unsqueeze(-1) if scale.dim() == 1 else scale)

    def time_range(self, schedule: Schedule, t_eps: float) -> tuple[float, float]:
        return _snr_range_times(schedule, math.exp(float(self.log_snr[-1])), math.exp(float(self.log_snr[0])))

    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.alphas_cumprod.numpy().tobytes()).hexdigest()[:16]
        return f"ddpm_timesteps:{len(self.alphas_cumprod)}:{digest}"

    def __repr__(self) -> str:
        return f"DDPMTimesteps({len(self.alphas_cumprod)} steps, ᾱ from {float(self.alphas_cumprod[0]):.6g} to " \
               f"{float(self.alphas_cumprod[-1]):.6g})"


class NoiseLevel(TimeConvention):
    r"""EDM's coordinates (Karras et al. 2022): :math:`\tilde x = x/\alpha = x_1 + \tilde\sigma\varepsilon`, and the
    network takes ``(σ̃, x̃)`` with :math:`\tilde\sigma = \sigma/\alpha` — a denoiser D(x̃; σ̃) is a data prediction
    in this convention. ``sigma_min``/``sigma_max`` bound the levels it was trained on (optional); where α = 0 (σ̃
    infinite) the field evaluates ``t_eps`` in."""

    def __init__(self, sigma_min: float | None = None, sigma_max: float | None = None):
        for name, value in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0 or None, got {value!r}")
        if sigma_min is not None and sigma_max is not None and sigma_min >= sigma_max:
            raise ValueError(f"sigma_min must be below sigma_max, got {sigma_min} and {sigma_max}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def network_inputs(self, schedule: Schedule, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        values = schedule.values(t)
        alpha = values.alpha.unsqueeze(-1) if values.alpha.dim() == 1 else values.alpha
        return values.sigma / values.alpha, x / alpha

    def time_range(self, schedule: Schedule, t_eps: float) -> tuple[float, float]:
        low_snr = 0.0 if self.sigma_max is None else 1.0 / self.sigma_max
        high_snr = math.inf if self.sigma_min is None else 1.0 / self.sigma_min
        low, high = _snr_range_times(schedule, low_snr, high_snr)
        if float(schedule(low).alpha) == 0.0:  # σ̃ = ∞ there
            low = t_eps
        return low, high

    def fingerprint(self) -> str:
        return f"noise_level:{self.sigma_min}:{self.sigma_max}"

    def __repr__(self) -> str:
        return f"NoiseLevel(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"
