"""The demo page in a real browser (the Chromium that `make test`'s prerequisite step found or
installed, driven by Playwright) against the whole system: submit a job, see partial output then
the final text, cancel another; screenshots are kept under `test-artifacts/` (gitignored)."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from jobs_testkit import prerequisites
from jobs_testkit.stack import Stack

# Without these, Chromium keeps opening connections this machine's closed network refuses.
QUIET_BROWSER = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def page(stack: Stack) -> Iterator[Page]:
    executable = prerequisites.chromium()
    assert executable, "no Chromium: `make test` runs `python -m jobs_testkit.prerequisites`"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=QUIET_BROWSER)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 900})
            page.goto(f"{stack.gateway_url}/")
            yield page
        finally:
            browser.close()


def simulate(stack: Stack, **config: object) -> None:
    httpx.post(f"{stack.simulator_url}/_sim/reset").raise_for_status()
    httpx.put(f"{stack.simulator_url}/_sim/config", json=config).raise_for_status()


def submit(page: Page, token: str, job_type: str, topic: str) -> None:
    page.fill("#token", token)
    page.select_option("#type", job_type)
    page.fill("#topic", topic)
    page.click("#submit")


def test_a_job_submitted_on_the_demo_page_shows_progress_and_its_text(
    stack: Stack, token: str, page: Page
) -> None:
    simulate(stack, latencyS=2)
    submit(page, token, "script_generation", "octopus cognition")
    expect(page.locator("#status")).to_have_text("succeeded", timeout=20_000)
    output = page.locator("#output")
    assert int(output.get_attribute("data-progress") or 0) >= 1, "no partial output shown"
    job_id = page.locator("#job-id").inner_text()
    job = httpx.get(
        f"{stack.gateway_url}/api/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"}
    ).json()
    assert job["status"] == "succeeded"
    assert output.inner_text() == job["output"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "demo-succeeded.png", full_page=True)
    assert (ARTIFACTS / "demo-succeeded.png").stat().st_size > 0


def test_a_job_can_be_canceled_from_the_demo_page(stack: Stack, token: str, page: Page) -> None:
    simulate(stack, latencyS=30)
    submit(page, token, "title_generation", "slow tides")
    expect(page.locator("#cancel")).to_be_enabled(timeout=10_000)
    page.click("#cancel")
    expect(page.locator("#status")).to_have_text("canceled", timeout=20_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "demo-canceled.png", full_page=True)
