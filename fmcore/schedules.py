r"""Affine Gaussian probability paths ("schedules").

A schedule fixes the path :math:`x_t = \alpha_t x_1 + \sigma_t \varepsilon` with
:math:`\varepsilon \sim N(0, I)`, time :math:`t \in [0, 1]`, :math:`t = 0` noise and :math:`t = 1` data
(``docs/design.md``, "Conventions" and "Schedules"). Each schedule is a few lines returning
:math:`\alpha_t, \sigma_t` and their time derivatives in closed form, in the style of ``flow_matching.path.scheduler``.

Besides :math:`\dot\sigma_t` every schedule returns the product :math:`\sigma_t\dot\sigma_t =
\tfrac12 \tfrac{d}{dt}\sigma_t^2` in closed form. The marginal velocity only ever needs that product
(the noise prediction carries a factor :math:`\sigma_t`), and it stays finite where :math:`\dot\sigma_t`
alone does not (``linear_vp`` and ``vp`` at :math:`t = 1`).

Adding a schedule is one class with ``@register_schedule("name")`` in this file.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from ._checks import TimeLike, as_time, check_positive
from ._registry import Registry

__all__ = [
    "ScheduleValues",
    "Schedule",
    "get_schedule",
    "register_schedule",
    "SCHEDULES",
]


@dataclass(frozen=True)
class ScheduleValues:
    """:math:`\\alpha_t, \\sigma_t`, their derivatives and :math:`\\sigma_t\\dot\\sigma_t`, shaped like ``t``."""

    alpha: Tensor
    sigma: Tensor
    d_alpha: Tensor
    d_sigma: Tensor
    sigma_d_sigma: Tensor


SCHEDULES = Registry("schedule")
register_schedule = SCHEDULES.register


def get_schedule(name: str, **params: float) -> Schedule:
    """Build the schedule registered as ``name`` with its parameters, e.g. ``get_schedule("vp", beta_max=20)``."""
    return SCHEDULES.build(name, **params)


class Schedule(ABC):
    """Base class: subclasses implement :meth:`values` on a validated time tensor."""

    name: str = "schedule"

    def __call__(self, t: TimeLike) -> ScheduleValues:
        """Evaluate at ``t`` (float, 0-d or ``(n,)`` tensor in [0, 1]); float64 for Python numbers."""
        return self.values(as_time(t, like=t if isinstance(t, Tensor) and t.is_floating_point() else None))

    @abstractmethod
    def values(self, t: Tensor) -> ScheduleValues:
        """Closed forms at an already validated time tensor ``t``."""

    @property
    def params(self) -> dict[str, float]:
        """The parameters that define this schedule (for records and hashes)."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.params.items())
        return f"{self.name}({args})"

    @property
    def prior_std(self) -> float:
        """:math:`\\sigma_0`: samplers start from :math:`N(0, \\sigma_0^2 I)`."""
        return float(self(0.0).sigma)

    def snr(self, t: TimeLike) -> Tensor:
        """Signal-to-noise ratio :math:`\\alpha_t / \\sigma_t` (``inf`` where :math:`\\sigma_t = 0`)."""
        values = self(t)
        return values.alpha / values.sigma

    def t_from_snr(self, snr: TimeLike) -> Tensor:
        """Invert :meth:`snr`. Closed form in subclasses where one exists; bisection here.

        The SNR of every schedule increases with ``t``; values beyond the range the schedule reaches
        on [0, 1] raise ``ValueError``.
        """
        snr_tensor = self._check_snr(snr)
        return self._t_from_snr_bisection(snr_tensor)

    def _check_snr(self, snr: TimeLike) -> Tensor:
        snr_tensor = torch.as_tensor(snr, dtype=torch.float64)
        if bool(torch.isnan(snr_tensor).any()) or bool((snr_tensor < 0).any()):
            raise ValueError(f"snr must be ≥ 0 (it is α/σ), got {snr_tensor.flatten()[:3].tolist()}")
        low, high = float(self.snr(0.0)), float(self.snr(1.0))
        tolerance = 1e-9 * max(1.0, high if math.isfinite(high) else 1.0)
        if bool((snr_tensor < low - tolerance).any()) or bool((snr_tensor > high + tolerance).any()):
            raise ValueError(
                f"snr must lie in [{low:.6g}, {high:.6g}], the range {self!r} covers on t ∈ [0, 1]; "
                f"got values from {float(snr_tensor.min()):.6g} to {float(snr_tensor.max()):.6g}"
            )
        return snr_tensor

    def _t_from_snr_bisection(self, snr: Tensor, iterations: int = 200) -> Tensor:
        """Bisection on the monotone map t ↦ α_t/σ_t, to float64 resolution."""
        lower = torch.zeros_like(snr)
        upper = torch.ones_like(snr)
        for _ in range(iterations):
            middle = 0.5 * (lower + upper)
            below = self.snr(middle) < snr
            lower = torch.where(below, middle, lower)
            upper = torch.where(below, upper, middle)
        return 0.5 * (lower + upper)


@register_schedule("cond_ot")
class CondOT(Schedule):
    r""":math:`\alpha_t = t,\ \sigma_t = 1 - (1 - \sigma_{min}) t` (Lipman et al.; rectified flow for σ_min = 0)."""

    def __init__(self, sigma_min: float = 0.0):
        self.sigma_min = check_positive("sigma_min", sigma_min, allow_zero=True)
        if self.sigma_min >= 1:
            raise ValueError(f"sigma_min must lie in [0, 1), got {sigma_min}")

    @property
    def params(self) -> dict[str, float]:
        return {"sigma_min": self.sigma_min}

    def values(self, t: Tensor) -> ScheduleValues:
        slope = 1.0 - self.sigma_min
        sigma = 1.0 - slope * t
        d_sigma = torch.full_like(t, -slope)
        return ScheduleValues(t, sigma, torch.ones_like(t), d_sigma, sigma * d_sigma)

    def t_from_snr(self, snr: TimeLike) -> Tensor:
        # snr = t / (1 - (1 - σ_min) t)  ⇔  t = snr / (1 + (1 - σ_min) snr)
        snr_tensor = self._check_snr(snr)
        t = snr_tensor / (1.0 + (1.0 - self.sigma_min) * snr_tensor)
        return torch.where(torch.isinf(snr_tensor), torch.ones_like(t), t).clamp(0.0, 1.0)


@register_schedule("cosine")
class Cosine(Schedule):
    r""":math:`\alpha_t = \sin(\pi t / 2),\ \sigma_t = \cos(\pi t / 2)` (trigonometric / VP-cosine path).

    σ is computed as :math:`\sin(\pi(1 - t)/2)`: exactly 0 at t = 1 (``cos(π/2)`` is 6.1e-17 in floating point,
    and a sampler that divides by σ/α on its last step, such as EDM's Heun, then stalls at an error of 1e-2) and
    accurate to full relative precision near it."""

    def values(self, t: Tensor) -> ScheduleValues:
        alpha, sigma = torch.sin(0.5 * math.pi * t), torch.sin(0.5 * math.pi * (1.0 - t))
        d_alpha, d_sigma = 0.5 * math.pi * sigma, -0.5 * math.pi * alpha
        return ScheduleValues(alpha, sigma, d_alpha, d_sigma, sigma * d_sigma)

    def t_from_snr(self, snr: TimeLike) -> Tensor:
        # snr = tan(π t / 2)
        return (2.0 / math.pi) * torch.atan(self._check_snr(snr))


@register_schedule("linear_vp")
class LinearVP(Schedule):
    r""":math:`\alpha_t = t,\ \sigma_t = \sqrt{1 - t^2}`; :math:`\dot\sigma_t = -t/\sigma_t` is singular at t = 1,
    :math:`\sigma_t\dot\sigma_t = -t` is not."""

    def values(self, t: Tensor) -> ScheduleValues:
        sigma = torch.sqrt((1.0 - t) * (1.0 + t))
        return ScheduleValues(t, sigma, torch.ones_like(t), -t / sigma, -t)

    def t_from_snr(self, snr: TimeLike) -> Tensor:
        # snr = t / √(1 − t²)  ⇔  t = snr / √(1 + snr²) = 1 / √(1 + snr⁻²); the second form for snr > 1, where
        # snr² would overflow (snr = 1e160 gave 0 instead of 1), the first below, where snr⁻² would.
        snr_tensor = self._check_snr(snr)
        small = snr_tensor / torch.sqrt(1.0 + snr_tensor.clamp_max(1.0) ** 2)
        large = torch.rsqrt(1.0 + snr_tensor.clamp_min(1.0).pow(-2))
        return torch.where(snr_tensor > 1.0, large, small)


@register_schedule("vp")
class VariancePreserving(Schedule):
    r"""Song et al.'s VP SDE path with a linear β: :math:`T(s) = \beta_{min}s + \tfrac12(\beta_{max}-\beta_{min})s^2`,
    :math:`\alpha_t = e^{-T(1-t)/2}`, :math:`\sigma_t = \sqrt{1 - \alpha_t^2}`.

    :math:`\dot\alpha_t = \tfrac12 T'(1-t)\,\alpha_t`, :math:`\sigma_t\dot\sigma_t = -\alpha_t\dot\alpha_t`.
    :math:`\alpha_0 = e^{-T(1)/2} \approx 6.6\cdot 10^{-3}` for the defaults, so the prior
    :math:`N(0, \sigma_0^2 I)` is not exactly the path's marginal at t = 0: that mismatch is real.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min = check_positive("beta_min", beta_min)
        self.beta_max = check_positive("beta_max", beta_max)
        if self.beta_max < self.beta_min:
            raise ValueError(f"beta_max must be ≥ beta_min, got beta_min={beta_min}, beta_max={beta_max}")

    @property
    def params(self) -> dict[str, float]:
        return {"beta_min": self.beta_min, "beta_max": self.beta_max}

    def integrated_beta(self, s: Tensor) -> Tensor:
        """:math:`T(s) = \\int_0^s \\beta`, with s = 1 − t the diffusion time."""
        return self.beta_min * s + 0.5 * (self.beta_max - self.beta_min) * s**2

    def values(self, t: Tensor) -> ScheduleValues:
        s = 1.0 - t
        integrated = self.integrated_beta(s)
        beta = self.beta_min + (self.beta_max - self.beta_min) * s
        alpha = torch.exp(-0.5 * integrated)
        sigma = torch.sqrt(-torch.expm1(-integrated))
        d_alpha = 0.5 * beta * alpha
        sigma_d_sigma = -alpha * d_alpha
        return ScheduleValues(alpha, sigma, d_alpha, sigma_d_sigma / sigma, sigma_d_sigma)

    def t_from_snr(self, snr: TimeLike) -> Tensor:
        # α² / (1 − α²) = snr²  ⇔  T(s) = log(1 + snr⁻²); solve the quadratic for s = 1 − t.
        snr_tensor = self._check_snr(snr)
        integrated = torch.log1p(snr_tensor.pow(-2))
        spread = self.beta_max - self.beta_min
        if spread == 0:
            s = integrated / self.beta_min
        else:
            s = 2 * integrated / (self.beta_min + torch.sqrt(self.beta_min**2 + 2 * spread * integrated))
        return (1.0 - s).clamp(0.0, 1.0)


@register_schedule("ve")
class VarianceExploding(Schedule):
    r""":math:`\alpha_t = 1,\ \sigma_t = \sigma_{max}(\sigma_{min}/\sigma_{max})^t`; prior :math:`N(0, \sigma_{max}^2 I)`.

    The marginal at t = 0 is the data blurred by :math:`\sigma_{max}`, not :math:`N(0, \sigma_{max}^2 I)`
    exactly, and at t = 1 the data blurred by :math:`\sigma_{min}`.
    """

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0):
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        if self.sigma_max <= self.sigma_min:
            raise ValueError(f"sigma_max must be > sigma_min, got sigma_min={sigma_min}, sigma_max={sigma_max}")

    @property
    def params(self) -> dict[str, float]:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    def values(self, t: Tensor) -> ScheduleValues:
        log_ratio = math.log(self.sigma_min / self.sigma_max)
        sigma = self.sigma_max * torch.exp(log_ratio * t)
        d_sigma = log_ratio * sigma
        return ScheduleValues(torch.ones_like(t), sigma, torch.zeros_like(t), d_sigma, sigma * d_sigma)

    def t_from_snr(self, snr: TimeLike) -> Tensor:
        # 1/snr = σ_max (σ_min/σ_max)^t
        snr_tensor = self._check_snr(snr)
        t = torch.log(snr_tensor * self.sigma_max) / math.log(self.sigma_max / self.sigma_min)
        return t.clamp(0.0, 1.0)


@register_schedule("poly")
class Polynomial(Schedule):
    r""":math:`\alpha_t = t^n,\ \sigma_t = 1 - t^n` (n > 0). For n < 1, :math:`\dot\alpha_0` is infinite.

    σ is computed as :math:`-\operatorname{expm1}(n \operatorname{log1p}(t - 1))`, which is :math:`1 - t^n` without
    the cancellation of the subtraction near t = 1 (t − 1 is exact there): full relative precision as σ → 0
    (``1 - t**n`` was 1.1e-7 off in relative terms at t = 1 − 10⁻⁹, n = ½)."""

    def __init__(self, n: float = 2.0):
        self.n = check_positive("n", n)

    @property
    def params(self) -> dict[str, float]:
        return {"n": self.n}

    def values(self, t: Tensor) -> ScheduleValues:
        alpha = t**self.n
        sigma = 0.0 - torch.expm1(self.n * torch.log1p(t - 1.0))  # 0 − (−0.0): σ_1 = +0, not −0
        d_alpha = self.n * t ** (self.n - 1.0)
        d_sigma = -d_alpha
        return ScheduleValues(alpha, sigma, d_alpha, d_sigma, sigma * d_sigma)

    def t_from_snr(self, snr: TimeLike) -> Tensor:
        # snr = tⁿ / (1 − tⁿ)  ⇔  tⁿ = snr / (1 + snr)
        snr_tensor = self._check_snr(snr)
        fraction = torch.where(torch.isinf(snr_tensor), torch.ones_like(snr_tensor), snr_tensor / (1.0 + snr_tensor))
        return fraction ** (1.0 / self.n)
