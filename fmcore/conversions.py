r"""Conversions between the four parameterisations of a Gaussian-path model (seed 003, Proposition 1).

Along :math:`x_t = \alpha_t x_1 + \sigma_t\varepsilon`, the data prediction :math:`D = E[x_1|x_t=x]`,
the noise prediction :math:`E = E[\varepsilon|x_t=x]`, the score :math:`s = \nabla\log p_t(x)` and the
velocity :math:`u = E[\dot\alpha x_1 + \dot\sigma\varepsilon|x_t=x]` satisfy

.. math::
    x = \alpha D + \sigma E,\qquad u = \dot\alpha D + \dot\sigma E,\qquad s = -E/\sigma .

Each conversion below solves this linear system and divides by the quantity named in its docstring;
the caller must only use it where that quantity is non-zero:

=============================  ============================================================  =====================
conversion                     formula                                                       divides by
=============================  ============================================================  =====================
score → velocity               u = (α̇/α) x + (α̇σ²/α − σσ̇) s                                  α  (zero at t = 0)
velocity → score               s = (α̇x − αu) / (ασσ̇ − σ²α̇)                                   σ  (zero at t = 1)
data prediction → velocity     u = α̇D + σσ̇ (x − αD) / σ²                                     σ² (zero at t = 1)
data prediction → score        s = (αD − x) / σ²                                             σ² (zero at t = 1)
noise prediction → velocity    u = α̇ (x − σE) / α + σ̇E                                       α  (zero at t = 0)
noise prediction → score       s = −E / σ                                                    σ  (zero at t = 1)
velocity → data prediction     D = (σ̇x − σu) / (ασ̇ − σα̇)                                    ασ̇ − σα̇ (never zero)
velocity → noise prediction    E = (αu − α̇x) / (ασ̇ − σα̇)                                    ασ̇ − σα̇ (never zero)
noise → data prediction        D = (x − σE) / α                                              α  (zero at t = 0)
data → noise prediction        E = (x − αD) / σ                                              σ  (zero at t = 1)
=============================  ============================================================  =====================

The v-prediction (Salimans & Ho 2022) is defined at the same SNR on the variance-preserving path: with
:math:`\rho = \sqrt{\alpha^2 + \sigma^2}`, :math:`\bar\alpha = \alpha/\rho`, :math:`\bar\sigma = \sigma/\rho` and
:math:`\bar x = x/\rho` (a point of that path), :math:`v = \bar\alpha\varepsilon - \bar\sigma x_1`, so

.. math:: D = \bar\alpha\bar x - \bar\sigma v,\qquad E = \bar\sigma\bar x + \bar\alpha v

(a rotation: neither divides by anything that vanishes; velocity and score follow from D and E as above).

The two conversions from the velocity need a finite σ̇ (``linear_vp`` has σ̇ = −∞ at t = 1).

(VP has α_0 ≈ 6.6e-3 and VE has α ≡ 1, so their α-divisions are regular on all of [0, 1]; VE's σ ≥ σ_min > 0.)

``values`` is a :class:`~fmcore.schedules.ScheduleValues` at the points' times (0-d or ``(n,)``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .schedules import ScheduleValues

__all__ = [
    "velocity_from_score",
    "score_from_velocity",
    "velocity_from_data_prediction",
    "score_from_data_prediction",
    "velocity_from_noise_prediction",
    "score_from_noise_prediction",
    "data_prediction_from_velocity",
    "noise_prediction_from_velocity",
    "data_prediction_from_noise_prediction",
    "noise_prediction_from_data_prediction",
    "data_prediction_from_v_prediction",
    "noise_prediction_from_v_prediction",
    "velocity_from_v_prediction",
    "score_from_v_prediction",
]


def _check(values: ScheduleValues, x: Tensor, prediction: Tensor, name: str) -> None:
    """Cheap structural checks (these run inside every learned-field evaluation)."""
    if not isinstance(values, ScheduleValues):
        raise TypeError(f"values must be ScheduleValues (schedule(t) or schedule.values(t)), got {type(values).__name__}")
    if not isinstance(x, Tensor) or not isinstance(prediction, Tensor):
        raise TypeError(f"x and {name} must be tensors, got {type(x).__name__} and {type(prediction).__name__}")
    if x.shape != prediction.shape or x.dim() != 2:
        raise ValueError(f"x and {name} must both have shape (n, d), got {tuple(x.shape)} and {tuple(prediction.shape)}")
    if values.alpha.dim() == 1 and values.alpha.shape[0] != x.shape[0]:
        raise ValueError(f"values hold {values.alpha.shape[0]} times but x has n = {x.shape[0]} rows")


def _column(value: Tensor) -> Tensor:
    """Broadcast a 0-d or ``(n,)`` schedule value against ``(n, d)``."""
    return value.unsqueeze(-1) if value.dim() == 1 else value


def velocity_from_score(values: ScheduleValues, x: Tensor, score: Tensor) -> Tensor:
    r""":math:`u = \frac{\dot\alpha}{\alpha}x + \Big(\frac{\dot\alpha\sigma^2}{\alpha} - \sigma\dot\sigma\Big)s`; divides by α."""
    _check(values, x, score, "score")
    alpha, sigma = _column(values.alpha), _column(values.sigma)
    d_alpha, sigma_d_sigma = _column(values.d_alpha), _column(values.sigma_d_sigma)
    return (d_alpha / alpha) * x + (d_alpha * sigma**2 / alpha - sigma_d_sigma) * score


def score_from_velocity(values: ScheduleValues, x: Tensor, velocity: Tensor) -> Tensor:
    r""":math:`s = (\dot\alpha x - \alpha u) / (\alpha\sigma\dot\sigma - \sigma^2\dot\alpha)`; divides by σ (and the
    determinant :math:`\alpha\dot\sigma - \sigma\dot\alpha`, non-zero for every schedule here)."""
    _check(values, x, velocity, "velocity")
    alpha, sigma = _column(values.alpha), _column(values.sigma)
    d_alpha, sigma_d_sigma = _column(values.d_alpha), _column(values.sigma_d_sigma)
    return (d_alpha * x - alpha * velocity) / (alpha * sigma_d_sigma - sigma**2 * d_alpha)


def velocity_from_data_prediction(values: ScheduleValues, x: Tensor, data_prediction: Tensor) -> Tensor:
    r""":math:`u = \dot\alpha D + \sigma\dot\sigma\,(x - \alpha D)/\sigma^2`; divides by σ²."""
    _check(values, x, data_prediction, "data_prediction")
    alpha, sigma = _column(values.alpha), _column(values.sigma)
    d_alpha, sigma_d_sigma = _column(values.d_alpha), _column(values.sigma_d_sigma)
    return d_alpha * data_prediction + sigma_d_sigma * (x - alpha * data_prediction) / sigma**2


def score_from_data_prediction(values: ScheduleValues, x: Tensor, data_prediction: Tensor) -> Tensor:
    r""":math:`s = (\alpha D - x)/\sigma^2`; divides by σ²."""
    _check(values, x, data_prediction, "data_prediction")
    alpha, sigma = _column(values.alpha), _column(values.sigma)
    return (alpha * data_prediction - x) / sigma**2


def velocity_from_noise_prediction(values: ScheduleValues, x: Tensor, noise_prediction: Tensor) -> Tensor:
    r""":math:`u = \dot\alpha (x - \sigma E)/\alpha + \dot\sigma E`; divides by α (and needs a finite :math:`\dot\sigma`)."""
    _check(values, x, noise_prediction, "noise_prediction")
    alpha, sigma = _column(values.alpha), _column(values.sigma)
    d_alpha, d_sigma = _column(values.d_alpha), _column(values.d_sigma)
    return d_alpha * (x - sigma * noise_prediction) / alpha + d_sigma * noise_prediction


def score_from_noise_prediction(values: ScheduleValues, x: Tensor, noise_prediction: Tensor) -> Tensor:
    r""":math:`s = -E/\sigma`; divides by σ."""
    _check(values, x, noise_prediction, "noise_prediction")
    return -noise_prediction / _column(values.sigma)


def data_prediction_from_velocity(values: ScheduleValues, x: Tensor, velocity: Tensor) -> Tensor:
    r""":math:`D = (\dot\sigma x - \sigma u)/(\alpha\dot\sigma - \sigma\dot\alpha)`: the 2×2 system solved for D."""
    _check(values, x, velocity, "velocity")
    alpha, sigma = _column(values.alpha), _column(values.sigma)
    d_alpha, d_sigma = _column(values.d_alpha), _column(values.d_sigma)
    return (d_sigma * x - sigma * velocity) / (alpha * d_sigma - sigma * d_alpha)


def noise_prediction_from_velocity(values: ScheduleValues, x: Tensor, velocity: Tensor) -> Tensor:
    r""":math:`E = (\alpha u - \dot\alpha x)/(\alpha\dot\sigma - \sigma\dot\alpha)`: the 2×2 system solved for E."""
    _check(values, x, velocity, "velocity")
    alpha, sigma = _column(values.alpha), _column(values.sigma)
    d_alpha, d_sigma = _column(values.d_alpha), _column(values.d_sigma)
    return (alpha * velocity - d_alpha * x) / (alpha * d_sigma - sigma * d_alpha)


def data_prediction_from_noise_prediction(values: ScheduleValues, x: Tensor, noise_prediction: Tensor) -> Tensor:
    r""":math:`D = (x - \sigma E)/\alpha`; divides by α."""
    _check(values, x, noise_prediction, "noise_prediction")
    return (x - _column(values.sigma) * noise_prediction) / _column(values.alpha)


def noise_prediction_from_data_prediction(values: ScheduleValues, x: Tensor, data_prediction: Tensor) -> Tensor:
    r""":math:`E = (x - \alpha D)/\sigma`; divides by σ."""
    _check(values, x, data_prediction, "data_prediction")
    return (x - _column(values.alpha) * data_prediction) / _column(values.sigma)


def _rotation(values: ScheduleValues) -> tuple[Tensor, Tensor, Tensor]:
    r""":math:`(\bar\alpha, \bar\sigma, \rho)`: the variance-preserving coefficients at the same SNR, and the scale."""
    alpha, sigma = _column(values.alpha), _column(values.sigma)
    scale = torch.hypot(alpha, sigma)
    return alpha / scale, sigma / scale, scale


def data_prediction_from_v_prediction(values: ScheduleValues, x: Tensor, v_prediction: Tensor) -> Tensor:
    r""":math:`D = \bar\alpha\,x/\rho - \bar\sigma v`; divides by :math:`\rho = \sqrt{\alpha^2+\sigma^2} > 0` only."""
    _check(values, x, v_prediction, "v_prediction")
    alpha_bar, sigma_bar, scale = _rotation(values)
    return alpha_bar * (x / scale) - sigma_bar * v_prediction


def noise_prediction_from_v_prediction(values: ScheduleValues, x: Tensor, v_prediction: Tensor) -> Tensor:
    r""":math:`E = \bar\sigma\,x/\rho + \bar\alpha v`; divides by :math:`\rho > 0` only."""
    _check(values, x, v_prediction, "v_prediction")
    alpha_bar, sigma_bar, scale = _rotation(values)
    return sigma_bar * (x / scale) + alpha_bar * v_prediction


def velocity_from_v_prediction(values: ScheduleValues, x: Tensor, v_prediction: Tensor) -> Tensor:
    r""":math:`u = \dot\alpha D + \dot\sigma E` with D, E from the rotation above; needs a finite :math:`\dot\sigma`."""
    data = data_prediction_from_v_prediction(values, x, v_prediction)
    noise = noise_prediction_from_v_prediction(values, x, v_prediction)
    return _column(values.d_alpha) * data + _column(values.d_sigma) * noise


def score_from_v_prediction(values: ScheduleValues, x: Tensor, v_prediction: Tensor) -> Tensor:
    r""":math:`s = -E/\sigma`; divides by σ."""
    return -noise_prediction_from_v_prediction(values, x, v_prediction) / _column(values.sigma)
