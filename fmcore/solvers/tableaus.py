r"""Butcher tableaus of explicit Runge–Kutta methods, as data.

A tableau :math:`(c, A, b)` defines the step
:math:`k_i = f(t + c_i h,\ x + h\sum_{j<i} a_{ij}k_j)`, :math:`x' = x + h\sum_i b_i k_i`.
Adding a fixed-step method is adding a tableau here with ``register_tableau``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

__all__ = ["ButcherTableau", "TABLEAUS", "register_tableau"]


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge–Kutta method: nodes ``c``, strictly lower-triangular ``a``, weights ``b``."""

    name: str
    order: int
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    caveat: str = ""
    """What a reader of its results must know, shown beside its rows (``Method.caveat``)."""

    def __post_init__(self):
        stages = len(self.b)
        if len(self.c) != stages or len(self.a) != stages:
            raise ValueError(f"tableau {self.name!r}: c, a and b must all have {stages} rows")
        for i, row in enumerate(self.a):
            if len(row) != i:
                raise ValueError(f"tableau {self.name!r}: row {i} of a must have {i} entries (explicit method)")
        if abs(sum(self.b) - 1.0) > 1e-12:
            raise ValueError(f"tableau {self.name!r}: the weights b must sum to 1 (consistency)")
        for i, (c_i, row) in enumerate(zip(self.c, self.a, strict=True)):
            if abs(c_i - sum(row)) > 1e-12:
                raise ValueError(
                    f"tableau {self.name!r}: node c[{i}] = {c_i} must equal the sum of row {i} of a ({sum(row)}): a stage "
                    "evaluated at another time than the state it is given makes the method first order at best"
                )

    @property
    def stages(self) -> int:
        return len(self.b)


def stage_time(c_i: float, t, t_next, h: float):
    """Where a stage with node ``c_i`` evaluates the field on the step t → t_next of length ``h``: ``t + c_i h``, but
    ``t`` itself at c = 0 and ``t_next`` itself at c = 1 (``t + h`` can round past the end of the grid). ``t`` and
    ``t_next`` are floats or 0-d tensors; the integrator and the exact laws both place stages here."""
    return t if c_i == 0.0 else t_next if c_i == 1.0 else t + c_i * h


def _floats(*values) -> tuple[float, ...]:
    return tuple(float(Fraction(value)) for value in values)


TABLEAUS: dict[str, ButcherTableau] = {}


def register_tableau(tableau: ButcherTableau) -> ButcherTableau:
    if tableau.name in TABLEAUS:
        raise KeyError(f"tableau {tableau.name!r} is already registered")
    TABLEAUS[tableau.name] = tableau
    return tableau


register_tableau(ButcherTableau("euler", 1, c=_floats(0), a=((),), b=_floats(1)))
register_tableau(ButcherTableau(
    "midpoint", 2, c=_floats(0, "1/2"), a=((), _floats("1/2")), b=_floats(0, 1),
    caveat="third order, not second, on Gaussian targets when α and σ are affine in t (cond_ot, linear_vp): there its "
           "global h² error coefficient integrates to zero (tests/test_solvers.py); second order elsewhere"))
register_tableau(ButcherTableau("heun", 2, c=_floats(0, 1), a=((), _floats(1)), b=_floats("1/2", "1/2")))
register_tableau(
    ButcherTableau(
        "rk4",
        4,
        c=_floats(0, "1/2", "1/2", 1),
        a=((), _floats("1/2"), _floats(0, "1/2"), _floats(0, 0, 1)),
        b=_floats("1/6", "1/3", "1/3", "1/6"),
    )
)
register_tableau(
    ButcherTableau(
        "rk38",
        4,
        c=_floats(0, "1/3", "2/3", 1),
        a=((), _floats("1/3"), _floats("-1/3", 1), _floats(1, -1, 1)),
        b=_floats("1/8", "3/8", "3/8", "1/8"),
    )
)
