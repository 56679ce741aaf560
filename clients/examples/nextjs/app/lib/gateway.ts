/** The server's calls to the gateway, made with the user's session token, which never reaches
 * the browser. Imported only by server code (actions, route handlers, server components). */

import type { JobAccepted, JobTypeList, JobView, Problem } from "@ai-jobs/client";

import { gatewayUrl } from "./gateway-url";

/** A short-lived token that reads one job (`POST /api/jobs/{jobId}/token`). */
export interface JobToken {
  token: string;
  expiresAt: string;
}

/** A gateway answer that was not the one hoped for, with a sentence to show a person. */
export class GatewayRefused extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** The caller's session token for the gateway. In this example one user's token comes from the
 * environment; a real app derives it from its own session (a cookie it checks), per request. */
function sessionToken(): string {
  const token = process.env.GATEWAY_USER_TOKEN;
  if (!token) throw new GatewayRefused(500, "The app has no GATEWAY_USER_TOKEN to call the gateway with.");
  return token;
}

/** The sentence a problem answer carries: its field errors (`errors[].detail`), else `detail`. */
function sentence(status: number, problem: Partial<Problem> | null): string {
  const details = (problem?.errors ?? []).map((error) => error.detail).filter(Boolean);
  if (details.length > 0) return details.join(" ");
  if (problem?.detail) return problem.detail;
  if (status === 404) return "There is no such job.";
  if (status === 429) return "Too many requests at once; try again in a moment.";
  if (status >= 500) return "The job service is unavailable; try again in a moment.";
  return `The job service answered ${status}.`;
}

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  let response: Response;
  try {
    response = await fetch(`${gatewayUrl()}${path}`, {
      method,
      headers: {
        Authorization: `Bearer ${sessionToken()}`,
        Accept: "application/json",
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    throw new GatewayRefused(503, "The job service cannot be reached; try again in a moment.");
  }
  const text = await response.text();
  let parsed: unknown = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    // A proxy's HTML error page: the status alone says what happened.
  }
  if (!response.ok) throw new GatewayRefused(response.status, sentence(response.status, parsed as Partial<Problem> | null));
  return parsed as T;
}

export function createJob(type: string, input: Record<string, unknown>): Promise<JobAccepted> {
  return call("POST", "/api/jobs", { type, input });
}

/** A fresh token for the browser to read this one job with (the owner only). */
export function mintJobToken(jobId: string): Promise<JobToken> {
  return call("POST", `/api/jobs/${encodeURIComponent(jobId)}/token`);
}

export function getJob(jobId: string): Promise<JobView> {
  return call("GET", `/api/jobs/${encodeURIComponent(jobId)}`);
}

export function cancelJob(jobId: string): Promise<JobView> {
  return call("POST", `/api/jobs/${encodeURIComponent(jobId)}/cancel`);
}

export function listJobTypes(): Promise<JobTypeList> {
  return call("GET", "/api/job-types");
}
