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

from .helpers import assert_matches_law

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
                                            ("peer:k_diffusion/dpmpp_2s", "dpmpp_2s"),
                                            ("peer:k_diffusion/lms", "lms"),
                                            ("peer:k_diffusion/dpm_solver_2s", "dpm_solver_2s")])
@pytest.mark.parametrize("schedule_name", ["cond_ot", "cosine", "vp"])
def test_k_diffusion_samplers_are_ours_on_the_same_noise_levels(peer, ours, schedule_name):
    """k-diffusion's Euler is DDIM (η = 0), its Heun EDM's Heun, its DPM-Solver++(2M) and (3M) (its 3M SDE at η = 0)
    ours, its LMS (coefficients by quadrature) ours (exact polynomial integrals), its DPM-2 DPM-Solver-2 — from EDM's
    σ_max."""
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


def test_k_diffusion_dpmpp_sde_has_the_law_of_correlated_sub_steps(monkeypatch):
    """k-diffusion's DPM++ SDE draws both sub-steps' noise from one Brownian tree, so they are correlated
    (``substep_correlation``). 40 000 of its samples (4 steps, vp, a Gaussian) match the exact law of ``dpmpp_sde``,
    which draws them so, per eigendirection within 5 standard errors — and not the law with independent sub-step noise,
    whose variance along the top eigendirection is 29 % lower (0.334 vs 0.472), some 40 standard errors away."""
    _needs("k_diffusion")
    pytest.importorskip("torchsde", reason="k-diffusion's Brownian tree needs torchsde (fmbench install-peers)")

    from fmcore.exact import exact_output_law
    from fmcore.solvers import singlestep_samplers

    target, schedule, n = get_target("gaussian", d=4, condition_number=10), get_schedule("vp"), 40_000
    law = exact_output_law(target, schedule, "dpmpp_sde", steps=4)
    x0 = torch.randn(n, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x = sample(AnalyticField(target, schedule), x0, "peer:k_diffusion/dpmpp_sde", steps=4, generator=2).x
    variance, standard_error = assert_matches_law(law, x)
    monkeypatch.setattr(singlestep_samplers, "substep_correlation", lambda *levels: 0.0)
    independent = exact_output_law(target, schedule, "dpmpp_sde", steps=4)
    assert float(((variance - independent.variance).abs() / standard_error).max()) > 20


def test_k_diffusion_dpm_adaptive_is_dpm_solver_3_on_the_grid_it_chose_and_that_grid_follows_its_batch():
    """``sample_dpm_adaptive`` keeps its DPM-Solver-3 steps: on the levels it accepted (``result.grid``) it is
    ``dpm_solver_3s`` to 1e-12, and its NFE is 3 per attempt, rejected ones included. Its error norm is over the whole
    batch: each of 8 starts alone takes 9–11 steps where the batch of 64 took 11, and its output moves by up to
    0.08 (k-diffusion's default tolerances, rtol 0.05, atol 0.0078)."""
    _needs("k_diffusion")
    field, x0 = _field("vp")
    x0 = x0[:64]
    theirs = sample(field, x0, "peer:k_diffusion/dpm_adaptive")
    attempts = theirs.info["n_accept"] + theirs.info["n_reject"]
    assert theirs.nfe == 3 * attempts and len(theirs.grid) == theirs.info["n_accept"] + 1
    assert theirs.t1 == float(theirs.grid[-1])
    mine = sample(field, x0, "dpm_solver_3s", grid=theirs.grid)
    assert float((theirs.x - mine.x).abs().max()) < 1e-12
    alone = [sample(field, x0[i:i + 1], "peer:k_diffusion/dpm_adaptive") for i in range(8)]
    assert len({len(result.grid) for result in alone} | {len(theirs.grid)}) > 1
    assert max(float((result.x - theirs.x[i]).abs().max()) for i, result in enumerate(alone)) > 1e-3


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


# (diffusers scheduler, our method on the same noise levels and its options, steps): DDPM's float32 α̅ table, read
# off by the adapter. DEIS and DPM-Solver++ ending at σ_min at 16 steps: below 15 their lower_order_final lowers the
# last steps' order (test_diffusers_lower_order_final_below_15_steps); without it they are ours at 12 steps too.
# DPM-Solver++(3M) and DEIS of order 3: their own tests below (a different warm start; float32 cancellation well
# above round-off).
DIFFUSERS_PAIRS = [("ddim", "ddim", {}, 12), ("dpmsolver++", "dpmpp_2m", {}, 12), ("euler", "ddim", {}, 12),
                   ("heun", "edm_heun", {}, 12), ("flow_match_euler", "ddim", {}, 12),
                   ("dpmsolver++_sigma_min", "dpmpp_2m", {}, 16),
                   ("deis", "deis", {"max_order": 2}, 16), ("deis_full_order", "deis", {"max_order": 2}, 12),
                   ("dpmsolver++_sigma_min_full_order", "dpmpp_2m", {}, 12),
                   ("lms", "lms", {}, 12), ("lms_karras", "lms", {}, 12)]


@pytest.mark.parametrize(("peer", "ours", "options", "steps"), DIFFUSERS_PAIRS)
@pytest.mark.parametrize("schedule_name", ["cond_ot", "cosine"])
def test_diffusers_schedulers_are_ours_on_their_noise_levels(peer, ours, options, steps, schedule_name):
    """Each scheduler, driven by the exact prediction at its own levels, takes our method's steps on those levels
    (``result.grid``): the same output to float32 round-off (amplified up to 4e-6 relative along the way) —
    diffusers keeps its tables in float32, and Euler, DPM-Solver and FlowMatch step a float64 sample in float32 —
    and the same NFE. (Euler in σ̃ with ε, and Euler of the flow in σ, are DDIM; diffusers' DPM-Solver++ ends with a
    first-order step to σ = 0, as ours does; DEIS's order 1 is DDIM; LMS integrates its Lagrange basis by quadrature,
    exactly for these cubics.)"""
    _needs("diffusers")
    field, x0 = _field(schedule_name)
    theirs = sample(field, x0, f"peer:diffusers/{peer}", steps=steps)
    mine = sample(field, x0, ours, grid=theirs.grid, **options)
    assert theirs.nfe == mine.nfe
    scale = float(mine.x.abs().max())
    assert float((theirs.x - mine.x).abs().max()) < 1e-5 * scale  # 1.1e-6 … 4e-6 × scale measured (heun on cosine)
    assert theirs.t0 == float(theirs.grid[0])
    assert (float(theirs.grid[-1]) == 1.0) == (not peer.startswith(("deis", "dpmsolver++_sigma_min")))  # σ_min end
    assert theirs.t1 == float(theirs.grid[-1])  # the output is where the scheduler stops


def _error_to_the_end(field, x0, result) -> float:
    """Mean distance to the exact flow map from the sampler's start to its own end."""
    exact = TARGET_GAUSSIAN.flow_map(x0, field.schedule, t0=result.t0, t1=float(result.grid[-1]))
    return float((result.x - exact).norm(dim=1).mean())


TARGET_GAUSSIAN = get_target("gaussian", d=4, condition_number=10)


def test_diffusers_lower_order_final_below_15_steps():
    """Below 15 steps diffusers' ``lower_order_final`` (on by default) takes the last step(s) at first order. Its
    linspace timesteps end with one long step (timestep ⌊1000/N⌋·k → 0: σ̃ 0.28 → 0.01 on 12 steps, h = 3.3 against
    0.6 before): there a second-order multistep extrapolates by (1 + 1/2r) with r = 0.18 and loses, a first-order step
    wins. So DPM-Solver++ ending at σ_min is 3.3× more accurate at 12 steps than at 16 (0.107 vs 0.352 here), and its
    error rises with the step count across 15 — while DEIS, whose second order is kept on that step by ours, is 4.3×
    worse with lower_order_final at 12 steps than ours without it (0.131 vs 0.031)."""
    _needs("diffusers")
    schedule = get_schedule("cond_ot")
    field = AnalyticField(TARGET_GAUSSIAN, schedule)
    x0 = torch.randn(256, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    theirs = {n: sample(field, x0, "peer:diffusers/dpmsolver++_sigma_min", steps=n) for n in (12, 16)}
    errors = {n: _error_to_the_end(field, x0, result) for n, result in theirs.items()}
    assert errors[12] < errors[16] / 2, errors
    ours_12 = _error_to_the_end(field, x0, sample(field, x0, "dpmpp_2m", grid=theirs[12].grid))
    assert ours_12 > 2 * errors[12]  # second order on the long last step is the loser
    deis = sample(field, x0, "peer:diffusers/deis", steps=12)
    ours_deis = _error_to_the_end(field, x0, sample(field, x0, "deis", grid=deis.grid, max_order=2))
    assert _error_to_the_end(field, x0, deis) > 2 * ours_deis


def test_diffusers_euler_at_final_keeps_the_first_order_last_step_past_15_steps():
    """``euler_at_final`` takes the last step at first order at every N: below 15 steps it is the default bit for bit
    (lower_order_final already does), from 15 on it removes the jump — DPM-Solver++ ending at σ_min, measured 0.079,
    0.070, 0.060 at 14, 15, 16 steps (the default: 0.079, 0.281, 0.260), 0.0074 against 0.069 at 40."""
    _needs("diffusers")
    schedule = get_schedule("cond_ot")
    field = AnalyticField(TARGET_GAUSSIAN, schedule)
    x0 = torch.randn(256, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    errors, default = [], {}
    for steps in (14, 15, 16):
        euler = sample(field, x0, "peer:diffusers/dpmsolver++_sigma_min_euler_at_final", steps=steps)
        plain = sample(field, x0, "peer:diffusers/dpmsolver++_sigma_min", steps=steps)
        errors.append(_error_to_the_end(field, x0, euler))
        default[steps] = _error_to_the_end(field, x0, plain)
        if steps < 15:
            assert torch.equal(euler.x, plain.x)
    assert errors[0] > errors[1] > errors[2], errors
    assert default[15] > 3 * errors[1] and default[16] > 3 * errors[2], (default, errors)


def test_diffusers_3m_warm_starts_with_the_midpoint_form_where_k_diffusion_takes_phi_2():
    """diffusers' DPM-Solver++(3M) and k-diffusion's (= ``dpmpp_3m``, to 1e-12) share the third-order update but not
    the second-order step that warms it up: diffusers takes its 2M "midpoint" form, α_t(1 − ρ)/2 · d, k-diffusion
    α_tφ₂d with φ₂ = 1 + (e^{−h} − 1)/h (d = (D_s − D_prev)/r). Driven step by step (float64 σ's, so only the sample's
    float32 cast remains), the two agree after the first step to 2e-7 and differ after the second by exactly
    α_t((1 − ρ)/2 − φ₂)d (5e-5 here); the 3M steps then carry that on, 4e-4 at the end of 16 steps on this mixture."""
    _needs("diffusers")
    import math

    import diffusers
    from fmbench import peers

    field, x0 = _field("cond_ot")
    schedule = field.schedule
    scheduler = diffusers.DPMSolverMultistepScheduler(solver_order=3)
    scheduler.set_timesteps(16)
    scheduler.sigmas = scheduler.sigmas.double()
    times, latent, theirs = [], None, []
    for timestep in scheduler.timesteps:
        snr = 1.0 / float(scheduler.sigmas[scheduler.step_index or 0])
        t, _, sigma_t = peers._point_of_snr(schedule, snr, "test")
        c, e = peers._coefficients("vp", snr)
        latent = x0 * (e / sigma_t) if latent is None else latent
        times.append(t)
        data = field.data_prediction(t, latent * (sigma_t / e))
        latent = scheduler.step((latent - c * data) / e, timestep, latent, return_dict=False)[0].double()
        level = float(scheduler.sigmas[scheduler.step_index])
        snr_next = math.inf if level == 0.0 else 1.0 / level
        t_next, alpha_next, _ = peers._point_of_snr(schedule, snr_next, "test")
        theirs.append(latent * (alpha_next / peers._coefficients("vp", snr_next)[0]))
    grid = torch.tensor([*times, t_next], dtype=torch.float64)
    ours = sample(field, x0, "dpmpp_3m", grid=grid, return_trajectory=True).trajectory
    assert float((theirs[0] - ours[1]).abs().max()) < 1e-6
    (a_0, s_0), (a_1, s_1), (a_2, s_2) = [(float(v.alpha), float(v.sigma)) for v in (schedule(u) for u in times[:3])]
    h_prev, h = math.log(a_1 * s_0 / (a_0 * s_1)), math.log(a_2 * s_1 / (a_1 * s_2))
    rho, phi_2 = math.exp(-h), math.expm1(-h) / h + 1.0
    d = (field.data_prediction(times[1], ours[1]) - field.data_prediction(times[0], ours[0])) / (h_prev / h)
    predicted = a_2 * ((1.0 - rho) / 2 - phi_2) * d
    assert float(predicted.abs().max()) > 1e-5
    torch.testing.assert_close(theirs[1] - ours[2], predicted, rtol=0, atol=1e-6)


def test_diffusers_ipndm_drops_its_first_data_prediction():
    """diffusers' IPNDM starts at pure noise (σ = 1, α = 0) and forms the data prediction as (x − σε̂)/max(α, 1e-8):
    there ε̂ = x exactly, so its first step keeps x₁ = σ₁x₀ and loses α₁·E[x₁] — whatever the network says. On a
    Gaussian with a mean its error is then first order (0.99, 1.00, 1.00 over N = 16 … 128 on cond_ot); with the mean
    removed, 2.5 to 2.6 (its Adams–Bashforth steps, the warm start's)."""
    _needs("diffusers")
    import math

    from fmcore import GaussianMixture

    with_mean = get_target("gaussian", d=4, condition_number=10)
    centred = GaussianMixture([1.0], torch.zeros(1, 4, dtype=torch.float64), with_mean.covariances)
    schedule = get_schedule("cond_ot")
    x0 = torch.randn(500, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def orders(target) -> list[float]:
        field = AnalyticField(target, schedule)
        errors = []
        for steps in (16, 32, 64):
            result = sample(field, x0, "peer:diffusers/ipndm", steps=steps)
            assert result.t0 == 0.0 and result.t1 == 1.0
            errors.append(float((result.x - target.flow_map(x0, schedule)).norm(dim=1).mean()))
        return [math.log2(a / b) for a, b in zip(errors[:-1], errors[1:], strict=True)]

    assert all(abs(order - 1.0) < 0.05 for order in orders(with_mean))
    assert all(order > 2.3 for order in orders(centred))


def test_diffusers_singlestep_and_sa_solver_are_scored_against_the_truth():
    """Two schedulers with no native twin on their own points. DPM-Solver++(2S) singlestep takes its intermediate points
    from its own timesteps (r = Δλ to the next timestep over the pair's Δλ, not ½) and, with lower_order_final, its
    last two steps at first order: its error falls at order 1.44, 1.52, 1.45 over N = 16 … 128 (cond_ot, the 4-d
    Gaussian). SA-Solver draws noise on its timesteps 200 … 800 (its default τ): given the cell's generator it is
    reproducible, and the Bures distance of 20 000 samples to the target falls to twice the sampling floor by 32
    steps (0.207, 0.090, 0.028 at 8, 16, 32; floor 0.013)."""
    _needs("diffusers")
    import math

    from fmcore.metrics import gaussian_fit_w2

    target, schedule = get_target("gaussian", d=4, condition_number=10), get_schedule("cond_ot")
    field = AnalyticField(target, schedule)
    x0 = torch.randn(500, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    errors = []
    for steps in (16, 32, 64):
        result = sample(field, x0, "peer:diffusers/dpmsolver++_singlestep", steps=steps)
        errors.append(float((result.x - target.flow_map(x0, schedule, t0=result.t0)).norm(dim=1).mean()))
    assert all(1.3 < math.log2(a / b) < 1.7 for a, b in zip(errors[:-1], errors[1:], strict=True)), errors
    many = torch.randn(20_000, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    coarse, fine = (gaussian_fit_w2(sample(field, many, "peer:diffusers/sa_solver", steps=steps, generator=3).x, target)
                    for steps in (8, 32))
    floor = gaussian_fit_w2(target.sample(20_000, generator=torch.Generator().manual_seed(4)), target)
    assert fine < coarse / 4 and fine < 3 * floor, (coarse, fine, floor)
    again = [sample(field, x0[:50], "peer:diffusers/sa_solver", steps=8, generator=3).x for _ in range(2)]
    assert torch.equal(again[0], again[1])


@pytest.mark.parametrize("schedule_name", ["cond_ot", "cosine"])
def test_diffusers_sa_solver_at_tau_zero_is_ours_on_its_grid(monkeypatch, schedule_name):
    """With τ = 0 on every timestep and without ``lower_order_final`` (which takes its last step, to its σ_min, at
    first order), diffusers' SA-Solver is the native ``sa_solver`` at τ = 0 on diffusers' own points, its O(h³)
    "UniPC-like" term included: measured 1.0e-7 … 4.8e-7 relative over 5 … 50 steps (float32 tables; the same under
    ATEN_CPU_CAPABILITY=default/avx2/avx512 × 1/2 threads); the allowance is 2e-6, four times the largest. Without
    that term ours is off by far more."""
    _needs("diffusers")
    from fmbench.peers import DIFFUSERS_SCHEDULERS

    config = DIFFUSERS_SCHEDULERS["sa_solver"].config
    monkeypatch.setitem(config, "tau_func", lambda timestep: 0.0)
    monkeypatch.setitem(config, "lower_order_final", False)
    target, schedule = get_target("gaussian", d=4, condition_number=10), get_schedule(schedule_name)
    field = AnalyticField(target, schedule)
    x0 = torch.randn(200, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for steps in (5, 10, 16, 50):
        theirs = sample(field, x0, "peer:diffusers/sa_solver", steps=steps, generator=0)
        scale = float(theirs.x.abs().max())
        ours = sample(field, x0, "sa_solver", grid=theirs.grid, tau=0.0)
        assert float((ours.x - theirs.x).abs().max()) < 2e-6 * scale, steps
        plain = sample(field, x0, "sa_solver", grid=theirs.grid, tau=0.0, unipc_term=0.0)
        assert float((plain.x - theirs.x).abs().max()) > 1e-3 * scale, steps


def test_diffusers_dpmsolver_sde_has_the_law_of_dpmpp_sde_on_its_levels(monkeypatch):
    """diffusers' ``DPMSolverSDEScheduler`` is k-diffusion's DPM++ SDE, two calls per step (the second at the step's
    λ-midpoint, its level in ``mid_point_sigma``) and its Brownian tree seeded from the cell's generator: 40 000 of its
    samples (4 steps, cond_ot, the 4-d Gaussian, N(0, I) starts) match the exact law of ``dpmpp_sde`` on its step
    levels per eigendirection within 5 standard errors (measured within 1.9), and not the law with independent
    sub-step noise (30–44 standard errors off). NFE 2N − 1: its last step, to σ = 0, is one Euler step."""
    _needs("diffusers")
    pytest.importorskip("torchsde", reason="diffusers' Brownian tree needs torchsde (fmbench install-peers)")

    from fmcore.exact import exact_output_law
    from fmcore.solvers import singlestep_samplers

    target, schedule, n = get_target("gaussian", d=4, condition_number=10), get_schedule("cond_ot"), 40_000
    x0 = torch.randn(n, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    theirs = sample(AnalyticField(target, schedule), x0, "peer:diffusers/dpmsolver_sde", steps=4, generator=2)
    assert theirs.nfe == 2 * 4 - 1 and len(theirs.grid) == 2 * 4  # each call's time, then the end
    steps = torch.cat([theirs.grid[:-1:2], theirs.grid[-1:]])  # the step levels, without the midpoints
    law = exact_output_law(target, schedule, "dpmpp_sde", grid=steps, start="standard_normal")
    variance, standard_error = assert_matches_law(law, theirs.x)
    monkeypatch.setattr(singlestep_samplers, "substep_correlation", lambda *levels: 0.0)
    independent = exact_output_law(target, schedule, "dpmpp_sde", grid=steps, start="standard_normal")
    assert float(((variance - independent.variance).abs() / standard_error).min()) > 20
    again = sample(AnalyticField(target, schedule), x0, "peer:diffusers/dpmsolver_sde", steps=4, generator=2)
    assert torch.equal(again.x, theirs.x)


def test_diffusers_karras_sigmas_tell_the_network_a_rounded_timestep():
    """With ``use_karras_sigmas`` DPM-Solver++ keeps the Karras σ̃'s exactly but hands the network the nearest integer
    timestep: a network trained on the DDPM table is then asked about a level up to 0.7 % off the sample's (σ̃ 0.2067
    told 0.2053 on 12 steps). The adapter tells the field that timestep's level, as a network would be told; the
    output moves by about 5e-3 from ours on the sample's levels, a thousand times float32's 4e-6."""
    _needs("diffusers")
    import diffusers

    scheduler = diffusers.DPMSolverMultistepScheduler(use_karras_sigmas=True)
    scheduler.set_timesteps(12)
    table = scheduler.alphas_cumprod.double()
    told = ((1 - table[scheduler.timesteps]) / table[scheduler.timesteps]).sqrt()
    kept = scheduler.sigmas[:-1].double()
    offset = float(((told - kept) / kept).abs().max())
    assert 1e-3 < offset < 1e-2
    schedule = get_schedule("cond_ot")
    field = AnalyticField(TARGET_GAUSSIAN, schedule)
    x0 = torch.randn(256, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    theirs = sample(field, x0, "peer:diffusers/dpmsolver++_karras", steps=12)
    mine = sample(field, x0, "dpmpp_2m", grid=theirs.grid)
    difference = float((theirs.x - mine.x).abs().max()) / float(mine.x.abs().max())
    assert 1e-4 < difference < 1e-2


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


@pytest.mark.parametrize("steps", [16, 64])
def test_diffusers_deis_of_order_3_loses_its_float32_coefficients_as_steps_shrink(monkeypatch, steps):
    """diffusers' third-order DEIS coefficients are differences of its closed-form integrals (``ind_fn``) of nearly
    equal log σ's, computed from its float32 σ table: they cancel as the steps shrink, by an amount that depends on
    the CPU's float32 kernels. Shipped, it is ours to 7e-6 (AVX2, AVX-512) or 1.2e-5 (ATEN_CPU_CAPABILITY=default) at
    16 steps, to 8.4e-4 or 5.5e-5 at 64 (the Gaussian of ``results/peers.md``: d = 8) — above float32 round-off
    everywhere; with the table in float64, ours to 1e-12 at both — the whole difference is that round-off."""
    _needs("diffusers")
    import diffusers

    target = get_target("gaussian", d=8, condition_number=100)
    field = AnalyticField(target, get_schedule("cond_ot"))
    x0 = torch.randn(2000, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    shipped = sample(field, x0, "peer:diffusers/deis_3", steps=steps)
    mine = sample(field, x0, "deis", grid=shipped.grid)
    shipped_difference = float((shipped.x - mine.x).abs().max())
    scheduler_class = diffusers.DEISMultistepScheduler
    set_timesteps = scheduler_class.set_timesteps

    def in_float64(self, *args, **kwargs):
        set_timesteps(self, *args, **kwargs)
        self.sigmas = self.sigmas.double()

    monkeypatch.setattr(scheduler_class, "set_timesteps", in_float64)
    exact_tables = sample(field, x0, "peer:diffusers/deis_3", steps=steps)
    assert float((exact_tables.x - mine.x).abs().max()) < 1e-11
    assert shipped_difference > (1e-5 if steps == 64 else 1e-6)


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
