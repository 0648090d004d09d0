"""Exact laws declared on methods (``fmcore/solvers/laws.py``): stochastic samplers against Monte Carlo, the probe of a
sampler's own code against the closed recursions, the starts, and Pierret & Galerne's published values."""

from __future__ import annotations

import pytest
import torch

from fmcore import AnalyticField, get_schedule, get_target
from fmcore.exact import STARTS, exact_output_law, has_exact_law
from fmcore.grids import get_grid
from fmcore.solvers import get_diffusion, get_method, sample
from fmcore.solvers.laws import PROBED, GaussianProblem, LawRequest
from fmcore.solvers.sampling import method_grid

from .helpers import assert_matches_law

F64 = torch.float64
TARGET = get_target("gaussian", d=2, condition_number=10, seed=5)  # rotated: the law is computed in its eigenbasis
MONTE_CARLO = 1_000_000
STEPS = 8

STOCHASTIC = [
    ("ddim", "cosine", {"eta": 1.0}),
    ("ddim", "vp", {"eta": 0.5}),
    ("euler_ancestral", "cond_ot", {}),
    ("dpmpp_2m_sde", "cosine", {}),
    ("dpmpp_2m_sde", "vp", {}),
    ("dpmpp_3m_sde", "cosine", {}),
    ("dpmpp_3m_sde", "vp", {"eta": 0.5}),
    ("dpmpp_2s_ancestral", "cosine", {}),
    ("dpmpp_sde", "cosine", {}),
    ("dpmpp_sde", "vp", {"eta": 0.5}),
    ("restart", "vp", {}),
    ("sa_solver", "cosine", {}),
    ("sa_solver", "vp", {"tau": 0.5, "predictor_order": 3, "corrector_order": 3}),
    ("edm_heun", "cosine", {"churn": 2.0}),
    ("pg_ei", "vp", {}),
    ("pg_ddpm", "vp", {}),
    ("euler_maruyama", "vp", {"diffusion": get_diffusion("forward")}),
]


def _start_sample(start: str, schedule, t0: float, n: int, seed: int) -> torch.Tensor:
    """n draws of the start named ``start`` (:data:`fmcore.exact.STARTS`), written out independently of the library."""
    noise = torch.randn(n, TARGET.dim, dtype=F64, generator=torch.Generator().manual_seed(seed))
    if start == "prior":
        return schedule.prior_std * noise
    if start == "standard_normal":
        return noise
    values = schedule(t0)  # the path's marginal: α x₁ + σ ε with x₁ from the target
    data = TARGET.sample(n, generator=torch.Generator().manual_seed(seed + 1))
    return float(values.alpha) * data + float(values.sigma) * noise


@pytest.mark.parametrize("method, schedule_name, options", STOCHASTIC,
                         ids=[f"{m}-{s}-{'-'.join(map(str, o.values())) or 'default'}" for m, s, o in STOCHASTIC])
def test_stochastic_samplers_exact_law_matches_a_million_samples(method, schedule_name, options):
    schedule = get_schedule(schedule_name)
    steps = 5 * STEPS if method == "pg_ddpm" else STEPS  # its b = 2hβ must stay below 1
    law = exact_output_law(TARGET, schedule, method, steps=steps, **options)
    assert bool((law.noise_variance > 0).any())  # it is a stochastic law
    x0 = _start_sample("prior", schedule, law.t0, MONTE_CARLO, seed=3)
    x = sample(AnalyticField(TARGET, schedule), x0, method, steps=steps, generator=4, **options).x
    assert_matches_law(law, x)


@pytest.mark.parametrize("start", STARTS)
@pytest.mark.parametrize("method", ["dpmpp_2m_sde", "heun"])
def test_each_start_is_the_law_of_runs_started_there(method, start):
    """``start=`` changes only where x₀ comes from: the prior N(0, σ₀²I), the path's marginal at the grid's first time
    (here an early-stopped grid, as Pierret & Galerne run theirs), or N(0, I)."""
    schedule = get_schedule("vp")
    grid = get_grid("uniform", STEPS, t1=1 - 1e-3)
    law = exact_output_law(TARGET, schedule, method, grid=grid, start=start)
    assert law.start == start and law.t1 == pytest.approx(1 - 1e-3)
    x0 = _start_sample(start, schedule, law.t0, MONTE_CARLO, seed=5)
    x = sample(AnalyticField(TARGET, schedule), x0, method, grid=grid, generator=6).x
    assert_matches_law(law, x)


def test_the_starts_differ_where_the_prior_is_not_the_marginal():
    """On vp the prior N(0, σ₀²I) is not p_0 (α_0 ≈ 6.6e-3): the three starts give three laws, a tiny bit apart."""
    schedule = get_schedule("vp")
    w2 = {start: exact_output_law(TARGET, schedule, "euler", steps=20, start=start).w2_to_target() for start in STARTS}
    assert len(set(w2.values())) == 3
    assert max(w2.values()) - min(w2.values()) < 0.05 * max(w2.values())


@pytest.mark.parametrize("method, schedule_name, options", [
    ("rk4", "cosine", {}),
    ("euler_maruyama", "vp", {"diffusion": get_diffusion("forward")}),
    ("euler_maruyama", "cond_ot", {"diffusion": get_diffusion("constant", c=0.7)}),
    ("pg_ei", "vp", {}),
    ("pg_ddpm", "vp-steep", {}),
])
def test_probing_a_samplers_own_code_gives_its_declared_recursion(method, schedule_name, options):
    """Two independent computations of one law: the method's recursion per eigenvalue (its ``exact_law``) and the
    probe of its integrator (0, 1, a random start and one unit increment per draw), equal to 1e-12."""
    schedule = get_schedule("vp", beta_min=0.5, beta_max=8.0) if schedule_name == "vp-steep" else get_schedule(schedule_name)
    spec = get_method(method)
    problem = GaussianProblem(TARGET.eigenvalues[0], TARGET.eigenvectors[0].T @ TARGET.means[0], schedule)
    diffusion = options.get("diffusion")
    request = LawRequest(method, method_grid(spec, schedule, 9, None, diffusion), diffusion, spec.options)
    declared, probed = spec.exact_law.propagate(problem, request), PROBED.propagate(problem, request)
    assert spec.exact_law is not PROBED
    for mine, theirs in zip((declared.P, declared.Q, declared.W), (probed.P, probed.Q, probed.W), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


def test_the_paper_schemes_refuse_a_path_that_is_not_variance_preserving():
    with pytest.raises(ValueError, match="pg_ei is Pierret & Galerne's scheme for a variance-preserving path"):
        exact_output_law(TARGET, get_schedule("cosine"), "pg_ei", steps=4)
    x0 = torch.zeros(3, TARGET.dim, dtype=F64)
    with pytest.raises(ValueError, match="pg_ddpm is Pierret & Galerne's scheme"):
        sample(AnalyticField(TARGET, get_schedule("cond_ot")), x0, "pg_ddpm", steps=4, generator=0)
    with pytest.raises(ValueError, match=r"b = 2hβ = .* ≥ 1"):
        exact_output_law(TARGET, get_schedule("vp"), "pg_ddpm", steps=3)


def test_every_sampler_but_the_adaptive_ones_and_peers_declares_an_exact_law():
    for name in ["euler", "heun", "midpoint", "rk4", "ddim", "dpmpp_2m", "unipc", "edm_heun", "euler_ancestral",
                 "dpmpp_2m_sde", "euler_maruyama", "seed000_sde", "pg_ei", "pg_ddpm", "tdq_rk4"]:
        assert has_exact_law(name), name
    for name in ["dopri5", "scipy_rk45", "tdq_heun3", "no such method"]:
        assert not has_exact_law(name), name


# Pierret & Galerne, ICML 2025, Table 5 (their code's output, printed to two decimals): W2 to the CIFAR-10 Gaussian on
# vp, a uniform grid ending at 1 − ε, from p_T ("marginal") and from N(0, I). NFE maps to grid points as their code
# maps it: N = NFE for EM, EI, DDPM, Euler and — through an if/else in their table loop — Heun; N = NFE // 4 for RK4.
PUBLISHED = [
    ("euler_maruyama", 50, 1e-3, "marginal", 4.68), ("pg_ei", 250, 1e-4, "standard_normal", 0.58),
    ("pg_ddpm", 500, 1e-5, "marginal", 0.47), ("euler", 1000, 1e-3, "standard_normal", 0.25),
    ("heun", 50, 1e-3, "marginal", 0.58), ("heun", 1000, 1e-4, "standard_normal", 0.08),
    ("rk4", 250, 1e-3, "standard_normal", 0.12), ("rk4", 50, 1e-5, "marginal", 67.32),
]


@pytest.mark.parametrize("method, nfe, epsilon, start, published", PUBLISHED)
def test_published_cifar10_values_are_reproduced_to_their_printed_digits(method, nfe, epsilon, start, published):
    """Each agrees within half a unit of the last printed digit (0.005): the rounding of the published table."""
    points = nfe // 4 if method == "rk4" else nfe
    options = {"diffusion": get_diffusion("forward")} if method == "euler_maruyama" else {}
    law = exact_output_law(get_target("cifar10"), get_schedule("vp"), method,
                           grid=get_grid("uniform", points - 1, t1=1 - epsilon), start=start, **options)
    assert law.w2_to_target() == pytest.approx(published, abs=0.005)


def test_a_law_can_be_probed_for_a_method_that_declares_none():
    """``law=PROBED`` reads the law of any linear float64 sampler off its code: here a method registered without a
    declaration, which is euler step for step, gives euler's declared law."""
    import dataclasses

    from fmcore.solvers.methods import METHODS

    undeclared = dataclasses.replace(METHODS["euler"], name="undeclared_euler", exact_law=None)
    schedule = get_schedule("cosine")
    try:
        METHODS["undeclared_euler"] = undeclared
        assert not has_exact_law("undeclared_euler")
        with pytest.raises(KeyError, match="no exact law for method 'undeclared_euler'"):
            exact_output_law(TARGET, schedule, "undeclared_euler", steps=7)
        probed = exact_output_law(TARGET, schedule, "undeclared_euler", steps=7, law=PROBED)
    finally:
        del METHODS["undeclared_euler"]
    declared = exact_output_law(TARGET, schedule, "euler", steps=7)
    torch.testing.assert_close(probed.gain, declared.gain, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(probed.offset, declared.offset, rtol=1e-12, atol=1e-12)
    with pytest.raises(TypeError, match="law must be a LawRecursion"):
        exact_output_law(TARGET, schedule, "euler", steps=7, law="probe")


REPEATED = torch.tensor([0.0, 2.0, 0.5, 2.0, 0.0, 7.0, 0.5, 2.0], dtype=F64)  # 4 distinct values in 8 directions
OFFSETS = torch.tensor([0.3, -1.0, 2.0, 0.7, 0.0, -0.4, 1.5, 0.0], dtype=F64)


@pytest.mark.parametrize("method, schedule_name, options", [("rk4", "cosine", {}), ("heun", "vp", {}),
                                                             ("dpmpp_2m_sde", "vp", {}), ("pg_ei", "vp", {}),
                                                             ("euler_maruyama", "vp",
                                                              {"diffusion": get_diffusion("forward")})])
@pytest.mark.parametrize("mean", [OFFSETS, torch.zeros(8, dtype=F64)], ids=["offset", "centred"])
def test_the_law_on_distinct_eigenvalues_equals_the_law_direction_by_direction(method, schedule_name, options, mean):
    """A spectrum with repeated (and zero) eigenvalues: the law computed once per distinct value and spread (with
    Q = q(λ)·m) equals the recursion run on every direction, to 1e-12 relative."""
    from fmcore.solvers.laws import propagate_distinct

    schedule = get_schedule(schedule_name)
    options = dict(options)
    diffusion = options.pop("diffusion", None)
    spec = get_method(method)
    grid = method_grid(spec, schedule, None, get_grid("uniform", STEPS, t1=1 - 1e-3), diffusion)
    problem = GaussianProblem(REPEATED, mean, schedule)
    assert problem.distinct()[0].dim == 4
    request = LawRequest(method, grid, diffusion, options)
    spread, whole = propagate_distinct(spec.exact_law, problem, request), spec.exact_law.propagate(problem, request)
    whole = whole.dense()
    for part in ("P", "Q", "W"):
        got, expected = getattr(spread, part), getattr(whole, part)
        assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12 * float(expected.abs().max().clamp_min(1.0))), part
