"""Speed target: batched closed-form velocity vs autograd through ``MixtureSameFamily``.

n = 100 000 points, d = 16, K = 16 full covariances, CPU float32, t = 0.5 on ``cond_ot``. The baseline is
the score a user would otherwise write — autograd of ``MixtureSameFamily(..., MultivariateNormal).log_prob``
at the exact marginal — followed by the same score→velocity conversion (``fmcore.conversions``).
"""

from __future__ import annotations

import pytest
import torch
from fmbench.timing import interleaved_medians

from fmcore import AnalyticField, get_schedule, get_target
from fmcore.conversions import velocity_from_score

N, D, K, T = 100_000, 16, 16, 0.5


def _setup(dtype=torch.float32):
    target = get_target("gmm", K=K, d=D, seed=0)
    schedule = get_schedule("cond_ot")
    field = AnalyticField(target, schedule)
    x = target.marginal(T, schedule).sample(N, generator=torch.Generator().manual_seed(0)).to(dtype)
    return target, schedule, field, x


def autograd_velocity(target, schedule, t, x):
    """What a user would write without closed forms: autograd score of torch.distributions, then convert."""
    values = schedule(torch.tensor(t, dtype=x.dtype))
    marginal = target.marginal(t, schedule)
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=marginal.weights.to(x.dtype)),
        torch.distributions.MultivariateNormal(
            marginal.means.to(x.dtype), covariance_matrix=marginal.covariances.to(x.dtype)
        ),
    )
    x = x.detach().requires_grad_(True)
    score = torch.autograd.grad(mixture.log_prob(x).sum(), x)[0]
    return velocity_from_score(values, x.detach(), score)


SIZE = {"n": 100_000, "d": 16, "K": 16, "dtype": "float32"}


def _agreement() -> float:
    """Max |closed form − autograd| on 2000 float64 points: what the speed is bought with."""
    target, schedule, field, x = _setup(torch.float64)
    x = x[:2000]
    return float((field(T, x) - autograd_velocity(target, schedule, T, x)).abs().max())


def test_closed_form_agrees_with_baseline(benchmark):
    difference = benchmark.pedantic(_agreement, rounds=1, iterations=1)
    benchmark.extra_info.update(max_abs_difference_vs_autograd=difference, n=2000, dtype="float64")
    assert difference < 1e-8


@pytest.mark.benchmark(group="velocity n=1e5 d=16 K=16")
def test_closed_form_velocity(benchmark):
    _, _, field, x = _setup()
    benchmark.extra_info.update(SIZE)
    benchmark.pedantic(field, args=(T, x), rounds=5, warmup_rounds=1)


@pytest.mark.benchmark(group="velocity n=1e5 d=16 K=16")
def test_autograd_mixture_velocity(benchmark):
    target, schedule, _, x = _setup()
    benchmark.extra_info.update(SIZE)
    benchmark.pedantic(autograd_velocity, args=(target, schedule, T, x), rounds=3, warmup_rounds=1)


def test_closed_form_is_ten_times_faster(benchmark):
    """Side by side in one run, median of repeats, alternating so that machine noise hits both alike."""
    target, schedule, field, x = _setup()
    timings = interleaved_medians(
        {"closed_form": lambda: field(T, x), "autograd": lambda: autograd_velocity(target, schedule, T, x)}, repeats=7
    )
    ours, baseline = timings["closed_form"], timings["autograd"]
    ratio = baseline.median_s / ours.median_s
    benchmark.pedantic(field, args=(T, x), rounds=3, iterations=1)
    benchmark.extra_info.update(SIZE, speedup_over_autograd=ratio, target_speedup=10.0,
                                closed_form_median_s=ours.median_s, autograd_median_s=baseline.median_s)
    print(
        f"\nclosed-form velocity: {ours.median_s * 1e3:.1f} ms/call; autograd MixtureSameFamily: "
        f"{baseline.median_s * 1e3:.1f} ms/call; speed-up {ratio:.1f}x (torch threads: {torch.get_num_threads()})"
    )
    assert ratio >= 10.0
