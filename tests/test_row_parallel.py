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
