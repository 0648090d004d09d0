"""The validation layer at the public boundary of :mod:`fmcore`: one small function per kind of check.

Every public function validates its arguments with these before it computes, so the public code reads as
"validate, then compute", and every message names the argument, says what was received and what is allowed.

The exception policy (``docs/design.md``, "Errors"):

* ``TypeError``  — an argument of the wrong Python type (a string where a number is meant, a list where a
  tensor is meant, a float where an integer is meant);
* ``ValueError`` — an argument of the right type with a bad value: a shape, dtype, range, non-finite entry,
  or a structure that does not hold (a non-orthogonal eigenbasis, a numerically singular covariance);
* ``KeyError``   — only where a name is looked up in a registry (an unknown schedule, target, method …).
"""

from __future__ import annotations

import functools
import math
import numbers
import os

import torch
from torch import Tensor

TimeLike = float | int | Tensor

FLOAT_DTYPES = (torch.float32, torch.float64)


# ---------------------------------------------------------------------- numbers


def check_int(name: str, value, minimum: int | None = 1) -> int:
    """An integer (``bool`` is refused) that is at least ``minimum`` (no lower bound when None)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value}")
    return value


def check_number(
    name: str,
    value,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real number in the interval given by ``low``/``high`` (closed unless ``*_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if isinstance(value, Tensor) and value.numel() == 1 and value.is_floating_point():
            value = float(value)
        else:
            raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if not math.isfinite(value) or too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        interval = f"{left}{'-∞' if low is None else low}, {'∞' if high is None else high}{right}"
        raise ValueError(f"{name} must be a finite number in {interval}, got {value}")
    return value


def check_positive(name: str, value, allow_zero: bool = False) -> float:
    """A finite number > 0 (≥ 0 with ``allow_zero``)."""
    return check_number(name, value, low=0.0, low_open=not allow_zero)


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def check_choice(name: str, value, allowed) -> str:
    """One of a few fixed option strings (not a registry name, so a ``ValueError``)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {sorted(allowed)}, got {type(value).__name__} {value!r}")
    if value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")
    return value


SEED_LIMIT = 2**64
"""torch's generators take seeds in [0, 2⁶⁴)."""


def check_seed(name: str, value) -> int:
    """An integer seed in [0, 2⁶⁴) (torch's range)."""
    value = check_int(name, value, minimum=0)
    if value >= SEED_LIMIT:
        raise ValueError(f"{name} as an integer seed must be in [0, 2**64), got {value}")
    return value


def as_generator(generator, name: str = "generator") -> torch.Generator | None:
    """``None``, a ``torch.Generator`` (kept), or an integer seed (a fresh CPU generator seeded with it)."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(check_seed(name, generator))
    raise TypeError(f"{name} must be a torch.Generator, an integer seed or None, got {type(generator).__name__}")


def check_instance(name: str, value, kind: type, hint: str = "") -> None:
    if not isinstance(value, kind):
        extra = f" ({hint})" if hint else ""
        raise TypeError(f"{name} must be a {kind.__name__}{extra}, got {type(value).__name__} {_short(value)}")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------- tensors


def check_finite(name: str, value: Tensor) -> None:
    """Raise if ``value`` holds NaN or ±inf, saying how many entries are bad."""
    bad = ~torch.isfinite(value)
    if bool(bad.any()):
        raise ValueError(
            f"{name} must be finite; it holds {int(bad.sum())} non-finite value(s) "
            f"(NaN or inf) out of {value.numel()}"
        )


def check_float_dtype(name: str, value: Tensor) -> None:
    if value.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float32 or float64, got {value.dtype}")


def check_samples(
    name: str, x: Tensor, dim: int | None = None, finite: bool = False, min_points: int = 0
) -> None:
    """Check that ``x`` is a floating ``(n, d)`` tensor with ``n ≥ min_points`` (and ``d == dim`` when given).

    ``finite=True`` also refuses NaN and ±inf (one reduction over ``x``).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (n, d), got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (n, d), got shape {tuple(x.shape)}")
    if x.shape[1] == 0 or (dim is not None and x.shape[1] != dim):
        expected = f"d = {dim}" if dim is not None else "d ≥ 1"
        raise ValueError(f"{name} must have {expected} columns, got shape {tuple(x.shape)}")
    if x.shape[0] < min_points:
        raise ValueError(f"{name} must hold at least {min_points} point(s), got shape {tuple(x.shape)}")
    check_float_dtype(name, x)
    if finite:
        check_finite(name, x)


def _is_complex(value) -> bool:
    """A complex tensor or array, a complex number, or a (nested) list holding one."""
    if isinstance(value, Tensor):
        return value.is_complex()
    if isinstance(value, complex):
        return True
    dtype = getattr(value, "dtype", None)
    if dtype is not None:
        return getattr(dtype, "kind", None) == "c"  # numpy
    if isinstance(value, (list, tuple)):
        return any(_is_complex(item) for item in value)
    return False


def as_float64(name: str, value) -> Tensor:
    """A finite float64 CPU tensor from a tensor, array or nested list of numbers."""
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be a tensor or array of numbers, got {type(value).__name__}")
    if _is_complex(value):
        raise TypeError(f"{name} must be real; it holds complex numbers (their imaginary parts would be dropped)")
    try:
        tensor = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"{name} must be a tensor or array of numbers: {error}") from None
    check_finite(name, tensor)
    return tensor


# ---------------------------------------------------------------------- time


def as_time(t: TimeLike, like: Tensor | None = None, n: int | None = None, name: str = "t") -> Tensor:
    """Return ``t`` as a tensor (0-d, or ``(n,)``) checked to lie in [0, 1].

    A Python number becomes a 0-d tensor of ``like``'s dtype and device (float64 on the CPU when
    ``like`` is None). A tensor keeps its values but is moved to ``like``'s dtype and device. When
    ``n`` is given, a 1-d ``t`` must have exactly ``n`` entries.
    """
    dtype = like.dtype if like is not None else torch.float64
    device = like.device if like is not None else torch.device("cpu")
    if isinstance(t, Tensor):
        if t.dim() > 1:
            raise ValueError(f"{name} must be a float, a 0-d tensor or an (n,) tensor, got shape {tuple(t.shape)}")
        if n is not None and t.dim() == 1 and t.shape[0] != n:
            raise ValueError(f"{name} has {t.shape[0]} entries but x has n = {n} rows")
        if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"{name} must be a real-valued tensor, got {t.dtype}")
        t_tensor = t.to(dtype=dtype, device=device)
        _check_unit_interval(t_tensor.detach(), name)
        return t_tensor
    if isinstance(t, bool) or not isinstance(t, numbers.Real):
        raise TypeError(f"{name} must be a float, a 0-d tensor or an (n,) tensor, got {type(t).__name__}")
    t_float = float(t)
    if not (math.isfinite(t_float) and 0.0 <= t_float <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1] (t = 0 is noise, t = 1 is data), got {t_float}")
    return torch.scalar_tensor(t_float, dtype=dtype, device=device)  # a third of torch.tensor's cost per call


def _check_unit_interval(t: Tensor, name: str = "t") -> None:
    if t.numel() == 0:
        return
    outside = ~((t >= 0) & (t <= 1))  # NaN counts as outside
    if bool(outside.any()):
        bad = t[outside].flatten()[:3].tolist()
        raise ValueError(
            f"{name} must lie in [0, 1] (t = 0 is noise, t = 1 is data); {int(outside.sum())} value(s) "
            f"are outside, e.g. {bad}"
        )


# ---------------------------------------------------------------------- memory


DEFAULT_MEMORY_LIMIT_BYTES = 4 * 2**30
"""What a call that allocates O(n²) or more may use unless told otherwise (``max_memory_bytes``)."""


@functools.lru_cache(maxsize=1)
def machine_memory_bytes() -> float:
    """The machine's physical memory (``inf`` where the OS does not say); read once (``sample`` checks every grid)."""
    try:
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return math.inf


def check_allocation(argument: str, value, what: str, needed_bytes: float) -> None:
    """Refuse, before allocating, a size that this machine cannot hold: ``MemoryError`` when ``what`` (sized by the
    user's ``argument = value``) would need more than the machine's physical memory."""
    available = machine_memory_bytes()
    if needed_bytes > available:
        raise MemoryError(
            f"{argument} = {value} is too large: {what} would need about {needed_bytes / 2**30:.3g} GiB, more than this "
            f"machine's {available / 2**30:.3g} GiB of memory"
        )


def check_memory(what: str, needed_bytes: float, limit_bytes: float | None) -> None:
    """Refuse, before allocating, a computation estimated to need more than ``limit_bytes``."""
    limit = DEFAULT_MEMORY_LIMIT_BYTES if limit_bytes is None else check_positive("max_memory_bytes", limit_bytes)
    if needed_bytes > limit:
        raise MemoryError(
            f"{what} would need about {needed_bytes / 2**30:.2f} GiB, above the limit of {limit / 2**30:.2f} GiB; "
            "use fewer points, a cheaper estimator, or raise max_memory_bytes if the machine has the memory"
        )
