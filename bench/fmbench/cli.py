"""The ``fmbench`` command.

    fmbench run [PRESET_OR_TOML] [--out DIR] [--workers N | --dask local[:N] | --dask ADDRESS]
                [--threads T] [--time-limit S] [--retry-failed] [--cache DIR] [--force] [--quiet] [--dry-run]
    fmbench report RUN_DIR [--to DIR]
    fmbench repair RUN_DIR
    fmbench list [--json]
    fmbench export RUN_DIR --csv FILE
    fmbench compare BASELINE_DIR RUN_DIR [--markdown FILE] [--json FILE] [--strict] [--allow-missing]
                    [--tolerance CLASS=REL[,ABS]] [--timing] [--threshold X]
    fmbench baseline RUN_DIR DIR
    fmbench install-peers [PIP OPTIONS]
    fmbench track | backfill | history | bisect | publish …   (tracking across commits: fmbench.history.commands)

``run`` checks the whole sweep, runs the cells not yet saved ``ok`` in ``DIR`` (default
``results/runs/<preset>``; a rerun resumes, retrying failed cells — once only for a cell whose process died or that hit
its time limit, :mod:`fmbench.faults`), and writes ``DIR/report.md`` whatever failed.

Exit status, every command:

===== ==============================================================================================================
0     done (every cell ok or skipped; a comparison passed)
1     cells failed (``run``); a cell got worse, nothing was compared, or baseline cells are missing (``compare``)
2     the command line or the sweep is wrong: nothing ran (every problem that can be known before a cell runs)
3     the run's store cannot be used: damaged (``fmbench repair DIR``), locked by another run, read-only, or the disk
      is full (every saved row is kept; the same command resumes once there is space)
130   interrupted by Ctrl-C or SIGTERM: what finished is saved, and the same command resumes
141   the output's reader went away (``fmbench list | head``), as for a process ended by SIGPIPE
===== ==============================================================================================================

``report``, ``export`` and ``compare`` only read a run, so they work on read-only media (``report --to DIR`` writes the
report elsewhere). ``compare`` says how each metric is checked (``fmbench.compare``); ``baseline`` writes the text files
a committed baseline needs.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from fmbench.faults import DEFAULT_TIME_LIMIT_S  # imports no torch: the parser and --help stay light
from fmbench.history import commands as history_commands

EXIT_OK, EXIT_CELLS_FAILED, EXIT_BAD_INPUT, EXIT_STORE, EXIT_INTERRUPTED, EXIT_CLOSED_PIPE = 0, 1, 2, 3, 130, 141


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fmbench", description="Benchmark flow-matching and diffusion samplers "
                                     "against exact analytic truth.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a sweep (resumes; retries failed cells) and write its report")
    run.add_argument("sweep", nargs="?", default="default", help="preset name (fmbench list) or path to a TOML file")
    run.add_argument("--out", type=Path, default=None, help="run directory (default: results/runs/<preset name>)")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=1, help="worker processes; 1 (default) runs cells in this process")
    where.add_argument("--dask", default=None, metavar="local[:N]|ADDRESS",
                       help="run on Dask: a LocalCluster of N workers, or a running scheduler's address (extra: dask)")
    run.add_argument("--threads", type=int, default=1, help="torch threads per cell (default 1; see README, Threads)")
    run.add_argument("--time-limit", type=float, default=None, metavar="S",
                     help="each cell's time limit in seconds (default: the sweep file's time_limit_s, else "
                     f"{DEFAULT_TIME_LIMIT_S:g}); a cell past it is a failed row")
    run.add_argument("--retry-failed", action="store_true",
                     help="also run the cells kept failed after their process died or they hit the time limit twice")
    run.add_argument("--cache", type=Path, default=None, help="learned-model cache (default: <out>/../cache)")
    run.add_argument("--force", action="store_true", help="start afresh if --out holds another sweep (kept aside)")
    run.add_argument("--quiet", action="store_true", help="no progress output")
    run.add_argument("--dry-run", action="store_true",
                     help="check the sweep and print its cell count and an estimated time (from the committed "
                          "baselines' measured cell costs, scaled to this machine); run nothing")
    report = commands.add_parser("report", help="(re)write the report of a finished or partial run")
    report.add_argument("out", type=Path)
    report.add_argument("--to", type=Path, default=None, metavar="DIR",
                        help="write the report into DIR instead of the run directory (e.g. a run on read-only media)")
    repair = commands.add_parser("repair", help="rebuild a damaged rows.sqlite from the rows it can still read and from "
                                 "rows.parquet (the damaged file is kept aside)")
    repair.add_argument("out", type=Path)
    listing = commands.add_parser("list", help="what can be swept: targets, schedules, methods, grids, diffusions, "
                                  "objectives, presets (peers marked where not installed)")
    listing.add_argument("--json", action="store_true", help="print it as JSON")
    export = commands.add_parser("export", help="write a run's rows, in sweep order, to a CSV file")
    export.add_argument("out", type=Path)
    export.add_argument("--csv", type=Path, required=True)
    install_peers = commands.add_parser("install-peers", help="install the peer libraries beside the pinned torch "
                                        "(without their declared requirements; README, Peers)")
    install_peers.add_argument("pip_args", nargs=argparse.REMAINDER, help="extra pip options")
    compare = commands.add_parser(
        "compare", help="check a run against a baseline, cell by cell; exit 1 when a cell got worse, nothing was "
        "compared or baseline cells are missing",
        description="Check RUN against BASELINE (a run directory, or a baseline written by `fmbench baseline`). Exit 0: "
        "pass; 1: a metric got worse (or, with --strict, moved at all), no cell was compared, or baseline cells are "
        "missing from the run (unless --allow-missing); 2: bad input. Tolerance classes: "
        "nfe, adaptive_nfe, float64, float32, adaptive, learned, sampled (fmbench.compare.TOLERANCES).")
    compare.add_argument("baseline", type=Path)
    compare.add_argument("run", type=Path)
    compare.add_argument("--markdown", type=Path, default=None, help="also write the comparison as Markdown to this file")
    compare.add_argument("--json", type=Path, default=None, metavar="FILE",
                         help="also write the comparison as JSON to FILE ('-': standard output, instead of the text)")
    compare.add_argument("--strict", action="store_true", help="fail on any change beyond tolerance, better ones too")
    compare.add_argument("--allow-missing", action="store_true", help="pass although baseline cells are missing from the run")
    compare.add_argument("--tolerance", action="append", default=[], metavar="CLASS=REL[,ABS]",
                         help="override one class's tolerance (repeatable), e.g. --tolerance adaptive=0.5")
    compare.add_argument("--timing", action="store_true", help="also check machine-normalised timings")
    compare.add_argument("--threshold", type=float, default=None, help="per-cell timing ratio counted as slower (default 2.5)")
    baseline = commands.add_parser("baseline", help="write a run's baseline for committing: rows.csv, sweep.json, "
                                   "environment.json (text only)")
    baseline.add_argument("run", type=Path)
    baseline.add_argument("directory", type=Path)
    history_commands.add_parsers(commands)
    return parser


def _error(message: str, status: int = EXIT_BAD_INPUT) -> int:
    print(f"fmbench: error: {message}", file=sys.stderr)
    return status


def _terminate(signum, frame) -> None:
    """SIGTERM stops a command as Ctrl-C does: what finished is saved, and the run resumes."""
    raise KeyboardInterrupt


def _run(args) -> int:
    from fmbench.sweepfile import SweepError

    try:
        return _run_checked(args)
    except SweepError as error:
        return _error(str(error))


def _run_checked(args) -> int:
    from fmbench.sweepfile import check_cells, expand, load_sweep  # the checks first: the report's stack after

    if args.workers < 1:
        return _error(f"--workers must be ≥ 1, got {args.workers}")
    cores = os.cpu_count() or 1
    if not 1 <= args.threads <= cores:
        return _error(f"--threads must be between 1 and this machine's {cores} CPU(s), got {args.threads}")
    if args.time_limit is not None and not 0 < args.time_limit < float("inf"):
        return _error(f"--time-limit must be a number of seconds > 0, got {args.time_limit:g}")
    # A process started in the background by a non-interactive shell inherits SIGINT as ignored, and Python keeps it
    # so: restore the default, so that Ctrl-C or `kill -INT` always stops the sweep after saving what finished.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    config = load_sweep(args.sweep)
    time_limit_s = args.time_limit or config.get("time_limit_s") or DEFAULT_TIME_LIMIT_S
    cells = expand(config)
    check_cells(cells, tuple(config.get("plugins", ())))
    out = args.out or Path("results") / "runs" / Path(args.sweep).stem
    if args.dry_run:
        from fmbench.estimate import estimate_sweep, saved_cells

        workers = args.workers if args.dask is None else 1
        print(estimate_sweep(cells, saved_cells(out), threads=args.threads, workers=workers))
        return EXIT_OK
    from fmbench.reporting import write_report
    from fmbench.sweep import open_executor, run_sweep

    with open_executor(args.workers, args.dask, time_limit_s) as (executor, description, parallelism):
        outcome = run_sweep(cells, out, executor=executor, progress=not args.quiet, force=args.force,
                            cache_dir=args.cache, threads=args.threads, executor_description=description,
                            plugins=config.get("plugins", ()), parallelism=parallelism, time_limit_s=time_limit_s,
                            retry_failed=args.retry_failed)
    report = write_report(out)
    rows = outcome.rows
    failed = int((rows["status"] == "failed").sum()) if len(rows) else 0
    skipped = int((rows["status"] == "skipped").sum()) if len(rows) else 0
    kept = f", {outcome.kept_failed} of them kept failed: --retry-failed runs them again" if outcome.kept_failed else ""
    print(f"{len(rows)} of {len(cells)} cells saved ({failed} failed{kept}, {skipped} skipped); report: {report}")
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_CELLS_FAILED if failed else EXIT_OK


def _list(args) -> int:
    import json

    from fmbench.listing import catalogue, format_catalogue

    entries = catalogue()
    print(json.dumps(entries, indent=1, default=repr) if args.json else format_catalogue(entries), end="\n" if args.json else "")
    return EXIT_OK


def _report(args) -> int:
    from fmbench.reporting import write_report

    if not args.out.is_dir():
        return _error(f"{args.out} is not a run directory")
    if args.to is None and not os.access(args.out, os.W_OK):
        return _error(f"{args.out} cannot be written (read-only?): write the report elsewhere with --to DIR", EXIT_STORE)
    print(write_report(args.out, to=args.to))
    return EXIT_OK


def _repair(args) -> int:
    from fmbench.store import repair

    if not args.out.is_dir():
        return _error(f"{args.out} is not a run directory")
    done = repair(args.out)
    if done["whole"]:
        print(f"{args.out / 'rows.sqlite'} is whole (SQLite's quick_check: ok): nothing to repair")
        return EXIT_OK
    kept = f"; the damaged file is kept as {done['kept_as']}" if done["kept_as"] else ""
    print(f"rebuilt {args.out / 'rows.sqlite'}: {done['from_sqlite']} row(s) read from the old store, "
          f"{done['from_parquet']} more from rows.parquet{kept}. Run the sweep again to run the rest.")
    return EXIT_OK


def _export(args) -> int:
    from fmbench.store import load_rows

    if not args.out.is_dir():
        return _error(f"{args.out} is not a run directory")
    rows = load_rows(args.out)
    if rows.empty:
        return _error(f"{args.out} holds no rows")
    rows.to_csv(args.csv, index=False)
    print(f"{len(rows)} rows -> {args.csv}")
    return EXIT_OK


def _compare(args) -> int:
    import json

    from fmbench.compare import TIMING_THRESHOLD, compare_runs, format_comparison, parse_tolerance

    try:
        tolerances = dict(parse_tolerance(text) for text in args.tolerance)
    except ValueError as error:
        return _error(str(error))
    if args.threshold is not None and not args.threshold > 1:
        return _error(f"--threshold must be a ratio > 1, got {args.threshold}")
    for label, directory in (("baseline", args.baseline), ("run", args.run)):
        if not directory.is_dir():
            return _error(f"the {label} {directory} is not a directory")
    try:
        comparison = compare_runs(args.baseline, args.run, timing=args.timing,
                                  timing_threshold=args.threshold or TIMING_THRESHOLD, tolerances=tolerances,
                                  strict=args.strict, allow_missing=args.allow_missing)
    except FileNotFoundError as error:
        return _error(str(error))
    as_json = json.dumps(comparison.as_dict(), indent=1)
    if args.json is not None and str(args.json) == "-":
        print(as_json)
    else:
        print(format_comparison(comparison), end="")
        if args.json is not None:
            args.json.write_text(as_json + "\n")
    if args.markdown is not None:
        args.markdown.write_text(format_comparison(comparison, markdown=True))
    return EXIT_CELLS_FAILED if comparison.failed else EXIT_OK


def _baseline(args) -> int:
    from fmbench.store import write_baseline

    if not args.run.is_dir():
        return _error(f"{args.run} is not a run directory")
    try:
        written = write_baseline(args.run, args.directory)
    except FileNotFoundError as error:
        return _error(str(error))
    print(f"baseline written to {args.directory}: {', '.join(path.name for path in written)} (commit these files)")
    return EXIT_OK


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"fmbench: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    import warnings

    args = _parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    shown = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return _command(args)
    except BrokenPipeError:  # the reader went away (``fmbench list | head``): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that the exit's flush cannot fail again
        return EXIT_CLOSED_PIPE
    finally:
        signal.signal(signal.SIGTERM, previous)
        warnings.showwarning = shown


def _command(args) -> int:
    from fmbench.files import RunLockedError, UnsafePathError  # light: a reading command loads no torch
    from fmbench.store import StoreError

    try:
        if args.command == "run":
            return _run(args)
        if args.command == "report":
            return _report(args)
        if args.command == "repair":
            return _repair(args)
        if args.command == "list":
            return _list(args)
        if args.command == "compare":
            return _compare(args)
        if args.command == "baseline":
            return _baseline(args)
        if args.command in history_commands.COMMANDS:
            return history_commands.run_command(args)
        if args.command == "install-peers":
            from fmbench.peers import install

            install(args.pip_args)
            return EXIT_OK
        return _export(args)
    except UnsafePathError as error:
        return _error(str(error))
    except (StoreError, RunLockedError) as error:
        return _error(str(error), EXIT_STORE)
    except KeyError as error:  # a name looked up in a registry: print its message, not its repr
        return _error(error.args[0] if error.args else str(error))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
