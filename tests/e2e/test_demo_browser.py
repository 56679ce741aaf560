"""The demo page and the React example in a real browser (the Chromium that `make test`'s
prerequisite step found or installed, driven by Playwright) against the whole system: submit a
job, see its text arrive from `/api/jobs/{jobId}/output` then the final state, reload mid-answer
and see the text resume, cancel another; the React example (clients/js/examples/react, bundled
with React from npm) shows the same through the hooks. Screenshots go to `test-artifacts/`
(gitignored)."""

import functools
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from jobs_testkit import prerequisites
from jobs_testkit.browser import launched_chromium
from jobs_testkit.stack import Stack

REPOSITORY = Path(__file__).resolve().parents[2]
CLIENT = REPOSITORY / "clients" / "js"
ARTIFACTS = REPOSITORY / "test-artifacts"


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass  # the test's output is for failures


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The React example bundled: React and esbuild installed from the npm registry at the
    lock file's exact versions (once: `npm ci` again only when the lock file is newer)."""
    node = Path(prerequisites.node().path)
    environment = {**os.environ, "PATH": f"{node.parent}{os.pathsep}{os.environ['PATH']}"}
    installed = CLIENT / "node_modules" / ".package-lock.json"
    lock = CLIENT / "package-lock.json"
    if not installed.is_file() or installed.stat().st_mtime < lock.stat().st_mtime:
        subprocess.run(
            [str(node.parent / "npm"), "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=CLIENT,
            env=environment,
            check=True,
            timeout=100,
        )
    out = tmp_path_factory.mktemp("react-example")
    subprocess.run(
        [str(node), "examples/react/build.mjs", str(out)],
        cwd=CLIENT,
        env=environment,
        check=True,
        capture_output=True,
        timeout=60,
    )
    return out


@pytest.fixture(scope="module")
def example_origin(example_dir: Path) -> Iterator[str]:
    """The bundled example served from an origin of its own, as a separate frontend would be."""
    handler = functools.partial(QuietHandler, directory=str(example_dir))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def stack_overrides(example_origin: str) -> dict[str, str]:
    """The e2e conftest's stack, with CORS open to the React example's origin."""
    return {"CORS_ORIGINS": example_origin}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched_chromium() as launched:
        yield launched


@pytest.fixture
def page(stack: Stack, browser: Browser) -> Iterator[Page]:
    """The demo page in a fresh context (its own localStorage and sessionStorage)."""
    context = browser.new_context(viewport={"width": 900, "height": 900})
    try:
        page = context.new_page()
        page.goto(f"{stack.gateway_url}/")
        yield page
    finally:
        context.close()


def simulate(stack: Stack, **config: object) -> None:
    httpx.post(f"{stack.simulator_url}/_sim/reset").raise_for_status()
    httpx.put(f"{stack.simulator_url}/_sim/config", json=config).raise_for_status()


def submit(page: Page, token: str, job_type: str, topic: str) -> None:
    page.fill("#token", token)
    page.select_option("#type", job_type)
    page.fill("#topic", topic)
    page.click("#submit")


def fetch_job(stack: Stack, token: str, job_id: str) -> dict[str, object]:
    response = httpx.get(
        f"{stack.gateway_url}/api/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"}
    )
    response.raise_for_status()
    job: dict[str, object] = response.json()
    return job


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / name, full_page=True)
    assert (ARTIFACTS / name).stat().st_size > 0


def test_a_job_submitted_on_the_demo_page_shows_its_text_as_it_is_written(
    stack: Stack, token: str, page: Page
) -> None:
    simulate(stack, latencyS=2)
    outputs: list[str] = []
    page.on("request", lambda r: outputs.append(r.url) if r.url.endswith("/output") else None)
    submit(page, token, "script_generation", "octopus cognition")
    expect(page.locator("#status")).to_have_text("succeeded", timeout=20_000)
    output = page.locator("#output")
    assert int(output.get_attribute("data-progress") or 0) > 1, "the text came in one piece"
    job = fetch_job(stack, token, page.locator("#job-id").inner_text())
    assert job["status"] == "succeeded"
    # The status is shown once the text is all here: no waiting for it.
    assert output.inner_text() == job["output"]
    assert output.get_attribute("data-offset") == str(len(str(job["output"])))
    assert output.get_attribute("data-connection") == "closed"
    assert outputs, "the text came from /output"
    screenshot(page, "demo-succeeded.png")


def test_a_reload_mid_answer_shows_the_text_so_far_and_resumes_from_its_offset(
    stack: Stack, token: str, page: Page
) -> None:
    # Text at 20 tokens a second for 4 s (the rest at once when it succeeds): long enough to
    # reload in the middle.
    simulate(stack, latencyS=4, tokensPerS=20)
    submit(page, token, "script_generation", "reload me")
    output = page.locator("#output")
    expect(output).to_have_attribute("data-offset", re.compile(r"^[1-9]\d*$"))
    job_id = page.locator("#job-id").inner_text()
    assert page.url.endswith(f"#job={job_id}")
    resumes: list[str | None] = []
    page.on(
        "request",
        lambda r: (
            resumes.append(r.headers.get("last-event-id")) if r.url.endswith("/output") else None
        ),
    )
    page.reload()
    # Right after the reload, before any new text: what was kept is shown.
    kept = int(output.get_attribute("data-resumed-from") or 0)
    assert kept > 0
    before = output.inner_text()
    assert len(before) >= kept
    expect(page.locator("#status")).to_have_text("succeeded", timeout=20_000)
    job = fetch_job(stack, token, job_id)
    assert job["status"] == "succeeded"
    final = output.inner_text()
    assert final == job["output"], "nothing repeated or lost across the reload"
    assert final.startswith(before)
    # The stream after the reload asked for the text after what the page had kept.
    assert resumes, "no /output request after the reload"
    assert resumes[0] == str(kept), resumes
    screenshot(page, "demo-reloaded.png")


def test_a_job_can_be_canceled_from_the_demo_page(stack: Stack, token: str, page: Page) -> None:
    simulate(stack, latencyS=30)
    submit(page, token, "title_generation", "slow tides")
    expect(page.locator("#cancel")).to_be_enabled(timeout=10_000)
    page.click("#cancel")
    expect(page.locator("#status")).to_have_text("canceled", timeout=20_000)
    screenshot(page, "demo-canceled.png")


def test_the_react_example_streams_a_job_through_the_hooks(
    stack: Stack, token: str, browser: Browser, example_origin: str
) -> None:
    simulate(stack, latencyS=2, tokensPerS=40)
    context = browser.new_context(viewport={"width": 900, "height": 900})
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{example_origin}/index.html?gateway={stack.gateway_url}")
        expect(page.locator("#connection")).to_have_text("closed")
        page.fill("#token", token)
        page.fill("#topic", "react hooks")
        page.click("#submit")
        # The connection's state is the stream's own: open while the job still runs.
        expect(page.locator("#connection")).to_have_text("open", timeout=10_000)
        expect(page.locator("#done")).to_have_text("succeeded", timeout=20_000)
        expect(page.locator("#status")).to_have_text("succeeded", timeout=10_000)
        expect(page.locator("#connection")).to_have_text("closed")
        job = fetch_job(stack, token, page.locator("#job-id").inner_text())
        assert page.locator("#output").inner_text() == job["output"]
        assert page.locator("#offset").inner_text() == str(len(str(job["output"])))
        # onComplete fired once, for the terminal status only (under StrictMode too).
        assert page.locator("#completed").inner_text() == "succeeded"
        # StrictMode (React's development build) mounted each hook twice: the job's watch and
        # its output each kept one event stream, and both closed once the job ended.
        assert page.locator("#streams-most").inner_text() in ("1", "2")
        expect(page.locator("#streams-open")).to_have_text("0")
        expect(page.locator("#job-connection")).to_have_text("closed")
        assert errors == []
        screenshot(page, "react-example.png")
    finally:
        context.close()
