"""A user's network as a field: every prediction type in every convention, against the analytic field.

Each "model" here is the exact closed form written in one prediction type and one convention, from the test's own
formulas (the timestep interpolation by numpy, the inverse of the SNR by the schedule's closed form): through
:class:`~fmcore.model_field.ModelField` it must give the analytic field's velocity, score and predictions to 1e-10
(float64; the round trip through SNR and back costs a few ulps of t).
"""

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from fmcore import AnalyticField, get_schedule, get_target
from fmcore.conventions import DDPMTimesteps, NoiseLevel, PathTime
from fmcore.model_field import ModelField
from fmcore.models import LearnedField, SinusoidalMLP
from fmcore.predictions import PREDICTION_TYPES
from fmcore.solvers import sample

TABLE = DDPMTimesteps.linear()


def _exact_prediction(analytic: AnalyticField, prediction: str, t, x):
    """The analytic field's answer in ``prediction`` form at our (t, x); v from its definition ᾱε − σ̄x₁."""
    if prediction == "velocity":
        return analytic(t, x)
    if prediction == "epsilon":
        return analytic.noise_prediction(t, x)
    if prediction == "x0":
        return analytic.data_prediction(t, x)
    values = analytic.schedule(t)
    scale = math.hypot(float(values.alpha), float(values.sigma))
    return (float(values.alpha) * analytic.noise_prediction(t, x) - float(values.sigma) * analytic.data_prediction(t, x)) / scale


def _our_point(schedule, snr: float, x_model, coordinates: str):
    """Our time of SNR ``snr`` and the point there for the model's input ``x_model`` in its coordinates."""
    t = float(schedule.t_from_snr(snr))
    values = schedule(t)
    alpha, sigma = float(values.alpha), float(values.sigma)
    scale = math.hypot(alpha, sigma) if coordinates == "vp" else alpha if coordinates == "edm" else 1.0
    return t, x_model * scale


class ExactModel(nn.Module):
    """The analytic field written as a network of ``prediction`` type called in ``convention`` ("path", "ddpm", "edm")."""

    def __init__(self, analytic: AnalyticField, prediction: str, convention: str):
        super().__init__()
        self.analytic, self.prediction, self.convention = analytic, prediction, convention
        self.anchor = nn.Parameter(torch.zeros(1, dtype=torch.float64))  # gives the module a dtype
        log_snr = 0.5 * (np.log(TABLE.alphas_cumprod.numpy()) - np.log1p(-TABLE.alphas_cumprod.numpy()))
        self.log_snr = log_snr

    def forward(self, time, x):
        time = float(time)
        if self.convention == "path":
            return _exact_prediction(self.analytic, self.prediction, time, x)
        if self.convention == "ddpm":  # fractional timestep → log SNR, linear between the table's integer entries
            snr = math.exp(np.interp(time, np.arange(len(self.log_snr)), self.log_snr))
            t, ours = _our_point(self.analytic.schedule, snr, x, "vp")
        else:  # EDM: time is σ̃ = 1/snr and x = x̃
            t, ours = _our_point(self.analytic.schedule, 1.0 / time, x, "edm")
        return _exact_prediction(self.analytic, self.prediction, t, ours)


CONVENTIONS = {"path": PathTime(), "ddpm": TABLE, "edm": NoiseLevel()}


@pytest.mark.parametrize("convention", ["path", "ddpm", "edm"])
@pytest.mark.parametrize("prediction", sorted(PREDICTION_TYPES))
@pytest.mark.parametrize("schedule_name", ["cond_ot", "vp", "cosine"])
def test_every_prediction_in_every_convention_gives_the_analytic_field(schedule_name, prediction, convention):
    target = get_target("gmm", K=3, d=2, seed=1)
    analytic = AnalyticField(target, get_schedule(schedule_name))
    field = ModelField(ExactModel(analytic, prediction, convention), analytic.schedule, prediction,
                       CONVENTIONS[convention])
    x = target.sample(40, generator=torch.Generator().manual_seed(0))
    for t in (0.2, 0.5, 0.8):
        for ours, exact in ((field(t, x), analytic(t, x)), (field.score(t, x), analytic.score(t, x)),
                            (field.data_prediction(t, x), analytic.data_prediction(t, x)),
                            (field.noise_prediction(t, x), analytic.noise_prediction(t, x)),
                            (field.velocity_and_score(t, x)[1], analytic.score(t, x))):
            torch.testing.assert_close(ours, exact, rtol=0, atol=1e-10)


def test_timesteps_interpolate_log_snr_between_the_table_entries():
    log_snr = TABLE.log_snr
    at_entries = TABLE.timestep(log_snr)
    assert torch.equal(at_entries, torch.arange(len(log_snr), dtype=torch.float64))
    middle = TABLE.timestep((log_snr[10] + log_snr[11]) / 2)
    assert float(middle) == pytest.approx(10.5, abs=1e-12)
    assert float(TABLE.timestep(torch.tensor(50.0))) == 0.0 and float(TABLE.timestep(torch.tensor(-50.0))) == 999.0


def test_noise_levels_outside_the_table_are_evaluated_at_its_end():
    target = get_target("seed000")
    analytic = AnalyticField(target, get_schedule("cond_ot"))
    field = ModelField(ExactModel(analytic, "epsilon", "ddpm"), analytic.schedule, "epsilon", TABLE)
    lowest_snr = math.exp(float(TABLE.log_snr[-1]))
    start = float(analytic.schedule.t_from_snr(lowest_snr))
    assert field.clip["noise"][0] == pytest.approx(start, rel=1e-12)  # cond_ot reaches SNR 0 at t = 0; DDPM does not
    x = target.sample(10, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(field(0.0, x), analytic(start, x), rtol=0, atol=1e-10)
    assert torch.isfinite(field.score(1.0, x)).all()


def test_the_dimension_comes_from_the_first_call_and_is_then_fixed():
    field = ModelField(lambda t, x: torch.zeros_like(x), get_schedule("cond_ot"), "velocity")
    assert field.dim is None and field.dtype is None
    field(0.5, torch.zeros(3, 4))
    assert field.dim == 4
    with pytest.raises(ValueError, match="d = 4"):
        field(0.5, torch.zeros(3, 5))


def test_bad_arguments_are_named():
    schedule = get_schedule("cond_ot")
    with pytest.raises(KeyError, match="valid names"):
        ModelField(lambda t, x: x, schedule, "score")
    with pytest.raises(TypeError, match="convention"):
        ModelField(lambda t, x: x, schedule, "epsilon", convention="ddpm")
    with pytest.raises(TypeError, match="callable"):
        ModelField(3, schedule, "epsilon")
    with pytest.raises(ValueError, match="decrease strictly"):
        DDPMTimesteps([0.5, 0.6])
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        DDPMTimesteps([1.0, 0.5])
    with pytest.raises(ValueError, match="sigma_max"):
        NoiseLevel(sigma_max=-1.0)
    with pytest.raises(ValueError, match="one prediction per point"):
        ModelField(lambda t, x: x[:, :1], schedule, "velocity")(0.5, torch.zeros(2, 3))


@pytest.mark.parametrize("make_field", [
    lambda: LearnedField(SinusoidalMLP(2, width=16, depth=2), get_schedule("cond_ot"), "cfm"),
    lambda: ModelField(SinusoidalMLP(2, width=16, depth=2), get_schedule("vp"), "epsilon", DDPMTimesteps.linear()),
])
@pytest.mark.parametrize("method", ["euler", "dpmpp_2m"])
def test_a_network_is_sampled_without_autograd(make_field, method):
    field = make_field()
    x0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning of any kind
        result = sample(field, x0, method, steps=4)
    assert result.x.grad_fn is None and not result.x.requires_grad
    differentiable = sample(field, x0, method, steps=4, enable_grad=True)
    assert differentiable.x.requires_grad  # asked for: the graph through the network's parameters is there
    differentiable.x.sum().backward()
    assert next(field.model.parameters()).grad is not None
