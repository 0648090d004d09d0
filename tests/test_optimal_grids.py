"""Optimal grids from the differentiable exact law: the law on a grid against the probe of the sampler's own code,
its gradient against finite differences, the optimiser against brute-force searches."""

import itertools
import math

import pytest
import torch

from fmcore.exact import exact_output_law
from fmcore.grids import get_grid
from fmcore.optimal_grids import GridObjective, MonotoneGrid, optimal_grid
from fmcore.schedules import get_schedule
from fmcore.solvers import get_diffusion
from fmcore.solvers.laws import PROBED, GaussianProblem, LawRequest, propagate_distinct
from fmcore.solvers.methods import get_method
from fmcore.targets import Gaussian, get_target

F64 = torch.float64


def _uneven(grid: torch.Tensor, power: float = 1.4) -> torch.Tensor:
    """The same ends, times bunched toward the first one."""
    start, end = grid[0], grid[-1]
    return start + (end - start) * ((grid - start) / (end - start)) ** power


@pytest.mark.parametrize("schedule_name", ["vp", "cond_ot", "cosine"])
@pytest.mark.parametrize("method, diffusion, options", [
    ("euler", None, {}), ("heun", None, {}), ("midpoint", None, {}), ("rk4", None, {}),
    ("euler_maruyama", "constant", {}), ("euler_maruyama", "proportional", {}),
    ("ddim", None, {}), ("ddim", None, {"eta": 0.5}), ("euler_ancestral", None, {}), ("edm_heun", None, {}),
    ("edm_heun", None, {"churn": 3.0}), ("dpmpp_2m", None, {}), ("unipc", None, {})])
def test_the_law_on_a_grid_is_the_probe_of_the_samplers_own_code(schedule_name, method, diffusion, options):
    """The differentiable recursion against the method's own float64 integrator, probed (an independent
    computation: the probe never sees the recursion), on an uneven grid; relative 1e-12 (measured: 1e-16 for the
    Runge–Kutta, DDIM and DPM/UniPC recursions, up to 5e-14 for EDM's, whose probe runs in x/α from level 80)."""
    target, schedule = get_target("gaussian"), get_schedule(schedule_name)
    noise = None if diffusion is None else get_diffusion(diffusion)
    objective = GridObjective(target, schedule, method, noise, options=options)
    grid = _uneven(objective.default_grid(9))
    probed = exact_output_law(target, schedule, method, grid=grid, diffusion=noise, law=PROBED,
                              **options).w2_to_target()
    assert float(objective(grid)) == pytest.approx(probed, rel=1e-12)


@pytest.mark.parametrize("method, options", [("ddim", {"eta": 1.0}), ("edm_heun", {"churn": 3.0}), ("dpmpp_2m", {}),
                                             ("unipc", {})])
def test_a_written_diffusion_law_is_the_probe_direction_by_direction(method, options):
    """P, Q and W of the written law against the probe on the CIFAR-10 spectrum (3 072 directions, 9 of them zero,
    on a grid that stops at t = 1 − 1e-3) and on the 8-d Gaussian (nonzero mean: Q is tested); relative 1e-12."""
    for target, end in ((get_target("cifar10"), 1 - 1e-3), (get_target("gaussian"), 1.0)):
        schedule = get_schedule("cosine")
        component = target.component(0)
        problem = GaussianProblem(component.variances, component.eigen_mean, schedule)
        grid = GridObjective(target, schedule, method, options=options).default_grid(8)
        grid = _uneven(grid[0] + (grid - grid[0]) * (end - grid[0]) / (grid[-1] - grid[0]))
        request = LawRequest(method, grid, None, {**get_method(method).options, **options})
        written = propagate_distinct(get_method(method).exact_law, problem, request, on_grid=True)
        probed = propagate_distinct(PROBED, problem, request)
        for mine, theirs in zip((written.P, written.Q, written.W), (probed.P, probed.Q, probed.W), strict=True):
            assert torch.allclose(mine, theirs, rtol=1e-12, atol=1e-12 * float(theirs.abs().max()))


@pytest.mark.parametrize("method", ["euler", "heun", "rk4"])
def test_the_strong_error_on_a_grid_is_the_exact_laws(method):
    target, schedule = get_target("gaussian"), get_schedule("vp")
    objective = GridObjective(target, schedule, method, metric="strong_error")
    grid = _uneven(objective.default_grid(7))
    assert float(objective(grid)) == pytest.approx(exact_output_law(target, schedule, method, grid=grid).strong_error(),
                                                   rel=1e-12)


@pytest.mark.parametrize("method", ["heun", "dpmpp_2m"])
def test_the_w2_to_the_marginal_on_a_grid_is_the_exact_laws(method):
    """Metric ``w2_marginal`` on a grid that stops at t = 0.99 is the exact law's W2 to the marginal there, not the W2
    to the data (smaller or larger: dpmpp_2m's error here partly cancels the stop's), and on a grid that ends at
    t = 1 it is ``w2``."""
    target, schedule = get_target("gaussian"), get_schedule("vp")
    objective = GridObjective(target, schedule, method, metric="w2_marginal")
    stopped = _uneven(torch.linspace(float(objective.default_grid(6)[0]), 0.99, 7, dtype=F64))
    law = exact_output_law(target, schedule, method, grid=stopped)
    assert float(objective(stopped)) == pytest.approx(law.w2_to_marginal(), rel=1e-12)
    assert abs(float(objective(stopped)) / law.w2_to_target() - 1) > 0.01  # the stop's own error is not in it
    full = objective.default_grid(6)
    assert float(objective(full)) == pytest.approx(float(GridObjective(target, schedule, method)(full)), rel=1e-14)


@pytest.mark.parametrize("method, diffusion, metric, options", [
    ("heun", None, "w2", {}), ("rk4", None, "strong_error", {}), ("euler_maruyama", "constant", "w2", {}),
    ("ddim", None, "w2", {"eta": 0.5}), ("edm_heun", None, "w2", {"churn": 3.0}), ("edm_heun", None, "strong_error", {}),
    ("dpmpp_2m", None, "w2", {}), ("unipc", None, "strong_error", {})])
def test_the_gradient_is_the_finite_difference_of_the_exact_law(method, diffusion, metric, options):
    """Autograd's gradient in each interior time against central differences of the float64 law, step 1e-6: their
    truncation error is O(1e-12 · W2''') and round-off ~1e-16 / 1e-6, so 1e-7 relative to the largest component."""
    target, schedule = get_target("gaussian"), get_schedule("vp")
    objective = GridObjective(target, schedule, method, None if diffusion is None else get_diffusion(diffusion),
                              metric=metric, options=options)
    grid = _uneven(objective.default_grid(6)).clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(objective(grid), grid)
    step = 1e-6
    differences = []
    for k in range(1, 6):
        up, down = grid.detach().clone(), grid.detach().clone()
        up[k] += step
        down[k] -= step
        differences.append((float(objective(up)) - float(objective(down))) / (2 * step))
    differences = torch.tensor(differences, dtype=F64)
    assert torch.allclose(gradient[1:6], differences, rtol=0, atol=1e-7 * float(differences.abs().max()))


def _one_dimensional():
    return Gaussian(torch.tensor([0.7], dtype=F64), torch.tensor([[0.3]], dtype=F64))


@pytest.mark.parametrize("method, schedule_name", [("euler", "vp"), ("rk4", "vp"), ("euler", "cond_ot"), ("heun", "vp"),
                                                  ("dpmpp_2m", "vp"), ("unipc", "cond_ot"), ("edm_heun", "cosine")])
def test_two_steps_in_one_dimension_match_a_brute_force_search(method, schedule_name):
    """One free time: every 1/1000 of the interval tried; the optimiser's W2 is at most the best of them, and its time
    lies within two mesh cells of the best one (heun on vp has two local minima, at t₁ = 0.655 and 0.95)."""
    target, schedule = _one_dimensional(), get_schedule(schedule_name)
    found = optimal_grid(target, schedule, method, 2)
    start, end = float(found.grid[0]), float(found.grid[-1])
    objective = GridObjective(target, schedule, method)
    mesh = torch.linspace(start, end, 1001, dtype=F64)[1:-1]
    values = torch.tensor([float(objective(torch.tensor([start, t, end], dtype=F64))) for t in mesh.tolist()])
    best = int(values.argmin())
    assert found.converged
    assert found.value <= float(values[best]) * (1 + 1e-9)
    assert abs(float(found.grid[1]) - float(mesh[best])) <= 2 * (end - start) / 1000


@pytest.mark.parametrize("steps, points", [(3, 60), (4, 20)])
def test_three_and_four_steps_in_one_dimension_are_no_worse_than_a_brute_force_search(steps, points):
    """Every ordered choice of the interior times from an even mesh of ``points`` (1 770 grids for 3 steps, 1 140 for
    4): the optimum is at least as good as the best of them."""
    target, schedule = _one_dimensional(), get_schedule("vp")
    found = optimal_grid(target, schedule, "euler", steps)
    start, end = float(found.grid[0]), float(found.grid[-1])
    objective = GridObjective(target, schedule, "euler")
    mesh = torch.linspace(start, end, points + 2, dtype=F64)[1:-1].tolist()
    best = min(float(objective(torch.tensor([start, *inner, end], dtype=F64)))
               for inner in itertools.combinations(mesh, steps - 1))
    assert found.value <= best * (1 + 1e-9)


def test_the_optimum_is_at_least_as_good_as_the_best_karras_rho():
    """EDM's grid from σ/α = 80 on vp, heun, 1-D target: ρ searched over 1 … 20 in steps of 0.5; the optimal grid
    between the same ends is at least as good as the best ρ, which is itself better than ρ = 1 and ρ = 20 (an interior
    optimum: the search brackets it)."""
    target, schedule = _one_dimensional(), get_schedule("vp")
    objective = GridObjective(target, schedule, "heun")
    rhos = torch.arange(1.0, 20.01, 0.5).tolist()
    karras = {rho: get_grid("karras", 6, schedule, rho=rho) for rho in rhos}
    values = {rho: float(objective(grid)) for rho, grid in karras.items()}
    best_rho = min(values, key=values.get)
    assert values[best_rho] < min(values[1.0], values[20.0])
    ends = (float(karras[best_rho][0]), float(karras[best_rho][-1]))
    found = optimal_grid(target, schedule, "heun", 6, ends=ends)
    assert found.value <= values[best_rho] * (1 + 1e-9)


@pytest.mark.parametrize("start", ["prior", "marginal"])
def test_the_gradient_in_a_free_start_is_the_finite_difference(start):
    """The objective on a free-start grid, differentiated in all its parameters (the start's position v and the
    logits) by autograd, against central differences of step 1e-6 (as above: 1e-7 relative). The marginal start's law
    moves with the start; the prior's does not, but the steps do."""
    target, schedule = get_target("gaussian"), get_schedule("cosine")
    objective = GridObjective(target, schedule, "dpmpp_2m", start=start)
    grids = MonotoneGrid(0.0, 1.0, 5, free_start=True)
    theta = grids.parameters(_uneven(torch.linspace(0.1, 1.0, 6, dtype=F64))).requires_grad_(True)
    (gradient,) = torch.autograd.grad(objective(grids.grid(theta)), theta)
    step = 1e-6
    differences = []
    for k in range(len(theta)):
        up, down = theta.detach().clone(), theta.detach().clone()
        up[k] += step
        down[k] -= step
        differences.append((float(objective(grids.grid(up))) - float(objective(grids.grid(down)))) / (2 * step))
    differences = torch.tensor(differences, dtype=F64)
    assert torch.allclose(gradient, differences, rtol=0, atol=1e-7 * float(differences.abs().max()))


def test_a_free_start_matches_a_brute_force_search_and_beats_the_fixed_one():
    """heun on vp, 2 steps, a 2-d target (in 1-D two free times can match the output's mean and variance exactly),
    from the prior N(0, I) placed at the grid's first time: every (t₀, t₁) of a 100 × 100 mesh over
    [0, 0.99] × (t₀, 1) tried; the free-start optimum is at most the best of them and no worse than the fixed-start
    one (here better: a later start, where the prior still fits, spends no step on t near 0)."""
    target = Gaussian(torch.tensor([0.7, -0.2], dtype=F64), torch.tensor([[0.3, 0.1], [0.1, 2.0]], dtype=F64))
    schedule = get_schedule("vp")
    fixed = optimal_grid(target, schedule, "heun", 2)
    free = optimal_grid(target, schedule, "heun", 2, free_start=True)
    objective = GridObjective(target, schedule, "heun")
    best = math.inf
    for t0 in torch.linspace(0.0, 0.99, 100, dtype=F64).tolist():
        for t1 in torch.linspace(t0, 1.0, 102, dtype=F64)[1:-1].tolist():
            best = min(best, float(objective(torch.tensor([t0, t1, 1.0], dtype=F64))))
    assert free.converged
    assert free.value <= best * (1 + 1e-9)
    assert free.value < fixed.value
    assert float(free.grid[0]) > 0.0


def test_an_optimal_grid_is_reproduced_and_cached(monkeypatch):
    from fmcore.optimal_grids import optimise

    target, schedule = get_target("gaussian"), get_schedule("cond_ot")
    first = optimal_grid(target, schedule, "heun", 5)
    assert optimal_grid(target, schedule, "heun", 5) is first
    monkeypatch.setattr(optimise, "_CACHE", {})
    again = optimal_grid(target, schedule, "heun", 5)
    assert again is not first and torch.equal(again.grid, first.grid)
    assert first.value < first.initial_value and first.iterations > 0 and first.converged


def test_the_optimal_grid_by_name_is_the_optimisers():
    schedule = get_schedule("vp")
    by_name = get_grid("optimal", 5, schedule, method="heun")
    assert torch.equal(by_name, optimal_grid(get_target("gaussian"), schedule, "heun", 5).grid)
    late = get_grid("optimal", 5, schedule, t0=0.2, t1=0.99, method="euler", target="gaussian")
    assert (float(late[0]), float(late[-1])) == (0.2, 0.99)
    with pytest.raises(ValueError, match="method="):
        get_grid("optimal", 5, schedule)


def test_a_monotone_grid_round_trips_its_logits():
    grids = MonotoneGrid(0.1, 0.9, 5)
    grid = torch.tensor([0.1, 0.2, 0.25, 0.5, 0.8, 0.9], dtype=F64)
    assert torch.allclose(grids.grid(grids.parameters(grid)), grid, rtol=0, atol=1e-15)
    assert grids.grid(torch.zeros(5, dtype=F64))[-1] == 0.9
    spread = torch.tensor([-11.5, 11.0, 0.0, 11.9, -3.0], dtype=F64)  # increments over e²³: logits in ±12, centred
    uneven = grids.grid(spread)
    assert torch.allclose(grids.grid(grids.parameters(uneven)), uneven, rtol=0, atol=1e-15)
    free = MonotoneGrid(0.0, 0.9, 5, free_start=True)
    late = torch.cat([torch.tensor([0.1], dtype=F64), uneven[1:]])
    assert float(free.parameters(late).abs().max()) <= 12.0
    assert torch.allclose(free.grid(free.parameters(late)), late, rtol=0, atol=1e-15)


def test_bad_input_is_named():
    target, schedule = get_target("gaussian"), get_schedule("vp")
    with pytest.raises(ValueError, match="differentiable in its grid"):
        GridObjective(target, schedule, "dpmpp_2m_sde")
    with pytest.raises(ValueError, match="metric"):
        GridObjective(target, schedule, "heun", metric="kl")
    with pytest.raises(ValueError, match="ODE methods"):
        GridObjective(target, schedule, "euler_maruyama", get_diffusion("constant"), metric="strong_error")
    with pytest.raises(ValueError, match="K = 1"):
        GridObjective(get_target("gmm"), schedule, "heun")
    objective = GridObjective(target, schedule, "heun")
    with pytest.raises(ValueError, match="strictly increasing"):
        objective(torch.tensor([0.0, 0.6, 0.5, 1.0], dtype=F64))
    with pytest.raises(ValueError, match="start < end"):
        MonotoneGrid(0.5, 0.5, 3)
    with pytest.raises(ValueError, match="ends"):
        optimal_grid(target, schedule, "heun", 3, ends=(0.2,))
    with pytest.raises(ValueError, match="free_start=True is for the W2 metrics"):
        optimal_grid(target, schedule, "heun", 3, metric="strong_error", free_start=True)
    with pytest.raises(ValueError, match="a free start must lie in"):
        MonotoneGrid(0.0, 1.0, 2, free_start=True).parameters(torch.tensor([0.995, 0.998, 1.0], dtype=F64))
    cifar = GridObjective(get_target("cifar10"), schedule, "heun")  # 9 zero variances; heun evaluates at t = 1
    with pytest.raises(ValueError, match=r"rank-deficient \(9 zero variance\(s\)\) and σ_t = 0 at t = 1,"):
        cifar(cifar.default_grid(4))
