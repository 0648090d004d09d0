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
                            ``sample_euler_ancestral``, ``sample_dpmpp_2m_sde`` driven by the denoiser
                            D(x̃; σ̃) = the field's data prediction at the time where σ/α = σ̃, in EDM's
                            coordinates x̃ = x/α; the noise levels are the cell's grid mapped to σ/α (so
                            every library sees the same times); ``euler_ancestral`` gets the cell's
                            generator as its noise sampler
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
import sys
import types
from pathlib import Path

import torch
from torch import Tensor, nn

from fmcore.solvers import Method, register_method
from fmcore.solvers.diffusion_samplers import edm_start_time
from fmcore.solvers.sde import brownian_increment

PEER_PACKAGES = {"flow_matching": "flow-matching", "torchdyn": "torchdyn", "torchode": "torchode",
                 "k_diffusion": "k-diffusion"}


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


def k_diffusion_sampling():
    """k-diffusion's ``sampling`` module, loaded without the package ``__init__`` (see the module docstring)."""
    if "k_diffusion.sampling" in sys.modules:
        return sys.modules["k_diffusion.sampling"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise PeerUnavailable("k-diffusion is not installed; install the peers with `fmbench install-peers`")
    try:
        importlib.import_module("torchvision.transforms.functional")
    except Exception:  # noqa: BLE001 — no usable torchvision: utils only needs the name for its image helpers
        for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
            sys.modules.setdefault(name, types.ModuleType(name))
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
    return sys.modules["k_diffusion.sampling"]


def _k_diffusion(name: str):
    def integrate(request):
        sampling = k_diffusion_sampling()
        schedule, x0 = request.schedule, request.x0
        times = request.grid.tolist()
        values = [schedule(t) for t in times]
        alphas = [float(v.alpha) for v in values]
        levels = [float(v.sigma) / a for v, a in zip(values, alphas, strict=True)]
        point_of = {level: (t, alpha) for level, t, alpha in zip(levels, times, alphas, strict=True)}

        def denoiser(x_scaled: Tensor, level: Tensor) -> Tensor:
            value = float(level.reshape(-1)[0])
            if value in point_of:
                t, alpha = point_of[value]
            else:  # a level off the grid (churn): the time where σ/α is that level
                t = float(schedule.t_from_snr(1.0 / value))
                alpha = float(schedule(t).alpha)
            return request.field.data_prediction(t, alpha * x_scaled)

        sigmas = torch.tensor(levels, dtype=x0.dtype, device=x0.device)
        options = {"disable": True}
        if name == "sample_euler_ancestral":  # our generator's noise, drawn as ours is: one draw per noisy step
            options["noise_sampler"] = lambda sigma, sigma_next: brownian_increment(x0.shape, request.generator, x0)
        if name == "sample_dpmpp_2m_sde":  # its Brownian tree, seeded from the cell's generator (reproducible)
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=request.generator))
            positive = sigmas[sigmas > 0]
            options["noise_sampler"] = sampling.BrownianTreeNoiseSampler(
                x0 / alphas[0], positive.min(), positive.max(), seed=seed)
        scaled = getattr(sampling, name)(denoiser, x0 / alphas[0], sigmas, **options)
        return alphas[-1] * scaled, None, {}

    return integrate


# ---------------------------------------------------------------------- registration

for _name, _stages in (("euler", 1), ("midpoint", 2), ("rk4", 4)):
    register_method(Method(f"peer:flow_matching/{_name}", _flow_matching(_name), stages=_stages, family="peer: flow_matching"))
for _name, _stages in (("euler", 1), ("rk4", 4)):
    register_method(Method(f"peer:torchdyn/{_name}", _torchdyn(_name), stages=_stages, family="peer: torchdyn"))
for _name, _stages in (("Euler", 1), ("Heun", 2)):
    register_method(Method(f"peer:torchode/{_name.lower()}", _torchode(_name), stages=_stages, family="peer: torchode"))
for _name, _random in (("sample_euler", False), ("sample_heun", False), ("sample_dpmpp_2m", False),
                       ("sample_euler_ancestral", True), ("sample_dpmpp_2m_sde", True)):
    register_method(Method(
        f"peer:k_diffusion/{_name.removeprefix('sample_')}", _k_diffusion(_name), predictions=("data",),
        needs_schedule=True, start=edm_start_time, random=_random, family="peer: k-diffusion",
    ))


# ---------------------------------------------------------------------- installing the peers beside the pinned torch

PEER_VERSIONS = {"flow-matching": "1.0.10", "torchdyn": "1.0.6", "torchode": "1.0.1", "k-diffusion": "0.1.1.post1"}
"""The peers, installed without their declared requirements: k-diffusion's and torchdyn's name torchvision (and
torchdyn's pytorch-lightning stack, k-diffusion's training tools), whose only builds need a newer torch, so a plain
install would replace the pinned torch and then fail to import. What they really import is the ``peers`` extra."""


def install(pip_args: list[str] | None = None) -> None:
    """``pip install --no-deps`` the peers at :data:`PEER_VERSIONS`, then check that torch is the one it was."""
    import subprocess
    from importlib import metadata

    before = metadata.version("torch")
    packages = [f"{name}=={version}" for name, version in PEER_VERSIONS.items()]
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                    *packages, *(pip_args or [])], check=True)
    after = metadata.version("torch")
    if after != before:
        raise SystemExit(f"installing the peers changed torch from {before} to {after}")
    print(f"peers installed ({', '.join(packages)}); torch is still {after}")

