"""A wrapper that counts field evaluations (NFE) and checks what the field returns."""

from __future__ import annotations

import torch
from torch import Tensor

TIME_ROUND_OFF = 1e-12
"""How far outside its interval a requested time may be and still count as round-off (a few thousand float64 ulps
of 1): :meth:`CountingField._time` clamps such a time, and no other."""


class FieldOutputError(ValueError):
    """The field returned something of the wrong shape or dtype."""


class SolverBudgetError(RuntimeError):
    """A solve reached its cap on field evaluations (``max_nfe``) before it finished."""

    def __init__(self, max_nfe: int, t):
        self.max_nfe, self.t = max_nfe, t
        where = f" (last evaluation at t = {float(t):.6g})" if t is not None else ""
        super().__init__(
            f"the solve reached max_nfe = {max_nfe} field evaluations without finishing{where}. The problem may be "
            "stiff for this method or the tolerances too tight: loosen rtol/atol, use an implicit reference "
            "(scipy_radau, scipy_bdf), or raise max_nfe"
        )


class CountingField:
    """Wraps a field; every call of the velocity, the score, a data or noise prediction, or velocity and score
    together counts as one evaluation.

    ``velocity_and_score`` counts once when the field provides it (one network pass, or one shared
    evaluation of the closed forms); otherwise it falls back to two calls and counts two.
    """

    def __init__(self, field, interval: tuple[float, float] | None = None, max_nfe: int | None = None):
        self.field = field
        self.nfe = 0
        self.interval = interval
        self.max_nfe = max_nfe

    def _count(self, t) -> None:
        """Count one evaluation; past ``max_nfe`` the solve stops with :class:`SolverBudgetError`."""
        self.nfe += 1
        if self.max_nfe is not None and self.nfe > self.max_nfe:
            raise SolverBudgetError(self.max_nfe, t if not isinstance(t, Tensor) or t.numel() == 1 else t.max())

    def _time(self, t):
        """Bring a time within round-off of the solve's interval back into it; leave every other time as asked.

        Solvers compute stage times as t0 + c·h, which can land one rounding error outside the interval (e.g.
        1.0000000000000002): such a time, within :data:`TIME_ROUND_OFF` × max(1, |bound|) of it, is clamped. A time
        further out is a real request (EDM's churn evaluates at a raised noise level before the grid's first time)
        and is passed on unchanged, so the field evaluates where it was asked; the field's own check on [0, 1] stays
        strict. A clamp that moved such a time would silently evaluate the field somewhere else."""
        if self.interval is None:
            return t
        low, high = self.interval
        slack = TIME_ROUND_OFF * max(1.0, abs(low), abs(high))
        if isinstance(t, Tensor):
            if t.numel() == 1 and t.device.type == "cpu":  # the common case: one time, read without a kernel
                value = float(t)
                if low <= value <= high or not low - slack <= value <= high + slack:
                    return t
                return t.clamp(low, high)
            return torch.where((t >= low - slack) & (t <= high + slack), t.clamp(low, high), t)
        if low - slack <= t <= high + slack:
            return min(max(t, low), high)
        return t

    @property
    def dim(self) -> int:
        return self.field.dim

    @property
    def schedule(self):
        """The field's schedule (α_t, σ_t), None for a field that has none."""
        return getattr(self.field, "schedule", None)

    def _checked(self, output: Tensor, x: Tensor, what: str) -> Tensor:
        if not isinstance(output, Tensor) or output.shape != x.shape or output.dtype != x.dtype:
            got = f"shape {tuple(output.shape)}, {output.dtype}" if isinstance(output, Tensor) else type(output).__name__
            raise FieldOutputError(f"the field's {what} must match x: shape {tuple(x.shape)}, {x.dtype}; got {got}")
        return output

    def __call__(self, t, x: Tensor) -> Tensor:
        self._count(t)
        return self._checked(self.field(self._time(t), x), x, "velocity")

    def score(self, t, x: Tensor) -> Tensor:
        self._count(t)
        return self._checked(self.field.score(self._time(t), x), x, "score")

    def velocity_and_score(self, t, x: Tensor) -> tuple[Tensor, Tensor]:
        joint = getattr(self.field, "velocity_and_score", None)
        if joint is None:
            return self(t, x), self.score(t, x)
        self._count(t)
        velocity, score = joint(self._time(t), x)
        return self._checked(velocity, x, "velocity"), self._checked(score, x, "score")

    def data_prediction(self, t, x: Tensor) -> Tensor:
        self._count(t)
        return self._checked(self.field.data_prediction(self._time(t), x), x, "data prediction")

    def noise_prediction(self, t, x: Tensor) -> Tensor:
        self._count(t)
        return self._checked(self.field.noise_prediction(self._time(t), x), x, "noise prediction")

    def divergence(self, t, x: Tensor) -> Tensor:
        self._count(t)
        return self.field.divergence(self._time(t), x)
