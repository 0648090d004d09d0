"""The speed race as a benchmark suite: ours against every installed peer, same model (seed 000's network), same
method and NFE, n = 1, 16, 256, 4096 (65 536 marked slow), float32, one torch thread, CPU and CUDA (skipped
without a device).

Each test times every contender side by side (interleaved rounds, fmbench.timing) and stores the medians, the
fastest peer's time ÷ ours and each peer's max |output − ours| in the benchmark's ``extra_info``; the benchmark
itself times ours. It asserts what must hold on any machine — the peers compute what ours computes — and records
the ratios against the issue's goals (ours ≥ 1.5× the fastest peer at n ≤ 256, never slower), which a timing
assert on a shared machine could not hold steadily. ``python bench/scripts/speed_race.py`` writes the table.
"""

from __future__ import annotations

import pytest
import torch
from fmbench.speed_race import RACES, STEPS, bare_call_seconds, race_field, race_noise, race_row

from fmcore.solvers import sample

SIZES = [1, 16, 256, 4096, pytest.param(65536, marks=pytest.mark.slow)]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]
AGREEMENT = {"euler": 1e-6, "midpoint": 1e-6, "rk38": 1e-5, "rk4": 1e-3}  # rk4: torchdyn's stage times (README)


@pytest.fixture
def one_thread():
    """The race runs at one torch thread, as ``bench/scripts/speed_race.py`` does (the harness's default)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("method", list(RACES))
def test_speed_race(benchmark, one_thread, method, n, device):
    field, x0 = race_field(device), race_noise(n, device)
    with torch.no_grad():
        bare = bare_call_seconds(field, x0, repeats=15)
    row = race_row(method, field, x0, repeats=7 if n < 65536 else 3, bare=bare)
    benchmark.group = f"speed race {method} {device}"
    benchmark.extra_info.update({key: value for key, value in row.items() if key != "method"}, steps=STEPS,
                                goal_fastest_peer_over_ours=1.5 if n <= 256 else 1.0)
    with torch.no_grad():
        benchmark.pedantic(sample, args=(field, x0, method), kwargs={"steps": STEPS}, rounds=3, iterations=1)
    for key, value in row.items():
        if key.endswith("max|Δ|"):
            assert value < AGREEMENT[method], f"{key} = {value}"
    print(f"\n{method} n={n} {device}: ours {row['ours ms']:.3g} ms, fastest peer ({row['fastest peer']}) / ours "
          f"= {row['fastest peer / ours']:.3f}, overhead {row['overhead (÷ NFE × bare call)']:.2f}")
