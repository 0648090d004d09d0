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


class SolverStepSizeError(SolverDivergenceError):
    """An adaptive solve whose step size shrank to nothing before its tolerances were met: they are tighter than the
    state's dtype resolves, or the field returned NaN or inf (which no step size can satisfy either). A kind of
    divergence, so ``except SolverDivergenceError`` catches it too."""

    def __init__(self, method: str, rtol: float | None, atol: float | None, dtype, detail: str = ""):
        self.method, self.step, self.t, self.t_start = method, None, None, None
        self.rtol, self.atol = rtol, atol
        RuntimeError.__init__(self, f"{method}: the step size underflowed before rtol = {rtol:g}, atol = {atol:g} were met "
                              f"(tolerances tighter than {dtype} resolves, or a field that returned NaN or inf)"
                              f"{'; ' + detail if detail else ''}")
