"""AnalyticField: the interface samplers take; finiteness at the ends of the path."""

import pytest
import torch

from fmcore import AnalyticField, get_schedule, get_target


@pytest.mark.parametrize("target_name", ["seed000", "gaussian", "gmm", "eight_gaussians"])
@pytest.mark.parametrize("t", [0.0, 1.0])
def test_fields_are_finite_at_both_ends(target_name, t, any_schedule):
    target = get_target(target_name)
    field = AnalyticField(target, any_schedule)
    x = target.sample(64, generator=torch.Generator().manual_seed(0)) * 2
    for dtype in (torch.float64, torch.float32):
        xd = x.to(dtype)
        outputs = [field(t, xd), field.score(t, xd), field.divergence(t, xd), *field.velocity_and_score(t, xd)]
        for output in outputs:
            assert torch.isfinite(output).all(), (target_name, any_schedule, t, dtype)


def test_field_is_infinite_where_the_schedule_is_and_says_so():
    # poly(n = 0.5): α̇ = n t^(n-1) is infinite at t = 0, so the velocity is too.
    field = AnalyticField(get_target("seed000"), get_schedule("poly", n=0.5))
    x = torch.zeros(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="velocity is infinite"):
        field(0.0, x)
    with pytest.raises(ValueError, match="velocity is infinite"):
        field.divergence(torch.tensor([0.5, 0.0, 0.2, 0.3], dtype=torch.float64), x)
    assert torch.isfinite(field(0.01, x)).all()
    assert torch.isfinite(field.score(0.0, x)).all()  # the score itself is finite there


def test_field_interface():
    target, schedule = get_target("gmm", K=3, d=5), get_schedule("cosine")
    field = AnalyticField(target, schedule)
    assert field.dim == 5 and field.target is target and field.schedule is schedule
    x = target.sample(7)
    velocity, score = field.velocity_and_score(0.4, x)
    assert torch.equal(velocity, field(0.4, x))
    assert torch.equal(score, field.score(0.4, x))
    joint_velocity, divergence = field.velocity_and_divergence(0.4, x)
    assert torch.equal(joint_velocity, velocity) and torch.equal(divergence, field.divergence(0.4, x))
    for t in (0.4, torch.tensor(0.4, dtype=torch.float64), torch.full((7,), 0.4, dtype=torch.float64)):
        torch.testing.assert_close(field(t, x), velocity, rtol=1e-14, atol=1e-14)


def test_field_rejects_wrong_inputs():
    with pytest.raises(TypeError, match="target must be"):
        AnalyticField("seed000", get_schedule("cosine"))
    with pytest.raises(TypeError, match="schedule must be"):
        AnalyticField(get_target("seed000"), "cosine")
