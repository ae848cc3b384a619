import type { Client, Subscription } from "../../typescript/src/index.js";
import { byId } from "./dom.js";

/** What the header says about the connection; never a spinner without a reason. */
export type ConnectionState = "connecting" | "live" | "catching-up" | "stale" | "reconnecting" | "fallback" | "unauthorized";

const LABEL: Record<ConnectionState, string> = {
  connecting: "connecting",
  live: "live",
  "catching-up": "catching up",
  stale: "stale",
  reconnecting: "reconnecting",
  fallback: "fallback (SSE)",
  unauthorized: "unauthorized",
};

const TONE: Record<ConnectionState, string> = {
  connecting: "info",
  live: "ok",
  "catching-up": "info",
  stale: "warn",
  reconnecting: "warn",
  fallback: "warn",
  unauthorized: "bad",
};

/**
 * Keeps the header honest: the connection's state from the client's events, whether
 * the view is current (the last heartbeat confirmed every subscription's position on
 * a live edge) and when it last was, the subscribe outcome and the gaps healed.
 */
export class ConnectionView {
  private behind = new Set<string>();
  private lastCurrentAt: number | undefined;
  private reconnectNote = "";
  private unauthorized = "";
  private gaps = 0;
  private heartbeatMs = 15000;
  private readonly watched: Subscription[] = [];

  constructor(private readonly client: Client) {
    client.on("state", () => this.render());
    client.on("connecting", (c) => {
      this.reconnectNote = `attempt ${c.attempt}, next try in ${(c.delayMs / 1000).toFixed(1)} s: ${c.reason}`;
      this.render();
    });
    client.on("connected", (c) => {
      this.heartbeatMs = c.heartbeatMs;
      this.reconnectNote = "";
      byId("session-id").textContent = c.sessionId ?? "(SSE)";
      byId("transport").textContent = c.transport;
      this.render();
    });
    client.on("unauthorized", (u) => {
      this.unauthorized = u.message;
      this.render();
    });
    client.on("stale", () => this.render());
    client.on("heartbeat", (h) => {
      this.behind.clear();
      for (const [channel, position] of Object.entries(h.positions)) {
        const sub = client.getSubscription(channel);
        if (sub && (!sub.position || sub.position.epoch !== position.epoch || sub.position.seq < position.seq)) {
          this.behind.add(channel);
        }
      }
      if (h.live && this.behind.size === 0) this.lastCurrentAt = h.at;
      byId("heartbeat").textContent = `${new Date(h.at).toLocaleTimeString()}${h.live ? "" : " (edge not live)"}${h.lagMs ? `, lag ${h.lagMs} ms` : ""}`;
      this.render();
    });
    setInterval(() => this.render(), 1000);
  }

  /** Follows a subscription's outcomes and gaps. */
  watch(sub: Subscription): void {
    this.watched.push(sub);
    sub.on("subscribed", (s) => {
      const continuity = byId("continuity");
      const healed = continuity.dataset.state === "healing";
      continuity.dataset.state = s.recovery.kind;
      continuity.textContent = healed ? `${s.recovery.kind} (gap healed)` : s.recovery.kind;
      continuity.dataset.tone = s.recovery.kind === "recovered" || s.recovery.kind === "fresh" ? "ok" : "warn";
      this.render();
    });
    sub.on("gap", () => {
      this.gaps += 1;
      byId("gaps").textContent = String(this.gaps);
      const continuity = byId("continuity");
      continuity.dataset.state = "healing";
      continuity.dataset.tone = "warn";
      continuity.textContent = "gap: healing";
    });
    sub.on("publication", (e) => {
      byId("position").textContent = `${e.position.epoch.slice(0, 8)}:${e.position.seq}`;
    });
  }

  /** The current state. */
  state(): ConnectionState {
    if (this.unauthorized) return "unauthorized";
    if (this.client.state === "connecting") return this.reconnectNote ? "reconnecting" : "connecting";
    if (this.client.state === "disconnected") return "reconnecting";
    if (this.client.transport === "sse") return "fallback";
    if (this.client.stale || (this.client.lastHeartbeatAt !== undefined && !this.client.edgeLive)) return "stale";
    if (this.behind.size > 0) return "catching-up";
    if (this.watched.some((sub) => sub.state === "subscribing")) return "catching-up";
    return "live";
  }

  /** Redraws the header. */
  render(): void {
    const state = this.state();
    const conn = byId("conn");
    conn.dataset.state = state;
    conn.dataset.tone = TONE[state];
    conn.textContent = LABEL[state];
    conn.title =
      state === "unauthorized"
        ? this.unauthorized
        : state === "reconnecting"
          ? this.reconnectNote
          : state === "fallback"
            ? "the WebSocket upgrade failed; events arrive over Server-Sent Events"
            : "";
    byId("conn-detail").textContent =
      state === "reconnecting" ? this.reconnectNote : state === "unauthorized" ? this.unauthorized : "";
    const currency = byId("currency");
    const fresh =
      this.lastCurrentAt !== undefined &&
      Date.now() - this.lastCurrentAt < 2.5 * this.heartbeatMs &&
      (state === "live" || state === "fallback");
    currency.dataset.state = fresh ? "current" : "not-current";
    currency.dataset.tone = fresh ? "ok" : "warn";
    currency.textContent = fresh ? "current" : "not current";
    byId("last-current").textContent = this.lastCurrentAt ? new Date(this.lastCurrentAt).toLocaleTimeString() : "never";
  }
}
