"""Peer adapters: the same cell sampled by the implementations people run, scored against the same exact truth.

Each adapter is a method like any other, named ``peer:<library>/<method>`` (``fmbench list`` shows them), run
through ``fmcore.solvers.sample`` so that its NFE is counted by the same wrapper and its output scored by the
same metrics. The peer's own code does the stepping; the adapter only translates the field into the peer's
calling convention:

=========================== ============================================================================
library                     how it is driven
=========================== ============================================================================
``flow_matching`` (Meta)    ``ODESolver(velocity_model).sample(x_init, step_size=None, method, time_grid)``
                            on the cell's grid (euler, midpoint, rk4 — torchdiffeq underneath)
``torchdyn`` (TorchCFM)     ``NeuralODE(vector_field, solver).trajectory(x, t_span)`` on the grid
``torchode``                ``AutoDiffAdjoint(step method, FixedStepController()).solve`` with a uniform
                            step (it has no user grid)
``k-diffusion``             ``sample_euler``, ``sample_heun``, ``sample_dpmpp_2m``,
                            ``sample_euler_ancestral``, ``sample_dpmpp_2m_sde``, ``sample_dpmpp_3m_sde``
                            (η = 0 as ``dpmpp_3m``, η = 1 as ``dpmpp_3m_sde``), ``sample_dpmpp_2s_ancestral``
                            (η = 0 as ``dpmpp_2s``), ``sample_dpmpp_sde``, ``sample_lms``, ``sample_dpm_2``
                            (as ``dpm_solver_2s``) driven by the denoiser
                            D(x̃; σ̃) = the field's data prediction at the time where σ/α = σ̃, in EDM's
                            coordinates x̃ = x/α; the noise levels are the cell's grid mapped to σ/α (so
                            every library sees the same times); ``euler_ancestral`` gets the cell's
                            generator as its noise sampler, the SDE samplers their Brownian tree seeded from it
``diffusers``               ``DDIMScheduler``, ``DPMSolverMultistepScheduler`` (orders 2 and 3, Karras σ's,
                            ending at σ_min), ``DEISMultistepScheduler``, ``LMSDiscreteScheduler``,
                            ``UniPCMultistepScheduler``, ``EulerDiscreteScheduler``, ``HeunDiscreteScheduler``,
                            ``FlowMatchEulerDiscreteScheduler`` on their own timesteps and tables (``steps``
                            = their ``num_inference_steps``), answered with the exact ε / flow prediction at
                            our time of the same SNR (:class:`DiffusersScheduler`)
=========================== ============================================================================

A peer that is not installed makes its cells rows with ``status = "skipped"`` and the reason (install them with
``fmbench install-peers``, which keeps the pinned torch: README, "Peers").

k-diffusion's package ``__init__`` imports its training stack (torchvision, scikit-image, CLIP, wandb), which
cannot be installed beside the pinned CPU torch; the adapter loads its ``sampling`` module (and the ``utils``
module that one imports) from the installed package without running that ``__init__``, with an empty stand-in for
``torchvision.transforms.functional`` (used by ``utils``' image helpers only) when torchvision is missing.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import types
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from fmcore.grids import EDM_SIGMA_MIN
from fmcore.solvers import Method, register_method
from fmcore.solvers.diffusion_samplers import edm_start_time
from fmcore.solvers.sde import brownian_increment

PEER_PACKAGES = {"flow_matching": "flow-matching", "torchdyn": "torchdyn", "torchode": "torchode",
                 "k_diffusion": "k-diffusion",
                 "diffusers": "diffusers"}


class PeerUnavailable(RuntimeError):
    """The peer library is not installed (or cannot be imported); the cell is skipped with this reason."""


def _import(module: str):
    try:
        return importlib.import_module(module)
    except Exception as error:  # noqa: BLE001 — any import failure means the peer cannot run here
        package = PEER_PACKAGES[module.split(".")[0]]
        raise PeerUnavailable(f"{package} is not available ({type(error).__name__}: {error}); install the peers with "
                              "`fmbench install-peers`") from None


# ---------------------------------------------------------------------- ODE peers on the velocity


def _flow_matching(name: str):
    def integrate(request):
        solver_module = _import("flow_matching.solver")
        field = request.field
        solver = solver_module.ODESolver(velocity_model=lambda x, t, **_: field(t, x))
        grid = request.grid.to(dtype=request.x0.dtype, device=request.x0.device)
        x = solver.sample(x_init=request.x0, step_size=None, method=name, time_grid=grid)
        return x, None, {}

    return integrate


class _TimeFirst(nn.Module):
    """A field as an ``nn.Module`` called ``(t, x)``: what torchdyn's ``NeuralODE`` wraps."""

    def __init__(self, field):
        super().__init__()
        self.field = field

    def forward(self, t: Tensor, x: Tensor, args=None) -> Tensor:
        return self.field(t, x)


def _torchdyn(name: str):
    def integrate(request):
        core = _import("torchdyn.core")
        node = core.NeuralODE(_TimeFirst(request.field), solver=name, sensitivity="autograd")
        grid = request.grid.to(dtype=request.x0.dtype, device=request.x0.device)
        return node.trajectory(request.x0, t_span=grid)[-1], None, {}

    return integrate


def _torchode(name: str):
    def integrate(request):
        to = _import("torchode")
        x0, grid = request.x0, request.grid
        steps = len(grid) - 1
        uniform = torch.linspace(float(grid[0]), float(grid[-1]), steps + 1, dtype=torch.float64)
        if not torch.allclose(grid, uniform, rtol=0, atol=1e-12):
            raise ValueError(f"peer:torchode/{name} takes uniform steps only (torchode's fixed-step controller has no grid)")
        n = x0.shape[0]
        term = to.ODETerm(lambda t, y: request.field(t, y))
        solver = to.AutoDiffAdjoint(getattr(to, name)(term=term), to.FixedStepController())
        like = dict(dtype=x0.dtype, device=x0.device)
        problem = to.InitialValueProblem(y0=x0, t_start=torch.full((n,), float(grid[0]), **like),
                                         t_end=torch.full((n,), float(grid[-1]), **like))
        solution = solver.solve(problem, dt0=torch.full((n,), float(grid[-1] - grid[0]) / steps, **like))
        return solution.ys[:, -1], None, {"torchode_steps": int(solution.stats["n_steps"].max())}

    return integrate


# ---------------------------------------------------------------------- k-diffusion on the data prediction


def _point_of_snr(schedule, snr: float, sampler: str) -> tuple[float, float, float]:
    """Our time where α/σ = ``snr``, and α, σ there: where a peer that keeps its own noise levels is evaluated."""
    try:
        t = float(schedule.t_from_snr(snr))
    except ValueError as error:  # e.g. DDPM's table reaches a lower SNR than the vp path at t = 0
        raise ValueError(f"{sampler} steps through SNR α/σ = {snr:.6g}, which this path does not reach: {error}") from None
    values = schedule(t)
    return t, float(values.alpha), float(values.sigma)


def _refuse_a_start_at_pure_noise(schedule, alpha: float, sampler: str) -> None:
    """k-diffusion steps x/α in noise levels σ/α: refuse a start where α = 0, saying where it can start."""
    if alpha == 0.0:
        raise ValueError(f"k-diffusion's {sampler} steps x/α in noise levels σ/α: it needs α > 0 where it starts; "
                         f"start the grid at t ≥ {edm_start_time(schedule)}")


def k_diffusion_sampling():
    """k-diffusion's ``sampling`` module, loaded without the package ``__init__`` (see the module docstring)."""
    if "k_diffusion.sampling" in sys.modules:
        return sys.modules["k_diffusion.sampling"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise PeerUnavailable("k-diffusion is not installed; install the peers with `fmbench install-peers`")
    stand_ins = []
    try:
        importlib.import_module("torchvision.transforms.functional")
    except Exception:  # noqa: BLE001 — no usable torchvision: utils only needs the name for its image helpers
        stand_ins = [name for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
                     if name not in sys.modules]
        sys.modules.update({name: types.ModuleType(name) for name in stand_ins})
    package = types.ModuleType("k_diffusion")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules.setdefault("k_diffusion", package)
    try:
        for name in ("utils", "sampling"):
            location = Path(spec.submodule_search_locations[0]) / f"{name}.py"
            module_spec = importlib.util.spec_from_file_location(f"k_diffusion.{name}", location)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[f"k_diffusion.{name}"] = module
            module_spec.loader.exec_module(module)
            setattr(sys.modules["k_diffusion"], name, module)
    except Exception as error:  # noqa: BLE001
        for name in ("k_diffusion.utils", "k_diffusion.sampling"):
            sys.modules.pop(name, None)
        raise PeerUnavailable(f"k-diffusion's sampling module cannot be loaded ({type(error).__name__}: {error})") from None
    finally:  # the stand-ins leave again: other libraries (diffusers) probe for torchvision with find_spec
        for name in stand_ins:
            sys.modules.pop(name, None)
    return sys.modules["k_diffusion.sampling"]


def _k_diffusion(name: str, fixed: Mapping[str, float] | None = None):
    """k-diffusion's ``name`` sampler on the cell's noise levels, called with its options ``fixed`` besides."""

    def integrate(request):
        sampling = k_diffusion_sampling()
        schedule, x0 = request.schedule, request.x0
        times = request.grid.tolist()
        values = [schedule(t) for t in times]
        alphas = [float(v.alpha) for v in values]
        _refuse_a_start_at_pure_noise(schedule, alphas[0], name)
        levels = [float(v.sigma) / a for v, a in zip(values, alphas, strict=True)]
        point_of = {level: (t, alpha) for level, t, alpha in zip(levels, times, alphas, strict=True)}

        def denoiser(x_scaled: Tensor, level: Tensor) -> Tensor:
            value = float(level.reshape(-1)[0])
            if value in point_of:
                t, alpha = point_of[value]
            else:  # a level off the grid (churn): the time where σ/α is that level
                t, alpha, _ = _point_of_snr(schedule, 1.0 / value, "k-diffusion's sampler")
            return request.field.data_prediction(t, alpha * x_scaled)

        sigmas = torch.tensor(levels, dtype=x0.dtype, device=x0.device)
        options = {"disable": True, **(fixed or {})}
        if name in ("sample_euler_ancestral", "sample_dpmpp_2s_ancestral") and options.get("eta", 1.0) > 0:
            # our generator's noise, drawn as ours is: one draw per noisy step
            options["noise_sampler"] = lambda sigma, sigma_next: brownian_increment(x0.shape, request.generator, x0)
        if options.get("eta", 1.0) == 0:  # deterministic: no noise (2S-ancestral still adds 0 × a draw)
            options["noise_sampler"] = lambda sigma, sigma_next: torch.zeros_like(x0)
        elif name in ("sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde", "sample_dpmpp_sde"):
            # its Brownian tree, seeded from the cell's generator (reproducible)
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=request.generator))
            positive = sigmas[sigmas > 0]
            options["noise_sampler"] = sampling.BrownianTreeNoiseSampler(
                x0 / alphas[0], positive.min(), positive.max(), seed=seed)
        scaled = getattr(sampling, name)(denoiser, x0 / alphas[0], sigmas, **options)
        return alphas[-1] * scaled, None, {}

    return integrate


def _k_diffusion_adaptive(request):
    r"""k-diffusion's ``sample_dpm_adaptive`` (DPM-Solver-23: a DPM-Solver-3 step, its error against the DPM-Solver-2
    step on the same evaluations, a PID controller in λ) from the grid's first level to its last (EDM's 0.002 where
    that is 0: it cannot reach σ = 0), at the request's tolerances. The levels it accepted are recorded as
    ``result.grid``: given them, it is ``dpm_solver_3s`` on that grid (``tests/test_peers.py``), whose exact law it
    has. Its error norm is taken over the whole batch, so the steps a sample gets depend on its batch."""
    sampling = k_diffusion_sampling()
    schedule, x0 = request.schedule, request.x0
    start, end = (schedule(float(t)) for t in (request.grid[0], request.grid[-1]))
    _refuse_a_start_at_pure_noise(schedule, float(start.alpha), "sample_dpm_adaptive")
    level_max = float(start.sigma / start.alpha)
    level_min = float(end.sigma / end.alpha) or EDM_SIGMA_MIN

    def denoiser(x_scaled: Tensor, level: Tensor) -> Tensor:
        t, alpha, _ = _point_of_snr(schedule, 1.0 / float(level.reshape(-1)[0]), "k-diffusion's sample_dpm_adaptive")
        return request.field.data_prediction(t, alpha * x_scaled)

    accepted = [level_max]

    def record(info: dict) -> None:
        if info["n_accept"] == len(accepted):  # this attempt was accepted: the solve is now at info["sigma"]
            accepted.append(float(info["sigma"]))

    levels = torch.tensor([level_min, level_max], dtype=torch.float64)  # not its torch.tensor(float): float32
    with warnings.catch_warnings():  # its torch.tensor(a tensor) copies with a UserWarning
        warnings.simplefilter("ignore", UserWarning)
        scaled, info = sampling.sample_dpm_adaptive(
            denoiser, x0 / float(start.alpha), levels[0], levels[1], rtol=request.rtol, atol=request.atol,
            disable=True, callback=record, return_info=True)
    label = "k-diffusion's sample_dpm_adaptive"
    times = [float(request.grid[0])] + [_point_of_snr(schedule, 1.0 / level, label)[0] for level in accepted[1:]]
    t_end, alpha_end, _ = _point_of_snr(schedule, 1.0 / accepted[-1], label)
    return alpha_end * scaled, None, {"model_times": torch.tensor(times, dtype=torch.float64), "output_time": t_end,
                                      "n_accept": info["n_accept"], "n_reject": info["n_reject"]}


# ---------------------------------------------------------------------- diffusers schedulers on their own tables


@dataclass(frozen=True)
class DiffusersScheduler:
    """How one diffusers scheduler is driven.

    ``class_name`` and the ``config`` it is built with (its defaults, except what is named there); ``latent``: the
    coordinates of the sample it steps, ``model_input``: those of the sample its model sees (after its
    ``scale_model_input``), each one of :data:`COORDINATES`; ``prediction``: what its model returns
    (``epsilon``, ``v_prediction``, ``sample`` or ``flow``); ``levels``: where it keeps the noise level of the
    sample at each model call (a key of :data:`LEVELS`).
    """

    class_name: str
    latent: str
    model_input: str
    prediction: str
    levels: str
    config: Mapping[str, object] = field(default_factory=dict)
    stages: int | None = 1
    """Model calls per step (None: not fixed — Heun's last step to σ = 0 takes one)."""
    float64: bool = True
    """False: it cannot step a float64 sample, and such a cell fails with that reason (UniPC in diffusers 0.42.1:
    its corrector solves a float64 system with a float32 right-hand side, and ``torch.linalg.solve`` refuses)."""
    draws_noise: bool = False
    """Its ``step`` draws noise (SA-Solver): it gets the cell's generator, so a seed reproduces it."""
    seed_option: str | None = None
    """Where it takes the seed of its noise instead (DPMSolverSDE's ``noise_sampler_seed``, of its Brownian tree; its
    ``step`` takes no generator): an integer drawn from the cell's generator, so a seed reproduces it."""


COORDINATES = ("vp", "edm", "flow")
r"""``vp``: :math:`x = \sqrt{\bar\alpha}\,x_1 + \sqrt{1-\bar\alpha}\,\varepsilon` (DDPM's α̅ table); ``edm``:
:math:`\tilde x = x_1 + \tilde\sigma\varepsilon`; ``flow``: :math:`x = (1-\sigma)x_1 + \sigma\varepsilon` (rectified
flow). Every sample in them is ours at the time of the same SNR r = α/σ, rescaled (:func:`_coefficients`)."""
LEVELS = {"alphas_cumprod": "vp", "sigmas": "edm", "flow_sigmas": "flow", "betas": "vp", "mid_point_sigma": "edm"}
"""Where a scheduler keeps its noise levels → the coordinates they are in: ᾱ at the integer timestep (DDIM); σ̃ =
√((1 − ᾱ)/ᾱ) in ``sigmas[step_index]``; the flow path's σ in ``sigmas[step_index]``; IPNDM's σ = sin²(πs/2) in
``betas[step_index]``, α = √(1 − σ²) (ᾱ = 1 − σ², computed in float64); DPMSolverSDE's σ̃ in ``sigmas[step_index]``
on a step's first call and in ``mid_point_sigma`` on its second (``sigmas`` then holds the step's end)."""


def _snr_of_level(coordinates: str, level: float) -> float:
    """r = α/σ of a noise level as the scheduler stores it: ᾱ (vp), σ̃ (edm), σ (flow)."""
    if coordinates == "vp":
        return math.inf if level >= 1.0 else math.sqrt(level / (1.0 - level))
    if level <= 0.0:
        return math.inf
    return 1.0 / level if coordinates == "edm" else (1.0 - level) / level


def _coefficients(coordinates: str, snr: float) -> tuple[float, float]:
    """(c, e) with a sample at SNR r written c·x₁ + e·ε in these coordinates (c/e = r)."""
    if math.isinf(snr):
        return 1.0, 0.0
    if coordinates == "vp":
        return snr / math.sqrt(1.0 + snr * snr), 1.0 / math.sqrt(1.0 + snr * snr)
    if coordinates == "edm":
        return 1.0, 1.0 / snr
    return snr / (1.0 + snr), 1.0 / (1.0 + snr)


def _prediction(kind: str, data: Tensor, model_input: Tensor, c: float, e: float) -> Tensor:
    """What the scheduler's model returns, from the data prediction D at a sample x = c·x₁ + e·ε:
    ε̂ = (x − cD)/e; ``v_prediction`` cε̂ − eD (diffusers' v with α = c, σ = e); ``flow`` ε̂ − D (d x/dσ)."""
    if kind == "sample":
        return data
    noise = (model_input - c * data) / e
    return {"epsilon": noise, "v_prediction": c * noise - e * data, "flow": noise - data}[kind]


def _diffusers(spec: DiffusersScheduler):
    def integrate(request):
        diffusers = _import("diffusers")
        if not spec.float64 and request.x0.dtype == torch.float64:
            raise ValueError(f"diffusers' {spec.class_name} cannot step a float64 sample (its corrector's "
                             "torch.linalg.solve gets a float64 matrix and a float32 right-hand side); run it in float32")
        config = dict(spec.config)
        if spec.seed_option is not None:
            config[spec.seed_option] = int(torch.randint(0, 2**31 - 1, (1,), generator=request.generator))
        scheduler = getattr(diffusers, spec.class_name)(**config)
        scheduler.set_timesteps(len(request.grid) - 1)
        schedule, field_ = request.schedule, request.field

        def current_snr(timestep) -> float:
            if spec.levels == "alphas_cumprod":
                return _snr_of_level("vp", float(scheduler.alphas_cumprod[int(timestep)]))
            if spec.levels == "betas":  # IPNDM's trigonometric path: σ = betas, α = √(1 − σ²), here in float64
                # (its own float32 α is exactly 1 below σ ≈ 2e-4)
                return _snr_of_level("vp", 1.0 - float(scheduler.betas[scheduler.step_index or 0]) ** 2)
            if spec.levels == "mid_point_sigma" and scheduler.mid_point_sigma is not None:
                return _snr_of_level("edm", float(scheduler.mid_point_sigma))
            return _snr_of_level(LEVELS[spec.levels], float(scheduler.sigmas[scheduler.step_index or 0]))

        def network_snr(timestep, snr: float) -> float:
            """The SNR the network is told: a network trained on a DDPM table knows its integer timesteps, so where
            the scheduler hands it one, ᾱ there (Karras σ's rounded to a timestep are not that timestep's σ);
            else, or where the two agree to the float32 table's round-off, the sample's own level."""
            if timestep.is_floating_point() or not hasattr(scheduler, "alphas_cumprod"):
                return snr
            told = _snr_of_level("vp", float(scheduler.alphas_cumprod[int(timestep)]))
            return snr if abs(told / snr - 1.0) < 1e-6 else told

        times = []
        latent = None
        for timestep in scheduler.timesteps:
            snr = current_snr(timestep)
            t, _, sigma_t = _point_of_snr(schedule, snr, f"diffusers' {spec.class_name}")
            if latent is None:  # our x0 is the sample at the scheduler's first level, in its latent coordinates
                latent = request.x0 * (_coefficients(spec.latent, snr)[1] / sigma_t)
            if not times or times[-1] != t:
                times.append(t)
            model_input = scheduler.scale_model_input(latent, timestep) if spec.latent != spec.model_input else latent
            c, e = _coefficients(spec.model_input, snr)
            told = network_snr(timestep, snr)
            t_told = t if told == snr else _point_of_snr(schedule, told, f"diffusers' {spec.class_name}")[0]
            data = field_.data_prediction(t_told, model_input * (sigma_t / e))
            output = _prediction(spec.prediction, data, model_input, c, e)
            noise = {"generator": request.generator} if spec.draws_noise and spec.seed_option is None else {}
            latent = scheduler.step(output, timestep, latent, return_dict=False, **noise)[0]
        if spec.levels == "alphas_cumprod":
            final = float(scheduler.final_alpha_cumprod)
        elif spec.levels == "betas":
            final = 1.0 - float(scheduler.betas[-1]) ** 2
        else:
            final = float(scheduler.sigmas[-1])
        snr_end = _snr_of_level(LEVELS[spec.levels], final)
        t_end, alpha_end, _ = _point_of_snr(schedule, snr_end, f"diffusers' {spec.class_name}")
        times.append(t_end)
        x = latent.to(request.x0.dtype) * (alpha_end / _coefficients(spec.latent, snr_end)[0])
        return x, None, {"model_times": torch.tensor(times, dtype=torch.float64), "output_time": t_end}

    return integrate


DIFFUSERS_SCHEDULERS = {
    "ddim": DiffusersScheduler("DDIMScheduler", "vp", "vp", "epsilon", "alphas_cumprod", {"clip_sample": False}),
    "dpmsolver++": DiffusersScheduler("DPMSolverMultistepScheduler", "vp", "vp", "epsilon", "sigmas"),
    "unipc": DiffusersScheduler("UniPCMultistepScheduler", "vp", "vp", "epsilon", "sigmas", float64=False),
    "euler": DiffusersScheduler("EulerDiscreteScheduler", "edm", "vp", "epsilon", "sigmas"),
    "heun": DiffusersScheduler("HeunDiscreteScheduler", "edm", "vp", "epsilon", "sigmas", stages=None),
    "flow_match_euler": DiffusersScheduler("FlowMatchEulerDiscreteScheduler", "flow", "flow", "flow", "flow_sigmas"),
    "dpmsolver++_3m": DiffusersScheduler("DPMSolverMultistepScheduler", "vp", "vp", "epsilon", "sigmas",
                                         {"solver_order": 3}),
    "dpmsolver++_karras": DiffusersScheduler("DPMSolverMultistepScheduler", "vp", "vp", "epsilon", "sigmas",
                                             {"use_karras_sigmas": True}),
    "dpmsolver++_sigma_min": DiffusersScheduler("DPMSolverMultistepScheduler", "vp", "vp", "epsilon", "sigmas",
                                                {"final_sigmas_type": "sigma_min"}),
    "dpmsolver++_sigma_min_full_order": DiffusersScheduler(
        "DPMSolverMultistepScheduler", "vp", "vp", "epsilon", "sigmas",
        {"final_sigmas_type": "sigma_min", "lower_order_final": False}),
    "dpmsolver++_sigma_min_euler_at_final": DiffusersScheduler(
        "DPMSolverMultistepScheduler", "vp", "vp", "epsilon", "sigmas",
        {"final_sigmas_type": "sigma_min", "euler_at_final": True}),
    "deis": DiffusersScheduler("DEISMultistepScheduler", "vp", "vp", "epsilon", "sigmas"),
    "deis_full_order": DiffusersScheduler("DEISMultistepScheduler", "vp", "vp", "epsilon", "sigmas",
                                          {"lower_order_final": False}),
    "deis_3": DiffusersScheduler("DEISMultistepScheduler", "vp", "vp", "epsilon", "sigmas", {"solver_order": 3}),
    "ipndm": DiffusersScheduler("IPNDMScheduler", "vp", "vp", "v_prediction", "betas"),
    "dpmsolver++_singlestep": DiffusersScheduler("DPMSolverSinglestepScheduler", "vp", "vp", "epsilon", "sigmas"),
    "sa_solver": DiffusersScheduler("SASolverScheduler", "vp", "vp", "epsilon", "sigmas", draws_noise=True),
    "dpmsolver_sde": DiffusersScheduler("DPMSolverSDEScheduler", "edm", "vp", "epsilon", "mid_point_sigma", stages=None,
                                        draws_noise=True, seed_option="noise_sampler_seed"),
    "lms": DiffusersScheduler("LMSDiscreteScheduler", "edm", "vp", "epsilon", "sigmas"),
    "lms_karras": DiffusersScheduler("LMSDiscreteScheduler", "edm", "vp", "epsilon", "sigmas", {"use_karras_sigmas": True}),
}
"""The diffusers schedulers scored, at their defaults (DDPM's linear β table from 1e-4 to 0.02 over 1000 steps;
Heun's own 0.00085–0.012), except DDIM's ``clip_sample``, on by default, which clips the data prediction to
[−1, 1] (an image range; our targets are not in it), and the variants named after their option: DPM-Solver++ of
order 3, on Karras σ's, ending at the table's σ_min instead of 0 (with ``lower_order_final``, its default; without
it, ``_full_order``; with ``euler_at_final``, its last step first order at every step count); DEIS of order 3 (its
default is 2), DEIS without ``lower_order_final``; LMS on Karras σ's. ``peer:diffusers/<name>``."""


# ---------------------------------------------------------------------- registration

for _name, _stages in (("euler", 1), ("midpoint", 2), ("rk4", 4)):
    register_method(Method(f"peer:flow_matching/{_name}", _flow_matching(_name), stages=_stages, family="peer: flow_matching",
                           requires=("flow_matching",)))
for _name, _stages in (("euler", 1), ("rk4", 4)):
    register_method(Method(f"peer:torchdyn/{_name}", _torchdyn(_name), stages=_stages, family="peer: torchdyn",
                           requires=("torchdyn",)))
for _name, _stages in (("Euler", 1), ("Heun", 2)):
    register_method(Method(f"peer:torchode/{_name.lower()}", _torchode(_name), stages=_stages, family="peer: torchode",
                           requires=("torchode",)))
for _ours, _name, _random, _fixed in (
        ("euler", "sample_euler", False, None), ("heun", "sample_heun", False, None),
        ("dpmpp_2m", "sample_dpmpp_2m", False, None), ("euler_ancestral", "sample_euler_ancestral", True, None),
        ("dpmpp_2m_sde", "sample_dpmpp_2m_sde", True, None),
        ("dpmpp_3m", "sample_dpmpp_3m_sde", False, {"eta": 0.0}),  # k-diffusion's 3M is its 3M SDE at η = 0
        ("dpmpp_3m_sde", "sample_dpmpp_3m_sde", True, None),
        ("dpmpp_2s", "sample_dpmpp_2s_ancestral", False, {"eta": 0.0}),  # its ancestral sampler at η = 0
        ("dpmpp_2s_ancestral", "sample_dpmpp_2s_ancestral", True, None),
        ("lms", "sample_lms", False, None),
        ("dpm_solver_2s", "sample_dpm_2", False, None),
        ("dpmpp_sde", "sample_dpmpp_sde", True, None)):
    register_method(Method(
        f"peer:k_diffusion/{_ours}", _k_diffusion(_name, _fixed), predictions=("data",),
        needs_schedule=True, start=edm_start_time, random=_random, family="peer: k-diffusion", requires=("k_diffusion",),
    ))
register_method(Method(
    "peer:k_diffusion/dpm_adaptive", _k_diffusion_adaptive, stepping="adaptive", tolerances=(0.05, 0.0078),
    predictions=("data",), needs_schedule=True, start=edm_start_time, family="peer: k-diffusion",
    requires=("k_diffusion",),
))
for _name, _scheduler in DIFFUSERS_SCHEDULERS.items():
    register_method(Method(f"peer:diffusers/{_name}", _diffusers(_scheduler), stepping="own_grid",
                           stages=_scheduler.stages, random=_scheduler.draws_noise, predictions=("data",),
                           needs_schedule=True, family="peer: diffusers",
                           requires=("diffusers",)))


# ---------------------------------------------------------------------- installing the peers beside the pinned torch

PEER_VERSIONS = {"flow-matching": "1.0.10", "torchdyn": "1.0.6", "torchode": "1.0.1", "k-diffusion": "0.1.1.post1",
                 "diffusers": "0.42.1"}
"""The peers, installed without their declared requirements: k-diffusion's and torchdyn's name torchvision (and
torchdyn's pytorch-lightning stack, k-diffusion's training tools), whose only builds need a newer torch, so a plain
install would replace the pinned torch and then fail to import. What they really import is the ``peers`` extra."""
PEER_MARKERS = {"diffusers": "python_version >= '3.11'"}
"""Environment markers: diffusers 0.42 needs Python ≥ 3.11; on 3.10 its cells are skipped rows, with the reason."""


def install(pip_args: list[str] | None = None) -> None:
    """``pip install --no-deps`` the peers at :data:`PEER_VERSIONS`, then check that torch is the one it was."""
    import subprocess
    from importlib import metadata

    before = metadata.version("torch")
    packages = [f"{name}=={version}" + (f"; {PEER_MARKERS[name]}" if name in PEER_MARKERS else "")
                for name, version in PEER_VERSIONS.items()]
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                    *packages, *(pip_args or [])], check=True)
    after = metadata.version("torch")
    if after != before:
        raise SystemExit(f"installing the peers changed torch from {before} to {after}")
    print(f"peers installed ({', '.join(packages)}); torch is still {after}")

