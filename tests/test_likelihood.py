"""The likelihood ODE: exact divergence against closed-form log-densities; Hutchinson's 1/√k."""

import numpy as np
import pytest
import torch

from fmcore import AnalyticField, get_schedule, get_target
from fmcore.solvers import log_likelihood


@pytest.mark.parametrize("schedule_name", ["cond_ot", "cosine"])
def test_exact_divergence_likelihood_matches_log_prob(schedule_name):
    target = get_target("gmm", K=4, d=3, seed=2)
    field = AnalyticField(target, get_schedule(schedule_name))
    x1 = target.sample(64, generator=torch.Generator().manual_seed(0))
    result = log_likelihood(field, x1, "dopri5", rtol=1e-10, atol=1e-10)
    assert float((result.log_prob - target.log_prob(x1)).abs().max()) < 1e-5
    assert result.nfe > 0 and result.x0.shape == x1.shape


def test_autograd_divergence_equals_closed_form():
    """A field without .divergence gets the autograd trace: the same solve, the same answer."""
    target = get_target("seed000")
    field = AnalyticField(target, get_schedule("cond_ot"))

    class VelocityOnly:
        dim, schedule = field.dim, field.schedule

        def __call__(self, t, x):
            return field(t, x)

    x1 = target.sample(16, generator=torch.Generator().manual_seed(1))
    closed = log_likelihood(field, x1, "rk4", steps=16)
    autograd = log_likelihood(VelocityOnly(), x1, "rk4", steps=16)
    torch.testing.assert_close(autograd.log_prob, closed.log_prob, rtol=1e-10, atol=1e-10)
    assert closed.nfe == autograd.nfe == 64


def test_hutchinson_error_shrinks_like_one_over_root_k():
    target = get_target("gmm", K=3, d=4, seed=0)
    field = AnalyticField(target, get_schedule("cond_ot"))
    x1 = target.sample(100, generator=torch.Generator().manual_seed(0))
    exact = log_likelihood(field, x1, "rk4", steps=12).log_prob
    probes = [1, 4, 16, 64]
    rms = []
    for k in probes:
        errors = torch.cat([
            log_likelihood(field, x1, "rk4", divergence="hutchinson", probes=k, generator=seed, steps=12).log_prob - exact
            for seed in range(3)
        ])
        rms.append(float(errors.pow(2).mean().sqrt()))
    slope = np.polyfit(np.log(probes), np.log(rms), 1)[0]
    assert abs(slope + 0.5) < 0.1, (slope, rms)


def test_hutchinson_is_seeded():
    target = get_target("seed000")
    field = AnalyticField(target, get_schedule("cond_ot"))
    x1 = target.sample(8, generator=torch.Generator().manual_seed(0))
    first = log_likelihood(field, x1, "heun", steps=8, divergence="hutchinson", probes=2, generator=3)
    second = log_likelihood(field, x1, "heun", steps=8, divergence="hutchinson", probes=2, generator=3)
    assert torch.equal(first.log_prob, second.log_prob)


def test_likelihood_bad_input():
    field = AnalyticField(get_target("seed000"), get_schedule("cond_ot"))
    x1 = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"divergence must be one of \['exact', 'hutchinson'\]"):
        log_likelihood(field, x1, "dopri5", divergence="trace")
    with pytest.raises(ValueError, match="needs a generator"):
        log_likelihood(field, x1, "dopri5", divergence="hutchinson", probes=2)
    with pytest.raises(ValueError, match="probes must be"):
        log_likelihood(field, x1, "dopri5", divergence="hutchinson", probes=0, generator=0)
    with pytest.raises(ValueError, match="ODE method"):
        log_likelihood(field, x1, "euler_maruyama", steps=4)
    with pytest.raises(ValueError, match="unknown options"):
        log_likelihood(field, x1, "dopri5", tolerance=1e-3)
    with pytest.raises(ValueError, match="strictly decreasing"):
        log_likelihood(field, x1, "rk4", grid=torch.linspace(0, 1, 5))
