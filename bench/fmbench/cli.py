"""The ``fmbench`` command.

    fmbench run [PRESET_OR_TOML] [--out DIR] [--workers N | --dask local[:N] | --dask ADDRESS]
                [--threads T] [--cache DIR] [--force] [--quiet]
    fmbench report RUN_DIR
    fmbench list
    fmbench export RUN_DIR --csv FILE
    fmbench compare BASELINE_DIR RUN_DIR [--markdown FILE] [--json FILE] [--strict] [--allow-missing]
                    [--tolerance CLASS=REL[,ABS]] [--timing] [--threshold X]
    fmbench baseline RUN_DIR DIR
    fmbench install-peers [PIP OPTIONS]

``run`` checks the whole sweep, runs the cells not yet saved ``ok`` in ``DIR`` (default
``results/runs/<preset>``; a rerun resumes, retrying failed cells), and writes ``DIR/report.md`` whatever
failed. Exit status: 0 when every cell is ok (or skipped), 1 when cells failed, 2 when the sweep or the
command line is wrong (nothing ran), 130 when interrupted. ``compare`` exits 1 when a cell got worse, when nothing
was compared or when baseline cells are missing (``fmbench.compare`` says how each metric is checked); ``baseline``
writes the text files a committed baseline needs.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from fmbench.sweepfile import SweepError, check_cells, expand, load_sweep, presets

EXIT_OK, EXIT_CELLS_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


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
    run.add_argument("--cache", type=Path, default=None, help="learned-model cache (default: <out>/../cache)")
    run.add_argument("--force", action="store_true", help="start afresh if --out holds another sweep (kept aside)")
    run.add_argument("--quiet", action="store_true", help="no progress output")
    report = commands.add_parser("report", help="(re)write the report of a finished or partial run")
    report.add_argument("out", type=Path)
    commands.add_parser("list", help="what can be swept: targets, schedules, methods, grids, diffusions, objectives, presets")
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
    return parser


def _error(message: str) -> int:
    print(f"fmbench: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _run(args) -> int:
    from fmbench.report import write_report
    from fmbench.sweep import open_executor, run_sweep

    if args.workers < 1:
        return _error(f"--workers must be ≥ 1, got {args.workers}")
    cores = os.cpu_count() or 1
    if not 1 <= args.threads <= cores:
        return _error(f"--threads must be between 1 and this machine's {cores} CPU(s), got {args.threads}")
    # A process started in the background by a non-interactive shell inherits SIGINT as ignored, and Python keeps it
    # so: restore the default, so that Ctrl-C or `kill -INT` always stops the sweep after saving what finished.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    config = load_sweep(args.sweep)
    cells = expand(config)
    check_cells(cells)
    out = args.out or Path("results") / "runs" / Path(args.sweep).stem
    with open_executor(args.workers, args.dask) as (executor, description, parallelism):
        outcome = run_sweep(cells, out, executor=executor, progress=not args.quiet, force=args.force,
                            cache_dir=args.cache, threads=args.threads, executor_description=description,
                            plugins=config.get("plugins", ()), parallelism=parallelism)
    report = write_report(out)
    rows = outcome.rows
    failed = int((rows["status"] == "failed").sum()) if len(rows) else 0
    skipped = int((rows["status"] == "skipped").sum()) if len(rows) else 0
    print(f"{len(rows)} of {len(cells)} cells saved ({failed} failed, {skipped} skipped); report: {report}")
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_CELLS_FAILED if failed else EXIT_OK


def _list() -> int:
    from fmcore.grids import GRIDS
    from fmcore.models import OBJECTIVES
    from fmcore.schedules import SCHEDULES
    from fmcore.solvers import DIFFUSIONS, METHODS
    from fmcore.targets import TARGETS

    def parameters(registry, name) -> str:
        values = registry.parameters(name)
        return ", ".join(f"{key}={value!r}" for key, value in values.items()) or "-"

    for title, registry in (("targets", TARGETS), ("schedules", SCHEDULES), ("grids", GRIDS), ("diffusions", DIFFUSIONS)):
        print(f"{title}:")
        for name in sorted(registry):
            print(f"  {name:18s} {parameters(registry, name)}")
    print("methods (name, family, takes, order, options):")
    for name in sorted(METHODS):
        method = METHODS[name]
        takes = "rtol/atol" if method.adaptive else "steps" if method.stepping == "own_grid" else "steps or grid"
        takes += " + diffusion" if method.diffusion else ""
        order = f"order {method.order}" if method.order else ""
        options = ", ".join(f"{key}={value}" for key, value in method.options.items())
        print(f"  {name:18s} {method.family:24s} {takes:26s} {order:8s} {options}")
    print("fields: analytic, " + ", ".join(f"learned:{objective}" for objective in OBJECTIVES))
    print("presets:")
    for name, path in presets().items():
        first = next((line.lstrip("# ").strip() for line in path.read_text().splitlines() if line.startswith("#")), "")
        print(f"  {name:18s} {first}")
    return EXIT_OK


def _export(args) -> int:
    from fmbench.store import load_rows

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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "report":
            from fmbench.report import write_report

            if not args.out.is_dir():
                return _error(f"{args.out} is not a run directory")
            print(write_report(args.out))
            return EXIT_OK
        if args.command == "list":
            return _list()
        if args.command == "compare":
            return _compare(args)
        if args.command == "baseline":
            return _baseline(args)
        if args.command == "install-peers":
            from fmbench.peers import install

            install(args.pip_args)
            return EXIT_OK
        return _export(args)
    except SweepError as error:
        return _error(str(error))
    except KeyError as error:  # a name looked up in a registry: print its message, not its repr
        return _error(error.args[0] if error.args else str(error))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
