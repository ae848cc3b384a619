// Bundles the operator console (clients/console/src, which uses this library) into
// the asset the edge embeds, services/ws-edge/assets/console.js. The bundle is
// committed so the Rust build needs no node; `--check` fails when it is stale.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "../../..");
const entry = resolve(repo, "clients/console/src/main.ts");
const out = resolve(repo, "services/ws-edge/assets/console.js");

const result = await build({
  entryPoints: [entry],
  bundle: true,
  format: "iife",
  target: "es2020",
  write: false,
  legalComments: "none",
  banner: { js: "// Built from clients/console/src by `npm run build:console` in clients/typescript. Do not edit." },
});
const text = result.outputFiles[0].text;
if (process.argv.includes("--check")) {
  let committed = "";
  try {
    committed = readFileSync(out, "utf8");
  } catch {
    // missing counts as stale
  }
  if (committed !== text) {
    console.error(`${out} is stale: run \`npm run build:console\` in clients/typescript and commit it`);
    process.exit(1);
  }
  console.log("console bundle is current");
} else {
  writeFileSync(out, text);
  console.log(`wrote ${out} (${text.length} bytes)`);
}
