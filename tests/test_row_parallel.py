"""Row blocks on single-threaded workers (fmcore._row_parallel): same answer as in the calling thread, torch's
thread settings left as they were, errors raised in the caller, autograd kept in the calling thread."""

from __future__ import annotations

import threading

import pytest
import torch

from fmcore import AnalyticField, get_schedule, get_target
from fmcore._row_parallel import map_blocks


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_workers_give_the_serial_answer_bit_for_bit(two_threads):
    target = get_target("gmm", K=4, d=3, seed=1)
    target.cpu_chunk_elements = 48  # 4 points a chunk: many blocks
    field = AnalyticField(target, get_schedule("cond_ot"))
    x = torch.randn(203, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pooled = field(0.5, x)
    torch.set_num_threads(1)  # one thread: the blocks run in this thread
    assert torch.equal(pooled, field(0.5, x))


def test_workers_are_single_threaded_and_leave_the_default_alone(two_threads):
    counts = map_blocks(lambda block: torch.get_num_threads(), 6)
    assert counts == [1] * 6
    assert torch.get_num_threads() == 2
    seen = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert seen == [2]  # a thread started afterwards gets the process default, not the workers' 1


def test_a_failing_block_raises_in_the_caller(two_threads):
    def compute(block: int) -> int:
        if block == 3:
            raise ValueError("block 3 failed")
        return block

    with pytest.raises(ValueError, match="block 3 failed"):
        map_blocks(compute, 5)


def test_autograd_runs_in_the_calling_thread(two_threads):
    target = get_target("gmm", K=3, d=2, seed=0)
    target.cpu_chunk_elements = 12
    schedule = get_schedule("cond_ot")
    x = torch.randn(40, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    log_density = target.marginal_log_prob(0.5, x, schedule)
    (gradient,) = torch.autograd.grad(log_density.sum(), x)
    assert torch.allclose(gradient, target.score(0.5, x.detach(), schedule), rtol=1e-10, atol=1e-12)


CLOSED_FORMS = ["marginal_log_prob", "score", "noise_prediction", "data_prediction", "velocity", "velocity_and_score",
                "velocity_divergence", "velocity_and_divergence"]


@pytest.mark.parametrize("form", CLOSED_FORMS)
@pytest.mark.parametrize(("name", "params"), [("gmm", {"K": 4, "d": 3, "seed": 2}),
                                              ("image_mixture", {"K": 3, "shape": (1, 2, 2), "seed": 1})])
@pytest.mark.parametrize("per_point_times", [False, True])
def test_a_closed_form_in_chunks_is_the_closed_form_at_once(form, name, params, per_point_times):
    """Each closed form does its per-time work once and a per-chunk part per chunk of points: cut into chunks of
    4 points (per-component bases and a shared one; one time or a time per point), it equals the closed form over
    all 203 points in one chunk to float64 round-off."""
    target, schedule = get_target(name, **params), get_schedule("cosine")
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(203, target.dim, generator=generator, dtype=torch.float64)
    t = torch.rand(203, generator=generator, dtype=torch.float64) * 0.9 if per_point_times else 0.6
    target.cpu_chunk_elements = 10**9
    whole = getattr(target, form)(t, x, schedule)
    target.cpu_chunk_elements = 4 * target.num_components * target.dim
    chunked = getattr(target, form)(t, x, schedule)
    for at_once, in_chunks in zip(whole if isinstance(whole, tuple) else (whole,),
                                  chunked if isinstance(chunked, tuple) else (chunked,), strict=True):
        torch.testing.assert_close(in_chunks, at_once, rtol=1e-12, atol=1e-12)
