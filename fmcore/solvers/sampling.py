"""The one entry point every sampler run goes through: :func:`sample`, and :func:`log_likelihood`.

Methods are registered by name (:data:`METHODS`), each beside its integrator, with a declaration of what it takes
(:class:`~fmcore.solvers.methods.Method`); ``sample`` validates the call against that declaration:

================== ========================================================== =======================================
family             methods                                                    takes
================== ========================================================== =======================================
explicit RK        ``euler``, ``midpoint``, ``heun``, ``rk4``, ``rk38``        ``steps`` or ``grid``
                   (our engine, one Butcher tableau each)
torchdiffeq        ``tdq_euler``, ``tdq_midpoint``, ``tdq_heun2``,             ``steps`` or ``grid``
fixed-grid         ``tdq_heun3``, ``tdq_rk4``
adaptive           ``dopri5``, ``dopri8``, ``bosh3``, ``adaptive_heun``,        ``rtol``, ``atol``
                   ``fehlberg2`` (torchdiffeq); ``scipy_dop853``,
                   ``scipy_rk45``, ``scipy_lsoda``, ``scipy_radau``,
                   ``scipy_bdf`` (SciPy, float64 references)
reverse SDE        ``euler_maruyama``                                         ``steps`` or ``grid``, ``diffusion``,
                                                                              ``generator``
diffusion          ``ddim`` (``eta``), ``euler_ancestral`` (``eta``),          ``steps`` or ``grid``; ``generator``
                   ``dpmpp_2m``, ``dpmpp_2m_sde`` (``eta``), ``edm_heun``      when the option makes it stochastic
                   (``churn``): :mod:`fmcore.solvers.diffusion_samplers`
reproduction       ``seed000_sde`` (:mod:`fmcore.reproductions.seed000`)      ``steps``, ``generator``
================== ========================================================== =======================================

Note: torchdiffeq's ``rk4`` is the 3/8-rule variant (``rk4_alt_step_func``), i.e. our ``rk38``.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field

import torch
from torch import Tensor

from .._checks import (
    as_generator,
    check_allocation,
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_positive,
    check_samples,
)
from ..grids import check_grid, get_grid

# Each module registers its methods, and registration order is the order methods are listed in and take their
# colours in figures (fmbench.figures.method_colour): the classical ones first.
# isort: off
from . import runge_kutta  # noqa: F401
from . import sde  # noqa: F401
from . import diffusion_samplers, restart_sampling, sa_solver, singlestep_samplers  # noqa: F401
from . import adaptive  # noqa: F401
# isort: on
from .counting import CountingField
from .diffusions import Diffusion
from .likelihood import AugmentedDynamics, gaussian_prior_log_prob
from .methods import METHODS, Method, SolveRequest, get_method, register_method

__all__ = ["sample", "log_likelihood", "SampleResult", "LikelihoodResult", "Method", "METHODS", "register_method",
           "get_method"]

DEFAULT_MAX_NFE = 100_000
"""Adaptive methods stop with :class:`~fmcore.solvers.SolverBudgetError` past this many field evaluations unless
given ``max_nfe`` (a stiff problem would otherwise run without bound)."""


@dataclass
class SampleResult:
    """``x`` at ``t1``, ``nfe`` counted by a wrapper around the field, the ``grid`` used (for adaptive methods:
    the output times), ``t0`` where the solve started, the ``trajectory`` (``(len(grid), n, d)``) if asked,
    the ``options`` in force (tolerances, diffusion) and ``info`` reported by the solver itself (SciPy's counts).

    ``t1`` is where the solve ended: 1 (the data) unless the grid ends before, a deliberate early stop (samplers
    are commonly stopped at 1 − ε), or the method stops short of it (a scheduler ending at its table's σ_min);
    ``x`` is then a sample of the path at ``t1``, and whoever scores it says whether against the data or against the
    marginal at ``t1``."""

    x: Tensor
    nfe: int
    grid: Tensor
    method: str
    t0: float
    trajectory: Tensor | None = None
    options: dict = dataclass_field(default_factory=dict)
    info: dict = dataclass_field(default_factory=dict)
    t1: float = 1.0


def _check_field_input(field, x: Tensor, name: str) -> None:
    dim = getattr(field, "dim", False)  # False: no .dim at all
    if not callable(field) or isinstance(dim, bool) or not (dim is None or isinstance(dim, int)):
        raise TypeError(
            f"the field must be callable as field(t, x), with .dim an integer or None (a ModelField that takes its "
            f"dimension from its first call) — AnalyticField, ModelField or the same interface; got "
            f"{type(field).__name__} with dim {dim!r}"
        )
    check_samples(name, x, dim, finite=True)
    dtype = getattr(field, "dtype", None)
    if dtype is not None and x.dtype != dtype:
        raise ValueError(f"{name} has dtype {x.dtype} but the field computes in {dtype}")


def _resolve_tolerances(method: Method, rtol, atol, dtype: torch.dtype) -> tuple[float | None, float | None]:
    """The tolerances of an adaptive method: each > 0, and not both far below the state dtype's resolution ε (under
    ε/100 no step can meet them: the step size underflows first; nearer ε a solve that cannot meet them ends in
    :class:`~fmcore.solvers.SolverStepSizeError` or the NFE budget)."""
    if not method.adaptive:
        if rtol is not None or atol is not None:
            raise ValueError(f"rtol/atol apply to adaptive methods only; {method.name!r} takes steps or a grid")
        return None, None
    default_rtol, default_atol = method.tolerances
    rtol = default_rtol if rtol is None else check_positive("rtol", rtol)
    atol = default_atol if atol is None else check_positive("atol", atol)
    resolution = torch.finfo(dtype).eps
    if max(rtol, atol) < resolution / 100:
        raise ValueError(f"rtol = {rtol:g} and atol = {atol:g} are both far below {dtype}'s resolution ε = {resolution:.3g}: "
                         "no step can meet them (its size would underflow first); raise rtol or atol to ≥ ε/100")
    return rtol, atol


def _resolve_max_nfe(method: Method, max_nfe) -> int | None:
    if max_nfe is not None:
        return check_int("max_nfe", max_nfe)
    return DEFAULT_MAX_NFE if method.adaptive else None


def _resolve_grid(method: Method, steps, grid, start: float, end: float = 1.0) -> Tensor:
    """The grid a method runs on; ``start``/``end`` are where an unspecified grid begins and ends."""
    if grid is not None and steps is not None:
        raise ValueError("give steps or grid, not both")
    if grid is not None:
        if method.stepping == "own_grid":
            raise ValueError(f"{method.name!r} runs on its own grid (as its source wrote it): give steps, not a grid")
        grid = torch.as_tensor(grid, dtype=torch.float64).detach().cpu()
        check_grid(grid, increasing=end > start)
        return grid
    if method.takes_steps:
        if steps is None:
            raise ValueError(f"{method.name!r} is a fixed-step method: give steps (a uniform grid) or a grid")
        lower, upper = min(start, end), max(start, end)
        uniform = get_grid("uniform", steps, t0=lower, t1=upper)
        return uniform if end > start else uniform.flip(0)
    if steps is not None:
        raise ValueError(f"{method.name!r} is adaptive and chooses its own steps: give rtol/atol, not steps")
    return torch.tensor([start, end], dtype=torch.float64)


def method_grid(method: Method, schedule, steps, grid, diffusion: Diffusion | None) -> Tensor:
    """The grid ``method`` runs on for these arguments, checked: ``steps`` (a uniform grid from where the method and
    its diffusion start on ``schedule``) or ``grid`` (refused where it begins before its diffusion is finite);
    ``diffusion`` required by, and only by, reverse-SDE methods.
    The exact law of a run (:func:`fmcore.exact.exact_output_law`) resolves its grid here too."""
    start = method.start(schedule) if method.start is not None else 0.0
    earliest = 0.0  # a method's start is where its default grid begins; it checks what it needs itself (α > 0, say)
    if method.diffusion:
        if diffusion is None:
            raise ValueError(f"{method.name!r} needs diffusion=fmcore.solvers.get_diffusion(name, ...)")
        if not isinstance(diffusion, Diffusion):
            raise TypeError(
                f"{method.name!r} needs diffusion=fmcore.solvers.get_diffusion(name, ...), "
                f"got {type(diffusion).__name__} {diffusion!r}"
            )
        earliest = diffusion.start_time(schedule)
        start = max(start, earliest)
    elif diffusion is not None:
        raise ValueError(f"diffusion applies to reverse-SDE methods (euler_maruyama) only; {method.name!r} takes none")
    grid_used = _resolve_grid(method, steps, grid, start)
    if method.diffusion:
        check_grid_start(grid_used, earliest, repr(diffusion))
    return grid_used


def check_grid_start(grid: Tensor, start: float, what: str) -> None:
    """Refuse a grid that begins before ``start``, the earliest time where ``what`` (a method or a diffusion) is finite."""
    if float(grid[0]) < start:
        raise ValueError(f"{what} is singular at t < {start} on this schedule; start the grid at t ≥ {start}")


def method_options(method: Method, options: dict) -> dict:
    """The method's own options (e.g. DDIM's ``eta``) over its declared defaults; each a finite number ≥ 0."""
    unknown = sorted(set(options) - set(method.options))
    if unknown:
        allowed = sorted(method.options) or "none"
        raise TypeError(f"{method.name!r} takes no option(s) {unknown}; its options: {allowed}")
    return {name: check_number(name, options.get(name, default), 0.0) for name, default in method.options.items()}


def _check_field_provides(field, method: Method) -> None:
    attributes = {"score": "score", "data": "data_prediction", "noise": "noise_prediction"}
    for prediction in method.predictions:
        attribute = attributes.get(prediction)
        if attribute is not None and not callable(getattr(field, attribute, None)):
            raise TypeError(f"{method.name!r} needs the field's {prediction} prediction (.{attribute}(t, x)); "
                            f"{type(field).__name__} has none")
    if method.needs_schedule and getattr(field, "schedule", None) is None:
        raise ValueError(f"{method.name!r} needs a field with a .schedule (it reads α_t and σ_t)")


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
    enable_grad: bool = False,
    **options: float,
) -> SampleResult:
    """Integrate from noise ``x0`` (at ``grid[0]``, t = 0 by default) to data at t = 1 with ``method``.

    The solve runs under ``torch.no_grad()`` (a network's forward passes build no autograd graph) unless
    ``enable_grad=True``, for differentiating the output through the solver.

    ``steps`` alone means a uniform grid on [0, 1] (on [t_start, 1] for a diffusion singular at t = 0, such as
    ``forward`` on a path with α_0 = 0, or a method that cannot start at t = 0, such as ``edm_heun`` there;
    ``result.t0`` records it). ``options`` are the method's own (``eta`` for ``ddim``, ``churn`` for ``edm_heun``:
    ``get_method(name).options`` lists them with their defaults). Raises
    :class:`~fmcore.solvers.SolverDivergenceError` with the step and time if the solution stops being finite, and
    :class:`~fmcore.solvers.SolverBudgetError` past ``max_nfe`` field evaluations (default :data:`DEFAULT_MAX_NFE`
    for adaptive methods, no cap for fixed-step ones, whose NFE is known in advance).
    """
    spec = get_method(method)
    _check_field_input(field, x0, "x0")
    check_bool("return_trajectory", return_trajectory)
    check_bool("enable_grad", enable_grad)
    _check_field_provides(field, spec)
    options = method_options(spec, options)
    max_nfe = _resolve_max_nfe(spec, max_nfe)
    rtol, atol = _resolve_tolerances(spec, rtol, atol, x0.dtype)
    generator = as_generator(generator)
    grid_used = method_grid(spec, getattr(field, "schedule", None), steps, grid, diffusion)
    if spec.draws_noise(options) and generator is None:
        raise ValueError(f"{method!r} needs a generator (torch.Generator or integer seed): it draws noise here")
    if return_trajectory:
        check_allocation("steps", len(grid_used) - 1, f"the trajectory of {x0.shape[0]} points at {len(grid_used)} times",
                         float(len(grid_used)) * x0.numel() * x0.element_size())
    recorded = {"rtol": rtol, "atol": atol, "diffusion": repr(diffusion) if diffusion is not None else None, **options}
    if x0.shape[0] == 0:  # the empty batch: nothing to integrate, for every method
        trajectory = x0.new_empty(len(grid_used), 0, x0.shape[1]) if return_trajectory else None
        return SampleResult(x0.clone(), 0, grid_used, method, float(grid_used[0]), trajectory, recorded, {},
                            float(grid_used[-1]))
    counting = CountingField(field, interval=(float(grid_used.min()), float(grid_used.max())), max_nfe=max_nfe)
    request = SolveRequest(counting, x0, grid_used, rtol, atol, diffusion, generator, return_trajectory, options)
    with torch.set_grad_enabled(enable_grad):
        x, trajectory, info = spec.integrate(request)
    end = float(grid_used[-1])  # where the output is: the grid's end, also for a method whose model times stop short
    end = float(info.pop("output_time", end))  # unless the method says it stops elsewhere (a scheduler's last level)
    if "model_times" in info:  # a method that evaluates the field on a grid of its own records that grid
        grid_used = info.pop("model_times")
    return SampleResult(x, counting.nfe, grid_used, method, float(grid_used[0]), trajectory, recorded, info, end)


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
    if spec.draws_noise() or spec.predictions != ("velocity",):
        raise ValueError(f"the likelihood needs an ODE method on the velocity (a Runge–Kutta or adaptive one), not {method!r}")
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
        check_allocation("probes", probes, f"{probes} Rademacher probes of {tuple(x1.shape)} (with their products)",
                         3 * 8.0 * probes * x1.numel())
        signs = torch.randint(0, 2, (probes, *x1.shape), generator=generator, dtype=torch.int64)
        probe_tensor = (2 * signs - 1).to(dtype=x1.dtype, device=x1.device)
    rtol, atol = _resolve_tolerances(spec, options.get("rtol"), options.get("atol"), x1.dtype)
    grid = _resolve_grid(spec, options.get("steps"), options.get("grid"), start=1.0, end=0.0)
    if x1.shape[0] == 0:  # the empty batch: nothing to integrate, for every method
        return LikelihoodResult(x1.new_zeros(0), 0, x1.clone(), method, divergence)
    counting = CountingField(
        AugmentedDynamics(field, divergence, probe_tensor), interval=(float(grid.min()), float(grid.max())), max_nfe=max_nfe
    )
    state = torch.cat([x1, torch.zeros(x1.shape[0], 1, dtype=x1.dtype, device=x1.device)], dim=1)
    request = SolveRequest(counting, state, grid, rtol, atol, None, None, False)
    final, _, _ = spec.integrate(request)
    x0, change = final[:, :-1], final[:, -1]
    return LikelihoodResult(gaussian_prior_log_prob(x0, prior_std) + change, counting.nfe, x0, method, divergence)
