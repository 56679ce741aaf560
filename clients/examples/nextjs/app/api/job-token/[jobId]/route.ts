/** `POST /api/job-token/{jobId}`: a fresh job token for the browser's token provider (called
 * when the page opens a job it has no token for, and again when the gateway answers 401). A
 * real app checks its own session here; the gateway checks that the job is the user's. */

import { GatewayRefused, mintJobToken } from "@/app/lib/gateway";

export async function POST(_request: Request, context: { params: Promise<{ jobId: string }> }): Promise<Response> {
  const { jobId } = await context.params;
  try {
    return Response.json(await mintJobToken(jobId), { headers: { "Cache-Control": "no-store" } });
  } catch (error) {
    if (!(error instanceof GatewayRefused)) throw error;
    return Response.json({ message: error.message }, { status: error.status });
  }
}
