// A small stand-in for the edge's WebSocket and SSE surface, for the client's unit
// tests: each test scripts what the "edge" answers. The real edge is covered by the
// browser acceptance tests.
import http from "node:http";
import { WebSocketServer } from "ws";

export async function startFakeEdge({ refuseUpgrade = false, onSocket, onSse } = {}) {
  const sockets = new Set();
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    if (url.pathname === "/v1/sse") {
      if (!onSse) {
        res.writeHead(404).end();
        return;
      }
      onSse(req, res, url);
      return;
    }
    res.writeHead(404).end();
  });
  const wss = new WebSocketServer({ noServer: true });
  server.on("upgrade", (req, socket, head) => {
    if (refuseUpgrade) {
      socket.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      sockets.add(ws);
      ws.on("close", () => sockets.delete(ws));
      const inbox = [];
      const waiters = [];
      ws.on("message", (data) => {
        const msg = JSON.parse(String(data));
        inbox.push(msg);
        for (const w of waiters.splice(0)) w();
      });
      const conn = {
        ws,
        url: new URL(req.url, "http://x"),
        send: (m) => ws.send(JSON.stringify(m)),
        /** Waits for the next client message matching `pred`. */
        async next(pred = () => true, timeoutMs = 5000) {
          const deadline = Date.now() + timeoutMs;
          for (;;) {
            const i = inbox.findIndex(pred);
            if (i >= 0) return inbox.splice(i, 1)[0];
            if (Date.now() > deadline) throw new Error("no matching client message");
            await new Promise((r) => {
              waiters.push(r);
              setTimeout(r, 50);
            });
          }
        },
      };
      onSocket?.(conn);
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const port = server.address().port;
  return {
    url: `ws://127.0.0.1:${port}/v1/ws`,
    sseUrl: `http://127.0.0.1:${port}/v1/sse`,
    dropAll() {
      for (const ws of sockets) ws.terminate();
    },
    async close() {
      for (const ws of sockets) ws.terminate();
      server.closeAllConnections?.();
      await new Promise((r) => server.close(r));
    },
  };
}

/** Polls `check` until it returns a truthy value. */
export async function until(what, check, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export const pos = (seq) => ({ epoch: "e1", seq });
export const ev = (channel, seq, prev, extra = {}) => ({
  type: "event",
  channel,
  kind: "transition",
  position: pos(seq),
  prev_seq: prev,
  ...extra,
});
