"""Peer adapters: each peer's sampler against ours for the same method, and the findings about where they differ.
Each test skips, with the reason, when its peer is not installed (tox installs them: ``fmbench install-peers``)."""

from __future__ import annotations

import os
import types
from importlib import metadata

import pytest
import torch
from fmbench.cells import CellSpec, run_cell
from fmbench.peers import PEER_VERSIONS, PeerUnavailable, k_diffusion_sampling

from fmcore import AnalyticField, get_schedule, get_target
from fmcore.grids import get_grid
from fmcore.solvers import sample
from fmcore.solvers.diffusion_samplers import edm_start_time
from fmcore.solvers.runge_kutta import rk_step
from fmcore.solvers.tableaus import TABLEAUS

TARGET = get_target("gmm", K=3, d=2)


def _needs(module: str) -> None:
    if module == "k_diffusion":
        try:
            k_diffusion_sampling()
        except PeerUnavailable as error:
            pytest.skip(str(error))
    else:
        pytest.importorskip(module, reason=f"{module} is not installed (fmbench install-peers)")


def _field(schedule_name: str = "cosine"):
    schedule = get_schedule(schedule_name)
    x0 = torch.randn(200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return AnalyticField(TARGET, schedule), x0


# (peer method, our method, peer module, max |difference|): ours and theirs take the same steps to round-off
SAME_METHOD = [
    ("peer:flow_matching/euler", "euler", "flow_matching", 1e-13),
    ("peer:flow_matching/midpoint", "midpoint", "flow_matching", 1e-13),
    ("peer:flow_matching/rk4", "rk38", "flow_matching", 1e-13),  # torchdiffeq's rk4 is the 3/8 rule
    ("peer:torchdyn/euler", "euler", "torchdyn", 1e-13),
    ("peer:torchode/euler", "euler", "torchode", 1e-13),
    ("peer:torchode/heun", "heun", "torchode", 1e-13),
]


@pytest.mark.parametrize(("peer", "ours", "module", "tolerance"), SAME_METHOD)
@pytest.mark.parametrize("schedule_name", ["cond_ot", "cosine"])
def test_ode_peers_take_our_steps(peer, ours, module, tolerance, schedule_name):
    _needs(module)
    field, x0 = _field(schedule_name)
    theirs, mine = sample(field, x0, peer, steps=12), sample(field, x0, ours, steps=12)
    assert theirs.nfe == mine.nfe
    assert float((theirs.x - mine.x).abs().max()) < tolerance


@pytest.mark.parametrize(("peer", "ours"), [("peer:k_diffusion/euler", "ddim"), ("peer:k_diffusion/heun", "edm_heun"),
                                            ("peer:k_diffusion/dpmpp_2m", "dpmpp_2m")])
@pytest.mark.parametrize("schedule_name", ["cond_ot", "cosine", "vp"])
def test_k_diffusion_samplers_are_ours_on_the_same_noise_levels(peer, ours, schedule_name):
    """k-diffusion's Euler is DDIM (η = 0), its Heun EDM's Heun, its DPM-Solver++(2M) ours — from EDM's σ_max."""
    _needs("k_diffusion")
    field, x0 = _field(schedule_name)
    grid = get_grid("uniform", 10, t0=edm_start_time(field.schedule))
    theirs, mine = sample(field, x0, peer, grid=grid), sample(field, x0, ours, grid=grid)
    assert theirs.nfe == mine.nfe
    assert float((theirs.x - mine.x).abs().max()) < 1e-12


def test_k_diffusion_euler_ancestral_is_ours_with_the_same_noise():
    _needs("k_diffusion")
    field, x0 = _field("vp")
    theirs = sample(field, x0, "peer:k_diffusion/euler_ancestral", steps=10, generator=4)
    assert float((theirs.x - sample(field, x0, "euler_ancestral", steps=10, generator=4).x).abs().max()) < 1e-12


def test_torchdyn_rk4_evaluates_its_stages_at_the_wrong_times():
    """torchdyn 1.0.6's ``RungeKutta4.step`` takes k2 at t + c[0]·dt and k3, k4 at t + c[1]·dt, t + c[2]·dt: stage
    times (0, 0, ½, ½) instead of (0, ½, ½, 1). Our RK step with those stage times reproduces it (to the float32
    rounding of torchdyn's tableau), and it is a far worse method than RK4."""
    _needs("torchdyn")
    field, x0 = _field("cosine")
    theirs = sample(field, x0, "peer:torchdyn/rk4", steps=16).x
    rk4 = TABLEAUS["rk4"]
    shifted = types.SimpleNamespace(c=(0.0, 0.0, 0.5, 0.5), a=rk4.a, b=rk4.b)  # not a valid ButcherTableau: c ≠ row sums
    x, grid = x0, torch.linspace(0, 1, 17, dtype=torch.float64).tolist()
    for t, t_next in zip(grid[:-1], grid[1:], strict=True):
        x = rk_step(field, x, t, t_next, t_next - t, shifted)
    assert float((theirs - x).abs().max()) < 1e-6
    exact = sample(field, x0, "dopri5", rtol=1e-11, atol=1e-11).x
    ours = sample(field, x0, "rk4", steps=16).x
    assert float((theirs - exact).abs().max()) > 100 * float((ours - exact).abs().max())  # 0.54 vs 5.9e-4 here


def test_a_missing_peer_is_a_skipped_cell_with_the_reason(monkeypatch):
    import fmbench.peers as peers

    def unavailable(module):
        raise PeerUnavailable("flow-matching is not available (test)")

    monkeypatch.setattr(peers, "_import", unavailable)
    row = run_cell(CellSpec("gaussian", "cond_ot", "peer:flow_matching/euler", target_params={"d": 2}, steps=4, n=16))
    assert row["status"] == "skipped" and "flow-matching is not available" in row["error"]


def test_peers_are_installed_beside_the_pinned_torch():
    expected = os.environ.get("FMBENCH_EXPECTED_TORCH", "")
    if not expected.startswith("torch=="):
        pytest.skip("no torch pin to check (tox sets FMBENCH_EXPECTED_TORCH from its pin)")
    assert metadata.version("torch").split("+")[0] == expected.removeprefix("torch==")  # 2.13.0+cpu is 2.13.0
    for package, version in PEER_VERSIONS.items():
        assert metadata.version(package) == version
    k_diffusion_sampling()  # loads without torchvision


def test_torchode_fixed_steps_can_take_one_more_step():
    """torchode's FixedStepController accumulates t += dt: where 1/N is not exact in binary the sum can fall an ulp
    short of t_end, and it takes an extra, vanishing step — one more NFE, the same output."""
    _needs("torchode")
    field, x0 = _field("cond_ot")
    extra = {steps: sample(field, x0, "peer:torchode/euler", steps=steps).nfe - steps for steps in (5, 6, 7, 10, 12, 16)}
    assert extra == {5: 0, 6: 1, 7: 1, 10: 1, 12: 0, 16: 0}
    theirs, ours = sample(field, x0, "peer:torchode/euler", steps=7), sample(field, x0, "euler", steps=7)
    assert float((theirs.x - ours.x).abs().max()) < 1e-14
