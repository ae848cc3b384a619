// The console's decisions that need no browser: which actions a payment allows and
// why not, how "final or why not" reads, and how an API refusal is shown.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = fileURLToPath(new URL(".", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "console-test-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const entry = join(dir, "entry.ts");
const src = resolve(here, "../../console/src");
writeFileSync(
  entry,
  `export { actionRules } from ${JSON.stringify(join(src, "payment.ts"))};
   export { finalText } from ${JSON.stringify(join(src, "list.ts"))};
   export { describeError } from ${JSON.stringify(join(src, "api.ts"))};`,
);
await build({ entryPoints: [entry], bundle: true, format: "esm", outfile: join(dir, "out.mjs"), logLevel: "silent" });
const { actionRules, finalText, describeError } = await import(join(dir, "out.mjs"));

test("a terminal payment's cancel and retry are disabled with the reason; resolve only in investigation", () => {
  const rules = actionRules({ payment_id: "p", status: "succeeded", version: 2 });
  assert.match(rules.cancel, /a succeeded payment cannot be cancelled/);
  assert.match(rules.retry, /only a failed payment can be retried/);
  assert.match(rules.resolve, /only a payment in investigation_required/);
  assert.equal(actionRules({ payment_id: "p", status: "investigation_required", version: 3 }).resolve, null);
});

test("an action the capabilities do not support is disabled with the rail and country", () => {
  const p = {
    payment_id: "p",
    status: "pending",
    version: 1,
    capabilities: { features: { cancel: false, retry: true }, rail: "upi", country: "IN" },
  };
  assert.equal(actionRules(p).cancel, "cancel is not supported on rail upi in IN");
  assert.equal(actionRules({ ...p, capabilities: { features: { cancel: true } } }).cancel, null);
  assert.equal(actionRules({ ...p, status: "failed" }).retry, null);
});

test("final or why not", () => {
  assert.equal(finalText({ final: true }), "yes");
  assert.equal(finalText({ final: false, not_final_because: "awaiting_ledger_posted" }), "no: awaiting ledger posted");
  assert.equal(finalText({ final: false }), "no");
});

test("an API refusal is shown as the API said it: problem+json title and detail, or error and message", () => {
  assert.equal(
    describeError(422, JSON.stringify({ type: "about:blank", title: "unsupported_feature", detail: "cancel is not supported" })),
    "unsupported_feature: cancel is not supported",
  );
  assert.equal(describeError(409, JSON.stringify({ error: "conflict", message: "already cancelled" })), "conflict: already cancelled");
  assert.equal(describeError(502, "bad gateway"), "HTTP 502: bad gateway");
  assert.equal(describeError(500, ""), "HTTP 500");
});
