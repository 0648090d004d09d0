"""Why the row store is SQLite: ``python bench/scripts/store_choice.py`` writes ``results/store_choice.md``.

For each N, a store holding N rows gets 200 more, one per transaction (as a sweep saves a cell), and then is
read back whole (as a resume, a report or an export does): SQLite (``fmbench.store.RowStore``) against one
small Parquet file per row read back with ``pandas.read_parquet`` of the folder.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
from fmbench.store import RowStore

ROOT = Path(__file__).resolve().parents[2]


def synthetic_row(index: int) -> dict:
    row = {"cell": f"{index:016x}", "target": "gaussian", "schedule": "cond_ot", "method": "rk4", "steps": 32,
           "status": "ok", "nfe": 128, "wall_s": 0.0123, "strong_error": 1.2e-7, "gaussian_fit_w2": 0.013}
    row.update({f"metric_{k}": k * 0.1 for k in range(20)})
    return row


def measure_sqlite(existing: int, appended: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as directory:
        store = RowStore(directory)
        store.append_many((synthetic_row(i), i) for i in range(existing))
        times = []
        for index in range(existing, existing + appended):
            start = time.perf_counter()
            store.append(synthetic_row(index), index)
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        assert len(store.frame()) == existing + appended
        read = time.perf_counter() - start
        store.close()
    return statistics.median(times), read


def measure_parquet_parts(existing: int, appended: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        for index in range(existing):  # bulk-made: the cost being measured is the next append and the read
            pd.DataFrame([synthetic_row(index)]).to_parquet(folder / f"{index:08d}.parquet", index=False)
        times = []
        for index in range(existing, existing + appended):
            start = time.perf_counter()
            part = folder / f"{index:08d}.parquet"
            temporary = part.with_suffix(".tmp")
            pd.DataFrame([synthetic_row(index)]).to_parquet(temporary, index=False)
            temporary.replace(part)
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        assert len(pd.read_parquet(folder)) == existing + appended
        read = time.perf_counter() - start
    return statistics.median(times), read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 10_000, 100_000])
    parser.add_argument("--appended", type=int, default=200)
    args = parser.parse_args()
    lines = ["# Row store: SQLite vs one Parquet file per row", "",
             f"`python bench/scripts/store_choice.py --sizes {' '.join(map(str, args.sizes))}`: median time to append "
             f"and commit one row to a store holding N rows ({args.appended} appends), and the time to read all rows back.",
             "", "| N rows | SQLite append | Parquet part append | SQLite read all | Parquet parts read all |",
             "|---|---|---|---|---|"]
    for size in args.sizes:
        sqlite_append, sqlite_read = measure_sqlite(size, args.appended)
        parquet_append, parquet_read = measure_parquet_parts(size, args.appended)
        lines.append(f"| {size} | {sqlite_append * 1e6:.0f} µs | {parquet_append * 1e6:.0f} µs | "
                     f"{sqlite_read:.3f} s | {parquet_read:.3f} s |")
        print(lines[-1], flush=True)
    (ROOT / "results" / "store_choice.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
