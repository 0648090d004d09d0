"""The published dashboard opened in headless Chromium, as a reader opens it: from disk, every page loading with no
console error or uncaught exception, every chart drawn, a point's hover showing its commit, and screenshots taken
(kept in ``$FMBENCH_SCREENSHOTS`` when set, to be looked at).

Needs Debian's ``chromium`` (``apt-get install chromium``; ``.ci/run`` installs it where it can) and the Python
package ``playwright`` (the test extra), which drives it by ``executable_path``: no browser download."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from fmbench.history.publish import publish

from tests.history_helpers import synthetic_records

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytest.importorskip("plotly", reason="fmbench publish draws with Plotly (the publish extra)")
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package (test extra) drives the browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)")
ARGUMENTS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    directory = tmp_path_factory.mktemp("site")
    records = synthetic_records(commits=20, step_at=12, gpu=True)
    records += synthetic_records(commits=20, step_at=12, machine="Other CPU (8 CPUs)", seed=1)
    publish(records, directory, commit_url="https://example.org/commit/{commit}")
    return directory


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGUMENTS)
        yield browser
        browser.close()


def _open(browser, path: Path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems = []
    page.on("console", lambda message: problems.append(f"console {message.type}: {message.text}")
            if message.type in ("error", "warning") else None)
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    page.on("requestfailed", lambda request: problems.append(f"failed to load {request.url}"))
    page.goto(path.resolve().as_uri(), wait_until="load")
    return page, problems


def _screenshots() -> Path | None:
    directory = os.environ.get("FMBENCH_SCREENSHOTS")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
    return Path(directory) if directory else None


def test_every_page_loads_without_console_errors(site, browser):
    for path in sorted(site.glob("*.html")):
        page, problems = _open(browser, path)
        page.wait_for_timeout(200)
        assert problems == [], f"{path.name}: {problems}"
        page.close()


def test_charts_are_drawn_and_hover_shows_the_commit(site, browser, tmp_path):
    page, problems = _open(browser, site / "gaussian-cond-ot.html")
    charts = page.locator(".js-plotly-plot")
    headings = page.locator("h2")
    assert charts.count() == headings.count() >= 4  # w2_exact_law, nfe, wall_s_normalised on the CPU; the GPU panel
    assert "w2_exact_law (GPU)" in page.inner_text("body")
    first = charts.nth(0)
    assert first.locator(".scatterlayer .trace").count() >= 2
    box = first.locator(".scatterlayer .trace .points path").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)  # under Plotly's drag layer
    page.wait_for_selector(".hoverlayer .hovertext", timeout=5000)
    assert "c0" in page.locator(".hoverlayer .hovertext").first.text_content()
    link = page.locator("a[href='https://example.org/commit/c12" + "0" * 37 + "']")
    assert link.count() >= 1  # the step's commit, under its chart
    directory = _screenshots() or tmp_path
    page.screenshot(path=str(directory / "group-page.png"), full_page=False)
    assert problems == []
    page.close()
    index, problems = _open(browser, site / "index.html")
    assert "Steps, newest first" in index.inner_text("body")
    index.screenshot(path=str(directory / "index.png"), full_page=True)
    assert problems == []
    index.close()
