"""Chromium for the browser tests: the one `make prerequisites` found, launched headless through
Playwright with no network of its own beyond the pages it is sent to."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from playwright.sync_api import Browser, sync_playwright

from jobs_testkit import prerequisites

# Without these, Chromium keeps opening connections this machine's closed network refuses.
QUIET_BROWSER: Final = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextmanager
def launched_chromium() -> Iterator[Browser]:
    """A running Chromium, closed on the way out. Playwright's sync API refuses to start in a
    thread that runs an event loop: start whatever needs one (a stack) first."""
    executable = prerequisites.chromium()
    assert executable, "no Chromium: `make test` runs `python -m jobs_testkit.prerequisites`"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=QUIET_BROWSER)
        try:
            yield launched
        finally:
            launched.close()
