"""Helpers shared by the tests (reference computations written independently of fmcore)."""

import pytest
import torch


def cuda_or_skip() -> torch.device:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine (CUDA checks run on a GPU host only)")
    return torch.device("cuda")


def rk4_reference(field, x: torch.Tensor, t0: float, t1: float, steps: int) -> torch.Tensor:
    """A plain classic RK4 loop, written here independently of fmcore.solvers, for reference solves."""
    h = (t1 - t0) / steps
    for i in range(steps):
        t = t0 + i * h
        k1 = field(t, x)
        k2 = field(t + h / 2, x + h / 2 * k1)
        k3 = field(t + h / 2, x + h / 2 * k2)
        k4 = field(t + h, x + h * k3)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x
