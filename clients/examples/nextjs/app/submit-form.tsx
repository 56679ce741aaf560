"use client";

/** The submit form: the server action creates the job and mints its token; the token is handed
 * to the job's page, which opens at once. */

import { useRouter } from "next/navigation";
import { useActionState, useEffect } from "react";

import { submitJob } from "./actions";
import { rememberGrant } from "./lib/job-tokens";

export function SubmitForm({ types }: { types: string[] }) {
  const router = useRouter();
  const [result, submit, isSubmitting] = useActionState(submitJob, null);
  useEffect(() => {
    if (!result?.ok) return;
    rememberGrant(result.jobId, { token: result.token, expiresAt: result.expiresAt });
    router.push(`/jobs/${result.jobId}`);
  }, [result, router]);
  return (
    <form action={submit}>
      <p>
        <label>
          Job type{" "}
          <select id="type" name="type" defaultValue={types[0]}>
            {types.map((type) => (
              <option key={type} value={type}>
                {type}
              </option>
            ))}
          </select>
        </label>
      </p>
      <p>
        <label>
          Topic <input id="topic" name="topic" size={40} />
        </label>
      </p>
      <button id="submit" type="submit" disabled={isSubmitting}>
        {isSubmitting ? "Submitting…" : "Submit"}
      </button>
      {result && !result.ok ? (
        <p id="submit-error" role="alert">
          {result.message}
        </p>
      ) : null}
    </form>
  );
}
