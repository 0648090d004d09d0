"""Slow checks (``tox -e slow``): the learned-model acceptance criterion, end to end."""

import numpy as np
import pytest
import torch

from fmcore import get_schedule, get_target
from fmcore.metrics import w2_exact, w2_floor
from fmcore.models import train_model
from fmcore.solvers import sample


@pytest.mark.slow
def test_seed000_model_trained_for_90_seconds_samples_within_twice_the_floor():
    """Five dopri5 runs (n = 2000, each its own x₀ and its own fresh target sample) against five floor pairs:
    for an exact sampler the two means agree in expectation; the model must stay within 2×."""
    target, schedule = get_target("seed000"), get_schedule("cond_ot")
    field = train_model(target, schedule, "cfm", seed=0, budget_s=90, progress=False)
    n = 2000
    floor = np.mean([w2_floor(target, n, "exact", generator=100 + r) for r in range(5)])
    distances = []
    for seed in range(7, 12):
        x0 = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            x = sample(field, x0, "dopri5", rtol=1e-5, atol=1e-5).x
        distances.append(w2_exact(x, target.sample(n, generator=torch.Generator().manual_seed(1000 + seed))))
    assert np.mean(distances) <= 2 * floor, (np.mean(distances), floor)
