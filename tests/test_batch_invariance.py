"""Batch and seed invariance (``results/batch_invariance.md``): a fixed-grid deterministic sampler's output for a start
does not depend on the rest of its batch, bit for bit; every sampler gives the same output for the same seed; and
where invariance fails, it fails as measured — the stochastic samplers draw each step's increments for the whole
batch from one generator, so a row's noise depends on its batch, and an adaptive solver's steps follow the error
norm of the whole batch."""

from __future__ import annotations

import pytest
import torch

from fmcore import AnalyticField, get_schedule, get_target
from fmcore.solvers import METHODS, get_method, sample

FIELD = AnalyticField(get_target("gmm", K=3, d=2), get_schedule("cosine"))
X0 = torch.randn(32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
NATIVE = sorted(name for name, method in METHODS.items()
                if not method.diffusion and not method.requires and not name.startswith(("peer:", "user:", "pg_")))


def _run(name: str, x0: torch.Tensor) -> torch.Tensor:
    method = get_method(name)
    options = {"steps": 8} if method.takes_steps else {}
    if method.draws_noise():
        options["generator"] = 5
    return sample(FIELD, x0, name, **options).x


@pytest.mark.parametrize("name", NATIVE)
def test_the_same_seed_gives_the_same_output(name):
    assert torch.equal(_run(name, X0), _run(name, X0))


@pytest.mark.parametrize("name", [name for name in NATIVE if get_method(name).takes_steps
                                  and not get_method(name).draws_noise()])
def test_a_deterministic_fixed_grid_sampler_does_not_see_its_batch(name):
    full = _run(name, X0)
    assert torch.equal(full[:8], _run(name, X0[:8]))
    assert torch.equal(full, _run(name, X0.flip(0)).flip(0))


def test_where_invariance_fails_it_fails_as_measured():
    """A stochastic sampler's row 0 changes entirely with its batch (its increments are the batch's first rows of one
    draw per step); dopri5's changes by about its tolerance (its steps are chosen for the whole batch)."""
    noisy = _run("euler_ancestral", X0)
    assert float((noisy[:8] - _run("euler_ancestral", X0[:8])).abs().max()) > 0.1
    adaptive = _run("dopri5", X0)
    difference = float((adaptive[:8] - _run("dopri5", X0[:8])).abs().max())
    assert 0.0 < difference < 1e-4
