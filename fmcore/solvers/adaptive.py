"""Adaptive and fixed-grid solvers from torchdiffeq, and SciPy's ``solve_ivp`` as a float64 reference.

The NFE of these methods is whatever the counting wrapper around the field saw: torchdiffeq does not
report it, and counting is the only way to include rejected steps and FSAL reuse correctly.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .errors import SolverDivergenceError, SolverStepSizeError
from .laws import TableauLaw
from .methods import Method, register_method
from .tableaus import TABLEAUS

TORCHDIFFEQ_ADAPTIVE = ("dopri5", "dopri8", "bosh3", "adaptive_heun", "fehlberg2")
TORCHDIFFEQ_FIXED = ("euler", "midpoint", "heun2", "heun3", "rk4")
SCIPY_METHODS = ("DOP853", "RK45", "LSODA", "Radau", "BDF")


def integrate_torchdiffeq(
    field, x0: Tensor, times: Tensor, method: str, rtol: float | None = None, atol: float | None = None,
    return_trajectory: bool = False,
) -> tuple[Tensor, Tensor | None, dict]:
    """``torchdiffeq.odeint`` from ``times[0]`` to ``times[-1]``; for fixed-grid methods ``times`` is the grid.

    Outputs are requested at ``times`` (a trajectory); the step sizes of adaptive methods are chosen by
    their controller and do not depend on ``times`` beyond its ends.
    """
    from torchdiffeq import odeint

    t = times.to(dtype=x0.dtype, device=x0.device)
    options = {}
    if rtol is not None:
        options["rtol"] = rtol
    if atol is not None:
        options["atol"] = atol
    function = field
    if method in TORCHDIFFEQ_ADAPTIVE:
        # Stop exactly at the end time: by default torchdiffeq steps past it and interpolates back, which
        # would evaluate the field outside [0, 1].
        options["options"] = {"step_t": t[-1:]}
        function = _WithinInterval(field, t.min(), t.max())
    try:
        solution = odeint(function, x0, t, method=method, **options)
    except AssertionError as error:  # torchdiffeq asserts on step-size underflow: NaNs, or tolerances out of reach
        if "underflow" in str(error):
            raise SolverStepSizeError(f"torchdiffeq {method}", rtol, atol, x0.dtype, f"torchdiffeq: {error}") from error
        raise SolverDivergenceError(f"torchdiffeq {method}", None, None, str(error)) from error
    final = solution[-1]
    if not bool(torch.isfinite(final).all()):
        raise SolverDivergenceError(f"torchdiffeq {method}", None, None, "non-finite final state")
    return final, (solution if return_trajectory else None), {}


class _WithinInterval(torch.nn.Module):
    """The field with its time kept within the solve's interval [lower, upper] (either direction: a likelihood
    integrates from t = 1 down). torchdiffeq's initial step heuristic (Hairer, Nørsett & Wanner's) evaluates
    f(t₀ + h₀, x₀ + h₀f₀) with a trial h₀ = 0.01‖x₀‖/‖f₀‖ that nothing bounds: where the field is small, past the end,
    which a path's field refuses (a mixture on vp from t₀ = 0.07: t = 1.28). Kept at the end, the heuristic's probe
    reads the field there instead, and only the first step's size depends on it; every step the controller accepts
    lies within the interval (``step_t``), where this does nothing."""

    def __init__(self, field, lower: Tensor, upper: Tensor):
        super().__init__()
        self.field, self.lower, self.upper = field, lower, upper

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        return self.field(torch.clamp(t, self.lower, self.upper), x)


def integrate_scipy(
    field, x0: Tensor, times: Tensor, method: str, rtol: float, atol: float, return_trajectory: bool = False
) -> tuple[Tensor, Tensor | None, dict]:
    """SciPy ``solve_ivp`` on the whole batch as one flattened float64 system (CPU); ``info`` holds SciPy's
    own counts (its ``nfev`` leaves out the evaluations its finite-difference Jacobians make: ``njev`` × d for
    Radau and BDF, which the counting wrapper does see).

    All points share one step-size sequence (driven by the hardest point), which is what a reference
    solve wants. For the implicit methods (Radau, BDF) the Jacobian's block-diagonal sparsity — each point
    depends only on itself — is passed, so finite differences cost d evaluations, not n·d. LSODA takes no
    sparsity: keep n small with it.
    """
    from scipy.integrate import solve_ivp
    from scipy.sparse import block_diag

    n, d = x0.shape
    work = x0.detach().to(dtype=torch.float64, device="cpu")

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        state = torch.from_numpy(y).view(n, d)
        return field(float(t), state).detach().numpy().reshape(-1)

    options = {}
    if method in ("Radau", "BDF"):
        options["jac_sparsity"] = block_diag([np.ones((d, d))] * n, format="csr")
    evaluation_times = times.double().cpu().numpy()
    solution = solve_ivp(
        rhs, (evaluation_times[0], evaluation_times[-1]), work.numpy().reshape(-1), method=method,
        t_eval=evaluation_times, rtol=rtol, atol=atol, **options,
    )
    if solution.status != 0 or not np.all(np.isfinite(solution.y)):
        raise SolverDivergenceError(f"scipy {method}", None, None, solution.message)
    path = torch.from_numpy(solution.y.T.copy()).view(-1, n, d).to(dtype=x0.dtype, device=x0.device)
    info = {"nfev": int(solution.nfev), "njev": int(solution.njev), "nlu": int(solution.nlu)}
    return path[-1], (path if return_trajectory else None), info


# ---------------------------------------------------------------------- registration

_TORCHDIFFEQ_STAGES = {"euler": 1, "midpoint": 2, "heun2": 2, "heun3": 3, "rk4": 4}  # each of order = its stages
_TORCHDIFFEQ_TABLEAUS = {"euler": "euler", "midpoint": "midpoint", "heun2": "heun", "rk4": "rk38"}
"""torchdiffeq's fixed-grid methods that are one of our tableaus step for step (its "rk4" is the 3/8 rule), so their
exact law is that tableau's (tested in ``tests/test_exact.py``)."""


def _torchdiffeq(name: str):
    return lambda r: integrate_torchdiffeq(r.field, r.x0, r.grid, name, r.rtol, r.atol, r.return_trajectory)


def _scipy(name: str):
    return lambda r: integrate_scipy(r.field, r.x0, r.grid, name, r.rtol, r.atol, r.return_trajectory)


for _name in TORCHDIFFEQ_FIXED:  # torchdiffeq's fixed-grid peers; its "rk4" is the 3/8 rule (our rk38)
    _ours = _TORCHDIFFEQ_TABLEAUS.get(_name)
    register_method(Method(f"tdq_{_name}", _torchdiffeq(_name), stages=_TORCHDIFFEQ_STAGES[_name],
                           order=_TORCHDIFFEQ_STAGES[_name], family="torchdiffeq fixed-grid",
                           exact_law=TableauLaw(TABLEAUS[_ours]) if _ours else None))
for _name in TORCHDIFFEQ_ADAPTIVE:
    register_method(Method(_name, _torchdiffeq(_name), stepping="adaptive", tolerances=(1e-7, 1e-9),
                           family="torchdiffeq adaptive"))
for _name in SCIPY_METHODS:  # float64 references; tight default tolerances
    register_method(Method(f"scipy_{_name.lower()}", _scipy(_name), stepping="adaptive", tolerances=(1e-10, 1e-10),
                           family="SciPy reference"))
