"""The report in a real browser: headless Chromium (Debian's package, installed here when missing).

Loads report.html from disk, asserts no console error, no network request, every section present,
every image decoded, no horizontal scrolling at laptop width; saves a full-page screenshot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from cvtransfer.report import SECTIONS

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
LAPTOP = {"width": 1280, "height": 800}


def find_chromium() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def install_chromium() -> str:
    """Install Debian's chromium with apt-get (as root); the reason it could not be, if it could not."""
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine"
    if os.geteuid() != 0:
        return "not root, so apt-get cannot install it"
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    for command in (install, ["apt-get", "update"], install):
        done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if command is install and done.returncode == 0 and find_chromium():
            return ""
    return f"apt-get install chromium failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a Chromium executable, installed when missing; the test is skipped, saying why, if none can be."""
    path = find_chromium()
    if path is None:
        reason = install_chromium()
        path = find_chromium()
        if path is None:
            pytest.skip(f"headless Chromium unavailable: {reason}")
    return path


def render(chromium: str, report: Path, screenshot: Path) -> tuple[list[str], list[str], list[list[str]], list[bool], int]:
    """Load ``report`` in headless Chromium: (console errors, network requests, [section id, title],
    whether each image decoded, the page's scroll width); a full-page screenshot goes to ``screenshot``."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport=LAPTOP)
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("request", lambda request: requests.append(request.url)
                    if not request.url.startswith(("file:", "data:")) else None)
            page.goto(report.as_uri(), wait_until="load")
            sections = page.eval_on_selector_all("section", "all => all.map(s => [s.id, s.querySelector('h2').innerText])")
            images = page.eval_on_selector_all("img", "all => all.map(i => i.complete && i.naturalWidth > 0)")
            width = page.evaluate("document.documentElement.scrollWidth")
            page.screenshot(path=screenshot, full_page=True)
        finally:
            browser.close()
    return errors, requests, sections, images, width


def test_report_renders_in_chromium(chromium: str, finished_report: Path, tmp_path: Path) -> None:
    errors, requests, sections, images, width = render(chromium, finished_report, tmp_path / "report.png")
    assert errors == [] and requests == []
    assert [s[0] for s in sections] == list(SECTIONS) and all(title for _, title in sections)
    assert len(images) >= 7 and all(images)
    assert width <= LAPTOP["width"]
    with Image.open(tmp_path / "report.png") as shot:
        assert shot.width == LAPTOP["width"] and shot.height > 3 * LAPTOP["height"]


def dense_run(task: str, tmp_path: Path) -> Path:
    """A tiny finished segmentation or detection run folder with its report."""
    import cvtransfer

    if task == "segmentation":
        from tests.tasks.test_segmentation import seg_config, write_segmentation_data

        return cvtransfer.fit(seg_config(write_segmentation_data(tmp_path / "data"), tmp_path / "run", epochs=2,
                                         report=True)).path
    from tests.tasks.test_detection import det_config, write_detection_data

    return cvtransfer.fit(det_config(write_detection_data(tmp_path / "data"), tmp_path / "run", epochs=1,
                                     report=True)).path


@pytest.mark.parametrize(("task", "expected", "pictures"), [
    ("segmentation", ["summary", "config", "data", "curves", "per-class-iou", "confusion", "examples", "diagnosis"], 4),
    ("detection", ["summary", "config", "data", "curves", "per-class-ap", "pr-curve", "examples", "diagnosis"], 3),
])
def test_dense_reports_render_in_chromium(task: str, expected: list[str], pictures: int, chromium: str,
                                         tmp_path: Path) -> None:
    run = dense_run(task, tmp_path)
    errors, requests, sections, images, width = render(chromium, run / "report.html", tmp_path / "report.png")
    assert errors == [] and requests == []
    assert [s[0] for s in sections] == expected and all(title for _, title in sections)
    assert len(images) >= pictures and all(images)
    assert width <= LAPTOP["width"]
    with Image.open(tmp_path / "report.png") as shot:
        assert shot.width == LAPTOP["width"] and shot.height > 2 * LAPTOP["height"]
