"""The method registry: each method is registered once, beside its integrator, with a declaration of what it takes.

:func:`~fmcore.solvers.sample`, the harness and its sweep checks read the declaration — steps or tolerances,
a grid or not, a diffusion, a generator, which field predictions, method options — and never branch on a
method's name or family. Adding a method is one :func:`register_method` call in the file that integrates it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .._registry import unknown_name
from .counting import CountingField
from .diffusions import Diffusion
from .tableaus import TABLEAUS

if TYPE_CHECKING:
    from .laws import LawRecursion

__all__ = ["Method", "SolveRequest", "METHODS", "register_method", "get_method", "PREDICTIONS", "STEPPING"]

PREDICTIONS = ("velocity", "score", "data", "noise")
"""What a method may ask the field for: ``field(t, x)``, ``.score``, ``.data_prediction``, ``.noise_prediction``."""
STEPPING = ("grid", "own_grid", "adaptive")
"""``grid``: runs on a time grid, given as ``steps`` (uniform) or ``grid``; ``own_grid``: builds its own grid from
``steps`` (a reproduction of a sampler as written); ``adaptive``: chooses its own steps from ``rtol``/``atol``."""


@dataclass(frozen=True)
class SolveRequest:
    """Everything a method may need, validated by ``sample`` before any method runs."""

    field: CountingField
    x0: Tensor
    grid: Tensor
    rtol: float | None
    atol: float | None
    diffusion: Diffusion | None
    generator: torch.Generator | None
    return_trajectory: bool
    options: Mapping[str, float] = field(default_factory=dict)

    @property
    def schedule(self):
        """The field's schedule (methods that need α_t, σ_t declare it with ``needs_schedule``)."""
        return self.field.field.schedule


@dataclass(frozen=True)
class Method:
    """A registered method and what it takes.

    ``integrate(request) -> (x, trajectory, info)``; ``stepping`` is one of :data:`STEPPING`; ``stages`` the field
    calls per step where that is fixed (NFE = stages × steps); ``tolerances`` the default (rtol, atol) of an
    adaptive method; ``diffusion``: takes a :class:`~fmcore.solvers.Diffusion` g_t; ``random``: True when it
    always draws noise, the name of an option when it draws noise only while that option is > 0, else False;
    ``draws_per_step``: the most Brownian increments one of its steps draws (its exact law probes that many per step);
    ``predictions``: what it asks the field for (:data:`PREDICTIONS`); ``needs_schedule``: reads α_t, σ_t from
    the field's ``.schedule``; ``options``: its own options and their defaults (e.g. DDIM's ``eta``);
    ``start``: where a default grid starts on a schedule (None: t = 0); ``order``: its order of convergence, for
    listings; ``family``: a word for listings, never branched on; ``exact_law``: how its exact output law on a Gaussian
    target is computed (a :class:`~fmcore.solvers.laws.LawRecursion`), None when it has none (adaptive methods, peers);
    ``affine``: the method combines x, the field's predictions and Gaussian increments linearly, with coefficients
    that do not depend on x, and computes in the state's dtype (a user's multistep or exponential integrator, say):
    with no ``exact_law`` of its own its law is read off its own float64 run by probing
    (:data:`~fmcore.solvers.laws.PROBED`), which refuses a method that is not; ``caveat``: what a reader of its
    results must know (a superconvergence, a known bias), stated beside its rows in reports; ``requires``: the
    modules it imports when it runs beyond the library's own (a peer's library), which listings check without
    importing them (:meth:`missing`).
    """

    name: str
    integrate: Callable[[SolveRequest], tuple[Tensor, Tensor | None, dict]]
    stepping: str = "grid"
    stages: int | None = None
    tolerances: tuple[float, float] | None = None
    diffusion: bool = False
    random: bool | str = False
    draws_per_step: int = 1
    predictions: tuple[str, ...] = ("velocity",)
    needs_schedule: bool = False
    options: Mapping[str, float] = field(default_factory=dict)
    start: Callable[[object], float] | None = None
    order: int | None = None
    family: str = ""
    exact_law: LawRecursion | None = None
    affine: bool = False
    caveat: str = ""
    requires: tuple[str, ...] = ()

    def __post_init__(self):
        if self.affine and self.exact_law is None:
            from .laws import PROBED  # the laws build on the method registry

            object.__setattr__(self, "exact_law", PROBED)
        if self.stepping not in STEPPING:
            raise ValueError(f"method {self.name!r}: stepping must be one of {STEPPING}, got {self.stepping!r}")
        if (self.stepping == "adaptive") != (self.tolerances is not None):
            raise ValueError(f"method {self.name!r}: adaptive methods, and only they, declare default tolerances")
        unknown = set(self.predictions) - set(PREDICTIONS)
        if unknown:
            raise ValueError(f"method {self.name!r}: unknown predictions {sorted(unknown)}; valid: {PREDICTIONS}")
        if isinstance(self.random, str) and self.random not in self.options:
            raise ValueError(f"method {self.name!r}: random names option {self.random!r}, which it does not declare")

    def missing(self) -> list[str]:
        """The modules of :attr:`requires` that are not installed here (found by ``importlib.util.find_spec``, which
        imports nothing but a parent package)."""
        return [module for module in self.requires if importlib.util.find_spec(module) is None]

    @property
    def takes_steps(self) -> bool:
        return self.stepping in ("grid", "own_grid")

    @property
    def adaptive(self) -> bool:
        return self.stepping == "adaptive"

    def draws_noise(self, options: Mapping[str, float] | None = None) -> bool:
        """Whether a run with these method options draws random numbers (and so needs a generator)."""
        if isinstance(self.random, str):
            return float({**self.options, **(options or {})}[self.random]) > 0
        return bool(self.random)


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    if not isinstance(method, Method):
        raise TypeError(f"register_method takes a Method, got {type(method).__name__}")
    if method.name in METHODS:
        raise KeyError(f"method {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    if not isinstance(name, str):
        raise TypeError(f"method must be a name (a string), got {type(name).__name__} {name!r}")
    if name not in METHODS and name in TABLEAUS:  # a tableau registered after import is a method too
        from .runge_kutta import register_tableau_method

        register_tableau_method(TABLEAUS[name])
    if name not in METHODS:
        raise KeyError(unknown_name("method", name, METHODS))
    return METHODS[name]
