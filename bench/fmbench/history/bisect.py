"""Narrowing a detected step to one commit: the preset run at commits between the step's last point on the old
level and its first on the new one, by bisection.

A history point is a commit that was measured; between two measured commits may lie many that were not (a
backfill that sampled every tenth commit, or commits pushed together). :func:`narrow` halves the unmeasured span:
the middle commit is run (:func:`fmbench.history.backfill.backfill`, so its record joins the history), its value
placed on the old level or the new — within the class's tolerance of the old level for an exact series, nearer
the old level than the new for a noisy one (in log units for timings; by the median of three runs, since one run
of a timing on a shared machine can land on the wrong level) — and the span halved, until the first
commit on the new level is found: ⌈log₂(m + 1)⌉ runs for m commits in between.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fmbench.compare import TOLERANCES
from fmbench.history.backfill import backfill, commits_in, run_at_commit
from fmbench.history.record import local_machine_name
from fmbench.history.series import build_series
from fmbench.history.steps import DEFAULT_FALSE_ALARM, Step, detect_steps
from fmbench.history.store import read_history

__all__ = ["Bisection", "bisect_step", "narrow", "on_old_level"]


@dataclass
class Bisection:
    step: Step
    first_new: str  # the first commit on the new level
    last_old: str
    measured: list[tuple[str, float, bool]]  # (commit, value, on the old level?) in the order run

    def __str__(self) -> str:
        lines = [f"{self.step.series.key.metric} of {self.step.series.label} [{self.step.series.key.cell}]: "
                 f"{self.step.before:.6g} → {self.step.after:.6g}"]
        lines += [f"  ran {commit[:10]}: {value:.6g} ({'old' if old else 'new'} level)"
                  for commit, value, old in self.measured]
        if not self.measured:
            lines.append(f"{self.last_old[:10]} and {self.first_new[:10]} are consecutive commits: nothing to narrow")
        lines.append(f"first commit on the new level: {self.first_new} (last on the old: {self.last_old[:10]})")
        return "\n".join(lines)


def on_old_level(step: Step, value: float) -> bool:
    """Whether ``value`` belongs to the step's old level (module docstring)."""
    if step.kind == "tolerance":
        return TOLERANCES[step.series.metric_class].admits(step.before, value)
    if step.series.is_timing and min(value, step.before, step.after) > 0:
        value, before, after = math.log(value), math.log(step.before), math.log(step.after)
    else:
        before, after = step.before, step.after
    return abs(value - before) < abs(value - after)


def narrow(between: list[str], measure: Callable[[str], float], old: Callable[[float], bool]) -> tuple[int, list]:
    """Bisect ``between`` (commits after the last old one, oldest first; its last is on the new level): the index of
    the first on the new level, and the (commit, value, old) of each one measured."""
    low, high, measured = -1, len(between) - 1, []
    while high - low > 1:
        middle = (low + high) // 2
        value = measure(between[middle])
        is_old = old(value)
        measured.append((between[middle], value, is_old))
        low, high = (middle, high) if is_old else (low, middle)
    return high, measured


def bisect_step(history: str | Path, cell: str, metric: str, machine: str | None = None, preset: str = "ci",
                step_at: str | None = None, runs: int | None = None, work: str | Path | None = None,
                repository: str | Path = ".",
                false_alarm: float = DEFAULT_FALSE_ALARM, progress: Callable[[str], None] = print,
                runner: Callable[..., Path] = run_at_commit) -> Bisection:
    """Narrow a step of series (``cell``, ``metric``) on ``machine`` (default: this one) to one commit: the step
    whose first commit starts with ``step_at``, else the largest (in relative size). Each commit in between is run
    ``runs`` times (default 1 for an exact series, 3 for a noisy one) and placed by the median of its runs: one run
    of a timing on a shared machine can sit on the wrong level."""
    machine = machine or local_machine_name()

    def series_now():
        found = [one for one in build_series(read_history(history), metric=metric)
                 if one.key.cell == cell and one.key.machine == machine and one.key.preset == preset]
        if not found:
            raise ValueError(f"history {history} has no series {metric!r} of cell {cell!r} on {machine!r} for preset "
                             f"{preset!r} (fmbench history {history} lists the steps with their cells)")
        return found[0]

    steps = detect_steps(series_now(), false_alarm)
    if not steps:
        raise ValueError(f"no step detected in {metric!r} of cell {cell!r} on {machine!r}: nothing to bisect")
    if step_at is not None:
        chosen = [one for one in steps if one.commit.startswith(step_at)]
        if not chosen:
            raise ValueError(f"no step of {metric!r} in cell {cell!r} begins at {step_at!r}; its steps begin at "
                             + ", ".join(one.commit[:10] for one in steps))
        step = chosen[0]
    else:
        step = max(steps, key=lambda one: abs(one.relative))
    between = commits_in(f"{step.previous_commit}..{step.commit}", repository)
    if not between or between[-1] != step.commit:
        raise ValueError(f"{step.commit[:10]} is not a first-parent descendant of {step.previous_commit[:10]}")

    wanted = runs if runs is not None else (1 if step.kind == "tolerance" else 3)
    if wanted < 1:
        raise ValueError(f"runs must be ≥ 1, got {wanted}")

    def measure(commit: str) -> float:
        backfill([commit], preset, history, repository=repository, work=work, machine=machine, progress=progress,
                 runner=runner)
        for _ in range(wanted):
            points = {point.commit: point for point in series_now().points}
            if commit not in points:
                raise ValueError(f"the run at {commit[:10]} has no {metric!r} for cell {cell!r} (failed there?)")
            if points[commit].runs >= wanted:
                break
            backfill([commit], preset, history, repository=repository, work=work, machine=machine,
                     progress=progress, runner=runner, rerun=True)
        return series_now().points[series_now().commits.index(commit)].value

    index, measured = narrow(between, measure, lambda value: on_old_level(step, value))
    last_old = between[index - 1] if index > 0 else step.previous_commit
    return Bisection(step, between[index], last_old, measured)
