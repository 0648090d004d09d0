"""One cell of a sweep: a pure function from a :class:`CellSpec` to a flat row (a dict).

A cell builds its target, schedule and field, draws its noise (CPU float64, seeded, then cast: the same
noise on every device and dtype), runs the sampler with device-synchronised timing, and scores the output
against the truth:

* Gaussian targets: ``strong_error`` against the exact flow map of the same noise from t = 0 (ODE methods), with
  ``strong_error_se``, its Monte-Carlo standard error over the cell's n noises (on mixtures too), and the Bures W2
  between the sample's moments and the exact ones (``gaussian_fit_w2``) for every method;
* Gaussian targets, analytic field, every method with an exact law (``fmcore.exact``: all tableaus,
  Euler–Maruyama, seed 000's sampler): ``w2_exact_law``, the exact W2 of the sampler's output law to the target,
  with no sampling noise; for ODE methods ``strong_error_exact``, the exact expected strong error. A grid that
  starts at a clipped t₀ > 0 also gets its two parts: ``clip_w2_exact_law`` / ``clip_strong_error`` (the exact
  flow from t₀ against the target / against the exact map from 0) and ``discretisation_strong_error`` (the
  sampler against the exact map from its own start);
* mixtures: ``strong_error`` against a float64 dopri5 reference solve at rtol = atol = 1e-10 from the same
  noise (ODE methods, cached per target/schedule/seed/n), ``w2_sliced`` to a target sample, ``mode_tv`` and
  ``gaussian_fit_w2``;
* a grid that ends before t = 1 (``grid_params = { uniform = { t1 = 0.99 } }``: an early stop, recorded as ``t1``) is
  scored against the data like any other (charged for stopping), and also against the path at ``t1``:
  ``w2_exact_law_marginal``, ``strong_error_exact_marginal`` and ``strong_error_marginal`` (Gaussian targets);
* every sampled metric has its floor in the same row (``*_floor``: the metric between exact samples of the
  same size, mean of 3 repeats).

A cell that fails (bad spec, diverging solve) returns a row with ``status = "failed"`` and the error;
it never raises (but a ``KeyboardInterrupt`` goes through, so Ctrl-C stops a sweep), so no finished result of
a sweep is lost. A CUDA cell on a machine without CUDA, or a peer's cell where that library is not installed, is
a row with ``status = "skipped"`` and the reason.

Timing and accuracy share the cell like this: the sampler runs once, scored and timed (``wall_s``); with
``timing_repeats = k > 0`` it runs k more times, timed only, and ``wall_s`` is the median of those (the first,
cold run is then left out), ``wall_s_min`` and ``wall_s_max`` their range. The run's execution context — torch
threads, the model cache — is not part of the cell's identity: it is passed as a :class:`CellContext` and recorded
in the row (``threads``).
"""

from __future__ import annotations

import functools
import json
import statistics
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from fmbench.allocator import release_freed_memory
from fmbench.calibration import calibration_seconds
from fmbench.cellspec import CellSpec
from fmbench.execution import prepare
from fmbench.faults import fault_of, time_limit
from fmbench.peers import PeerUnavailable
from fmbench.plugins import load_plugin
from fmbench.roofline import velocity_cost
from fmbench.timing import OtherLoad, synchronize
from fmbench.user_models import LOSS_POINTS, is_user_model, load_network
from fmcore import AnalyticField, get_schedule, get_target
from fmcore.exact import exact_output_law, has_exact_law
from fmcore.grids import GRIDS, get_grid
from fmcore.metrics import (
    gaussian_fit_w2,
    mode_tv,
    spectral_fit_w2,
    strong_error,
    strong_error_standard_error,
    w2_floor,
    w2_sliced,
)
from fmcore.models import exact_fm_loss, train_model
from fmcore.solvers import get_diffusion, get_method, sample

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.float32}
"""A cell's ``dtype`` → the dtype of its state (noise, solver, output)."""
AUTOCAST = {"bfloat16": torch.bfloat16}
"""Mixed-precision dtypes: the learned network runs under ``torch.autocast`` in this dtype, the state stays in
float32. Learned fields only: the closed forms' log-sum-exp and whitening, and an ODE state whose per-step
increment is below bfloat16's resolution (2⁻⁸ relative), are not meaningful in bfloat16."""
SLICED_PROJECTIONS = 128


@dataclass(frozen=True)
class CellContext:
    """How a cell runs, not what it measures: torch's intra-op threads, the learned-model cache, the user's plugin
    modules (imported before the cell runs, so a worker process knows the methods they register) and the cell's time
    limit (:mod:`fmbench.faults`)."""

    threads: int = 1
    cache_dir: str | None = None
    plugins: tuple[str, ...] = ()
    time_limit_s: float | None = None


def spec_row(spec: CellSpec) -> dict:
    """The columns every row of ``spec`` starts with: its identity and its spec, parameter maps as JSON text (so
    each column holds one type, whatever the row's status)."""
    row = {"cell": spec.key()}
    for name, value in asdict(spec).items():
        row[name] = json.dumps(value, sort_keys=True) if isinstance(value, dict) else value
    return row


def failed_row(spec: CellSpec, error: str, fault: str = "error") -> dict:
    """The row of a cell that failed outside :func:`run_cell` (its model's training, or its worker); ``fault`` as in
    :mod:`fmbench.faults`."""
    return {**spec_row(spec), "status": "failed", "error": error, "fault": fault}


@functools.lru_cache(maxsize=32)
def _reference_solution(target_name: str, target_json: str, schedule_name: str, schedule_json: str, seed: int, n: int,
                        device: str = "cpu"):
    """Float64 dopri5 at rtol = atol = 1e-10 from the cell's noise: the truth for strong errors on mixtures. Solved on
    the cell's device (a CUDA cell's 2²⁰ points would take minutes on the CPU), returned on the CPU."""
    target = get_target(target_name, **json.loads(target_json))
    schedule = get_schedule(schedule_name, **json.loads(schedule_json))
    noise = _noise(seed, n, target.dim, schedule.prior_std).to(device)
    return sample(AnalyticField(target, schedule), noise, "dopri5", rtol=1e-10, atol=1e-10).x.cpu()


FULL_FIT_LARGEST_DIM = 1024
"""Above this d, a target whose components share one eigenbasis (image targets, ``cifar10``) is scored with
``spectral_fit_w2`` — the Gaussian fit diagonal in its eigenbasis, O(n·d log d) — instead of ``gaussian_fit_w2``,
whose d × d sample covariance and its square root cost O(n·d² + d³) (38–155 s per cell at d = 3072 here)."""


def _fit_metric(target) -> tuple[str, object]:
    """The fitted-Gaussian metric a target is scored with, and its name."""
    if target.dim > FULL_FIT_LARGEST_DIM and target.basis is not None:
        return "spectral_fit_w2", spectral_fit_w2
    return "gaussian_fit_w2", gaussian_fit_w2


@functools.lru_cache(maxsize=64)
def _floors(target_name: str, target_json: str, n: int) -> dict[str, float]:
    """Each sampled metric of an exact sampler: between target samples of size n, mean of 3 repeats."""
    target = get_target(target_name, **json.loads(target_json))
    generator = torch.Generator().manual_seed(1)
    samples = [target.sample(n, generator=generator) for _ in range(3)]
    name, fit = _fit_metric(target)
    floors = {f"{name}_floor": sum(fit(x, target) for x in samples) / 3}
    if target.num_components > 1:
        floors["w2_sliced_floor"] = w2_floor(target, n, "sliced", generator=1, repeats=3, n_projections=SLICED_PROJECTIONS)
        floors["mode_tv_floor"] = sum(mode_tv(x, target) for x in samples) / 3
    return floors


def _noise(seed: int, n: int, dim: int, prior_std: float) -> torch.Tensor:
    return prior_std * torch.randn(n, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def train_for(spec: CellSpec, cache_dir: str | Path | None, progress: bool = False, cached_only: bool = False):
    """The learned field a cell needs: trained (and cached) if missing, loaded from ``cache_dir`` otherwise
    (``cached_only``: load or raise ``FileNotFoundError``, never train)."""
    target = get_target(spec.target, **spec.target_params)
    schedule = get_schedule(spec.schedule, **spec.schedule_params)
    return train_model(target, schedule, spec.learned_objective(), seed=spec.seed, steps=spec.train_steps,
                       cache_dir=cache_dir, progress=progress, cached_only=cached_only)


def _build_field(spec: CellSpec, target, schedule, dtype, context: CellContext):
    """The cell's field, and the user's :class:`TrainedNetwork` behind it for a ``module:`` field (else None)."""
    if spec.field == "analytic":
        return AnalyticField(target, schedule), None
    if is_user_model(spec.field):
        network = load_network(spec.field, context.plugins)
        if isinstance(network.network, nn.Module):
            network.network.to(dtype=dtype, device=spec.device)
        return network.field(schedule, compute_dtype=AUTOCAST.get(spec.dtype)), network
    if spec.learned_objective() is None:
        raise ValueError(f"field must be 'analytic' or 'learned:<objective>', got {spec.field!r}")
    learned = train_for(spec, context.cache_dir)
    if dtype != torch.float32 or spec.device != "cpu":
        learned.model.to(dtype=dtype, device=spec.device)
    return learned.in_precision(AUTOCAST.get(spec.dtype)), None


_network_losses: dict[tuple, float] = {}


def _network_floor(spec: CellSpec, network, field, target, schedule) -> dict:
    """A user's network's fingerprint and its error floor, its exact FM loss against the analytic target (once per
    network, target, schedule and dtype in a process; :mod:`fmbench.user_models`)."""
    fingerprint = network.fingerprint()
    key = (fingerprint, spec.target, json.dumps(spec.target_params, sort_keys=True), spec.schedule,
           json.dumps(spec.schedule_params, sort_keys=True), spec.dtype, spec.device)
    if key not in _network_losses:
        _network_losses[key] = exact_fm_loss(field, AnalyticField(target, schedule), n=LOSS_POINTS, generator=0).velocity
    return {"model_fingerprint": fingerprint, "model_velocity_loss": _network_losses[key]}


CELL_FIELDS_FOR_GRIDS = ("method", "method_params", "target", "target_params", "diffusion", "diffusion_params")
"""The cell's own fields that a grid receives when it declares a parameter of the same name: the optimal grid is
optimal for the cell's method (with its options), target and diffusion. A grid parameter the sweep sets wins."""


def grid_arguments(spec: CellSpec) -> dict:
    """The keyword arguments of ``get_grid`` for this cell: its ``grid_params``, and the fields of
    :data:`CELL_FIELDS_FOR_GRIDS` its grid declares (and the sweep did not set)."""
    declared = GRIDS.parameters(spec.grid)
    supplied = {name: getattr(spec, name) for name in CELL_FIELDS_FOR_GRIDS if name in declared}
    return {**supplied, **spec.grid_params}


def _sampler_options(spec: CellSpec, schedule) -> dict:
    """The keyword arguments of ``sample`` for this cell, from what its method declares it takes (steps or grid,
    tolerances, diffusion, its own options, a generator when it draws noise)."""
    method = get_method(spec.method)
    options: dict = {}
    if method.takes_steps:
        if method.stepping == "own_grid" or (spec.grid == "uniform" and not spec.grid_params):
            options["steps"] = spec.steps
        else:  # grid_params: the grid's own (rho, sigma_min, …) and t0/t1 (t1 < 1: an early stop)
            options["grid"] = get_grid(spec.grid, spec.steps, schedule, **grid_arguments(spec))
    else:
        options.update(rtol=spec.rtol, atol=spec.atol)
    if method.diffusion:
        options["diffusion"] = get_diffusion(spec.diffusion or "zero", **spec.diffusion_params)
    options.update(spec.method_params)
    if method.draws_noise(spec.method_params):
        options["generator"] = spec.seed + 1
    return options


def _run_sampler(spec: CellSpec, prepared) -> tuple:
    """The scored run, then ``timing_repeats`` timed-only runs; (outcome, timing, peak CUDA memory in bytes), where
    timing holds ``wall_s`` (the scored run's time, or the median of the repeats) and, with repeats, their
    ``wall_s_min`` and ``wall_s_max``: the spread a reader needs to tell a difference from noise."""
    cuda = spec.device.startswith("cuda")

    def timed_run():
        synchronize(spec.device)
        start = time.perf_counter()
        outcome = prepared.run()
        synchronize(spec.device)
        return outcome, time.perf_counter() - start

    if cuda:
        torch.cuda.reset_peak_memory_stats(spec.device)
    with torch.no_grad():
        outcome, wall_s = timed_run()  # the scored run
        timing = {"wall_s": wall_s, "wall_s_min": None, "wall_s_max": None}
        if spec.timing_repeats > 0:  # timed repeats only: the cold first run is left out of the median
            repeats = [timed_run()[1] for _ in range(spec.timing_repeats)]
            timing = {"wall_s": statistics.median(repeats), "wall_s_min": min(repeats), "wall_s_max": max(repeats)}
    peak = torch.cuda.max_memory_allocated(spec.device) if cuda else None
    return outcome, timing, peak


def run_cell(spec: CellSpec, context: CellContext | None = None) -> dict:
    """Run one cell; always returns a row (``status`` "ok", "failed" or "skipped")."""
    context = context or CellContext()
    row = {**spec_row(spec), "threads": context.threads, "time_limit_s": context.time_limit_s}
    if spec.device.startswith("cuda") and not torch.cuda.is_available():
        return {**row, "status": "skipped", "error": "no CUDA device on this machine", "cell_s": 0.0}
    started, other_load = time.perf_counter(), OtherLoad()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(context.threads)
    try:
        with time_limit(context.time_limit_s):
            for plugin in context.plugins:
                load_plugin(plugin)
            dtype = DTYPES[spec.dtype] if spec.dtype in DTYPES else None
            if dtype is None:
                raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {spec.dtype!r}")
            if spec.dtype in AUTOCAST and spec.field == "analytic":
                raise ValueError(f"dtype {spec.dtype!r} (mixed precision) applies to learned fields only")
            target = get_target(spec.target, **spec.target_params)
            schedule = get_schedule(spec.schedule, **spec.schedule_params)
            field, network = _build_field(spec, target, schedule, dtype, context)
            if network is not None:
                row.update(_network_floor(spec, network, field, target, schedule))
            noise = _noise(spec.seed, spec.n, target.dim, schedule.prior_std)
            options = _sampler_options(spec, schedule)
            with torch.no_grad():
                prepared = prepare(spec.execution, field, noise.to(dtype=dtype, device=spec.device), spec.method, options)
            result, timing, peak_memory = _run_sampler(spec, prepared)
            x = result.x.detach().to(dtype=torch.float64, device="cpu")
            calibration = calibration_seconds(context.threads)
            wall_s = timing["wall_s"]
            row.update(status="ok", error=None, nfe=result.nfe, t0=result.t0, t1=result.t1, **timing,
                       samples_per_s=spec.n / wall_s, nfe_per_s=result.nfe / wall_s,
                       calibration_s=calibration, wall_s_normalised=wall_s / calibration,
                       execution_used=prepared.used, execution_fallback=prepared.fallback, setup_s=prepared.setup_s,
                       peak_memory_bytes=peak_memory)
            if spec.field == "analytic":  # the velocity's cost model × NFE: the report places it on the roofline
                row["field_gflop"] = velocity_cost(target, spec.n, torch.finfo(dtype).bits // 8).flops * result.nfe / 1e9
            row.update(_score(spec, target, schedule, noise, x, options, result.t1))
    except PeerUnavailable as error:  # a peer library that is not installed here: like a CUDA cell without CUDA
        row.update(status="skipped", error=str(error))
    except Exception as error:  # noqa: BLE001 — a failing cell is recorded, never raised
        fault = fault_of(error)
        prefix = "out of memory: " if fault == "memory" else ""
        row.update(status="failed", error=f"{prefix}{type(error).__name__}: {error}", fault=fault,
                   traceback=traceback.format_exc(limit=3))
    finally:
        torch.set_num_threads(previous_threads)
        release_freed_memory()  # heap reuse (fmbench.allocator) within the cell, not into the next one
    row["cell_s"] = time.perf_counter() - started
    row["other_cpu_load"] = other_load.stop()  # CPUs other processes kept busy meanwhile (fmbench.timing.OtherLoad)
    return row


def _score(spec: CellSpec, target, schedule, noise: torch.Tensor, x: torch.Tensor, options: dict, t1: float) -> dict:
    """Every metric of the output ``x`` of a sampler that stopped at ``t1`` (1, or earlier: an early stop)."""
    name, fit = _fit_metric(target)
    scores = {name: fit(x, target)}
    # Deterministic methods: against the exact map of the same noise from t = 0. A start at a clipped t0 > 0 (karras
    # and logsnr grids, edm_heun on paths with α_0 = 0) is charged for that choice: its error is included.
    method = get_method(spec.method)
    if not method.diffusion and not method.draws_noise(spec.method_params):
        if target.num_components == 1:
            reference = target.flow_map(noise, schedule)
        else:
            reference = _reference_solution(
                spec.target, json.dumps(spec.target_params, sort_keys=True), spec.schedule,
                json.dumps(spec.schedule_params, sort_keys=True), spec.seed, spec.n, spec.device,
            )
        scores["strong_error"] = strong_error(x, reference)
        scores["strong_error_se"] = strong_error_standard_error(x, reference)  # over the cell's n noises
        if target.num_components == 1 and t1 < 1:  # an early stop: also against the path at t1
            scores["strong_error_marginal"] = strong_error(x, target.flow_map(noise, schedule, t1=t1))
    if target.num_components > 1:
        reference_sample = target.sample(spec.n, generator=torch.Generator().manual_seed(10_000 + spec.seed))
        scores["w2_sliced"] = w2_sliced(x, reference_sample, SLICED_PROJECTIONS, generator=spec.seed)
        scores["mode_tv"] = mode_tv(x, target)
    scores.update(_floors(spec.target, json.dumps(spec.target_params, sort_keys=True), spec.n))
    scores.update(_exact_scores(spec, target, schedule, options))
    return scores


def _exact_scores(spec: CellSpec, target, schedule, options: dict) -> dict:
    """The exact-law figures of a linear sampler on a Gaussian target (none for mixtures or learned fields), from
    the same sampler options (steps or grid, diffusion, the method's own options) the cell ran with."""
    if target.num_components != 1 or spec.field != "analytic" or not has_exact_law(spec.method):
        return {}
    law_options = {key: value for key, value in options.items() if key not in ("generator", "rtol", "atol")}
    law = exact_output_law(target, schedule, spec.method, **law_options)
    scores = {"w2_exact_law": law.w2_to_target()}
    ode = not bool((law.noise_variance > 0).any())
    if ode:
        scores["strong_error_exact"] = law.strong_error(0.0)
    if law.t1 < 1:  # an early stop, scored against the data above (charged for stopping) and against the path at t1
        scores["w2_exact_law_marginal"] = law.w2_to_marginal()
        if ode:
            scores["strong_error_exact_marginal"] = law.strong_error(0.0, law.t1)
    if law.t0 > 0:
        scores["clip_w2_exact_law"] = law.clip_law_w2()
        if ode:
            scores["clip_strong_error"] = law.clip_strong_error()
            scores["discretisation_strong_error"] = law.strong_error(law.t0)
    return scores
