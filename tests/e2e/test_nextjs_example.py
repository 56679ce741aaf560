"""The Next.js example (clients/examples/nextjs) built, served by `next start` and driven in
Chromium against the whole system: the gateway behind the app's own origin, the job created and
its job token minted by the app's server with the user's session token, the text streaming,
a reload mid-answer, a cancel, a failed job, and a job token that expires mid-job.

The stack runs with job tokens of a few seconds and no expiry leeway, so every test also lives
through token refreshes. Screenshots go to `test-artifacts/` (gitignored)."""

import hashlib
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from jobs_testkit import prerequisites
from jobs_testkit.browser import launched_chromium
from jobs_testkit.processes import ServiceProcess
from jobs_testkit.servers import free_port
from jobs_testkit.stack import Stack

REPOSITORY = Path(__file__).resolve().parents[2]
APP = REPOSITORY / "clients" / "examples" / "nextjs"
CLIENT = REPOSITORY / "clients" / "js"
ARTIFACTS = REPOSITORY / "test-artifacts"
# `npm ci` and `next build` cost about a minute of this machine's two cores, more than `make
# test` can spend on every run and stay within its ten minutes; so the build is kept outside
# the checkout under a hash of everything it is made from, and made again only when that changes.
CACHE = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ai-jobs" / "nextjs-example"
)
# What `npm ci` and `next build` write into the app's folder: not part of its sources.
BUILD_OUTPUTS = {"node_modules", ".next", "next-env.d.ts", "tsconfig.tsbuildinfo"}
# Short-lived job tokens and no leeway on `exp`: a job outlives several tokens.
JOB_TOKEN_TTL_S = 5
STALE_BUILD_S = 7 * 24 * 3600

# A request from the page: its status and JSON body.
FETCH_JSON = "([url, method]) => fetch(url, {method}).then(async r => [r.status, await r.json()])"

pytestmark = pytest.mark.timeout(600)  # the first run builds the app


def app_sources() -> list[Path]:
    return sorted(
        path
        for path in APP.rglob("*")
        if path.is_file() and not BUILD_OUTPUTS & set(path.relative_to(APP).parts)
    )


def client_sources() -> list[Path]:
    """The files `npm pack` ships of the client (what the app installs) and its manifest."""
    shipped = ["package.json", "README.md", "jobs-client.js", "jobs-client.d.ts"]
    shipped += ["api-types.d.ts", "react.js", "react.d.ts"]
    return [CLIENT / name for name in shipped if (CLIENT / name).is_file()]


def build_key(node: Path) -> str:
    digest = hashlib.sha256()
    node_version = subprocess.run(
        [str(node), "--version"], check=True, capture_output=True, text=True
    ).stdout
    digest.update(node_version.encode())
    for path in app_sources() + client_sources():
        digest.update(str(path.relative_to(REPOSITORY)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build(node: Path, target: Path) -> None:
    """The app and the client copied side by side (the app's `file:../../js` finds the client),
    then `npm ci` and `next build` where they will run: a build does not move."""
    app = target / "examples" / "nextjs"
    for source in app_sources():
        (app / source.relative_to(APP)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, app / source.relative_to(APP))
    (target / "js").mkdir(parents=True)
    for source in client_sources():
        shutil.copy2(source, target / "js" / source.name)
    environment = {
        **os.environ,
        "PATH": f"{node.parent}{os.pathsep}{os.environ['PATH']}",
        "NEXT_TELEMETRY_DISABLED": "1",
    }
    npm = [str(node.parent / "npm"), "ci", "--no-audit", "--no-fund", "--loglevel=error"]
    subprocess.run(npm, cwd=app, env=environment, check=True, timeout=300)
    next_build = [str(node), "node_modules/next/dist/bin/next", "build"]
    subprocess.run(next_build, cwd=app, env=environment, check=True, timeout=300)


@pytest.fixture(scope="module")
def built_app() -> Path:
    """The built app, from the cache when its sources, lock file and client are unchanged."""
    node = Path(prerequisites.node().path)
    key = build_key(node)
    target = CACHE / key
    done = target / "built"
    if not done.is_file():
        shutil.rmtree(target, ignore_errors=True)  # a build cut short
        build(node, target)
        done.touch()
    # Builds of older sources go after a week unused (another checkout may still use one).
    for other in CACHE.iterdir():
        if other != target and time.time() - other.stat().st_mtime > STALE_BUILD_S:
            shutil.rmtree(other, ignore_errors=True)
    os.utime(target)
    return target / "examples" / "nextjs"


@pytest.fixture(scope="module")
def stack_overrides() -> dict[str, str]:
    return {"JOB_TOKEN_TTL_S": str(JOB_TOKEN_TTL_S), "AUTH_JWT_LEEWAY_S": "0"}


@pytest.fixture(scope="module")
def app_url(
    built_app: Path, stack: Stack, token: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`next start` on a free port, for the stack's gateway and the e2e user's session."""
    node = prerequisites.node().path
    port = free_port()
    environment = {
        "GATEWAY_URL": stack.gateway_url,
        "GATEWAY_USER_TOKEN": token,
        "NEXT_TELEMETRY_DISABLED": "1",
        "NODE_ENV": "production",
    }
    next_bin = str(built_app / "node_modules" / "next" / "dist" / "bin" / "next")
    argv = [node, next_bin, "start", str(built_app), "-H", "127.0.0.1", "-p", str(port)]
    log = tmp_path_factory.mktemp("nextjs") / "next.log"
    # `next start` forks the server it runs: the whole group goes at the end.
    with ServiceProcess(argv, environment, log, group=True) as process:
        url = f"http://127.0.0.1:{port}"
        process.wait_http(f"{url}/", timeout=60)
        yield url
        process.terminate()


@pytest.fixture(scope="module")
def browser(app_url: str) -> Iterator[Browser]:
    """Chromium, started after the stack and the app: the stack's setup runs an event loop of its
    own, which Playwright's sync API in the same thread would refuse."""
    with launched_chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser, app_url: str) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 900, "height": 900}, base_url=app_url)
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        yield page
        assert errors == []
    finally:
        context.close()


def simulate(stack: Stack, **config: object) -> None:
    httpx.post(f"{stack.simulator_url}/_sim/reset").raise_for_status()
    httpx.put(f"{stack.simulator_url}/_sim/config", json=config).raise_for_status()


def fetch_job(stack: Stack, token: str, job_id: str) -> dict[str, object]:
    response = httpx.get(
        f"{stack.gateway_url}/api/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"}
    )
    response.raise_for_status()
    job: dict[str, object] = response.json()
    return job


def submit(page: Page, job_type: str, topic: str) -> str:
    """Submit on `/`; the job's id once its page is open."""
    page.goto("/")
    page.select_option("#type", job_type)
    page.fill("#topic", topic)
    page.click("#submit")
    page.wait_for_function(
        "() => location.pathname.startsWith('/jobs/') || document.querySelector('#submit-error')"
    )
    refused = page.locator("#submit-error")
    assert refused.count() == 0, f"the submission was refused: {refused.inner_text()}"
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f-]{36}$"))
    return page.url.rsplit("/", 1)[1]


def text_length(page: Page) -> int:
    return int(page.locator("#output").get_attribute("data-length") or 0)


def until_text_grows(page: Page, beyond: int) -> int:
    """Until the page shows more than `beyond` characters of text; how many it shows then."""
    page.wait_for_function(
        "n => Number(document.querySelector('#output')?.dataset.length ?? 0) > n", arg=beyond
    )
    return text_length(page)


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / name, full_page=True)


# Works on the gateway and client as they are.


def test_the_app_reaches_the_gateway_through_its_own_origin(page: Page) -> None:
    page.goto("/")
    # The job types were read by the app's server from the gateway.
    options = page.locator("#type option").all_inner_texts()
    assert {"script_generation", "video_outline", "title_generation"} <= set(options)
    # The browser reaches the gateway on the app's origin (the stack allows no CORS origin).
    proxied = page.evaluate(FETCH_JSON, ["/gateway/api/job-types", "GET"])
    assert proxied[0] == 200
    assert {item["type"] for item in proxied[1]["items"]} == set(options)
    # The app's own route handlers under /api are not sent on to the gateway.
    minted = page.evaluate(FETCH_JSON, [f"/api/job-token/{uuid.uuid4()}", "POST"])
    assert minted[0] == 404
    assert minted[1]["message"]


def test_a_refused_submission_is_shown_as_a_sentence(page: Page) -> None:
    page.goto("/")
    page.click("#submit")  # no topic
    expect(page.locator("#submit-error")).not_to_be_empty()
    assert page.url.endswith("/")


# From here on: job tokens (the gateway's `POST /api/jobs/{jobId}/token`) and the client's
# token provider (`token: () => Promise<string>`) and `cancelRequested` on the job.


def test_a_submitted_job_streams_its_text_and_resumes_after_a_reload(
    stack: Stack, token: str, page: Page
) -> None:
    # 20 tokens a second for 6 s: long enough to reload in the middle.
    simulate(stack, latencyS=6, tokensPerS=20)
    authorizations: list[str] = []
    page.on(
        "request",
        lambda r: (
            authorizations.append(r.headers.get("authorization", ""))
            if "/gateway/" in r.url
            else None
        ),
    )
    job_id = submit(page, "script_generation", "octopus cognition")
    first = until_text_grows(page, 0)
    until_text_grows(page, first)  # it streams: more than one piece
    expect(page.locator("#connection")).to_have_text("open")
    kept = text_length(page)
    before = page.locator("#output").inner_text()
    page.reload()
    # The status comes with the page; the text so far with the stream's first event.
    expect(page.locator("#status")).not_to_be_empty()
    until_text_grows(page, kept - 1)
    assert page.locator("#output").inner_text().startswith(before)
    expect(page.locator("#status")).to_have_text("succeeded", timeout=30_000)
    job = fetch_job(stack, token, job_id)
    assert page.locator("#output").inner_text() == job["output"], "nothing lost or repeated"
    expect(page.locator("#connection")).to_have_text("closed")
    expect(page.locator("#error")).to_have_count(0)
    # The browser held job tokens only, never the user's session token.
    assert authorizations, "the page read the job through the same-origin prefix"
    assert f"Bearer {token}" not in authorizations
    assert token not in page.content()
    screenshot(page, "nextjs-succeeded.png")


def test_a_job_is_canceled_from_its_page(stack: Stack, page: Page) -> None:
    # Webhooks held: the cancel is asked for and carried out, but the job stays `processing`
    # with `cancelRequested` until the final webhook is let through.
    simulate(stack, latencyS=30, tokensPerS=10, holdWebhooks=True)
    submit(page, "title_generation", "slow tides")
    until_text_grows(page, 0)
    page.click("#cancel")
    expect(page.locator("#status")).to_have_text("canceling…", timeout=10_000)
    expect(page.locator("#cancel")).to_be_disabled()
    # The gateway's `cancelRequested`, not the page's memory of the click: a reload keeps it.
    page.reload()
    expect(page.locator("#status")).to_have_text("canceling…")
    httpx.put(f"{stack.simulator_url}/_sim/config", json={"holdWebhooks": False}).raise_for_status()
    expect(page.locator("#status")).to_have_text("canceled", timeout=30_000)
    expect(page.locator("#error")).to_have_count(0)
    screenshot(page, "nextjs-canceled.png")


def test_a_failed_job_says_why_and_keeps_its_text(stack: Stack, page: Page) -> None:
    simulate(stack, latencyS=4, tokensPerS=20, predictionFailRate=1)
    submit(page, "script_generation", "doomed")
    until_text_grows(page, 0)
    seen = page.locator("#output").inner_text()
    expect(page.locator("#status")).to_have_text("failed", timeout=30_000)
    expect(page.locator("#error")).to_have_text(re.compile(r"^The job failed: .+\.$"))
    assert page.locator("#output").inner_text().startswith(seen), "the text seen is kept"
    screenshot(page, "nextjs-failed.png")


def test_a_job_token_that_expires_mid_job_is_refreshed(
    stack: Stack, token: str, page: Page
) -> None:
    simulate(stack, latencyS=20, tokensPerS=10)
    created = httpx.post(
        f"{stack.gateway_url}/api/jobs",
        headers={"Authorization": f"Bearer {token}"},
        json={"type": "script_generation", "input": {"topic": "long answer"}},
    )
    created.raise_for_status()
    job_id = created.json()["jobId"]
    minted: list[str] = []
    page.on("request", lambda r: minted.append(r.url) if "/api/job-token/" in r.url else None)
    # Opened straight away (no token handed over by the form): the page asks the app's server.
    with page.expect_response(re.compile(r"/api/job-token/")) as first:
        page.goto(f"/jobs/{job_id}")
    expires_at = first.value.json()["expiresAt"]
    until_text_grows(page, 0)
    # Once that token has lapsed, every stream is cut (the gateway restarts): each reconnect
    # needs a token the gateway still takes.
    page.wait_for_function(
        "expiresAt => Date.now() > Date.parse(expiresAt)", arg=expires_at, timeout=30_000
    )
    asked, shown = len(minted), text_length(page)
    stack.stop_service("gateway")
    stack.start_service("gateway")
    until_text_grows(page, shown)
    expect(page.locator("#status")).to_have_text("succeeded", timeout=60_000)
    assert len(minted) > asked, "a fresh token was asked for after the first one lapsed"
    assert page.locator("#output").inner_text() == fetch_job(stack, token, job_id)["output"]
    expect(page.locator("#error")).to_have_count(0)
