"""The public API under hostile input: no silently wrong value, no silent NaN, no hang, no abort, no unclear error.

Each class of defect found by fuzzing the API is covered here, each case against an independent computation
where the input is valid; ``BOUNDARY`` below is the inventory of public functions and their arguments, each
argument given a bad value that must raise the documented exception type (``TypeError`` for a wrong type,
``ValueError`` for a bad value, ``KeyError`` for an unknown name, ``MemoryError`` for a refused allocation).
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from fmcore import AnalyticField, Gaussian, GaussianMixture, conversions, get_schedule, get_target
from fmcore.exact import exact_output_law
from fmcore.grids import check_grid, get_grid
from fmcore.metrics import gaussian_fit_w2, mode_tv, nll_error, strong_error, w2_exact, w2_floor, w2_gaussian, w2_sliced
from fmcore.models import LearnedField, SinusoidalMLP, exact_fm_loss, train_model
from fmcore.solvers import SolverBudgetError, get_diffusion, get_method, log_likelihood, sample
from fmcore.solvers.likelihood import gaussian_prior_log_prob
from fmcore.targets import DCT, Dense, Identity

F64 = torch.float64
COND_OT = get_schedule("cond_ot")
SEED000 = get_target("seed000")
FIELD = AnalyticField(SEED000, COND_OT)
X3 = torch.zeros(4, 3, dtype=F64)
GAUSSIAN = get_target("gaussian", d=3)


# ---------------------------------------------------------------------- silently wrong


def test_non_orthogonal_eigenbasis_is_refused():
    skewed = torch.tensor([[[1.0, 0.5], [0.0, 1.0]]], dtype=F64)
    with pytest.raises(ValueError, match="eigenvectors must be orthogonal"):
        GaussianMixture.from_eigendecomposition([1.0], [[0.0, 0.0]], [[1.0, 2.0]], skewed)


def test_an_orthogonal_eigenbasis_gives_the_same_mixture_as_its_covariance():
    angle = 0.3
    rotation = torch.tensor([[[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]], dtype=F64)
    from_basis = GaussianMixture.from_eigendecomposition([1.0], [[0.5, -1.0]], [[0.2, 3.0]], rotation)
    covariance = rotation[0] @ torch.diag(torch.tensor([0.2, 3.0], dtype=F64)) @ rotation[0].T
    from_covariance = Gaussian(torch.tensor([0.5, -1.0]), covariance)
    x = torch.randn(16, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(from_basis.score(0.4, x, COND_OT), from_covariance.score(0.4, x, COND_OT), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("t_eps", [0.0, -0.1, 0.5, 0.9, 1.0, 1.5, math.nan])
def test_learned_field_clip_outside_its_range_is_refused(t_eps):
    with pytest.raises(ValueError, match="t_eps must be a finite number in \\(0.0, 0.5\\)"):
        LearnedField(SinusoidalMLP(3), COND_OT, "cfm", t_eps=t_eps)


def test_numerically_singular_covariance_is_refused():
    # Rank 2 in 3-D: eigh returns the zero eigenvalue as a round-off value of order 1e-16, possibly positive.
    basis = torch.linalg.qr(torch.randn(3, 3, dtype=F64, generator=torch.Generator().manual_seed(1)))[0]
    singular = basis @ torch.diag(torch.tensor([0.0, 1.0, 2.0], dtype=F64)) @ basis.T
    with pytest.raises(ValueError, match="numerically singular"):
        Gaussian(torch.zeros(3), singular)
    # eigh returns that zero as ±ε·λ_max depending on the CPU and its LAPACK (−3e-16 seen with MKL on an Intel Xeon):
    # either sign is "numerically singular", checked before positive definiteness; a clearly negative one is not.
    for round_off in (-3e-16, 3e-16, -2e-13):
        near_zero = basis @ torch.diag(torch.tensor([round_off, 1.0, 2.0], dtype=F64)) @ basis.T
        with pytest.raises(ValueError, match=r"covs\[0\] is numerically singular"):
            Gaussian(torch.zeros(3), near_zero)
    indefinite = basis @ torch.diag(torch.tensor([-1e-6, 1.0, 2.0], dtype=F64)) @ basis.T
    with pytest.raises(ValueError, match=r"covs\[0\] must be positive definite; its smallest covariance eigenvalue is -1e-06"):
        Gaussian(torch.zeros(3), indefinite)
    # Just above the floor it is accepted, and the score at t = 1 matches the inverse covariance.
    regular = basis @ torch.diag(torch.tensor([1e-9, 1.0, 2.0], dtype=F64)) @ basis.T
    x = torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(2)) * 1e-5
    expected = -x @ torch.linalg.inv(regular)
    torch.testing.assert_close(Gaussian(torch.zeros(3), regular).score(1.0, x, COND_OT), expected, rtol=1e-6, atol=1e-6)


def test_square_diagonals_with_K_equal_d_are_ambiguous():
    shared_full = torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=F64)
    with pytest.raises(ValueError, match="ambiguous when K = d = 2"):
        GaussianMixture([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], shared_full)
    as_diagonals = GaussianMixture([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], shared_full, covariance_type="diag")
    torch.testing.assert_close(as_diagonals.eigenvalues, shared_full)
    with pytest.raises(ValueError, match=r"shape \(2, 2, 2\) for covariance_type='full'"):
        GaussianMixture([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], shared_full, covariance_type="full")


def test_an_early_stop_is_recorded_and_scored_against_data_or_marginal():
    """A grid that ends at t1 < 1 is an early stop: ``result.t1`` and ``law.t1`` say so, and the exact law is scored
    against the data (charged for stopping) or against the marginal at t1. Checked against a fine rk4 solve (whose law
    is the exact flow's to round-off) and against the Bures formula between the marginal at t1 and the target."""
    target, schedule = get_target("gaussian", d=3, condition_number=10.0), get_schedule("cosine")
    grid = get_grid("uniform", 256, t1=0.75)
    result = sample(AnalyticField(target, schedule), torch.zeros(2, 3, dtype=F64), "rk4", grid=grid)
    assert result.t1 == 0.75 and float(result.grid[-1]) == 0.75
    law = exact_output_law(target, schedule, "rk4", grid=grid)
    assert law.t1 == 0.75
    assert law.w2_to_marginal() < 1e-9  # rk4 at 256 steps: the exact flow to t1 to ~1e-11
    values = schedule(0.75)
    alpha, sigma = float(values.alpha), float(values.sigma)
    marginal_to_data = w2_gaussian(alpha * target.mean(), alpha**2 * target.covariance() + sigma**2 * torch.eye(3, dtype=F64),
                                   target.mean(), target.covariance())
    assert law.w2_to_target() == pytest.approx(marginal_to_data, rel=1e-8)
    assert law.strong_error(0.0, 0.75) < 1e-9 and law.strong_error() > 0.1
    full = exact_output_law(target, schedule, "rk4", steps=256)
    assert full.t1 == 1.0 and full.w2_to_marginal() == pytest.approx(full.w2_to_target(), rel=1e-12)


def test_exact_law_refuses_an_infinite_velocity_as_sample_does():
    """poly(n = 0.5) has dα/dt = ∞ at t = 0: the exact law was NaN where ``sample`` raises."""
    schedule = get_schedule("poly", n=0.5)
    for method in ("euler", "rk4"):
        with pytest.raises(ValueError, match="velocity is infinite"):
            sample(AnalyticField(GAUSSIAN, schedule), torch.zeros(2, 3, dtype=F64), method, steps=4)
        with pytest.raises(ValueError, match=r"marginal velocity is infinite at t = \[0.0\]"):
            exact_output_law(GAUSSIAN, schedule, method, steps=4)
    grid = get_grid("uniform", 4, t0=0.01)
    assert math.isfinite(exact_output_law(GAUSSIAN, schedule, "rk4", grid=grid).w2_to_target())


# ---------------------------------------------------------------------- silent NaN or inf (second audit)


@pytest.mark.parametrize("exponent", [-1000, -500, 0, 500, 1000])
def test_distances_are_scale_invariant_to_the_ends_of_float64(exponent):
    """W2 and the strong error are computed on inputs scaled by a power of two: s·x gives s times the distance
    exactly, from 2⁻¹⁰⁰⁰ to 2¹⁰⁰⁰ (where squaring x directly under- or overflows)."""
    generator = torch.Generator().manual_seed(5)
    x, y = torch.randn(64, 3, dtype=F64, generator=generator), torch.randn(64, 3, dtype=F64, generator=generator)
    scale = math.ldexp(1.0, exponent)
    direct = math.sqrt(float(((x - y) ** 2).sum(dim=1).mean()))
    assert strong_error(x * scale, y * scale) == pytest.approx(direct * scale, rel=1e-15)
    if abs(exponent) <= 500:  # a covariance scales by s², representable up to s = 2⁵¹¹
        covariance = torch.cov(x.T)
        reference = w2_gaussian(x.mean(0), covariance, y.mean(0), torch.cov(y.T))
        scaled = w2_gaussian(x.mean(0) * scale, covariance * scale * scale, y.mean(0) * scale,
                             torch.cov(y.T) * scale * scale)
        assert scaled == pytest.approx(reference * scale, rel=1e-12)
    assert w2_sliced(x * scale, y * scale, 16, generator=0) == pytest.approx(w2_sliced(x, y, 16, generator=0) * scale,
                                                                              rel=1e-15)


def test_the_audit_s_non_finite_results_are_finite_and_right():
    huge = 1e308 * torch.eye(2, dtype=F64)
    assert w2_gaussian(torch.zeros(2), huge, torch.zeros(2), huge) == 0.0  # was NaN
    apart = torch.full((2,), 1e200, dtype=F64)  # same covariance: W2 = |Δm| = √2·1e200
    assert w2_gaussian(torch.zeros(2), torch.eye(2), apart, torch.eye(2)) == pytest.approx(math.sqrt(2) * 1e200, rel=1e-15)
    assert strong_error(torch.full((4, 2), 1e200, dtype=F64), torch.full((4, 2), -1e200, dtype=F64)) == pytest.approx(
        2 * math.sqrt(2) * 1e200, rel=1e-15)
    points = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))  # float32: squared at 1e20 it was inf
    other = torch.randn(50, 3, generator=torch.Generator().manual_seed(1))
    reference = 1e20 * w2_sliced(points.double(), other.double(), 16, generator=0)
    assert w2_sliced(points * 1e20, other * 1e20, 16, generator=0) == pytest.approx(reference, rel=1e-6)  # float32 rounding
    with pytest.raises(OverflowError, match="strong error is .* beyond float64's range"):
        strong_error(torch.full((1, 1), 1.7e308, dtype=F64), torch.full((1, 1), -1.7e308, dtype=F64))


def test_an_empty_batch_is_valid_for_every_method():
    """Documented as valid (``sample``): ``(0, d)`` in, ``(0, d)`` out, no field call, for every registered method
    whose library is here (it broke dopri5, scipy_rk45 and log_likelihood)."""
    from fmcore.solvers import METHODS

    empty = torch.zeros(0, 3, dtype=F64)
    for name, method in sorted(METHODS.items()):
        options = {"steps": 4} if method.takes_steps else {}
        if method.diffusion:
            options["diffusion"] = get_diffusion("constant", c=0.1)
        if method.draws_noise({}):
            options["generator"] = 0
        result = sample(FIELD, empty, name, **options)
        assert result.x.shape == (0, 3) and result.nfe == 0, name
    for method in ("rk4", "dopri5"):
        options = {"steps": 4} if method == "rk4" else {}
        assert log_likelihood(FIELD, empty, method, **options).log_prob.shape == (0,)


def test_a_cache_directory_that_cannot_be_is_refused_before_training(tmp_path, monkeypatch):
    import fmcore.models

    def no_training(*args, **kwargs):
        raise AssertionError("trained before the cache directory was checked")

    monkeypatch.setattr(fmcore.models, "_train", no_training)
    a_file = tmp_path / "file"
    a_file.write_text("")
    for cache_dir, message in (("", "cache_dir must be a directory path"), (a_file, "exists and is not a directory"),
                               (a_file / "below", "cannot be made")):
        with pytest.raises(ValueError, match=message):
            train_model(SEED000, COND_OT, steps=1, cache_dir=cache_dir)


# ---------------------------------------------------------------------- silent NaN


def test_far_finite_points_raise_instead_of_nan():
    far = torch.full((2, 3), 1e200, dtype=F64)
    for call in (lambda: SEED000.log_prob(far), lambda: FIELD.score(0.5, far), lambda: FIELD(0.5, far)):
        with pytest.raises(ValueError, match="too far from every component"):
            call()
    # Moderately far points stay finite and exact: the score of a Gaussian is linear at any distance.
    gaussian = Gaussian(torch.zeros(3), torch.ones(3))
    point = torch.full((1, 3), 1e100, dtype=F64)
    torch.testing.assert_close(gaussian.score(1.0, point, COND_OT), -point)


def test_non_finite_points_are_named_not_propagated():
    with pytest.raises(ValueError, match="x must be finite"):
        FIELD(0.5, torch.tensor([[0.0, math.nan, 0.0]], dtype=F64))


def test_far_points_whose_log_densities_sum_past_the_dtype_range_are_still_valid():
    """The finiteness check sums the log densities first (one reduction); a sum that overflows while every entry is
    finite must fall back to the entry-by-entry check, not raise. |x| ≈ 3e18 in float32: each log p ≈ -5e36, the sum
    of 200 rows beyond float32's 3.4e38."""
    mixture = GaussianMixture([0.4, 0.6], [[0.0, 1.0], [2.0, -1.0]], [[[2.0, 0.5], [0.5, 1.0]], [[1.0, 0.0], [0.0, 3.0]]])
    far = torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=F64) * 3e18
    log_p32 = mixture.marginal_log_prob(0.7, far.float(), COND_OT)
    assert torch.isfinite(log_p32).all() and not math.isfinite(float(log_p32.sum()))
    # float32 against float64 at the same (rounded) points: relative error a few ulps of the squared distance
    log_p64 = mixture.marginal_log_prob(0.7, far.float().double(), COND_OT)
    torch.testing.assert_close(log_p32.double(), log_p64, rtol=1e-5, atol=0.0)
    with pytest.raises(ValueError, match="x must be finite"):
        mixture.marginal_log_prob(0.7, torch.cat([far.float(), torch.tensor([[math.inf, 0.0]])]), COND_OT)


def test_covariance_of_far_means_is_shift_invariant():
    # A shift of 2^40 keeps these means exact in float64, but Σw(Σ + μμᵀ) − mmᵀ would cancel ~1e24 against ~1e24.
    shift = torch.tensor([2.0**40, -(2.0**40)], dtype=F64)
    means = torch.tensor([[0.0, 1.0], [2.0, -1.0]], dtype=F64)
    near = GaussianMixture([0.5, 0.5], means, [0.5, 2.0])
    far = GaussianMixture([0.5, 0.5], means + shift, [0.5, 2.0])
    torch.testing.assert_close(far.covariance(), near.covariance(), rtol=0, atol=0)
    # Near 1e200 (where Σwμμᵀ overflows): two components whose means round to the same value.
    at_1e200 = GaussianMixture([0.5, 0.5], [[1e200, 0.0], [1e200, 0.0]], [1.0, 3.0])
    torch.testing.assert_close(at_1e200.covariance(), 2.0 * torch.eye(2, dtype=F64), rtol=0, atol=0)
    with pytest.raises(ValueError, match="overflows"):
        GaussianMixture([0.5, 0.5], [[1e200, 0.0], [-1e200, 0.0]], [1.0, 1.0]).covariance()


# ---------------------------------------------------------------------- hang


class _Stiff:
    """u = −1e7·x: explicit adaptive methods need ~1e7 steps to stay stable on [0, 1]."""

    dim = 2

    def __call__(self, t, x):
        return -1e7 * x


@pytest.mark.parametrize("method", ["dopri5", "scipy_rk45"])
def test_stiff_adaptive_solve_stops_at_its_nfe_cap(method):
    started = time.perf_counter()
    with pytest.raises(SolverBudgetError, match="max_nfe = 3000"):
        sample(_Stiff(), torch.ones(2, 2, dtype=F64), method, max_nfe=3000)
    assert time.perf_counter() - started < 30


def test_default_cap_applies_to_adaptive_methods_only(monkeypatch):
    import fmcore.solvers.sampling as sampling

    assert sampling.DEFAULT_MAX_NFE == 100_000
    monkeypatch.setattr(sampling, "DEFAULT_MAX_NFE", 500)  # the default, made small enough for a fast test
    assert sample(FIELD, X3, "rk4", steps=200).nfe == 800
    with pytest.raises(SolverBudgetError, match="max_nfe = 500"):
        sample(_Stiff(), torch.ones(1, 2, dtype=F64), "bosh3")


# ---------------------------------------------------------------------- abort


def test_exact_w2_refuses_what_it_cannot_allocate():
    x = torch.zeros(20_000, 2, dtype=F64)
    started = time.perf_counter()
    with pytest.raises(MemoryError, match="would need about 15.27 GiB, above the limit of 4.00 GiB"):
        w2_exact(x, x)
    assert time.perf_counter() - started < 5
    with pytest.raises(MemoryError, match="limit of 0.00 GiB"):
        w2_exact(torch.zeros(100, 2), torch.zeros(100, 2), max_memory_bytes=1000)


# ---------------------------------------------------------------------- unclear errors → clear ones, or correct results


def test_empty_batches_are_valid():
    empty = torch.zeros(0, 3, dtype=F64)
    assert FIELD(0.5, empty).shape == (0, 3)
    assert FIELD.divergence(0.5, empty).shape == (0,)
    velocity, score = FIELD.velocity_and_score(0.5, empty)
    assert velocity.shape == score.shape == (0, 3)
    assert SEED000.log_prob(empty).shape == (0,)
    assert SEED000.sample(0).shape == (0, 3)


@pytest.mark.parametrize("batch_size, error", [(0, ValueError), (-4, ValueError), (2.5, TypeError), ("8", TypeError)])
def test_train_model_names_its_bad_batch_size(batch_size, error):
    with pytest.raises(error, match="batch_size must be"):
        train_model(SEED000, COND_OT, steps=1, batch_size=batch_size, cache_dir=False)


def test_a_target_given_by_name_where_an_object_is_needed():
    with pytest.raises(TypeError, match="target must be a GaussianMixture.*not its name.*got str"):
        mode_tv(X3, "seed000")


class _Zero:
    """u ≡ 0: the likelihood ODE must return the prior's log-density at the same point."""

    dim = 3
    schedule = COND_OT

    def __call__(self, t, x):
        return torch.zeros_like(x)


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_likelihood_of_a_field_constant_in_x(divergence):
    x1 = torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(3))
    result = log_likelihood(_Zero(), x1, "rk4", steps=4, divergence=divergence, probes=2, generator=0)
    torch.testing.assert_close(result.log_prob, gaussian_prior_log_prob(x1, 1.0), rtol=0, atol=0)


# ---------------------------------------------------------------------- the inventory of the public boundary

R = torch.randn(8, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
VALUES = COND_OT(0.5)
MLP = SinusoidalMLP(3)
LEARNED = LearnedField(MLP, COND_OT, "cfm")

# (public function, argument, call with a bad value for that argument, exception type)
BOUNDARY = [
    ("get_schedule", "name", lambda: get_schedule("rectified"), KeyError),
    ("get_schedule", "name", lambda: get_schedule(3), TypeError),
    ("get_schedule", "sigma", lambda: get_schedule("cond_ot", sigma=0.1), TypeError),
    ("get_schedule", "beta_min", lambda: get_schedule("vp", beta_min=math.inf), ValueError),
    ("Schedule.__call__", "t", lambda: COND_OT(1.5), ValueError),
    ("Schedule.__call__", "t", lambda: COND_OT("0.5"), TypeError),
    ("Schedule.t_from_snr", "snr", lambda: COND_OT.t_from_snr(-1.0), ValueError),
    ("get_target", "name", lambda: get_target("moons"), KeyError),
    ("get_target", "d", lambda: get_target("gaussian", d=0), ValueError),
    ("get_target", "d", lambda: get_target("gaussian", d=2.5), TypeError),
    ("get_target", "K", lambda: get_target("gmm", K="4"), TypeError),
    ("get_target", "var", lambda: get_target("eight_gaussians", var=-1.0), ValueError),
    ("GaussianMixture", "weights", lambda: GaussianMixture([0.2, 0.2], [[0.0], [1.0]], [1.0, 1.0]), ValueError),
    ("GaussianMixture", "weights", lambda: GaussianMixture(None, [[0.0]], [1.0]), TypeError),
    ("GaussianMixture", "means", lambda: GaussianMixture([1.0], [[math.nan]], [1.0]), ValueError),
    ("GaussianMixture", "covs", lambda: GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]]), ValueError),
    ("GaussianMixture", "covariance_type",
     lambda: GaussianMixture([1.0], [[0.0]], [1.0], covariance_type="spherical"), ValueError),
    ("GaussianMixture.from_eigendecomposition", "eigenvalues",
     lambda: GaussianMixture.from_eigendecomposition([1.0], [[0.0]], [[-1.0]], [[[1.0]]]), ValueError),
    ("GaussianMixture.from_eigendecomposition", "eigenvectors",
     lambda: GaussianMixture.from_eigendecomposition([1.0], [[0.0]], [[1.0]], [[[2.0]]]), ValueError),
    ("GaussianMixture.on_basis", "basis", lambda: GaussianMixture.on_basis([1.0], [[0.0]], [[1.0]], "dct"), TypeError),
    ("GaussianMixture.on_basis", "eigenvalues",
     lambda: GaussianMixture.on_basis([1.0], [[0.0, 0.0]], [[1.0, -1.0]], Identity(2)), ValueError),
    ("GaussianMixture.on_basis", "eigenvalues",
     lambda: GaussianMixture.on_basis([1.0], [[0.0, 0.0]], [[1.0]], Identity(2)), ValueError),
    ("Dense", "matrix", lambda: Dense([[1.0, 1.0], [0.0, 1.0]]), ValueError),
    ("DCT", "shape", lambda: DCT((3, 0, 4)), ValueError),
    ("get_target", "basis", lambda: get_target("image_gaussian", basis="wavelet"), ValueError),
    ("get_target", "shape", lambda: get_target("image_gaussian", shape=(32, 32)), ValueError),
    ("get_target", "exponent", lambda: get_target("image_gaussian", exponent=-1.0), ValueError),
    ("get_target", "K", lambda: get_target("image_mixture", K=0), ValueError),
    ("Gaussian", "mean", lambda: Gaussian(torch.zeros(2, 2), torch.ones(2)), ValueError),
    ("Gaussian", "cov", lambda: Gaussian(torch.zeros(2), torch.ones(2, 2, 2)), ValueError),
    ("GaussianMixture.sample", "n", lambda: SEED000.sample(-1), ValueError),
    ("GaussianMixture.sample", "n", lambda: SEED000.sample(2.0), TypeError),
    ("GaussianMixture.sample", "generator", lambda: SEED000.sample(2, generator="0"), TypeError),
    ("GaussianMixture.log_prob", "x", lambda: SEED000.log_prob(R[:, :2]), ValueError),
    ("GaussianMixture.log_prob", "x", lambda: SEED000.log_prob(R.tolist()), TypeError),
    ("GaussianMixture.component_posteriors", "x", lambda: SEED000.component_posteriors(R.int()), ValueError),
    ("GaussianMixture.marginal", "t", lambda: SEED000.marginal(torch.tensor([0.1, 0.2]), COND_OT), ValueError),
    ("GaussianMixture.marginal", "schedule", lambda: SEED000.marginal(0.5, "cond_ot"), TypeError),
    ("GaussianMixture.marginal_log_prob", "schedule", lambda: SEED000.marginal_log_prob(0.5, R, None), TypeError),
    ("GaussianMixture.score", "t", lambda: SEED000.score(torch.full((8,), -0.1), R, COND_OT), ValueError),
    ("GaussianMixture.velocity", "x", lambda: SEED000.velocity(0.5, R[0], COND_OT), ValueError),
    ("GaussianMixture.data_prediction", "t", lambda: SEED000.data_prediction(math.nan, R, COND_OT), ValueError),
    ("GaussianMixture.noise_prediction", "x", lambda: SEED000.noise_prediction(0.5, R.float()[:, :1], COND_OT), ValueError),
    ("GaussianMixture.velocity_divergence", "t", lambda: SEED000.velocity_divergence(torch.zeros(3), R, COND_OT), ValueError),
    ("GaussianMixture.flow_map", "x", lambda: Gaussian(torch.zeros(3), 1.0).flow_map(R * math.inf, COND_OT), ValueError),
    ("GaussianMixture.flow_map", "t0", lambda: Gaussian(torch.zeros(3), 1.0).flow_map(R, COND_OT, t0=2.0), ValueError),
    ("GaussianMixture.flow_map", "flow_map", lambda: SEED000.flow_map(R, COND_OT), ValueError),
    ("AnalyticField", "target", lambda: AnalyticField("seed000", COND_OT), TypeError),
    ("AnalyticField", "schedule", lambda: AnalyticField(SEED000, "cond_ot"), TypeError),
    ("AnalyticField.__call__", "x", lambda: FIELD(0.5, R[:, :2]), ValueError),
    ("AnalyticField.__call__", "t", lambda: FIELD(None, R), TypeError),
    ("get_grid", "name", lambda: get_grid("geometric", 4, COND_OT), KeyError),
    ("get_grid", "steps", lambda: get_grid("uniform", 0), ValueError),
    ("get_grid", "steps", lambda: get_grid("uniform", 4.0), TypeError),
    ("get_grid", "schedule", lambda: get_grid("karras", 4, "cond_ot"), TypeError),
    ("get_grid", "t0", lambda: get_grid("uniform", 4, t0=-0.5), ValueError),
    ("get_grid", "rho", lambda: get_grid("karras", 4, COND_OT, rho=0.0), ValueError),
    ("check_grid", "grid", lambda: check_grid([0.0, 1.0]), TypeError),
    ("get_diffusion", "name", lambda: get_diffusion("brownian"), KeyError),
    ("get_diffusion", "c", lambda: get_diffusion("constant", c=-1.0), ValueError),
    ("get_diffusion", "t_eps", lambda: get_diffusion("forward", t_eps=1.5), ValueError),
    ("get_method", "name", lambda: get_method("rk5"), KeyError),
    ("get_method", "name", lambda: get_method(None), TypeError),
    ("sample", "field", lambda: sample(lambda t, x: x, R, "euler", steps=2), TypeError),
    ("sample", "x0", lambda: sample(FIELD, R * math.nan, "euler", steps=2), ValueError),
    ("sample", "method", lambda: sample(FIELD, R, "rk5", steps=2), KeyError),
    ("sample", "steps", lambda: sample(FIELD, R, "euler", steps=0), ValueError),
    ("sample", "steps", lambda: sample(FIELD, R, "euler", steps="4"), TypeError),
    ("sample", "grid", lambda: sample(FIELD, R, "euler", grid=torch.tensor([0.0, 2.0])), ValueError),
    ("sample", "rtol", lambda: sample(FIELD, R, "dopri5", rtol=-1e-3), ValueError),
    ("sample", "atol", lambda: sample(FIELD, R, "dopri5", atol="1e-6"), TypeError),
    ("sample", "diffusion", lambda: sample(FIELD, R, "euler_maruyama", steps=2, diffusion="constant", generator=0), TypeError),
    ("sample", "diffusion", lambda: sample(FIELD, R, "euler_maruyama", steps=2, generator=0), ValueError),
    ("sample", "generator", lambda: sample(FIELD, R, "euler_maruyama", steps=2, diffusion=get_diffusion("zero"),
                                           generator=1.5), TypeError),
    ("sample", "return_trajectory", lambda: sample(FIELD, R, "euler", steps=2, return_trajectory="yes"), TypeError),
    ("sample", "max_nfe", lambda: sample(FIELD, R, "dopri5", max_nfe=0), ValueError),
    ("log_likelihood", "method", lambda: log_likelihood(FIELD, R, "euler_maruyama", steps=2), ValueError),
    ("log_likelihood", "divergence", lambda: log_likelihood(FIELD, R, "rk4", steps=2, divergence="trace"), ValueError),
    ("log_likelihood", "probes", lambda: log_likelihood(FIELD, R, "rk4", steps=2, divergence="hutchinson", probes=0,
                                                        generator=0), ValueError),
    ("log_likelihood", "prior_std", lambda: log_likelihood(FIELD, R, "rk4", steps=2, prior_std=0.0), ValueError),
    ("log_likelihood", "options", lambda: log_likelihood(FIELD, R, "rk4", steps=2, tol=1e-3), ValueError),
    ("w2_gaussian", "mean1", lambda: w2_gaussian("0", torch.eye(2), [0.0, 0.0], torch.eye(2)), TypeError),
    ("w2_gaussian", "cov2", lambda: w2_gaussian([0.0, 0.0], torch.eye(2), [0.0, 0.0], -torch.eye(2)), ValueError),
    ("w2_exact", "x", lambda: w2_exact(R[:0], R), ValueError),
    ("w2_exact", "y", lambda: w2_exact(R, R[:, :2]), ValueError),
    ("w2_exact", "max_iterations", lambda: w2_exact(R, R, max_iterations=0), ValueError),
    ("w2_exact", "max_memory_bytes", lambda: w2_exact(R, R, max_memory_bytes=-1), ValueError),
    ("w2_sliced", "n_projections", lambda: w2_sliced(R, R, n_projections=2.0), TypeError),
    ("w2_sliced", "generator", lambda: w2_sliced(R, R, generator=-3), ValueError),
    ("w2_sliced", "batch", lambda: w2_sliced(R, R, batch=0), ValueError),
    ("w2_floor", "target", lambda: w2_floor("seed000", 10), TypeError),
    ("w2_floor", "estimator", lambda: w2_floor(SEED000, 10, estimator="kl"), KeyError),
    ("w2_floor", "n", lambda: w2_floor(SEED000, 0), ValueError),
    ("w2_floor", "repeats", lambda: w2_floor(SEED000, 10, repeats=True), TypeError),
    ("strong_error", "x_ref", lambda: strong_error(R, R[:4]), ValueError),
    ("gaussian_fit_w2", "x", lambda: gaussian_fit_w2(R[:1], SEED000), ValueError),
    ("gaussian_fit_w2", "target", lambda: gaussian_fit_w2(R, None), TypeError),
    ("mode_tv", "x", lambda: mode_tv(R[:, :2], SEED000), ValueError),
    ("nll_error", "model_logp", lambda: nll_error(torch.full((8,), math.nan), R, SEED000), ValueError),
    ("conversions.score_from_velocity", "values", lambda: conversions.score_from_velocity(0.5, R, R), TypeError),
    ("conversions.velocity_from_score", "score", lambda: conversions.velocity_from_score(VALUES, R, R[:, :2]), ValueError),
    ("conversions.velocity_from_data_prediction", "x",
     lambda: conversions.velocity_from_data_prediction(VALUES, "x", R), TypeError),
    ("conversions.score_from_data_prediction", "data_prediction",
     lambda: conversions.score_from_data_prediction(VALUES, R, R[0]), ValueError),
    ("conversions.velocity_from_noise_prediction", "values",
     lambda: conversions.velocity_from_noise_prediction(COND_OT(torch.rand(3)), R, R), ValueError),
    ("conversions.score_from_noise_prediction", "noise_prediction",
     lambda: conversions.score_from_noise_prediction(VALUES, R, None), TypeError),
    ("SinusoidalMLP", "dim", lambda: SinusoidalMLP(0), ValueError),
    ("SinusoidalMLP", "width", lambda: SinusoidalMLP(3, width=1.5), TypeError),
    ("SinusoidalMLP", "time_embedding", lambda: SinusoidalMLP(3, time_embedding=3), ValueError),
    ("LearnedField", "model", lambda: LearnedField(lambda t, x: x, COND_OT, "cfm"), TypeError),
    ("LearnedField", "objective", lambda: LearnedField(MLP, COND_OT, "ddpm"), KeyError),
    ("LearnedField", "schedule", lambda: LearnedField(MLP, None, "cfm"), TypeError),
    ("LearnedField.__call__", "x", lambda: LEARNED(0.5, R), ValueError),  # float64 into a float32 model
    ("train_model", "target", lambda: train_model("seed000", COND_OT, steps=1), TypeError),
    ("train_model", "objective", lambda: train_model(SEED000, COND_OT, "ddpm", steps=1), KeyError),
    ("train_model", "steps", lambda: train_model(SEED000, COND_OT, steps=0), ValueError),
    ("train_model", "budget_s", lambda: train_model(SEED000, COND_OT, budget_s=-1.0), ValueError),
    ("train_model", "seed", lambda: train_model(SEED000, COND_OT, steps=1, seed="0"), TypeError),
    ("train_model", "learning_rate", lambda: train_model(SEED000, COND_OT, steps=1, learning_rate=0.0), ValueError),
    ("train_model", "t_eps", lambda: train_model(SEED000, COND_OT, steps=1, t_eps=0.7), ValueError),
    ("train_model", "progress", lambda: train_model(SEED000, COND_OT, steps=1, progress="no"), TypeError),
    ("train_model", "cache_dir", lambda: train_model(SEED000, COND_OT, steps=1, cache_dir=3), TypeError),
    ("train_model", "architecture", lambda: train_model(SEED000, COND_OT, steps=1, heads=4), ValueError),
    ("exact_fm_loss", "analytic_field", lambda: exact_fm_loss(LEARNED, SEED000), TypeError),
    ("exact_fm_loss", "field", lambda: exact_fm_loss(MLP, FIELD), TypeError),
    ("exact_fm_loss", "n", lambda: exact_fm_loss(LEARNED, FIELD, n=0), ValueError),
    ("exact_fm_loss", "time_bins", lambda: exact_fm_loss(LEARNED, FIELD, time_bins=2.5), TypeError),
    # The second audit (issue 19): complex inputs, sizes no machine can allocate, seeds past 2⁶⁴, messages that named
    # an internal argument or blamed the wrong one, tolerances no step can meet, caches that cannot be.
    ("Gaussian", "mean", lambda: Gaussian(np.array([1 + 1j, 0.0]), np.eye(2)), TypeError),
    ("GaussianMixture", "covs", lambda: GaussianMixture([1.0], [[0.0]], [[[1 + 2j]]]), TypeError),
    ("w2_gaussian", "cov1", lambda: w2_gaussian(np.zeros(2), np.eye(2) * (1 + 1j), np.zeros(2), np.eye(2)), TypeError),
    ("w2_gaussian", "mean2", lambda: w2_gaussian([0.0], [[1.0]], [complex(0, 1)], [[1.0]]), TypeError),
    ("get_target", "d", lambda: get_target("gaussian", d=10**6), MemoryError),
    ("get_target", "d", lambda: get_target("gmm", K=4, d=10**6), MemoryError),
    ("get_target", "seed", lambda: get_target("gaussian", d=2, seed=2**64), ValueError),
    ("GaussianMixture.sample", "n", lambda: SEED000.sample(10**13), MemoryError),
    ("get_grid", "steps", lambda: get_grid("uniform", 10**12), MemoryError),
    ("get_grid", "rho", lambda: get_grid("karras", 8, get_schedule("vp"), rho=1e300), ValueError),
    ("get_grid", "rho", lambda: get_grid("karras", 8, get_schedule("vp"), rho=1e-300), ValueError),
    ("sample", "steps", lambda: sample(FIELD, R, "euler", steps=10**12), MemoryError),
    ("sample", "steps", lambda: sample(FIELD, torch.zeros(1000, 3, dtype=F64), "euler", steps=10**7,
                                       return_trajectory=True), MemoryError),
    ("sample", "generator", lambda: sample(FIELD, R, "euler_maruyama", steps=2, diffusion=get_diffusion("constant", c=0.1),
                                           generator=2**64), ValueError),
    ("sample", "rtol", lambda: sample(FIELD, R, "dopri5", rtol=1e-300, atol=1e-300), ValueError),
    ("w2_sliced", "n_projections", lambda: w2_sliced(R, R, n_projections=10**12), MemoryError),
    ("w2_sliced", "generator", lambda: w2_sliced(R, R, generator=2**70), ValueError),
    ("log_likelihood", "probes", lambda: log_likelihood(FIELD, R, "rk4", steps=2, divergence="hutchinson", probes=10**11,
                                                        generator=0), MemoryError),
    ("strong_error", "x_ref", lambda: strong_error(R, R[:4]), ValueError),
    ("GaussianMixture.flow_map", "t0", lambda: Gaussian(torch.zeros(3), 1.0).flow_map(R, COND_OT, t0=2.0), ValueError),
    ("GaussianMixture.flow_map", "t1", lambda: Gaussian(torch.zeros(3), 1.0).flow_map(R, COND_OT, t1=-1.0), ValueError),
    ("SinusoidalMLP", "width", lambda: SinusoidalMLP(3, width=10**6), MemoryError),
    ("train_model", "seed", lambda: train_model(SEED000, COND_OT, steps=1, seed=2**64), ValueError),
    ("train_model", "cache_dir", lambda: train_model(SEED000, COND_OT, steps=1, cache_dir=""), ValueError),
    ("train_model", "cache_dir", lambda: train_model(SEED000, COND_OT, steps=10**9, cache_dir=__file__), ValueError),
    ("exact_output_law", "schedule", lambda: exact_output_law(GAUSSIAN, get_schedule("poly", n=0.5), "euler", steps=4),
     ValueError),
    ("exact_output_law", "schedule", lambda: exact_output_law(GAUSSIAN, get_schedule("poly", n=0.5), "rk4", steps=4),
     ValueError),
]


@pytest.mark.parametrize("function, argument, call, error", BOUNDARY, ids=[f"{f}-{a}" for f, a, _, _ in BOUNDARY])
def test_public_boundary(function, argument, call, error):
    with pytest.raises(error) as raised:
        call()
    message = str(raised.value.args[0]) if raised.value.args else ""
    assert len(message) > 20, f"{function}({argument}=...) raised {error.__name__} with an unhelpful message: {message!r}"
    assert "Traceback" not in message
    assert argument in message, f"{function}: the message does not name {argument!r}: {message!r}"


def test_inventory_covers_the_public_api():
    """Every public function of fmcore (as exported) appears in the inventory above."""
    covered = {function.split(".")[0] for function, *_ in BOUNDARY} | {function for function, *_ in BOUNDARY}
    public = {
        "get_schedule", "get_target", "GaussianMixture", "Gaussian", "AnalyticField", "get_grid", "check_grid",
        "get_diffusion", "get_method", "sample", "log_likelihood", "w2_gaussian", "w2_exact", "w2_sliced", "w2_floor",
        "strong_error", "gaussian_fit_w2", "mode_tv", "nll_error", "SinusoidalMLP", "LearnedField", "train_model",
        "exact_fm_loss", "conversions", "exact_output_law",
    }
    assert public <= covered, sorted(public - covered)
