"""Helpers shared by the tests (reference computations written independently of fmcore)."""

import math

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


def assert_matches_law(law, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per eigendirection of the exact law ``law`` (an ``ExactLaw``), the sample mean and variance of ``x`` within 5
    standard errors of the law's (a Gaussian's sample variance has standard error V √(2/n)). Returns the sample
    variances and their standard errors, for further comparisons."""
    z = x @ law.basis
    n = x.shape[0]
    mean, variance = law.rotated_output_mean, law.variance
    standard_error = variance * math.sqrt(2 / n)
    assert bool(((z.mean(0) - mean).abs() <= 5 * (variance / n).sqrt()).all()), (z.mean(0), mean)
    assert bool(((z.var(0) - variance).abs() <= 5 * standard_error).all()), (z.var(0), variance)
    return z.var(0), standard_error
