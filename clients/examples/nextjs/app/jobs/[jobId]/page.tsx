/** `/jobs/{jobId}`: the job as the gateway has it now (read on the server, so a reload shows its
 * status at once), then its live status and text in the browser. */

import Link from "next/link";
import { notFound } from "next/navigation";

import { GatewayRefused, getJob } from "@/app/lib/gateway";

import { JobPanel } from "./job-panel";

export default async function JobPage({ params }: { params: Promise<{ jobId: string }> }) {
  const { jobId } = await params;
  const job = await getJob(jobId).catch((error: unknown) => {
    if (error instanceof GatewayRefused && error.status === 404) notFound();
    throw error;
  });
  return (
    <main>
      <p>
        <Link href="/">New job</Link>
      </p>
      <h1>
        {job.type} <small id="job-id">{job.jobId}</small>
      </h1>
      <p>Topic: {String(job.input.topic ?? "")}</p>
      <JobPanel initial={job} />
    </main>
  );
}
