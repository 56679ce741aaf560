/** The browser's side of job tokens: a token provider per job for the client, which asks this
 * app's server (`POST /api/job-token/{jobId}`) for a fresh token when the one held is about to
 * lapse, and again when the gateway answers 401. The browser never sees the session token. */

import { JobsClient } from "@ai-jobs/client";

import { GATEWAY_PREFIX } from "./gateway-url";

export interface JobGrant {
  token: string;
  expiresAt: string;
}

// The submit action's token survives the client-side navigation to the job's page (module
// state does), so that page needs no second one; a reload starts empty and asks the server.
const grants = new Map<string, JobGrant>();

// A token is renewed this long before the expiry the gateway announced, so a request does not
// leave with a token that lapses on its way.
const RENEW_BEFORE_MS = 2_000;

export function rememberGrant(jobId: string, grant: JobGrant): void {
  grants.set(jobId, grant);
}

async function freshGrant(jobId: string): Promise<JobGrant> {
  const response = await fetch(`/api/job-token/${encodeURIComponent(jobId)}`, { method: "POST" });
  const body = (await response.json().catch(() => null)) as (JobGrant & { message?: string }) | null;
  if (!response.ok || !body?.token) {
    throw new Error(body?.message ?? `The app could not get a token to read the job (${response.status}).`);
  }
  return { token: body.token, expiresAt: body.expiresAt };
}

/** The provider the client calls before its requests and again after a 401: the token held
 * while it is good, else a fresh one from this app's server. */
export function jobTokenProvider(jobId: string): () => Promise<string> {
  let asking: Promise<JobGrant> | null = null; // one request for a token at a time
  return async () => {
    const held = grants.get(jobId);
    if (held && Date.parse(held.expiresAt) - Date.now() > RENEW_BEFORE_MS) return held.token;
    asking ??= freshGrant(jobId)
      .then((grant) => {
        grants.set(jobId, grant);
        return grant;
      })
      .finally(() => {
        asking = null;
      });
    return (await asking).token;
  };
}

/** A `fetch` that forgets the job's token once the gateway refused it (401), so the provider's
 * next call, which the client makes before giving up, fetches a fresh one even when the clocks
 * disagree about the expiry. */
function forgettingRefusedTokens(jobId: string): typeof fetch {
  return async (input, init) => {
    const response = await fetch(input, init);
    if (response.status === 401) {
      const sent = new Headers(init?.headers).get("Authorization");
      if (sent === `Bearer ${grants.get(jobId)?.token}`) grants.delete(jobId);
    }
    return response;
  };
}

/** A client that reads one job through the same-origin prefix with that job's tokens. */
export function jobsClientFor(jobId: string): JobsClient {
  const token = jobTokenProvider(jobId);
  return new JobsClient({
    baseUrl: GATEWAY_PREFIX,
    token,
    fetch: forgettingRefusedTokens(jobId),
  });
}
