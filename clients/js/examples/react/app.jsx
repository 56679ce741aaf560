// The React example: submit a job with useSubmitJob and watch its status (useJob) and its text
// arriving (useJobOutput), the output stream's connection shown apart from the job's status.
// The gateway's address is `?gateway=` (default: this page's origin); the token is typed in.
// Bundled with React's development build, so StrictMode mounts, unmounts and mounts each
// component again as `next dev` does; the page counts the event streams open at once (and the
// most ever open) so a test can see that the double mount leaves no second stream behind.

import { StrictMode, useMemo, useState, useSyncExternalStore } from "react";
import { createRoot } from "react-dom/client";

import { JobsClient } from "../../jobs-client.js";
import { JobsClientProvider, useSubmitJob } from "../../react.js";

const TYPES = ["script_generation", "video_outline", "title_generation"];

// Event streams whose request is still open: the client aborts each connection's signal when
// it is done with it, so a stream counts from its fetch until that abort.
const streams = { open: 0, most: 0, listeners: new Set() };
function countingFetch(url, init = {}) {
  if (init.headers?.Accept === "text/event-stream" && init.signal && !init.signal.aborted) {
    streams.open += 1;
    streams.most = Math.max(streams.most, streams.open);
    init.signal.addEventListener("abort", () => {
      streams.open -= 1;
      for (const listener of streams.listeners) listener();
    }, { once: true });
    for (const listener of streams.listeners) listener();
  }
  return fetch(url, init);
}
const subscribe = (listener) => {
  streams.listeners.add(listener);
  return () => streams.listeners.delete(listener);
};

function Streams() {
  const open = useSyncExternalStore(subscribe, () => streams.open);
  const most = useSyncExternalStore(subscribe, () => streams.most);
  return (
    <p>
      Event streams open: <span id="streams-open">{open}</span>, at most{" "}
      <span id="streams-most">{most}</span>
    </p>
  );
}

function Job({ type }) {
  const [topic, setTopic] = useState("");
  const [completions, setCompletions] = useState([]);
  const run = useSubmitJob(type, {
    onComplete: (job) => setCompletions((seen) => [...seen, job.status]),
  });
  const { output } = run;
  const onSubmit = (event) => {
    event.preventDefault();
    setCompletions([]);
    run.submit({ topic });
  };
  return (
    <>
      <form id="job-form" onSubmit={onSubmit}>
        <label htmlFor="topic">Topic</label>
        <input id="topic" value={topic} onChange={(e) => setTopic(e.target.value)} required />
        <button id="submit" type="submit" disabled={run.isSubmitting}>Submit</button>
      </form>
      <p>
        Job <span id="job-id">{run.jobId ?? ""}</span>: status{" "}
        <span id="status" data-status={run.status ?? "idle"}>{run.status ?? "idle"}</span>, watch{" "}
        <span id="job-connection">{run.connection}</span>
        {run.submitError ? <span id="submit-error"> {run.submitError.message}</span> : null}
      </p>
      <p>
        Output stream: <span id="connection">{output.connection}</span>, offset{" "}
        <span id="offset">{output.offset}</span>, done{" "}
        <span id="done">{output.done ? output.status : "no"}</span>
      </p>
      <pre id="output">{output.text}</pre>
      <p>onComplete: <span id="completed">{completions.join(",")}</span></p>
    </>
  );
}

function App() {
  const gateway = new URLSearchParams(location.search).get("gateway") ?? "";
  const [token, setToken] = useState("");
  const [type, setType] = useState(TYPES[0]);
  const client = useMemo(
    () => new JobsClient({ baseUrl: gateway, token, fetch: countingFetch }),
    [gateway, token],
  );
  return (
    <JobsClientProvider client={client}>
      <h1>AI jobs: React example</h1>
      <label htmlFor="token">Token</label>
      <textarea id="token" value={token} onChange={(e) => setToken(e.target.value.trim())} />
      <label htmlFor="type">Job type</label>
      <select id="type" value={type} onChange={(e) => setType(e.target.value)}>
        {TYPES.map((t) => (
          <option key={t} value={t}>{t}</option>
        ))}
      </select>
      <Job type={type} />
      <Streams />
    </JobsClientProvider>
  );
}

createRoot(document.getElementById("root")).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
