/** `/`: the form; the job types come from the gateway, read on the server. */

import { GatewayRefused, listJobTypes } from "./lib/gateway";
import { SubmitForm } from "./submit-form";

// The list is read per request: the gateway is only known when the app runs, not at build.
export const dynamic = "force-dynamic";

async function jobTypes(): Promise<string[]> {
  try {
    return (await listJobTypes()).items.map((item) => item.type);
  } catch (error) {
    if (error instanceof GatewayRefused) return [];
    throw error;
  }
}

export default async function Home() {
  const types = await jobTypes();
  return (
    <main>
      <h1>Ask the model</h1>
      {types.length === 0 ? (
        <p role="alert">The job service cannot be reached; reload the page in a moment.</p>
      ) : (
        <SubmitForm types={types} />
      )}
    </main>
  );
}
