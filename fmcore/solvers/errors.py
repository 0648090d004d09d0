"""Errors raised by the solvers."""

from __future__ import annotations


class SolverDivergenceError(RuntimeError):
    """A solve produced non-finite values: in step ``step`` (0-based), which went from ``t_start`` to ``t``."""

    def __init__(self, method: str, step: int | None, t: float | None, detail: str = "", t_start: float | None = None):
        self.method, self.step, self.t, self.t_start = method, step, t, t_start
        if step is None or t is None:
            where = "during the solve"
        elif t_start is None:
            where = f"in step {step} (t = {t:.6g})"
        else:
            where = f"in step {step} (from t = {t_start:.6g} to t = {t:.6g})"
        super().__init__(f"{method}: the solution became non-finite (NaN or inf) {where}{'; ' + detail if detail else ''}")
