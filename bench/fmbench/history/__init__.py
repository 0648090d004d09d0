"""Tracking across commits: a history of runs, change points per series, bisection and a static dashboard.

* :mod:`~fmbench.history.record` — one run (or stored pytest-benchmark run) summarised as one record;
* :mod:`~fmbench.history.store` — the append-only history file, one record per line;
* :mod:`~fmbench.history.series` — the records cut into series: one metric of one cell on one machine, by commit;
* :mod:`~fmbench.history.steps` — change points: tolerance steps for exact series, a weighted step fit for noisy ones;
* :mod:`~fmbench.history.backfill` and :mod:`~fmbench.history.bisect` — past commits run in clean worktrees;
* :mod:`~fmbench.history.publish` — the static dashboard;
* :mod:`~fmbench.history.commands` — their command lines.

The names below load on first use (PEP 562), so that ``fmbench --help`` stays light.
"""

import importlib

_WHERE = {"run_record": "record", "benchmark_record": "record", "append_record": "store", "read_history": "store",
          "build_series": "series", "detect_steps": "steps", "detect_all": "steps", "backfill": "backfill",
          "commits_in": "backfill", "bisect_step": "bisect", "publish": "publish"}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'fmbench.history' has no attribute {name!r}")
    return getattr(importlib.import_module(f"fmbench.history.{_WHERE[name]}"), name)
