import { backoffDelay } from "./backoff.js";
import { Emitter } from "./emitter.js";
import { SseParser } from "./sse.js";
import { Subscription, type SubscriptionHost } from "./subscription.js";
import {
  CloseCode,
  parseServerMessage,
  type ClientMessage,
  type HeartbeatMessage,
  type Position,
  type ServerMessage,
} from "./types.js";

/** The client's connection state, as in centrifuge-js. */
export type ClientState = "disconnected" | "connecting" | "connected";

/** How the client reaches the edge: a WebSocket session, or one SSE stream per channel. */
export type Transport = "websocket" | "sse";

/** The part of the WebSocket API the client uses (the browser's, or `ws` under node). */
export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

/** How the client is set up. */
export interface ClientOptions {
  /** The edge's WebSocket URL (`ws(s)://host/v1/ws`). */
  url: string;
  /** The edge's SSE URL; by default `url` with http(s) and `/v1/sse`. */
  sseUrl?: string;
  /** The bearer token (an operator's or a user's JWT). */
  token: string;
  /** Opens a WebSocket; by default the global `WebSocket`. */
  webSocket?: (url: string) => WebSocketLike;
  /** `fetch` for the SSE fallback; by default the global one. */
  fetch?: typeof fetch;
  /** First reconnect delay ceiling (ms); default 500. */
  minReconnectDelayMs?: number;
  /** Longest reconnect delay (ms); default 20000. */
  maxReconnectDelayMs?: number;
  /** Random source for the jitter; default `Math.random`. */
  random?: () => number;
  /** Heartbeat interval assumed on SSE, which sends no welcome (ms); default 15000. */
  sseHeartbeatMs?: number;
}

/** What the client reports. */
export interface ClientEvents {
  [name: string]: unknown;
  /** Every state change. */
  state: { state: ClientState; previous: ClientState };
  /** A (re)connect is scheduled or starting, why, and after how long. */
  connecting: { reason: string; delayMs: number; attempt: number };
  /** The session is up. */
  connected: { transport: Transport; sessionId?: string; heartbeatMs: number };
  /** The session ended; `reconnect` says whether the client tries again. */
  disconnected: { code: number; reason: string; reconnect: boolean };
  /** The token was refused (HTTP 401 or close 4001): the client stops until given a new one. */
  unauthorized: { message: string };
  /** The WebSocket upgrade failed where plain HTTP works: the client is on SSE. */
  fallback: { reason: string };
  /** A heartbeat from the edge. */
  heartbeat: { live: boolean; lagMs: number; at: number; positions: Record<string, Position> };
  /** No heartbeat for two intervals: the view may not be current. */
  stale: { silentMs: number };
  /** An `error` message from the edge that closes nothing. */
  error: { code: number; message: string };
}

const BAD_REQUEST = CloseCode.BadRequest;

/**
 * A connection to the edge carrying any number of {@link Subscription}s. It
 * reconnects with backoff and jitter, resumes every subscription from its last
 * position, answers heartbeats with acks and pings on its own, calls a session stale
 * when heartbeats stop, and falls back to SSE when the WebSocket upgrade fails while
 * the edge answers HTTP.
 */
export class Client extends Emitter<ClientEvents> implements SubscriptionHost {
  /** The current state. */
  state: ClientState = "disconnected";
  /** The transport in use (or to be tried next). */
  transport: Transport = "websocket";
  /** The WebSocket session's id once welcomed. */
  sessionId: string | undefined;
  /** When the last heartbeat arrived (ms since the epoch), if any. */
  lastHeartbeatAt: number | undefined;
  /** Whether the last heartbeat said the edge is live (its feeds current). */
  edgeLive = false;
  /** True while heartbeats are late. */
  stale = false;

  private readonly options: Required<Omit<ClientOptions, "webSocket" | "fetch" | "random">> & ClientOptions;
  private readonly subs = new Map<string, Subscription>();
  private ws: WebSocketLike | null = null;
  private welcomed = false;
  private heartbeatMs = 15000;
  private lastMessageAt = 0;
  private attempt = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private watchdog: ReturnType<typeof setInterval> | undefined;
  private readonly sse = new Map<string, AbortController>();
  private wanted = false;

  /** A client for `options.url`; call {@link connect} to start it. */
  constructor(options: ClientOptions) {
    super();
    const sseUrl = options.sseUrl ?? options.url.replace(/^ws/, "http").replace(/\/v1\/ws(\?.*)?$/, "/v1/sse");
    this.options = {
      minReconnectDelayMs: 500,
      maxReconnectDelayMs: 20000,
      sseHeartbeatMs: 15000,
      ...options,
      sseUrl,
    };
  }

  /** A subscription to `channel`, resuming after `since` when given. One per channel. */
  newSubscription(channel: string, options: { since?: Position } = {}): Subscription {
    if (this.subs.has(channel)) throw new Error(`already subscribed to ${channel}`);
    const sub = new Subscription(channel, this, options.since);
    this.subs.set(channel, sub);
    return sub;
  }

  /** The subscription to `channel`, if any. */
  getSubscription(channel: string): Subscription | undefined {
    return this.subs.get(channel);
  }

  /** Stops and forgets a subscription. */
  removeSubscription(sub: Subscription): void {
    sub.unsubscribe();
    this.subs.delete(sub.channel);
  }

  /** Starts connecting (and keeps reconnecting until {@link disconnect}). */
  connect(): void {
    if (this.wanted) return;
    this.wanted = true;
    this.attempt = 0;
    this.open("connect called");
  }

  /** Closes the session and stops reconnecting. */
  disconnect(): void {
    this.wanted = false;
    this.teardown();
    this.setState("disconnected");
    this.emit("disconnected", { code: 1000, reason: "disconnect called", reconnect: false });
  }

  /** Replaces the token (sent as `refresh` on a WebSocket session, used by the next SSE request). */
  setToken(token: string): void {
    this.options.token = token;
    if (this.ws && this.welcomed) this.send({ type: "refresh", token });
  }

  /** Every subscription's last position, as an `ack` carries them. */
  positions(): Record<string, Position> {
    const out: Record<string, Position> = {};
    for (const sub of this.subs.values()) if (sub.position && sub.state === "subscribed") out[sub.channel] = sub.position;
    return out;
  }

  /** @internal */
  startSubscription(sub: Subscription, since: Position | undefined): void {
    if (this.state !== "connected") return; // subscribed on connect
    if (this.transport === "websocket") {
      this.send(since ? { type: "subscribe", channel: sub.channel, since } : { type: "subscribe", channel: sub.channel });
      this.resumed.set(sub.channel, since !== undefined);
    } else {
      void this.openSse(sub, since);
    }
  }

  /** @internal */
  stopSubscription(sub: Subscription): void {
    if (this.transport === "websocket") {
      if (this.ws && this.welcomed) this.send({ type: "unsubscribe", channel: sub.channel });
    } else {
      this.sse.get(sub.channel)?.abort();
      this.sse.delete(sub.channel);
    }
  }

  private readonly resumed = new Map<string, boolean>();

  private open(reason: string): void {
    this.setState("connecting");
    if (this.transport === "sse") {
      this.startSse(reason);
      return;
    }
    const url = this.options.url + (this.options.url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(this.options.token);
    const make =
      this.options.webSocket ??
      ((u: string) => new (globalThis as unknown as { WebSocket: new (u: string) => WebSocketLike }).WebSocket(u));
    let ws: WebSocketLike;
    try {
      ws = make(url);
    } catch (error) {
      this.upgradeFailed(String(error));
      return;
    }
    this.ws = ws;
    this.welcomed = false;
    let opened = false;
    ws.onopen = () => {
      opened = true;
    };
    ws.onerror = () => {};
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      const message = parseServerMessage(typeof event.data === "string" ? event.data : String(event.data));
      if (message) this.onMessage(message, "websocket");
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.stopWatchdog();
      if (!opened) {
        this.upgradeFailed(`WebSocket upgrade failed (close ${event.code})`);
        return;
      }
      this.lost(event.code, event.reason || "connection closed");
    };
  }

  /** The upgrade did not happen. If the edge answers SSE, fall back; else it is down: retry later. */
  private upgradeFailed(reason: string): void {
    if (!this.wanted) return;
    this.transport = "sse";
    this.fallbackReason = reason;
    this.startSse(reason);
  }

  private fallbackReason = "";

  private startSse(reason: string): void {
    this.setState("connecting");
    const active = [...this.subs.values()].filter((s) => s.active);
    if (active.length === 0) {
      void this.probeSse(reason);
      return;
    }
    for (const sub of active) void this.openSse(sub, sub.position);
  }

  /** With no channel to open, asks the SSE route anything: an HTTP answer means the edge is up. */
  private async probeSse(reason: string): Promise<void> {
    const doFetch = this.options.fetch ?? globalThis.fetch.bind(globalThis);
    try {
      const response = await doFetch(this.options.sseUrl, { headers: { Authorization: `Bearer ${this.options.token}` } });
      if (response.status === 401) {
        this.refused(await errorMessage(response));
        return;
      }
      if (response.status >= 500) throw new Error(`HTTP ${response.status}`);
      this.connected("sse", undefined, this.options.sseHeartbeatMs);
      this.emit("fallback", { reason });
    } catch (error) {
      this.transport = "websocket";
      this.lost(1006, `edge unreachable (${String(error)})`);
    }
  }

  private async openSse(sub: Subscription, since: Position | undefined): Promise<void> {
    this.sse.get(sub.channel)?.abort();
    const controller = new AbortController();
    this.sse.set(sub.channel, controller);
    const headers: Record<string, string> = {
      Authorization: `Bearer ${this.options.token}`,
      Accept: "text/event-stream",
    };
    if (since) headers["Last-Event-ID"] = `${since.epoch}:${since.seq}`;
    const doFetch = this.options.fetch ?? globalThis.fetch.bind(globalThis);
    let response: Response;
    try {
      response = await doFetch(`${this.options.sseUrl}?channel=${encodeURIComponent(sub.channel)}`, {
        headers,
        signal: controller.signal,
        cache: "no-store",
      });
    } catch (error) {
      if (controller.signal.aborted) return;
      // Neither the upgrade nor plain HTTP reaches the edge: it is down, not blocking
      // WebSockets. Try a WebSocket again next time.
      this.transport = "websocket";
      this.lost(1006, `edge unreachable (${String(error)})`);
      return;
    }
    if (response.status === 401) {
      this.refused(await errorMessage(response));
      return;
    }
    if (response.status === 400 || response.status === 403) {
      sub._error(response.status === 403 ? CloseCode.Forbidden : CloseCode.BadRequest, await errorMessage(response));
      return;
    }
    if (!response.ok || !response.body) {
      // 5xx: the edge (or the proxy in front of it) has no edge to serve: retry a
      // WebSocket first next time, as for an unreachable edge.
      if (response.status >= 500) this.transport = "websocket";
      this.lost(response.status, `SSE answered ${response.status}: ${await errorMessage(response)}`);
      return;
    }
    if (this.state !== "connected") {
      this.connected("sse", undefined, this.options.sseHeartbeatMs);
      this.emit("fallback", { reason: this.fallbackReason || "on SSE" });
    }
    this.resumed.set(sub.channel, since !== undefined);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    const parser = new SseParser();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        for (const event of parser.push(decoder.decode(value, { stream: true }))) {
          const message = parseServerMessage(event.data);
          if (!message) continue;
          if (message.type === "close") {
            if (message.code === CloseCode.Unauthorized) {
              this.refused(message.reason);
              return;
            }
            controller.abort();
            this.lost(message.code, message.reason);
            return;
          }
          this.onMessage(message, "sse");
        }
      }
    } catch {
      if (controller.signal.aborted) return;
    }
    if (controller.signal.aborted || this.sse.get(sub.channel) !== controller) return;
    this.lost(1006, "SSE stream ended");
  }

  private onMessage(message: ServerMessage, via: Transport): void {
    this.lastMessageAt = Date.now();
    switch (message.type) {
      case "welcome":
        this.welcomed = true;
        this.sessionId = message.session_id;
        this.connected("websocket", message.session_id, message.heartbeat_ms);
        for (const sub of this.subs.values()) if (sub.active) this.startSubscription(sub, sub.position);
        break;
      case "subscribed":
        this.subs.get(message.channel)?._subscribed(message, this.resumed.get(message.channel) ?? false);
        break;
      case "event":
        this.subs.get(message.channel)?._event(message);
        break;
      case "heartbeat":
        this.onHeartbeat(message, via);
        break;
      case "error":
        this.emit("error", { code: message.code, message: message.message });
        break;
      default:
        break;
    }
  }

  private onHeartbeat(message: HeartbeatMessage, via: Transport): void {
    this.lastHeartbeatAt = Date.now();
    this.edgeLive = message.live;
    this.stale = false;
    for (const [channel, position] of Object.entries(message.positions ?? {})) {
      this.subs.get(channel)?._heartbeat(position);
    }
    this.emit("heartbeat", {
      live: message.live,
      lagMs: message.lag_ms,
      at: this.lastHeartbeatAt,
      positions: message.positions ?? {},
    });
    if (via === "websocket") this.send({ type: "ack", positions: this.positions() });
  }

  private connected(transport: Transport, sessionId: string | undefined, heartbeatMs: number): void {
    this.transport = transport;
    this.heartbeatMs = heartbeatMs;
    this.attempt = 0;
    this.lastMessageAt = Date.now();
    this.stale = false;
    this.setState("connected");
    this.emit("connected", { transport, sessionId, heartbeatMs });
    this.startWatchdog();
  }

  /** The session was lost; resume every subscription after a backoff. */
  private lost(code: number, reason: string): void {
    if (!this.wanted || this.reconnectTimer) return;
    if (code === CloseCode.Unauthorized) {
      this.refused(reason);
      return;
    }
    this.teardown();
    for (const sub of this.subs.values()) sub._interrupted(reason);
    this.emit("disconnected", { code, reason, reconnect: true });
    const delayMs = backoffDelay(this.attempt, {
      minDelayMs: this.options.minReconnectDelayMs,
      maxDelayMs: this.options.maxReconnectDelayMs,
      random: this.options.random,
    });
    this.attempt += 1;
    this.setState("connecting");
    this.emit("connecting", { reason, delayMs, attempt: this.attempt });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (this.wanted) this.open(reason);
    }, delayMs);
  }

  private refused(message: string): void {
    this.wanted = false;
    this.teardown();
    for (const sub of this.subs.values()) sub._interrupted("unauthorized");
    this.setState("disconnected");
    this.emit("unauthorized", { message });
    this.emit("disconnected", { code: CloseCode.Unauthorized, reason: message, reconnect: false });
  }

  private teardown(): void {
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.stopWatchdog();
    const ws = this.ws;
    this.ws = null;
    this.welcomed = false;
    if (ws) {
      try {
        ws.close(1000, "client closing");
      } catch {
        // already closed
      }
    }
    for (const controller of this.sse.values()) controller.abort();
    this.sse.clear();
  }

  private startWatchdog(): void {
    this.stopWatchdog();
    const every = Math.max(50, Math.floor(this.heartbeatMs / 2));
    this.watchdog = setInterval(() => {
      if (this.transport === "websocket") this.send({ type: "ping" });
      const silentMs = Date.now() - this.lastMessageAt;
      if (silentMs > this.heartbeatMs * 2 && !this.stale) {
        this.stale = true;
        this.emit("stale", { silentMs });
      }
      if (silentMs > this.heartbeatMs * 3) {
        const ws = this.ws;
        this.ws = null;
        ws?.close(BAD_REQUEST, "heartbeats missed");
        this.lost(BAD_REQUEST, "heartbeats missed");
      }
    }, every);
  }

  private stopWatchdog(): void {
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = undefined;
  }

  private send(message: ClientMessage): void {
    if (!this.ws) return;
    try {
      this.ws.send(JSON.stringify(message));
    } catch {
      // the close handler reconnects
    }
  }

  private setState(state: ClientState): void {
    const previous = this.state;
    if (previous === state) return;
    this.state = state;
    this.emit("state", { state, previous });
  }
}

async function errorMessage(response: Response): Promise<string> {
  try {
    const text = await response.text();
    try {
      const body = JSON.parse(text) as { message?: string; detail?: string };
      return body.message ?? body.detail ?? text;
    } catch {
      return text || `HTTP ${response.status}`;
    }
  } catch {
    return `HTTP ${response.status}`;
  }
}
