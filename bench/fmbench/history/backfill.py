"""Seeding a history from past commits: each commit checked out clean in a ``git worktree`` of its own, the preset
run there with that commit's own code, and the run tracked.

    for each commit of ``git rev-list --reverse --first-parent RANGE``, interleaved (see below):
        skip it if the history already holds its record for this preset, machine, executor and threads;
        git worktree add --detach WORK/worktrees/<commit> <commit>
        PYTHONPATH=<worktree>:<worktree>/bench python -m fmbench run PRESET --out WORK/runs/<commit> --quiet \
            --cache WORK/runs/<commit>-cache
        append the run's record (read by this fmbench), then remove the worktree

**Interleaved.** On a shared machine speed drifts over minutes (measured here: the ci preset's median cell time
4.7–5.0 ms in one quarter hour and 6.0–7.5 ms in another, idle); run oldest first, such a drift becomes a step
at whichever commit the backfill reached when it came. So the commits run in van der Corput order (0, ½, ¼, ¾, …
of the range): every stretch of time samples the whole range, and a drift adds noise instead of a step.
**Resumable.** A commit is skipped once its record is in the history, and a run directory left by an interrupted
backfill is resumed by that commit's own ``fmbench run`` (it skips the cells already saved). **Clean.** The
worktree holds the commit's tracked files only — not the working tree's edits; the run records the worktree's
commit and ``git_dirty = false``; its learned models are trained afresh into a cache of its own (a model cached by
another commit's code is not reused). **Faults cost one commit.** A commit whose run cannot start (exit 2 or 3, or it
ran past ``timeout_s``) is reported and skipped; the others go on. The interpreter is this one: the past commits
run against the installed packages (torch, the peers) of today's environment, and every record is named for this
machine (:func:`fmbench.history.record.local_machine_name`, or ``machine``), so that a past commit's run, which
recorded less about its machine, joins the same series.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fmbench.history.record import local_machine_name, run_record
from fmbench.history.store import append_record, read_history, record_identity

__all__ = ["BackfillResult", "backfill", "commits_in", "every", "run_at_commit"]

EXIT_CELLS_FAILED = 1  # fmbench run's status when some cells failed: the run is still a measurement


@dataclass
class BackfillResult:
    tracked: list[str]
    skipped: list[str]  # already in the history
    failed: dict[str, str]  # commit → why


def _git(arguments: list[str], repository: Path) -> str:
    completed = subprocess.run(["git", *arguments], cwd=repository, capture_output=True, text=True)
    if completed.returncode != 0:
        raise ValueError(f"git {' '.join(arguments)} failed in {repository}: {completed.stderr.strip()}")
    return completed.stdout


def commits_in(revision_range: str, repository: str | Path = ".") -> list[str]:
    """The full hashes of ``revision_range`` (``A..B``, or ``-N`` for the last N commits of HEAD), oldest first,
    along first parents."""
    repository = Path(repository)
    if revision_range.startswith("-") and revision_range[1:].isdigit():
        arguments = ["rev-list", "--first-parent", f"--max-count={revision_range[1:]}", "HEAD"]
        return list(reversed(_git(arguments, repository).split()))
    return _git(["rev-list", "--reverse", "--first-parent", revision_range], repository).split()


def every(commits: list[str], step: int) -> list[str]:
    """Every ``step``-th of ``commits`` (oldest first) counting back from the newest, which is always kept: a sparse
    backfill, whose steps :mod:`fmbench.history.bisect` narrows later."""
    if step < 1:
        raise ValueError(f"--every must be a whole number ≥ 1, got {step}")
    return commits[::-1][::step][::-1]


def radical_inverse(index: int) -> float:
    """The van der Corput radical inverse in base 2: ``index``'s binary digits mirrored about the point
    (1 → 0.5, 2 → 0.25, 3 → 0.75, …)."""
    value, weight = 0.0, 0.5
    while index:
        value += weight * (index & 1)
        index, weight = index >> 1, weight / 2
    return value


def interleaved(commits: list[str]) -> list[str]:
    """``commits`` in the order they are run: by the radical inverse of their position (0, n/2, n/4, 3n/4, …), so
    that any stretch of the run's time holds commits from all over the range and a drift of the machine's speed
    while the backfill runs does not fall on a range of commits as a step."""
    return [commits[index] for index in sorted(range(len(commits)), key=radical_inverse)]


def run_at_commit(repository: Path, commit: str, preset: str, work: Path, timeout_s: float | None = None,
                  threads: int = 1) -> Path:
    """Run ``preset`` with ``commit``'s code in a clean worktree; the run directory (kept for resuming)."""
    worktree, run = work / "worktrees" / commit, work / "runs" / commit
    if worktree.exists():
        _git(["worktree", "remove", "--force", str(worktree)], repository)
    _git(["worktree", "add", "--detach", "--force", str(worktree), commit], repository)
    try:
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(worktree), str(worktree / "bench")])}
        command = [sys.executable, "-m", "fmbench", "run", preset, "--out", str(run), "--quiet",
                   "--threads", str(threads), "--cache", str(run.with_name(run.name + "-cache"))]
        completed = subprocess.run(command, cwd=worktree, env=environment, capture_output=True, text=True,
                                   timeout=timeout_s)
        if completed.returncode not in (0, EXIT_CELLS_FAILED):
            tail = (completed.stderr or completed.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"fmbench run exited {completed.returncode}: {' / '.join(tail)}")
    finally:
        _git(["worktree", "remove", "--force", str(worktree)], repository)
    return run


def backfill(commits: list[str], preset: str, history: str | Path, repository: str | Path = ".",
             work: str | Path | None = None, machine: str | None = None, timeout_s: float | None = None,
             progress: Callable[[str], None] = print, rerun: bool = False, in_order: bool = False,
             runner: Callable[..., Path] = run_at_commit) -> BackfillResult:
    """Track ``preset`` at each of ``commits`` (oldest first) into ``history``: see the module docstring. With
    ``rerun``, commits already tracked run again (another record: a timing step is confirmed, or not, by the
    median of several runs). The commits run :func:`interleaved` (``in_order``: oldest first); the history puts
    them in commit order whatever order they ran in. ``runner(repository, commit, preset, work, timeout_s)``
    returns the run directory (replaced in tests)."""
    repository = Path(repository).resolve()
    work = Path(work) if work is not None else repository / "results" / "runs" / "backfill" / preset
    history = Path(history)
    machine_key = machine or local_machine_name()
    done = {record_identity(record)[:4] for record in read_history(history)} if history.exists() else set()
    result = BackfillResult([], [], {})
    for number, commit in enumerate(commits if in_order else interleaved(commits), start=1):
        short = commit[:10]
        if ("sweep", preset, commit, machine_key) in done and not rerun:
            result.skipped.append(commit)
            progress(f"[{number}/{len(commits)}] {short}: already in {history}")
            continue
        progress(f"[{number}/{len(commits)}] {short}: running {preset} …")
        try:
            run = runner(repository, commit, preset, work, timeout_s)
            record = run_record(run, preset=preset, machine=machine_key, repository=repository)
        except (RuntimeError, ValueError, OSError, subprocess.SubprocessError) as error:
            result.failed[commit] = str(error)
            progress(f"[{number}/{len(commits)}] {short}: failed — {error}")
            continue
        if record["commit"] != commit:
            result.failed[commit] = f"the run recorded commit {record['commit']}, not {commit}"
            progress(f"[{number}/{len(commits)}] {short}: failed — {result.failed[commit]}")
            continue
        append_record(history, record)
        done.add(record_identity(record)[:4])
        shutil.rmtree(run, ignore_errors=True)
        shutil.rmtree(run.with_name(run.name + "-cache"), ignore_errors=True)
        result.tracked.append(commit)
        progress(f"[{number}/{len(commits)}] {short}: tracked ({len(record['cells'])} cells)")
    return result
