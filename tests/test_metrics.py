"""Metrics against independent computations: brute-force assignment, closed forms, known special cases."""

import itertools
import math

import pytest
import torch

from fmcore import Gaussian, get_target
from fmcore.metrics import (
    gaussian_fit_w2,
    mode_tv,
    nll_error,
    strong_error,
    w2_exact,
    w2_floor,
    w2_gaussian,
    w2_sliced,
)


def _brute_force_w2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Minimum over all n! permutations of the mean squared distance (equal sizes, uniform weights)."""
    cost = torch.cdist(x.double(), y.double()) ** 2
    n = x.shape[0]
    best = min(sum(float(cost[i, p[i]]) for i in range(n)) for p in itertools.permutations(range(n)))
    return math.sqrt(best / n)


@pytest.mark.parametrize("n, d, seed", [(1, 2, 0), (3, 1, 1), (5, 3, 2), (7, 2, 3), (7, 4, 4)])
def test_w2_exact_equals_brute_force(n, d, seed):
    generator = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, d, generator=generator), torch.randn(n, d, generator=generator) * 2 + 0.5
    assert w2_exact(x, y) == pytest.approx(_brute_force_w2(x, y), rel=1e-12, abs=1e-12)


def test_w2_exact_translation_and_symmetry():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=generator, dtype=torch.float64)
    shift = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    assert w2_exact(x, x + shift) == pytest.approx(float(shift.norm()), rel=1e-12)
    y = torch.randn(150, 3, generator=generator, dtype=torch.float64)
    assert w2_exact(x, y) == pytest.approx(w2_exact(y, x), rel=1e-12)
    assert w2_exact(x, x) == pytest.approx(0.0, abs=1e-12)


def test_w2_exact_unequal_sizes_by_duplication():
    """Uniform weights on n and 2n points: duplicating every point of the smaller cloud changes nothing."""
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 2, generator=generator), torch.randn(12, 2, generator=generator)
    assert w2_exact(x, y) == pytest.approx(w2_exact(x.repeat(2, 1), y), rel=1e-12)


def test_w2_sliced_in_one_dimension_is_exact():
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(500, 1, generator=generator, dtype=torch.float64)
    y = torch.rand(500, 1, generator=generator, dtype=torch.float64)
    assert w2_sliced(x, y, n_projections=3, generator=0) == pytest.approx(w2_exact(x, y), rel=1e-12)
    z = torch.randn(300, 1, generator=generator, dtype=torch.float64) * 3
    assert w2_sliced(x, z, n_projections=1, generator=0) == pytest.approx(w2_exact(x, z), rel=1e-10)


def test_w2_sliced_is_seeded_and_symmetric():
    generator = torch.Generator().manual_seed(3)
    x, y = torch.randn(400, 5, generator=generator), torch.randn(400, 5, generator=generator) + 0.2
    assert w2_sliced(x, y, 64, generator=7) == w2_sliced(x, y, 64, generator=7)
    assert w2_sliced(x, y, 64, generator=7) == pytest.approx(w2_sliced(y, x, 64, generator=7), rel=1e-6)


def test_w2_sliced_of_a_translation():
    """Every slice of a translation by c is a 1-D translation by θ·c: sliced W2² = mean (θ·c)² ≈ ‖c‖²/d."""
    x = torch.randn(1000, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    shift = torch.tensor([1.0, 2.0, -1.0, 0.5], dtype=torch.float64)
    directions = torch.randn(4096, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    directions = directions / directions.norm(dim=1, keepdim=True)
    expected = math.sqrt(float(((directions @ shift) ** 2).mean()))
    assert w2_sliced(x, x + shift, 4096, generator=9) == pytest.approx(expected, rel=1e-9)


def test_w2_gaussian_special_cases():
    # 1-D: W2² = (m1 − m2)² + (s1 − s2)²
    assert w2_gaussian([1.0], [[4.0]], [-1.0], [[9.0]]) == pytest.approx(math.sqrt(4 + 1), rel=1e-14)
    # commuting covariances: W2² = ‖m1 − m2‖² + ‖C1^½ − C2^½‖²_F
    rotation, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    eig1, eig2 = torch.tensor([1.0, 4.0, 0.25], dtype=torch.float64), torch.tensor([2.0, 1.0, 9.0], dtype=torch.float64)
    cov1, cov2 = rotation @ torch.diag(eig1) @ rotation.T, rotation @ torch.diag(eig2) @ rotation.T
    mean1, mean2 = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64), torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    expected = math.sqrt(float(((mean1 - mean2) ** 2).sum() + ((eig1.sqrt() - eig2.sqrt()) ** 2).sum()))
    assert w2_gaussian(mean1, cov1, mean2, cov2) == pytest.approx(expected, rel=1e-12)
    # Two equal laws: W2² is a difference of traces, exact to ~d·eps·(tr C1 + tr C2), so W2 to its square root.
    assert w2_gaussian(mean1, cov1, mean1, cov1) <= math.sqrt(8 * 3 * EPS * 2 * float(eig1.sum()))
    # symmetric in its two laws
    assert w2_gaussian(mean1, cov1, mean2, cov2) == pytest.approx(w2_gaussian(mean2, cov2, mean1, cov1), rel=1e-12)


EPS = torch.finfo(torch.float64).eps


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_w2_gaussian_of_commuting_near_singular_pairs_is_exact_to_round_off(seed):
    """Eigenvalues (1, 1e-6, 1e-12) and (1, 4e-6, 4e-12) in one random eigenbasis: W2 = ‖√λ₁ − √λ₂‖ exactly. W2² is
    then a sum of traces and singular values, each exact to ~d·eps·tr C, so that bound holds on W2², in either order
    (a cross term taken as the root of eigenvalues at round-off was off by 1.4e-5 here, and order-dependent)."""
    basis = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)))[0]
    eig1 = torch.tensor([1.0, 1e-6, 1e-12], dtype=torch.float64)
    eig2 = torch.tensor([1.0, 4e-6, 4e-12], dtype=torch.float64)
    cov1, cov2 = basis @ torch.diag(eig1) @ basis.T, basis @ torch.diag(eig2) @ basis.T
    mean = torch.zeros(3, dtype=torch.float64)
    expected_squared = float(((eig1.sqrt() - eig2.sqrt()) ** 2).sum())
    bound = 8 * 3 * EPS * float(eig1.sum() + eig2.sum())
    for first, second in ((cov1, cov2), (cov2, cov1)):
        assert abs(w2_gaussian(mean, first, mean, second) ** 2 - expected_squared) <= bound


def test_w2_gaussian_with_singular_covariances():
    singular = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)  # rank 1
    value = w2_gaussian([0.0, 0.0], singular, [0.0, 0.0], torch.zeros(2, 2))
    assert value == pytest.approx(math.sqrt(2.0), rel=1e-12)  # tr C1: a point mass vs a degenerate line
    assert math.isfinite(w2_gaussian([0.0, 0.0], singular, [1.0, 0.0], singular))


def test_empirical_estimators_agree_with_bures_within_the_floor():
    """Samples of two known Gaussians: w2_exact, gaussian_fit_w2 and (in 1-D) w2_sliced land within the measured
    floor of the exact Bures value."""
    first = Gaussian(torch.tensor([0.0, 0.0]), torch.tensor([[1.0, 0.6], [0.6, 1.0]]))
    second = Gaussian(torch.tensor([1.0, -0.5]), torch.tensor([[0.5, 0.0], [0.0, 2.0]]))
    truth = w2_gaussian(first.mean(), first.covariance(), second.mean(), second.covariance())
    n, generator = 2000, torch.Generator().manual_seed(5)
    x, y = first.sample(n, generator=generator), second.sample(n, generator=generator)
    floor = w2_floor(first, n, "exact", generator=6, repeats=3)
    assert abs(w2_exact(x, y) - truth) <= floor
    assert abs(gaussian_fit_w2(x, second) - truth) <= floor
    # 1-D: sliced is exact W2 and the Bures formula is the 1-D one
    first_1d, second_1d = Gaussian(torch.tensor([0.0]), torch.tensor([1.0])), Gaussian(torch.tensor([2.0]), torch.tensor([0.25]))
    x1, y1 = first_1d.sample(n, generator=generator), second_1d.sample(n, generator=generator)
    truth_1d = w2_gaussian(first_1d.mean(), first_1d.covariance(), second_1d.mean(), second_1d.covariance())
    floor_1d = w2_floor(first_1d, n, "sliced", generator=8, repeats=3, n_projections=1)
    assert abs(w2_sliced(x1, y1, n_projections=1, generator=0) - truth_1d) <= floor_1d


def test_floor_shrinks_with_n():
    target = get_target("seed000")
    small, large = w2_floor(target, 250, generator=0, repeats=3), w2_floor(target, 2000, generator=0, repeats=3)
    assert large < small


def test_strong_error_bounds_exact_w2():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 2, generator=generator, dtype=torch.float64)
    y = x + 0.1 * torch.randn(300, 2, generator=generator, dtype=torch.float64)
    assert strong_error(x, y) >= w2_exact(x, y) - 1e-12
    assert strong_error(x, y) == pytest.approx(float(((x - y) ** 2).sum(1).mean().sqrt()), rel=1e-14)


def test_mode_tv():
    target = get_target("seed000")
    means = target.means
    all_first = means[0].repeat(100, 1)
    assert mode_tv(all_first, target) == pytest.approx(0.5)
    balanced = torch.cat([means[0].repeat(50, 1), means[1].repeat(50, 1)])
    assert mode_tv(balanced, target) == pytest.approx(0.0)


def test_nll_error_is_zero_for_the_truth_and_negative_for_a_wrong_model():
    target = get_target("gmm", K=3, d=2)
    x = target.sample(2000, generator=torch.Generator().manual_seed(0))
    assert nll_error(target.log_prob(x), x, target) == pytest.approx(0.0, abs=1e-12)
    wrong = Gaussian(target.mean(), target.covariance())
    assert nll_error(wrong.log_prob(x), x, target) < 0  # −KL(p‖q) < 0


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda: w2_exact(torch.zeros(3, 2), torch.zeros(3, 3)), "same dimension"),
        (lambda: w2_exact(torch.zeros(0, 2), torch.zeros(3, 2)), "at least 1 point"),
        (lambda: w2_sliced(torch.tensor([[math.nan, 0.0], [math.inf, 1.0]]), torch.zeros(2, 2)), "2 non-finite"),
        (lambda: w2_sliced(torch.zeros(3, 2), torch.zeros(3, 2), n_projections=0), "n_projections"),
        (lambda: w2_gaussian([0.0, 0.0], [[1.0, 2.0], [2.0, 1.0]], [0.0, 0.0], torch.eye(2)), "positive semi-definite"),
        (lambda: w2_gaussian([0.0, 0.0], [[1.0, 0.5], [0.0, 1.0]], [0.0, 0.0], torch.eye(2)), "symmetric"),
        (lambda: w2_gaussian([0.0], [[1.0]], [0.0, 0.0], torch.eye(2)), "same d"),
        (lambda: w2_gaussian([0.0, 0.0], torch.eye(3), [0.0, 0.0], torch.eye(2)), "shape \\(2, 2\\)"),
        (lambda: strong_error(torch.zeros(3, 2), torch.zeros(4, 2)), "same number of points"),
        (lambda: mode_tv(torch.zeros(3, 2), get_target("seed000")), "d = 3"),
        (lambda: nll_error(torch.zeros(2), torch.zeros(3, 3), get_target("seed000")), "one value per point"),
        (lambda: w2_floor(get_target("seed000"), 10, estimator="kl"), "unknown estimator"),
        (lambda: w2_floor(get_target("seed000"), 0), "n must be"),
    ],
)
def test_bad_input(call, fragment):
    with pytest.raises((ValueError, KeyError), match=fragment):
        call()


def test_strong_error_standard_error_is_the_spread_over_fresh_noises():
    """2000 independent draws of n = 200 paired errors (heavy-tailed per-sample scale, so the e_i are far from
    constant): the standard deviation of the 2000 strong errors equals the mean of their SE estimates within 8 %
    (the spread's own relative Monte-Carlo error is 1/√(2·2000) = 1.6 %, and the delta method's bias at n = 200 is
    below 1 %: 8 % is 5 of those)."""
    from fmcore.metrics import strong_error, strong_error_standard_error

    generator = torch.Generator().manual_seed(3)
    errors, estimates = [], []
    for _ in range(2000):
        reference = torch.randn(200, 3, dtype=torch.float64, generator=generator)
        scale = torch.rand(200, 1, dtype=torch.float64, generator=generator) * 2.0
        x = reference + scale * torch.randn(200, 3, dtype=torch.float64, generator=generator)
        errors.append(strong_error(x, reference))
        estimates.append(strong_error_standard_error(x, reference))
    spread, estimate = float(torch.tensor(errors).std()), float(torch.tensor(estimates).mean())
    assert abs(estimate / spread - 1.0) < 0.08, (estimate, spread)


def test_strong_error_standard_error_edge_cases_and_scale():
    from fmcore.metrics import strong_error_standard_error

    x = torch.randn(50, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert strong_error_standard_error(x, x) == 0.0
    assert math.isnan(strong_error_standard_error(x[:1], x[:1] + 1.0))
    y = x + torch.randn(50, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    base = strong_error_standard_error(x, y)
    assert base > 0
    for factor in (2.0**-600, 2.0**600):  # exact powers of two: the SE scales exactly, with no overflow
        assert strong_error_standard_error(x * factor, y * factor) == pytest.approx(base * factor, rel=1e-14)
