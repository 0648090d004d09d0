"""Command line: ``python -m bench run [PRESET_OR_TOML] [--out DIR] [--workers N]`` and
``python -m bench report DIR``.

``run`` expands the sweep, runs the cells that are not yet in ``DIR/rows.parquet`` (so a rerun resumes),
then writes ``DIR/report.md`` and its figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.report import write_report
from bench.sweep import expand, load_sweep, make_executor, run_sweep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a sweep (resumes) and write its report")
    run.add_argument("sweep", nargs="?", default="default", help="preset name (bench/presets) or path to a TOML file")
    run.add_argument("--out", type=Path, default=None, help="output directory (default: results/runs/<preset name>)")
    run.add_argument("--workers", type=int, default=1, help="processes; 1 runs cells in this process")
    run.add_argument("--quiet", action="store_true")
    report = commands.add_parser("report", help="(re)write the report of a finished or partial sweep")
    report.add_argument("out", type=Path)
    args = parser.parse_args(argv)

    if args.command == "report":
        print(write_report(args.out))
        return 0
    try:
        cells = expand(load_sweep(args.sweep))
    except (KeyError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = args.out or Path("results") / "runs" / Path(args.sweep).stem
    executor = make_executor(args.workers)
    try:
        rows = run_sweep(cells, out, executor=executor, progress=not args.quiet)
    finally:
        if executor is not None:
            executor.shutdown()
    path = write_report(out)
    failed = int((rows["status"] != "ok").sum())
    print(f"{len(rows)} cells ({failed} failed); report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
