// Bundles the React example (`node examples/react/build.mjs [outdir]`, default
// examples/react/dist): app.jsx with React from clients/js/node_modules (`npm ci` there first)
// into one ES module, app.js, beside a copy of index.html. Prints the output folder.

import { copyFile, mkdir } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import path from "node:path";

import { build } from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));

export async function bundle(outdir = path.join(here, "dist")) {
  await mkdir(outdir, { recursive: true });
  await build({
    entryPoints: [path.join(here, "app.jsx")],
    outfile: path.join(outdir, "app.js"),
    bundle: true,
    format: "esm",
    jsx: "automatic",
    // React's development build: StrictMode's double mount happens only there (as under
    // `next dev`), and the example is there to show the hooks survive it. No `process` in
    // the browser: the define replaces it.
    define: { "process.env.NODE_ENV": '"development"' },
    target: "es2022",
    minify: true,
    logLevel: "warning",
  });
  await copyFile(path.join(here, "index.html"), path.join(outdir, "index.html"));
  return outdir;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  console.log(await bundle(process.argv[2] ? path.resolve(process.argv[2]) : undefined));
}
