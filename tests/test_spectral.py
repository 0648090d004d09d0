"""The spectral Gaussian: one type for a target's component, its marginal and a sampler's exact output law, checked
against dense matrices and the general Gaussian W2 (``fmcore.metrics.w2_gaussian``, matrix square roots)."""

from __future__ import annotations

import pytest
import torch

from fmcore import get_schedule, get_target
from fmcore.exact import exact_output_law
from fmcore.metrics import w2_gaussian
from fmcore.targets import DCT, Identity, SpectralGaussian

from .test_bases import LAYOUT_CASES, _both_layouts

F64 = torch.float64


@pytest.mark.parametrize("case", sorted(LAYOUT_CASES))
def test_a_component_is_its_mean_and_covariance_on_either_layout(case):
    matrix, basis = LAYOUT_CASES[case]()
    for mixture in _both_layouts(matrix, basis):
        for k in range(mixture.num_components):
            component = mixture.component(k)
            assert isinstance(component, SpectralGaussian)
            torch.testing.assert_close(component.mean, mixture.means[k], rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(component.covariance, mixture.covariances[k], rtol=1e-12, atol=1e-12)


def test_a_components_marginal_is_the_marginals_component():
    target, schedule = get_target("gaussian", d=6, condition_number=50), get_schedule("vp")
    values = schedule(0.4)
    mine = target.component(0).marginal(float(values.alpha), float(values.sigma))
    theirs = target.marginal(0.4, schedule).component(0)
    torch.testing.assert_close(mine.eigen_mean, theirs.eigen_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(mine.variances, theirs.variances, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["heun", "ddim", "euler_ancestral"])
def test_an_exact_law_is_a_spectral_gaussian_whose_w2_is_the_general_gaussian_w2(method):
    """On a dense basis (the 6-d Gaussian is rotated), the output law's W2 to the target and to a marginal equal the
    Bures–Wasserstein distance of the dense means and covariances, computed with matrix square roots."""
    target, schedule = get_target("gaussian", d=6, condition_number=50), get_schedule("cosine")
    law = exact_output_law(target, schedule, method, steps=7)
    output = law.output
    assert isinstance(output, SpectralGaussian) and type(output) is type(target.component(0))
    assert law.w2_to_target() == pytest.approx(
        w2_gaussian(law.mean, law.covariance, target.mean(), target.covariance()), rel=1e-9, abs=1e-12)
    marginal = target.marginal(0.8, schedule)
    assert law.w2_to_marginal(0.8) == pytest.approx(
        w2_gaussian(law.mean, law.covariance, marginal.mean(), marginal.covariance()), rel=1e-9, abs=1e-12)


def test_a_spectral_gaussians_samples_have_its_mean_and_covariance():
    """10⁵ draws on a DCT basis: mean and covariance within 5 standard errors of the exact ones (the standard error of
    a sample covariance entry is √((ΣᵢᵢΣⱼⱼ + Σᵢⱼ²)/n))."""
    basis = DCT((1, 2, 3))
    law = SpectralGaussian(basis, torch.linspace(-1, 1, 6, dtype=F64), torch.logspace(-1, 0.5, 6, dtype=F64))
    n = 100_000
    x = law.sample(n, generator=0)
    covariance = law.covariance
    mean_error = (x.mean(0) - law.mean).abs() / (covariance.diagonal() / n).sqrt()
    variances = covariance.diagonal()
    covariance_se = ((variances[:, None] * variances[None, :] + covariance**2) / n).sqrt()
    assert float(mean_error.max()) < 5
    assert float(((torch.cov(x.T) - covariance).abs() / covariance_se).max()) < 5


def test_w2_between_spectral_gaussians_needs_one_basis():
    first = SpectralGaussian(Identity(4), torch.zeros(4, dtype=F64), torch.ones(4, dtype=F64))
    other = SpectralGaussian(DCT((1, 2, 2)), torch.zeros(4, dtype=F64), torch.ones(4, dtype=F64))
    with pytest.raises(ValueError, match="same basis"):
        first.w2_to(other)
    assert first.w2_to(SpectralGaussian(Identity(4), torch.ones(4, dtype=F64), 4 * torch.ones(4, dtype=F64))) == \
        pytest.approx((4 * 1 + 4 * 1) ** 0.5, rel=1e-15)


def test_a_component_index_is_checked():
    target = get_target("gmm", K=3, d=2)
    with pytest.raises(ValueError, match=r"k must be a component index in \[0, 2\], got 3"):
        target.component(3)
