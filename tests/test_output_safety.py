"""The output directory cannot be turned against its user: no write follows a link the run did not make, a root, the
home directory or a non-empty directory holding no run is refused as ``--out``, and a module beside the sweep file
that the sweep does not list never runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fmbench.cli import main
from fmbench.files import atomic_writer, write_text
from fmbench.store import load_rows

SWEEP = """
[sweep]
target = "gaussian"
schedule = "cond_ot"
target_params = { gaussian = { d = 2 } }
n = 32

[[solver]]
method = ["euler"]
steps = [2, 4]
"""


@pytest.fixture
def victim(tmp_path) -> Path:
    """A file of the user's that a planted link points at: it must come out of every run unchanged."""
    path = tmp_path / "victim.txt"
    path.write_text("the user's own file\n")
    return path


def _run(tmp_path: Path, out: Path, *extra: str) -> int:
    sweep = tmp_path / "sweep.toml"
    if not sweep.exists():
        sweep.write_text(SWEEP)
    return main(["run", str(sweep), "--out", str(out), "--quiet", *extra])


@pytest.mark.parametrize("name", [".write-test", "sweep.json.tmp", "environment.json.tmp", "rows.parquet.tmp"])
def test_links_at_the_old_temporary_names_are_never_written_through(tmp_path, victim, name):
    """The audit's attack: as root, a link planted at ``.write-test`` truncated its target to 0 bytes, one at
    ``sweep.json.tmp`` overwrote it. Temporary files are now created exclusively under fresh names."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "sweep.json").write_text('{"cells": []}')  # an earlier run's directory, so the link can sit in it
    (out / name).symlink_to(victim)
    assert _run(tmp_path, out) == 0
    assert victim.read_text() == "the user's own file\n" and (out / name).is_symlink()


@pytest.mark.parametrize("name", ["sweep.json", "environment.json", "rows.sqlite", "rows.sqlite-wal", "report.md",
                                  "cells.csv", "rows.parquet", "pareto_front.png"])
def test_a_link_at_a_name_the_run_writes_is_refused_before_any_work(tmp_path, victim, capsys, name):
    out = tmp_path / "run"
    out.mkdir()
    (out / "rows.csv").write_text("cell\n")  # marks it as a run's directory
    (out / name).symlink_to(victim)
    assert _run(tmp_path, out) == 2
    error = capsys.readouterr().err
    assert f"{out / name} is a symbolic link, which this run did not make" in error
    assert victim.read_text() == "the user's own file\n"
    assert sorted(p.name for p in out.iterdir()) == sorted({"rows.csv", name})  # nothing written, no store made


def test_an_atomic_write_never_replaces_a_link_or_leaves_a_partial_file(tmp_path, victim):
    link = tmp_path / "link"
    link.symlink_to(victim)
    with pytest.raises(OSError, match="is a symbolic link"):
        write_text(link, "clobbered")
    assert victim.read_text() == "the user's own file\n"
    target = tmp_path / "file"
    write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_writer(target) as file:
        file.write(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["file", "link", "victim.txt"]


@pytest.mark.parametrize("where", ["root", "home", "foreign"])
def test_directories_that_must_never_hold_a_run_are_refused(tmp_path, capsys, monkeypatch, where):
    foreign = tmp_path / "documents"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("mine")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    out = {"root": Path("/"), "home": Path("~").expanduser(), "foreign": foreign}[where]
    assert _run(tmp_path, out) == 2
    message = {"root": "it is a filesystem root", "home": "it is the home directory",
               "foreign": "it is a non-empty directory that holds no run"}[where]
    assert f"refusing --out {out}: {message}" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.tex"]


def test_an_empty_or_new_directory_and_an_earlier_run_are_accepted(tmp_path):
    (tmp_path / "empty").mkdir()
    assert _run(tmp_path, tmp_path / "empty") == 0
    assert _run(tmp_path, tmp_path / "empty") == 0  # resumed
    assert _run(tmp_path, tmp_path / "new" / "run") == 0


SHADOW = '''
from pathlib import Path
Path(__file__).with_name("{name}.ran").write_text("a module beside the sweep file ran")
raise SystemExit("the shadow {name} ran")
'''

PLUGIN = '''
from fmcore.solvers import get_method, register_method
from dataclasses import replace

register_method(replace(get_method("euler"), name="my_euler"))
'''


def test_modules_beside_the_sweep_file_run_only_when_listed(tmp_path):
    """The audit's attack: with plugins listed, the sweep file's folder went first on ``sys.path``, so a
    ``distributed.py`` there ran under ``--dask`` and a ``torchode.py`` via a peer cell."""
    pytest.importorskip("distributed")
    pytest.importorskip("torchode")
    folder = tmp_path / "sweeps"
    folder.mkdir()
    for name in ("distributed", "torchode"):
        (folder / f"{name}.py").write_text(SHADOW.format(name=name))
    (folder / "mine.py").write_text(PLUGIN)
    (folder / "sweep.toml").write_text('plugins = ["mine.py"]\n' + SWEEP.replace(
        'method = ["euler"]', 'method = ["my_euler", "peer:torchode/euler"]'))
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "fmbench", "run", str(folder / "sweep.toml"), "--out", str(out),
                             "--quiet", "--dask", "local:1"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert not list(folder.glob("*.ran"))
    rows = load_rows(out)
    assert (rows["status"] == "ok").all() and set(rows["method"]) == {"my_euler", "peer:torchode/euler"}


def test_a_module_name_plugin_is_not_looked_up_beside_the_sweep_file(tmp_path, capsys):
    (tmp_path / "mine.py").write_text(PLUGIN)
    (tmp_path / "sweep.toml").write_text('plugins = ["mine"]\n' + SWEEP)
    assert main(["run", str(tmp_path / "sweep.toml"), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "plugin 'mine' could not be imported: No module named 'mine'" in error
    assert 'write its path: plugins = ["mine.py"]' in error
