// The demo page's "My jobs" view: the caller's jobs from `GET /api/jobs` (filtered by status
// and type, paged with its cursor), one job's history and cost (`usage` on
// `GET /api/jobs/{jobId}`), and the month's spend per day from `GET /api/usage` drawn with
// uPlot (vendored under vendor/uplot, served by the gateway: the page's CSP allows no other
// origin) against the month's budget.
import { ApiError } from "/demo/jobs-client.js";
import uPlot from "/demo/vendor/uplot/uPlot.esm.js";

const $ = (id) => document.getElementById(id);
const DAY_S = 86_400;
const SPEND_COLOR = "#3a6ea5";
const TOTAL_COLOR = "#2f8f5b";
// The test reads this colour back from the canvas to know the budget line was drawn.
const BUDGET_COLOR = "#d0342c";

/** `GET` a JSON body from the gateway with the token, or throw an ApiError. */
async function getJson(token, path, { signal } = {}) {
  const response = await fetch(path, {
    headers: { Accept: "application/json", Authorization: `Bearer ${token}` },
    signal,
  });
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON (a proxy's page): the status says enough.
  }
  if (response.status !== 200) throw new ApiError(response.status, body);
  return body;
}

const usd = (value) => (value === null || value === undefined ? "–" : `$${value.toFixed(6)}`);
const when = (iso) => (iso ? iso.replace("T", " ").replace(/\.\d+Z$|Z$/, "") : "");

function setState(state, text) {
  $("jobs-state").dataset.state = state;
  $("jobs-state").textContent = text;
}

/** The list: the filters as they were when "Show" was pressed, and the next page's cursor. */
let listing = null;
let chart = null;

function query(filters, cursor) {
  const params = new URLSearchParams({ limit: filters.limit });
  if (filters.status) params.append("status", filters.status);
  if (filters.type) params.append("type", filters.type);
  if (cursor) params.set("cursor", cursor);
  return `/api/jobs?${params}`;
}

function jobRow(token, job) {
  const row = document.createElement("tr");
  row.dataset.jobId = job.jobId;
  row.dataset.type = job.type;
  row.dataset.status = job.status;
  row.tabIndex = 0;
  const cells = [when(job.createdAt), job.type, job.status, job.jobId.slice(0, 8)];
  for (const text of cells) {
    const cell = document.createElement("td");
    cell.textContent = text;
    row.append(cell);
  }
  row.children[2].className = "status";
  const open = () => showJob(token, job.jobId);
  row.addEventListener("click", open);
  row.addEventListener("keydown", (event) => {
    if (event.key === "Enter") open();
  });
  return row;
}

async function loadPage(token, filters, cursor) {
  setState("loading", "loading…");
  const page = await getJson(token, query(filters, cursor));
  if (!cursor) $("jobs-list").replaceChildren();
  $("jobs-list").append(...page.items.map((job) => jobRow(token, job)));
  listing = { token, filters, cursor: page.nextCursor };
  $("jobs-more").hidden = page.nextCursor === null;
  const shown = $("jobs-list").children.length;
  setState("loaded", `${shown} job${shown === 1 ? "" : "s"}${page.nextCursor ? ", more below" : ""}`);
}

/** Entries of `GET /api/jobs/{jobId}/history`. On its `404` (a job the job-store has not
 * stored yet, whose `GET` the gateway answers from the stream, or a gateway older than that
 * route) the job's own timestamps (the contract's job view) make a shorter history. */
async function historyOf(token, job) {
  try {
    const answer = await getJson(token, `/api/jobs/${encodeURIComponent(job.jobId)}/history`);
    if (Array.isArray(answer?.entries)) {
      return {
        source: "history",
        entries: answer.entries.map((entry) => ({
          at: entry.occurredAt,
          text: `${entry.kind}${entry.summary?.to ? ` → ${entry.summary.to}` : ""} (${entry.source})`,
        })),
      };
    }
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 404) throw error;
  }
  const entries = [{ at: job.createdAt, text: "requested (pending)" }];
  if (job.predictionId) entries.push({ at: null, text: `prediction ${job.predictionId} created` });
  if (job.completedAt) {
    const why = job.error ? `: ${job.error.code}: ${job.error.message}` : "";
    entries.push({ at: job.completedAt, text: `${job.status}${why}` });
  } else {
    entries.push({ at: job.updatedAt, text: `${job.status} (version ${job.version})` });
  }
  return { source: "job", entries };
}

async function showJob(token, jobId) {
  for (const row of $("jobs-list").children) row.classList.toggle("selected", row.dataset.jobId === jobId);
  const detail = $("job-detail");
  detail.hidden = false;
  detail.dataset.state = "loading";
  $("detail-id").textContent = jobId;
  try {
    const job = await getJson(token, `/api/jobs/${encodeURIComponent(jobId)}`);
    $("detail-status").textContent = job.status;
    const usage = job.usage ?? null;
    $("detail-cost").textContent = usage ? usd(usage.costUsd) : "not yet known";
    $("detail-cost").dataset.costUsd = usage ? String(usage.costUsd) : "";
    const parts = [];
    if (usage?.inputTokens != null) parts.push(`${usage.inputTokens} tokens in`);
    if (usage?.outputTokens != null) parts.push(`${usage.outputTokens} tokens out`);
    if (usage?.predictTimeS != null) parts.push(`${usage.predictTimeS.toFixed(2)} s predicting`);
    $("detail-usage").textContent = parts.length ? `(${parts.join(", ")})` : "";
    const history = await historyOf(token, job);
    $("job-history").dataset.source = history.source;
    $("job-history").replaceChildren(
      ...history.entries.map(({ at, text }) => {
        const item = document.createElement("li");
        item.textContent = at ? `${when(at)}  ${text}` : text;
        return item;
      }),
    );
    detail.dataset.jobId = jobId;
    detail.dataset.state = "loaded";
  } catch (error) {
    detail.dataset.state = "error";
    $("detail-status").textContent = `error: ${error.message}`;
  }
}

/** Every UTC day of `from`..`to` (`YYYY-MM-DD`, inclusive) as unix seconds. */
function days(from, to) {
  const start = Date.parse(`${from}T00:00:00Z`) / 1000;
  const end = Date.parse(`${to}T00:00:00Z`) / 1000;
  const out = [];
  for (let day = start; day <= end; day += DAY_S) out.push(day);
  return out;
}

/** The chart's columns: each day's spend (null: none, so no empty bar is drawn), the running
 * total up to today (none for days to come), and the budget (if any). */
export function spendSeries(usage, now = Date.now()) {
  const xs = days(usage.from, usage.to);
  const byDay = usage.byDay ?? {};
  const daily = xs.map((x) => byDay[new Date(x * 1000).toISOString().slice(0, 10)]?.costUsd ?? null);
  let total = 0;
  const running = daily.map((cost, i) => (xs[i] * 1000 <= now ? (total += cost ?? 0) : null));
  const limit = usage.budget?.limitUsd ?? null;
  return { xs, daily, running, total, limit };
}

function drawChart(usage) {
  const { xs, daily, running, total, limit } = spendSeries(usage);
  const box = $("spend-chart");
  chart?.destroy();
  box.replaceChildren();
  const top = Math.max(limit ?? 0, total, 1e-6) * 1.1;
  const dollars = (u, values) => values.map((v) => `$${v < 0.01 && v > 0 ? v.toPrecision(2) : v.toFixed(2)}`);
  const series = [
    {},
    {
      label: "spent that day",
      stroke: SPEND_COLOR,
      fill: "rgba(58, 110, 165, 0.35)",
      paths: uPlot.paths.bars({ size: [0.7, 40] }),
      points: { show: false },
      value: (u, v) => usd(v),
    },
    {
      label: "spent this month",
      stroke: TOTAL_COLOR,
      width: 2,
      points: { show: false },
      value: (u, v) => usd(v),
    },
  ];
  const data = [xs, daily, running];
  if (limit !== null) {
    series.push({
      label: "budget",
      stroke: BUDGET_COLOR,
      width: 2,
      dash: [8, 4],
      points: { show: false },
      value: (u, v) => usd(v),
    });
    data.push(xs.map(() => limit));
  }
  box.dataset.days = String(xs.length);
  box.dataset.spentUsd = String(total);
  box.dataset.limitUsd = limit === null ? "" : String(limit);
  box.dataset.state = "drawing";
  // uPlot lays out and draws after this call returns: only then is a value's place known.
  const drawn = (u) => {
    if (limit !== null) box.dataset.budgetY = String(Math.round(u.valToPos(limit, "y", true)));
    box.dataset.state = "drawn";
  };
  chart = new uPlot(
    {
      width: Math.max(320, Math.floor(box.getBoundingClientRect().width)),
      height: 260,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      scales: { x: { time: true }, y: { range: () => [0, top] } },
      axes: [{}, { values: dollars, size: 70 }],
      series,
      hooks: { draw: [drawn] },
    },
    data,
    box,
  );
}

async function loadSpend(token) {
  const box = $("spend-chart");
  box.dataset.state = "loading";
  try {
    const usage = await getJson(token, "/api/usage");
    const budget = usage.budget
      ? ` of a ${usd(usage.budget.limitUsd)} budget (${usd(usage.budget.reservedUsd)} reserved, ${usd(usage.budget.remainingUsd)} left)`
      : " (no budget)";
    $("spend-summary").textContent = `${usage.jobs} jobs, ${usd(usage.costUsd)} from ${usage.from} to ${usage.to}${budget}`;
    drawChart(usage);
  } catch (error) {
    box.dataset.state = "error";
    $("spend-summary").textContent =
      error instanceof ApiError && error.status === 404
        ? "This gateway does not serve usage yet (GET /api/usage)."
        : `Usage unavailable: ${error.message}`;
  }
}

/** The list from its first page with the filters as they are now, and the spend chart. */
export async function showMyJobs(token) {
  const filters = {
    status: $("filter-status").value,
    type: $("filter-type").value,
    limit: $("filter-limit").value,
  };
  $("job-detail").hidden = true;
  const spend = loadSpend(token);
  try {
    await loadPage(token, filters, null);
  } catch (error) {
    $("jobs-list").replaceChildren();
    $("jobs-more").hidden = true;
    setState("error", error.message);
  }
  await spend;
}

/** Again with the same filters, if the view was shown (a job of this page just ended). */
export function refreshMyJobs() {
  if (listing) return showMyJobs(listing.token);
  return Promise.resolve();
}

/** Wires the view's controls; `tokenOf` reads the token field when a button is pressed. */
export function setUpMyJobs(tokenOf, jobTypes) {
  for (const type of jobTypes) $("filter-type").append(new Option(type, type));
  $("jobs-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    showMyJobs(tokenOf());
  });
  $("jobs-more").addEventListener("click", async () => {
    if (!listing?.cursor) return;
    $("jobs-more").disabled = true;
    try {
      await loadPage(listing.token, listing.filters, listing.cursor);
    } catch (error) {
      setState("error", error.message);
    } finally {
      $("jobs-more").disabled = false;
    }
  });
}
