"""Fields: the objects every sampler, metric and the harness take.

A field is called as ``field(t, x)`` (torchdiffeq's argument order) and returns the marginal velocity
``(n, d)``; it also has ``.score(t, x)``, ``.dim`` and, where it exists in closed form,
``.divergence(t, x)``. :class:`AnalyticField` is the exact one built from a target and a schedule;
learned models (``fmcore.models``) expose the same interface.
"""

from __future__ import annotations

from torch import Tensor

from ._checks import TimeLike, check_instance
from .schedules import Schedule
from .targets import GaussianMixture

__all__ = ["AnalyticField"]


class AnalyticField:
    """The exact marginal velocity, score and divergence of ``target`` along ``schedule``.

    Closed forms: ``docs/design.md``, "Analytic targets"."""

    def __init__(self, target: GaussianMixture, schedule: Schedule):
        check_instance("target", target, GaussianMixture, "e.g. fmcore.get_target('seed000')")
        check_instance("schedule", schedule, Schedule, "see fmcore.schedules.get_schedule")
        self.target = target
        self.schedule = schedule

    @property
    def dim(self) -> int:
        return self.target.dim

    def __call__(self, t: TimeLike, x: Tensor) -> Tensor:
        """Marginal velocity :math:`u_t(x)`."""
        return self.target.velocity(t, x, self.schedule)

    def velocity_unchecked(self, t: Tensor, x: Tensor) -> Tensor:
        """The velocity with no validation and no host synchronisation (``t`` a 0-d tensor like ``x``): see
        :meth:`fmcore.targets.GaussianMixture.velocity_unchecked` for what the caller must guarantee."""
        return self.target.velocity_unchecked(t, x, self.schedule)

    def score(self, t: TimeLike, x: Tensor) -> Tensor:
        """:math:`\\nabla_x\\log p_t(x)`."""
        return self.target.score(t, x, self.schedule)

    def velocity_and_score(self, t: TimeLike, x: Tensor) -> tuple[Tensor, Tensor]:
        """Velocity and score from one evaluation (one NFE for the reverse SDE's drift)."""
        return self.target.velocity_and_score(t, x, self.schedule)

    def divergence(self, t: TimeLike, x: Tensor) -> Tensor:
        """Closed-form :math:`\\nabla\\cdot u_t(x)`, ``(n,)``."""
        return self.target.velocity_divergence(t, x, self.schedule)

    def velocity_and_divergence(self, t: TimeLike, x: Tensor) -> tuple[Tensor, Tensor]:
        """Velocity and closed-form divergence from one evaluation (one NFE of the likelihood ODE)."""
        return self.target.velocity_and_divergence(t, x, self.schedule)

    def data_prediction(self, t: TimeLike, x: Tensor) -> Tensor:
        return self.target.data_prediction(t, x, self.schedule)

    def noise_prediction(self, t: TimeLike, x: Tensor) -> Tensor:
        return self.target.noise_prediction(t, x, self.schedule)

    def __repr__(self) -> str:
        return f"AnalyticField({self.target!r}, {self.schedule!r})"
