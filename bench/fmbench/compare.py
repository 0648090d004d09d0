"""``fmbench compare BASELINE RUN``: a run checked against a committed baseline, cell by cell, metric by metric.

Cells are joined on their identity (the hash of the cell spec). Each metric is checked by its nature:

* **counts** (``nfe``) must be equal;
* **deterministic accuracy metrics** — the exact-law figures, strong errors, and every sampled metric at its fixed
  seed — within a relative tolerance chosen per dtype (:data:`TOLERANCES`: round-off of the dtype, with room for
  another CPU's BLAS), plus an absolute floor below which differences are round-off;
* **sampled metrics** (``gaussian_fit_w2``, ``w2_sliced``, ``mode_tv``) also pass when they moved by less than their
  own Monte-Carlo error, the ``*_floor`` figure in the same row: a change that small is not resolvable by them;
* **status**: a cell that was ok and now fails (or the reverse) is reported;
* **timings** only as machine-normalised ratios (``wall_s`` ÷ the run's calibration workload, see
  :mod:`fmbench.calibration`), and only when asked (``--timing``): a cell regresses when its ratio exceeds
  :data:`TIMING_THRESHOLD`, the run as a whole when the median ratio over its cells exceeds
  :data:`MEDIAN_TIMING_THRESHOLD`.

An accuracy regression (or a newly failing cell) makes the exit status 1; a timing regression does too with
``--timing``. Cells added or missing are listed, and differences of environment (torch, numpy, CPU, devices) are
warned about, since they can move the last digits.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fmbench.store import load_rows

COUNTS = ("nfe",)
EXACT_METRICS = ("w2_exact_law", "strong_error_exact", "clip_w2_exact_law", "clip_strong_error",
                 "discretisation_strong_error", "strong_error")
SAMPLED_METRICS = {"gaussian_fit_w2": "gaussian_fit_w2_floor", "w2_sliced": "w2_sliced_floor", "mode_tv": "mode_tv_floor"}
TOLERANCES = {"float64": (1e-7, 1e-12), "float32": (2e-3, 1e-6)}
"""dtype → (relative, absolute) tolerance of a deterministic metric. float64: a different summation order (another
BLAS, thread count) moves results by ~1e-15 relative, amplified along a solve; 1e-7 leaves 8 orders of margin and
is still 10⁴ × finer than the smallest change a tableau or schedule error causes (tests/test_compare.py).
float32: round-off ~1e-7 per operation, amplified along a solve; errors under 1e-6 are round-off."""
TIMING_THRESHOLD = 2.5
MEDIAN_TIMING_THRESHOLD = 1.10
"""Derived from five repeated runs of the ci preset on this project's 2-core machine (``results/timing_spread.md``):
between any two runs, the worst single cell's normalised time moved by up to ×1.83, and the median ratio over the
274 cells stayed within 0.955–1.047. A cell must slow down ×2.5 (36 % beyond the worst seen), or the whole run ×1.10
(twice the largest median drift seen), to count as a regression."""
ENVIRONMENT_KEYS = ("processor", "cpu_count", "cuda_devices", "python")


@dataclass(frozen=True)
class Comparison:
    table: pd.DataFrame  # one row per (cell, metric) that moved or regressed
    added: list[str]
    missing: list[str]
    warnings: list[str]
    checked_cells: int

    @property
    def regressions(self) -> pd.DataFrame:
        return self.table[self.table["verdict"] == "REGRESSION"]

    @property
    def failed(self) -> bool:
        return len(self.regressions) > 0


def _describe(row: pd.Series) -> str:
    parts = [str(row.get("target")), str(row.get("schedule")), str(row.get("method"))]
    if isinstance(row.get("grid"), str) and row.get("grid") != "uniform":
        parts.append(f"grid={row['grid']}")
    if isinstance(row.get("diffusion"), str):
        parts.append(f"diffusion={row['diffusion']}")
    steps = row.get("steps")
    if steps is not None and not (isinstance(steps, float) and math.isnan(steps)):
        parts.append(f"steps={int(steps)}")
    rtol = row.get("rtol")
    if rtol is not None and not (isinstance(rtol, float) and math.isnan(rtol)):
        parts.append(f"rtol={rtol:g}")
    if row.get("field") not in (None, "analytic"):
        parts.append(str(row["field"]))
    parts.append(str(row.get("dtype")))
    return " ".join(parts)


def _number(value) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _environment(directory: Path) -> dict:
    path = directory / "environment.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _environment_warnings(baseline: dict, run: dict) -> list[str]:
    warnings = []
    for name in ("torch", "numpy", "scipy", "torchdiffeq"):
        before, now = baseline.get("packages", {}).get(name), run.get("packages", {}).get(name)
        if before != now:
            warnings.append(f"{name} differs: baseline {before}, run {now}")
    for key in ENVIRONMENT_KEYS:
        if baseline.get(key) != run.get(key):
            warnings.append(f"{key} differs: baseline {baseline.get(key)!r}, run {run.get(key)!r}")
    return warnings


def compare_runs(baseline_dir: str | Path, run_dir: str | Path, timing: bool = False,
                 timing_threshold: float = TIMING_THRESHOLD) -> Comparison:
    """Compare the rows of ``run_dir`` with those of ``baseline_dir`` (see the module docstring)."""
    baseline_dir, run_dir = Path(baseline_dir), Path(run_dir)
    baseline, run = load_rows(baseline_dir), load_rows(run_dir)
    for name, frame, directory in (("baseline", baseline, baseline_dir), ("run", run, run_dir)):
        if frame.empty:
            raise FileNotFoundError(f"the {name} {directory} holds no rows (rows.sqlite or rows.parquet)")
    before, now = baseline.set_index("cell"), run.set_index("cell")
    added = sorted(set(now.index) - set(before.index))
    missing = sorted(set(before.index) - set(now.index))
    records = []
    for cell in [c for c in before.index if c in now.index]:
        old, new = before.loc[cell], now.loc[cell]
        where = _describe(new)
        if old["status"] != new["status"]:
            verdict = "REGRESSION" if old["status"] == "ok" else "improved"
            records.append((cell, where, "status", old["status"], new["status"], math.nan, verdict))
            continue
        if new["status"] != "ok":
            continue
        records += _compare_cell(cell, where, old, new, timing, timing_threshold)
    if timing:
        records += _median_timing(before, now, timing_threshold)
    table = pd.DataFrame(records, columns=["cell", "where", "metric", "baseline", "now", "ratio", "verdict"])
    warnings = _environment_warnings(_environment(baseline_dir), _environment(run_dir))
    return Comparison(table, added, missing, warnings, len(set(before.index) & set(now.index)))


def _compare_cell(cell: str, where: str, old: pd.Series, new: pd.Series, timing: bool, threshold: float) -> list[tuple]:
    records = []
    relative, absolute = TOLERANCES.get(str(new.get("dtype")), TOLERANCES["float32"])
    for metric in COUNTS:
        before, now = _number(old.get(metric)), _number(new.get(metric))
        if before is not None and before != now:
            records.append((cell, where, metric, before, now, (now or 0) / before if before else math.nan, "REGRESSION"))
    for metric in (*EXACT_METRICS, *SAMPLED_METRICS):
        before, now = _number(old.get(metric)), _number(new.get(metric))
        if before is None and now is None:
            continue
        if before is None or now is None:
            records.append((cell, where, metric, before, now, math.nan, "REGRESSION"))
            continue
        difference = abs(now - before)
        if difference <= relative * abs(before) + absolute:
            continue
        floor = _number(new.get(SAMPLED_METRICS.get(metric, ""), None)) if metric in SAMPLED_METRICS else None
        verdict = "within its Monte-Carlo error" if floor is not None and difference <= floor else "REGRESSION"
        records.append((cell, where, metric, before, now, now / before if before else math.inf, verdict))
    if timing:
        before, now = _number(old.get("wall_s_normalised")), _number(new.get("wall_s_normalised"))
        if before and now:
            ratio = now / before
            verdict = "REGRESSION" if ratio > threshold else ("faster" if ratio < 1 / threshold else None)
            if verdict:
                records.append((cell, where, "wall_s_normalised", before, now, ratio, verdict))
    return records


def _median_timing(before: pd.DataFrame, now: pd.DataFrame, cell_threshold: float) -> list[tuple]:
    """The run as a whole: the median over shared ok cells of the normalised-time ratio."""
    if "wall_s_normalised" not in before or "wall_s_normalised" not in now:
        return []
    shared = before.index.intersection(now.index)
    ratios = (now.loc[shared, "wall_s_normalised"] / before.loc[shared, "wall_s_normalised"]).dropna()
    if ratios.empty:
        return []
    median = float(ratios.median())
    threshold = MEDIAN_TIMING_THRESHOLD * cell_threshold / TIMING_THRESHOLD
    verdict = "REGRESSION" if median > threshold else "ok"
    return [("(all cells)", f"median over {len(ratios)} cells", "wall_s_normalised ratio", 1.0, median, median, verdict)]


def format_comparison(comparison: Comparison, markdown: bool = False, limit: int = 200) -> str:
    """A readable table of what moved, and a summary; Markdown for a CI log or a review comment."""
    lines = []
    regressions = comparison.regressions
    title = (f"{comparison.checked_cells} cells compared: {len(regressions)} regression(s), "
             f"{len(comparison.table) - len(regressions)} other change(s), {len(comparison.added)} added, "
             f"{len(comparison.missing)} missing")
    lines.append(f"## fmbench compare\n\n{title}\n" if markdown else title)
    for warning in comparison.warnings:
        lines.append(f"- warning: {warning}" if markdown else f"warning: {warning}")
    table = comparison.table.sort_values(["verdict", "where", "metric"]).head(limit)
    if len(table):
        header = ["where", "metric", "baseline", "now", "ratio", "verdict"]
        rows = [[r["where"], r["metric"], _fmt(r["baseline"]), _fmt(r["now"]), _fmt(r["ratio"]), r["verdict"]]
                for _, r in table.iterrows()]
        if markdown:
            lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(row) + " |" for row in rows]
        else:
            widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
            lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
            lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)) for row in rows]
    for label, cells in (("added", comparison.added), ("missing", comparison.missing)):
        if cells:
            lines.append(f"{label} cells: {', '.join(cells[:20])}{' ...' if len(cells) > 20 else ''}")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return str(value)
