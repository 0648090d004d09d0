"""Samplers: explicit Runge–Kutta on any grid, torchdiffeq (adaptive and fixed-grid), SciPy references,
Euler–Maruyama for the reverse SDE, diffusion samplers (DDIM, DPM-Solver++, EDM), and the likelihood ODE — all
through :func:`sample` / :func:`log_likelihood`."""

from .counting import CountingField, FieldOutputError, SolverBudgetError
from .diffusions import DIFFUSIONS, Diffusion, get_diffusion, register_diffusion
from .errors import SolverDivergenceError, SolverStepSizeError
from .methods import METHODS, Method, SolveRequest, get_method, register_method
from .sampling import LikelihoodResult, SampleResult, log_likelihood, sample
from .tableaus import TABLEAUS, ButcherTableau, register_tableau
from .user_samplers import user_method

__all__ = [
    "ButcherTableau",
    "CountingField",
    "DIFFUSIONS",
    "Diffusion",
    "FieldOutputError",
    "LikelihoodResult",
    "METHODS",
    "Method",
    "SampleResult",
    "SolverBudgetError",
    "SolverStepSizeError",
    "SolverDivergenceError",
    "SolveRequest",
    "TABLEAUS",
    "get_diffusion",
    "get_method",
    "log_likelihood",
    "register_diffusion",
    "register_method",
    "register_tableau",
    "sample",
    "user_method",
]

from .. import reproductions  # noqa: E402, F401 — registers the reproduced samplers (seed000_sde, pg_ei, pg_ddpm) last
