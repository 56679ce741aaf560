// The demo page's script: a file of its own, since the page's CSP allows no inline script.
// The job's status comes from its event stream (waitForJob), its text token by token from
// `/api/jobs/{jobId}/output` (streamOutput). The job id is kept in the URL (`#job=`) and, with
// the text and its code-point offset, in sessionStorage, so a reload mid-answer shows the text
// so far and resumes the stream from that offset. The "My jobs" view is my-jobs.js.
import { ApiError, JobsClient } from "/demo/jobs-client.js";
import { refreshMyJobs, setUpMyJobs } from "/demo/my-jobs.js";

const $ = (id) => document.getElementById(id);
const tokenField = $("token");
tokenField.value = localStorage.getItem("ai-jobs-token") ?? "";
const TERMINAL = new Set(["succeeded", "failed", "canceled"]);
const CURRENT = "ai-jobs-demo-job";
const outputKey = (jobId) => `ai-jobs-demo-output:${jobId}`;
let current = null;

function show(status, detail = "") {
  $("status").textContent = status;
  $("status").dataset.status = status;
  $("error").textContent = detail;
}

function log(text) {
  const item = document.createElement("li");
  item.textContent = `${new Date().toISOString().slice(11, 23)} ${text}`;
  $("log").append(item);
}

function saved(jobId) {
  try {
    const { text, offset } = JSON.parse(sessionStorage.getItem(outputKey(jobId)) ?? "null");
    if (typeof text === "string" && Number.isInteger(offset) && offset >= 0) return { text, offset };
  } catch {
    // Nothing usable kept: start from the beginning.
  }
  return { text: "", offset: 0 };
}

/** Shows `output.text` at most once per animation frame, and keeps it for a reload. */
function outputView(jobId, output) {
  let frame = null;
  const draw = () => {
    frame = null;
    $("output").textContent = output.text;
    $("output").dataset.offset = String(output.offset);
    sessionStorage.setItem(outputKey(jobId), JSON.stringify(output));
  };
  return {
    update() {
      frame ??= requestAnimationFrame(draw);
    },
    now() {
      if (frame !== null) cancelAnimationFrame(frame);
      draw();
    },
  };
}

async function watch(client, jobId, resumed) {
  const controller = new AbortController();
  current = { client, controller, jobId };
  history.replaceState(null, "", `#job=${encodeURIComponent(jobId)}`);
  sessionStorage.setItem(CURRENT, jobId);
  $("job-id").textContent = jobId;
  $("cancel").disabled = false;
  $("output").dataset.resumedFrom = String(resumed.offset);
  const output = { ...resumed };
  const view = outputView(jobId, output);
  view.now();
  // Without the output route (an older gateway), partial output comes from the event stream.
  let streamed = true;
  const reading = client
    .streamOutput(jobId, {
      fromOffset: output.offset,
      signal: controller.signal,
      onConnection: (connection) => ($("output").dataset.connection = connection),
      onText: (text, offset) => {
        output.text += text;
        output.offset = offset;
        $("output").dataset.progress = String(Number($("output").dataset.progress) + 1);
        view.update();
      },
    })
    .then(
      () => view.now(),
      (error) => {
        if (controller.signal.aborted) return;
        streamed = false;
        log(`output stream unavailable: ${error instanceof ApiError ? error.status : error.message}`);
      },
    );
  try {
    const job = await client
      .waitForJob(jobId, {
        signal: controller.signal,
        onUpdate: (job) => {
          log(`status ${job.status} (version ${job.version})`);
          if (!TERMINAL.has(job.status)) show(job.status);
        },
        onProgress: (progress) => {
          if (streamed) return;
          $("output").textContent = progress.output;
          $("output").dataset.progress = String(Number($("output").dataset.progress) + 1);
        },
      })
      .catch((error) => {
        if (error.job) return error.job;
        throw error;
      });
    // The final status once the text is all here, so the page never says "succeeded" beside
    // half an answer.
    await reading;
    if (!streamed && job.output !== null) $("output").textContent = job.output;
    show(job.status, job.error ? job.error.message : "");
  } catch (error) {
    if (!controller.signal.aborted) show("error", error.message);
  } finally {
    if (current?.jobId === jobId) $("cancel").disabled = true;
  }
  // The list and the month's spend now include this job.
  await refreshMyJobs();
}

function reset() {
  current?.controller.abort(new Error("replaced by a new job"));
  current = null;
  $("output").textContent = "";
  $("output").dataset.progress = "0";
  $("log").replaceChildren();
  $("job-id").textContent = "";
}

$("job-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  reset();
  const token = tokenField.value.trim();
  localStorage.setItem("ai-jobs-token", token);
  const client = new JobsClient({ token });
  show("submitting");
  let jobId;
  try {
    ({ jobId } = await client.createJob($("type").value, { topic: $("topic").value }));
  } catch (error) {
    show("error", error.message);
    return;
  }
  log("created");
  await watch(client, jobId, { text: "", offset: 0 });
});

$("cancel").addEventListener("click", async () => {
  if (!current) return;
  $("cancel").disabled = true;
  try {
    await current.client.cancelJob(current.jobId);
    log("cancel requested");
  } catch (error) {
    log(`cancel refused: ${error.message}`);
  }
});

setUpMyJobs(
  () => tokenField.value.trim(),
  [...$("type").options].map((option) => option.value),
);

// A reload (or a link with `#job=`): pick the job up where the page left it.
const fromUrl = new URLSearchParams(location.hash.slice(1)).get("job");
const resumable = fromUrl ?? sessionStorage.getItem(CURRENT);
if (resumable && tokenField.value.trim()) {
  reset();
  show("resuming");
  log(`resumed after a reload at offset ${saved(resumable).offset}`);
  watch(new JobsClient({ token: tokenField.value.trim() }), resumable, saved(resumable));
}
