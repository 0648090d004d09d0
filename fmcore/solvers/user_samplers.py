"""A user's sampler as a method: a plain callable ``sampler(field, x0, grid) -> x``.

``field`` is the field every built-in method gets (it counts each call: ``field(t, x)`` the velocity, and
``.score``, ``.data_prediction``, ``.noise_prediction``, ``.schedule``); ``x0`` the starting noise ``(n, d)``;
``grid`` the float64 times ``t_0 < … < t_N`` (t = 0 noise, t = 1 data) it must step along; it returns the points at
``t_N``. :func:`user_method` registers it as ``user:<name>`` so that it is sampled, scored and reported like any
method, beside ``dpmpp_2m`` and ``unipc`` at the same NFE; ``stages`` (its field calls per step) turns an NFE budget
into steps.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from .methods import METHODS, Method, SolveRequest

__all__ = ["user_method"]

PREFIX = "user:"


def user_method(sampler: Callable, name: str | None = None, stages: int = 1, order: int | None = None,
                affine: bool = False) -> Method:
    """``sampler`` registered as the method ``user:<name>`` (``name``: its ``__name__`` by default) and returned.

    ``order``: its order of convergence, if known (listed beside the fitted one). ``affine=True`` declares that it
    combines x and the field's predictions linearly with coefficients that do not depend on x: on a Gaussian target
    its exact output law is then read off its own float64 run by probing, and scored like the built-in methods'.

    Registering the same name again replaces the earlier sampler: a function redefined in a notebook is the new one.
    """
    if not callable(sampler):
        raise TypeError(f"sampler must be callable as sampler(field, x0, grid) -> x, got {type(sampler).__name__}")
    name = name if name is not None else getattr(sampler, "__name__", "")
    if not isinstance(name, str) or not name or not name.isidentifier():
        raise ValueError(f"give the sampler a name (a Python identifier): user_method(sampler, name='mine'); got {name!r}")
    if isinstance(stages, bool) or not isinstance(stages, int) or stages < 1:
        raise ValueError(f"stages (field calls per step) must be an integer ≥ 1, got {stages!r}")

    def integrate(request: SolveRequest) -> tuple[Tensor, None, dict]:
        x = sampler(request.field, request.x0, request.grid)
        if not isinstance(x, Tensor) or x.shape != request.x0.shape:
            got = f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"sampler {name!r} must return the points at the grid's end, shape "
                             f"{tuple(request.x0.shape)}; got {got}")
        return x, None, {}

    method = Method(PREFIX + name, integrate, stepping="grid", stages=stages, family="user",
                    predictions=("velocity",), order=order, affine=affine)
    METHODS[method.name] = method  # the user's namespace: a new definition replaces the old
    return method
