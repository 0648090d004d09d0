"""Peer adapters: each peer's sampler against ours for the same method, and the findings about where they differ.
Each test skips, with the reason, when its peer is not installed (tox installs them: ``fmbench install-peers``)."""

from __future__ import annotations

import dataclasses
import os
import types
from importlib import metadata

import pytest
import torch
from fmbench.cells import CellSpec, run_cell
from fmbench.peers import PEER_MARKERS, PEER_VERSIONS, PeerUnavailable, k_diffusion_sampling
from packaging.markers import Marker

from fmcore import AnalyticField, get_schedule, get_target
from fmcore.grids import get_grid
from fmcore.solvers import get_method, sample
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
                                            ("peer:k_diffusion/dpmpp_2m", "dpmpp_2m"),
                                            ("peer:k_diffusion/dpmpp_3m", "dpmpp_3m"),
                                            ("peer:k_diffusion/dpmpp_2s", "dpmpp_2s")])
@pytest.mark.parametrize("schedule_name", ["cond_ot", "cosine", "vp"])
def test_k_diffusion_samplers_are_ours_on_the_same_noise_levels(peer, ours, schedule_name):
    """k-diffusion's Euler is DDIM (η = 0), its Heun EDM's Heun, its DPM-Solver++(2M) and (3M) (its 3M SDE at η = 0)
    ours — from EDM's σ_max."""
    _needs("k_diffusion")
    field, x0 = _field(schedule_name)
    grid = get_grid("uniform", 10, t0=edm_start_time(field.schedule))
    theirs, mine = sample(field, x0, peer, grid=grid), sample(field, x0, ours, grid=grid)
    assert theirs.nfe == mine.nfe
    assert float((theirs.x - mine.x).abs().max()) < 1e-12


@pytest.mark.parametrize("method", ["euler_ancestral", "dpmpp_2s_ancestral"])
def test_k_diffusion_ancestral_samplers_are_ours_with_the_same_noise(method):
    _needs("k_diffusion")
    field, x0 = _field("vp")
    theirs = sample(field, x0, f"peer:k_diffusion/{method}", steps=10, generator=4)
    assert float((theirs.x - sample(field, x0, method, steps=10, generator=4).x).abs().max()) < 1e-12


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
        if package in PEER_MARKERS and not Marker(PEER_MARKERS[package]).evaluate():
            continue  # not for this Python (diffusers needs ≥ 3.11)
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


# (diffusers scheduler, our method on the same noise levels): DDPM's float32 α̅ table, read off by the adapter
DIFFUSERS_PAIRS = [("ddim", "ddim"), ("dpmsolver++", "dpmpp_2m"), ("euler", "ddim"), ("heun", "edm_heun"),
                   ("flow_match_euler", "ddim")]


@pytest.mark.parametrize(("peer", "ours"), DIFFUSERS_PAIRS)
@pytest.mark.parametrize("schedule_name", ["cond_ot", "cosine"])
def test_diffusers_schedulers_are_ours_on_their_noise_levels(peer, ours, schedule_name):
    """Each scheduler, driven by the exact prediction at its own levels, takes our method's steps on those levels
    (``result.grid``): the same output to float32 round-off (amplified up to 4e-6 relative along the way) —
    diffusers keeps its tables in float32, and Euler, DPM-Solver and FlowMatch step a float64 sample in float32 —
    and the same NFE. (Euler in σ̃ with ε, and Euler of
    the flow in σ, are DDIM; diffusers' DPM-Solver++ ends with a first-order step to σ = 0, as ours does.)"""
    _needs("diffusers")
    field, x0 = _field(schedule_name)
    theirs = sample(field, x0, f"peer:diffusers/{peer}", steps=12)
    mine = sample(field, x0, ours, grid=theirs.grid)
    assert theirs.nfe == mine.nfe
    scale = float(mine.x.abs().max())
    assert float((theirs.x - mine.x).abs().max()) < 1e-5 * scale  # 1.1e-6 … 4e-6 × scale measured (heun on cosine)
    assert theirs.t0 == float(theirs.grid[0]) and float(theirs.grid[-1]) == 1.0  # all five end at the data


@pytest.mark.parametrize(("peer", "ours", "class_name", "tables"), [
    ("ddim", "ddim", "DDIMScheduler", ("alphas_cumprod", "final_alpha_cumprod")),
    ("heun", "edm_heun", "HeunDiscreteScheduler", ("sigmas",)),
    ("unipc", "unipc", "UniPCMultistepScheduler", ("sigmas",)),
])
@pytest.mark.parametrize("schedule_name", ["cond_ot", "cosine"])
def test_diffusers_differs_from_ours_by_its_float32_tables_only(monkeypatch, peer, ours, class_name, tables, schedule_name):
    """With its tables cast to float64, DDIM, Heun and UniPC (which step the sample in its own dtype) are ours to
    1e-12: the differences above are the float32 tables. UniPC then steps float64 too — its float64 failure is
    the float32 table meeting a float64 sample. (Euler, DPM-Solver and FlowMatch cast the sample itself to
    float32 in each step, so float64 tables alone do not change them.)"""
    _needs("diffusers")
    import diffusers
    from fmbench import peers

    from fmcore.solvers.methods import METHODS

    scheduler_class = getattr(diffusers, class_name)
    set_timesteps = scheduler_class.set_timesteps

    def in_float64(self, *args, **kwargs):
        set_timesteps(self, *args, **kwargs)
        for name in tables:
            setattr(self, name, getattr(self, name).double())

    monkeypatch.setattr(scheduler_class, "set_timesteps", in_float64)
    allowed = dataclasses.replace(peers.DIFFUSERS_SCHEDULERS[peer], float64=True)
    monkeypatch.setitem(METHODS, "float64 tables", dataclasses.replace(get_method(f"peer:diffusers/{peer}"),
                                                                       name="float64 tables",
                                                                       integrate=peers._diffusers(allowed)))
    field, x0 = _field(schedule_name)
    theirs = sample(field, x0, "float64 tables", steps=12)
    mine = sample(field, x0, ours, grid=theirs.grid)
    assert float((theirs.x - mine.x).abs().max()) < 1e-12


def test_diffusers_ddim_leading_spacing_starts_short_of_pure_noise():
    """DDIM's default "leading" spacing starts at timestep (N − 1)·⌊1000/N⌋ (800 for N = 5), not 999: the sampler
    starts where α̅ is that timestep's, at our time of the same SNR."""
    _needs("diffusers")
    import diffusers

    field, x0 = _field("cond_ot")
    table = diffusers.DDIMScheduler().alphas_cumprod.double()
    for steps, first in ((5, 800), (10, 900), (50, 980)):
        result = sample(field, x0, "peer:diffusers/ddim", steps=steps)
        snr = float((table[first] / (1 - table[first])).sqrt())
        assert result.t0 == pytest.approx(float(field.schedule.t_from_snr(snr)), rel=1e-12)


def test_diffusers_unipc_is_refused_in_float64_and_converges_in_float32():
    """diffusers' UniPC cannot step a float64 sample (its corrector's linalg.solve mixes dtypes): a clear error.
    In float32 it is our ``unipc`` on its levels to float32 round-off, and its error against the exact map from its
    start falls by ≥ 2.5× per doubling of N: DDPM's timestep grid, whose first steps are long in log-SNR, keeps it
    short of its third order (2.2–3.1 per doubling measured for N = 5 … 160 on the 8-d Gaussian)."""
    _needs("diffusers")
    target = get_target("gaussian", d=4, condition_number=10)
    schedule = get_schedule("cond_ot")
    field = AnalyticField(target, schedule)
    x0 = torch.randn(500, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="cannot step a float64 sample"):
        sample(field, x0, "peer:diffusers/unipc", steps=8)
    errors = []
    for steps in (20, 40, 80):
        result = sample(field, x0.float(), "peer:diffusers/unipc", steps=steps)
        exact = target.flow_map(x0, schedule, t0=result.t0)
        errors.append(float((result.x.double() - exact).norm(dim=1).mean()))
        ours = sample(field, x0.float(), "unipc", grid=result.grid)  # ours, in float32 on the same levels
        assert float((result.x - ours.x).abs().max()) < 1e-5 * float(ours.x.abs().max())
    assert errors[0] / errors[1] > 2.5 and errors[1] / errors[2] > 2.5


def test_diffusers_table_below_the_path_is_a_clear_error():
    """DDPM's table starts at SNR 0.0064 (σ̃ = 157), below the vp path's SNR at t = 0 (0.0066): no time of
    ours has that SNR, and the cell fails saying so."""
    _needs("diffusers")
    field, x0 = _field("vp")
    with pytest.raises(ValueError, match="does not reach"):
        sample(field, x0, "peer:diffusers/dpmsolver++", steps=8)


@pytest.mark.parametrize("peer, ours, module", [("peer:flow_matching/midpoint", "midpoint", "flow_matching"),
                                                ("peer:k_diffusion/dpmpp_2m", "dpmpp_2m", "k_diffusion")])
def test_a_peers_law_probed_off_its_code_is_ours_at_image_dimension(peer, ours, module):
    """The probe of a peer's own code (``law=PROBED``) on the CIFAR-10 Gaussian gives the law of the method of ours it
    implements, on the same grid: exact truth for a library's implementation at d = 3072."""
    _needs(module)
    from fmcore import get_target
    from fmcore.exact import exact_output_law
    from fmcore.grids import get_grid
    from fmcore.solvers import get_method
    from fmcore.solvers.laws import PROBED

    target, schedule = get_target("cifar10"), get_schedule("cosine")
    start = get_method(peer).start(schedule) if get_method(peer).start else 0.0
    grid = get_grid("logsnr", 10, schedule, t0=start, t1=0.999)
    theirs = exact_output_law(target, schedule, peer, grid=grid, law=PROBED)
    mine = exact_output_law(target, schedule, ours, grid=grid)
    assert theirs.w2_to_target() == pytest.approx(mine.w2_to_target(), rel=1e-9)
