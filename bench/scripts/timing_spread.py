"""How steady are machine-normalised timings? ``python bench/scripts/timing_spread.py RUN1 RUN2 ...`` (runs of the same
sweep, e.g. the ci preset five times) writes ``results/timing_spread.md``.

For each cell, the ratio of its time in each run to its median over the runs, raw (``wall_s``) and normalised
(``wall_s_normalised`` = ``wall_s`` ÷ the run's calibration workload); the spread of those ratios over all cells and
runs says how large a change must be to be a regression rather than noise. The threshold of ``fmbench compare
--timing`` is derived from it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from fmbench.store import load_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("results/timing_spread.md"))
    args = parser.parse_args()
    frames = []
    for index, run in enumerate(args.runs):
        rows = load_rows(run)
        rows = rows[rows["status"] == "ok"][["cell", "wall_s", "wall_s_normalised", "calibration_s"]]
        frames.append(rows.assign(run=index))
    data = pd.concat(frames)
    lines = ["# Spread of timings over repeated runs", "",
             f"`python bench/scripts/timing_spread.py` over {len(args.runs)} runs of the same sweep "
             f"({data['cell'].nunique()} cells each). Ratio of each cell's time to its median over the runs:", "",
             "| timing | median ratio | 95th percentile | 99th percentile | max | per-cell max/min, 99th pct. |",
             "|---|---|---|---|---|---|"]
    for column in ("wall_s", "wall_s_normalised"):
        median = data.groupby("cell")[column].transform("median")
        ratio = data[column] / median
        spread = data.groupby("cell")[column].agg(lambda s: s.max() / s.min())
        lines.append(f"| {column} | {np.median(ratio):.3f} | {np.percentile(ratio, 95):.3f} | {np.percentile(ratio, 99):.3f} | "
                     f"{ratio.max():.3f} | {np.percentile(spread, 99):.3f} |")
    calibrations = data.groupby("run")["calibration_s"].first()
    lines += ["", "Calibration workload per run (s): " + ", ".join(f"{c * 1e3:.1f} ms" for c in calibrations), ""]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
