"""The history commands of the ``fmbench`` command line: ``track``, ``backfill``, ``history``, ``bisect``, ``publish``.

    fmbench track RUN [--history FILE] [--preset NAME] [--machine NAME]
    fmbench backfill RANGE [--preset ci] [--history FILE] [--work DIR] [--machine NAME] [--timeout S] [--every K]
                     [--rerun] [--in-order]
    fmbench history FILE [--metric NAME] [--group TEXT] [--false-alarm P] [--json]
    fmbench bisect FILE --cell KEY --metric NAME [--step COMMIT] [--runs N] [--machine NAME] [--preset ci] [--work DIR]
    fmbench publish FILE DIR [--commit-url URL]

``RUN`` is a run directory (or a committed baseline) or a stored pytest-benchmark JSON file; ``RANGE`` is
``A..B`` or ``-N`` (the last N commits). The history file defaults to ``results/history/<preset>.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
COMMANDS = ("track", "backfill", "history", "bisect", "publish")


def default_history(preset: str) -> Path:
    return Path("results") / "history" / f"{preset}.jsonl"


def add_parsers(commands) -> None:
    track = commands.add_parser("track", help="append a run's summary to a history file (one line per run)")
    track.add_argument("run", type=Path, help="run directory, baseline, or pytest-benchmark JSON file")
    track.add_argument("--history", type=Path, default=None, help="history file (default results/history/<preset>.jsonl)")
    track.add_argument("--preset", default=None, help="the series' preset name (default: the run directory's name)")
    track.add_argument("--machine", default=None, help="machine name (default: processor, CPU count, kernels, GPUs)")
    backfill = commands.add_parser("backfill", help="run a preset at past commits (clean git worktrees) and track "
                                   "each; resumable")
    backfill.add_argument("range", help="commits: A..B, or -N for the last N commits of HEAD")
    backfill.add_argument("--preset", default="ci", help="the preset each commit runs (default ci)")
    backfill.add_argument("--history", type=Path, default=None, help="history file (default results/history/<preset>.jsonl)")
    backfill.add_argument("--work", type=Path, default=None, help="worktrees and runs (default results/runs/backfill/<preset>)")
    backfill.add_argument("--machine", default=None, help="machine name (default: processor, CPU count, kernels, GPUs)")
    backfill.add_argument("--timeout", type=float, default=None, metavar="S", help="seconds allowed per commit")
    backfill.add_argument("--rerun", action="store_true",
                          help="run commits already in the history again (one more record each: their points become "
                          "the median of their runs)")
    backfill.add_argument("--in-order", action="store_true",
                          help="run the commits oldest first (default: interleaved, so a drift of the machine's speed "
                          "does not land on a range of commits)")
    backfill.add_argument("--every", type=int, default=1, metavar="K",
                          help="only every K-th commit of the range, counting back from its newest (kept)")
    history = commands.add_parser("history", help="the steps detected in each series of a history file")
    history.add_argument("file", type=Path)
    history.add_argument("--metric", default=None, help="only this metric (e.g. w2_exact_law, wall_s_normalised)")
    history.add_argument("--group", default=None, help="only groups containing this text (e.g. 'gmm')")
    history.add_argument("--false-alarm", type=float, default=None, metavar="P",
                         help="noisy series: the chance of a step reported on pure noise, per series (default 0.001)")
    history.add_argument("--json", action="store_true", help="print the steps as JSON")
    bisect = commands.add_parser("bisect", help="narrow a detected step of one series to one commit, running the "
                                 "preset at commits in between (tracked into the history)")
    bisect.add_argument("file", type=Path)
    bisect.add_argument("--cell", required=True, help="the cell's key (fmbench history prints it)")
    bisect.add_argument("--metric", required=True)
    bisect.add_argument("--step", default=None, metavar="COMMIT",
                        help="the step beginning at this commit (a prefix; default: the series' largest step)")
    bisect.add_argument("--runs", type=int, default=None, metavar="N",
                        help="runs per commit, placed by their median (default 1 for an exact series, 3 for a noisy one)")
    bisect.add_argument("--machine", default=None, help="the series' machine (default: this one)")
    bisect.add_argument("--preset", default="ci", help="the series' preset, run at the commits in between")
    bisect.add_argument("--work", type=Path, default=None, help="worktrees and runs (default results/runs/backfill/<preset>)")
    publish = commands.add_parser("publish", help="write a static dashboard (opens from disk) of a history file")
    publish.add_argument("file", type=Path)
    publish.add_argument("directory", type=Path)
    publish.add_argument("--commit-url", default=None, metavar="URL",
                         help="link commits to URL with {commit} replaced, e.g. https://github.com/o/r/commit/{commit}")
    publish.add_argument("--false-alarm", type=float, default=None, metavar="P",
                         help="noisy series: the chance of a step reported on pure noise, per series (default 0.001)")


def _error(message: str, status: int = EXIT_BAD_INPUT) -> int:
    print(f"fmbench: error: {message}", file=sys.stderr)
    return status


def _false_alarm(value: float | None):
    from fmbench.history.steps import DEFAULT_FALSE_ALARM

    if value is None:
        return DEFAULT_FALSE_ALARM
    if not 0 < value < 0.5:
        raise ValueError(f"--false-alarm must be a probability in (0, 0.5), got {value:g}")
    return value


def run_command(args: argparse.Namespace) -> int:
    try:
        return {"track": _track, "backfill": _backfill, "history": _history, "bisect": _bisect,
                "publish": _publish}[args.command](args)
    except (ValueError, FileNotFoundError) as error:
        return _error(str(error))


def _track(args) -> int:
    from fmbench.history.record import benchmark_record, run_record
    from fmbench.history.store import append_record

    if args.run.is_file() and args.run.suffix == ".json":
        record = benchmark_record(args.run, preset=args.preset or "bench", machine=args.machine)
    elif args.run.is_dir():
        record = run_record(args.run, preset=args.preset, machine=args.machine)
    else:
        return _error(f"{args.run} is neither a run directory nor a pytest-benchmark JSON file")
    history = args.history or default_history(record["preset"])
    append_record(history, record)
    print(f"tracked {len(record['cells'])} cells of {record['preset']} at {str(record['commit'])[:10]} on "
          f"{record['machine']} -> {history}")
    return EXIT_OK


def _backfill(args) -> int:
    from fmbench.history.backfill import backfill, commits_in, every

    commits = every(commits_in(args.range), args.every)
    if not commits:
        return _error(f"the range {args.range!r} holds no commits")
    history = args.history or default_history(args.preset)
    result = backfill(commits, args.preset, history, work=args.work, machine=args.machine, timeout_s=args.timeout,
                      progress=lambda line: print(line, flush=True), rerun=args.rerun,
                      in_order=args.in_order)
    print(f"{len(result.tracked)} tracked, {len(result.skipped)} already there, {len(result.failed)} failed -> {history}")
    return EXIT_FAILED if result.failed else EXIT_OK


def _history(args) -> int:
    from fmbench.history.series import build_series
    from fmbench.history.steps import detect_all, format_steps
    from fmbench.history.store import read_history

    records = read_history(args.file)
    series = build_series(records, metric=args.metric, group=args.group)
    found = detect_all(series, false_alarm=_false_alarm(args.false_alarm))
    if args.json:
        print(json.dumps([step.as_dict() for step in found], indent=1))
    else:
        print(format_steps(series, found, _false_alarm(args.false_alarm)), end="")
    return EXIT_OK


def _bisect(args) -> int:
    from fmbench.history.bisect import bisect_step

    outcome = bisect_step(args.file, cell=args.cell, metric=args.metric, machine=args.machine, preset=args.preset,
                          step_at=args.step, runs=args.runs, work=args.work, progress=lambda line: print(line, flush=True))
    print(outcome)
    return EXIT_OK


def _publish(args) -> int:
    from fmbench.history.publish import publish
    from fmbench.history.store import read_history

    pages = publish(read_history(args.file), args.directory, commit_url=args.commit_url,
                    false_alarm=_false_alarm(args.false_alarm))
    print(f"{len(pages)} pages -> {args.directory / 'index.html'}")
    return EXIT_OK
