"""Regression checks: ``fmbench compare`` passes on unchanged code, and fails — naming the cells and metrics — when
a tableau coefficient or a schedule derivative is perturbed; a user's plugin method runs in a sweep and is compared."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from fmbench.cli import main
from fmbench.compare import compare_runs, format_comparison
from fmbench.sweep import run_sweep
from fmbench.sweepfile import check_cells, expand, load_sweep

from fmcore.schedules import CondOT, ScheduleValues
from fmcore.solvers import METHODS, TABLEAUS
from fmcore.solvers.runge_kutta import integrate_explicit_rk

SWEEP = {
    "sweep": {"target": ["gaussian", "seed000"], "schedule": ["cond_ot", "cosine"], "n": 128,
              "target_params": {"gaussian": {"d": 3}}, "dtype": ["float64", "float32"]},
    "solver": [{"method": ["euler", "rk4"], "steps": [8]},
               {"method": ["euler_maruyama"], "steps": [8], "diffusion": ["constant"]}],
}


def _run(out: Path):
    cells = expand(SWEEP)
    check_cells(cells)
    return run_sweep(cells, out, progress=False, cache_dir=out.parent / "cache")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("baseline") / "run"
    _run(out)
    return out


def test_an_unchanged_run_passes(baseline, tmp_path):
    _run(tmp_path / "run")
    comparison = compare_runs(baseline, tmp_path / "run")
    assert not comparison.failed and comparison.checked_cells == 24
    assert "24 cells compared: 0 regression(s)" in format_comparison(comparison)


def test_a_perturbed_tableau_coefficient_is_caught(baseline, tmp_path, monkeypatch):
    rk4 = TABLEAUS["rk4"]
    b = list(rk4.b)
    b[0] += 1e-3
    b[3] -= 1e-3  # keeps Σb = 1 (consistency), breaks the order conditions
    perturbed = dataclasses.replace(rk4, b=tuple(b))

    def integrate(request):
        return integrate_explicit_rk(request.field, request.x0, request.grid, perturbed, request.return_trajectory)

    monkeypatch.setitem(METHODS, "rk4", dataclasses.replace(METHODS["rk4"], integrate=integrate))
    monkeypatch.setitem(TABLEAUS, "rk4", perturbed)  # the exact law reads the method's tableau too
    _run(tmp_path / "run")
    comparison = compare_runs(baseline, tmp_path / "run")
    regressions = comparison.regressions
    assert comparison.failed
    assert set(regressions["where"].str.split().str[2]) == {"rk4"}  # the rk4 cells and only they
    assert {"strong_error", "w2_exact_law"} & set(regressions["metric"])


def test_a_perturbed_schedule_derivative_is_caught(baseline, tmp_path, monkeypatch):
    original = CondOT.values

    def perturbed(self, t):
        values = original(self, t)
        return ScheduleValues(values.alpha, values.sigma, values.d_alpha * (1 + 1e-3), values.d_sigma, values.sigma_d_sigma)

    monkeypatch.setattr(CondOT, "values", perturbed)
    _run(tmp_path / "run")
    comparison = compare_runs(baseline, tmp_path / "run")
    regressions = comparison.regressions
    assert comparison.failed
    assert set(regressions["where"].str.split().str[1]) == {"cond_ot"}  # cosine cells untouched
    text = format_comparison(comparison)
    assert "REGRESSION" in text and "cond_ot" in text


def test_compare_reports_added_and_missing_cells_and_a_failing_cell(baseline, tmp_path):
    rows = pd.read_parquet(baseline / "rows.parquet")
    run = tmp_path / "run"
    run.mkdir()
    changed = rows.iloc[1:].copy()  # one cell missing
    changed.loc[changed.index[0], "status"] = "failed"
    changed.to_parquet(run / "rows.parquet")
    comparison = compare_runs(baseline, run)
    assert comparison.missing == [rows["cell"].iloc[0]] and comparison.failed
    assert (comparison.regressions["metric"] == "status").sum() == 1


PLUGIN = '''
"""A user's own sampler: Kutta's third-order method, registered as a tableau from outside fmcore."""
from fmcore.solvers import ButcherTableau, register_tableau

register_tableau(ButcherTableau("kutta3", 3, c=(0.0, 0.5, 1.0), a=((), (0.5,), (-1.0, 2.0)), b=(1 / 6, 2 / 3, 1 / 6)))
'''

PLUGIN_SWEEP = '''
plugins = ["my_samplers"]

[sweep]
target = ["gaussian"]
target_params = { gaussian = { d = 3 } }
schedule = ["cosine"]
n = 128

[[solver]]
method = ["kutta3", "heun"]
steps = [32, 64]
'''


def test_a_plugin_method_runs_in_a_sweep_and_is_compared(tmp_path):
    (tmp_path / "my_samplers.py").write_text(textwrap.dedent(PLUGIN))
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(PLUGIN_SWEEP)
    # In a fresh process (the plugin registers a name, so it must not leak into this one), with a process pool.
    command = [sys.executable, "-m", "fmbench", "run", str(sweep), "--quiet", "--workers", "2"]
    baseline = subprocess.run([*command, "--out", str(tmp_path / "baseline")], capture_output=True, text=True)
    assert baseline.returncode == 0, baseline.stderr
    rows = pd.read_parquet(tmp_path / "baseline" / "rows.parquet")
    kutta = rows[rows["method"] == "kutta3"].sort_values("steps")
    assert (kutta["status"] == "ok").all() and list(kutta["nfe"]) == [96, 192]
    ratio = kutta["w2_exact_law"].iloc[0] / kutta["w2_exact_law"].iloc[1]  # third order: ≈ 2³ per doubling
    assert 7 < ratio < 10  # local order 3.08 here (2.83 from 16 to 32: pre-asymptotic below)
    again = subprocess.run([*command, "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert main(["compare", str(tmp_path / "baseline"), str(tmp_path / "run"), "--markdown", str(tmp_path / "c.md")]) == 0
    assert "0 regression(s)" in (tmp_path / "c.md").read_text()


def test_a_plugin_that_cannot_be_imported_is_a_clear_error(tmp_path, capsys):
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('plugins = ["no_such_module_xyz"]\n[sweep]\ntarget = "seed000"\nschedule = "cond_ot"\n')
    assert main(["run", str(sweep), "--out", str(tmp_path / "run")]) == 2
    assert "plugin 'no_such_module_xyz' could not be imported" in capsys.readouterr().err


def test_the_ci_preset_is_valid_and_covers_every_family():
    cells = expand(load_sweep("ci"))
    check_cells(cells)
    families = {METHODS[cell.method].family for cell in cells}
    assert families >= {"explicit Runge–Kutta", "torchdiffeq adaptive", "SciPy reference", "reverse SDE",
                        "reproduction (seed 000)", "diffusion"}
    assert {cell.schedule for cell in cells} == {"cond_ot", "cosine", "linear_vp", "vp", "ve", "poly"}
    assert {cell.dtype for cell in cells} == {"float32", "float64"}
    assert any(cell.field.startswith("learned") for cell in cells)


def _with_times(baseline: Path, directory: Path, factor: float, slow_cells: int = 0) -> Path:
    rows = pd.read_parquet(baseline / "rows.parquet")
    rows["wall_s_normalised"] = rows["wall_s_normalised"] * factor
    rows.loc[rows.index[:slow_cells], "wall_s_normalised"] *= 3.0
    directory.mkdir()
    rows.to_parquet(directory / "rows.parquet")
    return directory


def test_timings_are_compared_only_when_asked_and_against_the_thresholds(baseline, tmp_path):
    steady = _with_times(baseline, tmp_path / "steady", 1.04, slow_cells=0)
    assert not compare_runs(baseline, steady, timing=True).failed
    one_slow_cell = _with_times(baseline, tmp_path / "one", 1.0, slow_cells=1)
    comparison = compare_runs(baseline, one_slow_cell, timing=True)
    assert comparison.failed and list(comparison.regressions["metric"]) == ["wall_s_normalised"]
    assert not compare_runs(baseline, one_slow_cell).failed  # timings are not checked unless asked
    everything_slower = _with_times(baseline, tmp_path / "all", 1.2)
    regressions = compare_runs(baseline, everything_slower, timing=True).regressions
    assert list(regressions["cell"]) == ["(all cells)"]
