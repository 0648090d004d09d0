"""``fmbench compare BASELINE RUN``: a run checked against a baseline, cell by cell — a gate a CI can trust.

Cells are joined on their identity (the hash of the cell spec) and listed in the sweep's order, each described by
the spec fields that vary between cells (not by its hash). Every accuracy metric is lower-is-better, so each change
has a direction: **worse** fails the comparison, **better** is reported and passes (unless ``strict``).

**Tolerances per metric class.** A metric may move by round-off when only the machine changes — another CPU's
vectorised kernels, another thread count, another chunk size — and the amount depends on what kind of computation
produced it, so each value falls in one class (:func:`metric_class`), and a change passes when
``|now − before| ≤ relative·|before| + absolute`` for that class (:data:`TOLERANCES`, measured across those
variations by ``bench/scripts/ci_spread.py``: ``results/ci_spread.md``):

* ``nfe`` — the evaluations of a fixed-step solve: exact;
* ``adaptive_nfe`` — of an adaptive solve, whose accepted steps depend on round-off;
* ``float64``, ``float32`` — a deterministic metric of a fixed-step solve in that dtype;
* ``adaptive`` — any metric of an adaptive solve (its step sequence depends on round-off);
* ``learned`` — a metric of a learned model trained in the run (training amplifies round-off into the weights);
* ``sampled`` — a Monte-Carlo metric (``gaussian_fit_w2``, ``w2_sliced``, ``mode_tv``); it also passes when it moved
  by less than its own Monte-Carlo error, the ``*_floor`` figure in the same row.

**Status.** A cell that was ok and now fails is worse; one that failed and now is ok is better; one now skipped (a
missing device or peer) was not compared and counts as missing.

**A gate, not a report.** The comparison fails when a metric got worse, when nothing was compared, or when baseline
cells are missing from the run (``allow_missing`` accepts that), and with ``strict`` when anything moved at all.

**Timings** only when asked (``timing``), as machine-normalised ratios (``wall_s`` ÷ the run's calibration
workload, :mod:`fmbench.calibration`): a cell is *slower* past :data:`TIMING_THRESHOLD`, the run as a whole past
:data:`MEDIAN_TIMING_THRESHOLD` (median over its cells). When the two runs differ in load, executor or threads per
cell, timing verdicts are warnings and do not fail: those move timings more than a change of code does.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fmbench.cellspec import CellSpec
from fmbench.store import load_rows

COUNTS = ("nfe",)
EXACT_METRICS = ("w2_exact_law", "strong_error_exact", "clip_w2_exact_law", "clip_strong_error",
                 "discretisation_strong_error", "strong_error", "model_velocity_loss")
SAMPLED_METRICS = {"gaussian_fit_w2": "gaussian_fit_w2_floor", "spectral_fit_w2": "spectral_fit_w2_floor",
                   "w2_sliced": "w2_sliced_floor", "mode_tv": "mode_tv_floor"}
SPEC_FIELDS = tuple(spec_field.name for spec_field in dataclasses.fields(CellSpec))
SPEC_DEFAULTS = {spec_field.name: spec_field.default for spec_field in dataclasses.fields(CellSpec)
                 if spec_field.default is not dataclasses.MISSING}
ALWAYS_DESCRIBED = ("target", "schedule", "method", "dtype")


@dataclass(frozen=True)
class Tolerance:
    """A change passes when ``|now − before| ≤ relative·|before| + absolute``."""

    relative: float
    absolute: float

    def admits(self, before: float, now: float) -> bool:
        return abs(now - before) <= self.relative * abs(before) + self.absolute


TOLERANCES: dict[str, Tolerance] = {
    "nfe": Tolerance(0.0, 0.0),
    "adaptive_nfe": Tolerance(0.1, 12.0),
    "float64": Tolerance(1e-9, 1e-12),
    "float32": Tolerance(1e-4, 1e-5),
    "adaptive": Tolerance(0.25, 1e-7),
    "learned": Tolerance(1e-2, 1e-5),
    "sampled": Tolerance(1e-4, 1e-5),
}
"""Per metric class, from the spread measured across ATEN_CPU_CAPABILITY = avx512 / avx2 / default, 1 and 2 threads
and the CPU chunk size (``results/ci_spread.md``; README, "Regression checks") and from the round-off a solve can
accumulate:

* ``float64``: largest change seen 4.1e-13 relative (2.7e-15 absolute); 1e-9 leaves 2 000× that, and is still
  10⁴× finer than what a 1e-3 perturbation of one tableau coefficient or schedule derivative does;
* ``float32``, ``sampled``: largest change 6.7e-7 absolute (the largest relative one, 1e-4, on an error of 1.8e-3).
  A float32 solve of ≤ 32 evaluations on states of size ≲ 5 can accumulate up to 32 × 6e-8 × 5 ≈ 1e-5 of round-off:
  that bound is the absolute part, 15× the largest change seen;
* ``adaptive``: no change on this machine's kernels, but 4.2 % on an Intel Xeon with MKL (dopri5, float32: the step
  sequence depends on round-off); 0.25 is 6× that, and a change of method moves an adaptive error by far more;
* ``adaptive_nfe``: no change seen; two rejected or extra steps of dopri5 are 12 evaluations;
* ``learned``: 1.3e-7 relative seen (the model retrained under each kernel); on the Intel Xeon below the earlier
  float32 tolerance of 2e-3; 1e-2 leaves 5× that.
"""

TIMING_THRESHOLD = 2.5
MEDIAN_TIMING_THRESHOLD = 1.10
"""A cell is slower past ×2.5 its baseline's normalised time, a run past ×1.10 in the median over its cells:
derived from repeated runs of the same code (``results/timing_spread.md``: worst cell ×1.83, median within
0.955–1.047) and from runs across executors and load (``results/timing_spread_executors.md``)."""
LOAD_DIFFERENCE = 0.5
"""Runs whose 1-minute load averages differ by more than this (half a core kept busy) are timed under different
load: their timing verdicts are warnings."""
ENVIRONMENT_KEYS = ("processor", "cpu_count", "cuda_devices", "python")


# ---------------------------------------------------------------------- classes and directions


def metric_names(row: pd.Series) -> list[str]:
    """The accuracy metrics compared, in a fixed order: counts, deterministic metrics, sampled ones."""
    return [name for name in (*COUNTS, *EXACT_METRICS, *SAMPLED_METRICS) if name in row.index]


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def metric_class(row: pd.Series, metric: str) -> str:
    """The class of ``metric`` in ``row`` (see the module docstring): what kind of computation produced it."""
    adaptive = _present(row.get("rtol"))
    if metric in COUNTS:
        return "adaptive_nfe" if adaptive else "nfe"
    if adaptive:
        return "adaptive"
    if str(row.get("field", "analytic")) != "analytic":
        return "learned"
    if metric in SAMPLED_METRICS:
        return "sampled"
    return "float64" if str(row.get("dtype")) == "float64" else "float32"


# ---------------------------------------------------------------------- what a comparison finds


@dataclass(frozen=True)
class Change:
    """One metric of one cell that moved beyond its tolerance; ``verdict`` is ``"worse"`` or ``"better"``."""

    metric: str
    metric_class: str
    before: float | str | None
    now: float | str | None
    verdict: str

    @property
    def relative(self) -> float:
        if not isinstance(self.before, float) or not isinstance(self.now, float):
            return math.nan
        return (self.now - self.before) / abs(self.before) if self.before else math.inf


@dataclass(frozen=True)
class CellChange:
    """A cell with at least one change: worse if any metric got worse, else better."""

    cell: str
    where: str
    changes: tuple[Change, ...]

    @property
    def verdict(self) -> str:
        return "worse" if any(change.verdict == "worse" for change in self.changes) else "better"


@dataclass(frozen=True)
class TimingChange:
    cell: str
    where: str
    before: float
    now: float
    verdict: str  # "slower" or "faster"

    @property
    def ratio(self) -> float:
        return self.now / self.before


@dataclass(frozen=True)
class Comparison:
    """What ``compare_runs`` found, and whether it fails as a gate (:attr:`failed`, :attr:`reasons`)."""

    cells: list[CellChange]  # in the sweep's order
    timing: list[TimingChange]
    median_timing_ratio: float | None
    added: list[str]  # descriptions
    missing: list[str]
    not_compared: list[str]  # ok in the baseline, skipped now
    warnings: list[str]
    checked_cells: int
    tolerances: dict[str, Tolerance]
    strict: bool = False
    allow_missing: bool = False
    timing_checked: bool = False
    timing_comparable: bool = True

    @property
    def worse(self) -> list[CellChange]:
        return [cell for cell in self.cells if cell.verdict == "worse"]

    @property
    def better(self) -> list[CellChange]:
        return [cell for cell in self.cells if cell.verdict == "better"]

    @property
    def slower(self) -> list[TimingChange]:
        return [change for change in self.timing if change.verdict == "slower"]

    @property
    def median_slower(self) -> bool:
        return self.median_timing_ratio is not None and self.median_timing_ratio > MEDIAN_TIMING_THRESHOLD

    @property
    def reasons(self) -> list[str]:
        """Why the gate fails; empty when it passes."""
        reasons = []
        if self.checked_cells == 0:
            reasons.append("no cell was compared: the two runs share no cell (a wrong baseline, or renamed cells?)")
        if self.worse:
            reasons.append(f"{len(self.worse)} cell(s) worse")
        if self.strict and self.better:
            reasons.append(f"{len(self.better)} cell(s) better (strict)")
        gone = len(self.missing) + len(self.not_compared)
        if gone and not self.allow_missing:
            reasons.append(f"{gone} baseline cell(s) not in the run (allow them with --allow-missing)")
        if self.timing_checked and self.timing_comparable and (self.slower or self.median_slower):
            reasons.append(f"timing: {len(self.slower)} cell(s) slower" + (", and the median" if self.median_slower else ""))
        return reasons

    @property
    def failed(self) -> bool:
        return bool(self.reasons)

    @property
    def table(self) -> pd.DataFrame:
        """One row per (cell, metric) that moved: cell, where, metric, class, baseline, now, relative change, verdict."""
        records = [(cell.cell, cell.where, change.metric, change.metric_class, change.before, change.now, change.relative,
                    change.verdict) for cell in self.cells for change in cell.changes]
        records += [(change.cell, change.where, "wall_s_normalised", "timing", change.before, change.now,
                     change.ratio - 1, change.verdict) for change in self.timing]
        return pd.DataFrame(records, columns=["cell", "where", "metric", "class", "baseline", "now", "relative", "verdict"])

    @property
    def regressions(self) -> pd.DataFrame:
        """The rows of :attr:`table` that fail the gate (worse, or slower where timings count)."""
        table = self.table
        failing = table["verdict"] == "worse"
        if self.timing_checked and self.timing_comparable:
            failing |= table["verdict"] == "slower"
        return table[failing]

    def as_dict(self) -> dict:
        """For machines (``--json``): everything the text says, as plain data."""
        def cell_record(cell: CellChange) -> dict:
            return {"cell": cell.cell, "where": cell.where, "verdict": cell.verdict,
                    "changes": [{"metric": c.metric, "class": c.metric_class, "baseline": c.before, "now": c.now,
                                 "relative": None if math.isnan(c.relative) else c.relative, "verdict": c.verdict}
                                for c in cell.changes]}
        return {
            "passed": not self.failed, "reasons": self.reasons, "checked_cells": self.checked_cells,
            "worse": [cell_record(c) for c in self.worse], "better": [cell_record(c) for c in self.better],
            "missing": self.missing, "not_compared": self.not_compared, "added": self.added, "warnings": self.warnings,
            "timing": {"checked": self.timing_checked, "comparable": self.timing_comparable,
                       "median_ratio": self.median_timing_ratio,
                       "cells": [{"cell": c.cell, "where": c.where, "baseline": c.before, "now": c.now, "ratio": c.ratio,
                                  "verdict": c.verdict} for c in self.timing]},
            "tolerances": {name: dataclasses.asdict(tolerance) for name, tolerance in self.tolerances.items()},
            "strict": self.strict, "allow_missing": self.allow_missing,
        }


# ---------------------------------------------------------------------- comparing


def _number(value) -> float | None:
    return float(value) if _present(value) else None


PARAMETERS = {"target": "target_params", "schedule": "schedule_params", "method": "method_params",
              "diffusion": "diffusion_params"}
"""A named thing and its parameter map, described together: ``gaussian(d=4)``."""


def _parameters(text) -> str:
    if not isinstance(text, str) or not text.startswith("{"):
        return ""
    values = json.loads(text)
    return f"({','.join(f'{key}={value}' for key, value in values.items())})" if values else ""


def _describer(*frames: pd.DataFrame):
    """``row → text``: target, schedule, method (each with its parameters) and dtype, plus every other spec field
    that varies across the cells of the two runs — enough to tell any two cells apart, and nothing more."""
    rows = pd.concat([frame for frame in frames if len(frame)], ignore_index=True)
    folded = set(PARAMETERS.values())
    varying = [name for name in SPEC_FIELDS if name in rows and name not in folded
               and (name in ALWAYS_DESCRIBED or rows[name].astype(str).nunique(dropna=False) > 1
                    or (name in PARAMETERS and PARAMETERS[name] in rows
                        and rows[PARAMETERS[name]].astype(str).nunique(dropna=False) > 1))]

    varying = [name for name in varying if name != "dtype"] + ["dtype"]  # the dtype last

    def describe(row: pd.Series) -> str:
        parts = []
        for name in varying:
            value = row.get(name)
            if isinstance(value, float) and value.is_integer() and name in ("steps", "seed", "n", "train_steps"):
                value = int(value)
            if not _present(value) or value == "" or (name not in ALWAYS_DESCRIBED and value == SPEC_DEFAULTS.get(name)):
                continue
            if name in PARAMETERS:
                value = f"{value}{_parameters(row.get(PARAMETERS[name]))}"
            elif isinstance(value, float):
                value = f"{value:g}"
            parts.append(str(value) if name in ALWAYS_DESCRIBED else f"{name}={value}")
        return " ".join(parts)

    return describe


def _environment(directory: Path) -> dict:
    path = directory / "environment.json"
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        return {}


def _environment_warnings(baseline: dict, run: dict) -> list[str]:
    if not baseline or not run:
        return [f"the {'baseline' if not baseline else 'run'} has no environment.json: differences of machine and "
                "packages cannot be checked"]
    warnings = []
    for name in ("torch", "numpy", "scipy", "torchdiffeq"):
        before, now = baseline.get("packages", {}).get(name), run.get("packages", {}).get(name)
        if before != now:
            warnings.append(f"{name} differs: baseline {before}, run {now}")
    for key in ENVIRONMENT_KEYS:
        if baseline.get(key) != run.get(key):
            warnings.append(f"{key} differs: baseline {baseline.get(key)!r}, run {run.get(key)!r}")
    return warnings


def _load(environment: dict) -> float | None:
    """The run's 1-minute load average: at its end where recorded (it covers the run), else at its start."""
    for key in ("load_average_end", "load_average"):
        value = environment.get(key)
        if isinstance(value, list) and value:
            return float(value[0])
    return None


def _timing_differences(baseline: dict, run: dict) -> list[str]:
    """Why the two runs' timings are not comparable: load, executor or threads per cell differ (where both runs
    recorded them)."""
    differences = []
    before, now = _load(baseline), _load(run)
    if before is not None and now is not None and abs(now - before) > LOAD_DIFFERENCE:
        differences.append(f"load average differs: baseline {before:.2f}, run {now:.2f}")
    for key, label in (("executor", "executor"), ("cell_threads", "threads per cell")):
        if baseline.get(key) is not None and run.get(key) is not None and baseline.get(key) != run.get(key):
            differences.append(f"{label} differs: baseline {baseline.get(key)!r}, run {run.get(key)!r}")
    return differences


def compare_runs(baseline_dir: str | Path, run_dir: str | Path, timing: bool = False,
                 timing_threshold: float = TIMING_THRESHOLD, tolerances: dict[str, Tolerance] | None = None,
                 strict: bool = False, allow_missing: bool = False) -> Comparison:
    """Compare the rows of ``run_dir`` with those of ``baseline_dir`` (see the module docstring). ``tolerances``
    override :data:`TOLERANCES` per class. Raises ``FileNotFoundError`` when either holds no rows."""
    baseline_dir, run_dir = Path(baseline_dir), Path(run_dir)
    baseline, run = load_rows(baseline_dir), load_rows(run_dir)
    for name, frame, directory in (("baseline", baseline, baseline_dir), ("run", run, run_dir)):
        if frame.empty:
            raise FileNotFoundError(f"the {name} {directory} holds no rows (rows.sqlite, rows.parquet or rows.csv)")
    tolerances = {**TOLERANCES, **(tolerances or {})}
    describe = _describer(baseline, run)
    before, now = baseline.drop_duplicates("cell").set_index("cell"), run.drop_duplicates("cell").set_index("cell")
    added = [describe(now.loc[cell]) for cell in now.index if cell not in before.index]
    missing = [describe(before.loc[cell]) for cell in before.index if cell not in now.index]
    changed, not_compared, checked = [], [], 0
    for cell in [cell for cell in now.index if cell in before.index]:
        old, new = before.loc[cell], now.loc[cell]
        if old["status"] == "ok" and new["status"] == "skipped":
            not_compared.append(f"{describe(new)} (skipped now: {new.get('error')})")
            continue
        checked += 1
        changes = _compare_cell(old, new, tolerances)
        if changes:
            changed.append(CellChange(cell, describe(new), tuple(changes)))
    baseline_environment, run_environment = _environment(baseline_dir), _environment(run_dir)
    warnings = _environment_warnings(baseline_environment, run_environment) + _network_changes(before, now)
    timing_changes, median, comparable = [], None, True
    if timing:
        differences = _timing_differences(baseline_environment, run_environment)
        comparable = not differences
        warnings += [f"{text}: timing verdicts are warnings only" for text in differences]
        timing_changes = [change for cell in now.index if cell in before.index
                          for change in _timing_change(cell, before.loc[cell], now.loc[cell], timing_threshold, describe)]
        median = _median_timing_ratio(before, now)
    return Comparison(changed, timing_changes, median, added, missing, not_compared, warnings, checked, tolerances,
                      strict, allow_missing, timing, comparable)


def _network_changes(before: pd.DataFrame, now: pd.DataFrame) -> list[str]:
    """A user's network that is not the baseline's (another ``model_fingerprint`` in the same cells): its metrics
    then measure another network, which the reader must know before reading them as a regression."""
    if "model_fingerprint" not in before or "model_fingerprint" not in now:
        return []
    shared = before.index.intersection(now.index)
    pairs = pd.DataFrame({"before": before.loc[shared, "model_fingerprint"], "now": now.loc[shared, "model_fingerprint"]})
    pairs = pairs.dropna()
    pairs = pairs[pairs["before"] != pairs["now"]]
    return [f"the network changed in {count} cell(s): model_fingerprint {old} → {new}"
            for (old, new), count in pairs.value_counts(sort=False).items()]


def _compare_cell(old: pd.Series, new: pd.Series, tolerances: dict[str, Tolerance]) -> list[Change]:
    if old["status"] != new["status"]:
        verdict = "better" if new["status"] == "ok" else "worse"  # now ok (it was not), or no longer ok
        return [Change("status", "status", str(old["status"]), f"{new['status']}: {new.get('error')}"
                       if new["status"] != "ok" else "ok", verdict)]
    if new["status"] != "ok":
        return []
    changes = []
    for metric in metric_names(new):
        before, now = _number(old.get(metric)), _number(new.get(metric))
        if before is None and now is None:
            continue
        kind = metric_class(new, metric)
        if before is None or now is None:  # a metric that appeared or disappeared: the cell computes something else
            changes.append(Change(metric, kind, before, now, "worse"))
            continue
        if tolerances[kind].admits(before, now):
            continue
        floor = _number(new.get(SAMPLED_METRICS[metric])) if metric in SAMPLED_METRICS else None
        if floor is not None and abs(now - before) <= floor:  # not resolvable by this metric's own sampling error
            continue
        changes.append(Change(metric, kind, before, now, "worse" if now > before else "better"))
    return changes


def _timing_change(cell: str, old: pd.Series, new: pd.Series, threshold: float, describe) -> list[TimingChange]:
    """The cell's timing verdict beyond ``threshold`` (described only then: most cells have none)."""
    before, now = _number(old.get("wall_s_normalised")), _number(new.get("wall_s_normalised"))
    if not before or not now or old.get("status") != "ok" or new.get("status") != "ok":
        return []
    ratio = now / before
    verdict = "slower" if ratio > threshold else "faster" if ratio < 1 / threshold else None
    return [TimingChange(cell, describe(new), before, now, verdict)] if verdict else []


def _median_timing_ratio(before: pd.DataFrame, now: pd.DataFrame) -> float | None:
    """The run as a whole: the median over shared ok cells of the normalised-time ratio."""
    if "wall_s_normalised" not in before or "wall_s_normalised" not in now:
        return None
    shared = before.index.intersection(now.index)
    ok = shared[(before.loc[shared, "status"] == "ok") & (now.loc[shared, "status"] == "ok")]
    ratios = (now.loc[ok, "wall_s_normalised"].astype(float) / before.loc[ok, "wall_s_normalised"].astype(float)).dropna()
    return float(ratios.median()) if len(ratios) else None


# ---------------------------------------------------------------------- text


def _value(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _change_text(change: Change) -> str:
    relative = change.relative
    moved = "" if math.isnan(relative) else f" ({relative:+.2g})"
    return f"{change.metric} {_value(change.before)} → {_value(change.now)}{moved}"


def format_comparison(comparison: Comparison, markdown: bool = False, limit: int = 200) -> str:
    """A summary line, warnings, one line per cell that moved (in the sweep's order, with the metrics that moved and
    their relative change), missing and added cells, and the verdict; Markdown for a CI log or a review comment."""
    summary = (f"{comparison.checked_cells} cells compared: {len(comparison.worse)} worse, {len(comparison.better)} "
               f"better, {len(comparison.missing) + len(comparison.not_compared)} missing, {len(comparison.added)} added")
    lines = [f"## fmbench compare\n\n{summary}\n" if markdown else summary]
    bullet = "- " if markdown else ""
    lines += [f"{bullet}warning: {warning}" for warning in comparison.warnings]
    if comparison.cells:
        if markdown:
            lines += ["", "| verdict | cell | what moved (relative change) |", "|---|---|---|"]
            lines += [f"| {cell.verdict} | {cell.where} | {'; '.join(map(_change_text, cell.changes))} |"
                      for cell in comparison.cells[:limit]]
        else:
            width = max(len(cell.where) for cell in comparison.cells[:limit])
            lines += [f"{cell.verdict:6s}  {cell.where.ljust(width)}  {'; '.join(map(_change_text, cell.changes))}"
                      for cell in comparison.cells[:limit]]
        if len(comparison.cells) > limit:
            lines.append(f"... and {len(comparison.cells) - limit} more cell(s)")
    if comparison.timing_checked:
        median = comparison.median_timing_ratio
        lines.append(f"{bullet}timing: median normalised-time ratio {median:.3f} (threshold {MEDIAN_TIMING_THRESHOLD})"
                     if median is not None else f"{bullet}timing: no shared timed cell")
        lines += [f"{bullet}{change.verdict} ×{change.ratio:.2f}  {change.where}" for change in comparison.timing[:limit]]
    for label, cells in (("missing from the run", comparison.missing + comparison.not_compared),
                         ("added in the run", comparison.added)):
        if cells:
            lines.append(f"{bullet}{len(cells)} cell(s) {label}:")
            lines += [f"  {'- ' if markdown else ''}{where}" for where in cells[:limit]]
            if len(cells) > limit:
                lines.append(f"  ... and {len(cells) - limit} more")
    reasons = comparison.reasons
    lines.append(f"{'**' if markdown else ''}{'FAIL: ' + '; '.join(reasons) if reasons else 'PASS'}{'**' if markdown else ''}")
    return "\n".join(lines) + "\n"


def parse_tolerance(text: str) -> tuple[str, Tolerance]:
    """``CLASS=RELATIVE[,ABSOLUTE]`` (e.g. ``adaptive=0.3`` or ``float32=1e-3,1e-6``) → (class, tolerance); the
    absolute part defaults to the class's own."""
    name, _, value = text.partition("=")
    if name not in TOLERANCES or not value:
        raise ValueError(f"--tolerance takes CLASS=RELATIVE[,ABSOLUTE] with CLASS one of {', '.join(TOLERANCES)}; got {text!r}")
    relative, _, absolute = value.partition(",")
    try:
        numbers = float(relative), float(absolute) if absolute else TOLERANCES[name].absolute
    except ValueError:
        raise ValueError(f"--tolerance {text!r}: RELATIVE and ABSOLUTE must be numbers") from None
    if not all(math.isfinite(number) and number >= 0 for number in numbers):
        raise ValueError(f"--tolerance {text!r}: RELATIVE and ABSOLUTE must be finite and ≥ 0")
    return name, Tolerance(*numbers)
