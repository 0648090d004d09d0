"""Time grids: shapes, ends, the defining property of each, and bad input."""

import math

import pytest
import torch

from fmcore import get_schedule
from fmcore.grids import AYS_SIGMAS, GRIDS, get_grid


@pytest.mark.parametrize("name", sorted(set(GRIDS) - {"optimal"}))  # it needs method=: tests/test_optimal_grids.py
@pytest.mark.parametrize("steps", [1 + 1, 5, 40])
def test_grids_are_increasing_with_steps_intervals_and_end_at_one(name, steps, any_schedule):
    if name == "ays" and float(any_schedule.snr(torch.tensor(0.0))) > 1 / max(AYS_SIGMAS["sd15"]):
        pytest.skip("Align Your Steps' published levels start at 14.6: this path's noise starts below them "
                    "(refused with the reason: tests/test_shipped_grids.py)")
    grid = get_grid(name, steps, any_schedule)
    assert grid.dtype == torch.float64 and grid.shape == (steps + 1,)
    assert bool((grid[1:] > grid[:-1]).all())
    assert float(grid[-1]) == 1.0 and 0.0 <= float(grid[0]) < 1.0


def test_uniform_and_cosine_grids_by_formula():
    torch.testing.assert_close(get_grid("uniform", 4), torch.tensor([0, 0.25, 0.5, 0.75, 1], dtype=torch.float64))
    cosine = get_grid("cosine", 4)
    expected = torch.tensor([(1 - math.cos(math.pi * i / 4)) / 2 for i in range(5)], dtype=torch.float64)
    torch.testing.assert_close(cosine, expected)
    torch.testing.assert_close(get_grid("uniform", 2, t0=0.5), torch.tensor([0.5, 0.75, 1.0], dtype=torch.float64))


def test_karras_grid_follows_the_rho_formula_in_noise_level():
    # VE on EDM's own range: the noise level is σ itself, from 80 at t = 0 to 0.002 at t = 1, no clipping.
    schedule = get_schedule("ve", sigma_min=0.002, sigma_max=80.0)
    grid = get_grid("karras", 10, schedule, rho=7.0)
    values = schedule(grid)
    i = torch.arange(11, dtype=torch.float64) / 10
    expected = (80 ** (1 / 7) + i * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    torch.testing.assert_close(values.sigma / values.alpha, expected, rtol=1e-10, atol=0)
    assert (float(grid[0]), float(grid[-1])) == (0.0, 1.0)
    # cosine reaches σ = 0 at t = 1: the ρ-grid stops at 0.002 and one last step goes to t = 1.
    cosine = get_schedule("cosine")
    grid = get_grid("karras", 10, cosine, rho=7.0)
    values = cosine(grid[:-1])
    i = torch.arange(10, dtype=torch.float64) / 9
    expected = (80 ** (1 / 7) + i * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    torch.testing.assert_close(values.sigma / values.alpha, expected, rtol=1e-10, atol=0)
    assert float(grid[-1]) == 1.0


def test_karras_grid_on_cond_ot_clips_the_start_and_records_it():
    schedule = get_schedule("cond_ot")
    grid = get_grid("karras", 16, schedule)
    assert float(grid[0]) == pytest.approx(1 / 81)  # σ/α = 80 ⇔ (1 − t)/t = 80
    values = schedule(grid[-2])
    assert float(values.sigma / values.alpha) == pytest.approx(0.002)


def test_logsnr_grid_is_uniform_in_log_snr():
    schedule = get_schedule("cosine")
    grid = get_grid("logsnr", 12, schedule)
    log_snr = torch.log(schedule.snr(grid[:-1]))
    spacing = log_snr[1:] - log_snr[:-1]
    torch.testing.assert_close(spacing, torch.full_like(spacing, float(spacing.mean())), rtol=1e-9, atol=0)


def test_vp_logsnr_grid_starts_at_zero_when_the_schedule_is_in_range():
    schedule = get_schedule("vp")  # σ/α at t = 0 is 152 > 80: clipped by default, exact when sigma_max allows
    assert float(get_grid("logsnr", 8, schedule)[0]) > 0
    assert float(get_grid("logsnr", 8, schedule, sigma_max=1e3)[0]) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    "call, error, fragment",
    [
        (lambda: get_grid("linear", 4), KeyError, "uniform"),
        (lambda: get_grid("uniform", 0), ValueError, "steps must be"),
        (lambda: get_grid("uniform", 4, t0=0.7, t1=0.2), ValueError, "t0 < t1"),
        (lambda: get_grid("uniform", 4, t1=1.2), ValueError, "t1 must"),
        (lambda: get_grid("karras", 4), ValueError, "needs a schedule"),
        (lambda: get_grid("karras", 4, get_schedule("cosine"), rho=-1.0), ValueError, "rho must be"),
        (lambda: get_grid("karras", 4, get_schedule("ve"), sigma_min=100.0, sigma_max=200.0), ValueError, "empty"),
        (lambda: get_grid("uniform", 4, bogus=3), TypeError, "takes no parameter"),
    ],
)
def test_bad_grid_requests(call, error, fragment):
    with pytest.raises(error, match=fragment):
        call()
