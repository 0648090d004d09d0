"""Samplers: explicit Runge–Kutta on any grid, torchdiffeq (adaptive and fixed-grid), SciPy references,
Euler–Maruyama for the reverse SDE, and the likelihood ODE — all through :func:`sample` / :func:`log_likelihood`."""

from .counting import CountingField, FieldOutputError, SolverBudgetError
from .diffusions import DIFFUSIONS, Diffusion, get_diffusion, register_diffusion
from .errors import SolverDivergenceError
from .sampling import (
    METHODS,
    LikelihoodResult,
    Method,
    SampleResult,
    get_method,
    log_likelihood,
    register_method,
    sample,
)
from .tableaus import TABLEAUS, ButcherTableau, register_tableau

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
    "SolverDivergenceError",
    "TABLEAUS",
    "get_diffusion",
    "get_method",
    "log_likelihood",
    "register_diffusion",
    "register_method",
    "register_tableau",
    "sample",
]
