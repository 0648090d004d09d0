"""A store that degrades cleanly: every command that meets a damaged, empty, locked, read-only or full store says what
is wrong and what to do, with exit status 3 (``fmbench.cli``); readers fall back to the Parquet export; ``repair``
rebuilds a damaged store; a full disk keeps every saved row and leaves a resumable run."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest
from fmbench.cli import EXIT_STORE, main
from fmbench.store import RowStore, load_rows, repair

SWEEP = """
[sweep]
target = ["gaussian"]
schedule = ["cond_ot", "cosine"]
n = 64
target_params = { gaussian = { d = 2 } }

[[solver]]
method = ["euler", "heun", "rk4"]
steps = [2, 4, 8, 16]
"""
CELLS = 24
ACCURACY = ["cell", "status", "nfe", "strong_error"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished run of 24 cells (rows.sqlite and its rows.parquet export), and its sweep file beside it."""
    folder = tmp_path_factory.mktemp("finished")
    (folder / "sweep.toml").write_text(SWEEP)
    assert main(["run", str(folder / "sweep.toml"), "--out", str(folder / "run"), "--quiet"]) == 0
    return folder


def _copy(finished: Path, tmp_path: Path) -> Path:
    shutil.copytree(finished / "run", tmp_path / "run")
    shutil.copy(finished / "sweep.toml", tmp_path / "sweep.toml")
    for suffix in ("-wal", "-shm"):
        (tmp_path / "run" / f"rows.sqlite{suffix}").unlink(missing_ok=True)
    return tmp_path / "run"


def _accuracy(out: Path) -> pd.DataFrame:
    return load_rows(out)[ACCURACY].sort_values("cell").reset_index(drop=True)


def _overwrite(path: Path, offset: int, length: int) -> None:
    with open(path, "r+b") as file:
        file.seek(offset)
        file.write(b"\xa5" * length)


def _run(tmp_path: Path, *extra: str) -> int:
    return main(["run", str(tmp_path / "sweep.toml"), "--out", str(tmp_path / "run"), "--quiet", *extra])


def test_a_damaged_store_is_read_from_its_export_refused_for_a_run_and_repaired(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path)
    _overwrite(out / "rows.sqlite", 0, 100)  # the header: "file is not a database"
    for command in (["report", str(out)], ["export", str(out), "--csv", str(tmp_path / "rows.csv")],
                    ["compare", str(finished / "run"), str(out)]):
        assert main(command) == 0, command
        error = capsys.readouterr().err
        assert "is damaged" in error and "reading its export rows.parquet" in error, command
    assert len(pd.read_csv(tmp_path / "rows.csv")) == CELLS
    assert _run(tmp_path) == EXIT_STORE
    error = capsys.readouterr().err
    assert "rows.sqlite is damaged (file is not a database)" in error and f"fmbench repair {out}" in error
    assert main(["repair", str(out)]) == 0
    said = capsys.readouterr().out
    assert "0 row(s) read from the old store, 24 more from rows.parquet" in said and "rows.sqlite.damaged-" in said
    assert len(list(out.glob("rows.sqlite.damaged-*"))) == 1
    assert _run(tmp_path) == 0
    pd.testing.assert_frame_equal(_accuracy(out), _accuracy(finished / "run"))


def test_readers_say_the_store_is_damaged_and_fall_back_to_the_export(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path)
    _overwrite(out / "rows.sqlite", 0, 100)
    assert main(["export", str(out), "--csv", str(tmp_path / "rows.csv")]) == 0
    error = capsys.readouterr().err
    assert "fmbench: warning:" in error and "is damaged" in error and "reading its export rows.parquet" in error
    (out / "rows.parquet").unlink()  # no export to fall back on: exit 3, naming the repair
    for command in (["report", str(out)], ["export", str(out), "--csv", str(tmp_path / "rows.csv")],
                    ["compare", str(finished / "run"), str(out)]):
        assert main(command) == EXIT_STORE, command
        assert f"is damaged (file is not a database). `fmbench repair {out}`" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
def test_repair_keeps_every_row_sqlite_can_still_read(finished, tmp_path, capsys, damage):
    out = _copy(finished, tmp_path)
    (out / "rows.parquet").unlink()  # only what the damaged file still holds
    path = out / "rows.sqlite"
    page = 4096
    if damage == "truncated":
        os.truncate(path, path.stat().st_size // 2)
    else:
        _overwrite(path, 6 * page, 2 * page)  # pages 7 and 8: two of the table's leaves (page 2 is its root)
    done = repair(out)
    assert 0 < done["from_sqlite"] < CELLS and done["from_parquet"] == 0
    with RowStore(out) as store:
        store.check()  # the rebuilt store is whole
        assert len(store) == done["from_sqlite"]
    assert _run(tmp_path) == 0  # the rest run again, and give the rows of the undamaged run
    pd.testing.assert_frame_equal(_accuracy(out), _accuracy(finished / "run"))


def test_repair_leaves_a_whole_store_alone_and_waits_for_no_running_sweep(finished, tmp_path, capsys):
    from fmbench.files import RunLock

    out = _copy(finished, tmp_path)
    before = (out / "rows.sqlite").read_bytes()
    assert main(["repair", str(out)]) == 0
    assert "is whole (SQLite's quick_check: ok): nothing to repair" in capsys.readouterr().out
    assert (out / "rows.sqlite").read_bytes() == before and not list(out.glob("rows.sqlite.damaged-*"))
    lock = RunLock(out)  # a sweep writing there
    try:
        assert main(["repair", str(out)]) == EXIT_STORE
        assert "another fmbench run" in capsys.readouterr().err
    finally:
        lock.release()


def test_an_empty_store_holds_no_rows(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path)
    (out / "rows.parquet").unlink()
    (out / "rows.sqlite").write_bytes(b"")
    assert main(["report", str(out)]) == 0
    assert "No cell's row is saved" in (out / "report.md").read_text()
    assert main(["export", str(out), "--csv", str(tmp_path / "rows.csv")]) == 2
    assert "holds no rows" in capsys.readouterr().err
    assert main(["compare", str(finished / "run"), str(out)]) == 2
    assert "holds no rows" in capsys.readouterr().err
    assert _run(tmp_path) == 0 and len(load_rows(out)) == CELLS


def test_a_run_directory_in_use_is_refused(finished, tmp_path, capsys):
    from fmbench.files import RunLock

    out = _copy(finished, tmp_path)
    lock = RunLock(out)  # as a running sweep holds it
    try:
        assert _run(tmp_path) == EXIT_STORE
        assert f"another fmbench run (pid {os.getpid()}) is writing to {out}" in capsys.readouterr().err
        assert main(["report", str(out)]) == 0  # readers are not blocked
    finally:
        lock.release()
    assert _run(tmp_path) == 0


def test_a_locked_database_says_so(finished, tmp_path):
    from fmbench.store import StoreError

    out = _copy(finished, tmp_path)
    holder = sqlite3.connect(out / "rows.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        store = RowStore(out)
        store.connection.execute("PRAGMA busy_timeout = 100")
        with pytest.raises(StoreError, match="is locked by another process"):
            store.append({"cell": "x", "status": "ok"}, 0)
        store.close()
    finally:
        holder.close()


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None or os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.fixture
def tmpfs(tmp_path):
    """A fresh tmpfs mount (root only: skipped where mounting is not allowed); unmounted afterwards."""
    mount = tmp_path / f"tmpfs-{uuid.uuid4().hex[:8]}"
    if not _mount_tmpfs(mount, "64m"):
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _remount(mount: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(mount)], check=True, capture_output=True)


def test_a_run_on_read_only_media_can_be_read_reported_elsewhere_and_not_resumed(finished, tmp_path, tmpfs, capsys):
    out = tmpfs / "run"
    shutil.copytree(finished / "run", out)
    _remount(tmpfs, "ro")
    assert main(["report", str(out)]) == EXIT_STORE
    assert "cannot be written (read-only?): write the report elsewhere with --to DIR" in capsys.readouterr().err
    assert main(["report", str(out), "--to", str(tmp_path / "report")]) == 0
    assert "24 ok" in (tmp_path / "report" / "report.md").read_text()
    assert main(["export", str(out), "--csv", str(tmp_path / "rows.csv")]) == 0
    assert main(["compare", str(finished / "run"), str(out)]) == 0
    assert main(["run", str(finished / "sweep.toml"), "--out", str(out), "--quiet"]) == EXIT_STORE
    assert "cannot be written (Read-only file system)" in capsys.readouterr().err


def test_a_full_disk_stops_the_run_keeps_every_row_and_resumes(finished, tmp_path, tmpfs, capsys):
    _remount(tmpfs, "size=160k")  # room for the run's first files and a few rows, not for all 24
    out = tmpfs / "run"
    assert main(["run", str(finished / "sweep.toml"), "--out", str(out), "--quiet"]) == EXIT_STORE
    error = capsys.readouterr().err
    assert "is full" in error and "every row saved so far is kept" in error and "run the same command again" in error
    saved = load_rows(out)
    assert 0 < len(saved) < CELLS
    _remount(tmpfs, "size=64m")
    assert main(["run", str(finished / "sweep.toml"), "--out", str(out), "--quiet"]) == 0
    pd.testing.assert_frame_equal(_accuracy(out), _accuracy(finished / "run"))


def test_a_file_size_limit_stops_the_run_as_a_full_disk_does(finished, tmp_path):
    """Without root: ``ulimit -f`` makes every write past it fail with EFBIG (SQLite: "disk I/O error"), which stops the
    run as a full disk does."""

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (48 * 1024, 48 * 1024))

    command = [sys.executable, "-m", "fmbench", "run", str(finished / "sweep.toml"), "--out", str(tmp_path / "run"),
               "--quiet"]
    limited = subprocess.run(command, capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size)
    assert limited.returncode == EXIT_STORE, limited.stderr
    assert "a file-size limit (ulimit -f) was reached" in limited.stderr
    assert "every row saved so far is kept" in limited.stderr
    assert 0 < len(load_rows(tmp_path / "run")) < CELLS
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    pd.testing.assert_frame_equal(_accuracy(tmp_path / "run"), _accuracy(finished / "run"))
