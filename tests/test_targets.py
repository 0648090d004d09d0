"""Analytic targets: every closed form against an independent computation."""

import math

import pytest
import torch
from scipy import stats

from fmcore import AnalyticField, Gaussian, GaussianMixture, get_schedule, get_target
from fmcore.targets import TARGETS

from .helpers import cuda_or_skip, rk4_reference


def _mixture(kind: str, seed: int = 0, K: int = 3, d: int = 3) -> GaussianMixture:
    generator = torch.Generator().manual_seed(seed)
    weights = torch.rand(K, dtype=torch.float64, generator=generator) + 0.2
    weights = weights / weights.sum()
    means = 2 * torch.randn(K, d, dtype=torch.float64, generator=generator)
    if kind == "full":
        factor = torch.randn(K, d, d, dtype=torch.float64, generator=generator)
        covs = factor @ factor.transpose(-1, -2) / d + 0.05 * torch.eye(d, dtype=torch.float64)
    elif kind == "diagonal":
        covs = 0.05 + torch.rand(K, d, dtype=torch.float64, generator=generator)
    else:
        covs = 0.05 + torch.rand(K, dtype=torch.float64, generator=generator)
    covariance_type = {"full": "full", "diagonal": "diag", "isotropic": "iso"}[kind]
    return GaussianMixture(weights, means, covs, covariance_type=covariance_type)


COVARIANCE_KINDS = ["full", "diagonal", "isotropic"]
TIMES = [0.0, 0.13, 0.5, 0.87, 1.0]


def _points(target, schedule, t, n=64, seed=1):
    """Points drawn from the exact marginal p_t (plus a few far-out ones to stress log-sum-exp)."""
    generator = torch.Generator().manual_seed(seed)
    x1 = target.sample(n, generator=generator)
    noise = torch.randn(n, target.dim, dtype=torch.float64, generator=generator)
    values = schedule(t)
    x = values.alpha * x1 + values.sigma * noise
    x[:4] *= 25.0
    return x


@pytest.mark.parametrize("kind", COVARIANCE_KINDS)
@pytest.mark.parametrize("t", TIMES)
def test_score_matches_autograd_of_marginal_log_prob(kind, t, any_schedule):
    target = _mixture(kind)
    x = _points(target, any_schedule, t).requires_grad_(True)
    log_prob = target.marginal(t, any_schedule).log_prob(x)
    expected = torch.autograd.grad(log_prob.sum(), x)[0]
    torch.testing.assert_close(target.score(t, x.detach(), any_schedule), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", COVARIANCE_KINDS)
def test_log_prob_matches_torch_distributions(kind):
    target = _mixture(kind)
    reference = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=target.weights),
        torch.distributions.MultivariateNormal(target.means, covariance_matrix=target.covariances),
    )
    x = target.sample(200, generator=torch.Generator().manual_seed(3)) * 3
    torch.testing.assert_close(target.log_prob(x), reference.log_prob(x), rtol=1e-10, atol=1e-10)


def test_log_prob_is_stable_far_from_every_mode():
    target = _mixture("full")
    x = torch.full((2, 3), 1e3, dtype=torch.float64)
    for dtype in (torch.float32, torch.float64):
        assert torch.isfinite(target.log_prob(x.to(dtype))).all()
        assert torch.isfinite(target.velocity(0.7, x.to(dtype), get_schedule("cond_ot"))).all()


@pytest.mark.parametrize("kind", COVARIANCE_KINDS)
@pytest.mark.parametrize("t", [0.0, 0.3, 0.8, 1.0])
def test_velocity_divergence_matches_autograd_trace(kind, t, any_schedule):
    target = _mixture(kind)
    x = _points(target, any_schedule, t, n=32).requires_grad_(True)
    velocity = target.velocity(t, x, any_schedule)
    trace = sum(
        torch.autograd.grad(velocity[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(target.dim)
    )
    torch.testing.assert_close(target.velocity_divergence(t, x.detach(), any_schedule), trace, rtol=1e-6, atol=1e-6)


def test_divergence_with_per_point_times():
    target, schedule = _mixture("full"), get_schedule("cosine")
    x = _points(target, schedule, 0.5, n=16)
    t = torch.linspace(0, 1, 16, dtype=torch.float64)
    per_point = target.velocity_divergence(t, x, schedule)
    one_by_one = torch.stack([target.velocity_divergence(float(t[i]), x[i : i + 1], schedule)[0] for i in range(16)])
    torch.testing.assert_close(per_point, one_by_one, rtol=1e-12, atol=1e-12)
    velocity = target.velocity(t, x, schedule)
    torch.testing.assert_close(
        velocity, torch.cat([target.velocity(float(t[i]), x[i : i + 1], schedule) for i in range(16)]),
        rtol=1e-12, atol=1e-12,
    )


@pytest.mark.parametrize("kind", COVARIANCE_KINDS)
@pytest.mark.parametrize("t", TIMES)
def test_tweedie_identities(kind, t, any_schedule):
    target = _mixture(kind)
    x = _points(target, any_schedule, t)
    values = any_schedule(t)
    score = target.score(t, x, any_schedule)
    noise = target.noise_prediction(t, x, any_schedule)
    data = target.data_prediction(t, x, any_schedule)
    torch.testing.assert_close(noise, -values.sigma * score, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(values.alpha * data + values.sigma * noise, x, rtol=1e-9, atol=1e-9)
    if math.isfinite(float(values.d_sigma)):
        velocity = target.velocity(t, x, any_schedule)
        torch.testing.assert_close(velocity, values.d_alpha * data + values.d_sigma * noise, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "target_name, params, schedule_name, t",
    [
        ("seed000", {}, "cond_ot", 0.5),
        ("seed000", {}, "cosine", 0.7),
        ("gmm", {"K": 4, "d": 2, "seed": 2}, "cond_ot", 0.4),
        ("eight_gaussians", {}, "vp", 0.6),
    ],
)
def test_velocity_matches_monte_carlo_posterior_mean(target_name, params, schedule_name, t):
    r"""Self-normalised importance sampling of E[α̇x₁ + σ̇ε | x_t = x]: x₁ ~ p₁, weights ∝ N(x; αx₁, σ²I),
    ε = (x − αx₁)/σ. The tolerance is 5 standard errors of that estimator (delta method), per coordinate."""
    target, schedule = get_target(target_name, **params), get_schedule(schedule_name)
    values = schedule(t)
    alpha, sigma, d_alpha, d_sigma = (float(v) for v in (values.alpha, values.sigma, values.d_alpha, values.d_sigma))
    generator = torch.Generator().manual_seed(11)
    x = _points(target, schedule, t, n=6, seed=5)[4:]  # ordinary points from p_t (the first 4 are stretched)
    exact = target.velocity(t, x, schedule)
    draws = target.sample(400_000, generator=generator)
    for i in range(x.shape[0]):
        noise = (x[i] - alpha * draws) / sigma
        log_weights = -0.5 * (noise**2).sum(1)
        weights = torch.softmax(log_weights, dim=0)
        effective_size = 1.0 / (weights**2).sum()
        assert effective_size > 500, "too few effective draws for a meaningful standard error"
        conditional = d_alpha * draws + d_sigma * noise
        estimate = weights @ conditional
        standard_error = torch.sqrt((weights.unsqueeze(1) ** 2 * (conditional - estimate) ** 2).sum(0))
        assert torch.all((exact[i] - estimate).abs() <= 5 * standard_error + 1e-12), (exact[i], estimate, standard_error)


def test_flow_map_matches_float64_rk4():
    target = get_target("gaussian", d=8, condition_number=100)
    for schedule in (get_schedule("cond_ot"), get_schedule("cosine"), get_schedule("vp")):
        field = AnalyticField(target, schedule)
        x0 = torch.randn(32, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        reference = rk4_reference(field, x0, 0.0, 1.0, 4096)
        torch.testing.assert_close(target.flow_map(x0, schedule), reference, rtol=0, atol=1e-8)
        # and between interior times, in both directions
        middle = target.flow_map(x0, schedule, 0.0, 0.4)
        torch.testing.assert_close(target.flow_map(middle, schedule, 0.4, 0.0), x0, rtol=0, atol=1e-10)


def test_flow_map_pushes_prior_to_target_moments():
    """x₁ = flow_map(x₀) with x₀ ~ N(0, I): sample moments within 5 standard errors of the exact ones."""
    target, schedule = get_target("gaussian", d=4, condition_number=30, seed=3), get_schedule("cond_ot")
    n = 200_000
    x1 = target.flow_map(torch.randn(n, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)), schedule)
    mean, cov = target.mean(), target.covariance()
    variances = torch.diagonal(cov)
    assert torch.all((x1.mean(0) - mean).abs() <= 5 * torch.sqrt(variances / n))
    sample_cov = torch.cov(x1.T)
    cov_standard_error = torch.sqrt((torch.outer(variances, variances) + cov**2) / n)
    assert torch.all((sample_cov - cov).abs() <= 5 * cov_standard_error)


def test_flow_map_refuses_mixtures():
    with pytest.raises(ValueError, match="K = 2"):
        get_target("seed000").flow_map(torch.zeros(1, 3, dtype=torch.float64), get_schedule("cond_ot"))


def test_moments_match_monte_carlo():
    target = get_target("gmm", K=5, d=3, seed=4)
    n = 400_000
    x = target.sample(n, generator=torch.Generator().manual_seed(2))
    cov = target.covariance()
    variances = torch.diagonal(cov)
    assert torch.all((x.mean(0) - target.mean()).abs() <= 5 * torch.sqrt(variances / n))
    # Loose but derived: the sample covariance's entries have variance ≤ E[(x_i x_j)²]/n ≈ (Σii Σjj + Σij² + ...)/n;
    # we use the empirical fourth moment to size the tolerance.
    centred = x - target.mean()
    products = centred.unsqueeze(2) * centred.unsqueeze(1)
    standard_error = products.std(0) / math.sqrt(n)
    assert torch.all((torch.cov(x.T) - cov).abs() <= 5 * standard_error + 1e-12)


def _seed000_recipe(num_samples: int, generator: torch.Generator) -> torch.Tensor:
    """Seed 000's own code, with einops.rearrange('n d c -> (n c) d') written as permute + reshape."""
    means = torch.tensor([[-1, 1], [-0.5, 1.5], [1.5, 0.25]], dtype=torch.float64)
    stds = torch.tensor([[0.25], [0.25], [0.15]], dtype=torch.float64).repeat((1, 2))
    draws = means + stds * torch.randn(num_samples, 3, 2, dtype=torch.float64, generator=generator)  # (n, d, c)
    return draws.permute(0, 2, 1).reshape(num_samples * 2, 3)


def test_seed000_matches_the_seed_recipe():
    target = get_target("seed000")
    recipe = _seed000_recipe(50_000, torch.Generator().manual_seed(0))
    ours = target.sample(100_000, generator=torch.Generator().manual_seed(1))
    n = recipe.shape[0]
    # exact moments vs the recipe's sample moments, within 5 standard errors
    variances = torch.diagonal(target.covariance())
    assert torch.all((recipe.mean(0) - target.mean()).abs() <= 5 * torch.sqrt(variances / n))
    centred = recipe - target.mean()
    standard_error = (centred.unsqueeze(2) * centred.unsqueeze(1)).std(0) / math.sqrt(n)
    assert torch.all((torch.cov(recipe.T) - target.covariance()).abs() <= 5 * standard_error)
    # per-dimension distributions: two-sample Kolmogorov–Smirnov
    for dim in range(3):
        assert stats.ks_2samp(recipe[:, dim].numpy(), ours[:, dim].numpy()).pvalue > 1e-3
    # the recipe's pairs are one draw per component: the mixture is bimodal with equal weights
    posteriors = target.component_posteriors(recipe)
    assert abs(float(posteriors[:, 0].mean()) - 0.5) < 5 * 0.5 / math.sqrt(n)


def test_named_targets_build_and_are_seeded():
    assert set(TARGETS) >= {"seed000", "gaussian", "eight_gaussians", "gmm"}
    gaussian = get_target("gaussian", d=6, condition_number=1000, seed=1)
    eigenvalues = torch.linalg.eigvalsh(gaussian.covariance())
    assert float(eigenvalues.max() / eigenvalues.min()) == pytest.approx(1000, rel=1e-8)
    hard = get_target("gmm", K=6, d=4, min_weight=1e-2, seed=7)
    assert float(hard.weights.min()) == pytest.approx(1e-2, rel=1e-12)
    assert float(hard.weights.sum()) == pytest.approx(1.0, abs=1e-12)
    assert float(hard.eigenvalues.max() / hard.eigenvalues.min()) > 100  # narrow and wide modes
    torch.testing.assert_close(get_target("gmm", seed=3).means, get_target("gmm", seed=3).means)
    assert not torch.equal(get_target("gmm", seed=3).means, get_target("gmm", seed=4).means)
    ring = get_target("eight_gaussians")
    torch.testing.assert_close(ring.means.norm(dim=1), torch.full((8,), 5.0, dtype=torch.float64))
    torch.testing.assert_close(ring.covariances[0], math.sqrt(0.1) * torch.eye(2, dtype=torch.float64))


def test_sampling_is_reproducible():
    target = get_target("gmm")
    a = target.sample(100, generator=torch.Generator().manual_seed(5))
    b = target.sample(100, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_float32_agrees_with_float64():
    target, schedule = get_target("gmm", K=8, d=8), get_schedule("cosine")
    x = _points(target, schedule, 0.6, n=128)[4:]
    for method in ("velocity", "score", "velocity_divergence"):
        high = getattr(target, method)(0.6, x, schedule)
        low = getattr(target, method)(0.6, x.float(), schedule)
        assert low.dtype == torch.float32
        torch.testing.assert_close(low.double(), high, rtol=1e-3, atol=1e-3)


def test_single_gaussian_is_the_one_component_mixture():
    mean = torch.tensor([1.0, -2.0], dtype=torch.float64)
    cov = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    gaussian = Gaussian(mean, cov)
    x = torch.randn(10, 2, dtype=torch.float64)
    reference = torch.distributions.MultivariateNormal(mean, cov).log_prob(x)
    torch.testing.assert_close(gaussian.log_prob(x), reference)
    torch.testing.assert_close(gaussian.covariance(), cov)


def test_cuda_matches_cpu():
    device = cuda_or_skip()
    target, schedule = get_target("gmm", K=8, d=8), get_schedule("cond_ot")
    x = _points(target, schedule, 0.5, n=256)
    for method in ("velocity", "score", "velocity_divergence"):
        cpu = getattr(target, method)(0.5, x, schedule)
        gpu = getattr(target, method)(0.5, x.to(device), schedule)
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------- rank-deficient spectra


def _with_floor(target: GaussianMixture, floor: float) -> GaussianMixture:
    """The same axis-aligned mixture with each zero variance replaced by ``floor``."""
    return GaussianMixture(target.weights, target.means, target.eigenvalues.clamp_min(floor), covariance_type="diag")


@pytest.mark.parametrize("t", [0.0, 0.3, 0.9, 0.999])
def test_a_zero_variance_is_the_limit_of_small_ones_at_every_t_before_the_data(t, any_schedule):
    """A diagonal variance of exactly 0 is valid: at t < 1 every closed form is the limit of the same target with the
    zero replaced by δ → 0 (δ = 1e-14 here, so the two differ by O(δ/σ_t²): 1e-8 relative at t = 0.999 on cond_ot)."""
    target = GaussianMixture([0.3, 0.7], [[0.5, -1.0, 0.0], [-0.2, 0.4, 1.0]], [[1.0, 0.0, 0.5], [0.0, 0.0, 2.0]],
                             covariance_type="diag")
    assert target.rank_deficient
    floored = _with_floor(target, 1e-14)
    x = torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sigma = float(any_schedule(t).sigma)
    if sigma == 0:
        pytest.skip("this schedule has σ_t = 0 here")
    tolerance = max(1e-12, 100 * 1e-14 / sigma**2)  # c = α²λ + σ² moves by δ = 1e-14: relative δ/σ², ×100 margin
    for name in ("velocity", "score", "data_prediction", "marginal_log_prob"):
        exact, limit = (getattr(target, name)(t, x, any_schedule), getattr(floored, name)(t, x, any_schedule))
        torch.testing.assert_close(exact, limit, rtol=tolerance, atol=tolerance)


def test_a_rank_deficient_target_says_where_it_is_singular():
    target = GaussianMixture([1.0], [[0.0, 1.0]], [[0.0, 1.0]], covariance_type="diag")
    schedule = get_schedule("cond_ot")
    x = torch.zeros(2, 2, dtype=torch.float64)
    for call in (lambda: target.velocity(1.0, x, schedule), lambda: target.score(1.0, x, schedule),
                 lambda: target.log_prob(x), lambda: AnalyticField(target, schedule)(torch.tensor([0.5, 1.0]), x)):
        with pytest.raises(ValueError, match=r"rank-deficient \(1 zero variance\(s\)\) and σ_t = 0"):
            call()
    samples = target.sample(1000, generator=torch.Generator().manual_seed(0))
    assert bool((samples[:, 0] == 0).all()) and samples[:, 1].std() > 0.9  # the zero direction is a point mass
    with pytest.raises(ValueError, match="must be positive semi-definite; the smallest diagonal variance is -0.1"):
        GaussianMixture([1.0], [[0.0, 1.0]], [[-0.1, 1.0]], covariance_type="diag")
    with pytest.raises(ValueError, match="numerically singular"):  # full covariances: eigh cannot resolve a zero
        GaussianMixture([1.0], [[0.0, 1.0]], [[[0.0, 0.0], [0.0, 1.0]]])


def test_the_cifar10_target_is_the_shipped_spectrum():
    import numpy as np

    from fmcore.targets import CIFAR10_SPECTRUM

    target = get_target("cifar10")
    published = np.load(CIFAR10_SPECTRUM)
    assert target.dim == 3072 and target.num_components == 1 and target.rank_deficient
    assert int((target.eigenvalues == 0).sum()) == 9 and bool((target.means == 0).all())
    assert float(target.eigenvalues.sum()) == pytest.approx(761.6196, rel=1e-6)
    assert float(target.eigenvalues.max()) == pytest.approx(221.4533, rel=1e-6)
    torch.testing.assert_close(target.eigenvalues[0], torch.from_numpy(np.abs(published).astype(np.float64)), rtol=0, atol=0)


def test_the_adsn_target_is_the_shipped_spectrum():
    """d = 196 608, 65 536 positive eigenvalues then 131 072 zeros (trace 1805.14, largest 22.934); its exact law runs at
    that dimension when the grid stops before the data end, and is refused by name at t = 1."""
    import numpy as np

    from fmcore.exact import exact_output_law
    from fmcore.grids import get_grid
    from fmcore.targets import ADSN_SPECTRUM

    target = get_target("adsn")
    assert target.dim == 3 * 256 * 256 and target.rank_deficient and target.axis_aligned
    assert int((target.eigenvalues == 0).sum()) == 131_072
    assert float(target.eigenvalues.sum()) == pytest.approx(1805.1445, rel=1e-6)
    assert float(target.eigenvalues.max()) == pytest.approx(22.934134, rel=1e-6)
    torch.testing.assert_close(target.eigenvalues[0], torch.from_numpy(np.load(ADSN_SPECTRUM)), rtol=0, atol=0)
    schedule = get_schedule("vp")
    law = exact_output_law(target, schedule, "euler", grid=get_grid("uniform", 10, t1=0.999), start="standard_normal")
    assert 0 < law.w2_to_target() < float(target.eigenvalues.sum()) ** 0.5 + target.dim ** 0.5
    with pytest.raises(ValueError, match="rank-deficient .131072 zero variance"):
        exact_output_law(target, schedule, "heun", steps=4)
