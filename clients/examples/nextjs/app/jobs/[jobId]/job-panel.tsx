"use client";

/** The job's live view: status (with "canceling…" once a cancel was asked for), its text as it
 * is written, the stream's connection apart from the job's status, Cancel, and what went wrong
 * as a sentence; a failed job keeps the text it had written. */

import type { JobView } from "@ai-jobs/client";
import { useJob, useJobOutput } from "@ai-jobs/client/react";
import { useMemo, useState, useTransition } from "react";

import { cancelJobAction } from "@/app/actions";
import { jobsClientFor } from "@/app/lib/job-tokens";
import { jobFailure, requestFailure } from "@/app/lib/sentences";

const TERMINAL = new Set(["succeeded", "failed", "canceled"]);

export function JobPanel({ initial }: { initial: JobView }) {
  const jobId = initial.jobId;
  const client = useMemo(() => jobsClientFor(jobId), [jobId]);
  const watched = useJob(jobId, { client });
  const output = useJobOutput(jobId, { client });
  const [cancelProblem, setCancelProblem] = useState<string | null>(null);
  const [cancelAsked, setCancelAsked] = useState(false);
  const [isCanceling, startCancel] = useTransition();

  const job: JobView = watched.job ?? initial;
  // The output's `done` can bring the terminal status a moment before the job's own update.
  const status = TERMINAL.has(job.status) || !output.done || !output.status ? job.status : output.status;
  const ended = TERMINAL.has(status);
  // `cancelRequested` comes from the gateway (so a reload still shows it); the click's own
  // answer shows it before the job's next update arrives.
  const canceling = !ended && (job.cancelRequested === true || cancelAsked);
  const shownStatus = canceling ? "canceling…" : status;

  let problem: string | null = cancelProblem;
  if (status === "failed") {
    problem = jobFailure(job.error ?? (output.error instanceof Error ? null : output.error));
  } else if (watched.error instanceof Error) {
    problem = requestFailure(watched.error);
  } else if (output.error instanceof Error && !ended) {
    problem = requestFailure(output.error);
  }

  const cancel = () =>
    startCancel(async () => {
      const result = await cancelJobAction(jobId);
      setCancelProblem(result.ok ? null : result.message);
      setCancelAsked(result.ok);
    });

  return (
    <section>
      <p>
        Status: <strong id="status">{shownStatus}</strong> · connection:{" "}
        <span id="connection">{output.connection}</span>
      </p>
      <button id="cancel" type="button" onClick={cancel} disabled={ended || isCanceling || canceling}>
        Cancel
      </button>
      {problem ? (
        <p id="error" role="alert">
          {problem}
        </p>
      ) : null}
      <pre id="output" data-length={output.text.length} style={{ whiteSpace: "pre-wrap", background: "#f4f4f4", padding: "1rem" }}>
        {output.text}
      </pre>
    </section>
  );
}
