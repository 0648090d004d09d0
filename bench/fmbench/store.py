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
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

SCHEMA = """
CREATE TABLE IF NOT EXISTS rows (
    cell TEXT PRIMARY KEY,      -- the cell's identity (CellSpec.key())
    position INTEGER NOT NULL,  -- its index in the sweep, so rows come back in sweep order
    status TEXT NOT NULL,       -- "ok", "failed" or "skipped"
    row TEXT NOT NULL           -- the whole flat row, as JSON
);
"""


def _json_value(value):
    """Rows are flat: numbers, strings, None. NaN and ±inf are stored as None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy / torch scalars
        return _json_value(value.item())
    return value


class RowStore:
    """The rows of one run, in ``<directory>/rows.sqlite``. Open it, append rows, read them back."""

    filename = "rows.sqlite"

    def __init__(self, directory: str | Path):
        self.path = Path(directory) / self.filename
        self.connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("PRAGMA synchronous=NORMAL")  # with WAL: atomic and safe against a killed process
        self.connection.executescript(SCHEMA)

    def append(self, row: dict, position: int) -> None:
        """Save one finished row (replacing an earlier row of the same cell, e.g. a failed one being retried)."""
        record = json.dumps({key: _json_value(value) for key, value in row.items()})
        self.connection.execute(
            "INSERT OR REPLACE INTO rows (cell, position, status, row) VALUES (?, ?, ?, ?)",
            (row["cell"], position, row["status"], record),
        )

    def append_many(self, rows: Iterable[tuple[dict, int]]) -> None:
        """Save many rows in one transaction (bulk loads and benchmarks; a sweep appends one at a time)."""
        records = [
            (row["cell"], position, row["status"], json.dumps({k: _json_value(v) for k, v in row.items()}))
            for row, position in rows
        ]
        with self.connection:
            self.connection.execute("BEGIN")
            self.connection.executemany("INSERT OR REPLACE INTO rows (cell, position, status, row) VALUES (?, ?, ?, ?)", records)

    def statuses(self) -> dict[str, str]:
        """``cell → status`` for every saved row."""
        return dict(self.connection.execute("SELECT cell, status FROM rows"))

    def frame(self) -> pd.DataFrame:
        """All rows, in sweep order."""
        records = [json.loads(text) for (text,) in self.connection.execute("SELECT row FROM rows ORDER BY position, cell")]
        return pd.DataFrame.from_records(records)

    def __len__(self) -> int:
        return self.connection.execute("SELECT COUNT(*) FROM rows").fetchone()[0]

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
                "execution_fallback", "code")
"""Columns that hold text, read back from CSV as text (a cell hash such as ``"1234e567…"`` would parse as a number)."""


def load_rows(directory: str | Path) -> pd.DataFrame:
    """A run's rows in sweep order: from ``rows.sqlite`` while it exists, else from the ``rows.parquet`` export, else
    from a baseline's ``rows.csv``."""
    directory = Path(directory)
    if (directory / RowStore.filename).exists():
        with RowStore(directory) as store:
            return store.frame()
    if (directory / "rows.parquet").exists():
        return pd.read_parquet(directory / "rows.parquet")
    if (directory / BASELINE_ROWS).exists():
        return read_rows_csv(directory / BASELINE_ROWS)
    return pd.DataFrame()


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
    temporary = target.with_name(target.name + ".tmp")
    rows.to_csv(temporary, index=False)
    temporary.replace(target)
    written.append(target)
    for name in BASELINE_FILES[1:]:
        if (run / name).exists() and (run / name).resolve() != (directory / name).resolve():
            (directory / name).write_text((run / name).read_text())
        if (directory / name).exists():
            written.append(directory / name)
    return written


def export_parquet(directory: str | Path) -> Path:
    """Write ``rows.parquet`` from the store, atomically (a temporary file renamed over the old one)."""
    directory = Path(directory)
    frame = load_rows(directory)
    target = directory / "rows.parquet"
    temporary = target.with_name(target.name + ".tmp")
    frame.to_parquet(temporary, index=False)
    temporary.replace(target)
    return target
