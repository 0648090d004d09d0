"""What defines one measurement: :class:`CellSpec`, its identity (:meth:`CellSpec.key`) and its normalised form.

Kept apart from :mod:`fmbench.cells` (which runs cells, and so imports torch and fmcore) so that what only reads runs
— ``fmbench compare``, the store — knows a cell without loading the numerical stack.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from dataclasses import field as dataclass_field

__all__ = ["CellSpec"]


@dataclass(frozen=True)
class CellSpec:
    """Everything that defines one measurement. ``field`` is ``"analytic"``, ``"learned:<objective>"`` (the suite's own
    network) or ``"module:<module>.<factory>"`` (a user's: :mod:`fmbench.user_models`)."""

    target: str
    schedule: str
    method: str
    target_params: dict = dataclass_field(default_factory=dict)
    schedule_params: dict = dataclass_field(default_factory=dict)
    field: str = "analytic"
    steps: int | None = None
    grid: str = "uniform"
    rtol: float | None = None
    atol: float | None = None
    diffusion: str | None = None
    diffusion_params: dict = dataclass_field(default_factory=dict)
    device: str = "cpu"
    dtype: str = "float64"
    seed: int = 0
    n: int = 2000
    train_steps: int = 2000
    timing_repeats: int = 0
    execution: str = "eager"
    method_params: dict = dataclass_field(default_factory=dict)
    grid_params: dict = dataclass_field(default_factory=dict)

    def key(self) -> str:
        """A stable hash of the spec: the cell's identity for resuming a sweep and comparing runs. Fields added
        after the first baselines (``execution``, ``method_params``, ``grid_params``) enter the hash only when they
        differ from their default, so those baselines' cells keep their identity."""
        spec = asdict(self)
        for name, default in _LATER_FIELDS.items():
            if spec[name] == default:
                del spec[name]
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]

    def as_dict(self) -> dict:
        """The normalised spec, as recorded in ``sweep.json``."""
        return asdict(self)

    def learned_objective(self) -> str | None:
        """``"cfm"`` for ``field = "learned:cfm"``; None for the analytic field."""
        kind, _, objective = self.field.partition(":")
        return objective if kind == "learned" else None


_LATER_FIELDS = {"execution": "eager", "method_params": {}, "grid_params": {}}
