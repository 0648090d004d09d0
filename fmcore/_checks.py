"""Validation helpers used at the public boundary of :mod:`fmcore`.

Every function raises :class:`ValueError` with a message that names the argument, says what was
received and what is allowed. They are deliberately small so the public functions read as
"validate, then compute".
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

TimeLike = float | int | Tensor

FLOAT_DTYPES = (torch.float32, torch.float64)


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


def check_samples(name: str, x: Tensor, dim: int | None = None, finite: bool = False) -> None:
    """Check that ``x`` is a floating ``(n, d)`` tensor (with ``d == dim`` when given)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (n, d), got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (n, d), got shape {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} must have d = {dim} columns, got shape {tuple(x.shape)}")
    check_float_dtype(name, x)
    if finite:
        check_finite(name, x)


def as_time(t: TimeLike, like: Tensor | None = None, n: int | None = None) -> Tensor:
    """Return ``t`` as a tensor (0-d, or ``(n,)``) checked to lie in [0, 1].

    A Python number becomes a 0-d tensor of ``like``'s dtype and device (float64 on the CPU when
    ``like`` is None). A tensor keeps its values but is moved to ``like``'s dtype and device. When
    ``n`` is given, a 1-d ``t`` must have exactly ``n`` entries.
    """
    dtype = like.dtype if like is not None else torch.float64
    device = like.device if like is not None else torch.device("cpu")
    if isinstance(t, Tensor):
        if t.dim() > 1:
            raise ValueError(f"t must be a float, a 0-d tensor or an (n,) tensor, got shape {tuple(t.shape)}")
        if n is not None and t.dim() == 1 and t.shape[0] != n:
            raise ValueError(f"t has {t.shape[0]} entries but x has n = {n} rows")
        t_tensor = t.to(dtype=dtype, device=device)
        _check_unit_interval(t_tensor.detach())
        return t_tensor
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise ValueError(f"t must be a float, a 0-d tensor or an (n,) tensor, got {type(t).__name__}")
    t_float = float(t)
    if not (math.isfinite(t_float) and 0.0 <= t_float <= 1.0):
        raise ValueError(f"t must lie in [0, 1] (t = 0 is noise, t = 1 is data), got {t_float}")
    return torch.tensor(t_float, dtype=dtype, device=device)


def _check_unit_interval(t: Tensor) -> None:
    if t.numel() == 0:
        return
    outside = ~((t >= 0) & (t <= 1))  # NaN counts as outside
    if bool(outside.any()):
        bad = t[outside].flatten()[:3].tolist()
        raise ValueError(
            f"t must lie in [0, 1] (t = 0 is noise, t = 1 is data); {int(outside.sum())} value(s) "
            f"are outside, e.g. {bad}"
        )


def check_positive(name: str, value: float, allow_zero: bool = False) -> float:
    value = float(value)
    ok = value >= 0 if allow_zero else value > 0
    if not (math.isfinite(value) and ok):
        allowed = "≥ 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {allowed}, got {value}")
    return value
