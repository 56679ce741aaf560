"""The demo page's "My jobs" view in a real browser (Chromium through Playwright) against the
whole system: jobs of two types end, the view lists them newest first and pages through them,
a filter narrows the list, a job's history and cost show, and the month's spend per day is
drawn by the vendored uPlot on a canvas with the budget line on it. The screenshot goes to
`test-artifacts/` (gitignored)."""

import asyncio
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from gateway.adapters.http.site import UPLOT_VERSION
from jobs_testkit.browser import launched_chromium
from jobs_testkit.stack import Stack
from jobs_testkit.waiting import eventually

REPOSITORY = Path(__file__).resolve().parents[2]
ARTIFACTS = REPOSITORY / "test-artifacts"
UPLOT = REPOSITORY / "services" / "gateway" / "demo" / "vendor" / "uplot"
BUDGET_USD = 5
# The budget line's colour in my-jobs.js (#d0342c).
BUDGET_RGB = (0xD0, 0x34, 0x2C)


@pytest.fixture(scope="module")
def stack_overrides() -> dict[str, str]:
    """The e2e conftest's stack, with a monthly budget for every user."""
    return {"USER_BUDGET_USD": str(BUDGET_USD)}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched_chromium() as launched:
        yield launched


def submit_and_wait(stack: Stack, token: str, jobs: list[tuple[str, str]]) -> list[str]:
    """Submits each `(type, topic)` and returns the ids once every job has ended: each job's
    event stream closes after its terminal state, so reading it to the end is the wait."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=stack.gateway_url, headers=headers, timeout=15) as client:
        ids = []
        for job_type, topic in jobs:
            created = client.post("/api/jobs", json={"type": job_type, "input": {"topic": topic}})
            assert created.status_code == 202, created.text
            ids.append(created.json()["jobId"])
        for job_id in ids:
            with client.stream("GET", f"/api/jobs/{job_id}/events") as events:
                assert events.status_code == 200
                for _ in events.iter_lines():
                    pass
    return ids


def wait_until(check: Callable[[], bool], within: float, what: str) -> None:
    """The testkit's `eventually`, from this synchronous test: in a thread of its own, since
    Playwright's synchronous API keeps an event loop in this one."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(eventually(check, within=within, what=what))).result()


def get(stack: Stack, token: str, path: str) -> dict[str, object]:
    response = httpx.get(f"{stack.gateway_url}{path}", headers={"Authorization": f"Bearer {token}"})
    response.raise_for_status()
    body: dict[str, object] = response.json()
    return body


def expected_404(url: str) -> bool:
    return url.endswith("/favicon.ico")


def row_ids(page: Page) -> list[str]:
    return page.locator("#jobs-list tr").evaluate_all("rows => rows.map(r => r.dataset.jobId)")


def show(page: Page, *, status: str = "", job_type: str = "", limit: str = "20") -> None:
    page.select_option("#filter-status", status)
    page.select_option("#filter-type", job_type)
    page.select_option("#filter-limit", limit)
    page.click("#jobs-load")
    expect(page.locator("#jobs-state")).to_have_attribute("data-state", "loaded")


def budget_pixels(page: Page) -> int:
    """Pixels of the budget line's colour on the chart's canvas, along the row where the page
    says the budget is: the line was really drawn there."""
    pixels: int = page.evaluate(
        """([r, g, b]) => {
            const box = document.getElementById("spend-chart");
            const canvas = box.querySelector("canvas");
            const y = Number(box.dataset.budgetY);
            const context = canvas.getContext("2d");
            let count = 0;
            for (const dy of [-1, 0, 1]) {
                const row = context.getImageData(0, y + dy, canvas.width, 1).data;
                for (let i = 0; i < row.length; i += 4) {
                    const near = Math.abs(row[i] - r) + Math.abs(row[i + 1] - g)
                        + Math.abs(row[i + 2] - b);
                    if (near < 60 && row[i + 3] > 200) count += 1;
                }
            }
            return count;
        }""",
        list(BUDGET_RGB),
    )
    return pixels


def test_my_jobs_lists_filters_and_pages_the_jobs_shows_history_cost_and_the_spend_chart(
    stack: Stack, browser: Browser
) -> None:
    httpx.post(f"{stack.simulator_url}/_sim/reset").raise_for_status()
    httpx.put(
        f"{stack.simulator_url}/_sim/config", json={"latencyS": 0.5, "tokensPerS": 400}
    ).raise_for_status()
    token = stack.dev_token("my-jobs-user")
    ids = submit_and_wait(
        stack,
        token,
        [
            ("script_generation", "tide pools"),
            ("title_generation", "glaciers"),
            ("script_generation", "lichens"),
        ],
    )
    jobs = {job_id: get(stack, token, f"/api/jobs/{job_id}") for job_id in ids}
    assert {job["status"] for job in jobs.values()} == {"succeeded"}
    costs = {job_id: job["usage"]["costUsd"] for job_id, job in jobs.items()}  # type: ignore[index]
    assert all(cost > 0 for cost in costs.values()), costs

    # The month's aggregate is kept as jobs end; it may trail the job's own row a moment.
    wait_until(
        lambda: get(stack, token, "/api/usage")["jobs"] == len(ids),
        within=10,
        what="/api/usage counts the three jobs",
    )

    context = browser.new_context(viewport={"width": 900, "height": 1000})
    try:
        page = context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        # The one expected 404: the gateway has no favicon (the browser's own request). The
        # history of a finished job is the job-store's, never the page's fallback.
        page.on(
            "console",
            lambda message: (
                problems.append(message.text)
                if message.type == "error" and not expected_404(message.location.get("url", ""))
                else None
            ),
        )
        page.goto(f"{stack.gateway_url}/")
        page.fill("#token", token)

        # Paged: two, then the third after "More"; newest first.
        show(page, limit="2")
        newest_first = list(reversed(ids))
        assert row_ids(page) == newest_first[:2]
        expect(page.locator("#jobs-more")).to_be_visible()
        page.click("#jobs-more")
        expect(page.locator("#jobs-list tr")).to_have_count(3)
        assert row_ids(page) == newest_first
        expect(page.locator("#jobs-more")).to_be_hidden()

        # A filter narrows the list.
        show(page, job_type="title_generation")
        assert row_ids(page) == [ids[1]]
        show(page, status="failed")
        expect(page.locator("#jobs-list tr")).to_have_count(0)
        show(page, job_type="script_generation", status="succeeded")
        assert row_ids(page) == [ids[2], ids[0]]

        # A job's cost and history.
        page.click(f'#jobs-list tr[data-job-id="{ids[2]}"]')
        detail = page.locator("#job-detail")
        expect(detail).to_have_attribute("data-state", "loaded")
        expect(detail).to_have_attribute("data-job-id", ids[2])
        assert page.locator("#detail-status").inner_text() == "succeeded"
        cost = costs[ids[2]]
        assert page.locator("#detail-cost").inner_text() == f"${cost:.6f}"
        assert float(page.locator("#detail-cost").get_attribute("data-cost-usd") or 0) == cost
        assert re.search(r"\d+ tokens out", page.locator("#detail-usage").inner_text())
        # The job-store's history, every change applied, not the one the page makes up.
        expect(page.locator("#job-history")).to_have_attribute("data-source", "history")
        history = page.locator("#job-history li")
        real = get(stack, token, f"/api/jobs/{ids[2]}/history")["entries"]
        assert isinstance(real, list)
        expect(history).to_have_count(len(real))
        assert "requested → pending (gateway)" in history.first.inner_text()
        assert "completed → succeeded" in history.last.inner_text()

        # The month's spend per day against the budget, drawn by uPlot on a canvas.
        chart = page.locator("#spend-chart")
        expect(chart).to_have_attribute("data-state", "drawn")
        expect(chart.locator("canvas")).to_have_count(1)
        today = datetime.now(UTC).date()
        usage = get(stack, token, "/api/usage")
        first, last = date.fromisoformat(str(usage["from"])), date.fromisoformat(str(usage["to"]))
        assert first <= today <= last
        assert chart.get_attribute("data-days") == str((last - first).days + 1)
        spent = float(chart.get_attribute("data-spent-usd") or 0)
        assert spent == pytest.approx(sum(costs.values()), abs=1e-6)
        assert chart.get_attribute("data-limit-usd") == str(BUDGET_USD)
        assert budget_pixels(page) > 50, "no budget line on the canvas"
        assert "budget" in page.locator("#spend-summary").inner_text()
        assert problems == []
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "demo-my-jobs.png", full_page=True)
        assert (ARTIFACTS / "demo-my-jobs.png").stat().st_size > 0
    finally:
        context.close()


def test_the_vendored_chart_library_is_the_version_recorded_with_its_licence(
    stack: Stack,
) -> None:
    header = (UPLOT / "uPlot.esm.js").read_text()[:400]
    assert f"(v{UPLOT_VERSION})" in header
    assert UPLOT_VERSION in (UPLOT / "README.md").read_text()
    assert "MIT License" in (UPLOT / "LICENSE").read_text()
    for name in ("uPlot.esm.js", "uPlot.min.css"):
        served = httpx.get(f"{stack.gateway_url}/demo/vendor/uplot/{name}")
        assert served.status_code == 200
        assert served.content == (UPLOT / name).read_bytes()
