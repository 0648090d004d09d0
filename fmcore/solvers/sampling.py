"""The one entry point every sampler run goes through: :func:`sample`, and :func:`log_likelihood`.

Methods are registered by name in :data:`METHODS`; each says what kind it is, which decides the
arguments it takes:

========== ============================================================ ==============================
kind       methods                                                      takes
========== ============================================================ ==============================
fixed      ``euler``, ``midpoint``, ``heun``, ``rk4``, ``rk38`` (ours);  ``steps`` or ``grid``
           ``tdq_euler``, ``tdq_midpoint``, ``tdq_heun2``,
           ``tdq_heun3``, ``tdq_rk4`` (torchdiffeq's fixed-grid peers)
adaptive   ``dopri5``, ``dopri8``, ``bosh3``, ``adaptive_heun``,          ``rtol``, ``atol``
           ``fehlberg2`` (torchdiffeq)
reference  ``scipy_dop853``, ``scipy_rk45``, ``scipy_lsoda``,             ``rtol``, ``atol`` (float64)
           ``scipy_radau``, ``scipy_bdf``
sde        ``euler_maruyama``                                           ``steps`` or ``grid``,
                                                                        ``diffusion``, ``generator``
seed       ``seed000_sde`` (seed 000's sampler as written, see           ``steps``, ``generator``
           :mod:`fmcore.solvers.seed000`)
========== ============================================================ ==============================

Note: torchdiffeq's ``rk4`` is the 3/8-rule variant (``rk4_alt_step_func``), i.e. our ``rk38``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field

import torch
from torch import Tensor

from .._checks import as_generator, check_bool, check_choice, check_int, check_positive, check_samples
from ..grids import check_grid, get_grid
from .adaptive import SCIPY_METHODS, TORCHDIFFEQ_ADAPTIVE, TORCHDIFFEQ_FIXED, integrate_scipy, integrate_torchdiffeq
from .counting import CountingField
from .diffusions import Diffusion
from .likelihood import AugmentedDynamics, gaussian_prior_log_prob
from .runge_kutta import integrate_explicit_rk
from .sde import integrate_euler_maruyama
from .seed000 import integrate_seed000_sde
from .tableaus import TABLEAUS

__all__ = ["sample", "log_likelihood", "SampleResult", "LikelihoodResult", "Method", "METHODS", "register_method"]

DEFAULT_MAX_NFE = 100_000
"""Adaptive and reference solves stop with :class:`~fmcore.solvers.SolverBudgetError` past this many field
evaluations unless given ``max_nfe`` (a stiff problem would otherwise run without bound)."""

DEFAULT_TOLERANCES = {"adaptive": (1e-7, 1e-9), "reference": (1e-10, 1e-10)}  # torchdiffeq's own defaults; tight for SciPy


@dataclass(frozen=True)
class SolveRequest:
    """Everything a method may need, validated by :func:`sample` before any method runs."""

    field: CountingField
    x0: Tensor
    grid: Tensor
    rtol: float | None
    atol: float | None
    diffusion: Diffusion | None
    generator: torch.Generator | None
    return_trajectory: bool


@dataclass(frozen=True)
class Method:
    """A registered method: its ``kind`` (one of :data:`METHOD_KINDS`), field calls per step for fixed
    methods, and ``integrate(request) -> (x, trajectory, info)`` (``info``: what the solver itself reports)."""

    name: str
    kind: str
    integrate: Callable[[SolveRequest], tuple[Tensor, Tensor | None, dict]]
    stages: int | None = None


METHODS: dict[str, Method] = {}
METHOD_KINDS = ("fixed", "adaptive", "reference", "sde", "seed")


def register_method(method: Method) -> Method:
    if method.name in METHODS:
        raise KeyError(f"method {method.name!r} is already registered")
    if method.kind not in METHOD_KINDS:
        raise ValueError(f"method kind must be one of {METHOD_KINDS}, got {method.kind!r}")
    METHODS[method.name] = method
    return method


def _register_tableau_method(tableau) -> Method:
    """A Butcher tableau is a fixed-step method of the same name."""
    integrate = lambda r: integrate_explicit_rk(r.field, r.x0, r.grid, tableau, r.return_trajectory)  # noqa: E731
    return register_method(Method(tableau.name, "fixed", integrate, stages=tableau.stages))


def _torchdiffeq(name):
    return lambda r: integrate_torchdiffeq(r.field, r.x0, r.grid, name, r.rtol, r.atol, r.return_trajectory)


def _scipy(name):
    return lambda r: integrate_scipy(r.field, r.x0, r.grid, name, r.rtol, r.atol, r.return_trajectory)


def _euler_maruyama(r: SolveRequest):
    return integrate_euler_maruyama(
        r.field, r.x0, r.grid, r.diffusion, r.field.field.schedule, r.generator, r.return_trajectory
    )


for _tableau in TABLEAUS.values():
    _register_tableau_method(_tableau)
_TORCHDIFFEQ_STAGES = {"euler": 1, "midpoint": 2, "heun2": 2, "heun3": 3, "rk4": 4}
for _name in TORCHDIFFEQ_FIXED:
    register_method(Method(f"tdq_{_name}", "fixed", _torchdiffeq(_name), stages=_TORCHDIFFEQ_STAGES[_name]))
for _name in TORCHDIFFEQ_ADAPTIVE:
    register_method(Method(_name, "adaptive", _torchdiffeq(_name)))
for _name in SCIPY_METHODS:
    register_method(Method(f"scipy_{_name.lower()}", "reference", _scipy(_name)))
register_method(Method("euler_maruyama", "sde", _euler_maruyama, stages=1))
register_method(
    Method(
        "seed000_sde", "seed",
        lambda r: integrate_seed000_sde(r.field, r.x0, len(r.grid) - 1, r.generator, r.return_trajectory), stages=1,
    )
)


@dataclass
class SampleResult:
    """``x`` at t = 1, ``nfe`` counted by a wrapper around the field, the ``grid`` used (for adaptive methods:
    the output times), ``t0`` where the solve started, the ``trajectory`` (``(len(grid), n, d)``) if asked,
    the ``options`` in force (tolerances, diffusion) and ``info`` reported by the solver itself (SciPy's counts)."""

    x: Tensor
    nfe: int
    grid: Tensor
    method: str
    t0: float
    trajectory: Tensor | None = None
    options: dict = dataclass_field(default_factory=dict)
    info: dict = dataclass_field(default_factory=dict)


def get_method(name: str) -> Method:
    if not isinstance(name, str):
        raise TypeError(f"method must be a name (a string), got {type(name).__name__} {name!r}")
    if name not in METHODS and name in TABLEAUS:  # a tableau registered after import is a method too
        _register_tableau_method(TABLEAUS[name])
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; valid names: {sorted(METHODS)}")
    return METHODS[name]


def _check_field_input(field, x: Tensor, name: str) -> None:
    dim = getattr(field, "dim", None)
    if not callable(field) or isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(
            f"the field must be callable as field(t, x) and have an integer .dim (AnalyticField, LearnedField or the "
            f"same interface), got {type(field).__name__} with dim {dim!r}"
        )
    check_samples(name, x, dim, finite=True)
    dtype = getattr(field, "dtype", None)
    if dtype is not None and x.dtype != dtype:
        raise ValueError(f"{name} has dtype {x.dtype} but the field computes in {dtype}")


def _resolve_tolerances(method: Method, rtol, atol) -> tuple[float | None, float | None]:
    if method.kind in ("fixed", "sde", "seed"):
        if rtol is not None or atol is not None:
            raise ValueError(f"rtol/atol apply to adaptive and reference methods only; {method.name!r} is {method.kind}")
        return None, None
    default_rtol, default_atol = DEFAULT_TOLERANCES[method.kind]
    rtol = default_rtol if rtol is None else check_positive("rtol", rtol)
    atol = default_atol if atol is None else check_positive("atol", atol)
    return rtol, atol


def _resolve_max_nfe(method: Method, max_nfe) -> int | None:
    if max_nfe is not None:
        return check_int("max_nfe", max_nfe)
    return DEFAULT_MAX_NFE if method.kind in ("adaptive", "reference") else None


def _resolve_grid(method: Method, steps, grid, start: float, end: float = 1.0) -> Tensor:
    """The grid a method runs on; ``start``/``end`` are where an unspecified grid begins and ends."""
    if grid is not None and steps is not None:
        raise ValueError("give steps or grid, not both")
    if grid is not None:
        grid = torch.as_tensor(grid, dtype=torch.float64).detach().cpu()
        check_grid(grid, increasing=end > start)
        return grid
    if method.kind in ("fixed", "sde", "seed"):
        if steps is None:
            raise ValueError(f"{method.name!r} is a fixed-step method: give steps (a uniform grid) or a grid")
        lower, upper = min(start, end), max(start, end)
        uniform = get_grid("uniform", steps, t0=lower, t1=upper)
        return uniform if end > start else uniform.flip(0)
    if steps is not None:
        raise ValueError(f"{method.name!r} is adaptive and chooses its own steps: give rtol/atol, not steps")
    return torch.tensor([start, end], dtype=torch.float64)


def sample(
    field,
    x0: Tensor,
    method: str,
    steps: int | None = None,
    grid: Tensor | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    diffusion: Diffusion | None = None,
    generator: torch.Generator | int | None = None,
    return_trajectory: bool = False,
    max_nfe: int | None = None,
) -> SampleResult:
    """Integrate from noise ``x0`` (at ``grid[0]``, t = 0 by default) to data at t = 1 with ``method``.

    ``steps`` alone means a uniform grid on [0, 1] (on [t_ε, 1] for a diffusion singular at t = 0, such as
    ``forward`` on a path with α_0 = 0; ``result.t0`` records it). Raises
    :class:`~fmcore.solvers.SolverDivergenceError` with the step and time if the solution stops being finite, and
    :class:`~fmcore.solvers.SolverBudgetError` past ``max_nfe`` field evaluations (default :data:`DEFAULT_MAX_NFE`
    for adaptive and reference methods, no cap for fixed-step ones, whose NFE is known in advance).
    """
    spec = get_method(method)
    _check_field_input(field, x0, "x0")
    check_bool("return_trajectory", return_trajectory)
    max_nfe = _resolve_max_nfe(spec, max_nfe)
    rtol, atol = _resolve_tolerances(spec, rtol, atol)
    generator = as_generator(generator)
    start = 0.0
    if spec.kind == "sde":
        if diffusion is None:
            raise ValueError(f"{method!r} needs diffusion=fmcore.solvers.get_diffusion(name, ...)")
        if not isinstance(diffusion, Diffusion):
            raise TypeError(
                f"{method!r} needs diffusion=fmcore.solvers.get_diffusion(name, ...), "
                f"got {type(diffusion).__name__} {diffusion!r}"
            )
        if getattr(field, "schedule", None) is None:
            raise ValueError("SDE sampling needs a field with a .schedule (to evaluate the diffusion g_t)")
        if generator is None:
            raise ValueError("SDE sampling needs a generator (torch.Generator or integer seed) for its Brownian increments")
        start = diffusion.start_time(field.schedule)
    elif diffusion is not None:
        raise ValueError(f"diffusion applies to euler_maruyama only; {method!r} is not an SDE method with a choice of g")
    if spec.kind == "seed":
        if grid is not None:
            raise ValueError(f"{method!r} runs on its own grid (as written in the seed): give steps, not a grid")
        if generator is None:
            raise ValueError(f"{method!r} needs a generator (torch.Generator or integer seed) for its noise")
    grid_used = _resolve_grid(spec, steps, grid, start)
    if spec.kind == "sde" and float(grid_used[0]) < start:
        raise ValueError(
            f"{diffusion!r} is singular at t < {start} on this schedule; start the grid at t ≥ {start}"
        )
    counting = CountingField(field, interval=(float(grid_used.min()), float(grid_used.max())), max_nfe=max_nfe)
    request = SolveRequest(counting, x0, grid_used, rtol, atol, diffusion, generator, return_trajectory)
    x, trajectory, info = spec.integrate(request)
    if "model_times" in info:  # a method that evaluates the field on a grid of its own records that grid
        grid_used = info.pop("model_times")
    options = {"rtol": rtol, "atol": atol, "diffusion": repr(diffusion) if diffusion is not None else None}
    return SampleResult(x, counting.nfe, grid_used, method, float(grid_used[0]), trajectory, options, info)


@dataclass
class LikelihoodResult:
    """Per-sample ``log_prob`` at t = 1, ``nfe`` (evaluations of the augmented dynamics) and the prior end point."""

    log_prob: Tensor
    nfe: int
    x0: Tensor
    method: str
    divergence: str


def log_likelihood(
    field,
    x1: Tensor,
    method: str,
    divergence: str = "exact",
    probes: int = 1,
    generator: torch.Generator | int | None = None,
    prior_std: float | None = None,
    max_nfe: int | None = None,
    **options,
) -> LikelihoodResult:
    """:math:`\\log p_1(x_1)` of the model defined by ``field`` and the prior :math:`N(0, \\sigma_0^2 I)`.

    ``options`` go to the ODE method as in :func:`sample` (``steps``/``grid`` for fixed methods, ``rtol``/``atol``
    for adaptive ones); the grid runs from 1 down to 0. ``divergence`` is ``"exact"`` or ``"hutchinson"``
    (``probes`` Rademacher vectors drawn once from ``generator``).
    """
    spec = get_method(method)
    if spec.kind == "sde":
        raise ValueError("the likelihood needs an ODE method, not euler_maruyama")
    unknown = set(options) - {"steps", "grid", "rtol", "atol"}
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)}; allowed: steps, grid, rtol, atol")
    _check_field_input(field, x1, "x1")
    check_choice("divergence", divergence, ("exact", "hutchinson"))
    max_nfe = _resolve_max_nfe(spec, max_nfe)
    if prior_std is not None:
        prior_std = check_positive("prior_std", prior_std)
    if prior_std is None:
        schedule = getattr(field, "schedule", None)
        if schedule is None:
            raise ValueError("give prior_std, or a field with a .schedule whose prior_std defines the prior")
        prior_std = schedule.prior_std
    probe_tensor = None
    if divergence == "hutchinson":
        probes = check_int("probes", probes)
        generator = as_generator(generator)
        if generator is None:
            raise ValueError("the Hutchinson estimator needs a generator (torch.Generator or integer seed)")
        signs = torch.randint(0, 2, (probes, *x1.shape), generator=generator, dtype=torch.int64)
        probe_tensor = (2 * signs - 1).to(dtype=x1.dtype, device=x1.device)
    rtol, atol = _resolve_tolerances(spec, options.get("rtol"), options.get("atol"))
    grid = _resolve_grid(spec, options.get("steps"), options.get("grid"), start=1.0, end=0.0)
    counting = CountingField(
        AugmentedDynamics(field, divergence, probe_tensor), interval=(float(grid.min()), float(grid.max())), max_nfe=max_nfe
    )
    state = torch.cat([x1, torch.zeros(x1.shape[0], 1, dtype=x1.dtype, device=x1.device)], dim=1)
    request = SolveRequest(counting, state, grid, rtol, atol, None, None, False)
    final, _, _ = spec.integrate(request)
    x0, change = final[:, :-1], final[:, -1]
    return LikelihoodResult(gaussian_prior_log_prob(x0, prior_std) + change, counting.nfe, x0, method, divergence)
