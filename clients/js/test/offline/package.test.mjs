// The package as a team installs it: `npm pack` holds exactly the files it should, the tarball
// installs into an empty project, both entry points import in Node, and TypeScript resolves
// their types (`tsc --noEmit`), including `createJob` checked per job type when the OpenAPI
// document describes each type's input (the fixture in test/fixtures). Needs `npm ci` in
// clients/js first (typescript and react are devDependencies); tests/e2e/test_client_js_offline.py
// runs it.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, symlink, writeFile, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { after, before, test } from "node:test";

import { generate } from "../../generate-types.mjs";

const run = promisify(execFile);
const CLIENT = fileURLToPath(new URL("../..", import.meta.url));
const BIN = path.dirname(process.execPath);
// npm is a Node script that finds `node` on the PATH: this Node's folder first.
const ENV = { ...process.env, PATH: `${BIN}${path.delimiter}${process.env.PATH}`, npm_config_loglevel: "error" };
// npm as Node's own layout has it (beside this Node), run by this Node.
const NPM_CLI = path.join(BIN, "..", "lib", "node_modules", "npm", "bin", "npm-cli.js");
const npm = (args, options) => run(process.execPath, [NPM_CLI, ...args], { env: ENV, ...options });
const TSC = path.join(CLIENT, "node_modules", "typescript", "bin", "tsc");

let work;
let project;
let tarball;

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), "ai-jobs-client-pack-"));
  const { stdout } = await npm(["pack", "--json", "--pack-destination", work], { cwd: CLIENT });
  const [packed] = JSON.parse(stdout);
  tarball = { ...packed, path: path.join(work, packed.filename) };
  project = path.join(work, "app");
  await mkdir(project);
  await writeFile(
    path.join(project, "package.json"),
    JSON.stringify({ name: "app", private: true, type: "module", dependencies: { "@ai-jobs/client": `file:${tarball.path}` } }),
  );
  await npm(["install", "--no-audit", "--no-fund", "--prefer-offline"], { cwd: project });
  // React is the app's own (a peer dependency): the one clients/js installed for its tests.
  await symlink(path.join(CLIENT, "node_modules", "react"), path.join(project, "node_modules", "react"), "dir");
});

after(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

test("npm pack holds the client, the hooks, their types, README and CHANGELOG, nothing else", async () => {
  const { version } = JSON.parse(await readFile(path.join(CLIENT, "package.json"), "utf8"));
  assert.equal(tarball.name, "@ai-jobs/client");
  assert.equal(tarball.version, version);
  assert.deepEqual(tarball.files.map((f) => f.path).sort(), [
    "CHANGELOG.md",
    "README.md",
    "api-types.d.ts",
    "jobs-client.d.ts",
    "jobs-client.js",
    "package.json",
    "react.d.ts",
    "react.js",
  ]);
  const changelog = await readFile(path.join(CLIENT, "CHANGELOG.md"), "utf8");
  assert.match(changelog, new RegExp(`^## ${version.replaceAll(".", "\\.")}\\b`, "m"));
});

test("both entry points import from the installed package in Node", async () => {
  const script = `
    const client = await import("@ai-jobs/client");
    const react = await import("@ai-jobs/client/react");
    const jobs = new client.JobsClient({ baseUrl: "http://127.0.0.1:1", token: () => "t" });
    console.log(JSON.stringify({
      client: Object.keys(client).sort(),
      react: Object.keys(react).sort(),
      failed: new client.JobFailedError({ jobId: "j", status: "failed", error: null }, "so far") instanceof client.JobEndedError,
      methods: ["createJobToken", "watchJobs", "setToken", "listJobs"].every((m) => typeof jobs[m] === "function"),
    }));
  `;
  const { stdout } = await run(process.execPath, ["--input-type=module", "-e", script], { cwd: project, env: ENV });
  const seen = JSON.parse(stdout);
  for (const name of ["ApiError", "JobCanceledError", "JobEndedError", "JobFailedError", "JobsClient", "WaitTimeoutError"]) {
    assert.ok(seen.client.includes(name), name);
  }
  assert.deepEqual(seen.react, ["JobsClientProvider", "useJob", "useJobOutput", "useJobsClient", "useSubmitJob"]);
  assert.ok(seen.failed);
  assert.ok(seen.methods);
});

const TSCONFIG = {
  compilerOptions: {
    strict: true,
    noEmit: true,
    module: "nodenext",
    moduleResolution: "nodenext",
    target: "es2022",
    lib: ["es2022", "dom"],
    // React ships no types of its own (they are @types/react, the app's choice): the package's
    // react.d.ts is not checked here, the app's use of it is.
    skipLibCheck: true,
  },
  files: ["index.ts"],
};

async function typecheck(source) {
  await writeFile(path.join(project, "tsconfig.json"), JSON.stringify(TSCONFIG));
  await writeFile(path.join(project, "index.ts"), source);
  try {
    await run(process.execPath, [TSC, "-p", "."], { cwd: project, env: ENV });
    return "";
  } catch (error) {
    return `${error.stdout}${error.stderr}`;
  }
}

test("TypeScript resolves the types of both entry points", async () => {
  const errors = await typecheck(`
    import { ApiError, JobFailedError, JobsClient, type ConnectionStatus, type Job } from "@ai-jobs/client";
    import type { JobOutputState } from "@ai-jobs/client/react";

    const jobs = new JobsClient({ token: async () => "t", onConnectionChange: (s: ConnectionStatus) => s });
    export async function run(): Promise<string> {
      const { jobId } = await jobs.createJob("script_generation", { topic: "x" });
      const { token, expiresAt } = await jobs.createJobToken(jobId);
      jobs.setToken(token);
      try {
        const job: Job = await jobs.waitForJob(jobId, { onConnection: (s) => s, onText: (t, o) => t + o });
        return \`\${job.status} \${job.cancelRequested ?? false} \${expiresAt}\`;
      } catch (error) {
        if (error instanceof JobFailedError) return error.text + error.job.status;
        if (error instanceof ApiError && error.kind === "http") return String(error.status);
        throw error;
      }
    }
    export const state: Pick<JobOutputState, "connection"> = { connection: "paused" };
  `);
  assert.equal(errors, "");
});

test("with each type's input in the OpenAPI document, createJob checks the input against its type", async () => {
  const fixture = JSON.parse(await readFile(new URL("../fixtures/openapi-job-types.json", import.meta.url), "utf8"));
  await writeFile(path.join(project, "node_modules", "@ai-jobs", "client", "api-types.d.ts"), generate(fixture));
  const errors = await typecheck(`
    import { JobsClient, type JobType } from "@ai-jobs/client";

    const jobs = new JobsClient();
    export const types: JobType[] = ["title_generation", "video_outline"];
    export const ok = [
      jobs.createJob("title_generation", { topic: "tides", count: 3 }),
      jobs.createJob("video_outline", { topic: "tides", sections: ["a"], tone: "calm" }),
    ];
    // @ts-expect-error: an unknown type
    jobs.createJob("poem", { topic: "x" });
    // @ts-expect-error: video_outline needs sections
    jobs.createJob("video_outline", { topic: "x" });
    // @ts-expect-error: count is a number
    jobs.createJob("title_generation", { topic: "x", count: "3" });
  `);
  assert.equal(errors, "");
  // And an unused @ts-expect-error would fail: the checks above are real.
  const loose = await typecheck(`
    import { JobsClient } from "@ai-jobs/client";
    // @ts-expect-error: nothing is wrong here
    new JobsClient().createJob("title_generation", { topic: "x" });
  `);
  assert.match(loose, /Unused '@ts-expect-error' directive/);
});
