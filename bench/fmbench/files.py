"""Writing into a run directory so that no one who can write there too can turn the run against its user.

Every file the harness writes in a run directory is written whole, atomically and without following a link, by
:func:`atomic_writer` (shared with the library's model cache, :mod:`fmcore._files`): a link at a name the run writes
is something the run did not make, so it is refused before anything is written (:class:`UnsafePathError`).

:func:`check_output_directory` refuses what must never be a run directory: a filesystem root, the home directory,
and a non-empty directory that holds no run (``--out ~/Documents`` would otherwise receive a run's files beside
the user's own, and ``--force`` would move them aside).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fmcore._files import UnsafePathError, atomic_writer, refuse_link, write_text

__all__ = ["UnsafePathError", "atomic_writer", "refuse_link", "write_text", "RUN_MARKERS", "RUN_FILES",
           "probe_writable", "check_output_directory", "RunLock", "RunLockedError"]

RUN_MARKERS = ("sweep.json", "rows.sqlite", "rows.parquet", "rows.csv")
"""A directory holding one of these is a run (or a baseline): it may be resumed, reported on, or moved aside."""
RUN_FILES = ("sweep.json", "environment.json", "rows.sqlite", "rows.sqlite-wal", "rows.sqlite-shm", "rows.parquet",
             "rows.csv", "report.md", "cells.csv", ".fmbench-lock")
"""The names a run writes in its directory (and its figures, ``*.png``)."""


def probe_writable(directory: Path) -> None:
    """Raise ``OSError`` unless a file can be created in ``directory`` (by a create-exclusive temporary file)."""
    descriptor, name = tempfile.mkstemp(dir=directory, prefix=".write-test-")
    os.close(descriptor)
    os.unlink(name)


def _written_by_a_run(name: str) -> bool:
    """A name a run writes: one of :data:`RUN_FILES`, a figure, or one of :func:`atomic_writer`'s temporary files."""
    return name in RUN_FILES or name.endswith(".png") or (name.startswith(".") and ".tmp-" in name)


def refuse_links_in(directory: Path) -> None:
    """Raise :class:`UnsafePathError` if any name the run writes in ``directory`` (:data:`RUN_FILES`, ``*.png``) is a
    symbolic link: checked before a run starts, so that it is refused before any work rather than at its end."""
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        if _written_by_a_run(entry.name) and entry.is_symlink():
            refuse_link(entry)


def check_output_directory(out: Path) -> None:
    """Refuse an output directory that is a filesystem root, the home directory, a non-empty directory that holds
    no run (:data:`RUN_MARKERS`), or one where a name the run writes is a symbolic link."""
    resolved = out.expanduser().resolve()
    if resolved.parent == resolved:
        raise UnsafePathError(f"refusing --out {out}: it is a filesystem root; give a directory of its own for the run")
    if resolved == Path.home().resolve():
        raise UnsafePathError(f"refusing --out {out}: it is the home directory; give a directory of its own for the run")
    if resolved.is_dir() and not any((resolved / name).exists() for name in RUN_MARKERS) \
            and not all(_written_by_a_run(entry.name) for entry in resolved.iterdir()):
        raise UnsafePathError(f"refusing --out {out}: it is a non-empty directory that holds no run (no "
                              f"{', '.join(RUN_MARKERS)}); give a new or empty directory, or an earlier run's")
    refuse_links_in(resolved)


class RunLock:
    """An exclusive lock on a run directory (``flock`` on ``<run>/.fmbench-lock``), held while a sweep writes there:
    a second ``fmbench run`` on the same directory is refused instead of interleaving its rows with the first's."""

    filename = ".fmbench-lock"

    def __init__(self, directory: Path):
        import fcntl

        self.path = Path(directory) / self.filename
        refuse_link(self.path)
        self.descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(self.descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self.descriptor)
            raise RunLockedError(f"another fmbench run (pid {holder}) is writing to {directory}: wait for it to finish, "
                                 "stop it, or use another --out") from None
        os.ftruncate(self.descriptor, 0)
        os.pwrite(self.descriptor, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self.descriptor is not None:
            os.close(self.descriptor)  # closing the descriptor releases the lock
            self.descriptor = None


class RunLockedError(OSError):
    """Another process holds the run directory's lock."""
