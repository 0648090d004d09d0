r"""What a network predicts, and how that prediction answers the four questions a sampler asks.

Along :math:`x_t = \alpha_t x_1 + \sigma_t\varepsilon` a network trained by regression learns a conditional mean:

==================================  ======================================================  ============================
prediction (``name``)               the network learns                                      trained by
==================================  ======================================================  ============================
:class:`VelocityPrediction`         :math:`u = E[\dot\alpha x_1 + \dot\sigma\varepsilon|x]`  flow matching (``cfm``)
  ``velocity``
:class:`NoisePrediction`            :math:`E = E[\varepsilon|x]` (ε̂)                        DDPM, denoising score
  ``epsilon``                                                                                matching (``dsm``)
:class:`DataPrediction` ``x0``      :math:`D = E[x_1|x]` (x̂₀; an EDM denoiser D(x; σ))      ``x1``; EDM
:class:`VPrediction` ``v``          :math:`v = \bar\alpha E - \bar\sigma D` at the same     Salimans & Ho 2022 (SD 2.x)
                                    SNR on the variance-preserving path
==================================  ======================================================  ============================

Each class carries its four conversions (:mod:`fmcore.conversions`) — to the velocity, the score, the data and the
noise prediction — each with what it divides by. A field clips its time away from an end where that quantity
vanishes on its schedule (α at t = 0 on paths that start at pure noise, σ at t = 1 on paths that end at the data):
the noise prediction's velocity divides by α, every score by σ, the data prediction's velocity and noise by σ².

A new prediction type is one subclass here with ``@register_prediction("name")``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from ._registry import Registry
from .conversions import (
    data_prediction_from_noise_prediction,
    data_prediction_from_v_prediction,
    data_prediction_from_velocity,
    noise_prediction_from_data_prediction,
    noise_prediction_from_v_prediction,
    noise_prediction_from_velocity,
    score_from_data_prediction,
    score_from_noise_prediction,
    score_from_v_prediction,
    score_from_velocity,
    velocity_from_data_prediction,
    velocity_from_noise_prediction,
    velocity_from_v_prediction,
)
from .schedules import ScheduleValues

__all__ = [
    "Conversion",
    "Prediction",
    "VelocityPrediction",
    "NoisePrediction",
    "DataPrediction",
    "VPrediction",
    "PREDICTION_TYPES",
    "get_prediction",
    "register_prediction",
]

PREDICTION_TYPES = Registry("prediction type")
register_prediction = PREDICTION_TYPES.register


@dataclass(frozen=True)
class Conversion:
    """A network output turned into one quantity: ``formula(values, x, output)``, or the output itself when
    ``formula`` is None; ``divides_by_alpha`` / ``divides_by_sigma`` say where the formula is singular."""

    formula: Callable[[ScheduleValues, Tensor, Tensor], Tensor] | None
    divides_by_alpha: bool = False
    divides_by_sigma: bool = False

    def __call__(self, values: ScheduleValues, x: Tensor, output: Tensor) -> Tensor:
        return output if self.formula is None else self.formula(values, x, output)

    def interval(self, alpha_vanishes_at_0: bool, sigma_vanishes_at_1: bool, t_eps: float) -> tuple[float, float]:
        """The times ``[low, high]`` where this conversion is evaluated: ``t_eps`` in from an end where it divides by
        a quantity the schedule sets to zero there, all of [0, 1] otherwise."""
        low = t_eps if self.divides_by_alpha and alpha_vanishes_at_0 else 0.0
        high = 1.0 - t_eps if self.divides_by_sigma and sigma_vanishes_at_1 else 1.0
        return low, high


IDENTITY = Conversion(None)


class Prediction:
    """A network's prediction type: its four conversions, and the objective name the suite's own models use."""

    name: ClassVar[str]
    objective: ClassVar[str | None] = None  # the suite's training objective that learns it (``learned:<objective>``)
    to_velocity: ClassVar[Conversion]
    to_score: ClassVar[Conversion]
    to_data: ClassVar[Conversion]
    to_noise: ClassVar[Conversion]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@register_prediction("velocity")
class VelocityPrediction(Prediction):
    """:math:`u_\\theta(t, x)`: the velocity itself; the others by the 2×2 solve (never singular; score ÷ σ)."""

    objective = "cfm"
    to_velocity = IDENTITY
    to_score = Conversion(score_from_velocity, divides_by_sigma=True)
    to_data = Conversion(data_prediction_from_velocity)
    to_noise = Conversion(noise_prediction_from_velocity)


@register_prediction("epsilon")
class NoisePrediction(Prediction):
    """:math:`\\hat\\varepsilon_\\theta`: the velocity and the data prediction divide by α, the score by σ."""

    objective = "dsm"
    to_velocity = Conversion(velocity_from_noise_prediction, divides_by_alpha=True)
    to_score = Conversion(score_from_noise_prediction, divides_by_sigma=True)
    to_data = Conversion(data_prediction_from_noise_prediction, divides_by_alpha=True)
    to_noise = IDENTITY


@register_prediction("x0")
class DataPrediction(Prediction):
    """:math:`\\hat x_{1,\\theta}` (a denoiser): the velocity, the score and the noise prediction divide by σ."""

    objective = "x1"
    to_velocity = Conversion(velocity_from_data_prediction, divides_by_sigma=True)
    to_score = Conversion(score_from_data_prediction, divides_by_sigma=True)
    to_data = IDENTITY
    to_noise = Conversion(noise_prediction_from_data_prediction, divides_by_sigma=True)


@register_prediction("v")
class VPrediction(Prediction):
    """:math:`v_\\theta = \\bar\\alpha\\hat\\varepsilon - \\bar\\sigma\\hat x_1`: D and E by a rotation (never
    singular), the velocity from them (needs a finite σ̇), the score ÷ σ."""

    to_velocity = Conversion(velocity_from_v_prediction)
    to_score = Conversion(score_from_v_prediction, divides_by_sigma=True)
    to_data = Conversion(data_prediction_from_v_prediction)
    to_noise = Conversion(noise_prediction_from_v_prediction)


def get_prediction(name: str | Prediction) -> Prediction:
    """The prediction type registered as ``name`` (``velocity``, ``epsilon``, ``x0``, ``v``), or ``name`` itself."""
    if isinstance(name, Prediction):
        return name
    return PREDICTION_TYPES.lookup(name)()


def prediction_of_objective(objective: str) -> Prediction:
    """The prediction type the suite's training ``objective`` (``cfm``, ``dsm``, ``x1``) learns."""
    for entry in PREDICTION_TYPES.values():
        if entry.objective == objective:
            return entry()
    objectives = sorted(entry.objective for entry in PREDICTION_TYPES.values() if entry.objective)
    raise KeyError(f"unknown objective {objective!r}; valid names: {objectives}")
