"""Euler–Maruyama for the reverse SDE: the law it samples, its weak order, determinism, bad input."""

import numpy as np
import pytest
import torch

from fmcore import AnalyticField, get_schedule, get_target
from fmcore.solvers import DIFFUSIONS, get_diffusion, sample

DIFFUSION_CASES = [
    ("cond_ot", "constant", {"c": 1.0}),
    ("cond_ot", "proportional", {"c": 1.5}),
    ("vp", "forward", {"eta": 1.0}),
    ("vp", "constant", {"c": 0.5}),
    ("cosine", "zero", {}),
]


def _exact_euler_maruyama_law(field, diffusion, grid, mean, covariance):
    """Mean and covariance of the Euler–Maruyama output, propagated exactly (no sampling).

    For a Gaussian target the drift u + ½g²s is affine in x, b(x) = D x + e, so one step maps a Gaussian to
    a Gaussian: m ← (I + hD) m + h e, P ← (I + hD) P (I + hD)ᵀ + g² h I. D and e are read off the field by
    evaluating it at 0 and at the unit vectors — an independent route to the same law as the sampler's.
    """
    d = mean.shape[0]
    basis = torch.cat([torch.zeros(1, d, dtype=torch.float64), torch.eye(d, dtype=torch.float64)])
    times = grid.tolist()
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        h = t_next - t
        g = float(diffusion(field.schedule(t)))
        velocity, score = field.velocity_and_score(t, basis)
        drift = velocity + 0.5 * g * g * score
        offset, jacobian = drift[0], (drift[1:] - drift[0]).T
        step = torch.eye(d, dtype=torch.float64) + h * jacobian
        mean = step @ mean + h * offset
        covariance = step @ covariance @ step.T + g * g * h * torch.eye(d, dtype=torch.float64)
    return mean, covariance


def _start(target, schedule, t0):
    marginal = target.marginal(t0, schedule)
    return marginal.mean(), marginal.covariance()


@pytest.mark.parametrize("schedule_name, diffusion_name, params", DIFFUSION_CASES)
def test_sampler_draws_the_law_it_should(schedule_name, diffusion_name, params):
    """Sample moments of the sampler's output match the exactly propagated law within 5 standard errors."""
    target = get_target("gaussian", d=2, condition_number=10, seed=4)
    schedule, diffusion = get_schedule(schedule_name), get_diffusion(diffusion_name, **params)
    field = AnalyticField(target, schedule)
    t0 = diffusion.start_time(schedule)
    n = 200_000
    x0 = target.marginal(t0, schedule).sample(n, generator=torch.Generator().manual_seed(1))
    result = sample(field, x0, "euler_maruyama", steps=6, diffusion=diffusion, generator=7)
    mean, covariance = _exact_euler_maruyama_law(field, diffusion, result.grid, *_start(target, schedule, t0))
    variances = torch.diagonal(covariance)
    assert torch.all((result.x.mean(0) - mean).abs() <= 5 * torch.sqrt(variances / n))
    cov_standard_error = torch.sqrt((torch.outer(variances, variances) + covariance**2) / n)
    assert torch.all((torch.cov(result.x.T) - covariance).abs() <= 5 * cov_standard_error)


@pytest.mark.parametrize("schedule_name, diffusion_name, params", DIFFUSION_CASES)
def test_weak_order_one(schedule_name, diffusion_name, params, capsys):
    """Error of the output law's mean and covariance against the target's exact moments: slope ≈ 1."""
    target = get_target("gaussian", d=4, condition_number=10, seed=4)
    schedule, diffusion = get_schedule(schedule_name), get_diffusion(diffusion_name, **params)
    field = AnalyticField(target, schedule)
    t0 = diffusion.start_time(schedule)
    steps = [64, 128, 256, 512]
    errors = []
    for n_steps in steps:
        grid = torch.linspace(t0, 1.0, n_steps + 1, dtype=torch.float64)
        mean, covariance = _exact_euler_maruyama_law(field, diffusion, grid, *_start(target, schedule, t0))
        errors.append(float((mean - target.mean()).norm() + (covariance - target.covariance()).norm()))
    slope = np.polyfit(np.log(1.0 / np.array(steps)), np.log(errors), 1)[0]
    with capsys.disabled():
        shown = " ".join(f"{e:.2e}" for e in errors)
        print(f"\nweak order {schedule_name:8} {diffusion!r:28} slope {slope:.3f}  errors at {steps} steps: {shown}")
    assert abs(slope - 1.0) < 0.1, (slope, errors)


def test_zero_diffusion_is_euler_exactly():
    field = AnalyticField(get_target("gmm"), get_schedule("cosine"))
    x0 = torch.randn(64, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    euler = sample(field, x0, "euler", steps=20)
    for diffusion in (get_diffusion("zero"), get_diffusion("constant", c=0.0), get_diffusion("forward", eta=0.0)):
        maruyama = sample(field, x0, "euler_maruyama", steps=20, diffusion=diffusion, generator=3)
        assert torch.equal(maruyama.x, euler.x) and maruyama.nfe == euler.nfe == 20


def test_one_evaluation_per_step_and_seeded_determinism():
    field = AnalyticField(get_target("seed000"), get_schedule("cond_ot"))
    x0 = torch.randn(32, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    diffusion = get_diffusion("constant", c=1.0)
    first = sample(field, x0, "euler_maruyama", steps=15, diffusion=diffusion, generator=11)
    second = sample(field, x0, "euler_maruyama", steps=15, diffusion=diffusion, generator=torch.Generator().manual_seed(11))
    other = sample(field, x0, "euler_maruyama", steps=15, diffusion=diffusion, generator=12)
    assert first.nfe == 15
    assert torch.equal(first.x, second.x) and not torch.equal(first.x, other.x)


def test_noise_is_the_same_in_float32_and_float64():
    """Brownian increments are drawn in float64 on the CPU and cast: a float32 run follows the float64 one."""
    field = AnalyticField(get_target("seed000"), get_schedule("cond_ot"))
    x0 = torch.randn(256, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    diffusion = get_diffusion("proportional", c=1.0)
    high = sample(field, x0, "euler_maruyama", steps=50, diffusion=diffusion, generator=5)
    low = sample(field, x0.float(), "euler_maruyama", steps=50, diffusion=diffusion, generator=5)
    torch.testing.assert_close(low.x.double(), high.x, rtol=1e-4, atol=1e-4)


def test_forward_diffusion_starts_at_the_clipped_time_where_alpha_vanishes():
    field = AnalyticField(get_target("seed000"), get_schedule("cond_ot"))
    diffusion = get_diffusion("forward", eta=1.0, t_eps=0.01)
    result = sample(field, torch.randn(16, 3, dtype=torch.float64), "euler_maruyama", steps=200, diffusion=diffusion, generator=0)
    assert result.t0 == 0.01 and float(result.grid[0]) == 0.01
    assert get_diffusion("forward").start_time(get_schedule("vp")) == 0.0  # α_0 > 0 on VP
    with pytest.raises(ValueError, match="singular at t < 0.01"):
        sample(field, torch.zeros(2, 3, dtype=torch.float64), "euler_maruyama", grid=torch.linspace(0, 1, 9),
               diffusion=diffusion, generator=0)


def test_forward_diffusion_matches_the_hand_derived_vp_beta():
    """On VP, 2σ²α̇/α − 2σσ̇ = 2α̇/α(σ² + α²) = β(1 − t): the classic reverse SDE has g² = β."""
    schedule = get_schedule("vp")
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    g = get_diffusion("forward", eta=1.0)(schedule(t))
    beta = 0.1 + (20 - 0.1) * (1 - t)
    torch.testing.assert_close(g**2, beta, rtol=1e-10, atol=1e-10)


def test_sde_bad_input():
    field = AnalyticField(get_target("seed000"), get_schedule("cond_ot"))
    x0 = torch.zeros(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="needs diffusion"):
        sample(field, x0, "euler_maruyama", steps=4, generator=0)
    with pytest.raises(ValueError, match="needs a generator"):
        sample(field, x0, "euler_maruyama", steps=4, diffusion=get_diffusion("zero"))
    with pytest.raises(ValueError, match="diffusion applies to reverse-SDE methods"):
        sample(field, x0, "rk4", steps=4, diffusion=get_diffusion("zero"))
    with pytest.raises(KeyError, match="forward"):
        get_diffusion("langevin")
    with pytest.raises(ValueError, match="c must be"):
        get_diffusion("constant", c=-1.0)
    assert set(DIFFUSIONS) >= {"zero", "constant", "proportional", "forward"}


def test_seed000_sampler_runs_as_a_named_method():
    field = AnalyticField(get_target("seed000"), get_schedule("cond_ot", sigma_min=0.001))
    x0 = torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    result = sample(field, x0, "seed000_sde", steps=50, generator=1)
    assert result.nfe == 50 and torch.isfinite(result.x).all()
    # it evaluates the model at linspace(0, 1, N) in our time (the seed's linspace(1, 0, N))
    torch.testing.assert_close(result.grid, torch.linspace(0, 1, 50, dtype=torch.float64))
    assert torch.equal(sample(field, x0, "seed000_sde", steps=50, generator=1).x, result.x)
    with pytest.raises(ValueError, match="needs a generator"):
        sample(field, x0, "seed000_sde", steps=10)
    with pytest.raises(ValueError, match="own grid"):
        sample(field, x0, "seed000_sde", grid=torch.linspace(0, 1, 5), generator=0)


def test_seed000_sampler_is_euler_maruyama_with_g_squared_sigma_up_to_its_time_warp():
    """With its time warp removed (model times = state times), the seed's update is our Euler–Maruyama step with
    g² = σ: check one step by hand against the formula in fmcore.reproductions.seed000."""
    from fmcore.reproductions.seed000 import integrate_seed000_sde

    schedule = get_schedule("cond_ot", sigma_min=0.001)
    field = AnalyticField(get_target("gaussian", d=2), schedule)
    x0 = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x1, _, _ = integrate_seed000_sde(field, x0, 1, torch.Generator().manual_seed(3))  # one step at t_s = 1 (t = 0)
    noise = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    values = schedule(0.0)
    g2 = float(values.sigma)  # σ at t = 0 is 1
    velocity, score = field.velocity_and_score(0.0, x0)
    expected = x0 + (velocity + 0.5 * g2 * score) * 1.0 - (g2 * 1.0) ** 0.5 * noise
    torch.testing.assert_close(x1, expected, rtol=1e-5, atol=1e-5)  # the seed's 1e-6 regularisers


def test_cuda_paths_follow_the_cpu_ones():
    from .helpers import cuda_or_skip

    device = cuda_or_skip()
    field = AnalyticField(get_target("gmm", K=4, d=3), get_schedule("cosine"))
    x0 = torch.randn(512, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for method, options in [("rk4", {"steps": 16}), ("dopri5", {"rtol": 1e-8, "atol": 1e-8}),
                            ("euler_maruyama", {"steps": 32, "diffusion": get_diffusion("constant", c=1.0), "generator": 3})]:
        cpu = sample(field, x0, method, **options).x
        gpu = sample(field, x0.to(device), method, **options).x
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-7, atol=1e-7)
