"""The harness: grid expansion, a sweep that resumes and records failures, the report."""

import math
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from fmbench.analysis import asymptotic_orders, learned_crossover, pareto_front
from fmbench.cells import CellSpec, run_cell
from fmbench.reporting import write_report
from fmbench.store import load_rows
from fmbench.sweep import run_sweep
from fmbench.sweepfile import SweepError, expand, load_sweep

from fmcore import get_schedule, get_target


def test_expand_takes_the_product_per_solver_entry():
    config = {
        "sweep": {"target": ["seed000", "gaussian"], "schedule": "cond_ot", "n": 64,
                  "target_params": {"gaussian": {"d": 2}}},
        "solver": [{"method": ["euler", "rk4"], "steps": [2, 4]}, {"method": "dopri5", "rtol": [1e-3], "atol": 1e-6}],
    }
    cells = expand(config)
    assert len(cells) == 2 * (2 * 2 + 1)
    gaussian = [c for c in cells if c.target == "gaussian"]
    assert all(c.target_params == {"d": 2} for c in gaussian)
    assert all(c.target_params == {} for c in cells if c.target == "seed000")
    with pytest.raises(SweepError, match="unknown key"):
        expand({"sweep": {"target": "seed000", "solver_name": "x"}})


def test_presets_load_and_the_default_is_sized_for_minutes():
    assert len(expand(load_sweep("smoke"))) == 7
    default = expand(load_sweep("default"))
    assert 100 < len(default) < 400
    with pytest.raises(SweepError, match="unknown preset 'nonexistent'; presets"):
        load_sweep("nonexistent")


def test_cell_rows_score_against_the_truth():
    row = run_cell(CellSpec(target="gaussian", target_params={"d": 3}, schedule="cond_ot", method="rk4", steps=8, n=128))
    assert row["status"] == "ok" and row["nfe"] == 32
    assert 0 < row["strong_error"] < 1e-2 and row["gaussian_fit_w2"] >= 0 and row["wall_s"] > 0
    mixture = run_cell(CellSpec(target="seed000", schedule="cosine", method="heun", steps=8, n=128))
    assert mixture["strong_error"] > 0 and "w2_sliced_floor" in mixture and "mode_tv" in mixture


def test_failures_become_rows():
    bad_method = run_cell(CellSpec(target="seed000", schedule="cond_ot", method="rk5", steps=4, n=16))
    assert bad_method["status"] == "failed" and "rk5" in bad_method["error"]
    singular = run_cell(CellSpec(target="seed000", schedule="poly", schedule_params={"n": 0.5}, method="euler", steps=2))
    assert singular["status"] == "failed" and "velocity is infinite" in singular["error"]
    bad_dtype = run_cell(CellSpec(target="seed000", schedule="cond_ot", method="euler", steps=2, dtype="float16"))
    assert bad_dtype["status"] == "failed" and "dtype" in bad_dtype["error"]


def test_sweep_saves_resumes_and_reports(tmp_path):
    cells = expand(load_sweep("smoke"))
    cells.append(CellSpec(target="seed000", schedule="cond_ot", method="not_a_method", steps=2, n=16))
    first = run_sweep(cells[:3], tmp_path, progress=False, cache_dir=tmp_path / "cache")
    assert len(first.rows) == 3 and (tmp_path / "rows.parquet").exists() and (tmp_path / "environment.json").exists()
    second = run_sweep(cells, tmp_path, progress=False, cache_dir=tmp_path / "cache")  # resumes: only the new cells run
    assert len(second.rows) == len(cells) and second.ran == len(cells) - 3
    saved = pd.read_parquet(tmp_path / "rows.parquet")
    assert saved["cell"].tolist() == [cell.key() for cell in cells]  # in sweep order
    assert load_rows(tmp_path)["cell"].tolist() == saved["cell"].tolist()
    assert len(saved) == len(cells) and saved["cell"].is_unique
    assert (saved["status"] == "failed").sum() == 1
    report = write_report(tmp_path).read_text()
    assert "Convergence orders, fitted on the asymptotic range" in report and "Failed cells" in report
    assert "not_a_method" in report and (tmp_path / "cells.csv").exists() and (tmp_path / "exact_error_vs_nfe.png").exists()


def _rows(method: str, steps: list[int], errors: list[float], dtype: str = "float64", **extra) -> pd.DataFrame:
    return pd.DataFrame({"status": "ok", "target": "t", "schedule": "s", "dtype": dtype, "device": "cpu",
                         "field": "analytic", "grid": "uniform", "method": method, "steps": steps, "strong_error": errors,
                         "nfe": [s * {"euler": 1, "heun": 2, "rk4": 4}[method] for s in steps], **extra})


def test_orders_are_fitted_on_the_asymptotic_range_only():
    orders = asymptotic_orders(_rows("heun", [8, 16, 32], [1.0, 0.25, 0.0625]))
    assert orders["fitted order"].iloc[0] == pytest.approx(2.0) and orders["declared order"].iloc[0] == 2
    assert orders["flags"].iloc[0] == "-"
    # Pre-asymptotic at few steps, then settled at 4: the fit uses the settled local orders only.
    errors = [1.0, 0.6, 0.6 / 16, 0.6 / 256, 0.6 / 4096]
    row = asymptotic_orders(_rows("rk4", [2, 4, 8, 16, 32], errors)).iloc[0]
    assert row["fitted order"] == pytest.approx(4.0) and "pre-asymptotic at N ≤ 4" in row["flags"]
    # float32 round-off: errors below 100·eps are left out and flagged.
    row = asymptotic_orders(_rows("rk4", [4, 8, 16, 32], [1e-2, 6.25e-4, 3.9e-5, 2e-6], dtype="float32")).iloc[0]
    assert row["fitted order"] == pytest.approx(4.0, abs=0.01) and "round-off at N ≥ 32" in row["flags"]
    assert math.isnan(asymptotic_orders(_rows("euler", [4, 8, 16], [1.0, 0.9, 0.2])).iloc[0]["fitted order"])


def test_learned_crossover_and_pareto_front():
    rows = pd.concat([_rows("euler", [8, 16, 32], [0.1, 0.05, 0.025]), _rows("rk4", [2, 4, 8], [1e-2, 1e-3, 1e-4])])
    learned = _rows("rk4", [2, 4, 8], [2e-2, 5e-3, 5e-3]).assign(field="learned:cfm")
    crossover = learned_crossover(pd.concat([rows, learned])).iloc[0]
    assert crossover["model error floor"] == pytest.approx(5e-3) and crossover["model error dominates from NFE"] == 16
    frame = pd.DataFrame({"wall_s": [1.0, 2.0, 3.0, 4.0], "error": [0.5, 0.6, 0.1, math.nan]})
    assert list(pareto_front(frame, "error")["wall_s"]) == [1.0, 3.0]


def test_rows_of_every_status_share_column_types(tmp_path):
    """A failed row made outside run_cell (a dead worker, a failed training) stores its spec like run_cell does,
    so a run mixing them exports to Parquet (it raised ArrowTypeError on dict-valued parameter maps before)."""
    from fmbench.cells import failed_row
    from fmbench.store import RowStore, export_parquet

    ok = CellSpec(target="gaussian", target_params={"d": 3}, schedule="cond_ot", method="euler", steps=2, n=16)
    failed = CellSpec(target="gaussian", target_params={"d": 2}, schedule="cond_ot", method="euler", steps=2, n=16)
    with RowStore(tmp_path) as store:
        store.append(run_cell(ok), 0)
        store.append(failed_row(failed, "the worker running this cell failed: BrokenProcessPool"), 1)
    rows = pd.read_parquet(export_parquet(tmp_path))
    assert list(rows["target_params"]) == ['{"d": 3}', '{"d": 2}'] and list(rows["status"]) == ["ok", "failed"]


def test_an_early_stop_is_a_recorded_grid_parameter_scored_two_ways():
    """``grid_params = { uniform = { t1 = 0.9 } }`` stops the sampler at t = 0.9: the row records ``t1``, scores the
    output against the data (the default metrics, charged for the stop) and against the exact marginal at t1
    (``*_marginal``); the sampled strong error against the exact flow map to t1 agrees with the exact law's expected
    one within its Monte Carlo error (n = 4000 noises: relative standard error ≈ 1/√(2n) ≈ 1.1 %, allowed 5 %)."""
    config = {"sweep": {"target": "gaussian", "target_params": {"gaussian": {"d": 3}}, "schedule": "cosine", "n": 4000,
                        "grid_params": {"uniform": {"t1": 0.9}}},
              "solver": [{"method": "euler", "steps": 8}]}
    (cell,) = expand(config)
    assert cell.grid == "uniform" and cell.grid_params == {"t1": 0.9}
    plain = CellSpec(target="gaussian", target_params={"d": 3}, schedule="cosine", method="euler", steps=8, n=4000)
    assert cell.key() != plain.key()
    stopped, full = run_cell(cell), run_cell(plain)
    assert stopped["status"] == full["status"] == "ok"
    assert stopped["t1"] == 0.9 and full["t1"] == 1.0 and "w2_exact_law_marginal" not in full
    assert stopped["w2_exact_law_marginal"] < stopped["w2_exact_law"]  # eight Euler steps cost less than the stop
    assert stopped["strong_error_marginal"] == pytest.approx(stopped["strong_error_exact_marginal"], rel=0.05)
    assert stopped["strong_error"] == pytest.approx(stopped["strong_error_exact"], rel=0.05)


def test_an_optimal_grid_in_a_sweep_is_optimal_for_the_cells_own_method_target_and_options():
    """``grid = "optimal"`` in a sweep: the cell supplies its method, its method's options, its target and their
    parameters (``grid_arguments``), so its row's exact W2 is the optimiser's value for that cell, and another method
    or another η gets its own grid."""
    from fmbench.cells import grid_arguments

    from fmcore.optimal_grids import optimal_grid

    config = {"sweep": {"target": "gaussian", "target_params": {"gaussian": {"d": 3}}, "schedule": "cosine", "n": 64},
              "solver": [{"method": "dpmpp_2m", "steps": 4, "grid": "optimal"},
                         {"method": "ddim", "steps": 4, "grid": "optimal", "method_params": {"ddim": {"eta": 0.5}}}]}
    two_m, ddim = expand(config)
    assert grid_arguments(ddim) == {"method": "ddim", "method_params": {"eta": 0.5}, "target": "gaussian",
                                    "target_params": {"d": 3}, "diffusion": None, "diffusion_params": {}}
    target, schedule = get_target("gaussian", d=3), get_schedule("cosine")
    for cell, options in ((two_m, {}), (ddim, {"eta": 0.5})):
        row = run_cell(cell)
        assert row["status"] == "ok", row.get("error")
        best = optimal_grid(target, schedule, cell.method, 4, **options)
        assert row["w2_exact_law"] == pytest.approx(best.value, rel=1e-9)
    assert not torch.equal(optimal_grid(target, schedule, "dpmpp_2m", 4).grid,
                           optimal_grid(target, schedule, "ddim", 4, eta=0.5).grid)


@pytest.mark.parametrize(("solver", "message"), [
    ({"method": "seed000_sde", "steps": 8}, "runs on its own grid; grid must be 'uniform', without grid_params"),
    ({"method": "dopri5", "rtol": 1e-6, "atol": 1e-6}, "grid_params do not apply to adaptive method 'dopri5'"),
    ({"method": "euler", "steps": 8, "grid_params": {"uniform": {"t1": 1.5}}}, "grid 'uniform' with {'t1': 1.5}: t1 must"),
    ({"method": "euler", "steps": 8, "grid_params": {"uniform": {"rho": 7}}},  # merged over the sweep's map
     "grid 'uniform' with {'rho': 7, 't1': 0.9}: grid 'uniform' takes no parameter(s) ['rho']"),
])
def test_grid_parameters_are_checked_before_the_sweep_runs(solver, message):
    from fmbench.sweepfile import check_cells

    config = {"sweep": {"target": "seed000", "schedule": "cond_ot", "n": 16, "grid_params": {"uniform": {"t1": 0.9}}},
              "solver": [solver]}
    with pytest.raises(SweepError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        check_cells(expand(config))


def test_a_method_has_one_colour_in_every_figure_whatever_else_is_present():
    """Colours come from the method registry, not from the labels a run happens to have; variants are shades."""
    from fmbench.figures import method_colour, palette

    alone, crowded = palette(["rk4"]), palette(["euler", "heun", "rk4", "rk4 (learned:cfm)", "ddim"])
    assert alone["rk4"] == crowded["rk4"] == method_colour("rk4")
    assert crowded["rk4 (learned:cfm)"] != crowded["rk4"]
    many = palette(["euler", "midpoint", "heun", "rk4", "rk38", "ddim", "dpmpp_2m", "unipc", "edm_heun",
                    "euler_ancestral", "dpmpp_2m_sde", "dopri5"])
    assert len(set(many.values())) == len(many)  # no two methods share a colour


def test_method_colours_are_told_apart():
    """Every pair of the 48 registered methods (the suite's own, the reproductions, the peers) is more than
    COLOUR_DISTANCE apart in CIELAB (ΔE), and none is a grey."""
    import itertools

    from fmbench.figures import COLOUR_DISTANCE, colour_difference, method_colour

    from fmcore.solvers import METHODS

    colours = {name: method_colour(name) for name in list(METHODS)[:48]}
    assert len(colours) == 48
    assert all(max(colour) - min(colour) > 0.15 for colour in colours.values())
    closest = min(colour_difference(colours[a], colours[b]) for a, b in itertools.combinations(colours, 2))
    assert closest > COLOUR_DISTANCE


@pytest.mark.parametrize("rgb, lab", [((1.0, 1.0, 1.0), (100.0, 0.0, 0.0)), ((1.0, 0.0, 0.0), (53.24, 80.09, 67.20)),
                                      ((0.0, 0.0, 1.0), (32.30, 79.19, -107.86)), ((0.5, 0.5, 0.5), (53.39, 0.0, 0.0))])
def test_cielab_is_the_standard_conversion(rgb, lab):
    """Published sRGB → L*a*b* (D65) values; the tolerance covers the 4-digit sRGB matrix."""
    from fmbench.figures import cielab

    assert cielab(rgb) == pytest.approx(lab, abs=0.1)


def test_the_orders_table_covers_every_method_with_a_declared_order_and_flags_disagreement():
    """ddim (declared 1, not a tableau) is fitted; heun fitted at 1.0 against its declared 2 is flagged."""
    rows = pd.concat([
        _rows("euler", [8, 16, 32], [0.1, 0.05, 0.025]).assign(method="ddim"),
        _rows("euler", [8, 16, 32], [0.1, 0.05, 0.025]).assign(method="heun"),
        _rows("euler", [8, 16], [0.1, 0.05]),  # two step counts: one local order, nothing to fit
    ])
    orders = asymptotic_orders(rows).set_index("method")
    assert orders.loc["ddim", "declared order"] == 1 and orders.loc["ddim", "fitted order"] == pytest.approx(1.0)
    assert orders.loc["ddim", "flags"] == "-"
    assert "fitted 1.00 ≠ declared 2" in orders.loc["heun", "flags"] and "euler" not in orders.index


def test_a_report_draws_seed000_figures_only_for_sweeps_that_hold_it(tmp_path):
    cells = [CellSpec(target="gaussian", target_params={"d": 2}, schedule="cosine", method=m, steps=s, n=64)
             for m in ("euler", "heun") for s in (4, 8, 16)]
    run_sweep(cells, tmp_path, progress=False, cache_dir=tmp_path / "cache")
    report = write_report(tmp_path).read_text()
    assert "seed000_histograms" not in report and not (tmp_path / "seed000_histograms.png").exists()
    assert "## Mixtures" not in report and "## Which sampler at each NFE" in report


def test_timed_repeats_give_a_median_and_its_range():
    spec = CellSpec(target="gaussian", schedule="cosine", method="heun", steps=8, n=64, timing_repeats=3)
    row = run_cell(spec)
    assert row["status"] == "ok" and row["wall_s_min"] <= row["wall_s"] <= row["wall_s_max"]
    single = run_cell(CellSpec(target="gaussian", schedule="cosine", method="heun", steps=8, n=64))
    assert single["wall_s_min"] is None and single["wall_s_max"] is None and single["wall_s"] > 0


def test_the_timing_table_shows_the_repeats_spread():
    from fmbench.analysis import time_ratios

    rows = pd.concat([_rows("euler", [8], [0.1]), _rows("heun", [8], [0.01])]).assign(
        cell=["a", "b"], wall_s=[1.0, 4.0], wall_s_min=[0.9, 3.0], wall_s_max=[1.2, 5.0])
    table = time_ratios(rows).set_index("label")
    assert table.loc["heun", "time per NFE / euler"] == pytest.approx(2.0)  # 4 s / 16 NFE against 1 s / 8 NFE
    assert table.loc["heun", "repeats' spread"] == pytest.approx(0.5) and table.loc["euler", "repeats' spread"] == \
        pytest.approx(0.3)
    assert "repeats' spread" not in time_ratios(rows.drop(columns=["wall_s_min", "wall_s_max"]))


@pytest.mark.parametrize("other, mark", [([0.01, 0.02, 0.0, 0.03, 0.1] * 4, None),
                                         ([0.01] * 10 + [1.0] * 10, "The load changed during the run"),
                                         ([0.97, 1.0, 0.98, 1.01] * 5, "The machine was busy throughout the run")])
def test_the_report_says_what_ran_beside_the_cells(other, mark):
    """Per-cell loads weighted by the cells' times, over the run and over five consecutive parts of it."""
    from fmbench.reporting import load_during_run

    rows = pd.DataFrame({"other_cpu_load": other, "cell_s": 0.5})
    text = load_during_run({"load_average": [0.3, 0.2, 0.1], "load_average_end": [1.3, 0.5, 0.2], "cpu_count": 2},
                           rows)
    assert text.startswith("1-minute load average 0.30 when the run started and 1.30 when it ended, on 2 CPUs.")
    assert f"kept {sum(other) / len(other):.2f} CPU(s) busy on average" in text and "5 consecutive parts" in text
    assert ("**" in text) is (mark is not None) and (mark is None or mark in text)
    assert load_during_run({}) == "Load average: not recorded."


def test_other_load_is_the_machines_busy_time_less_this_processs(monkeypatch):
    import fmbench.timing as timing

    readings = iter([100.0, 103.0])  # the machine's busy CPU-seconds at the start and the end
    clocks = iter([10.0, 11.0])  # this process's CPU-seconds
    walls = iter([0.0, 2.0])
    monkeypatch.setattr(timing, "busy_cpu_seconds", lambda: next(readings))
    monkeypatch.setattr(timing.time, "process_time", lambda: next(clocks))
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(walls))
    assert timing.OtherLoad().stop() == pytest.approx((3.0 - 1.0) / 2.0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat")
def test_other_load_sees_one_busy_process():
    """Beside a process that spins for the whole measurement, other processes keep at least half a CPU busy (a full
    one on an idle machine of two or more CPUs; the bound leaves room for a loaded test machine)."""
    from fmbench.timing import OtherLoad

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        with OtherLoad() as load:
            time.sleep(1.0)
    finally:
        spinner.kill()
        spinner.wait()
    assert load.cpus is not None and load.cpus > 0.5


def test_a_float32_line_is_drawn_only_where_it_differs_from_float64():
    from fmbench.figures import _lines_that_differ

    same = pd.DataFrame({"key": "rk4", "grid": "uniform", "dtype": ["float64", "float32"] * 2, "nfe": [8, 8, 16, 16],
                         "y": [1e-2, 1.001e-2, 1e-3, 1.002e-3]})
    kept, dropped = _lines_that_differ(same)
    assert dropped == 1 and set(kept["dtype"]) == {"float64"}
    apart = same.assign(y=[1e-2, 1.001e-2, 1e-7, 3e-6], key="euler")  # float32's round-off floor at 16
    kept, dropped = _lines_that_differ(pd.concat([same, apart]))
    assert dropped == 1 and set(kept.loc[kept["key"] == "euler", "dtype"]) == {"float32", "float64"}


def test_a_figure_panel_draws_one_metric():
    from fmbench.analysis import panel_metric

    gaussian = pd.DataFrame({"w2_exact_law": [0.1, None, 0.2], "strong_error": [0.1, 0.3, None]})
    assert panel_metric(gaussian) == "w2_exact_law"  # the exact law wherever any row has it
    assert panel_metric(gaussian.assign(w2_exact_law=None)) == "strong_error"
    assert panel_metric(pd.DataFrame({"nfe": [1]})) is None
