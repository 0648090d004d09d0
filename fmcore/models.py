r"""Learned models paired with the analytic targets (``docs/design.md``, "Learned models").

A network :math:`f_\theta(t, x)` (seed 000's sinusoidal time embedding into a GELU MLP) is trained on fresh
samples of an analytic target along any schedule, with one of three objectives, and wrapped as a
:class:`LearnedField` that has the :class:`~fmcore.fields.AnalyticField` interface — a
:class:`~fmcore.model_field.ModelField` in path time, whose prediction type (:mod:`fmcore.predictions`) carries the
conversions from :mod:`fmcore.conversions`:

* ``cfm`` — the network predicts the velocity; loss :math:`\|f - (\dot\alpha x_1 + \dot\sigma\varepsilon)\|^2`
  (seed 001's recipe). Velocity: the output. Score: divides by σ, singular at t = 1.
* ``dsm`` — the network predicts the noise :math:`E[\varepsilon|x_t]`; loss :math:`\|f - \varepsilon\|^2`, i.e.
  denoising score matching with weight σ² (seed 003). Velocity divides by α (singular at t = 0 where
  :math:`\alpha_0 = 0`); score divides by σ (singular at t = 1).
* ``x1`` — the network predicts the data :math:`E[x_1|x_t]`; loss :math:`\|f - x_1\|^2`. Velocity and score
  divide by σ² (singular at t = 1).

Where a conversion divides by a quantity that vanishes at an end of [0, 1] on the given schedule, the
field evaluates it at the clipped time (``t_eps`` from that end, 1e-3 by default) instead; the clip is
recorded in ``field.clip``. Samplers never need the score at t = 1 (Euler–Maruyama evaluates at the left
end of each step), so the clip only matters for ODE sampling of ``dsm`` (at t = 0) and ``x1`` (at t = 1)
models, where it costs an O(t_eps) error in the last/first step.

:func:`train_model` caches checkpoints (state dict + the JSON config that built them + a checksum) under a
directory keyed by a hash of the config; a missing, corrupt or mismatched checkpoint is retrained.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ._checks import (
    SEED_LIMIT,
    as_generator,
    check_allocation,
    check_bool,
    check_instance,
    check_int,
    check_number,
    check_seed,
)
from ._files import atomic_writer
from .conventions import PathTime
from .fields import AnalyticField
from .model_field import ModelField
from .predictions import PREDICTION_TYPES, prediction_of_objective
from .schedules import Schedule
from .targets import GaussianMixture

__all__ = [
    "OBJECTIVES",
    "SinusoidalMLP",
    "LearnedField",
    "TrainingDivergedError",
    "train_model",
    "exact_fm_loss",
    "ExactLoss",
    "default_cache_dir",
]

OBJECTIVES = tuple(entry.objective for entry in PREDICTION_TYPES.values() if entry.objective)  # cfm, dsm, x1
DEFAULT_ARCHITECTURE = {"width": 64, "depth": 4, "time_embedding": 16}


class SinusoidalMLP(nn.Module):
    """Seed 000's network: a learned linear map of t, scaled by π, through cos and sin, concatenated to x and
    fed to a GELU MLP of ``depth`` hidden layers of ``width``. Seed 000 used ``time_embedding = 2`` and
    ``width = 64``, ``depth = 4``; the embedding is wider here by default (16), which trains faster."""

    def __init__(self, dim: int, width: int = 64, depth: int = 4, time_embedding: int = 16):
        super().__init__()
        dim, width, depth = check_int("dim", dim), check_int("width", width), check_int("depth", depth)
        time_embedding = check_int("time_embedding", time_embedding, minimum=2)
        if time_embedding % 2:
            raise ValueError(
                f"need dim ≥ 1, width ≥ 1, depth ≥ 1 and an even time_embedding ≥ 2; got dim={dim}, width={width}, "
                f"depth={depth}, time_embedding={time_embedding}"
            )
        self.dim = dim
        self.time_projection = nn.Linear(1, time_embedding // 2)
        parameters = (dim + time_embedding + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * dim
        check_allocation("width", width, f"an MLP of depth {depth} on d = {dim} with {parameters:.3g} float32 "
                         "parameters", 4.0 * parameters)
        layers: list[nn.Module] = [nn.Linear(dim + time_embedding, width), nn.GELU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), nn.GELU()]
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        """``t`` of shape ``(n,)`` (or 0-d, broadcast), ``x`` of shape ``(n, d)``."""
        t_column = t.reshape(-1, 1).expand(x.shape[0], 1) if t.dim() == 0 else t.reshape(-1, 1)
        angles = self.time_projection(t_column) * math.pi
        return self.net(torch.cat([torch.cos(angles), torch.sin(angles), x], dim=1))


class LearnedField(ModelField):
    """One of the suite's own networks (:func:`train_model`) as a field: a :class:`~fmcore.model_field.ModelField` in
    path time whose prediction is that of its training ``objective`` (``cfm`` → velocity, ``dsm`` → noise, ``x1`` →
    data); ``.objective`` and ``.config`` (what built it) besides the field interface.

    ``compute_dtype`` (``torch.bfloat16`` or ``torch.float16``) runs the network under ``torch.autocast`` in that
    precision while the state, the conversions and the solver stay in ``.dtype`` (mixed precision: see
    :meth:`in_precision`)."""

    def __init__(
        self,
        model: nn.Module,
        schedule: Schedule,
        objective: str,
        t_eps: float = 1e-3,
        config: dict | None = None,
        compute_dtype: torch.dtype | None = None,
    ):
        _check_objective(objective)
        check_instance("model", model, nn.Module, "a network called as model(t, x)")
        super().__init__(model, schedule, prediction_of_objective(objective), PathTime(),
                         dim=getattr(model, "dim", None), t_eps=t_eps, compute_dtype=compute_dtype)
        self.objective = objective
        self.config = config or {}

    def in_precision(self, compute_dtype: torch.dtype | None) -> LearnedField:
        """The same network evaluated with ``compute_dtype`` autocast (None: in its own dtype)."""
        return LearnedField(self.model, self.schedule, self.objective, self.t_eps, self.config, compute_dtype)

    def __repr__(self) -> str:
        return f"LearnedField({self.objective}, {self.schedule!r}, dim={self.dim})"


# ---------------------------------------------------------------------- training


def _check_objective(objective) -> None:
    if not isinstance(objective, str):
        raise TypeError(f"objective must be a name, one of {list(OBJECTIVES)}, got {type(objective).__name__}")
    if objective not in OBJECTIVES:
        raise KeyError(f"unknown objective {objective!r}; valid names: {list(OBJECTIVES)}")


class TrainingDivergedError(RuntimeError):
    """The training loss became non-finite."""

    def __init__(self, step: int, last_finite_loss: float | None):
        self.step, self.last_finite_loss = step, last_finite_loss
        super().__init__(f"training loss became non-finite at step {step}; last finite loss: {last_finite_loss}")


def default_cache_dir() -> Path:
    """``$FMBENCH_CACHE/models`` if set, else the user's cache directory (``$XDG_CACHE_HOME/fmbench/models``,
    ``~/.cache/fmbench/models``): never a path relative to wherever the program was started. The ``fmbench``
    command passes its own (``--cache``, default beside the runs)."""
    if "FMBENCH_CACHE" in os.environ:
        return Path(os.environ["FMBENCH_CACHE"]) / "models"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "fmbench" / "models"


def _regression_target(objective: str, values, x1: Tensor, noise: Tensor) -> Tensor:
    if objective == "cfm":
        return values.d_alpha.unsqueeze(1) * x1 + values.d_sigma.unsqueeze(1) * noise
    if objective == "dsm":
        return noise
    return x1


class _Progress:
    """A throttled one-line progress report on stderr (at most every ``every_s`` seconds)."""

    def __init__(self, total: int | None, budget_s: float | None, label: str, every_s: float = 2.0, enabled: bool = True):
        self.total, self.budget_s, self.label, self.every_s, self.enabled = total, budget_s, label, every_s, enabled
        self.last = -math.inf

    def update(self, step: int, elapsed: float, loss: float, final: bool = False) -> None:
        if not self.enabled or (not final and elapsed - self.last < self.every_s):
            return
        self.last = elapsed
        goal = f"/{self.total}" if self.total else ""
        budget = f"/{self.budget_s:.0f}s" if self.budget_s else "s"
        # On a terminal one line is rewritten in place; elsewhere (a log file, CI) each report is its own line.
        terminal = sys.stderr.isatty()
        start = "\r" if terminal else ""
        print(f"{start}{self.label}: step {step}{goal}  {elapsed:.1f}{budget}  loss {loss:.4g}",
              end="\n" if final or not terminal else "", file=sys.stderr, flush=True)


def _check_cache_dir(path: Path, given) -> None:
    """Refuse, before any training, a cache directory that cannot be one: empty, an existing file, or not writable."""
    if str(given) == "":
        raise ValueError("cache_dir must be a directory path, None (the default cache) or False (no cache), got ''")
    existing = next((parent for parent in (path, *path.parents) if parent.exists()), None)
    if path.exists() and not path.is_dir():
        raise ValueError(f"cache_dir {str(given)!r} exists and is not a directory")
    if existing is not None and existing != path and not existing.is_dir():
        raise ValueError(f"cache_dir {str(given)!r} cannot be made: {existing} is not a directory")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"cache_dir {str(given)!r} is not writable (no write access to {existing})")


def _train(
    target: GaussianMixture, schedule: Schedule, objective: str, seed: int, steps: int | None, budget_s: float | None,
    batch_size: int, learning_rate: float, architecture: dict, progress: bool,
) -> tuple[nn.Module, dict]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SinusoidalMLP(target.dim, **architecture)
    generator = torch.Generator().manual_seed((seed + 1) % SEED_LIMIT)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    planned = steps
    scheduler = None
    start = time.perf_counter()
    reporter = _Progress(steps, budget_s, f"training {objective} on {schedule!r}", enabled=progress)
    last_finite = None
    step = 0
    while True:
        elapsed = time.perf_counter() - start
        if (steps is not None and step >= steps) or (budget_s is not None and elapsed >= budget_s):
            break
        if scheduler is None and (planned is not None or step == 20):
            # With only a time budget, the cosine schedule's length is estimated from the first 20 steps.
            planned = planned or max(step + 1, int(budget_s / max(elapsed / max(step, 1), 1e-9)))
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=planned)
        x1 = target.sample(batch_size, generator=generator).float()
        noise = torch.randn(batch_size, target.dim, generator=generator)
        t = torch.rand(batch_size, generator=generator)
        values = schedule.values(t)
        x_t = values.alpha.unsqueeze(1) * x1 + values.sigma.unsqueeze(1) * noise
        regression = _regression_target(objective, values, x1, noise)
        loss = ((model(t, x_t) - regression) ** 2).sum(dim=1).mean()
        if not torch.isfinite(loss):
            raise TrainingDivergedError(step, last_finite)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None and scheduler.last_epoch < planned:
            scheduler.step()
        last_finite = float(loss.detach())
        step += 1
        reporter.update(step, elapsed, last_finite)
    reporter.update(step, time.perf_counter() - start, last_finite if last_finite is not None else math.nan, final=True)
    return model.eval(), {"steps_done": step, "seconds": time.perf_counter() - start, "final_loss": last_finite}


def _save_atomically(path: Path, data: bytes) -> None:
    with atomic_writer(path) as file:  # never through a link planted in the (possibly shared) cache directory
        file.write(data)


def _load_checkpoint(directory: Path, config: dict) -> tuple[nn.Module, dict] | None:
    """The cached model if its files exist, match ``config`` and pass the checksum; None otherwise."""
    weights_path, config_path = directory / "model.pt", directory / "config.json"
    if not (weights_path.exists() and config_path.exists()):
        return None
    try:
        record = json.loads(config_path.read_text())
        data = weights_path.read_bytes()
        if record.get("config") != config:
            print(f"checkpoint {directory} was built from another config; retraining", file=sys.stderr)
            return None
        if record.get("sha256") != hashlib.sha256(data).hexdigest():
            print(f"checkpoint {directory} is corrupt (checksum mismatch); retraining", file=sys.stderr)
            return None
        model = SinusoidalMLP(config["dim"], **config["architecture"])
        model.load_state_dict(torch.load(io.BytesIO(data), weights_only=True))
        return model.eval(), record
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        print(f"checkpoint {directory} could not be read ({error}); retraining", file=sys.stderr)
        return None


def train_model(
    target: GaussianMixture,
    schedule: Schedule,
    objective: str = "cfm",
    seed: int = 0,
    steps: int | None = None,
    budget_s: float | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 512,
    learning_rate: float = 2e-3,
    t_eps: float = 1e-3,
    progress: bool = True,
    cached_only: bool = False,
    **architecture,
) -> LearnedField:
    """Train (or load from the cache) a model of ``target`` along ``schedule`` and return it as a field.

    Fresh target samples every step, Adam with a cosine learning-rate schedule, CPU float32, seeded: with a
    ``steps`` budget two runs give identical weights. A ``budget_s`` (seconds) stops on time instead (then the
    number of steps done depends on the machine; it is recorded in ``field.config``). ``cache_dir=None``
    uses :func:`default_cache_dir`; ``cache_dir=False`` disables caching. ``cached_only=True`` loads a cached model
    or raises ``FileNotFoundError``, never trains.
    """
    _check_objective(objective)
    check_instance("target", target, GaussianMixture, "e.g. fmcore.get_target('seed000')")
    check_instance("schedule", schedule, Schedule, "see fmcore.schedules.get_schedule")
    if steps is None and budget_s is None:
        raise ValueError("give a training budget: steps (reproducible) and/or budget_s (seconds)")
    if steps is not None:
        steps = check_int("steps", steps)
    if budget_s is not None:
        budget_s = check_number("budget_s", budget_s, 0.0, low_open=True)
    seed = check_seed("seed", seed)
    batch_size = check_int("batch_size", batch_size)
    learning_rate = check_number("learning_rate", learning_rate, 0.0, low_open=True)
    t_eps = check_number("t_eps", t_eps, 0.0, 0.5, low_open=True, high_open=True)
    check_bool("progress", progress)
    check_bool("cached_only", cached_only)
    if cache_dir is not None and cache_dir is not False and not isinstance(cache_dir, (str, os.PathLike)):
        raise TypeError(f"cache_dir must be a path, None (the default cache) or False (no cache), got {type(cache_dir).__name__}")
    if cache_dir is not None and cache_dir is not False:
        _check_cache_dir(Path(cache_dir), cache_dir)
    unknown = set(architecture) - set(DEFAULT_ARCHITECTURE)
    if unknown:
        raise ValueError(f"unknown architecture options {sorted(unknown)}; valid: {sorted(DEFAULT_ARCHITECTURE)}")
    architecture = {**DEFAULT_ARCHITECTURE, **architecture}
    config = {
        "target": target.fingerprint(), "dim": target.dim, "schedule": repr(schedule), "objective": objective,
        "seed": seed, "steps": steps, "budget_s": budget_s, "batch_size": batch_size, "learning_rate": learning_rate,
        "architecture": architecture,
    }
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:20]
    directory = None if cache_dir is False else Path(cache_dir or default_cache_dir()) / key
    if directory is not None:
        cached = _load_checkpoint(directory, config)
        if cached is not None:
            model, record = cached
            return LearnedField(model, schedule, objective, t_eps, {**config, **record.get("training", {})})
    if cached_only:
        raise FileNotFoundError(f"no cached model for this configuration in {directory} (cached_only=True)")
    model, training = _train(
        target, schedule, objective, seed, steps, budget_s, batch_size, learning_rate, architecture, progress
    )
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        data = buffer.getvalue()
        _save_atomically(directory / "model.pt", data)
        record = {"config": config, "sha256": hashlib.sha256(data).hexdigest(), "training": training}
        _save_atomically(directory / "config.json", json.dumps(record, indent=2, sort_keys=True).encode())
    return LearnedField(model, schedule, objective, t_eps, {**config, **training})


# ---------------------------------------------------------------------- the exact losses


@dataclass(frozen=True)
class ExactLoss:
    """Exact flow-matching and score losses, overall and per time bin (``bins`` holds (t_low, t_high) pairs)."""

    velocity: float
    score: float
    bins: list[tuple[float, float]]
    velocity_per_bin: list[float]
    score_per_bin: list[float]


@torch.no_grad()
def exact_fm_loss(
    field, analytic_field: AnalyticField, n: int = 4096, time_bins: int = 10, generator: torch.Generator | int | None = None
) -> ExactLoss:
    r""":math:`E_{t, x\sim p_t}\|v_\theta(t, x) - u_t(x)\|^2` against the closed-form marginal velocity, and the same
    for the score, with t uniform in each of ``time_bins`` equal bins (n points per bin) and x drawn from the
    exact marginal :math:`p_t`. The overall value is the mean over bins (t uniform on [0, 1]).

    This is the model's own error, free of any sampler's discretisation error: the quantity that CFM
    training minimises up to a constant (seeds 001, 003, 004). Monte Carlo standard error about
    :math:`\operatorname{sd}(\|v_\theta - u\|^2)/\sqrt n` per bin.
    """
    check_instance("analytic_field", analytic_field, AnalyticField, "the exact field the model is compared with")
    if not callable(field) or not callable(getattr(field, "score", None)):
        raise TypeError(f"field must be callable as field(t, x) and have .score(t, x) (a LearnedField), "
                        f"got {type(field).__name__}")
    n, time_bins = check_int("n", n), check_int("time_bins", time_bins)
    generator = as_generator(generator)
    target, schedule = analytic_field.target, analytic_field.schedule
    dtype = getattr(field, "dtype", None) or torch.float64  # a network that is a function has no dtype
    edges = torch.linspace(0, 1, time_bins + 1, dtype=torch.float64).tolist()
    bins, velocity_errors, score_errors = [], [], []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        t = low + (high - low) * torch.rand(n, dtype=torch.float64, generator=generator)
        x1 = target.sample(n, generator=generator)
        noise = torch.randn(n, target.dim, dtype=torch.float64, generator=generator)
        values = schedule.values(t)
        x = values.alpha.unsqueeze(1) * x1 + values.sigma.unsqueeze(1) * noise
        exact_velocity, exact_score = analytic_field.velocity_and_score(t, x)
        # velocity and score each at its own clipped time (velocity_and_score would clip both to the common interval)
        model_velocity, model_score = field(t.to(dtype), x.to(dtype)), field.score(t.to(dtype), x.to(dtype))
        velocity_errors.append(float(((model_velocity.double() - exact_velocity) ** 2).sum(1).mean()))
        score_errors.append(float(((model_score.double() - exact_score) ** 2).sum(1).mean()))
        bins.append((low, high))
    return ExactLoss(
        sum(velocity_errors) / time_bins, sum(score_errors) / time_bins, bins, velocity_errors, score_errors
    )
