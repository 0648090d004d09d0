"""Regression checks: ``fmbench compare`` passes on unchanged code, and fails — naming the cells and metrics — when
a tableau coefficient or a schedule derivative is perturbed; a user's plugin method runs in a sweep and is compared."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from fmbench.cli import main
from fmbench.compare import Tolerance, compare_runs, format_comparison
from fmbench.store import BASELINE_FILES, load_rows
from fmbench.sweep import run_sweep
from fmbench.sweepfile import SweepError, check_cells, expand, load_sweep

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
    text = format_comparison(comparison)
    assert "24 cells compared: 0 worse, 0 better, 0 missing, 0 added" in text and text.rstrip().endswith("PASS")


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
    assert {cell.where.split()[2] for cell in comparison.cells} == {"rk4"}  # the rk4 cells and only they, ...
    assert {cell.where.split()[-1] for cell in comparison.worse} == {"float64", "float32"}  # ... in both dtypes
    assert {"strong_error", "w2_exact_law"} & set(regressions["metric"])
    assert len(comparison.cells) == len({cell.cell for cell in comparison.cells})  # one line per cell


def test_a_perturbed_schedule_derivative_is_caught(baseline, tmp_path, monkeypatch):
    original = CondOT.values

    def perturbed(self, t):
        values = original(self, t)
        return ScheduleValues(values.alpha, values.sigma, values.d_alpha * (1 + 1e-3), values.d_sigma, values.sigma_d_sigma)

    monkeypatch.setattr(CondOT, "values", perturbed)
    _run(tmp_path / "run")
    comparison = compare_runs(baseline, tmp_path / "run")
    assert comparison.failed
    assert {cell.where.split()[1] for cell in comparison.cells} == {"cond_ot"}  # cosine cells untouched
    assert {cell.where.split()[-1] for cell in comparison.worse} == {"float64", "float32"}
    text = format_comparison(comparison)
    assert "FAIL:" in text and "worse" in text and "cond_ot" in text


def test_compare_reports_added_and_missing_cells_and_a_failing_cell(baseline, tmp_path):
    rows = pd.read_parquet(baseline / "rows.parquet")
    run = tmp_path / "run"
    run.mkdir()
    changed = rows.iloc[1:].copy()  # one cell missing
    changed.loc[changed.index[0], "status"] = "failed"
    changed.to_parquet(run / "rows.parquet")
    comparison = compare_runs(baseline, run)
    assert comparison.missing == ["gaussian(d=3) cond_ot euler float64"] and comparison.failed
    assert (comparison.regressions["metric"] == "status").sum() == 1
    assert [cell.verdict for cell in comparison.cells] == ["worse"]


PLUGIN = '''
"""A user's own sampler: Kutta's third-order method, registered as a tableau from outside fmcore."""
from fmcore.solvers import ButcherTableau, register_tableau

register_tableau(ButcherTableau("kutta3", 3, c=(0.0, 0.5, 1.0), a=((), (0.5,), (-1.0, 2.0)), b=(1 / 6, 2 / 3, 1 / 6)))
'''

PLUGIN_SWEEP = '''
plugins = ["my_samplers.py"]

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
    assert "0 worse, 0 better" in (tmp_path / "c.md").read_text()


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
    comparison = compare_runs(baseline, everything_slower, timing=True)
    assert comparison.median_slower and comparison.regressions.empty and comparison.failed
    assert comparison.reasons == ["timing: 0 cell(s) slower, and the median"]


def _changed_run(baseline: Path, directory: Path, change) -> Path:
    """A copy of the baseline's rows, changed by ``change(rows)``, as a run directory of its own."""
    rows = pd.read_parquet(baseline / "rows.parquet")
    rows = change(rows)
    directory.mkdir()
    rows.to_parquet(directory / "rows.parquet")
    return directory


def test_compare_of_unrelated_runs_fails_the_gate(baseline, tmp_path, capsys):
    def other_cells(rows):
        rows["cell"] = rows["cell"].str[::-1]  # no cell in common: a wrong baseline, or renamed cells
        return rows

    run = _changed_run(baseline, tmp_path / "unrelated", other_cells)
    assert main(["compare", str(baseline), str(run)]) == 1
    out = capsys.readouterr().out
    assert "0 cells compared" in out and "FAIL: no cell was compared" in out
    assert "24 cell(s) missing from the run:" in out and "gaussian(d=3) cond_ot euler float64" in out  # named, not hashes


def test_missing_cells_fail_unless_allowed(baseline, tmp_path, capsys):
    run = _changed_run(baseline, tmp_path / "partial", lambda rows: rows.iloc[2:])
    assert main(["compare", str(baseline), str(run)]) == 1
    assert "2 baseline cell(s) not in the run (allow them with --allow-missing)" in capsys.readouterr().out
    assert main(["compare", str(baseline), str(run), "--allow-missing"]) == 0


def test_a_cell_now_skipped_counts_as_missing(baseline, tmp_path):
    def skip_first(rows):
        rows.loc[rows.index[0], ["status", "error"]] = ["skipped", "no CUDA device"]
        return rows

    comparison = compare_runs(baseline, _changed_run(baseline, tmp_path / "skipped", skip_first))
    assert comparison.failed and comparison.not_compared == ["gaussian(d=3) cond_ot euler float64 (skipped now: no CUDA device)"]


def test_an_improvement_alone_passes_and_says_better(baseline, tmp_path, capsys):
    def better_rk4(rows):
        chosen = (rows["method"] == "rk4") & (rows["dtype"] == "float64") & (rows["target"] == "gaussian")
        rows.loc[chosen, "w2_exact_law"] *= 0.5
        return rows

    run = _changed_run(baseline, tmp_path / "better", better_rk4)
    assert main(["compare", str(baseline), str(run), "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "0 worse, 2 better" in out and out.rstrip().endswith("PASS")
    assert "better  gaussian(d=3) cond_ot rk4 float64  w2_exact_law" in out and "(-0.5)" in out
    record = json.loads((tmp_path / "c.json").read_text())
    assert record["passed"] and [cell["verdict"] for cell in record["better"]] == ["better", "better"]
    assert record["better"][0]["changes"][0]["relative"] == pytest.approx(-0.5)
    assert main(["compare", str(baseline), str(run), "--strict"]) == 1  # strict: any change fails


def test_changes_are_judged_by_their_class_tolerance_which_can_be_set(baseline, tmp_path, capsys):
    def nudge(rows):
        rows.loc[rows["dtype"] == "float32", "strong_error"] *= 1 + 3e-4  # beyond float32's 1e-4
        return rows

    run = _changed_run(baseline, tmp_path / "nudged", nudge)
    comparison = compare_runs(baseline, run)
    assert comparison.failed and {c.metric_class for cell in comparison.cells for c in cell.changes} == {"float32"}
    assert not compare_runs(baseline, run, tolerances={"float32": Tolerance(1e-3, 1e-6)}).failed
    assert main(["compare", str(baseline), str(run), "--tolerance", "float32=1e-3"]) == 0
    capsys.readouterr()
    assert main(["compare", str(baseline), str(run), "--tolerance", "floaty=1"]) == 2
    assert "--tolerance takes CLASS=RELATIVE[,ABSOLUTE] with CLASS one of nfe, adaptive_nfe" in capsys.readouterr().err
    assert main(["compare", str(baseline), str(run), "--tolerance", "float32=-1"]) == 2


def test_rows_list_in_the_sweeps_order_not_as_text(tmp_path):
    """steps = 5 before steps = 10, as in the sweep (as text, "steps=10" sorted first)."""
    sweep = {"sweep": {"target": "gaussian", "target_params": {"gaussian": {"d": 2}}, "schedule": "cosine", "n": 64},
             "solver": [{"method": ["euler"], "steps": [5, 10]}]}
    cells = expand(sweep)
    check_cells(cells)
    run_sweep(cells, tmp_path / "base", progress=False)
    rows = pd.read_parquet(tmp_path / "base" / "rows.parquet")
    rows["w2_exact_law"] *= 2
    (tmp_path / "run").mkdir()
    rows.to_parquet(tmp_path / "run" / "rows.parquet")
    text = format_comparison(compare_runs(tmp_path / "base", tmp_path / "run"))
    lines = [line for line in text.splitlines() if line.startswith("worse")]
    assert [line.split()[4] for line in lines] == ["steps=5", "steps=10"]
    assert "w2_exact_law" in lines[0] and "(+1)" in lines[0]


def test_timing_verdicts_only_warn_when_load_executor_or_threads_differ(baseline, tmp_path):
    slow = _with_times(baseline, tmp_path / "slow", 1.0, slow_cells=1)
    environment = json.loads((baseline / "environment.json").read_text())
    (slow / "environment.json").write_text(json.dumps({**environment, "executor": "process pool of 2",
                                                       "load_average_end": [3.0, 2.0, 1.0]}))
    comparison = compare_runs(baseline, slow, timing=True)
    assert len(comparison.slower) == 1 and not comparison.failed and not comparison.timing_comparable
    assert any("executor differs" in warning and "warnings only" in warning for warning in comparison.warnings)
    assert any("load average differs" in warning for warning in comparison.warnings)


def test_a_baseline_is_text_files_that_compare_reads(baseline, tmp_path, capsys):
    assert main(["baseline", str(baseline), str(tmp_path / "committed")]) == 0
    assert "commit these files" in capsys.readouterr().out
    written = sorted(path.name for path in (tmp_path / "committed").iterdir())
    assert written == sorted(BASELINE_FILES)
    for path in (tmp_path / "committed").iterdir():
        path.read_text(encoding="utf-8")  # text, every one
    original = load_rows(baseline)
    committed = load_rows(tmp_path / "committed")[original.columns]
    def missing_as_none(frame):  # a missing value is None in one and NaN in the other: both are missing
        return frame.astype(object).where(frame.notna(), None)

    pd.testing.assert_frame_equal(missing_as_none(committed), missing_as_none(original), check_dtype=False)  # exactly
    assert main(["compare", str(tmp_path / "committed"), str(baseline)]) == 0


def test_the_committed_ci_baseline_is_text_only():
    directory = Path(__file__).parent.parent / "results" / "baselines" / "ci"
    assert sorted(path.name for path in directory.iterdir()) == sorted(BASELINE_FILES)
    assert len(load_rows(directory)) > 0


CHANGED_PLUGIN = PLUGIN.replace("b=(1 / 6, 2 / 3, 1 / 6)", "b=(1 / 6 + 1e-3, 2 / 3 - 1e-3, 1 / 6)")


def test_a_resume_with_changed_plugin_code_is_refused_naming_it(tmp_path):
    (tmp_path / "my_samplers.py").write_text(textwrap.dedent(PLUGIN))
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(PLUGIN_SWEEP)
    command = [sys.executable, "-m", "fmbench", "run", str(sweep), "--quiet", "--out", str(tmp_path / "run")]
    first = subprocess.run(command, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    before = pd.read_parquet(tmp_path / "run" / "rows.parquet")
    (tmp_path / "my_samplers.py").write_text(textwrap.dedent(CHANGED_PLUGIN))
    refused = subprocess.run(command, capture_output=True, text=True)
    assert refused.returncode == 2
    plugin = (tmp_path / "my_samplers.py").resolve()
    assert f"holds 4 row(s) computed by other code: plugin '{plugin}''s source changed" in refused.stderr
    assert "--force to start afresh" in refused.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "run" / "rows.parquet"), before)  # nothing touched
    forced = subprocess.run([*command, "--force"], capture_output=True, text=True)
    assert forced.returncode == 0, forced.stderr
    after = pd.read_parquet(tmp_path / "run" / "rows.parquet").set_index("cell")
    kutta = before.set_index("cell").index[before["method"] == "kutta3"]
    assert (after.loc[kutta, "w2_exact_law"] != before.set_index("cell").loc[kutta, "w2_exact_law"]).all()  # recomputed
    assert len(list(tmp_path.glob("run.old-*"))) == 1  # the old run kept aside
    assert subprocess.run(command, capture_output=True, text=True).returncode == 0  # same code again: resumes


def test_a_resume_with_changed_library_code_is_refused(tmp_path):
    cells = expand({"sweep": {"target": "gaussian", "target_params": {"gaussian": {"d": 2}}, "schedule": "cosine",
                              "n": 32}, "solver": [{"method": ["euler"], "steps": [4]}]})
    check_cells(cells)
    run_sweep(cells, tmp_path / "run", progress=False)
    environment = json.loads((tmp_path / "run" / "environment.json").read_text())
    environment["code"]["fmcore"] = "0" * 64  # as if fmcore's source had been different
    (tmp_path / "run" / "environment.json").write_text(json.dumps(environment))
    with sqlite3.connect(tmp_path / "run" / "rows.sqlite") as connection:
        connection.execute("UPDATE rows SET row = json_set(row, '$.code', 'other')")
    with pytest.raises(SweepError, match=r"holds 1 row\(s\) computed by other code: fmcore's source changed"):
        run_sweep(cells, tmp_path / "run", progress=False)
