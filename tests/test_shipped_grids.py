"""The grids pipelines ship — SD3's time shift (and FLUX.1's resolution-dependent one), Align Your Steps — against their
published definitions, on every path through its SNR."""

import math

import numpy as np
import pytest
import torch

from fmcore import get_schedule
from fmcore.grids import AYS_SIGMAS, get_grid

SCHEDULES = ["cond_ot", "vp", "cosine"]


def _rectified_flow_level(schedule, grid):
    """σ_rf = σ/(α + σ) = 1/(1 + SNR) at each grid time."""
    values = schedule(grid)
    return values.sigma / (values.alpha + values.sigma)


def test_sd3_shift_of_one_on_cond_ot_is_the_uniform_grid():
    schedule = get_schedule("cond_ot")
    torch.testing.assert_close(get_grid("sd3_shift", 12, schedule, shift=1.0), get_grid("uniform", 12), rtol=0, atol=1e-12)


@pytest.mark.parametrize("schedule_name", SCHEDULES + ["ve"])
@pytest.mark.parametrize("shift", [1.0, 3.0, 0.5])
def test_sd3_shift_is_the_published_map_of_uniform_rectified_flow_levels(schedule_name, shift):
    """s' = shift·s/(1 + (shift − 1)s) of s uniform between the levels the shift maps onto the path's ends, read back at
    the grid's times: from 1 to 0 (SD3's own grid) where the path runs from pure noise to data; a ve path keeps σ_max
    and σ_min as its ends."""
    schedule = get_schedule(schedule_name)
    grid = get_grid("sd3_shift", 10, schedule, shift=shift)
    start, end = _rectified_flow_level(schedule, torch.tensor([0.0, 1.0], dtype=torch.float64)).tolist()
    unshift = lambda level: level / (shift - (shift - 1) * level)  # noqa: E731, the inverse of the shift
    uniform = np.linspace(unshift(start), unshift(end), 11)
    expected = shift * uniform / (1 + (shift - 1) * uniform)
    got = _rectified_flow_level(schedule, grid).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-15)
    assert grid[0] == 0.0 and grid[-1] == 1.0


def test_sd3_shift_on_a_path_from_pure_noise_is_sd3s_grid():
    """On cond_ot the rectified-flow level is 1 − t itself: the grid is 1 − s' of SD3's linspace(1, 0) levels."""
    schedule = get_schedule("cond_ot")
    levels = np.linspace(1, 0, 9)
    np.testing.assert_allclose(get_grid("sd3_shift", 8, schedule, shift=3.0).numpy(), 1 - 3 * levels / (1 + 2 * levels),
                               rtol=0, atol=1e-12)


def test_flux_dynamic_shift_follows_the_token_count():
    schedule = get_schedule("cond_ot")
    for tokens, log_shift in ((256, 0.5), (4096, 1.15), (1024, 0.5 + 0.65 * 768 / 3840)):
        torch.testing.assert_close(get_grid("sd3_shift", 8, schedule, image_seq_len=tokens),
                                   get_grid("sd3_shift", 8, schedule, shift=math.exp(log_shift)), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="not both"):
        get_grid("sd3_shift", 8, schedule, shift=2.0, image_seq_len=1024)


@pytest.mark.parametrize("schedule_name", SCHEDULES)
@pytest.mark.parametrize("model", sorted(AYS_SIGMAS))
def test_ays_at_ten_steps_is_the_published_levels(schedule_name, model):
    schedule = get_schedule(schedule_name)
    grid = get_grid("ays", 10, schedule, model=model)
    values = schedule(grid)
    np.testing.assert_allclose((values.sigma / values.alpha)[:-1].numpy(), AYS_SIGMAS[model][:-1], rtol=1e-9)
    assert grid[-1] == 1.0  # the last level replaced by 0, as the how-to and ComfyUI do


@pytest.mark.parametrize("steps", [5, 20, 32])
def test_ays_at_other_step_counts_interpolates_log_sigma(steps):
    """The authors' loglinear_interp: log σ of the 11 levels on an even spacing, read at steps + 1 even points."""
    schedule = get_schedule("vp")
    published = np.array(AYS_SIGMAS["sd15"])
    expected = np.exp(np.interp(np.linspace(0, 1, steps + 1), np.linspace(0, 1, 11), np.log(published)))
    grid = get_grid("ays", steps, schedule)
    values = schedule(grid)
    np.testing.assert_allclose((values.sigma / values.alpha)[:-1].numpy(), expected[:-1], rtol=1e-9)


def test_ays_names_its_models_and_refuses_what_does_not_fit():
    with pytest.raises(ValueError, match="sd15"):
        get_grid("ays", 10, get_schedule("vp"), model="sd3")
    with pytest.raises(ValueError, match="do not fit"):  # 14.6 … 0.029 on a path with noise levels 5 … 0.05
        get_grid("ays", 10, get_schedule("ve", sigma_min=0.05, sigma_max=5.0))
