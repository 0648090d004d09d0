"""Performance tracking: the unchecked fast path, executions (eager / CUDA graph / compile) with their fallbacks,
the roofline cost model, mixed precision, peaks in the environment record, and the gpu preset."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest
import torch
from fmbench.analysis import execution_speedups, roofline_fractions
from fmbench.cells import CellSpec, run_cell
from fmbench.execution import inductor_cache_per_cpu_capability, prepare
from fmbench.roofline import measure_peaks, velocity_cost
from fmbench.store import load_rows
from fmbench.sweep import device_peaks, run_sweep
from fmbench.sweepfile import SweepError, check_cells, expand, load_sweep
from torch.utils.flop_counter import FlopCounterMode

from fmcore import AnalyticField, get_schedule, get_target
from fmcore.grids import get_grid
from fmcore.models import LearnedField, SinusoidalMLP
from fmcore.solvers import TABLEAUS, ButcherTableau
from fmcore.solvers.runge_kutta import integrate_explicit_rk, integrate_explicit_rk_unchecked

from .helpers import cuda_or_skip

TARGETS = [("seed000", {}), ("gaussian", {"d": 4, "condition_number": 10}), ("gmm", {"K": 4, "d": 3})]
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("name", "params"), TARGETS)
@pytest.mark.parametrize("schedule_name", ["cond_ot", "cosine", "vp"])
def test_unchecked_velocity_is_the_checked_one(name, params, schedule_name):
    target, schedule = get_target(name, **params), get_schedule(schedule_name)
    field = AnalyticField(target, schedule)
    x = torch.randn(300, target.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    target.cpu_chunk_elements = 64  # several chunks, as on a large batch
    for t in (0.0, 0.3, 0.999):
        fast = field.velocity_unchecked(torch.tensor(t, dtype=torch.float64), x)
        assert torch.allclose(fast, field(t, x), rtol=0, atol=1e-13)


@pytest.mark.parametrize("objective", ["cfm", "dsm", "x1"])
def test_learned_unchecked_velocity_is_the_checked_one(objective):
    torch.manual_seed(0)
    field = LearnedField(SinusoidalMLP(2, width=16, depth=2), get_schedule("cond_ot"), objective)
    x = torch.randn(50, 2)
    for t in (0.0, 0.5, 1.0):  # the ends exercise the clip
        assert torch.allclose(field.velocity_unchecked(torch.tensor(t), x), field(t, x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun", "rk4", "rk38"])
@pytest.mark.parametrize("grid_name", ["uniform", "cosine"])
def test_unchecked_loop_takes_the_checked_loops_steps(method, grid_name):
    target, schedule = get_target("gmm", K=3, d=2), get_schedule("cosine")
    field = AnalyticField(target, schedule)
    x0 = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    grid = get_grid(grid_name, 12, schedule)
    checked, _, _ = integrate_explicit_rk(field, x0, grid, TABLEAUS[method])
    fast = integrate_explicit_rk_unchecked(field.velocity_unchecked, x0, grid, TABLEAUS[method])
    assert torch.allclose(fast, checked, rtol=0, atol=1e-12)


def test_a_tableau_whose_nodes_are_not_its_row_sums_is_refused():
    # torchdyn's "rk4" evaluates k2 at t (c = 0) on a state advanced by h/2: c ≠ row sum
    with pytest.raises(ValueError, match=r"node c\[1\] = 0.0 must equal the sum of row 1"):
        ButcherTableau("shifted", 4, c=(0.0, 0.0, 0.5, 0.5), a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
                       b=(1 / 6, 1 / 3, 1 / 3, 1 / 6))


@pytest.mark.parametrize(("name", "params"), [*TARGETS, ("gmm", {"K": 16, "d": 16})])
def test_cost_model_counts_the_gemm_flops_torch_counts(name, params):
    target = get_target(name, **params)
    field = AnalyticField(target, get_schedule("cond_ot"))
    x = torch.randn(1000, target.dim)
    field(0.5, x)  # builds the cached per-dtype parameters (a one-off matmul) before counting
    with FlopCounterMode(display=False) as counter:
        field(0.5, x)
    assert counter.get_total_flops() == velocity_cost(target, 1000, 4).gemm_flops


def test_cost_model_scales_with_n_and_element_size():
    target = get_target("gmm", K=8, d=4)
    small, large, double = velocity_cost(target, 100, 4), velocity_cost(target, 1000, 4), velocity_cost(target, 1000, 8)
    assert large.flops == 10 * small.flops and double.bytes_implemented == 2 * large.bytes_implemented
    assert large.bytes_compulsory == 2 * 1000 * 4 * 4  # x in, u out
    assert large.bytes_implemented > 7 * 1000 * 8 * 4 * 4  # the (n, K, d) intermediate passes


def _options(method: str) -> dict:
    if method == "dopri5":
        return {"rtol": 1e-5, "atol": 1e-7}
    return {"steps": 4}


@pytest.mark.parametrize(("execution", "method", "reason"), [
    ("cuda_graph", "rk4", "CUDA graphs need a CUDA device"),
    ("compile", "dopri5", "step-size control decides on the host"),
    ("cuda_graph", "tdq_rk4", "not one of our Butcher-tableau methods"),
])
def test_an_execution_that_cannot_run_falls_back_to_eager_with_its_reason(execution, method, reason):
    if execution == "cuda_graph" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the graph would be captured")
    field = AnalyticField(get_target("seed000"), get_schedule("cond_ot"))
    x0 = torch.randn(32, 3, dtype=torch.float64)
    prepared = prepare(execution, field, x0, method, _options(method))
    assert prepared.used == "eager" and reason in prepared.fallback
    eager = prepare("eager", field, x0, method, _options(method))
    assert torch.equal(prepared.run().x, eager.run().x)


def test_a_field_without_an_unchecked_velocity_falls_back():
    analytic = AnalyticField(get_target("seed000"), get_schedule("cond_ot"))

    class Plain:  # the field interface without velocity_unchecked
        dim, schedule = 3, analytic.schedule

        def __call__(self, t, x):
            return analytic(t, x)

    prepared = prepare("compile", Plain(), torch.randn(8, 3, dtype=torch.float64), "euler", {"steps": 2})
    assert prepared.used == "eager" and "has no velocity_unchecked" in prepared.fallback


def test_unknown_execution_is_refused_by_the_sweep_check():
    with pytest.raises(SweepError, match="unknown execution 'graphs'"):
        check_cells([CellSpec("seed000", "cond_ot", "euler", steps=2, execution="graphs")])
    with pytest.raises(ValueError, match="execution must be one of"):
        prepare("graphs", None, torch.zeros(1, 1), "euler", {"steps": 1})


def test_compiled_cell_matches_the_eager_cell():
    """torch.compile on the CPU (inductor, C++): the same output to float32 round-off, NFE = stages × steps."""
    spec = CellSpec("gaussian", "cond_ot", "heun", target_params={"d": 3, "condition_number": 4}, steps=4, n=64,
                    dtype="float32", execution="compile")
    compiled = run_cell(spec)
    eager = run_cell(CellSpec(**{**asdict(spec), "execution": "eager"}))
    assert compiled["status"] == "ok", compiled.get("error")
    assert compiled["execution_used"] == "compile" and compiled["execution_fallback"] is None, compiled["execution_fallback"]
    assert compiled["setup_s"] > 0 and compiled["nfe"] == eager["nfe"] == 8
    assert abs(compiled["strong_error"] - eager["strong_error"]) < 1e-5
    assert compiled["w2_exact_law"] == eager["w2_exact_law"]  # the exact law is the method's, not the run's


COMPILED_CELL = """
import json, sys
from dataclasses import asdict
from fmbench.cells import CellSpec, run_cell
spec = CellSpec("gaussian", "cond_ot", "heun", target_params={"d": 3, "condition_number": 4}, steps=4, n=64,
                dtype="float32", execution="compile")
rows = [run_cell(spec), run_cell(CellSpec(**{**asdict(spec), "execution": "eager"}))]
print(json.dumps([{key: row.get(key) for key in ("execution_used", "strong_error")} for row in rows]))
"""


def test_compile_keeps_a_kernel_cache_per_cpu_capability(monkeypatch):
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    for unchosen in (None, default_cache_dir()):  # unset, or set to its default by an earlier compile in the process
        if unchosen is None:
            monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
        else:
            monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", unchosen)
        folder = inductor_cache_per_cpu_capability()
        assert folder == os.path.join(default_cache_dir(), f"fmbench-{torch.backends.cpu.get_cpu_capability().lower()}")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere/of/the/users")
    assert inductor_cache_per_cpu_capability() == "/somewhere/of/the/users"  # the user's choice is kept


@pytest.mark.slow
def test_a_kernel_compiled_under_one_cpu_capability_is_not_reused_under_another(tmp_path):
    """The reproduction: compile under this machine's kernels, then in a process with ATEN_CPU_CAPABILITY=avx2 (a
    shared inductor cache made that one return 0.383 instead of 0.0111); both must equal eager to float32 round-off."""
    environment = {key: value for key, value in os.environ.items() if key != "TORCHINDUCTOR_CACHE_DIR"}
    environment["TMPDIR"] = str(tmp_path)  # inductor's default cache lives in the temporary folder
    for capability in (None, "avx2"):
        run_environment = {**environment, **({"ATEN_CPU_CAPABILITY": capability} if capability else {})}
        result = subprocess.run([sys.executable, "-c", COMPILED_CELL], env=run_environment, capture_output=True, text=True)
        compiled, eager = json.loads(result.stdout.strip().splitlines()[-1])
        assert compiled["execution_used"] == "compile", result.stderr[-2000:]
        assert abs(compiled["strong_error"] - eager["strong_error"]) < 1e-5, (capability, compiled, eager)


def test_cuda_graph_cell_matches_the_eager_cell():
    cuda_or_skip()
    spec = CellSpec("gmm", "cond_ot", "rk4", target_params={"K": 4, "d": 3}, steps=8, n=4096, device="cuda",
                    dtype="float64", execution="cuda_graph")
    graph = run_cell(spec)
    eager = run_cell(CellSpec(**{**asdict(spec), "execution": "eager"}))
    assert graph["status"] == "ok" and graph["execution_used"] == "cuda_graph", graph.get("execution_fallback")
    assert abs(graph["strong_error"] - eager["strong_error"]) < 1e-12
    assert graph["peak_memory_bytes"] > 0 and eager["peak_memory_bytes"] > 0


def test_eager_cells_keep_the_identity_of_the_committed_baseline():
    """The first baselines' cells were hashed before ``execution``, ``method_params`` and ``grid_params`` existed: a
    cell at their defaults hashes its spec without them."""
    spec = CellSpec("seed000", "cond_ot", "rk4", steps=4)
    fields = asdict(spec)
    del fields["execution"], fields["method_params"], fields["grid_params"]
    assert spec.key() == hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    assert CellSpec("seed000", "cond_ot", "rk4", steps=4, execution="compile").key() != spec.key()
    assert CellSpec("seed000", "cond_ot", "ddim", steps=4, method_params={"eta": 1.0}).key() != \
        CellSpec("seed000", "cond_ot", "ddim", steps=4).key()
    assert CellSpec("seed000", "cond_ot", "rk4", steps=4, grid_params={"t1": 0.9}).key() != spec.key()
    baseline = load_rows(REPO / "results" / "baselines" / "ci")
    assert set(baseline["cell"]) == {cell.key() for cell in expand(load_sweep("ci"))}


def test_bfloat16_runs_the_network_in_autocast_with_a_float32_state():
    torch.manual_seed(0)
    field = LearnedField(SinusoidalMLP(2, width=32, depth=2), get_schedule("cond_ot"), "cfm")
    mixed = field.in_precision(torch.bfloat16)
    x = torch.randn(200, 2)
    with torch.no_grad():
        full, low = field(0.5, x), mixed(0.5, x)
    assert low.dtype == torch.float32 and mixed.model is field.model
    difference = float((full - low).abs().max() / full.abs().max())
    assert 1e-6 < difference < 5e-2  # bfloat16's resolution (2^-8) shows, and nothing worse
    with pytest.raises(ValueError, match="compute_dtype"):
        field.in_precision(torch.float64)


def test_bfloat16_applies_to_learned_fields_only():
    with pytest.raises(SweepError, match="applies to learned fields only"):
        check_cells([CellSpec("seed000", "cond_ot", "euler", steps=2, dtype="bfloat16")])
    check_cells([CellSpec("seed000", "cond_ot", "euler", steps=2, dtype="bfloat16", field="learned:cfm")])


def test_peaks_are_measured_for_each_device_and_dtype_that_exists():
    peaks = measure_peaks("cpu", torch.float32, repeats=1)
    assert peaks.gemm_flops_per_s > 1e8 and peaks.copy_bytes_per_s > 1e8 and peaks.dtype == "float32"
    cells = [CellSpec("seed000", "cond_ot", "euler", steps=2, dtype=d, device=v, timing_repeats=1)
             for d in ("float32", "float64") for v in ("cpu", "cuda")]
    assert device_peaks([CellSpec("seed000", "cond_ot", "euler", steps=2)]) == []  # untimed sweeps measure none
    measured = {(p["device"], p["dtype"]) for p in device_peaks(cells)}
    expected = {("cpu", "float32"), ("cpu", "float64")}
    if torch.cuda.is_available():
        expected |= {("cuda", "float32"), ("cuda", "float64")}
    assert measured == expected


def test_roofline_fraction_is_the_field_flop_rate_over_the_peak():
    rows = pd.DataFrame({"status": ["ok", "ok"], "wall_s": [2.0, 1.0], "nfe": [4, 4], "n": [10, 100],
                         "field_gflop": [8.0, 40.0], "device": "cpu", "dtype": "float32", "target": "gmm",
                         "method": "euler", "field": "analytic", "grid": "uniform", "cell": ["a", "b"]})
    table = roofline_fractions(rows, [{"device": "cpu", "dtype": "float32", "gemm_flops_per_s": 80e9}])
    assert list(table["n"]) == [100]  # the largest batch size of the line
    assert table["fraction of GEMM peak"].iloc[0] == pytest.approx(40.0 / 1.0 / 80.0)


def test_execution_speedup_joins_the_eager_cell_of_the_same_spec():
    base = {"status": "ok", "target": "gmm", "schedule": "cond_ot", "method": "rk4", "field": "analytic", "steps": 8,
            "device": "cpu", "dtype": "float32", "n": 64, "nfe": 32, "strong_error": 1e-3}
    rows = pd.DataFrame([{**base, "execution": "eager", "execution_used": "eager", "wall_s": 3.0, "cell": "a"},
                         {**base, "execution": "compile", "execution_used": "compile", "wall_s": 1.0, "setup_s": 9.0,
                          "cell": "b", "strong_error": 1.5e-3}])
    table = execution_speedups(rows)
    assert len(table) == 1 and table["speed-up"].iloc[0] == pytest.approx(3.0)
    assert table["error change"].iloc[0] == pytest.approx(0.5e-3)


def test_gpu_preset_is_valid_and_its_cuda_cells_are_skipped_rows(tmp_path):
    cells = expand(load_sweep("gpu"))
    check_cells(cells)
    cuda = [c for c in cells if c.device == "cuda"]
    assert {c.n for c in cuda} == {2**k for k in range(8, 21, 2)}
    assert {c.execution for c in cuda} == {"eager", "cuda_graph", "compile"}
    assert {c.dtype for c in cuda} == {"float32", "float64", "bfloat16"}
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: its cells would run (fmbench run gpu)")
    # A slice of the preset: some CUDA cells and two cheap CPU cells at two batch sizes.
    chosen = cuda[:6] + [CellSpec("gmm", "cond_ot", "rk4", target_params={"K": 16, "d": 16}, steps=4, n=n, dtype="float32",
                                  timing_repeats=1) for n in (256, 1024)]
    outcome = run_sweep(chosen, tmp_path / "run", progress=False)
    rows = outcome.rows.set_index("cell")
    for cell in cuda[:6]:
        assert rows.loc[cell.key(), "status"] == "skipped" and "no CUDA device" in rows.loc[cell.key(), "error"]
    environment = json.loads((tmp_path / "run" / "environment.json").read_text())
    assert [(p["device"], p["dtype"]) for p in environment["peaks"]] == [("cpu", "float32")]
    assert "cuda_driver" in environment
    from fmbench.reporting import write_report

    report = write_report(tmp_path / "run", histograms=False).read_text()
    assert "## Performance" in report and "Roofline" in report
    assert (tmp_path / "run" / "throughput_vs_batch_size.png").exists()
