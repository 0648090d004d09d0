"""Schedules: closed-form derivatives against autograd, endpoint values, SNR inversion, bad input."""

import math

import pytest
import torch

from fmcore.schedules import SCHEDULES, Schedule, get_schedule


def test_every_registered_schedule_is_covered(any_schedule):
    assert any_schedule.name in SCHEDULES


def test_derivatives_match_autograd(any_schedule):
    t = torch.linspace(0.01, 0.99, 97, dtype=torch.float64, requires_grad=True)
    values = any_schedule(t)
    # "+ 0·t" keeps constant schedules (VE's α ≡ 1) attached to the graph.
    d_alpha = torch.autograd.grad((values.alpha + 0 * t).sum(), t, retain_graph=True)[0]
    d_sigma = torch.autograd.grad((values.sigma + 0 * t).sum(), t)[0]
    torch.testing.assert_close(values.d_alpha, d_alpha, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(values.d_sigma, d_sigma, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(values.sigma_d_sigma, values.sigma * d_sigma, rtol=1e-6, atol=1e-6)


def test_values_keep_shape_and_dtype(any_schedule):
    for t in (torch.tensor(0.3), torch.rand(5, dtype=torch.float64)):
        values = any_schedule(t)
        for field in ("alpha", "sigma", "d_alpha", "d_sigma", "sigma_d_sigma"):
            assert getattr(values, field).shape == t.shape
            assert getattr(values, field).dtype == t.dtype
    assert any_schedule(0.5).alpha.dtype == torch.float64


def _vp_alpha0(beta_min=0.1, beta_max=20.0):
    return math.exp(-0.5 * (beta_min + 0.5 * (beta_max - beta_min)))


@pytest.mark.parametrize(
    "name, params, start, end",
    [
        ("cond_ot", {}, (0.0, 1.0), (1.0, 0.0)),
        ("cond_ot", {"sigma_min": 0.1}, (0.0, 1.0), (1.0, 0.1)),
        ("cosine", {}, (0.0, 1.0), (1.0, 0.0)),
        ("linear_vp", {}, (0.0, 1.0), (1.0, 0.0)),
        ("vp", {}, (_vp_alpha0(), math.sqrt(1 - _vp_alpha0() ** 2)), (1.0, 0.0)),
        ("ve", {"sigma_min": 0.01, "sigma_max": 50.0}, (1.0, 50.0), (1.0, 0.01)),
        ("poly", {"n": 3.0}, (0.0, 1.0), (1.0, 0.0)),
    ],
)
def test_endpoint_values(name, params, start, end):
    schedule = get_schedule(name, **params)
    at_zero, at_one = schedule(0.0), schedule(1.0)
    assert float(at_zero.alpha) == pytest.approx(start[0], abs=1e-15)
    assert float(at_zero.sigma) == pytest.approx(start[1], abs=1e-15)
    assert float(at_one.alpha) == pytest.approx(end[0], abs=1e-15)
    assert float(at_one.sigma) == pytest.approx(end[1], abs=1e-15)
    assert schedule.prior_std == pytest.approx(start[1], abs=1e-15)


def test_vp_prior_mismatch_is_the_published_value():
    # docs/design.md, Schedules: α_0 ≈ 6.6e-3 for β ∈ [0.1, 20]; the path never reaches pure noise.
    assert float(get_schedule("vp")(0.0).alpha) == pytest.approx(6.57e-3, rel=1e-3)


def test_sigma_d_sigma_is_finite_where_d_sigma_is_not():
    for name in ("linear_vp", "vp"):
        values = get_schedule(name)(1.0)
        assert math.isinf(float(values.d_sigma))
        assert math.isfinite(float(values.sigma_d_sigma))
    # Hand-derived: linear_vp σσ̇ = −t; vp σσ̇ = −αα̇ = −β_min/2 at t = 1.
    assert float(get_schedule("linear_vp")(1.0).sigma_d_sigma) == -1.0
    assert float(get_schedule("vp")(1.0).sigma_d_sigma) == pytest.approx(-0.05, rel=1e-12)


def test_t_from_snr_round_trips(any_schedule):
    t = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)
    recovered = any_schedule.t_from_snr(any_schedule.snr(t))
    torch.testing.assert_close(recovered, t, rtol=0, atol=1e-10)


def test_closed_form_inverse_matches_bisection(any_schedule):
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    snr = any_schedule.snr(t)
    torch.testing.assert_close(Schedule.t_from_snr(any_schedule, snr), any_schedule.t_from_snr(snr), rtol=0, atol=1e-12)


def test_t_from_snr_reaches_the_ends():
    schedule = get_schedule("cond_ot")
    assert float(schedule.t_from_snr(0.0)) == 0.0
    assert float(schedule.t_from_snr(math.inf)) == 1.0


def test_unknown_schedule_lists_valid_names():
    with pytest.raises(KeyError, match="cond_ot"):
        get_schedule("linear")


@pytest.mark.parametrize(
    "name, params, fragment",
    [
        ("cond_ot", {"sigma_min": -0.1}, "sigma_min"),
        ("cond_ot", {"sigma_min": 1.0}, "sigma_min"),
        ("vp", {"beta_min": 5.0, "beta_max": 1.0}, "beta_max"),
        ("ve", {"sigma_min": 2.0, "sigma_max": 1.0}, "sigma_max"),
        ("poly", {"n": 0.0}, "n must"),
        ("poly", {"n": math.nan}, "n must"),
    ],
)
def test_bad_parameters(name, params, fragment):
    with pytest.raises(ValueError, match=fragment):
        get_schedule(name, **params)


def test_parameters_of_the_wrong_name_or_type():
    with pytest.raises(TypeError, match=r"takes no parameter\(s\) \['bogus'\]"):
        get_schedule("cosine", bogus=1.0)
    with pytest.raises(TypeError, match="sigma_min must be a real number"):
        get_schedule("cond_ot", sigma_min="0.1")


@pytest.mark.parametrize("t", [-0.1, 1.5, math.nan, torch.tensor([0.5, 1.01]), torch.tensor([math.inf])])
def test_time_outside_unit_interval(t):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        get_schedule("cosine")(t)


def test_snr_outside_range():
    with pytest.raises(ValueError, match="snr must lie in"):
        get_schedule("ve", sigma_min=0.1, sigma_max=10.0).t_from_snr(100.0)
    with pytest.raises(ValueError, match="snr must be"):
        get_schedule("cosine").t_from_snr(-1.0)


@pytest.mark.parametrize("n", [0.5, 2.0, 3.7])
def test_poly_sigma_has_full_relative_precision_near_the_data_end(n):
    """σ = 1 − tⁿ cancels as t → 1; against 50-digit arithmetic (mpmath) it must hold to a few ulps of σ itself."""
    import mpmath

    mpmath.mp.dps = 50
    schedule = get_schedule("poly", n=n)
    for gap in (1e-3, 1e-6, 1e-9, 1e-12):
        t = 1.0 - gap  # a float64; its exact value is what mpmath is given
        expected = float(1 - mpmath.mpf(t) ** mpmath.mpf(n))
        got = float(schedule(torch.tensor(t, dtype=torch.float64)).sigma)
        assert got == pytest.approx(expected, rel=8 * torch.finfo(torch.float64).eps, abs=0), (t, got, expected)


def test_linear_vp_t_from_snr_over_the_whole_float64_range():
    """t = snr/√(1 + snr²) overflowed to 0 at snr = 1e160; the inverse must round-trip and saturate at 1."""
    schedule = get_schedule("linear_vp")
    snr = torch.tensor([0.0, 1e-200, 1e-8, 0.5, 1.0, 2.0, 1e8, 1e160, 1e300, math.inf], dtype=torch.float64)
    t = schedule.t_from_snr(snr)
    assert t[0] == 0 and t[-1] == 1 and t[-3] == 1 and t[-4] == 1 and bool((t.diff() >= 0).all())
    assert float(t[1]) == pytest.approx(1e-200, rel=1e-15)
    assert 1 - float(t[6]) <= 1e-16  # 1 − t = 1/(2 snr²) below one ulp of 1: t rounds to 1
    # α/σ back: σ = √(1 − t²) carries t's rounding as eps/(1 − t), so the round trip is checked where that is small
    values = schedule(t[2:6])
    torch.testing.assert_close(values.alpha / values.sigma, snr[2:6], rtol=1e-14, atol=0)
