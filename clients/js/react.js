// React hooks over jobs-client.js, a separate entry point (`@ai-jobs/client/react`) so that the
// core client never imports React: `useJob` (the job's state, pushed), `useJobOutput` (its text
// as it is written, with the connection's state kept apart from the job's) and `useSubmitJob`
// (create with an Idempotency-Key, then both). Each effect that opens a connection closes it in
// its cleanup, so StrictMode's mount, unmount and mount again leaves one connection, not two.
// Types: react.d.ts.

import {
  createContext,
  createElement,
  useCallback,
  useContext,
  useEffect,
  useRef,
  useState,
} from "react";

import { ApiError } from "./jobs-client.js";

const TERMINAL = new Set(["succeeded", "failed", "canceled"]);
const ClientContext = createContext(null);

/** Makes `client` (a JobsClient) the one the hooks below use. */
export function JobsClientProvider({ client, children }) {
  return createElement(ClientContext.Provider, { value: client }, children);
}

/** The client given, or the provider's. */
export function useJobsClient(client) {
  const provided = useContext(ClientContext);
  const chosen = client ?? provided;
  if (!chosen) throw new Error("no JobsClient: pass { client } or render a JobsClientProvider");
  return chosen;
}

/** The latest value of `value`, for callbacks that must not restart an effect. */
function useLatest(value) {
  const ref = useRef(value);
  useEffect(() => {
    ref.current = value;
  });
  return ref;
}

const NO_JOB = { job: null, error: null, isLoading: false, connection: "closed" };

/**
 * The job's state as it changes (pushed, polling when streams fail): `{job, status, error,
 * isLoading, connection}`. `error`: the job's `error` once it failed, or what stopped the watch
 * (an ApiError such as a 404); `connection`: the watch's connection, apart from the job's
 * status. `onComplete(job)` fires once, on a terminal status only.
 */
export function useJob(jobId, { client, onComplete } = {}) {
  const jobs = useJobsClient(client);
  const completed = useLatest(onComplete);
  const [state, setState] = useState(NO_JOB);
  useEffect(() => {
    if (!jobId) {
      setState(NO_JOB);
      return undefined;
    }
    const controller = new AbortController();
    let fired = false;
    const seen = (job, error = job.error ?? null) => {
      if (controller.signal.aborted) return;
      const terminal = TERMINAL.has(job.status);
      setState((previous) => ({ ...previous, job, error, isLoading: !terminal }));
      if (terminal && !fired) {
        fired = true;
        completed.current?.(job);
      }
    };
    const connected = (connection) => {
      if (!controller.signal.aborted) setState((previous) => ({ ...previous, connection }));
    };
    setState({ job: null, error: null, isLoading: true, connection: "connecting" });
    const watching = { signal: controller.signal, onUpdate: (job) => seen(job), onConnection: connected };
    jobs.waitForJob(jobId, watching).then(
      (job) => seen(job),
      (error) => {
        if (controller.signal.aborted) return;
        if (error.job) seen(error.job);
        else setState((previous) => ({ ...previous, error, isLoading: false, connection: "closed" }));
      },
    );
    return () => controller.abort(new Error("useJob: the job id changed or the component left"));
  }, [jobs, jobId, completed]);
  return { ...state, status: state.job?.status ?? null };
}

const NO_OUTPUT = { text: "", offset: 0, connection: "closed", done: false, status: null, error: null };

/**
 * The job's output text as it is written: `{text, offset, connection, done, status, error}`.
 * The stream starts from offset 0, so a page reloaded mid-answer shows the text so far at
 * once; `fromOffset` with `initialText` (the text already had, e.g. kept in sessionStorage)
 * skips it. `connection` (connecting, open, paused, error, closed) is the stream's, not the
 * job's; `done` once the output ended (`status`: the job's terminal status); `error`: the job's
 * error, or what stopped the stream. Renders at most once per `throttleMs` (50) while text
 * arrives. `fromOffset` and `initialText` are read when `jobId` is set.
 */
export function useJobOutput(jobId, { client, fromOffset = 0, initialText = "", throttleMs = 50 } = {}) {
  const jobs = useJobsClient(client);
  const start = useLatest({ fromOffset, initialText });
  const [state, setState] = useState(NO_OUTPUT);
  useEffect(() => {
    if (!jobId) {
      setState(NO_OUTPUT);
      return undefined;
    }
    const controller = new AbortController();
    const current = {
      text: start.current.initialText,
      offset: start.current.fromOffset,
      connection: "connecting",
      done: false,
      status: null,
      error: null,
    };
    let timer = null;
    const flush = () => {
      timer = null;
      if (!controller.signal.aborted) setState({ ...current });
    };
    // Text arrives token by token; one render per `throttleMs` is plenty for a reader.
    const render = (now) => {
      if (now) {
        if (timer !== null) clearTimeout(timer);
        flush();
      } else if (timer === null) {
        timer = setTimeout(flush, throttleMs);
      }
    };
    setState({ ...current });
    jobs
      .streamOutput(jobId, {
        fromOffset: current.offset,
        signal: controller.signal,
        onText: (text, offset) => {
          current.text += text;
          current.offset = offset;
          render(false);
        },
        onConnection: (connection) => {
          current.connection = connection;
          render(connection !== "open");
        },
      })
      .then(
        (result) => {
          Object.assign(current, { done: true, status: result.status, error: result.error });
          render(true);
        },
        (error) => {
          current.error = error;
          render(true);
        },
      );
    return () => {
      controller.abort(new Error("useJobOutput: the job id changed or the component left"));
      if (timer !== null) clearTimeout(timer);
    };
  }, [jobs, jobId, throttleMs, start]);
  return state;
}

function idempotencyKey() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  const bytes = globalThis.crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// A create whose answer was lost is sent again with the same key: the gateway answers the same
// job instead of making a second one.
const CREATE_ATTEMPTS = 3;

async function createOnce(jobs, type, input, key) {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await jobs.createJob(type, input, { idempotencyKey: key });
    } catch (error) {
      const retryable = !(error instanceof ApiError) || error.status >= 500;
      if (!retryable || attempt >= CREATE_ATTEMPTS) throw error;
      await new Promise((resolve) => setTimeout(resolve, error.retryAfterMs ?? 300 * attempt));
    }
  }
}

/**
 * `submit(input)` creates a job of `type` with a fresh Idempotency-Key (resent unchanged when a
 * create's answer is lost), then watches it: `{submit, reset, jobId, isSubmitting,
 * submitError, job, status, error, isLoading, output}` (`output`: useJobOutput's state, unless
 * `output: false`). `submit` resolves with the gateway's answer, or null (see `submitError`).
 */
export function useSubmitJob(type, { client, onComplete, output = true } = {}) {
  const jobs = useJobsClient(client);
  const [submission, setSubmission] = useState({ jobId: null, isSubmitting: false, submitError: null });
  const latest = useRef(0);
  const submit = useCallback(
    async (input, { idempotencyKey: key = idempotencyKey() } = {}) => {
      const mine = ++latest.current; // an older submit's answer must not replace a newer one
      setSubmission({ jobId: null, isSubmitting: true, submitError: null });
      try {
        const accepted = await createOnce(jobs, type, input, key);
        if (mine === latest.current) {
          setSubmission({ jobId: accepted.jobId, isSubmitting: false, submitError: null });
        }
        return accepted;
      } catch (error) {
        if (mine === latest.current) setSubmission({ jobId: null, isSubmitting: false, submitError: error });
        return null;
      }
    },
    [jobs, type],
  );
  const reset = useCallback(() => {
    latest.current += 1;
    setSubmission({ jobId: null, isSubmitting: false, submitError: null });
  }, []);
  const watched = useJob(submission.jobId, { client: jobs, onComplete });
  const text = useJobOutput(output ? submission.jobId : null, { client: jobs });
  return { submit, reset, ...submission, ...watched, output: text };
}
