// The demo page's script: a file of its own, since the page's CSP allows no inline script.
import { JobsClient } from "/demo/jobs-client.js";

const $ = (id) => document.getElementById(id);
const tokenField = $("token");
tokenField.value = localStorage.getItem("ai-jobs-token") ?? "";
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

$("job-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  current?.controller.abort(new Error("replaced by a new job"));
  const token = tokenField.value.trim();
  localStorage.setItem("ai-jobs-token", token);
  const client = new JobsClient({ token });
  const controller = new AbortController();
  $("output").textContent = "";
  $("output").dataset.progress = "0";
  $("log").replaceChildren();
  $("job-id").textContent = "";
  show("submitting");
  let jobId;
  try {
    ({ jobId } = await client.createJob($("type").value, { topic: $("topic").value }));
  } catch (error) {
    show("error", error.message);
    return;
  }
  current = { client, controller, jobId };
  $("job-id").textContent = jobId;
  $("cancel").disabled = false;
  log("created");
  try {
    const job = await client.waitForJob(jobId, {
      signal: controller.signal,
      onUpdate: (job) => {
        show(job.status);
        log(`status ${job.status} (version ${job.version})`);
        if (job.output !== null) $("output").textContent = job.output;
      },
      onProgress: (progress) => {
        $("output").textContent = progress.output;
        $("output").dataset.progress = String(Number($("output").dataset.progress) + 1);
      },
    });
    show(job.status);
  } catch (error) {
    if (error.job) show(error.job.status, error.job.error ? error.job.error.message : "");
    else if (!controller.signal.aborted) show("error", error.message);
  } finally {
    if (current?.jobId === jobId) $("cancel").disabled = true;
  }
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
