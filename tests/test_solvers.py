"""Fixed-step, adaptive and reference ODE solvers: convergence orders against the exact flow map, NFE, errors."""

import math

import numpy as np
import pytest
import torch

from fmcore import AnalyticField, get_schedule, get_target
from fmcore.solvers import METHODS, TABLEAUS, SolverDivergenceError, sample
from fmcore.solvers.counting import CountingField, FieldOutputError
from fmcore.targets import Gaussian

# Step counts in the asymptotic range of each method on this target (checked: the local slopes settle there
# before float64 round-off, ~1e-13, is reached).
ORDER_STEPS = {
    "euler": [64, 128, 256, 512],
    "midpoint": [64, 128, 256, 512],
    "heun": [64, 128, 256, 512],
    "rk4": [64, 128, 256, 512],
    "rk38": [64, 128, 256, 512],
}
# Expected slopes, with the tolerances. Midpoint on cond_ot is third order on Gaussian targets: see
# test_midpoint_superconvergence_on_affine_paths for why; on cosine (and on mixtures) it is second order.
EXPECTED_ORDER = {
    ("euler", "cond_ot"): (1, 0.1), ("euler", "cosine"): (1, 0.1),
    ("midpoint", "cond_ot"): (3, 0.1), ("midpoint", "cosine"): (2, 0.1),
    ("heun", "cond_ot"): (2, 0.1), ("heun", "cosine"): (2, 0.1),
    ("rk4", "cond_ot"): (4, 0.2), ("rk4", "cosine"): (4, 0.2),
    ("rk38", "cond_ot"): (4, 0.2), ("rk38", "cosine"): (4, 0.2),
}


def _strong_error(x, reference):
    return float(((x - reference) ** 2).sum(1).mean().sqrt())


def fitted_order(field, x0, reference, method, steps):
    errors = [_strong_error(sample(field, x0, method, steps=n).x, reference) for n in steps]
    slope = np.polyfit(np.log(1.0 / np.array(steps)), np.log(errors), 1)[0]
    return slope, errors


@pytest.fixture(scope="module")
def anisotropic():
    target = get_target("gaussian", d=8, condition_number=100, seed=0)
    x0 = torch.randn(64, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return target, x0


def test_convergence_orders(anisotropic, capsys):
    target, x0 = anisotropic
    rows = []
    for schedule_name in ("cond_ot", "cosine"):
        schedule = get_schedule(schedule_name)
        field = AnalyticField(target, schedule)
        reference = target.flow_map(x0, schedule)
        for method, steps in ORDER_STEPS.items():
            slope, errors = fitted_order(field, x0, reference, method, steps)
            expected, tolerance = EXPECTED_ORDER[(method, schedule_name)]
            rows.append((schedule_name, method, slope, expected, errors))
            assert abs(slope - expected) <= tolerance, (schedule_name, method, slope, errors)
    with capsys.disabled():
        print("\nstrong-error convergence on gaussian(d=8, κ=100), n=64; slope of log error vs log h")
        print(f"{'schedule':9} {'method':9} {'slope':>6} {'expect':>6}  errors at " + ", ".join(
            f"{method}:{ORDER_STEPS[method]}" for method in ("euler", "rk4")))
        for schedule_name, method, slope, expected, errors in rows:
            print(f"{schedule_name:9} {method:9} {slope:6.3f} {expected:6d}  " + " ".join(f"{e:.2e}" for e in errors))


def test_midpoint_superconvergence_on_affine_paths():
    r"""On a Gaussian target each eigen-coordinate obeys y' = a(t) y with a = c'/(2c), c = α²λ + σ².
    The midpoint rule's global h² error coefficient is −∫₀¹(aa'/4 + a³/6 + a''/24)dt. When c is quadratic in t
    (α, σ affine in t: cond_ot with any σ_min, linear_vp) a' = c''/(2c) − 2a² with c'' constant turns this into
    [a²]₀¹·(1/8 − 1/12 − 1/24) = 0, so the method is third order there — and second order otherwise.
    The test checks both sides of that statement on a 1-D target."""
    target = get_target("gaussian", d=1, seed=2)
    x0 = torch.ones(1, 1, dtype=torch.float64)
    steps = [128, 256, 512, 1024]
    for name, params, expected in [("cond_ot", {"sigma_min": 0.1}, 3), ("poly", {"n": 2.0}, 2), ("cosine", {}, 2)]:
        schedule = get_schedule(name, **params)
        slope, _ = fitted_order(AnalyticField(target, schedule), x0, target.flow_map(x0, schedule), "midpoint", steps)
        assert abs(slope - expected) < 0.1, (name, slope)


def test_midpoint_is_second_order_on_a_mixture():
    target = get_target("gmm", K=4, d=4, seed=1, narrow=0.1)
    field = AnalyticField(target, get_schedule("cond_ot"))
    x0 = torch.randn(32, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    reference = sample(field, x0, "dopri5", rtol=1e-12, atol=1e-12).x
    slope, _ = fitted_order(field, x0, reference, "midpoint", [128, 256, 512])
    assert abs(slope - 2) < 0.1


def test_dopri5_reproduces_the_flow_map(anisotropic):
    target, x0 = anisotropic
    for schedule_name in ("cond_ot", "cosine"):
        schedule = get_schedule(schedule_name)
        result = sample(AnalyticField(target, schedule), x0, "dopri5", rtol=1e-10, atol=1e-10)
        assert float((result.x - target.flow_map(x0, schedule)).abs().max()) < 1e-7
        assert result.nfe > 0 and result.options["rtol"] == 1e-10


def test_dopri5_from_a_late_start_where_the_field_is_small_stays_within_the_path():
    """torchdiffeq's initial-step heuristic probes the field at t₀ + 0.01‖x‖/‖f‖; on vp from t₀ = 0.0665 (σ/α = 80)
    with λ = 2 the velocity gain is ~0.0015, so that probe lay past t = 1 and the field refused it. The probe is capped
    at the end: the solve runs, and reproduces the exact flow map."""
    target = Gaussian(torch.zeros(1, dtype=torch.float64), torch.tensor([[2.0]], dtype=torch.float64))
    schedule = get_schedule("vp")
    x0 = torch.ones(4, 1, dtype=torch.float64)
    grid = torch.tensor([0.0665, 1.0], dtype=torch.float64)
    result = sample(AnalyticField(target, schedule), x0, "dopri5", grid=grid, rtol=1e-10, atol=1e-10)
    assert float((result.x - target.flow_map(x0, schedule, t0=0.0665)).abs().max()) < 1e-7


def test_dopri5_matches_scipy_dop853_on_a_mixture():
    target = get_target("gmm", K=8, d=8, seed=0)
    field = AnalyticField(target, get_schedule("cond_ot"))
    x0 = torch.randn(16, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ours = sample(field, x0, "dopri5", rtol=1e-10, atol=1e-10)
    reference = sample(field, x0, "scipy_dop853", rtol=1e-12, atol=1e-12)
    assert float((ours.x - reference.x).abs().max()) < 1e-7
    assert reference.nfe == reference.info["nfev"]  # SciPy's own count agrees with the wrapper's


def test_torchdiffeq_rk4_is_the_three_eighths_rule(anisotropic):
    target, x0 = anisotropic
    field = AnalyticField(target, get_schedule("cosine"))
    ours, theirs = sample(field, x0, "rk38", steps=16), sample(field, x0, "tdq_rk4", steps=16)
    torch.testing.assert_close(ours.x, theirs.x, rtol=1e-13, atol=1e-13)
    assert ours.nfe == theirs.nfe == 64
    euler, tdq_euler = sample(field, x0, "euler", steps=16), sample(field, x0, "tdq_euler", steps=16)
    torch.testing.assert_close(euler.x, tdq_euler.x, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("method", sorted(name for name, spec in METHODS.items()  # peers: tests/test_peers.py
                                          if spec.stepping == "grid" and spec.stages and not spec.diffusion
                                          and not name.startswith("peer:")))
def test_fixed_step_nfe_is_stages_times_steps(method):
    field = AnalyticField(get_target("seed000"), get_schedule("vp"))  # a path every method runs on (pg_*: VP only)
    x0 = torch.randn(8, 3, dtype=torch.float64)
    steps = 41  # pg_ddpm's b = 2hβ must stay below 1 on vp
    result = sample(field, x0, method, steps=steps, **({"generator": 0} if METHODS[method].draws_noise() else {}))
    assert result.nfe == METHODS[method].stages * steps
    if method in TABLEAUS:
        assert METHODS[method].stages == TABLEAUS[method].stages


@pytest.mark.parametrize("grid_name", ["uniform", "cosine", "karras", "logsnr"])
def test_any_grid_is_accepted_and_recorded(grid_name):
    from fmcore.grids import get_grid

    schedule = get_schedule("cosine")
    target = get_target("gaussian", d=3)
    field = AnalyticField(target, schedule)
    grid = get_grid(grid_name, 64, schedule)
    x0 = target.marginal(float(grid[0]), schedule).sample(16, generator=torch.Generator().manual_seed(0))
    result = sample(field, x0, "rk4", grid=grid, return_trajectory=True)
    assert torch.equal(result.grid, grid) and result.t0 == float(grid[0])
    assert result.trajectory.shape == (65, 16, 3)
    exact = target.flow_map(x0, schedule, float(grid[0]), 1.0)
    assert _strong_error(result.x, exact) < 1e-5


def test_trajectory_ends_where_x_is():
    field = AnalyticField(get_target("seed000"), get_schedule("cond_ot"))
    x0 = torch.randn(4, 3, dtype=torch.float64)
    for method, options in [("heun", {"steps": 5}), ("dopri5", {"grid": torch.linspace(0, 1, 5)})]:
        result = sample(field, x0, method, return_trajectory=True, **options)
        assert torch.equal(result.trajectory[0], x0) and torch.equal(result.trajectory[-1], result.x)


def test_float32_solves_run_in_float32():
    target = get_target("gaussian", d=4)
    schedule = get_schedule("cond_ot")
    x0 = torch.randn(32, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for method, options in [("rk4", {"steps": 32}), ("dopri5", {"rtol": 1e-5, "atol": 1e-5})]:
        result = sample(AnalyticField(target, schedule), x0.float(), method, **options)
        assert result.x.dtype == torch.float32
        assert _strong_error(result.x.double(), target.flow_map(x0, schedule)) < 1e-4


def test_repeated_runs_are_bit_identical():
    field = AnalyticField(get_target("gmm"), get_schedule("cosine"))
    x0 = torch.randn(64, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for method, options in [("rk4", {"steps": 10}), ("dopri5", {})]:
        assert torch.equal(sample(field, x0, method, **options).x, sample(field, x0, method, **options).x)


# ---------------------------------------------------------------------- bad input


def test_unknown_method_lists_valid_ones():
    field = AnalyticField(get_target("seed000"), get_schedule("cond_ot"))
    with pytest.raises(KeyError, match="dopri5"):
        sample(field, torch.zeros(2, 3, dtype=torch.float64), "rk5", steps=3)


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"steps": 0}, "steps must be"),
        ({}, "give steps"),
        ({"steps": 4, "grid": torch.linspace(0, 1, 5)}, "not both"),
        ({"grid": torch.tensor([0.0, 0.5, 0.4, 1.0])}, "strictly increasing"),
        ({"grid": torch.tensor([0.0, 0.5, 1.5])}, r"\[0, 1\]"),
        ({"grid": torch.tensor([0.5])}, "at least 2"),
        ({"steps": 4, "rtol": 1e-3}, "adaptive methods only"),
    ],
)
def test_bad_fixed_step_options(options, fragment):
    field = AnalyticField(get_target("seed000"), get_schedule("cond_ot"))
    with pytest.raises(ValueError, match=fragment):
        sample(field, torch.zeros(2, 3, dtype=torch.float64), "rk4", **options)


@pytest.mark.parametrize(
    "options, fragment",
    [({"rtol": 0.0}, "rtol must be"), ({"atol": -1e-3}, "atol must be"), ({"steps": 8}, "chooses its own steps")],
)
def test_bad_adaptive_options(options, fragment):
    field = AnalyticField(get_target("seed000"), get_schedule("cond_ot"))
    with pytest.raises(ValueError, match=fragment):
        sample(field, torch.zeros(2, 3, dtype=torch.float64), "dopri5", **options)


@pytest.mark.parametrize(
    "x0, fragment",
    [
        (torch.zeros(2, 4, dtype=torch.float64), "d = 3 columns"),
        (torch.zeros(2, 3, dtype=torch.int32), "float32 or float64"),
        (torch.tensor([[0.0, math.nan, 0.0]], dtype=torch.float64), "non-finite"),
    ],
)
def test_bad_initial_points(x0, fragment):
    field = AnalyticField(get_target("seed000"), get_schedule("cond_ot"))
    with pytest.raises(ValueError, match=fragment):
        sample(field, x0, "euler", steps=2)


class _WrongShapeField:
    dim = 3

    def __call__(self, t, x):
        return x[:, :2]


class _ExplodingField:
    """u = 1e20 x: in float32 Euler overflows to inf in its second step."""

    dim = 3

    def __call__(self, t, x):
        return 1e20 * x


class _NaNAfterField:
    dim = 2

    def __call__(self, t, x):
        return torch.full_like(x, math.nan) if float(t) > 0.5 else torch.zeros_like(x)


def test_field_returning_the_wrong_shape():
    with pytest.raises(FieldOutputError, match="shape \\(2, 3\\)"):
        sample(_WrongShapeField(), torch.zeros(2, 3), "euler", steps=2)


def test_divergence_is_reported_with_step_and_time():
    with pytest.raises(SolverDivergenceError, match=r"in step 3 \(from t = 0\.6 to t = 0\.8\)"):
        sample(_NaNAfterField(), torch.zeros(4, 2), "euler", steps=5)
    with pytest.raises(SolverDivergenceError) as caught:
        sample(_ExplodingField(), torch.ones(2, 3), "euler", steps=4)
    assert (caught.value.step, caught.value.t_start, caught.value.t) == (1, 0.25, 0.5)
    with pytest.raises(SolverDivergenceError, match="dopri5"):
        sample(_NaNAfterField(), torch.zeros(4, 2), "dopri5")


def test_a_new_tableau_is_a_new_method():
    """Adding a method is adding a tableau: Ralston's second-order method, registered here, samples at once."""
    from fmcore.solvers import ButcherTableau, register_tableau

    if "ralston_test" not in TABLEAUS:
        register_tableau(ButcherTableau("ralston_test", 2, c=(0.0, 2 / 3), a=((), (2 / 3,)), b=(0.25, 0.75)))
    target = get_target("gaussian", d=2, seed=1)
    schedule = get_schedule("cosine")
    x0 = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    slope, _ = fitted_order(AnalyticField(target, schedule), x0, target.flow_map(x0, schedule), "ralston_test", [128, 256, 512])
    assert abs(slope - 2) < 0.1
    assert sample(AnalyticField(target, schedule), x0, "ralston_test", steps=3).nfe == 6


def test_counting_field_clamps_round_off_only():
    """A stage time one rounding error outside the solve's interval is brought back; a time further out is a real
    request and reaches the field unchanged (EDM's churn evaluates before the grid's first time)."""
    seen = []

    def field(t, x):
        seen.extend(torch.as_tensor(t, dtype=torch.float64).reshape(-1).tolist())
        return x

    counting = CountingField(field, interval=(0.25, 1.0))
    x = torch.zeros(2, 1, dtype=torch.float64)
    for t in (1.0 + 2.2e-16, 0.25 - 1e-15, 0.1, torch.tensor(1.0 + 2.2e-16, dtype=torch.float64),
              torch.tensor(0.1, dtype=torch.float64), torch.tensor([0.1, 1.0 + 2.2e-16], dtype=torch.float64)):
        counting(t, x)
    assert seen == [1.0, 0.25, 0.1, 1.0, 0.1, 0.1, 1.0]
