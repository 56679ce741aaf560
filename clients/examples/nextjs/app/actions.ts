"use server";

/** The server actions the pages call: submit (create the job with the session token, then mint
 * the browser's job token) and cancel (a job token can only read, so cancel happens here). */

import { cancelJob, createJob, GatewayRefused, mintJobToken } from "./lib/gateway";

/** A submitted job and the token the browser reads it with. */
export type Submitted = { ok: true; jobId: string; token: string; expiresAt: string };
export type Refused = { ok: false; message: string };

function refused(error: unknown): Refused {
  if (error instanceof GatewayRefused) return { ok: false, message: error.message };
  throw error;
}

export async function submitJob(_previous: Submitted | Refused | null, form: FormData): Promise<Submitted | Refused> {
  const type = String(form.get("type") ?? "");
  const topic = String(form.get("topic") ?? "");
  try {
    const { jobId } = await createJob(type, { topic });
    const { token, expiresAt } = await mintJobToken(jobId);
    return { ok: true, jobId, token, expiresAt };
  } catch (error) {
    return refused(error);
  }
}

export async function cancelJobAction(jobId: string): Promise<{ ok: true } | Refused> {
  try {
    await cancelJob(jobId);
    return { ok: true };
  } catch (error) {
    if (error instanceof GatewayRefused && error.status === 409) {
      return { ok: false, message: "The job has already ended; there is nothing to cancel." };
    }
    return refused(error);
  }
}
