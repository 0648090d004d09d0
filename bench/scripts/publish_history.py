"""The project's own history, published and looked at: ``python bench/scripts/publish_history.py``.

Reads ``results/history/ci.jsonl`` (seeded by ``fmbench backfill``), writes the step list ``fmbench history``
prints to ``results/history/steps.txt``, publishes the dashboard into ``results/runs/history-site`` (not committed:
``fmbench publish`` rebuilds it from the history), opens its pages in headless Chromium (Debian's ``chromium``,
driven by playwright) and saves screenshots of the index, the run page and the pages named on the command line
into ``results/history/screenshots/``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
from pathlib import Path

from fmbench.cli import main as fmbench
from fmbench.history.publish import publish
from fmbench.history.store import read_history

ROOT = Path(__file__).resolve().parents[2]
ARGUMENTS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync"]


def screenshots(site: Path, pages: list[str], out: Path) -> list[str]:
    """Screenshots of ``pages`` (file names in ``site``, with ``#anchor`` for a chart further down) into ``out``;
    the console errors seen, if any."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=ARGUMENTS)
        for name in pages:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("console", lambda message, name=name: problems.append(f"{name}: {message.text}")
                    if message.type == "error" else None)
            page.on("pageerror", lambda error, name=name: problems.append(f"{name}: {error}"))
            file, _, anchor = name.partition("#")
            page.goto((site / file).resolve().as_uri(), wait_until="load")
            page.wait_for_timeout(500)
            if anchor:
                page.locator(f"#{anchor}").scroll_into_view_if_needed()
            page.screenshot(path=str(out / (file.replace(".html", "") + (f"-{anchor}" if anchor else "") + ".png")))
            page.close()
        browser.close()
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=Path, default=ROOT / "results" / "history" / "ci.jsonl")
    parser.add_argument("pages", nargs="*", default=["gaussian-cond-ot.html", "gaussian-cond-ot.html#wall-s-normalised-cpu"],
                        help="group pages (PAGE.html or PAGE.html#CHART) to screenshot")
    args = parser.parse_args()
    listing = io.StringIO()
    with contextlib.redirect_stdout(listing):
        fmbench(["history", str(args.history)])
    (args.history.parent / "steps.txt").write_text(listing.getvalue())
    site = ROOT / "results" / "runs" / "history-site"
    publish(read_history(args.history), site)
    problems = screenshots(site, ["index.html", "run.html", *args.pages], args.history.parent / "screenshots")
    print(listing.getvalue())
    print(f"site: {site / 'index.html'}; console errors: {problems or 'none'}")


if __name__ == "__main__":
    main()
