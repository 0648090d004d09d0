"""The exact output law of linear samplers (fmcore.exact) against Monte Carlo and an independent derivation."""

from __future__ import annotations

import math

import pytest
import torch

from fmcore import AnalyticField, Gaussian, GaussianMixture, get_schedule, get_target
from fmcore.exact import exact_output_law, has_exact_law
from fmcore.grids import get_grid
from fmcore.metrics import strong_error, w2_gaussian
from fmcore.solvers import TABLEAUS, get_diffusion, sample

F64 = torch.float64
TARGET = get_target("gaussian", d=2, condition_number=10, seed=3)
N = 1_000_000

CASES = [
    ("euler", {}), ("heun", {}), ("rk4", {}),
    ("euler_maruyama", {"diffusion": ("constant", {"c": 0.7})}),
    ("euler_maruyama", {"diffusion": ("forward", {"eta": 1.0})}),
    ("euler_maruyama", {"diffusion": ("forward", {"eta": 0.5})}),
]


def _options(options: dict) -> dict:
    if "diffusion" in options:
        name, params = options["diffusion"]
        return {"diffusion": get_diffusion(name, **params)}
    return {}


CASE_IDS = [f"{method}-{options['diffusion'][0] if options else 'ode'}-{i}" for i, (method, options) in enumerate(CASES)]


@pytest.mark.parametrize("schedule_name", ["cond_ot", "cosine", "vp"])
@pytest.mark.parametrize("method, options", CASES, ids=CASE_IDS)
def test_exact_law_matches_a_million_samples_within_5_standard_errors(schedule_name, method, options):
    schedule = get_schedule(schedule_name)
    options = _options(options)
    law = exact_output_law(TARGET, schedule, method, steps=6, **options)
    x0 = schedule.prior_std * torch.randn(N, 2, dtype=F64, generator=torch.Generator().manual_seed(11))
    generator = 5 if method == "euler_maruyama" else None
    x = sample(AnalyticField(TARGET, schedule), x0, method, steps=6, generator=generator, **options).x
    # In the target's eigenbasis the law is diagonal: check each coordinate's mean and variance and the cross term.
    z = x @ law.basis
    mean, variance = law.offset, law.variance
    centred = z - z.mean(0)
    sample_variance = (centred**2).mean(0)
    cross = (centred[:, 0] * centred[:, 1]).mean()
    mean_se = (variance / N).sqrt()
    variance_se = variance * math.sqrt(2 / N)
    cross_se = (variance[0] * variance[1] / N).sqrt()
    assert bool(((z.mean(0) - mean).abs() <= 5 * mean_se).all()), (z.mean(0), mean, mean_se)
    assert bool(((sample_variance - variance).abs() <= 5 * variance_se).all()), (sample_variance, variance, variance_se)
    assert abs(float(cross)) <= 5 * float(cross_se)


def test_euler_w2_equals_the_product_of_one_step_factors():
    """An independent derivation for Euler on a centred Gaussian: each eigendirection is multiplied by
    Π_i (1 + h_i a(t_i)), a = (αα̇λ + σσ̇)/(α²λ + σ²), so its output variance is σ₀² Π_i (1 + h_i a(t_i))²."""
    eigenvalues = torch.tensor([0.05, 0.7, 3.0], dtype=F64)
    target = Gaussian(torch.zeros(3), torch.diag(eigenvalues))
    for schedule_name in ("cond_ot", "cosine", "vp"):
        schedule = get_schedule(schedule_name)
        grid = get_grid("cosine", 7)
        factors = torch.ones(3, dtype=F64)
        for t, t_next in zip(grid[:-1].tolist(), grid[1:].tolist(), strict=True):
            values = schedule(t)
            alpha, d_alpha, sigma, d_sigma = (float(v) for v in (values.alpha, values.d_alpha, values.sigma, values.d_sigma))
            a = (alpha * d_alpha * eigenvalues + sigma * d_sigma) / (alpha**2 * eigenvalues + sigma**2)
            factors = factors * (1 + (t_next - t) * a)
        output_std = schedule.prior_std * factors.abs()
        expected = math.sqrt(float(((output_std - eigenvalues.sqrt()) ** 2).sum()))
        law = exact_output_law(target, schedule, "euler", grid=grid)
        assert law.w2_to_target() == pytest.approx(expected, rel=1e-12)


def test_w2_agrees_with_bures_and_the_strong_error_with_monte_carlo():
    schedule = get_schedule("cosine")
    law = exact_output_law(TARGET, schedule, "midpoint", steps=5)
    bures = w2_gaussian(law.mean, law.covariance, TARGET.mean(), TARGET.covariance())
    assert law.w2_to_target() == pytest.approx(bures, rel=1e-6)
    x0 = torch.randn(200_000, 2, dtype=F64, generator=torch.Generator().manual_seed(2))
    x = sample(AnalyticField(TARGET, schedule), x0, "midpoint", steps=5).x
    assert law.strong_error() == pytest.approx(strong_error(x, TARGET.flow_map(x0, schedule)), rel=5e-3)


def test_the_exact_law_of_an_exact_solve_is_the_target():
    law = exact_output_law(TARGET, get_schedule("cond_ot"), "rk4", steps=400)
    assert law.w2_to_target() < 1e-10 and law.strong_error() < 1e-10


def test_a_clipped_start_splits_into_clip_and_discretisation_error():
    schedule = get_schedule("cond_ot")
    grid = get_grid("karras", 16, schedule)  # α₀ = 0: the grid starts at a clipped t₀ > 0
    law = exact_output_law(TARGET, schedule, "rk4", grid=grid)
    assert law.t0 > 0
    clip = law.clip_law_w2()
    discretisation = law.strong_error(t_from=law.t0)
    total = law.strong_error(t_from=0.0)
    assert discretisation < 1e-3 < clip  # the flat error of clipped grids is the clip, not the steps
    assert total == pytest.approx(exact_output_law(TARGET, schedule, "rk4", grid=grid).strong_error(), rel=1e-15)


@pytest.mark.parametrize("peer, ours", [("tdq_euler", "euler"), ("tdq_midpoint", "midpoint"), ("tdq_heun2", "heun"),
                                        ("tdq_rk4", "rk38")])
def test_torchdiffeq_fixed_methods_share_our_tableaus_law(peer, ours):
    schedule = get_schedule("cosine")
    field = AnalyticField(TARGET, schedule)
    x0 = torch.randn(64, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sample(field, x0, peer, steps=7).x, sample(field, x0, ours, steps=7).x, rtol=1e-12, atol=1e-12)
    assert has_exact_law(peer)


def test_seed000_sampler_law_matches_monte_carlo():
    schedule = get_schedule("cond_ot", sigma_min=0.001)
    law = exact_output_law(TARGET, schedule, "seed000_sde", steps=20)
    x0 = torch.randn(N, 2, dtype=F64, generator=torch.Generator().manual_seed(4))
    x = sample(AnalyticField(TARGET, schedule), x0, "seed000_sde", steps=20, generator=9).x
    z = x @ law.basis
    assert bool(((z.mean(0) - law.offset).abs() <= 5 * (law.variance / N).sqrt()).all())
    assert bool(((z.var(0) - law.variance).abs() <= 5 * law.variance * math.sqrt(2 / N)).all())


def test_every_tableau_has_an_exact_law():
    for name in TABLEAUS:
        assert exact_output_law(TARGET, get_schedule("cosine"), name, steps=3).w2_to_target() > 0


def test_bad_requests():
    with pytest.raises(ValueError, match="K = 1"):
        exact_output_law(get_target("seed000"), get_schedule("cond_ot"), "euler", steps=2)
    with pytest.raises(KeyError, match="no exact law for method 'dopri5'"):
        exact_output_law(TARGET, get_schedule("cond_ot"), "dopri5")
    with pytest.raises(ValueError, match="'euler_maruyama' needs diffusion="):  # as sample() says it
        exact_output_law(TARGET, get_schedule("cond_ot"), "euler_maruyama", steps=2)
    with pytest.raises(TypeError, match="'euler_maruyama' needs diffusion=.*got str"):
        exact_output_law(TARGET, get_schedule("cond_ot"), "euler_maruyama", steps=2, diffusion="forward")
    with pytest.raises(ValueError, match="ODE methods"):
        exact_output_law(TARGET, get_schedule("cosine"), "euler_maruyama", steps=2,
                         diffusion=get_diffusion("constant")).strong_error()


def test_a_grid_starting_where_the_diffusion_is_singular_is_refused_as_sample_refuses_it():
    """forward's g² = 2σ²α̇/α − 2σσ̇ has a pole at α = 0: on cosine from t = 0 the recursion would give a NaN law."""
    target, schedule, forward = get_target("gaussian", d=4), get_schedule("cosine"), get_diffusion("forward")
    grid = torch.linspace(0, 1, 11, dtype=torch.float64)
    x0 = torch.randn(8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"is singular at t < .* start the grid at t ≥") as from_sample:
        sample(AnalyticField(target, schedule), x0, "euler_maruyama", grid=grid, diffusion=forward, generator=1)
    with pytest.raises(ValueError, match=r"is singular at t < .* start the grid at t ≥") as from_law:
        exact_output_law(target, schedule, "euler_maruyama", grid=grid, diffusion=forward)
    assert str(from_law.value) == str(from_sample.value)
    start = forward.start_time(schedule)
    law = exact_output_law(target, schedule, "euler_maruyama", grid=torch.linspace(start, 1, 11, dtype=torch.float64),
                           diffusion=forward)
    assert math.isfinite(law.w2_to_target())


def test_the_exact_law_of_a_rank_deficient_target_is_the_limit_and_refuses_the_data_end():
    """CIFAR-10's spectrum (nine zero eigenvalues): stopped at t1 = 1 − 1e-3 the exact law equals that of the same
    spectrum with the zeros replaced by δ = 1e-14 (to O(δ/σ²) = 1e-8 relative); run to t = 1 by a method that evaluates
    the field there (heun, rk4) it is refused by name."""
    target = get_target("cifar10")
    schedule = get_schedule("cosine")
    grid = get_grid("uniform", 20, t1=1 - 1e-3)
    floored = GaussianMixture(target.weights, target.means, target.eigenvalues.clamp_min(1e-14), covariance_type="diag")
    for method in ("euler", "heun", "rk4"):
        law, limit = exact_output_law(target, schedule, method, grid=grid), exact_output_law(floored, schedule, method, grid=grid)
        assert law.t1 == 1 - 1e-3
        assert law.w2_to_marginal() == pytest.approx(limit.w2_to_marginal(), rel=1e-6)
        assert law.w2_to_target() == pytest.approx(limit.w2_to_target(), rel=1e-6)
        if method == "euler":  # evaluates the field at each step's start only: never at t = 1, so it may go there
            assert math.isfinite(exact_output_law(target, schedule, method, steps=20).w2_to_target())
            continue
        with pytest.raises(ValueError, match=r"rank-deficient \(9 zero variance\(s\)\) and σ_t = 0 at t = 1"):
            exact_output_law(target, schedule, method, steps=20)


def test_an_axis_aligned_law_needs_no_basis_matrix_and_equals_the_dense_one():
    """An axis-aligned target's exact law is computed without a d × d identity (mean, W2s, strong errors), and equals
    the law of the same target given the identity as a dense eigenbasis to 1e-12."""
    target = GaussianMixture([1.0], [[0.5, -1.0, 2.0]], [[0.2, 1.0, 3.0]], covariance_type="diag")
    dense = GaussianMixture.from_eigendecomposition([1.0], target.means, target.eigenvalues, torch.eye(3).unsqueeze(0))
    schedule, grid = get_schedule("cosine"), get_grid("uniform", 8, t1=0.95)
    for method in ("heun", "ddim"):
        law = exact_output_law(target, schedule, method, grid=grid)
        reference = exact_output_law(dense, schedule, method, grid=grid)
        torch.testing.assert_close(law.mean, reference.mean, rtol=1e-12, atol=1e-12)
        for name in ("w2_to_target", "w2_to_marginal", "strong_error"):
            assert getattr(law, name)() == pytest.approx(getattr(reference, name)(), rel=1e-12), (method, name)
