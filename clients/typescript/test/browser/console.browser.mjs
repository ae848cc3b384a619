// Drives the operator console in headless Chromium against a real mesh, for the
// Rust acceptance test tests/tests/api/console.rs. The test owns the mesh; this script
// owns the browser and a small proxy in front of the edge (the page's origin), which
// can refuse WebSocket upgrades and be pointed at another edge after one is killed.
//
// It talks to the test over stdio, one line per message: it writes a request
// (`webhook <delivery> <base64 body>`, `kill-edge`, `start-edge`, `log <text>`,
// `pass <scenario>`), the test answers `ok <detail>` or `err <why>`. Screenshots go
// to $ARTIFACTS.
import http from "node:http";
import net from "node:net";
import readline from "node:readline";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

const INGEST = process.env.INGEST_URL;
const TOKEN = process.env.TOKEN;
const ARTIFACTS = process.env.ARTIFACTS;
const ONLY = (process.env.SCENARIOS || "").split(",").filter(Boolean);
const WAIT_MS = Number(process.env.WAIT_MS || 60000);
mkdirSync(ARTIFACTS, { recursive: true });

// --- the test, over stdio ---------------------------------------------------------------
const lines = [];
const waiters = [];
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const w = waiters.shift();
  if (w) w(line);
  else lines.push(line);
});
async function ask(request) {
  process.stdout.write(request + "\n");
  const line = lines.length ? lines.shift() : await new Promise((r) => waiters.push(r));
  if (!line.startsWith("ok")) throw new Error(`${request.split(" ")[0]}: ${line}`);
  return line.slice(3);
}
// Tokens never reach the test's output, even inside a URL the page logged.
const redact = (text) => String(text).replace(/eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+/g, "<jwt>");
const log = (text) => process.stdout.write(`log ${redact(text).replace(/\n/g, " ")}\n`);

async function webhook(delivery, body) {
  const [status, ackedAt] = (await ask(`webhook ${delivery} ${Buffer.from(JSON.stringify(body)).toString("base64")}`)).split(" ");
  if (!status.startsWith("2")) throw new Error(`webhook ${delivery} answered ${status}`);
  return Number(ackedAt);
}
function event(payment, type, extra = {}) {
  return {
    type,
    timestamp: new Date().toISOString(),
    data: { payment_id: payment, provider_ref: `pr_${payment}`, amount_minor: 1250, currency: "USD", merchant_id: "m_console", ...extra },
  };
}
async function rest(method, path, body) {
  const headers = { Authorization: `Bearer ${TOKEN}` };
  if (body) {
    headers["Content-Type"] = "application/json";
    headers["Idempotency-Key"] = `k-${Math.random()}`;
  }
  const r = await fetch(INGEST + path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
  return JSON.parse(text);
}

// --- the proxy in front of the edge ------------------------------------------------------
let edge = new URL(process.env.EDGE_URL);
let refuseUpgrades = false;
const proxy = http.createServer((req, res) => {
  const upstream = http.request(
    { host: edge.hostname, port: edge.port, path: req.url, method: req.method, headers: req.headers },
    (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    },
  );
  upstream.on("error", () => {
    if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain" });
    res.end("no edge");
  });
  req.pipe(upstream);
});
const tunnels = new Set();
proxy.on("upgrade", (req, socket, head) => {
  if (refuseUpgrades) {
    socket.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    return;
  }
  const upstream = net.connect(Number(edge.port), edge.hostname, () => {
    let raw = `${req.method} ${req.url} HTTP/1.1\r\n`;
    for (let i = 0; i < req.rawHeaders.length; i += 2) raw += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
    upstream.write(raw + "\r\n");
    upstream.write(head);
    socket.pipe(upstream).pipe(socket);
  });
  tunnels.add(upstream);
  upstream.on("close", () => {
    tunnels.delete(upstream);
    socket.destroy();
  });
  upstream.on("error", () => socket.destroy());
  socket.on("error", () => upstream.destroy());
});
await new Promise((r) => proxy.listen(0, "127.0.0.1", r));
const ORIGIN = `http://127.0.0.1:${proxy.address().port}`;

// --- the browser -------------------------------------------------------------------------
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });

// The page a scenario opened last, photographed when the scenario fails.
let lastPage;
async function openPage(path, token = TOKEN) {
  const page = await context.newPage();
  lastPage = page;
  page.on("console", (m) => m.type() === "error" && log(`page console: ${m.text()} (${m.location().url})`));
  page.on("pageerror", (e) => log(`page error: ${e.message}`));
  const sep = path.includes("?") ? "&" : "?";
  await page.goto(`${ORIGIN}${path}${sep}token=${encodeURIComponent(token)}&api=${encodeURIComponent(INGEST)}`);
  // Records when watched elements change, in the page's clock (ms since the epoch).
  await page.evaluate(() => {
    window.__changes = [];
    const watch = (id) => {
      const node = document.getElementById(id);
      if (!node) return;
      new MutationObserver(() => window.__changes.push({ id, text: node.textContent, at: Date.now() })).observe(node, {
        childList: true,
        characterData: true,
        subtree: true,
      });
    };
    for (const id of ["p-status", "p-refunded", "conn"]) watch(id);
  });
  return page;
}
async function until(page, what, fn, arg, timeout = WAIT_MS) {
  try {
    return await page.waitForFunction(fn, arg, { timeout, polling: 50 });
  } catch (e) {
    await shot(page, `failed-${what.replace(/[^a-z0-9]+/gi, "-")}`);
    const conn = await page.evaluate(() => document.getElementById("conn")?.dataset.state).catch(() => "?");
    throw new Error(`timed out waiting for ${what} (connection ${conn})`);
  }
}
async function shot(page, name) {
  await page.screenshot({ path: `${ARTIFACTS}/${name}.png`, fullPage: true }).catch(() => {});
}
const text = (page, sel) => page.evaluate((s) => document.querySelector(s)?.textContent?.trim() ?? null, sel);
const connState = (page, state) => until(page, `connection ${state}`, (s) => document.getElementById("conn")?.dataset.state === s, state);
async function changedAt(page, id, expected, after) {
  const handle = await until(
    page,
    `#${id} to read ${expected}`,
    ([i, e, a]) => window.__changes.find((c) => c.id === i && c.text.trim() === e && c.at >= a - 5000),
    [id, expected, after],
  );
  return (await handle.jsonValue()).at;
}

// --- scenarios ---------------------------------------------------------------------------
const scenarios = {
  async live_within_a_second() {
    const p = "pay_console_live";
    await webhook(`${p}-1`, event(p, "payment.pending"));
    const page = await openPage(`/payments/${p}`);
    await until(page, "the page showing pending", () => document.getElementById("p-status")?.textContent === "pending");
    await connState(page, "live");
    await until(page, "the view current (a heartbeat confirmed its position)", () => document.getElementById("currency")?.dataset.state === "current");
    const ack1 = await webhook(`${p}-2`, event(p, "payment.succeeded"));
    const shown1 = await changedAt(page, "p-status", "succeeded", ack1);
    const ack2 = await webhook(`${p}-3`, event(p, "payment.refund.succeeded", { movement: { id: "re_console_1", amount_minor: 500 } }));
    const shown2 = await changedAt(page, "p-refunded", "5.00", ack2);
    // A late, older event changes nothing and is shown as such.
    await webhook(`${p}-4`, event(p, "payment.pending"));
    await until(page, "a fact that changed nothing in the timeline", () => !!document.querySelector('#timeline li[data-kind="fact"]'));
    const nochange = await text(page, '#timeline li[data-kind="fact"]');
    const pack = await page.evaluate(() => document.getElementById("download-evidence")?.getAttribute("download"));
    if (pack !== `evidence-pay_console_live.json`) throw new Error(`no evidence pack to download (${pack})`);
    log(`a fact that changed nothing: ${nochange}`);
    await shot(page, "payment-live");
    log(`measured: status change shown ${shown1 - ack1} ms after the webhook's 2xx, refund ${shown2 - ack2} ms`);
    if (shown1 - ack1 >= 1000 || shown2 - ack2 >= 1000) throw new Error(`too slow: ${shown1 - ack1} ms, ${shown2 - ack2} ms`);
    await page.close();
    return `status ${shown1 - ack1} ms, refund ${shown2 - ack2} ms`;
  },

  async edge_killed_then_recovers() {
    const p = "pay_console_kill";
    await webhook(`${p}-1`, event(p, "payment.pending"));
    const page = await openPage(`/payments/${p}`);
    await until(page, "pending", () => document.getElementById("p-status")?.textContent === "pending");
    await connState(page, "live");
    await ask("kill-edge");
    await connState(page, "reconnecting");
    await shot(page, "edge-killed-reconnecting");
    // While the edge is down the payment moves on.
    await webhook(`${p}-2`, event(p, "payment.held"));
    await webhook(`${p}-3`, event(p, "payment.succeeded"));
    edge = new URL(await ask("start-edge"));
    await connState(page, "live");
    await until(page, "succeeded after the restart", () => document.getElementById("p-status")?.textContent === "succeeded");
    // The page's timeline equals REST's, version for version, with no gap.
    const deadline = Date.now() + WAIT_MS;
    let rest_, shown;
    for (;;) {
      rest_ = JSON.stringify((await rest("GET", `/v1/payments/${p}/timeline`)).filter((t) => t.kind === "transition").map((t) => t.version));
      shown = await page.evaluate(() =>
        JSON.stringify([...document.querySelectorAll('#timeline li[data-kind="transition"]')].map((li) => Number(li.dataset.version))),
      );
      if (rest_ === shown && JSON.parse(shown).length >= 3) break;
      if (Date.now() > deadline) throw new Error(`timeline differs: page ${shown}, REST ${rest_}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const versions = JSON.parse(shown);
    if (versions.some((v, i) => v !== i + 1)) throw new Error(`the timeline has a gap: ${shown}`);
    const restVersions = shown;
    // A gap (an event whose prev_seq does not chain) is healed by a resume from the
    // last position, and the page says so.
    await page.evaluate((id) => {
      const sub = window.paytrack.client.getSubscription(`payment:${id}`);
      const at = sub.position;
      sub._event({ type: "event", channel: `payment:${id}`, kind: "transition", position: { epoch: at.epoch, seq: at.seq + 1000 },
        prev_seq: at.seq + 999, payment_id: id, version: 99, status: "failed" });
    }, p);
    await until(page, "the gap shown as healed", () => {
      const c = document.getElementById("continuity");
      return document.getElementById("gaps")?.textContent === "1" && c?.dataset.state === "recovered" && c.textContent.includes("gap healed");
    });
    if ((await text(page, "#p-status")) !== "succeeded") throw new Error("the event after the gap was applied");
    const continuity = await text(page, "#continuity");
    await shot(page, "edge-killed-recovered");
    await page.close();
    return `timeline ${restVersions}, continuity ${continuity}`;
  },

  async websocket_blocked_falls_back_to_sse() {
    const p = "pay_console_sse";
    await webhook(`${p}-1`, event(p, "payment.pending"));
    refuseUpgrades = true;
    try {
      const page = await openPage(`/payments/${p}`);
      await connState(page, "fallback");
      await until(page, "pending", () => document.getElementById("p-status")?.textContent === "pending");
      const ack = await webhook(`${p}-2`, event(p, "payment.succeeded"));
      const shown = await changedAt(page, "p-status", "succeeded", ack);
      const conn = await text(page, "#conn");
      await shot(page, "fallback-sse");
      await page.close();
      return `${conn}, update shown ${shown - ack} ms after the webhook`;
    } finally {
      refuseUpgrades = false;
    }
  },

  async alert_live_and_acked_with_note() {
    const p = "pay_console_alert";
    const page = await openPage(`/`);
    await connState(page, "live");
    await webhook(`${p}-1`, event(p, "payment.failed"));
    const acked = await webhook(`${p}-2`, event(p, "payment.succeeded"));
    const sel = `#alerts li[data-kind="captured_after_failure"]`;
    const shown = await until(
      page,
      "the alert in the panel",
      (s) => [...document.querySelectorAll(s)].some((li) => li.textContent.includes("pay_console_alert")) && Date.now(),
      sel,
    );
    const alertMs = (await shown.jsonValue()) - acked;
    const position = await text(page, "#alerts-position");
    if (!position.startsWith("ALERT #")) throw new Error(`the alert did not come over the alerts channel (${position})`);
    const li = page.locator(sel, { hasText: p }).first();
    await li.locator(".ack-note-input").fill("refunded by hand, ticket 42");
    await li.locator(".ack-button").click();
    await until(
      page,
      "the acknowledgement with its note and operator",
      (pid) => [...document.querySelectorAll('#alerts li[data-kind="captured_after_failure"]')].some(
        (li) => li.textContent.includes(pid) && li.querySelector(".ack-operator")?.textContent === "operator-1" && li.querySelector(".ack-note")?.textContent === "refunded by hand, ticket 42",
      ),
      p,
    );
    const counts = await text(page, "#alert-counts");
    await shot(page, "alert-acked");
    await page.close();
    return `shown ${alertMs} ms after the webhook's 2xx (${position}); acked by operator-1 with its note; counts now "${counts}"`;
  },

  async actions_disabled_with_reason_and_allowed_change_arrives_live() {
    const done = "pay_console_done";
    await webhook(`${done}-1`, event(done, "payment.succeeded"));
    const page = await openPage(`/payments/${done}`);
    await until(page, "succeeded", () => document.getElementById("p-status")?.textContent === "succeeded");
    const disabled = await page.evaluate(() => document.getElementById("action-cancel").disabled);
    const why = await text(page, "#action-cancel-why");
    if (!disabled || !why.includes("cannot be cancelled")) throw new Error(`cancel not disabled with a reason: ${disabled} ${why}`);
    await page.close();
    const created = await rest("POST", "/v1/payments", { merchant_id: "m_console", amount_minor: 990, currency: "USD", rail: "card", country: "US" });
    const id = created.payment_id;
    const page2 = await openPage(`/payments/${id}`);
    await until(page2, "initiated", () => document.getElementById("p-status")?.textContent === "initiated");
    await connState(page2, "live");
    await page2.click("#action-cancel");
    await until(page2, "the cancel accepted", () => document.getElementById("action-result")?.dataset.outcome === "accepted");
    await until(page2, "cancelled, live", () => document.getElementById("p-status")?.textContent === "cancelled");
    const live = await page2.evaluate(() => [...document.querySelectorAll("#live-log li")].some((li) => li.textContent.includes("cancelled")));
    if (!live) throw new Error("the cancel did not arrive as a live event");
    await shot(page2, "action-cancelled");
    await page2.close();
    return `disabled: "${why}"; ${id} cancelled and shown live`;
  },

  async late_heartbeats_show_stale_then_recover() {
    const p = "pay_console_stale";
    await webhook(`${p}-1`, event(p, "payment.pending"));
    const page = await openPage(`/payments/${p}`);
    await connState(page, "live");
    // The open connections stop delivering (a stuck network path): no heartbeat.
    for (const t of tunnels) t.pause();
    await connState(page, "stale");
    await shot(page, "stale");
    // The client gives the silent session up and reconnects on a fresh connection.
    await connState(page, "live");
    const continuity = await text(page, "#continuity");
    await page.close();
    return `stale, then live again (${continuity})`;
  },

  async refused_token_shows_unauthorized() {
    const page = await openPage(`/`, "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJub2JvZHkifQ.bm90LWEtc2lnbmF0dXJl");
    await connState(page, "unauthorized");
    const detail = await text(page, "#conn-detail");
    await shot(page, "unauthorized");
    await page.close();
    return `unauthorized: ${detail}`;
  },

  async old_payment_found_by_search() {
    const p = "pay_console_old";
    await webhook(`${p}-1`, event(p, "payment.pending"));
    // 10,000 transitions of other payments after it, far past what the edge keeps.
    const published = await ask("bulk 10000");
    const page = await openPage(`/`);
    await connState(page, "live");
    // Generous: a busy machine may still be delivering the bulk's checkpoints.
    await page.fill('#filters input[name="q"]', p, { timeout: 90_000 });
    await page.click("#search");
    await until(page, "the old payment in the list", (id) => !!document.querySelector(`tr[data-payment-id="${id}"]`), p);
    await shot(page, "search-found");
    await page.click(`tr[data-payment-id="${p}"] a`);
    await until(page, "its page", (id) => location.pathname === `/payments/${id}` && document.getElementById("p-status")?.textContent === "pending", p);
    await shot(page, "search-opened");
    await page.close();
    return `found and opened after ${published} transitions`;
  },
};

let failed = 0;
for (const [name, run] of Object.entries(scenarios)) {
  if (ONLY.length && !ONLY.includes(name)) continue;
  try {
    const detail = await run();
    process.stdout.write(`pass ${name}: ${detail}\n`);
  } catch (error) {
    failed += 1;
    if (lastPage && !lastPage.isClosed()) {
      await shot(lastPage, `${name}-failed`);
      const state = await lastPage
        .evaluate(() => ({ path: location.pathname, page: document.body.dataset.page, conn: document.getElementById("conn")?.dataset.state, rows: document.querySelectorAll("#payment-rows tr").length }))
        .catch((e) => String(e));
      process.stdout.write(`log ${name} failed on ${JSON.stringify(state)}\n`);
    }
    process.stdout.write(`fail ${name}: ${redact(String(error?.stack ?? error)).replace(/\n/g, " | ")}\n`);
  }
}
await browser.close();
proxy.close();
for (const t of tunnels) t.destroy();
process.stdout.write(`done ${failed}\n`);
process.exit(failed ? 1 : 0);
