"""Saving a finished row costs the same at 10², 10⁴ and 10⁵ rows already saved (``fmbench.store``).

Each benchmark round appends one synthetic row — shaped like a real sweep row, ~30 fields — to a store that
already holds N rows, in its own transaction, as a sweep does after every cell. ``extra_info`` carries N, so the
stored results say what each time bought. ``python bench/scripts/store_choice.py`` compares this with one
Parquet file per row, the alternative that was measured and not chosen.
"""

from __future__ import annotations

import itertools

import pytest
from fmbench.store import RowStore


def synthetic_row(index: int) -> dict:
    row = {"cell": f"{index:016x}", "target": "gaussian", "schedule": "cond_ot", "method": "rk4", "steps": 32,
           "grid": "uniform", "field": "analytic", "dtype": "float64", "device": "cpu", "seed": 0, "n": 2000,
           "status": "ok", "error": None, "nfe": 128, "wall_s": 0.0123, "strong_error": 1.2e-7,
           "gaussian_fit_w2": 0.013, "cell_s": 0.02, "threads": 1, "target_params": '{"d": 8}'}
    row.update({f"metric_{k}": k * 0.1 for k in range(10)})
    return row


@pytest.mark.parametrize("existing", [100, 10_000, 100_000])
def test_append_one_row(benchmark, tmp_path, existing):
    store = RowStore(tmp_path)
    store.append_many((synthetic_row(i), i) for i in range(existing))
    counter = itertools.count(existing)

    def append():
        index = next(counter)
        store.append(synthetic_row(index), index)

    benchmark.extra_info.update(existing_rows=existing, what="one row appended and committed")
    benchmark.pedantic(append, rounds=300, iterations=1, warmup_rounds=10)
    assert len(store) == existing + 310
    store.close()
