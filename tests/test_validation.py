"""Bad input at the public boundary of the targets: each raises with a message naming the argument."""

import math

import pytest
import torch

from fmcore import AnalyticField, Gaussian, GaussianMixture, get_schedule, get_target

ONE = torch.ones(1, dtype=torch.float64)


@pytest.mark.parametrize(
    "weights, means, covs, fragment",
    [
        (ONE, torch.zeros(1, 2), torch.tensor([[[1.0, 0.5], [0.4, 1.0]]]), "symmetric"),
        (ONE, torch.zeros(1, 2), torch.tensor([[[1.0, 2.0], [2.0, 1.0]]]), "positive definite"),
        (ONE, torch.zeros(1, 2), torch.tensor([[1.0, -0.5]]), "positive semi-definite"),  # a zero is valid
        (ONE, torch.zeros(1, 2), torch.tensor([-1.0]), "positive semi-definite"),
        (torch.tensor([0.7, 0.7]), torch.zeros(2, 2), torch.ones(2), "sum to 1"),
        (torch.tensor([1.2, -0.2]), torch.zeros(2, 2), torch.ones(2), "≥ 0"),
        (ONE, torch.zeros(2, 2), torch.ones(2), "means must have shape"),
        (ONE, torch.zeros(1, 2), torch.ones(1, 3), "covs must have shape"),
        (ONE, torch.zeros(1, 2), torch.ones(1, 2, 3), "covs must have shape"),
        (ONE, torch.tensor([[0.0, math.nan]]), torch.ones(1), "means must be finite"),
        (ONE, torch.zeros(1, 2), torch.tensor([math.inf]), "covs must be finite"),
        (torch.tensor([math.nan]), torch.zeros(1, 2), torch.ones(1), "weights must be finite"),
        (torch.ones(1, 1), torch.zeros(1, 2), torch.ones(1), "weights must have shape"),
    ],
)
def test_bad_mixture_parameters(weights, means, covs, fragment):
    with pytest.raises(ValueError, match=fragment):
        GaussianMixture(weights, means, covs)


def test_mixture_parameters_of_the_wrong_type():
    with pytest.raises(TypeError, match="weights must be a tensor or array of numbers"):
        GaussianMixture("abc", torch.zeros(1, 2), torch.ones(1))


def test_bad_gaussian_mean():
    with pytest.raises(ValueError, match="mean must have shape"):
        Gaussian(torch.zeros(2, 2), torch.ones(2))


def test_unknown_target_lists_valid_names():
    with pytest.raises(KeyError, match="seed000"):
        get_target("moons")
    with pytest.raises(TypeError, match="takes no parameter"):
        get_target("seed000", d=4)


@pytest.mark.parametrize(
    "x, fragment",
    [
        (torch.zeros(5, 4, dtype=torch.float64), "d = 3 columns"),
        (torch.zeros(5, dtype=torch.float64), "shape \\(n, d\\)"),
        (torch.zeros(5, 3, dtype=torch.int64), "float32 or float64"),
    ],
)
def test_bad_points(x, fragment):
    target = get_target("seed000")
    field = AnalyticField(target, get_schedule("cond_ot"))
    with pytest.raises(ValueError, match=fragment):
        field(0.5, x)
    with pytest.raises(ValueError, match=fragment):
        target.log_prob(x)


@pytest.mark.parametrize("t", [-0.01, 1.01, math.nan, torch.tensor([0.2, -0.2, 0.3])])
def test_bad_times(t):
    field = AnalyticField(get_target("seed000"), get_schedule("cond_ot"))
    with pytest.raises(ValueError, match="t must"):
        field(t, torch.zeros(3, 3, dtype=torch.float64))


def test_per_point_time_must_match_n():
    field = AnalyticField(get_target("seed000"), get_schedule("cond_ot"))
    with pytest.raises(ValueError, match="2 entries but x has n = 3"):
        field(torch.tensor([0.1, 0.2]), torch.zeros(3, 3, dtype=torch.float64))


def test_bad_sample_size():
    with pytest.raises(ValueError, match="n must be"):
        get_target("seed000").sample(-1)


def test_an_unknown_name_suggests_the_closest_valid_ones():
    from fmcore import get_schedule
    from fmcore.solvers import get_method

    with pytest.raises(KeyError, match=r"unknown schedule 'cosin' \(did you mean 'cosine'\?\); valid names: \["):
        get_schedule("cosin")
    with pytest.raises(KeyError, match=r"did you mean 'dpmpp_2m' or 'dpmpp_3m' or 'dpmpp_2s'\?\); valid names: \["):
        get_method("dpmpp2m")
