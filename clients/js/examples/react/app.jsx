// The React example: submit a job with useSubmitJob and watch its status (useJob) and its text
// arriving (useJobOutput), the output stream's connection shown apart from the job's status.
// The gateway's address is `?gateway=` (default: this page's origin); the token is typed in.

import { StrictMode, useMemo, useState } from "react";
import { createRoot } from "react-dom/client";

import { JobsClient } from "../../jobs-client.js";
import { JobsClientProvider, useSubmitJob } from "../../react.js";

const TYPES = ["script_generation", "video_outline", "title_generation"];

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
        <span id="status" data-status={run.status ?? "idle"}>{run.status ?? "idle"}</span>
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
  const client = useMemo(() => new JobsClient({ baseUrl: gateway, token }), [gateway, token]);
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
    </JobsClientProvider>
  );
}

createRoot(document.getElementById("root")).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
