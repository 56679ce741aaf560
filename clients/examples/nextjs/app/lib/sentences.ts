/** What went wrong, as a sentence a person can read, from a job's error or a failed request. */

import { ApiError, type JobError } from "@ai-jobs/client";

const JOB_ERRORS: Record<string, string> = {
  deadline_exceeded: "The job ran longer than its type allows and was stopped.",
  result_expired: "The job's result is no longer kept.",
};

/** Why a job ended `failed`. */
export function jobFailure(error: JobError | null | undefined): string {
  if (!error) return "The job failed.";
  return JOB_ERRORS[error.code] ?? `The job failed: ${error.message.replace(/\.?$/, ".")}`;
}

/** Why reading the job stopped: a refused request, a lost connection, or anything else. */
export function requestFailure(error: Error): string {
  if (error instanceof ApiError) {
    const problem = error.problem;
    const details = (problem?.errors ?? []).map((item) => item.detail);
    if (details.length > 0) return details.join(" ");
    if (error.status === 401) return "The page's access to this job has lapsed; reload the page.";
    if (error.status === 403 || error.status === 404) return "There is no such job, or it is not yours.";
    if (problem?.detail) return problem.detail;
    if (error.kind === "network") return "The connection to the job service was lost.";
    if (error.status !== null && error.status >= 500) return "The job service is unavailable right now.";
  }
  return error.message;
}
