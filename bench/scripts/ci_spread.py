"""How far the ci preset's metrics move when nothing but the machine moves: ``python bench/scripts/ci_spread.py``.

Runs the ci preset once per *variation* — torch's vectorised kernels (``ATEN_CPU_CAPABILITY`` = the machine's own,
``avx2``, ``default``: what another x86-64 CPU would dispatch to), 1 and 2 torch threads per cell, and the CPU chunk
size of the closed forms (``GaussianMixture.cpu_chunk_elements`` 2¹⁸ and 2¹²) — each into its own run directory
with its own model cache (the learned model is trained anew under each), then measures, per metric class of
:func:`fmbench.compare.metric_class`, the largest relative change of any cell from the reference run. Writes
``results/ci_spread.md``; the tolerances in :data:`fmbench.compare.TOLERANCES` are derived from it.

``--timing`` instead runs the preset in process and with ``--workers 2``, each idle and beside one other CPU-bound
process, and measures the spread of the machine-normalised timings between them (the timing thresholds).

Runs resume (``fmbench run`` skips saved cells), so an interrupted measurement continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from fmbench.compare import TOLERANCES, metric_class, metric_names
from fmbench.reporting import markdown_table
from fmbench.store import load_rows


@dataclass(frozen=True)
class Variation:
    """One way of running the same code: environment variables, torch threads per cell, the CPU chunk size."""

    name: str
    env: dict[str, str] = field(default_factory=dict)
    threads: int = 1
    chunk_elements: int | None = None
    workers: int = 1
    busy: bool = False


ACCURACY = [
    Variation("native-1"),  # the reference
    Variation("native-2", threads=2),
    Variation("avx2-1", {"ATEN_CPU_CAPABILITY": "avx2"}),
    Variation("avx2-2", {"ATEN_CPU_CAPABILITY": "avx2"}, threads=2),
    Variation("default-1", {"ATEN_CPU_CAPABILITY": "default"}),
    Variation("default-2", {"ATEN_CPU_CAPABILITY": "default"}, threads=2),
    Variation("chunk-2^12", chunk_elements=2**12),
]
TIMING = [
    Variation("in-process-idle"),
    Variation("in-process-busy", busy=True),
    Variation("workers2-idle", workers=2),
    Variation("workers2-busy", workers=2, busy=True),
]


def run(variation: Variation, root: Path) -> Path:
    """Run the ci preset under ``variation`` into ``root/<name>`` (resuming) and return that directory."""
    out = root / variation.name
    prelude = "import sys\n"
    if variation.chunk_elements is not None:
        prelude += f"import fmcore.targets\nfmcore.targets.GaussianMixture.cpu_chunk_elements = {variation.chunk_elements}\n"
    arguments = ["run", "ci", "--out", str(out), "--cache", str(root / f"cache-{variation.name}"), "--quiet",
                 "--threads", str(variation.threads), "--workers", str(variation.workers)]
    command = [sys.executable, "-c", prelude + f"from fmbench.cli import main\nsys.exit(main({arguments!r}))"]
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if variation.busy else None
    started = time.perf_counter()
    try:
        result = subprocess.run(command, env={**os.environ, **variation.env}, text=True, capture_output=True)
    finally:
        if busy is not None:
            busy.kill()
    print(f"{variation.name}: exit {result.returncode} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if result.returncode not in (0, 1):
        raise SystemExit(f"{variation.name} failed:\n{result.stderr[-3000:]}")
    return out


def _ok(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["status"] == "ok"].set_index("cell")


def accuracy_spread(runs: dict[str, Path]) -> pd.DataFrame:
    """Per metric class: the cells and values compared, and the largest relative and absolute change from the
    reference (the first run) over every other run, with the cell where it happened."""
    names = list(runs)
    reference = _ok(load_rows(runs[names[0]]))
    records = []
    for name in names[1:]:
        other = _ok(load_rows(runs[name]))
        for cell in reference.index.intersection(other.index):
            before, now = reference.loc[cell], other.loc[cell]
            for metric in metric_names(before):
                a, b = before.get(metric), now.get(metric)
                if a is None or b is None or pd.isna(a) or pd.isna(b):
                    continue
                difference = abs(float(b) - float(a))
                records.append({"class": metric_class(before, metric), "metric": metric, "variation": name,
                                "cell": cell, "where": f"{before['target']} {before['schedule']} {before['method']} "
                                f"{before['dtype']}", "baseline": float(a), "now": float(b), "absolute": difference,
                                "relative": difference / abs(float(a)) if float(a) else (0.0 if difference == 0 else np.inf)})
    return pd.DataFrame.from_records(records)


def summarise_accuracy(spread: pd.DataFrame) -> pd.DataFrame:
    """Per class: how many values moved, the largest relative and absolute changes (and where), and the largest
    share of the class's tolerance any change used (< 1 for every class, or compare would fail)."""
    rows = []
    for name, group in spread.groupby("class", sort=True):
        tolerance = TOLERANCES[name]
        allowed = tolerance.relative * group["baseline"].abs() + tolerance.absolute
        share = (group["absolute"] / allowed.where(allowed > 0, np.inf)).where(group["absolute"] > 0, 0.0)
        worst = group.loc[group["relative"].idxmax()]
        rows.append({"class": name, "values compared": len(group), "values that moved": int((group["absolute"] > 0).sum()),
                     "largest relative change": f"{worst['relative']:.2g}",
                     "where": f"{worst['where']} {worst['metric']} ({worst['variation']})" if worst["relative"] > 0 else "",
                     "largest absolute change": f"{group['absolute'].max():.2g}",
                     "tolerance (relative, absolute)": f"{tolerance.relative:g}, {tolerance.absolute:g}",
                     "largest share of the tolerance used": f"{share.max():.2g}"})
    return pd.DataFrame(rows)


def timing_spread(runs: dict[str, Path]) -> pd.DataFrame:
    """Per pair of runs: the median and worst per-cell ratio of machine-normalised times, with each run's load."""
    names, rows = list(runs), []
    frames = {name: _ok(load_rows(runs[name])) for name in names}
    loads = {name: json.loads((runs[name] / "environment.json").read_text()).get("load_average") for name in names}
    for first_index, first in enumerate(names):
        for second in names[first_index + 1:]:
            shared = frames[first].index.intersection(frames[second].index)
            ratio = (frames[second].loc[shared, "wall_s_normalised"] / frames[first].loc[shared, "wall_s_normalised"]).dropna()
            rows.append({"baseline": first, "run": second, "cells": len(ratio), "median ratio": f"{ratio.median():.3f}",
                         "95th percentile": f"{ratio.quantile(0.95):.2f}", "max": f"{ratio.max():.2f}",
                         "min": f"{ratio.min():.2f}",
                         "1-min load (baseline, run)": f"{loads[first][0]:.2f}, {loads[second][0]:.2f}"})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("results/runs/ci_spread"))
    parser.add_argument("--timing", action="store_true", help="measure the timing spread instead")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    variations = TIMING if args.timing else ACCURACY
    runs = {variation.name: run(variation, args.root) for variation in variations}
    out = args.out or Path("results/timing_spread_executors.md" if args.timing else "results/ci_spread.md")
    if args.timing:
        text = ["# Timing spread of the ci preset across executors and load", "",
                "Written by `python bench/scripts/ci_spread.py --timing`: the ci preset in process and with `--workers 2`, "
                "each idle and beside one other CPU-bound process (`python -c 'while True: pass'`). Ratio run ÷ baseline "
                "of each cell's machine-normalised time (`wall_s_normalised`).", "", markdown_table(timing_spread(runs)), ""]
    else:
        spread = accuracy_spread(runs)
        text = ["# Spread of the ci preset's metrics across kernels, threads and chunk size", "",
                "Written by `python bench/scripts/ci_spread.py`: the ci preset run under each variation "
                f"({', '.join(runs)}); the first is the reference. Per metric class (`fmbench.compare.metric_class`), "
                "the largest relative change of any value from the reference, and the tolerance `fmbench compare` "
                "applies to that class.", "", markdown_table(summarise_accuracy(spread)), "",
                "Largest changes (all classes):", "",
                markdown_table(spread.sort_values("relative", ascending=False).head(15)[
                    ["class", "where", "metric", "variation", "baseline", "now", "absolute", "relative"]], ".8g"), ""]
    out.write_text("\n".join(text))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
