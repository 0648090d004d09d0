"""Where a sweep's rows live while it runs: an append-only SQLite file, ``<run>/rows.sqlite``.

Each finished cell is one ``INSERT`` in its own transaction, so saving costs the same per row at 100 or
100 000 rows (measured: ``bench/suites/bench_store.py``), and a cell is on disk the moment it finishes.
SQLite's write-ahead log makes every commit atomic: a process killed at any point (SIGKILL included) leaves
the rows committed before it, never a half-written file. Rows come back in sweep order (``position``).

Why SQLite rather than one small Parquet file per cell: both save a row at a flat cost, but reading 10⁵ part
files back (for a resume, a report or an export) costs one file open per row, and the part files need a
compaction step of their own; an embedded database reads them back in one query and is in the standard
library. DuckDB would do as well, but is another dependency for no gain at these sizes. The figures behind
this choice are in the README ("Saving rows").

``rows.parquet`` beside it is an export of the same rows (written when a run ends and by ``fmbench report``), for
pandas users. A committed baseline holds them as ``rows.csv`` (:func:`write_baseline`): text, so a reviewer can diff
it, with every float written to round-trip exactly.

When something is wrong with the store, every use of it says what and what to do (:class:`StoreError`): a damaged
file (``fmbench repair`` rebuilds it, :func:`repair`; readers meanwhile fall back to ``rows.parquet``), a lock held by
another process, read-only media (reading works there: the file is opened immutable), a full disk
(:class:`StoreFullError`: the rows saved so far are kept and the run resumes once there is space). The ``attempts``
table records each cell's starts, so that a run that dies inside a cell names that cell next time
(:mod:`fmbench.faults`).
"""

from __future__ import annotations

import errno
import json
import math
import os
import sqlite3
import time
import warnings
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from fmbench.files import RunLock, atomic_writer, refuse_link

SCHEMA = """
CREATE TABLE IF NOT EXISTS rows (
    cell TEXT PRIMARY KEY,      -- the cell's identity (CellSpec.key())
    position INTEGER NOT NULL,  -- its index in the sweep, so rows come back in sweep order
    status TEXT NOT NULL,       -- "ok", "failed" or "skipped"
    row TEXT NOT NULL           -- the whole flat row, as JSON
);
CREATE TABLE IF NOT EXISTS attempts (
    cell TEXT PRIMARY KEY,      -- a cell that has been started at least once
    started INTEGER NOT NULL,   -- how many times it has been started
    running INTEGER NOT NULL    -- 1 from its start in process until its row is saved (fmbench.faults: "died")
);
"""


class StoreError(Exception):
    """A run's store cannot be used as it is: damaged, locked, read-only, or on a full disk. The message says what is
    wrong and what to do (the command line exits :data:`fmbench.cli.EXIT_STORE`)."""


class StoreFullError(StoreError):
    """The disk holding the store is full: the rows saved so far are kept, and the run can be resumed."""


class StoreWarning(UserWarning):
    """A store was read in a degraded way (its Parquet export instead of a damaged SQLite file)."""


def _json_value(value):
    """Rows are flat: numbers, strings, None. NaN and ±inf are stored as None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy / torch scalars
        return _json_value(value.item())
    return value


def _record(row: dict) -> str:
    return json.dumps({key: _json_value(value) for key, value in row.items()})


def store_error(error: Exception, path: Path) -> StoreError:
    """What an SQLite (or file system) error means for the user of the store at ``path``, and what to do."""
    text = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    directory = path.parent
    if "disk is full" in text or getattr(error, "errno", None) in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return StoreFullError(f"the disk holding {directory} is full ({text}): every row saved so far is kept. Free some "
                              "space and run the same command again to resume")
    if "disk I/O error" in text:  # SQLite's word for a failed write: EFBIG past `ulimit -f`, EIO
        return StoreFullError(f"writing to {directory} failed ({text}: the disk is full, a file-size limit (ulimit -f) "
                              "was reached, or the media failed): every row saved so far is kept. Fix that and run the "
                              "same command again to resume")
    if "locked" in text or "busy" in text:
        return StoreError(f"{path} is locked by another process ({text}): wait for it to finish, or stop it")
    if "readonly" in text or "read-only" in text or getattr(error, "errno", None) in (errno.EROFS, errno.EACCES):
        return StoreError(f"{path} cannot be written ({text}): copy the run to a writable place to resume it (reading it "
                          "— report --to, export, compare — works where it is)")
    if isinstance(error, sqlite3.DatabaseError):
        return StoreError(f"{path} is damaged ({text}). `fmbench repair {directory}` rebuilds it from the rows it can "
                          "still read and from rows.parquet")
    return StoreError(f"{path}: {type(error).__name__}: {text}")


def _writable(directory: Path) -> bool:
    return os.access(directory, os.W_OK)


class RowStore:
    """The rows of one run, in ``<directory>/rows.sqlite``. Open it, append rows, read them back.

    ``readonly``: open for reading only, without creating or changing anything (on read-only media as an immutable
    file). Every SQLite error comes out as a :class:`StoreError` saying what is wrong and what to do."""

    filename = "rows.sqlite"

    def __init__(self, directory: str | Path, readonly: bool = False):
        self.path = Path(directory) / self.filename
        self.readonly = readonly
        try:
            if readonly:
                self.connection = self._connect_for_reading()
            else:
                for suffix in ("", "-wal", "-shm"):
                    refuse_link(self.path.with_name(self.filename + suffix))
                self.connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                self.connection.execute("PRAGMA journal_mode=WAL")
                self.connection.execute("PRAGMA synchronous=NORMAL")  # with WAL: atomic and safe against a killed process
                self.connection.executescript(SCHEMA)
        except sqlite3.Error as error:
            raise store_error(error, self.path) from None

    def _connect_for_reading(self) -> sqlite3.Connection:
        if not self.path.exists():
            raise StoreError(f"{self.path} does not exist")
        uri = self.path.resolve().as_uri()
        if _writable(self.path.parent):
            return sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30)
        return sqlite3.connect(f"{uri}?immutable=1", uri=True)  # read-only media: nothing can change it under us

    def _execute(self, sql: str, parameters=()) -> list[tuple]:
        """Run one statement and fetch all it returns (SQLite can fail while fetching, on a damaged page)."""
        try:
            return self.connection.execute(sql, parameters).fetchall()
        except sqlite3.Error as error:
            raise store_error(error, self.path) from None

    def check(self) -> None:
        """Raise :class:`StoreError` if the file is damaged (SQLite's ``quick_check``: every page readable)."""
        result = self._execute("PRAGMA quick_check")
        if result != [("ok",)]:
            raise store_error(sqlite3.DatabaseError("; ".join(str(r[0]) for r in result[:3])), self.path)

    def append(self, row: dict, position: int) -> None:
        """Save one finished row (replacing an earlier row of the same cell, e.g. a failed one being retried); the cell
        is no longer running."""
        try:
            with self.connection:
                self.connection.execute("BEGIN")
                self.connection.execute("INSERT OR REPLACE INTO rows (cell, position, status, row) VALUES (?, ?, ?, ?)",
                                        (row["cell"], position, row["status"], _record(row)))
                self.connection.execute("UPDATE attempts SET running = 0 WHERE cell = ?", (row["cell"],))
        except sqlite3.Error as error:
            raise store_error(error, self.path) from None

    def append_many(self, rows: Iterable[tuple[dict, int]]) -> None:
        """Save many rows in one transaction (bulk loads, repairs and benchmarks; a sweep appends one at a time)."""
        records = [(row["cell"], position, row["status"], _record(row)) for row, position in rows]
        try:
            with self.connection:
                self.connection.execute("BEGIN")
                self.connection.executemany(
                    "INSERT OR REPLACE INTO rows (cell, position, status, row) VALUES (?, ?, ?, ?)", records)
        except sqlite3.Error as error:
            raise store_error(error, self.path) from None

    def start(self, cell: str, running: bool) -> int:
        """Record that ``cell`` starts (``running``: in this process, so that a run that dies in it names it next
        time); return how many times it has been started, this one included."""
        self._execute("INSERT INTO attempts (cell, started, running) VALUES (?, 1, ?) "
                      "ON CONFLICT (cell) DO UPDATE SET started = started + 1, running = excluded.running",
                      (cell, int(running)))
        return self._execute("SELECT started FROM attempts WHERE cell = ?", (cell,))[0][0]

    def attempts(self) -> dict[str, int]:
        """``cell → times started``."""
        return dict(self._execute("SELECT cell, started FROM attempts"))

    def died_running(self) -> list[str]:
        """The cells that were running in process when their run ended without saving them (the run died in them)."""
        return [cell for (cell,) in self._execute("SELECT cell FROM attempts WHERE running = 1 ORDER BY cell")]

    def clear_running(self) -> None:
        """No cell is running any more (a run stopped by the user, not died in a cell)."""
        self._execute("UPDATE attempts SET running = 0")

    def faults(self) -> dict[str, str]:
        """``cell → fault`` of every failed row that records one (:mod:`fmbench.faults`)."""
        return {cell: fault for cell, fault in self._execute(
            "SELECT cell, json_extract(row, '$.fault') FROM rows WHERE status = 'failed'") if fault}

    def statuses(self) -> dict[str, str]:
        """``cell → status`` for every saved row."""
        return dict(self._execute("SELECT cell, status FROM rows"))

    def frame(self) -> pd.DataFrame:
        """All rows, in sweep order."""
        records = [json.loads(text) for (text,) in self._execute("SELECT row FROM rows ORDER BY position, cell")]
        return pd.DataFrame.from_records(records)

    def __len__(self) -> int:
        return self._execute("SELECT COUNT(*) FROM rows")[0][0]

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> RowStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


BASELINE_ROWS = "rows.csv"
"""A committed baseline's rows (:func:`write_baseline`): CSV, one line per cell, floats written to round-trip."""
BASELINE_FILES = (BASELINE_ROWS, "sweep.json", "environment.json")
TEXT_COLUMNS = ("cell", "target", "schedule", "method", "target_params", "schedule_params", "field", "grid", "diffusion",
                "diffusion_params", "device", "dtype", "execution", "method_params", "status", "error", "execution_used",
                "execution_fallback", "code", "fault")
"""Columns that hold text, read back from CSV as text (a cell hash such as ``"1234e567…"`` would parse as a number)."""


def load_rows(directory: str | Path) -> pd.DataFrame:
    """A run's rows in sweep order: from ``rows.sqlite`` while it exists (read only: this works on read-only media),
    else from the ``rows.parquet`` export, else from a baseline's ``rows.csv``.

    A damaged ``rows.sqlite`` beside a readable ``rows.parquet`` gives the export's rows with a
    :class:`StoreWarning` (they may lag the store by the rows saved since the last export); with no export it
    raises the :class:`StoreError`, which says how to repair it. An empty ``rows.sqlite`` (zero bytes, or no table) holds
    no rows."""
    directory = Path(directory)
    if (directory / RowStore.filename).exists():
        if (directory / RowStore.filename).stat().st_size == 0:
            return pd.DataFrame()
        try:
            with RowStore(directory, readonly=True) as store:
                return store.frame()
        except StoreError as error:
            if "no such table" in str(error):
                return pd.DataFrame()
            if not (directory / "rows.parquet").exists() or isinstance(error, StoreFullError):
                raise
            warnings.warn(f"{error}; reading its export rows.parquet instead (it lacks any row saved after the last "
                          "export)", StoreWarning, stacklevel=2)
    if (directory / "rows.parquet").exists():
        try:
            return pd.read_parquet(directory / "rows.parquet")
        except Exception as error:  # noqa: BLE001 — pyarrow's errors for a damaged file have no common base
            raise StoreError(f"{directory / 'rows.parquet'} cannot be read ({type(error).__name__}: {error})") from None
    if (directory / BASELINE_ROWS).exists():
        return read_rows_csv(directory / BASELINE_ROWS)
    return pd.DataFrame()


def readable_rows(path: Path) -> list[tuple[int, str, str, str]]:
    """``(position, cell, status, row JSON)`` of every row SQLite can still read in a damaged store: the whole table if
    it scans, else row by row (a damaged page costs the rows on it, not the rest). The file is opened immutable (never
    written) with ``writable_schema`` on, under which SQLite reads a file shorter than its header says (truncated)
    instead of refusing it whole."""
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?immutable=1", uri=True)
        connection.execute("PRAGMA writable_schema = ON")  # a truncated file: read the pages it still has
    except sqlite3.Error:
        return []
    try:
        try:
            return list(connection.execute("SELECT position, cell, status, row FROM rows"))
        except sqlite3.Error:
            pass
        found, highest = [], max(1000, path.stat().st_size // 64)  # a row takes more than 64 bytes
        for rowid in range(1, highest + 1):
            try:
                record = connection.execute("SELECT position, cell, status, row FROM rows WHERE rowid = ?", (rowid,)).fetchone()
            except sqlite3.Error:
                record = None
            if record is not None:
                found.append(record)
        return found
    finally:
        connection.close()


def is_whole(directory: Path) -> bool:
    """Whether ``<directory>/rows.sqlite`` exists, is not empty, and passes SQLite's ``quick_check``."""
    path = Path(directory) / RowStore.filename
    if not path.exists() or path.stat().st_size == 0:
        return False
    try:
        with RowStore(directory, readonly=True) as store:
            store.check()
            len(store)
    except StoreError:
        return False
    return True


def repair(directory: str | Path) -> dict:
    """Rebuild a damaged ``rows.sqlite``: the rows SQLite can still read, and the rows of ``rows.parquet`` for cells it
    lost. The damaged file (and its ``-wal``/``-shm``) is kept as ``rows.sqlite.damaged-<time>``; a row is kept only if
    its JSON reads back whole; the cells' start counts (:mod:`fmbench.faults`) begin afresh. A whole store is left as
    it is. Holds the run's lock (a sweep writing there is waited for by no one: the repair is refused). Returns what it
    did: ``{"whole", "from_sqlite", "from_parquet", "kept_as"}``."""
    directory = Path(directory)
    lock = RunLock(directory)
    try:
        if is_whole(directory):
            return {"whole": True, "from_sqlite": 0, "from_parquet": 0, "kept_as": None}
        return _rebuild(directory)
    finally:
        lock.release()


def _rebuild(directory: Path) -> dict:
    path = directory / RowStore.filename
    recovered: dict[str, tuple[dict, int]] = {}
    if path.exists():
        for position, cell, _status, text in readable_rows(path):
            try:
                row = json.loads(text)
            except (TypeError, ValueError):
                continue
            if isinstance(row, dict) and row.get("cell") == cell:
                recovered[cell] = (row, position)
    from_sqlite = len(recovered)
    if (directory / "rows.parquet").exists():
        try:
            export = pd.read_parquet(directory / "rows.parquet")
        except Exception:  # noqa: BLE001 — a damaged export gives nothing
            export = pd.DataFrame()
        order = _sweep_positions(directory)
        for index, row in enumerate(export.to_dict("records")):
            if row.get("cell") not in recovered:
                clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
                recovered[row["cell"]] = (clean, order.get(row["cell"], index))
    kept_as = None
    if path.exists():
        kept_as = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        for suffix in ("-wal", "-shm", ""):
            part = path.with_name(path.name + suffix)
            if part.exists():
                os.replace(part, kept_as.with_name(kept_as.name + suffix))
    with RowStore(directory) as store:
        store.append_many(recovered.values())
    return {"whole": False, "from_sqlite": from_sqlite, "from_parquet": len(recovered) - from_sqlite,
            "kept_as": str(kept_as) if kept_as else None}


def _sweep_positions(directory: Path) -> dict[str, int]:
    try:
        cells = json.loads((directory / "sweep.json").read_text())["cells"]
        return {spec["cell"]: index for index, spec in enumerate(cells)}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def read_rows_csv(path: str | Path) -> pd.DataFrame:
    """Rows from a CSV written by :func:`write_baseline` (or ``fmbench export``): text columns as text, every number
    exactly as written (empty fields are missing values)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    for name in frame.columns:
        if name not in TEXT_COLUMNS:
            try:  # Python's float() is correctly rounded: the shortest repr written by to_csv comes back exactly
                frame[name] = [float(value) if isinstance(value, str) else math.nan for value in frame[name]]
            except ValueError:  # not a number column after all: keep it as text
                pass
    return frame


def write_baseline(run: str | Path, directory: str | Path) -> list[Path]:
    """Write the files a baseline needs, and only those, into ``directory``: :data:`BASELINE_FILES` — the rows as
    CSV (diffable, exact floats), the normalised cell specs and the environment that produced them. Nothing binary:
    what a reviewer sees in a diff is what ``fmbench compare`` reads."""
    run, directory = Path(run), Path(directory)
    rows = load_rows(run)
    if rows.empty:
        raise FileNotFoundError(f"{run} holds no rows (rows.sqlite, rows.parquet or rows.csv)")
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    target = directory / BASELINE_ROWS
    with atomic_writer(target) as file:
        rows.to_csv(file, index=False)
    written.append(target)
    for name in BASELINE_FILES[1:]:
        if (run / name).exists() and (run / name).resolve() != (directory / name).resolve():
            with atomic_writer(directory / name) as file:
                file.write((run / name).read_bytes())
        if (directory / name).exists():
            written.append(directory / name)
    return written


def export_parquet(directory: str | Path, rows: pd.DataFrame | None = None) -> Path:
    """Write ``rows.parquet`` from the store (or from its ``rows``, already read), atomically
    (:func:`fmbench.files.atomic_writer`)."""
    directory = Path(directory)
    frame = load_rows(directory) if rows is None else rows
    target = directory / "rows.parquet"
    with atomic_writer(target) as file:
        frame.to_parquet(file, index=False)
    return target
