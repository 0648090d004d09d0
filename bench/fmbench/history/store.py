"""The history file: one JSON record per line, appended, never rewritten.

Append-only and line-per-run keeps it safe to commit and to diff (a new run is one added line) and safe to
interrupt: a record is written with one ``write`` of the whole line, under an exclusive ``flock``, and ``fsync``-ed.
A line cut short (the machine died mid-write) is skipped when read, with a warning naming its line, and the next
append starts on a line of its own, so nothing written before it is lost.
"""

from __future__ import annotations

import fcntl
import json
import os
import warnings
from pathlib import Path

__all__ = ["HistoryWarning", "append_record", "read_history", "record_identity"]


class HistoryWarning(UserWarning):
    """A line of a history file that could not be read (skipped)."""


def record_identity(record: dict) -> tuple:
    """What makes two records the same measurement: kind, preset, commit, machine, executor and threads."""
    return (record.get("kind"), record.get("preset"), record.get("commit"), record.get("machine"),
            record.get("executor"), record.get("threads"))


def append_record(path: str | Path, record: dict) -> None:
    """Append ``record`` as one line of the history file ``path`` (created with its parent directory if missing)."""
    if not isinstance(record, dict) or "cells" not in record:
        raise ValueError(f"record must be a history record (a dict with 'cells'), got {type(record).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=True) + "\n"
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.seek(0, os.SEEK_END)
            if handle.tell() > 0:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":  # a torn last line: ours starts on a line of its own
                    line = "\n" + line
            handle.write(line.encode())
            handle.flush()
            os.fsync(handle.fileno())
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_history(path: str | Path) -> list[dict]:
    """Every readable record of ``path``, in the order appended. A missing file is an error naming it; an
    unreadable line is skipped with a :class:`HistoryWarning`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"history file {path} does not exist (fmbench track RUN --history {path} makes it)")
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                warnings.warn(f"{path}:{number} is not a whole record (cut short?); skipped", HistoryWarning,
                              stacklevel=2)
                continue
            if not isinstance(record, dict) or "cells" not in record:
                warnings.warn(f"{path}:{number} is not a history record; skipped", HistoryWarning, stacklevel=2)
                continue
            records.append(record)
    return records
