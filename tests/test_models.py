"""Learned models: conversions wired right, deterministic training, the checkpoint cache, the exact FM loss."""

import json
import math

import pytest
import torch
from torch import nn

from fmcore import AnalyticField, get_schedule, get_target
from fmcore.models import (
    LearnedField,
    SinusoidalMLP,
    TrainingDivergedError,
    exact_fm_loss,
    train_model,
)
from fmcore.solvers import get_diffusion, sample


class _Oracle(nn.Module):
    """A "network" that returns the analytic target's exact prediction for an objective (float64)."""

    def __init__(self, field: AnalyticField, objective: str):
        super().__init__()
        self.field, self.objective, self.dim = field, objective, field.dim
        self.anchor = nn.Parameter(torch.zeros(1, dtype=torch.float64))  # gives the module a dtype

    def forward(self, t, x):
        method = {"cfm": self.field, "dsm": self.field.noise_prediction, "x1": self.field.data_prediction}[self.objective]
        return method(t, x)


@pytest.mark.parametrize("objective", ["cfm", "dsm", "x1"])
@pytest.mark.parametrize("schedule_name", ["cond_ot", "vp", "cosine"])
def test_conversions_recover_velocity_and_score_from_each_parameterisation(objective, schedule_name):
    target = get_target("gmm", K=3, d=2, seed=1)
    analytic = AnalyticField(target, get_schedule(schedule_name))
    field = LearnedField(_Oracle(analytic, objective), analytic.schedule, objective)
    x = target.sample(50, generator=torch.Generator().manual_seed(0))
    for t in (0.05, 0.5, 0.95):
        torch.testing.assert_close(field(t, x), analytic(t, x), rtol=1e-8, atol=1e-8)
        torch.testing.assert_close(field.score(t, x), analytic.score(t, x), rtol=1e-8, atol=1e-8)
        velocity, score = field.velocity_and_score(t, x)
        torch.testing.assert_close(velocity, analytic(t, x), rtol=1e-8, atol=1e-8)
        torch.testing.assert_close(score, analytic.score(t, x), rtol=1e-8, atol=1e-8)


def test_singular_ends_are_clipped_and_finite():
    target = get_target("seed000")
    analytic = AnalyticField(target, get_schedule("cond_ot"))
    x = target.sample(20, generator=torch.Generator().manual_seed(0))
    for objective in ("cfm", "dsm", "x1"):
        field = LearnedField(_Oracle(analytic, objective), analytic.schedule, objective, t_eps=1e-3)
        for t in (0.0, 1.0):
            assert torch.isfinite(field(t, x)).all() and torch.isfinite(field.score(t, x)).all()
    dsm = LearnedField(_Oracle(analytic, "dsm"), analytic.schedule, "dsm", t_eps=1e-3)
    assert dsm.clip["velocity"] == (1e-3, 1.0)  # divides by α, zero at t = 0 on cond_ot
    torch.testing.assert_close(dsm(0.0, x), analytic(1e-3, x), rtol=1e-8, atol=1e-8)


def test_training_is_deterministic():
    target, schedule = get_target("seed000"), get_schedule("cond_ot")
    first = train_model(target, schedule, "cfm", seed=3, steps=25, cache_dir=False, progress=False)
    second = train_model(target, schedule, "cfm", seed=3, steps=25, cache_dir=False, progress=False)
    other = train_model(target, schedule, "cfm", seed=4, steps=25, cache_dir=False, progress=False)
    for (name, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert not torch.equal(first.model.net[0].weight, other.model.net[0].weight)
    assert first.config["steps_done"] == 25


def test_checkpoint_cache_reuses_detects_corruption_and_mismatch(tmp_path, capsys):
    target, schedule = get_target("seed000"), get_schedule("cond_ot")
    options = {"seed": 0, "steps": 10, "cache_dir": tmp_path, "progress": False}
    trained = train_model(target, schedule, "cfm", **options)
    [directory] = list(tmp_path.iterdir())
    assert (directory / "model.pt").exists() and (directory / "config.json").exists()
    loaded = train_model(target, schedule, "cfm", **options)
    assert torch.equal(loaded.model.net[0].weight, trained.model.net[0].weight)
    # corrupt weights: detected by the checksum, retrained (identically, being seeded)
    (directory / "model.pt").write_bytes(b"not a checkpoint")
    retrained = train_model(target, schedule, "cfm", **options)
    assert "corrupt" in capsys.readouterr().err
    assert torch.equal(retrained.model.net[0].weight, trained.model.net[0].weight)
    # a config that does not match the request: detected and retrained, never used
    record = json.loads((directory / "config.json").read_text())
    record["config"]["learning_rate"] = 1.0
    (directory / "config.json").write_text(json.dumps(record))
    train_model(target, schedule, "cfm", **options)
    assert "another config" in capsys.readouterr().err


def test_non_finite_loss_stops_with_the_step_and_last_loss():
    target, schedule = get_target("seed000"), get_schedule("cond_ot")
    with pytest.raises(TrainingDivergedError) as caught:
        train_model(target, schedule, "cfm", steps=50, learning_rate=1e30, cache_dir=False, progress=False)
    assert caught.value.step >= 1 and math.isfinite(caught.value.last_finite_loss)


def test_exact_fm_loss_is_cfm_loss_minus_a_constant():
    r"""E‖v − u‖² = E‖v − u_cond‖² − (E‖u_cond‖² − E‖u‖²) (seeds 001/003/004), checked by Monte Carlo on the same
    draws, with a tolerance of 5 standard errors of the per-sample difference."""
    target, schedule = get_target("seed000"), get_schedule("cond_ot")
    analytic = AnalyticField(target, schedule)
    field = train_model(target, schedule, "cfm", seed=0, steps=40, cache_dir=False, progress=False)
    generator = torch.Generator().manual_seed(0)
    n = 100_000
    t = torch.rand(n, dtype=torch.float64, generator=generator)
    x1 = target.sample(n, generator=generator)
    noise = torch.randn(n, 3, dtype=torch.float64, generator=generator)
    values = schedule.values(t)
    x = values.alpha[:, None] * x1 + values.sigma[:, None] * noise
    conditional = values.d_alpha[:, None] * x1 + values.d_sigma[:, None] * noise
    with torch.no_grad():
        model = field(t.float(), x.float()).double()
    marginal = analytic(t, x)
    exact_loss = ((model - marginal) ** 2).sum(1)
    cfm_loss = ((model - conditional) ** 2).sum(1)
    constant = (conditional**2).sum(1) - (marginal**2).sum(1)
    difference = exact_loss - (cfm_loss - constant)  # zero in expectation, not per sample
    assert abs(float(difference.mean())) <= 5 * float(difference.std()) / math.sqrt(n)
    # and the binned estimator agrees with the direct one within its own noise
    binned = exact_fm_loss(field, analytic, n=20_000, time_bins=10, generator=1)
    assert binned.velocity == pytest.approx(float(exact_loss.mean()), rel=0.05)
    assert len(binned.velocity_per_bin) == 10 and all(v >= 0 for v in binned.velocity_per_bin)


def test_exact_fm_loss_of_the_truth_is_zero():
    target = get_target("seed000")
    analytic = AnalyticField(target, get_schedule("cosine"))
    oracle = LearnedField(_Oracle(analytic, "cfm"), analytic.schedule, "cfm")
    loss = exact_fm_loss(oracle, analytic, n=500, time_bins=4, generator=0)
    assert loss.velocity == pytest.approx(0.0, abs=1e-20)
    # through the velocity→score conversion: exact to round-off where it is not clipped ...
    assert max(loss.score_per_bin[:3]) < 1e-25
    # ... and in the last bin, for t > 1 − 1e-3, the score is taken at 1 − 1e-3 (σ_1 = 0 on cosine): a small,
    # non-zero error confined to that sliver
    assert 0 < loss.score_per_bin[3] < 1e-8


def test_learned_fields_drive_every_sampler():
    target, schedule = get_target("seed000"), get_schedule("cond_ot")
    field = train_model(target, schedule, "dsm", seed=0, steps=5, cache_dir=False, progress=False)
    x0 = torch.randn(16, 3)
    assert sample(field, x0, "rk4", steps=4).x.shape == (16, 3)
    assert sample(field, x0, "dopri5", rtol=1e-3, atol=1e-3).x.dtype == torch.float32
    em = sample(field, x0, "euler_maruyama", steps=4, diffusion=get_diffusion("constant", c=1.0), generator=0)
    assert em.nfe == 4  # one network pass gives both velocity and score


@pytest.mark.parametrize(
    "call, error, fragment",
    [
        (lambda: train_model(get_target("seed000"), get_schedule("cond_ot"), "ddpm", steps=1), KeyError, "objective"),
        (lambda: train_model(get_target("seed000"), "cond_ot", steps=1), TypeError, "schedule must be"),
        (lambda: train_model(get_target("seed000"), get_schedule("cond_ot")), ValueError, "budget"),
        (lambda: train_model(get_target("seed000"), get_schedule("cond_ot"), steps=0), ValueError, "steps must be"),
        (lambda: train_model(get_target("seed000"), get_schedule("cond_ot"), steps=1, heads=4), ValueError, "architecture"),
        (lambda: get_schedule("rectified"), KeyError, "cond_ot"),
        (lambda: SinusoidalMLP(3, time_embedding=3), ValueError, "even time_embedding"),
    ],
)
def test_bad_requests(call, error, fragment):
    with pytest.raises(error, match=fragment):
        call()


def test_model_output_shape_must_match():
    class Wrong(nn.Module):
        dim = 3

        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(3, 2)

        def forward(self, t, x):
            return self.layer(x)

    field = LearnedField(Wrong(), get_schedule("cond_ot"), "cfm")
    with pytest.raises(ValueError, match="returned shape \\(4, 2\\)"):
        field(0.5, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="dtype torch.float64"):
        field(0.5, torch.zeros(4, 3, dtype=torch.float64))


def test_cached_only_loads_or_refuses_never_trains(tmp_path):
    target, schedule = get_target("seed000"), get_schedule("cond_ot")
    with pytest.raises(FileNotFoundError, match="no cached model"):
        train_model(target, schedule, steps=3, cache_dir=tmp_path, cached_only=True, progress=False)
    trained = train_model(target, schedule, steps=3, cache_dir=tmp_path, progress=False)
    loaded = train_model(target, schedule, steps=3, cache_dir=tmp_path, cached_only=True, progress=False)
    for a, b in zip(trained.model.parameters(), loaded.model.parameters(), strict=True):
        assert torch.equal(a, b)
