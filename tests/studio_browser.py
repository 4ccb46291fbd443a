"""A real headless Chromium (Debian's `chromium`) driven by Playwright, for the studio's tests.

`playwright install` downloads browsers and fails offline: the system browser is used
instead (`.ci/run` installs it when missing).
"""

from __future__ import annotations

import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Where the README's screenshots come from: copy the final ones into docs/screenshots/.
STEP_TIMEOUT_MS = 5 * 60_000
SHOT_SIZE = {"width": 1280, "height": 900}


def require_browser() -> None:
    if not CHROMIUM.exists() or shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (`.ci/run` installs it)")
    pytest.importorskip("playwright.sync_api")


@contextmanager
def browser_page(base_url: str):
    """A fresh browser context (no cookies) and one page on it; console errors collected."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            context = browser.new_context(base_url=base_url, viewport=SHOT_SIZE)
            # Formatting, loading a model or training takes minutes on a busy 2-core machine.
            context.set_default_timeout(STEP_TIMEOUT_MS)
            page = context.new_page()
            page.console_errors = []
            page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
            yield page
        finally:
            browser.close()


def upload_source(page, path: Path) -> None:
    """Upload `path` with the data page's form and wait for the new source's page."""
    page.goto("/data")
    page.set_input_files("input[name=file]", str(path))
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url(re.compile(r"/data/sources/"))


def screenshot_dir(tmp_path: Path) -> Path:
    """TUNELAB_SCREENSHOTS when set (to keep them, e.g. for the README), else a temporary one."""
    return Path(os.environ.get("TUNELAB_SCREENSHOTS") or tmp_path / "screenshots")


def shoot(page, directory: Path, name: str) -> Path:
    """What a person sees of the page in a 1280×900 window."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    page.screenshot(path=str(path))
    return path
