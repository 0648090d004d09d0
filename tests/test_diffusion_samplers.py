"""Diffusion samplers (DDIM, Euler-ancestral, DPM-Solver++(2M) and its SDE variant, EDM Heun): convergence orders
against the exact flow map of Gaussian targets, the identities between them, NFE, and the field predictions they use."""

from __future__ import annotations

import math

import pytest
import torch

from fmcore import AnalyticField, get_schedule, get_target
from fmcore.conversions import (
    data_prediction_from_noise_prediction,
    data_prediction_from_velocity,
    noise_prediction_from_data_prediction,
    noise_prediction_from_velocity,
)
from fmcore.grids import get_grid
from fmcore.metrics import gaussian_fit_w2
from fmcore.models import LearnedField, SinusoidalMLP
from fmcore.solvers import get_method, sample
from fmcore.solvers.diffusion_samplers import EDM_SIGMA_MAX, edm_start_time

TARGET = get_target("gaussian", d=4, condition_number=10)


def _noise(schedule, n: int = 500, seed: int = 0) -> torch.Tensor:
    return schedule.prior_std * torch.randn(n, TARGET.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _strong_error(schedule, method: str, steps: int, grid_name: str, **options) -> float:
    """Mean |x − exact flow map from the sampler's own start| (no sampling noise: a deterministic map of the noise)."""
    field = AnalyticField(TARGET, schedule)
    x0 = _noise(schedule)
    if grid_name == "uniform":
        result = sample(field, x0, method, steps=steps, **options)
    else:
        start = get_method(method).start(schedule) if get_method(method).start else 0.0
        result = sample(field, x0, method, grid=get_grid(grid_name, steps, schedule, t0=start), **options)
    return float((result.x - TARGET.flow_map(x0, schedule, t0=result.t0)).norm(dim=1).mean())


def _local_order(schedule, method: str, grid_name: str, steps: int, **options) -> float:
    return math.log2(_strong_error(schedule, method, steps, grid_name, **options)
                     / _strong_error(schedule, method, 2 * steps, grid_name, **options))


# (schedule, method, grid, steps of the asymptotic pair, order). VP has σ_t ≈ √(β_min (1 − t)) at the data end, which
# a uniform grid does not resolve (see test_vp_on_a_uniform_grid_costs_an_order), so VP's second-order rows use the
# cosine grid, which refines both ends; DPM-Solver++(2M) on a uniform grid converges as N⁻² log N (see below).
ORDERS = [
    ("cond_ot", "ddim", "uniform", 128, 1), ("cosine", "ddim", "uniform", 128, 1), ("vp", "ddim", "uniform", 128, 1),
    ("cond_ot", "dpmpp_2m", "cosine", 128, 2), ("cosine", "dpmpp_2m", "cosine", 128, 2), ("vp", "dpmpp_2m", "cosine", 128, 2),
    # UniPC: UniP-2 (DPM-Solver++(2M)'s step) corrected by UniC, which raises the order by one. On vp the cosine grid
    # is not fine enough at the data end for order 3 (2.90, 2.74, 2.56, 2.37 from N = 64); the log-SNR grid is (3.02
    # at 32 → 64, then 3.15, 3.22 and a floor of 6e-6 from its clip at σ/α = 0.002).
    ("cond_ot", "unipc", "cosine", 128, 3), ("cosine", "unipc", "cosine", 128, 3), ("vp", "unipc", "logsnr", 32, 3),
    ("cond_ot", "dpmpp_2s", "uniform", 128, 2), ("cosine", "dpmpp_2s", "uniform", 128, 2), ("vp", "dpmpp_2s", "cosine", 128, 2),
    ("cond_ot", "dpm_solver_2s", "cosine", 128, 2), ("cosine", "dpm_solver_2s", "cosine", 128, 2),
    ("vp", "dpm_solver_2s", "cosine", 128, 2),
    ("cond_ot", "dpm_solver_3s", "cosine", 128, 3), ("cosine", "dpm_solver_3s", "cosine", 128, 3),
    ("cond_ot", "edm_heun", "uniform", 128, 2), ("cosine", "edm_heun", "uniform", 128, 2), ("vp", "edm_heun", "cosine", 128, 2),
]


@pytest.mark.parametrize(("schedule_name", "method", "grid_name", "steps", "order"), ORDERS)
def test_convergence_order_against_the_exact_flow_map(schedule_name, method, grid_name, steps, order):
    measured = _local_order(get_schedule(schedule_name), method, grid_name, steps)
    assert abs(measured - order) < 0.15, f"{method} on {schedule_name} ({grid_name} grid): local order {measured:.3f}"


def test_dpmpp_2m_on_a_uniform_time_grid_converges_as_n_squared_log_n():
    """On a uniform t grid the λ-steps near α = 0 stay O(1) (h_k = log((k+1)/k)): the local orders creep up to 2
    (1.66 → 1.79 from N = 64 to 512) while error·N²/ln N stays within a few percent."""
    schedule = get_schedule("cond_ot")
    errors = {n: _strong_error(schedule, "dpmpp_2m", n, "uniform") for n in (128, 256, 512)}
    scaled = [errors[n] * n * n / math.log(n) for n in errors]
    assert max(scaled) / min(scaled) < 1.15
    assert 1.6 < math.log2(errors[256] / errors[512]) < 1.95


def test_vp_on_a_uniform_grid_costs_an_order():
    """σ_t ≈ √(β_min(1 − t)) near t = 1: the last uniform step spans Δσ̃ ~ N^-1/2, so second-order samplers fall to
    order 1 there — the grid's fault, not the sampler's (the cosine grid restores 2, test above)."""
    order = _local_order(get_schedule("vp"), "edm_heun", "uniform", 256)
    assert order < 1.35


def test_euler_ancestral_is_ddim_with_the_same_eta():
    schedule = get_schedule("cosine")
    field, x0 = AnalyticField(TARGET, schedule), _noise(schedule, 200)
    for eta in (0.3, 1.0):
        ancestral = sample(field, x0, "euler_ancestral", steps=12, eta=eta, generator=5).x
        assert torch.equal(ancestral, sample(field, x0, "ddim", steps=12, eta=eta, generator=5).x)


def test_euler_ancestral_step_is_k_diffusions():
    """One step written as k-diffusion writes it (get_ancestral_step, then Euler in x̃ = x/α, σ̃ = σ/α)."""
    schedule, s, t = get_schedule("vp"), 0.3, 0.55
    field, x = AnalyticField(TARGET, schedule), _noise(get_schedule("vp"), 50)
    (alpha_s, sigma_s), (alpha_t, sigma_t) = [(float(schedule(u).alpha), float(schedule(u).sigma)) for u in (s, t)]
    level_s, level_t = sigma_s / alpha_s, sigma_t / alpha_t
    level_up = min(level_t, math.sqrt(level_t**2 * (level_s**2 - level_t**2) / level_s**2))
    level_down = math.sqrt(level_t**2 - level_up**2)
    denoised = field.data_prediction(s, x)
    scaled = x / alpha_s
    scaled = scaled + (level_down - level_s) * (scaled - denoised) / level_s
    xi = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    expected = alpha_t * (scaled + level_up * xi)
    ours = sample(field, x, "euler_ancestral", grid=torch.tensor([s, t], dtype=torch.float64), generator=9).x
    assert torch.allclose(ours, expected, rtol=0, atol=1e-12)


def test_dpmpp_2m_step_is_the_paper_formula_in_lambda():
    """Two steps written in λ = log(α/σ) as Lu et al. write them (first order, then the 2M correction)."""
    schedule = get_schedule("cosine")
    field, x = AnalyticField(TARGET, schedule), _noise(schedule, 50)
    times = [0.2, 0.4, 0.7]
    values = [(float(schedule(u).alpha), float(schedule(u).sigma)) for u in times]
    lam = [math.log(a / s) for a, s in values]
    d0 = field.data_prediction(times[0], x)
    h0 = lam[1] - lam[0]
    x1 = values[1][1] / values[0][1] * x - values[1][0] * math.expm1(-h0) * d0
    d1 = field.data_prediction(times[1], x1)
    h1 = lam[2] - lam[1]
    r = h0 / h1
    corrected = (1 + 1 / (2 * r)) * d1 - 1 / (2 * r) * d0
    x2 = values[2][1] / values[1][1] * x1 - values[2][0] * math.expm1(-h1) * corrected
    ours = sample(field, x, "dpmpp_2m", grid=torch.tensor(times, dtype=torch.float64)).x
    assert torch.allclose(ours, x2, rtol=0, atol=1e-12)


def _lambda_uniform_order(method: str, steps: int) -> float:
    """Local order on a grid uniform in λ = log(α/σ) from −5 to 5 (every λ-step the same: the multistep
    coefficients of the exponential integrators are those of constant steps there)."""
    schedule = get_schedule("cond_ot")
    field, x0 = AnalyticField(TARGET, schedule), _noise(schedule)
    errors = []
    for n in (steps, 2 * steps):
        grid = schedule.t_from_snr(torch.exp(torch.linspace(-5.0, 5.0, n + 1, dtype=torch.float64)))
        exact = TARGET.flow_map(x0, schedule, t0=float(grid[0]), t1=float(grid[-1]))
        errors.append(float((sample(field, x0, method, grid=grid).x - exact).norm(dim=1).mean()))
    return math.log2(errors[0] / errors[1])


def test_dpmpp_3m_as_shipped_is_second_order():
    """DPM-Solver++(3M) as the reference code, diffusers and k-diffusion write it converges at order 2 (2.03 here), a
    third of DPM-Solver++(2M)'s error at the same N but not third order (fmcore.solvers.diffusion_samplers)."""
    assert abs(_lambda_uniform_order("dpmpp_3m", 128) - 2.0) < 0.1
    assert abs(_lambda_uniform_order("dpmpp_2m", 128) - 2.0) < 0.1


@pytest.mark.parametrize("h", [0.4, 0.1, 0.025])
def test_the_3m_second_difference_is_half_what_its_phi_3_term_needs(h):
    """One 3M step (in y = x/σ, divided by e^{λ_t}) for D(λ) = λ², exactly quadratic, from λ = 0 with the exact history
    at −h and −2h. The exponential integrator is then exact: ∫₀ʰ e^{λ−h} λ² dλ = h² − 2h + 2 − 2e^{−h}. With twice the
    shipped d₂ the step is exact to round-off; as shipped it is short by exactly −φ₃·d₂ = −φ₃h² (d₂ = h² = h²D''/2)."""
    d_0, m_1, m_2 = 0.0, h * h, 4 * h * h
    d_1_0, d_1_1 = d_0 - m_1, m_1 - m_2  # r₀ = r₁ = 1
    d_1, d_2 = d_1_0 + (d_1_0 - d_1_1) / 2, (d_1_0 - d_1_1) / 2
    phi_2 = math.expm1(-h) / h + 1.0
    phi_3 = phi_2 / h - 0.5
    exact = h * h - 2 * h + 2 - 2 * math.exp(-h)
    shipped = -math.expm1(-h) * d_0 + phi_2 * d_1 - phi_3 * d_2
    doubled = -math.expm1(-h) * d_0 + phi_2 * d_1 - phi_3 * (2 * d_2)
    assert d_2 == pytest.approx(h * h, rel=1e-12)  # b of D = a u + b u², u = λ/h: h² D''/2
    assert doubled == pytest.approx(exact, rel=1e-9, abs=1e-15)
    assert exact - shipped == pytest.approx(-phi_3 * d_2, rel=1e-9)  # as shipped: the missing half


def _on_edms_grid(schedule_name: str):
    """(field, x0, EDM's 12-step grid, its levels σ/α, α along it, the denoiser D(x̃; σ̃) of a reference
    implementation in EDM's coordinates, defined on those levels)."""
    schedule = get_schedule(schedule_name)
    field, x0 = AnalyticField(TARGET, schedule), _noise(schedule)
    grid = get_grid("karras", 12, schedule, t0=edm_start_time(schedule))
    values = schedule(grid)
    levels = (values.sigma / values.alpha).tolist()
    time_of = dict(zip(levels, grid.tolist(), strict=True))
    alpha_of = dict(zip(levels, values.alpha.tolist(), strict=True))

    def denoiser(x_scaled, level):
        return field.data_prediction(time_of[level], alpha_of[level] * x_scaled)

    return field, x0, grid, levels, values.alpha, denoiser


def _reference_ipndm(denoiser, x, sigmas, max_order):
    """zju-pi/diff-sampler's iPNDM (as ComfyUI's k-diffusion ships it), transcribed: EDM coordinates, noise levels
    ``sigmas`` ending at 0, ``denoiser(x, sigma)``."""
    buffer = []
    for i in range(len(sigmas) - 1):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, t_cur)
        d_cur = (x - denoised) / t_cur
        order = min(max_order, i + 1)
        if t_next == 0:
            x = denoised
        elif order == 1:
            x = x + (t_next - t_cur) * d_cur
        elif order == 2:
            x = x + (t_next - t_cur) * (3 * d_cur - buffer[-1]) / 2
        elif order == 3:
            x = x + (t_next - t_cur) * (23 * d_cur - 16 * buffer[-1] + 5 * buffer[-2]) / 12
        else:
            x = x + (t_next - t_cur) * (55 * d_cur - 59 * buffer[-1] + 37 * buffer[-2] - 9 * buffer[-3]) / 24
        if len(buffer) == max_order - 1:
            buffer = [*buffer[1:], d_cur]
        else:
            buffer.append(d_cur)
    return x


@pytest.mark.parametrize("max_order", [1, 2, 3, 4])
@pytest.mark.parametrize("schedule_name", ["cond_ot", "vp"])
def test_ipndm_is_the_reference_implementation(schedule_name, max_order):
    field, x0, grid, levels, alphas, denoiser = _on_edms_grid(schedule_name)
    theirs = float(alphas[-1]) * _reference_ipndm(denoiser, x0 / float(alphas[0]), levels, max_order)
    ours = sample(field, x0, "ipndm", grid=grid, max_order=max_order).x
    assert float((ours - theirs).abs().max()) < 1e-12


def test_ipndm_on_edms_grid_is_second_order():
    """On EDM's ρ = 7 grid the steps vary, and the constant-step weights make it second order (2.11 at 128 → 256; on
    steps constant in σ/α it shows 3.1 to 4.2 over N = 32 … 128, before its first, Euler, step's O(h²) takes over)."""
    assert abs(_local_order(get_schedule("cond_ot"), "ipndm", "karras", 128) - 2.0) < 0.15
    with pytest.raises(ValueError, match="max_order must be 1, 2, 3 or 4"):
        sample(AnalyticField(TARGET, get_schedule("vp")), _noise(get_schedule("vp")), "ipndm", steps=4, max_order=2.5)


# (schedule, method, grid and its parameters, N of the asymptotic pair 128 → 256, order). Their last step to σ/α = 0
# from the clipped 0.002 of the noise-level grids is a floor of about 5e-6 for DEIS (DDIM's step there): a lower
# sigma_min keeps the pair in the asymptotic range. LMS integrates its polynomial to σ/α = 0 and has no such floor.
# DPM-Solver-3 on vp: the cosine grid does not resolve vp's data end for order 3 (2.05), the log-SNR grid does
# (3.10, from 3.55 at N = 16), down to sigma_min = 1e-5, below its default clip's floor.
GRID_ORDERS = [
    ("cond_ot", "deis", "cosine", {}, 3), ("cosine", "deis", "cosine", {}, 3),
    ("vp", "deis", "karras", {"sigma_min": 1e-4}, 3),
    ("cond_ot", "lms", "karras", {}, 4), ("cosine", "lms", "karras", {}, 4), ("vp", "lms", "karras", {}, 4),
    ("vp", "dpm_solver_3s", "logsnr", {"sigma_min": 1e-5}, 3),
    ("cond_ot", "deis_tab", "cosine", {}, 3), ("cosine", "deis_tab", "cosine", {}, 3),
    ("vp", "deis_tab", "karras", {"sigma_min": 1e-4}, 3),
]


@pytest.mark.parametrize(("schedule_name", "method", "grid_name", "grid_params", "order"), GRID_ORDERS)
def test_orders_on_grids_with_their_parameters(schedule_name, method, grid_name, grid_params, order):
    """Measured 2.93, 2.91, 2.95 (DEIS), 3.88 ×3 (LMS), 3.10 (DPM-Solver-3) and 2.99, 2.99, 2.96 (DEIS's tAB) here;
    DEIS with the default sigma_min on vp: 3.19 → 2.11 from N = 64 as the last step's floor takes over."""
    schedule = get_schedule(schedule_name)
    field, x0 = AnalyticField(TARGET, schedule), _noise(schedule)
    start = get_method(method).start(schedule)

    def error(steps: int) -> float:
        result = sample(field, x0, method, grid=get_grid(grid_name, steps, schedule, t0=start, **grid_params))
        return float((result.x - TARGET.flow_map(x0, schedule, t0=result.t0)).norm(dim=1).mean())

    measured = math.log2(error(128) / error(256))
    assert abs(measured - order) < 0.15, f"{method} on {schedule_name}: local order {measured:.3f}"


# SA-Solver at τ = 0 (its ODE): order min(predictor_order + 1, corrector_order), the corrector through the new end
# alone (corrector_order = 1) a first-order step. Measured here at 128 → 256 on the cosine grid: 0.95/0.95 (1, 1),
# 0.99/0.99 (2, 1), 3.10/3.14 (2, 3) on cond_ot/cosine; the default (2, 2) falls toward 2 from above (2.72, 2.42,
# 2.22, 2.11 from N = 32 on cond_ot), 2.05/2.09 at 512 → 1024.
SA_ORDERS = [((1, 1), 128, 1), ((2, 1), 128, 1), ((2, 3), 128, 3), ((2, 2), 512, 2)]


@pytest.mark.parametrize(("orders", "steps", "order"), SA_ORDERS, ids=[f"{p}{c}" for (p, c), _, _ in SA_ORDERS])
@pytest.mark.parametrize("schedule_name", ["cond_ot", "cosine"])
def test_sa_solver_order_is_its_corrector_or_one_above_its_predictor(schedule_name, orders, steps, order):
    schedule = get_schedule(schedule_name)
    options = {"tau": 0.0, "predictor_order": orders[0], "corrector_order": orders[1]}
    measured = _local_order(schedule, "sa_solver", "cosine", steps, **options)
    assert abs(measured - order) < 0.15, f"sa_solver {orders} on {schedule_name}: local order {measured:.3f}"


def test_sa_solver_weights_are_the_exponentially_weighted_lagrange_integrals():
    """:func:`exponential_lagrange_weights` (closed form) against quadrature of e^{κu} ℓ_j(u) on uneven nodes; their sum
    is ∫ e^{κu} du (the basis sums to 1)."""
    from scipy.integrate import quad

    from fmcore.solvers.sa_solver import exponential_lagrange_weights

    nodes, start, end, rate = [0.0, -0.37, -0.81, -1.6], -0.45, 0.0, 1.7

    def basis(j: int, u: float) -> float:
        return math.prod((u - other) / (nodes[j] - other) for k, other in enumerate(nodes) if k != j)

    weights = exponential_lagrange_weights(nodes, start, end, rate)
    for j, weight in enumerate(weights):
        integral = quad(lambda u, j=j: math.exp(rate * u) * basis(j, u), start, end)[0]
        assert weight == pytest.approx(integral, rel=1e-12, abs=1e-14)
    assert sum(weights) == pytest.approx((math.exp(rate * end) - math.exp(rate * start)) / rate, rel=1e-12)


@pytest.mark.parametrize("level_t", [0.31, 0.0])
def test_tab_weights_are_the_time_lagrange_basis_integrated_in_the_noise_level(level_t):
    """:func:`tab_weights` (Gauss–Legendre) against ``scipy.integrate.quad`` of ℓ_j(t(σ̃)) dσ̃ with the Lagrange basis
    in t written out, on vp (t(σ̃) far from affine), through three levels, to a level and to the data."""
    from scipy.integrate import quad

    from fmcore.solvers.diffusion_samplers import tab_weights

    schedule, levels = get_schedule("vp"), [0.55, 0.9, 1.7]
    times = [float(schedule.t_from_snr(1.0 / level)) for level in levels]

    def basis(j: int, level: float) -> float:
        t = float(schedule.t_from_snr(1.0 / level)) if level > 0.0 else 1.0
        return math.prod((t - other) / (times[j] - other) for k, other in enumerate(times) if k != j)

    weights = tab_weights(levels, level_t, schedule)
    for j, weight in enumerate(weights):
        integral = quad(lambda level, j=j: basis(j, level), levels[0], level_t, epsabs=1e-14, epsrel=1e-13)[0]
        assert weight == pytest.approx(integral, rel=1e-12, abs=1e-14)
    assert sum(weights) == pytest.approx(level_t - levels[0], rel=1e-13)  # the basis sums to 1


def test_deis_tab_is_second_order_at_order_two_and_loses_to_rho_ab_at_few_steps_on_vp():
    """tAB at max_order 2: 1.99 on cond_ot (cosine grid). At 8 steps on vp (Karras grid) its polynomial in t is 4.9×
    less accurate than diffusers' form (ρAB, in log σ̃: 0.148 vs 0.0305) — the DEIS paper's own verdict, ρAB over
    tAB at few steps."""
    assert abs(_local_order(get_schedule("cond_ot"), "deis_tab", "cosine", 128, max_order=2) - 2) < 0.15
    schedule = get_schedule("vp")
    grid = get_grid("karras", 8, schedule, t0=get_method("deis").start(schedule))
    x0 = _noise(schedule)
    field = AnalyticField(TARGET, schedule)

    def error(method: str) -> float:
        result = sample(field, x0, method, grid=grid)
        return float((result.x - TARGET.flow_map(x0, schedule, t0=result.t0)).norm(dim=1).mean())

    assert error("deis_tab") > 3 * error("deis")


def _reference_lms(denoiser, x, sigmas, order):
    """k-diffusion's ``sample_lms``, transcribed: the coefficients by ``scipy.integrate.quad`` of the Lagrange basis."""
    from scipy import integrate

    def coefficient(current_order, i, j):
        def basis(tau):
            product = 1.0
            for k in range(current_order):
                if j != k:
                    product *= (tau - sigmas[i - k]) / (sigmas[i - j] - sigmas[i - k])
            return product

        return integrate.quad(basis, sigmas[i], sigmas[i + 1], epsrel=1e-4)[0]

    slopes = []
    for i in range(len(sigmas) - 1):
        slopes.append((x - denoiser(x, sigmas[i])) / sigmas[i])
        slopes = slopes[-order:]
        current = min(i + 1, order)
        x = x + sum(coefficient(current, i, j) * d for j, d in enumerate(reversed(slopes)))
    return x


def _reference_deis(denoiser, x, sigmas, order):
    """diffusers' ``DEISMultistepScheduler`` updates (algorithm_type "deis"), transcribed in EDM coordinates: its
    ``ind_fn`` closed forms of orders 2 and 3; DDIM on a last step to 0."""
    log = math.log

    def ind_2(t, b, c):  # ∫ (log t − log c)/(log b − log c) dt
        return t * (-log(c) + log(t) - 1) / (log(b) - log(c))

    def ind_3(t, b, c, d):
        numerator = t * (log(c) * (log(d) - log(t) + 1) - log(d) * log(t) + log(d) + log(t) ** 2 - 2 * log(t) + 2)
        return numerator / ((log(b) - log(c)) * (log(b) - log(d)))

    noises = []
    for i in range(len(sigmas) - 1):
        rho_t, rho_s = sigmas[i + 1], sigmas[i]
        noises = [*noises, (x - denoiser(x, rho_s)) / rho_s][-order:]
        current = min(i + 1, order)
        if current == 1 or rho_t == 0:
            x = x + (rho_t - rho_s) * noises[-1]
        elif current == 2:
            m0, m1 = noises[-1], noises[-2]
            r0, r1 = sigmas[i], sigmas[i - 1]
            x = x + (ind_2(rho_t, r0, r1) - ind_2(r0, r0, r1)) * m0 + (ind_2(rho_t, r1, r0) - ind_2(r0, r1, r0)) * m1
        else:
            m0, m1, m2 = noises[-1], noises[-2], noises[-3]
            r0, r1, r2 = sigmas[i], sigmas[i - 1], sigmas[i - 2]
            x = (x + (ind_3(rho_t, r0, r1, r2) - ind_3(r0, r0, r1, r2)) * m0
                 + (ind_3(rho_t, r1, r2, r0) - ind_3(r0, r1, r2, r0)) * m1
                 + (ind_3(rho_t, r2, r0, r1) - ind_3(r0, r2, r0, r1)) * m2)
    return x


@pytest.mark.parametrize(("method", "reference", "max_order"), [("lms", _reference_lms, 4), ("lms", _reference_lms, 2),
                                                              ("deis", _reference_deis, 3), ("deis", _reference_deis, 2)])
@pytest.mark.parametrize("schedule_name", ["cond_ot", "vp"])
def test_lms_and_deis_are_their_reference_implementations(schedule_name, method, reference, max_order):
    """Exact polynomial integrals (ours) against quad (k-diffusion's LMS, exact for these cubics to round-off) and
    against diffusers' closed forms for DEIS's log-σ Lagrange basis, on EDM's grid."""
    field, x0, grid, levels, alphas, denoiser = _on_edms_grid(schedule_name)
    theirs = float(alphas[-1]) * reference(denoiser, x0 / float(alphas[0]), levels, max_order)
    ours = sample(field, x0, method, grid=grid, max_order=max_order).x
    assert float((ours - theirs).abs().max()) < 1e-11 * float(theirs.abs().max())


@pytest.mark.parametrize(("method", "options"), [("ddim", {"eta": 1.0}), ("dpmpp_2m_sde", {}), ("dpmpp_3m_sde", {}),
                                                 ("dpmpp_2s_ancestral", {}), ("dpmpp_sde", {}), ("restart", {}),
                                                 ("sa_solver", {}), ("edm_heun", {"churn": 10.0})])
def test_stochastic_samplers_converge_in_law(method, options):
    """Bures W2 between the sample's moments and the target's: falls with the step count, toward the sampling floor."""
    schedule = get_schedule("cosine")
    field = AnalyticField(TARGET, schedule)
    x0 = _noise(schedule, 20_000, seed=3)
    coarse = gaussian_fit_w2(sample(field, x0, method, steps=4, generator=1, **options).x, TARGET)
    fine = gaussian_fit_w2(sample(field, x0, method, steps=64, generator=1, **options).x, TARGET)
    floor = gaussian_fit_w2(TARGET.sample(20_000, generator=torch.Generator().manual_seed(4)), TARGET)
    assert fine < coarse / 2 and fine < 4 * floor + 0.01, (coarse, fine, floor)


def test_nfe_and_start():
    field = AnalyticField(TARGET, get_schedule("cond_ot"))
    x0 = _noise(get_schedule("cond_ot"), 10)
    assert sample(field, x0, "ddim", steps=7).nfe == 7
    assert sample(field, x0, "dpmpp_2m", steps=7).nfe == 7
    edm = sample(field, x0, "edm_heun", steps=7)
    assert edm.nfe == 2 * 7 - 1  # Euler on the last step, to σ = 0
    assert edm.t0 == pytest.approx(1 / (1 + EDM_SIGMA_MAX)) == edm_start_time(get_schedule("cond_ot"))
    assert edm_start_time(get_schedule("vp")) == 0.0  # α_0 > 0: σ/α is finite at t = 0
    shifted = AnalyticField(TARGET, get_schedule("cond_ot", sigma_min=0.01))
    assert sample(shifted, x0, "edm_heun", steps=7).nfe == 2 * 7  # σ_1 > 0: Heun on every step
    assert sample(field, x0, "dpm_solver_2s", steps=7).nfe == 2 * 7 - 1  # one NFE on a last step to σ = 0
    assert sample(field, x0, "dpm_solver_3s", steps=7).nfe == 3 * 7 - 2
    assert sample(field, x0, "dpmpp_sde", steps=7, generator=0).nfe == 2 * 7 - 1


def test_restart_is_edm_heun_plus_its_restarts():
    """No restarts: EDM's Heun on the grid, to round-off. With ComfyUI's default (from the positive grid level nearest
    σ/α = 0.1 back up to the one nearest 2, 10 Karras levels, twice): the plan has the grid's steps and two copies of
    the restart's 9, in that order, and NFE 2N − 1 + 2·2·9 (no restart step ends at σ = 0)."""
    from fmcore.solvers.restart_sampling import karras_levels, restart_plan

    schedule = get_schedule("vp")
    field, x0 = AnalyticField(TARGET, schedule), _noise(schedule, 100)
    plain = sample(field, x0, "restart", steps=10, restart_times=0).x
    assert float((plain - sample(field, x0, "edm_heun", steps=10).x).abs().max()) < 1e-13
    values = schedule(get_grid("uniform", 10))
    levels = (values.sigma / values.alpha).tolist()
    plan = restart_plan(levels, 0.1, 2.0, 10, 2)
    low, high = levels[9], levels[6]  # 0.340 and 2.028: the positive levels nearest 0.1 and 2
    restart = karras_levels(10, low, high)
    assert restart[0] == pytest.approx(high, rel=1e-12) and restart[-1] == pytest.approx(low, rel=1e-12)
    restart_steps = list(zip(restart[:-1], restart[1:], strict=True))
    assert plan == [*zip(levels[:9], levels[1:10], strict=True), *restart_steps, *restart_steps, (levels[9], levels[10])]
    assert sample(field, x0, "restart", steps=10, generator=0).nfe == 2 * 10 - 1 + 2 * 2 * 9


def test_dpmpp_sde_without_noise_is_dpmpp_2s():
    """η = 0 leaves DPM++ SDE's two sub-steps deterministic: DPM-Solver++(2S), to round-off."""
    schedule = get_schedule("cosine")
    field, x0 = AnalyticField(TARGET, schedule), _noise(schedule)
    quiet = sample(field, x0, "dpmpp_sde", steps=10, eta=0.0).x
    assert float((quiet - sample(field, x0, "dpmpp_2s", steps=10).x).abs().max()) < 1e-13


def test_method_options_are_checked():
    field = AnalyticField(TARGET, get_schedule("cosine"))
    x0 = _noise(get_schedule("cosine"), 10)
    with pytest.raises(ValueError, match="eta"):
        sample(field, x0, "ddim", steps=4, eta=-1.0)
    with pytest.raises(TypeError, match=r"takes no option\(s\) \['churn'\]; its options: \['eta'\]"):
        sample(field, x0, "ddim", steps=4, churn=1.0)
    with pytest.raises(TypeError, match=r"its options: none"):
        sample(field, x0, "rk4", steps=4, eta=0.5)
    with pytest.raises(ValueError, match="needs a generator"):
        sample(field, x0, "ddim", steps=4, eta=0.5)
    with pytest.raises(ValueError, match="start the grid at t ≥"):
        sample(field, x0, "edm_heun", grid=torch.linspace(0, 1, 5, dtype=torch.float64))
    sample(field, x0, "ddim", steps=4)  # η = 0 draws nothing: no generator needed


def test_a_method_needing_data_predictions_says_so():
    class VelocityOnly:
        dim, schedule = TARGET.dim, get_schedule("cosine")

        def __call__(self, t, x):
            return AnalyticField(TARGET, self.schedule)(t, x)

    with pytest.raises(TypeError, match="needs the field's data prediction"):
        sample(VelocityOnly(), _noise(get_schedule("cosine"), 4), "dpmpp_2m", steps=4)


@pytest.mark.parametrize("schedule_name", ["cond_ot", "cosine", "vp"])
def test_prediction_conversions_recover_the_closed_forms(schedule_name):
    schedule = get_schedule(schedule_name)
    field = AnalyticField(get_target("gmm", K=3, d=2), schedule)
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for t in (0.05, 0.5, 0.95):
        values, velocity = schedule(t), field(t, x)
        data, noise = field.data_prediction(t, x), field.noise_prediction(t, x)
        assert torch.allclose(data_prediction_from_velocity(values, x, velocity), data, atol=1e-10)
        assert torch.allclose(noise_prediction_from_velocity(values, x, velocity), noise, atol=1e-10)
        assert torch.allclose(data_prediction_from_noise_prediction(values, x, noise), data, atol=1e-9)
        assert torch.allclose(noise_prediction_from_data_prediction(values, x, data), noise, atol=1e-9)


@pytest.mark.parametrize("objective", ["cfm", "dsm", "x1"])
def test_learned_fields_give_every_prediction_consistently(objective):
    """x = αD + σE and u = α̇D + σ̇E hold for what a learned field returns, whatever its network predicts."""
    torch.manual_seed(0)
    schedule = get_schedule("cosine")
    field = LearnedField(SinusoidalMLP(2, width=16, depth=2).double(), schedule, objective)
    x = torch.randn(32, 2, dtype=torch.float64)
    with torch.no_grad():
        for t in (0.2, 0.6):
            values = schedule(t)
            data, noise, velocity = field.data_prediction(t, x), field.noise_prediction(t, x), field(t, x)
            assert torch.allclose(values.alpha * data + values.sigma * noise, x, atol=1e-10)
            assert torch.allclose(values.d_alpha * data + values.d_sigma * noise, velocity, atol=1e-10)


@pytest.mark.parametrize("method", ["ddim", "dpmpp_2m", "dpmpp_3m", "unipc", "ipndm", "deis", "lms", "dpmpp_2s",
                                    "dpm_solver_2s", "dpm_solver_3s", "edm_heun"])
@pytest.mark.parametrize("schedule_name", ["cond_ot", "cosine", "vp"])
def test_exact_law_of_the_deterministic_samplers_matches_monte_carlo(method, schedule_name):
    """The law read off three probes gives the strong error that 20 000 sampled noises measure (RMS distance to the
    exact flow map from the sampler's start; Monte-Carlo relative error about 0.5 %)."""
    from fmcore.exact import exact_output_law

    schedule = get_schedule(schedule_name)
    law = exact_output_law(TARGET, schedule, method, steps=16)
    x0 = _noise(schedule, 20_000, seed=7)
    result = sample(AnalyticField(TARGET, schedule), x0, method, steps=16)
    assert result.t0 == law.t0
    measured = float(((result.x - TARGET.flow_map(x0, schedule, t0=result.t0)) ** 2).sum(1).mean().sqrt())
    assert law.strong_error(law.t0) == pytest.approx(measured, rel=0.03)
    assert law.w2_to_target() > 0


@pytest.mark.parametrize("method", ["ddim", "dpmpp_2m", "dpmpp_3m", "unipc", "ipndm", "deis", "lms", "dpmpp_2s",
                                    "dpm_solver_2s", "dpm_solver_3s", "edm_heun"])
@pytest.mark.parametrize("axis_aligned", [False, True], ids=["rotated", "axis-aligned"])
def test_three_probes_give_the_law_that_d_plus_one_probes_give(method, axis_aligned):
    """(P, Q) from the probes 0, 1 and a random one (in eigen coordinates) equals, to 1e-12, the map read off the d + 1
    probes 0 and the eigenvectors u_1 … u_d — written out here, as the law was computed before."""
    from fmcore import GaussianMixture
    from fmcore.exact import exact_output_law

    target = TARGET if not axis_aligned else GaussianMixture([1.0], TARGET.means, TARGET.eigenvalues, covariance_type="diag")
    schedule = get_schedule("cosine")
    law = exact_output_law(target, schedule, method, steps=12)
    basis = torch.eye(target.dim, dtype=torch.float64) if target.eigenvectors is None else target.eigenvectors[0]
    probes = torch.cat([torch.zeros(1, target.dim, dtype=torch.float64), basis.T])
    rotated = sample(AnalyticField(target, schedule), probes, method, steps=12).x @ basis
    offset, response = rotated[0], rotated[1:] - rotated[0]
    torch.testing.assert_close(law.offset, offset, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(law.gain, torch.diagonal(response), rtol=1e-12, atol=1e-12)
    assert float((response - torch.diag(torch.diagonal(response))).abs().max()) < 1e-12  # the map is diagonal


def test_a_probed_map_that_couples_eigendirections_is_refused(monkeypatch):
    """The random probe catches a map that is not diagonal in the eigenbasis (here: a sampler that mixes coordinates)."""
    import dataclasses

    from fmcore.exact import exact_output_law
    from fmcore.solvers.methods import METHODS

    ddim = METHODS["ddim"]

    def coupling(request):
        x, trajectory, info = ddim.integrate(request)
        return x + 1e-3 * request.x0.roll(1, dims=1), trajectory, info

    monkeypatch.setitem(METHODS, "coupled_ddim", dataclasses.replace(ddim, name="coupled_ddim", integrate=coupling))
    with pytest.raises(RuntimeError, match="coupled_ddim is not an affine map diagonal in the target's eigenbasis"):
        exact_output_law(TARGET, get_schedule("cosine"), "coupled_ddim", steps=4)


def test_cells_get_the_exact_law_of_deterministic_and_stochastic_samplers():
    """A stochastic sampler's cell gets its exact W2 (of the law it samples, at its options), not a strong error."""
    from fmbench.cells import CellSpec, run_cell

    from fmcore.exact import exact_output_law

    base = {"target_params": {"d": 3, "condition_number": 4}, "steps": 8, "n": 64}
    deterministic = run_cell(CellSpec("gaussian", "cosine", "ddim", **base))
    stochastic = run_cell(CellSpec("gaussian", "cosine", "ddim", method_params={"eta": 1.0}, **base))
    assert deterministic["status"] == stochastic["status"] == "ok"
    assert deterministic["w2_exact_law"] > 0 and "strong_error_exact" in deterministic
    target, schedule = get_target("gaussian", d=3, condition_number=4), get_schedule("cosine")
    expected = exact_output_law(target, schedule, "ddim", steps=8, eta=1.0).w2_to_target()
    assert stochastic["w2_exact_law"] == pytest.approx(expected, rel=1e-12)
    assert expected != pytest.approx(deterministic["w2_exact_law"], rel=1e-3)
    assert "strong_error_exact" not in stochastic and "strong_error" not in stochastic


def _gaussian_denoiser(scaled: torch.Tensor, level: float) -> torch.Tensor:
    """EDM's ideal denoiser for Gaussian data, from the target's moments alone: for x̃ = x₁ + σ̃ε,
    D(x̃; σ̃) = E[x₁ | x̃] = μ + C (C + σ̃² I)⁻¹ (x̃ − μ)."""
    mean, cov = TARGET.mean(), TARGET.covariance()
    gain = torch.linalg.solve(cov + level**2 * torch.eye(TARGET.dim, dtype=torch.float64), cov)  # symmetric pair
    return mean + (scaled - mean) @ gain.T


@pytest.mark.parametrize("schedule_name", ["cond_ot", "cosine"])
def test_edm_heun_with_churn_is_edm_algorithm_2(schedule_name):
    """EDM's Algorithm 2 (Karras et al. 2022; S_tmin = 0, S_tmax = ∞, S_noise = 1) written here in σ̃ with the ideal
    Gaussian denoiser, on the same levels and the same noise: the raised level of each step lies *before* the grid's
    first time on the first step, and D must be evaluated there (a clamp into the grid moved it by up to 2.6e-3)."""
    schedule = get_schedule(schedule_name)
    x0 = _noise(schedule, 200)
    steps, churn, seed = 10, 5.0, 7
    result = sample(AnalyticField(TARGET, schedule), x0, "edm_heun", steps=steps, churn=churn, generator=seed)
    values = schedule(result.grid)
    alphas, sigmas = values.alpha, values.sigma
    levels = (sigmas / alphas).tolist()  # σ̃_i, from σ̃_0 = 80 down to 0
    gamma = min(churn / steps, math.sqrt(2) - 1)
    generator, x = torch.Generator().manual_seed(seed), x0 / float(alphas[0])
    for level, next_level in zip(levels[:-1], levels[1:], strict=True):
        raised = level * (1 + gamma)
        x_hat = x + math.sqrt(raised**2 - level**2) * torch.randn(x.shape, dtype=torch.float64, generator=generator)
        slope = (x_hat - _gaussian_denoiser(x_hat, raised)) / raised
        x = x_hat + (next_level - raised) * slope
        if next_level != 0:
            slope_next = (x - _gaussian_denoiser(x, next_level)) / next_level
            x = x_hat + (next_level - raised) * (0.5 * slope + 0.5 * slope_next)
    assert levels[0] * (1 + gamma) > levels[0] and float(result.grid[0]) > 0  # the first raised level is off the grid
    torch.testing.assert_close(result.x, float(alphas[-1]) * x, rtol=1e-9, atol=1e-9)  # float64: round-off only
