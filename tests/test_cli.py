"""The command line's own behaviour: what ``--help`` imports, ``list`` (aligned, complete, ``--json``, peers marked
where not installed), ``run --dry-run`` and its estimate, and a closed pipe."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from fmbench.cells import CellSpec
from fmbench.cli import main
from fmbench.estimate import estimate_sweep, saved_cells
from fmbench.listing import catalogue, format_catalogue, preset_description
from fmbench.sweepfile import presets


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_help_imports_no_torch_fmcore_pandas_or_peer_library():
    shown = _python("import sys\nfrom fmbench.cli import main\ntry:\n    main(['run', '--help'])\nexcept SystemExit:\n"
                    "    pass\nprint(sorted(m for m in ('torch', 'fmcore', 'pandas', 'seaborn', 'diffusers', 'k_diffusion')"
                    " if m in sys.modules))")
    assert shown.returncode == 0, shown.stderr
    assert "--dry-run" in shown.stdout and shown.stdout.strip().splitlines()[-1] == "[]"


def test_list_is_aligned_complete_and_marks_a_library_that_is_not_installed():
    """A method that requires a module absent here is listed with the mark; every method row's columns start where
    the header's widest name ends; each preset's whole opening comment is its description."""
    shown = _python(
        "import dataclasses, fmbench.peers\nfrom fmcore.solvers import METHODS, register_method\n"
        "register_method(dataclasses.replace(METHODS['euler'], name='needs_a_library', "
        "requires=('fmbench_no_such_module',)))\nfrom fmbench.cli import main\nmain(['list'])")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("methods")))
    end = lines.index(next(line for line in lines if line.startswith("fields")))
    rows = lines[start + 1 : end]
    family_column = {len(row) - len(row[2:].split(" ", 1)[1].lstrip()) for row in rows}
    assert len(family_column) == 1  # every family starts in the same column, peer:… names included
    marked = [row for row in rows if row.split()[0] == "needs_a_library"]
    assert marked and "(not installed: fmbench_no_such_module; fmbench install-peers)" in marked[0]
    assert all("not installed" not in row for row in rows if row.split()[0] == "euler")
    text = " ".join(shown.stdout.split())
    for path in presets().values():
        assert " ".join(preset_description(path).split()) in text


def test_a_preset_description_is_its_whole_opening_comment(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("# first line\n#   second line, indented\n#\n# after a blank comment\n[sweep]\n# not this\n")
    assert preset_description(path) == "first line second line, indented after a blank comment"


def test_list_json_is_the_catalogue(capsys):
    assert main(["list", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(catalogue(), default=repr))
    assert printed["methods"]["rk4"]["order"] == 4 and printed["methods"]["rk4"]["exact_law"] is True
    assert printed["methods"]["dopri5"]["exact_law"] is False and printed["targets"]["gaussian"]["d"] == 8
    assert set(printed["methods"]["peer:k_diffusion/euler"]) >= {"installed", "missing"}
    assert "default" in printed["presets"] and "learned:cfm" in printed["fields"]
    assert format_catalogue(catalogue(), width=60).count("\n") > 60


def test_an_estimate_is_the_measured_costs_in_calibration_units_times_this_machines(monkeypatch):
    """Cells costed by their own key, else by the same method at the same n and field, else not estimated; a cost
    of 3 calibration units on a machine whose calibration takes 0.5 s is 1.5 s; saved cells are not counted."""
    import fmbench.estimate as estimate

    monkeypatch.setattr(estimate, "calibration_seconds", lambda threads: 0.5)
    own = CellSpec(target="gaussian", schedule="cosine", method="rk4", steps=8)
    alike = CellSpec(target="gmm", schedule="cosine", method="rk4", steps=16)
    unknown = CellSpec(target="gaussian", schedule="cosine", method="heun", steps=8)
    done = CellSpec(target="gaussian", schedule="cosine", method="rk4", steps=32)
    costs = pd.DataFrame({"cell": [own.key(), "other", "other2"], "method": ["rk4", "rk4", "rk4"], "n": [2000] * 3,
                          "field": ["analytic"] * 3, "cost": [3.0, 5.0, 7.0], "cell_s": [0.3, 0.5, 0.7]})
    result = estimate_sweep([own, alike, unknown, done], {done.key()}, costs=costs, workers=2)
    assert (result.cells, result.saved, result.measured, result.by_method, result.not_estimated) == (4, 1, 1, 1, 1)
    assert result.seconds == pytest.approx((3.0 + 5.0) * 0.5 / 2)  # the median of rk4's costs is 5
    assert result.as_measured_s == pytest.approx((0.3 + 0.5) / 2)
    assert "2 worker(s)" in str(result) and "1 not estimated" in str(result)


def test_dry_run_runs_nothing_and_counts_saved_cells(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "smoke", "--out", str(out), "--dry-run"]) == 0
    assert not out.exists()
    assert capsys.readouterr().out.startswith("7 cells; 0 already saved ok, 7 to run")
    assert saved_cells(out) == set()
    assert main(["run", "no_such_preset", "--dry-run"]) == 2  # the sweep is still checked


def test_a_closed_pipe_ends_the_listing_quietly():
    shown = subprocess.run(f"{sys.executable} -m fmbench list | head -1", shell=True, capture_output=True, text=True,
                           timeout=120)
    assert shown.stdout.startswith("targets") and "Traceback" not in shown.stderr and "BrokenPipe" not in shown.stderr


def test_reading_a_run_imports_no_torch():
    """``compare`` (and the store it reads with) needs pandas, not the numerical stack: the run's cells are
    :class:`fmbench.cellspec.CellSpec`, its files fmcore's small helpers, whose package loads its face lazily."""
    baseline = str(Path(__file__).resolve().parents[1] / "results" / "baselines" / "ci")
    shown = _python("import sys\nfrom fmbench.cli import main\n"
                    f"status = main(['compare', {baseline!r}, {baseline!r}])\n"
                    "print(status, sorted(m for m in ('torch', 'fmcore.solvers', 'matplotlib') if m in sys.modules))")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip().splitlines()[-1] == "0 []"


def test_fmcores_face_loads_on_first_use():
    shown = _python("import sys, fmcore\nbefore = 'torch' in sys.modules\nfmcore.get_target('gaussian')\n"
                    "from fmcore.solvers import METHODS\nprint(before, 'torch' in sys.modules, 'seed000_sde' in METHODS, "
                    "'get_target' in dir(fmcore))")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == ["False", "True", "True", "True"]
    import fmcore

    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        fmcore.no_such_name  # noqa: B018
