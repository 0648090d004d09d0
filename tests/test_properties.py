"""Property-based tests (Hypothesis) over the public API.

Random valid mixtures, schedules, times and points must give finite closed forms that satisfy the identities
they are built on, each checked against an independent computation (autograd, or an identity the closed form
does not use); random invalid arguments must raise the documented exception type.

Profiles (``tests/conftest.py``): ``default`` — few examples, derandomised, for every test run;
``slow`` — 2 000 examples per property (``HYPOTHESIS_PROFILE=slow pytest tests/test_properties.py``).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from fmcore import AnalyticField, GaussianMixture, get_schedule, get_target
from fmcore.conversions import (
    score_from_velocity,
    velocity_from_data_prediction,
    velocity_from_noise_prediction,
    velocity_from_score,
)
from fmcore.schedules import SCHEDULES
from fmcore.solvers import TABLEAUS, sample
from fmcore.targets import TARGETS

F64 = torch.float64
unit = st.floats(0.0, 1.0, allow_nan=False)


@st.composite
def mixtures(draw) -> GaussianMixture:
    """K ≤ 3 components in d ≤ 3 dims; eigenvalues in [0.05, 4] (condition ≤ 80), means in [-3, 3]."""
    count, dim = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kind = draw(st.sampled_from(["full", "diag", "iso"]))
    raw = draw(st.lists(st.floats(0.05, 1.0), min_size=count, max_size=count))
    weights = torch.tensor(raw, dtype=F64) / sum(raw)
    means = torch.tensor(draw(st.lists(st.floats(-3, 3), min_size=count * dim, max_size=count * dim)), dtype=F64)
    eigenvalues = torch.tensor(
        draw(st.lists(st.floats(0.05, 4.0), min_size=count * dim, max_size=count * dim)), dtype=F64
    ).reshape(count, dim)
    means = means.reshape(count, dim)
    if kind == "iso":
        return GaussianMixture(weights, means, eigenvalues[:, 0], covariance_type="iso")
    if kind == "diag":
        return GaussianMixture(weights, means, eigenvalues, covariance_type="diag")
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    rotations = torch.linalg.qr(torch.randn(count, dim, dim, dtype=F64, generator=generator))[0]
    return GaussianMixture.from_eigendecomposition(weights, means, eigenvalues, rotations)


@st.composite
def schedules(draw):
    """Every registered schedule, with parameters drawn from the range where its velocity is finite on [0, 1]."""
    name = draw(st.sampled_from(["cond_ot", "cosine", "linear_vp", "vp", "ve", "poly"]))
    if name == "cond_ot":
        return get_schedule(name, sigma_min=draw(st.floats(0.0, 0.5)))
    if name == "vp":
        beta_min = draw(st.floats(0.05, 1.0))
        return get_schedule(name, beta_min=beta_min, beta_max=draw(st.floats(beta_min, 25.0)))
    if name == "ve":
        return get_schedule(name, sigma_min=draw(st.floats(0.01, 0.5)), sigma_max=draw(st.floats(1.0, 50.0)))
    if name == "poly":
        return get_schedule(name, n=draw(st.floats(1.0, 3.0)))
    return get_schedule(name)


def _points(mixture: GaussianMixture, schedule, t: float, seed: int, n: int = 6) -> torch.Tensor:
    """Points drawn from the exact marginal p_t (where the closed forms are used)."""
    return mixture.marginal(t, schedule).sample(n, generator=torch.Generator().manual_seed(seed))


def _close(actual: torch.Tensor, expected: torch.Tensor, rtol: float) -> None:
    scale = 1.0 + float(expected.abs().max())
    error = float((actual - expected).abs().max())
    assert math.isfinite(error) and error <= rtol * scale, f"max error {error:.3g} > {rtol:g} × {scale:.3g}"


seeds = st.integers(0, 2**31 - 1)


@given(mixture=mixtures(), schedule=schedules(), t=unit, seed=seeds)
def test_closed_forms_are_finite_and_satisfy_their_identities(mixture, schedule, t, seed):
    x = _points(mixture, schedule, t, seed)
    field = AnalyticField(mixture, schedule)
    values = schedule(t)
    score, velocity = field.score(t, x), field(t, x)
    data, noise = field.data_prediction(t, x), field.noise_prediction(t, x)
    for output in (score, velocity, data, noise, field.divergence(t, x)):
        assert bool(torch.isfinite(output).all())
    _close(noise, -values.sigma * score, 1e-10)  # Tweedie: E[ε|x] = −σ s
    _close(values.alpha * data + values.sigma * noise, x, 1e-9)  # x = E[x_t | x_t] = αD + σE
    if math.isfinite(float(values.d_sigma)):
        _close(velocity, values.d_alpha * data + values.d_sigma * noise, 1e-8)  # u = α̇D + σ̇E


@given(mixture=mixtures(), schedule=schedules(), t=unit, seed=seeds)
def test_score_is_the_gradient_of_the_log_density(mixture, schedule, t, seed):
    x = _points(mixture, schedule, t, seed).requires_grad_(True)
    log_density = mixture.marginal_log_prob(t, x, schedule)
    (gradient,) = torch.autograd.grad(log_density.sum(), x)
    _close(mixture.score(t, x.detach(), schedule), gradient, 1e-8)


@given(mixture=mixtures(), schedule=schedules(), t=unit, seed=seeds)
def test_divergence_is_the_trace_of_the_velocity_jacobian(mixture, schedule, t, seed):
    x = _points(mixture, schedule, t, seed, n=3)
    field = AnalyticField(mixture, schedule)
    jacobians = torch.stack([torch.autograd.functional.jacobian(lambda row: field(t, row[None])[0], row) for row in x])
    _close(field.divergence(t, x), jacobians.diagonal(dim1=1, dim2=2).sum(-1), 1e-8)


@given(mixture=mixtures(), schedule=schedules(), t=st.floats(0.02, 0.98), seed=seeds)
def test_conversions_recover_the_closed_form_velocity(mixture, schedule, t, seed):
    x = _points(mixture, schedule, t, seed)
    field = AnalyticField(mixture, schedule)
    values, velocity = schedule(t), field(t, x)
    # Away from both ends every division in the conversions is regular (|1/α|, |1/σ| ≤ ~60 for these schedules).
    _close(velocity_from_data_prediction(values, x, field.data_prediction(t, x)), velocity, 1e-7)
    _close(velocity_from_noise_prediction(values, x, field.noise_prediction(t, x)), velocity, 1e-7)
    _close(velocity_from_score(values, x, field.score(t, x)), velocity, 1e-7)
    _close(score_from_velocity(values, x, velocity), field.score(t, x), 1e-6)


@given(
    mixture=mixtures(), schedule=schedules(), seed=seeds, steps=st.integers(1, 6),
    method=st.sampled_from(sorted(TABLEAUS)),
)
def test_fixed_step_samplers_are_finite_and_count_their_evaluations(mixture, schedule, seed, steps, method):
    x0 = schedule.prior_std * torch.randn(5, mixture.dim, dtype=F64, generator=torch.Generator().manual_seed(seed))
    result = sample(AnalyticField(mixture, schedule), x0, method, steps=steps)
    assert bool(torch.isfinite(result.x).all())
    assert result.nfe == TABLEAUS[method].stages * steps


# ---------------------------------------------------------------------- invalid arguments raise the documented type

not_a_number = st.one_of(
    st.text(max_size=5), st.none(), st.lists(st.floats(), max_size=2), st.dictionaries(st.text(), st.integers())
)
outside_unit = st.one_of(st.floats(max_value=-1e-12), st.floats(min_value=1 + 1e-12), st.just(math.nan), st.just(math.inf))


@given(t=outside_unit)
def test_times_outside_the_unit_interval_are_value_errors(t):
    field = AnalyticField(get_target("seed000"), get_schedule("cosine"))
    with pytest.raises(ValueError, match="t must lie in"):
        field(t, torch.zeros(2, 3, dtype=F64))


@given(t=not_a_number)
def test_times_of_the_wrong_type_are_type_errors(t):
    field = AnalyticField(get_target("seed000"), get_schedule("cosine"))
    with pytest.raises(TypeError, match="t must be"):
        field(t, torch.zeros(2, 3, dtype=F64))


@given(name=st.text(min_size=1, max_size=12))
def test_unknown_names_are_key_errors_that_list_the_valid_ones(name):
    assume(name not in SCHEDULES and name not in TARGETS)
    with pytest.raises(KeyError, match="valid names"):
        get_schedule(name)
    with pytest.raises(KeyError, match="valid names"):
        get_target(name)


SCHEDULE_PARAMETERS = [("cond_ot", "sigma_min"), ("vp", "beta_max"), ("ve", "sigma_max"), ("poly", "n")]


@given(value=not_a_number, parameter=st.sampled_from(SCHEDULE_PARAMETERS))
def test_schedule_parameters_of_the_wrong_type_are_type_errors(value, parameter):
    name, key = parameter
    with pytest.raises(TypeError, match=f"{key} must be a real number"):
        get_schedule(name, **{key: value})


@given(weights=st.lists(st.floats(-2.0, 2.0, allow_nan=False), min_size=2, max_size=4))
def test_weights_that_are_negative_or_do_not_sum_to_one_are_value_errors(weights):
    assume(min(weights) < 0 or abs(sum(weights) - 1) > 1e-6)
    count = len(weights)
    with pytest.raises(ValueError, match="weights must"):
        GaussianMixture(weights, torch.zeros(count, 2), torch.ones(count))


@given(position=st.integers(0, 5), bad=st.sampled_from([math.nan, math.inf, -math.inf]))
def test_non_finite_points_are_value_errors(position, bad):
    x = torch.zeros(2, 3, dtype=F64)
    x.view(-1)[position] = bad
    with pytest.raises(ValueError, match="x must be finite"):
        AnalyticField(get_target("seed000"), get_schedule("cond_ot"))(0.5, x)
