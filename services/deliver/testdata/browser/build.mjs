// Bundles main.ts for the browser: node build.mjs SRC_DIR. SRC_DIR holds
// main.ts and the generated gen/; the bundle is written to SRC_DIR/main.js.
// Packages resolve from this directory's node_modules.
import { build } from "esbuild";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const dir = process.argv[2];
await build({
  entryPoints: [path.join(dir, "main.ts")],
  outfile: path.join(dir, "main.js"),
  bundle: true,
  format: "iife",
  target: "es2022",
  nodePaths: [path.join(here, "node_modules")],
  logLevel: "warning",
});
