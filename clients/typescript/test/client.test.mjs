import assert from "node:assert/strict";
import { test } from "node:test";
import WebSocket from "ws";
import { Client, backoffDelay } from "../dist/index.js";
import { ev, pos, startFakeEdge, until } from "./fake-edge.mjs";

const fast = { minReconnectDelayMs: 20, maxReconnectDelayMs: 100, webSocket: (u) => new WebSocket(u) };

test("resume after a drop: resubscribes with since, delivers each event once, in order", async (t) => {
  let sessions = 0;
  const resumes = [];
  const edge = await startFakeEdge({
    async onSocket(conn) {
      sessions += 1;
      conn.send({ type: "welcome", session_id: `s${sessions}`, heartbeat_ms: 1000 });
      const sub = await conn.next((m) => m.type === "subscribe");
      if (sessions === 1) {
        assert.equal(sub.since, undefined);
        conn.send({ type: "subscribed", channel: sub.channel, recovered: false, position: pos(0) });
        conn.send(ev(sub.channel, 1, 0, { status: "pending" }));
        conn.send(ev(sub.channel, 2, 1, { status: "held" }));
      } else {
        resumes.push(sub.since);
        conn.send({ type: "subscribed", channel: sub.channel, recovered: true, position: sub.since });
        // The edge may send again what the client already has; the client drops it.
        conn.send(ev(sub.channel, 2, 1, { status: "held" }));
        conn.send(ev(sub.channel, 3, 2, { status: "succeeded" }));
      }
    },
  });
  const client = new Client({ url: edge.url, token: "t", ...fast });
  t.after(async () => {
    client.disconnect();
    await edge.close();
  });
  const seen = [];
  const outcomes = [];
  const sub = client.newSubscription("payment:p1");
  sub.on("publication", (e) => seen.push(e.position.seq));
  sub.on("subscribed", (s) => outcomes.push(s.recovery.kind));
  sub.subscribe();
  client.connect();
  await until("two events", () => seen.length === 2);
  edge.dropAll();
  await until("the resumed event", () => seen.length === 3);
  assert.deepEqual(seen, [1, 2, 3]);
  assert.deepEqual(resumes, [pos(2)]);
  assert.deepEqual(outcomes, ["fresh", "recovered"]);
  assert.equal(sub.duplicates, 1);
  assert.equal(sub.gaps, 0);
  assert.equal(client.state, "connected");
});

test("cannot recover: a list channel's resume answers reload, typed, with the URL and the position to resume from", async (t) => {
  let sessions = 0;
  const edge = await startFakeEdge({
    async onSocket(conn) {
      sessions += 1;
      conn.send({ type: "welcome", session_id: `s${sessions}`, heartbeat_ms: 1000 });
      const sub = await conn.next((m) => m.type === "subscribe");
      if (sessions === 1) {
        conn.send({ type: "subscribed", channel: sub.channel, recovered: false, position: pos(5) });
        conn.send(ev(sub.channel, 6, 5));
      } else {
        conn.send({
          type: "subscribed",
          channel: sub.channel,
          recovered: false,
          position: { epoch: "e2", seq: 40 },
          snapshot: { reload: "/v1/payments" },
        });
      }
    },
  });
  const client = new Client({ url: edge.url, token: "t", ...fast });
  t.after(async () => {
    client.disconnect();
    await edge.close();
  });
  const sub = client.newSubscription("payments");
  const reloads = [];
  const kinds = [];
  sub.on("reload", (r) => reloads.push(r));
  sub.on("subscribed", (s) => kinds.push(s.recovery));
  sub.subscribe();
  client.connect();
  await until("the first event", () => sub.position?.seq === 6);
  edge.dropAll();
  await until("the reload outcome", () => reloads.length === 1);
  assert.deepEqual(reloads[0], { url: "/v1/payments", position: { epoch: "e2", seq: 40 } });
  assert.deepEqual(kinds[1], { kind: "reload", url: "/v1/payments" });
  // Position before data: the subscription continues from the answer's position.
  assert.deepEqual(sub.position, { epoch: "e2", seq: 40 });
});

test("a gap is healed by resubscribing from the last position seen", async (t) => {
  const subscribes = [];
  const edge = await startFakeEdge({
    async onSocket(conn) {
      conn.send({ type: "welcome", session_id: "s", heartbeat_ms: 1000 });
      const first = await conn.next((m) => m.type === "subscribe");
      subscribes.push(first);
      conn.send({ type: "subscribed", channel: first.channel, recovered: false, position: pos(0) });
      conn.send(ev(first.channel, 1, 0));
      conn.send(ev(first.channel, 4, 3)); // 2 and 3 missing
      await conn.next((m) => m.type === "unsubscribe");
      const again = await conn.next((m) => m.type === "subscribe");
      subscribes.push(again);
      conn.send({ type: "subscribed", channel: again.channel, recovered: true, position: again.since });
      conn.send(ev(first.channel, 3, 1));
      conn.send(ev(first.channel, 4, 3));
    },
  });
  const client = new Client({ url: edge.url, token: "t", ...fast });
  t.after(async () => {
    client.disconnect();
    await edge.close();
  });
  const sub = client.newSubscription("payment:p2");
  const seen = [];
  const gaps = [];
  sub.on("publication", (e) => seen.push(e.position.seq));
  sub.on("gap", (g) => gaps.push(g));
  sub.subscribe();
  client.connect();
  await until("the healed events", () => seen.length === 3);
  assert.deepEqual(seen, [1, 3, 4]);
  assert.equal(gaps.length, 1);
  assert.deepEqual(subscribes[1].since, pos(1));
});

test("heartbeats are answered with acks of the positions seen; a late heartbeat makes the client stale", async (t) => {
  let conn1;
  const edge = await startFakeEdge({
    async onSocket(conn) {
      conn1 = conn;
      conn.send({ type: "welcome", session_id: "s", heartbeat_ms: 200 });
      const sub = await conn.next((m) => m.type === "subscribe");
      conn.send({ type: "subscribed", channel: sub.channel, recovered: false, position: pos(7) });
      conn.send({ type: "heartbeat", positions: { [sub.channel]: pos(7) }, live: true, lag_ms: 0 });
    },
  });
  const client = new Client({ url: edge.url, token: "t", ...fast });
  t.after(async () => {
    client.disconnect();
    await edge.close();
  });
  client.newSubscription("payment:p3").subscribe();
  let stale = 0;
  client.on("stale", () => (stale += 1));
  client.connect();
  await until("the session", () => conn1);
  const ack = await conn1.next((m) => m.type === "ack");
  assert.deepEqual(ack.positions, { "payment:p3": pos(7) });
  assert.equal(client.edgeLive, true);
  // The fake edge sends no more heartbeats: the client must say so.
  await until("stale", () => stale > 0, 3000);
});

test("fallback to SSE when the upgrade is refused, resuming with Last-Event-ID", async (t) => {
  const requests = [];
  const edge = await startFakeEdge({
    refuseUpgrade: true,
    onSse(req, res, url) {
      requests.push({ channel: url.searchParams.get("channel"), last: req.headers["last-event-id"], auth: req.headers.authorization });
      res.writeHead(200, { "content-type": "text/event-stream" });
      const channel = url.searchParams.get("channel");
      if (requests.length === 1) {
        res.write(`event: subscribed\ndata: ${JSON.stringify({ type: "subscribed", channel, recovered: false, position: pos(0) })}\n\n`);
        res.write(`id: e1:1\ndata: ${JSON.stringify(ev(channel, 1, 0, { status: "pending" }))}\n\n`);
        res.write(`event: heartbeat\ndata: ${JSON.stringify({ type: "heartbeat", positions: { [channel]: pos(1) }, live: true, lag_ms: 0 })}\n\n`);
        res.end(`event: close\ndata: ${JSON.stringify({ type: "close", code: 1012, reason: "restarting" })}\n\n`);
      } else {
        res.write(`event: subscribed\ndata: ${JSON.stringify({ type: "subscribed", channel, recovered: true, position: pos(1) })}\n\n`);
        res.write(`id: e1:2\ndata: ${JSON.stringify(ev(channel, 2, 1, { status: "succeeded" }))}\n\n`);
      }
    },
  });
  const client = new Client({ url: edge.url, token: "tok", ...fast });
  t.after(async () => {
    client.disconnect();
    await edge.close();
  });
  const sub = client.newSubscription("payment:p4");
  const seen = [];
  const fallbacks = [];
  const heartbeats = [];
  sub.on("publication", (e) => seen.push(e.status));
  client.on("fallback", (f) => fallbacks.push(f));
  client.on("heartbeat", (h) => heartbeats.push(h));
  sub.subscribe();
  client.connect();
  await until("both events over SSE", () => seen.length === 2);
  assert.deepEqual(seen, ["pending", "succeeded"]);
  assert.equal(client.transport, "sse");
  assert.ok(fallbacks.length >= 1);
  assert.equal(heartbeats.length, 1);
  assert.equal(requests[0].auth, "Bearer tok");
  assert.equal(requests[0].last, undefined);
  assert.equal(requests[1].last, "e1:1");
});

test("a refused token stops the client as unauthorized, without reconnecting", async (t) => {
  let sse = 0;
  const edge = await startFakeEdge({
    refuseUpgrade: true,
    onSse(_req, res) {
      sse += 1;
      res.writeHead(401, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: "unauthorized", message: "token expired" }));
    },
  });
  const client = new Client({ url: edge.url, token: "old", ...fast });
  t.after(async () => {
    client.disconnect();
    await edge.close();
  });
  client.newSubscription("payments").subscribe();
  const refused = [];
  client.on("unauthorized", (u) => refused.push(u.message));
  client.connect();
  await until("unauthorized", () => refused.length === 1);
  assert.deepEqual(refused, ["token expired"]);
  assert.equal(client.state, "disconnected");
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(sse, 1);
});

test("an unreachable edge is retried with growing, jittered delays", async (t) => {
  const edge = await startFakeEdge({});
  const url = edge.url;
  await edge.close();
  const client = new Client({ url, token: "t", ...fast });
  t.after(() => client.disconnect());
  client.newSubscription("payments").subscribe();
  const delays = [];
  client.on("connecting", (c) => delays.push(c.delayMs));
  client.connect();
  await until("three retries", () => delays.length >= 3);
  client.disconnect();
  assert.equal(client.transport, "websocket");
  for (const d of delays) assert.ok(d >= 10 && d <= 100, `delay ${d}`);
});

test("backoff doubles its ceiling, caps it and jitters within the upper half", () => {
  const o = { minDelayMs: 100, maxDelayMs: 1000 };
  assert.equal(backoffDelay(0, { ...o, random: () => 0 }), 50);
  assert.equal(backoffDelay(0, { ...o, random: () => 0.999999 }), 100);
  assert.equal(backoffDelay(3, { ...o, random: () => 0 }), 400);
  assert.equal(backoffDelay(10, { ...o, random: () => 0 }), 500);
  assert.equal(backoffDelay(10, { ...o, random: () => 0.999999 }), 1000);
});
