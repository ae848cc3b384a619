// Built from clients/console/src by `npm run build:console` in clients/typescript. Do not edit.
"use strict";
(() => {
  // src/backoff.ts
  function backoffDelay(attempt, options) {
    const random = options.random ?? Math.random;
    const ceiling = Math.min(options.maxDelayMs, options.minDelayMs * 2 ** Math.min(attempt, 30));
    const half = ceiling / 2;
    return Math.round(half + random() * half);
  }

  // src/emitter.ts
  var Emitter = class {
    constructor() {
      this.listeners = {};
    }
    /** Calls `listener` on every `name` event; returns a function that removes it. */
    on(name, listener) {
      var _a;
      const list = (_a = this.listeners)[name] ?? (_a[name] = []);
      list.push(listener);
      return () => this.off(name, listener);
    }
    /** Removes a listener added with `on`. */
    off(name, listener) {
      const list = this.listeners[name];
      if (list) this.listeners[name] = list.filter((l) => l !== listener);
    }
    /** Delivers `value` to every listener of `name`; a throwing listener does not stop the others. */
    emit(name, value) {
      for (const listener of this.listeners[name] ?? []) {
        try {
          listener(value);
        } catch (error) {
          console.error(`paytrack client: a ${String(name)} listener threw`, error);
        }
      }
    }
  };

  // src/sse.ts
  var SseParser = class {
    constructor() {
      this.buffer = "";
      this.event = "";
      this.data = [];
    }
    /** Feeds a chunk; returns the events it completed. */
    push(chunk) {
      this.buffer += chunk;
      const out = [];
      for (; ; ) {
        const match = /\r\n|\r|\n/.exec(this.buffer);
        if (!match) break;
        const line = this.buffer.slice(0, match.index);
        this.buffer = this.buffer.slice(match.index + match[0].length);
        if (line === "") {
          if (this.data.length > 0) {
            out.push({ event: this.event || "message", data: this.data.join("\n"), id: this.id });
          }
          this.event = "";
          this.data = [];
          this.id = void 0;
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") this.event = value;
        else if (field === "data") this.data.push(value);
        else if (field === "id") this.id = value;
      }
      return out;
    }
  };

  // src/types.ts
  var CloseCode = {
    BadRequest: 4e3,
    Unauthorized: 4001,
    Forbidden: 4003,
    TooSlow: 4008,
    RateLimited: 4029,
    Restarting: 1012
  };
  function parseServerMessage(text) {
    try {
      const value = JSON.parse(text);
      if (value && typeof value === "object" && typeof value.type === "string") {
        return value;
      }
    } catch {
    }
    return null;
  }
  function recoveryOf(message, resumed) {
    if (message.recovered) return resumed ? { kind: "recovered" } : { kind: "fresh" };
    const snapshot = message.snapshot;
    if (snapshot && typeof snapshot === "object") {
      if (typeof snapshot.reload === "string") return { kind: "reload", url: snapshot.reload };
      if (snapshot.missed === true) return { kind: "missed" };
      return { kind: "snapshot", state: snapshot };
    }
    return { kind: "fresh" };
  }

  // src/subscription.ts
  var Subscription = class extends Emitter {
    /** @internal Created by {@link Client.newSubscription}. */
    constructor(channel, host, since) {
      super();
      this.channel = channel;
      this.host = host;
      /** The current state. */
      this.state = "unsubscribed";
      /** How many gaps this subscription has seen (each is healed by a resume). */
      this.gaps = 0;
      /** How many duplicate events were dropped. */
      this.duplicates = 0;
      this.position = since;
    }
    /** Starts (or keeps) the subscription; it resumes by itself after drops. */
    subscribe() {
      if (this.state !== "unsubscribed") return;
      this.setState("subscribing");
      this.emit("subscribing", { reason: "subscribe called" });
      this.host.startSubscription(this, this.position);
    }
    /** Stops the subscription. */
    unsubscribe() {
      if (this.state === "unsubscribed") return;
      this.setState("unsubscribed");
      this.host.stopSubscription(this);
      this.emit("unsubscribed", { reason: "unsubscribe called" });
    }
    /** Whether the subscription wants to be subscribed. */
    get active() {
      return this.state !== "unsubscribed";
    }
    /** @internal The transport lost the channel: it will resubscribe from the last position. */
    _interrupted(reason) {
      if (this.state !== "subscribed") return;
      this.setState("subscribing");
      this.emit("subscribing", { reason });
    }
    /** @internal The edge answered a subscribe. */
    _subscribed(message, resumed) {
      if (this.state === "unsubscribed") return;
      const recovery = recoveryOf(message, resumed);
      this.position = message.position;
      this.setState("subscribed");
      this.emit("subscribed", { position: message.position, recovery, transport: this.host.transport });
      if (recovery.kind === "reload") this.emit("reload", { url: recovery.url, position: message.position });
    }
    /** @internal An event of this channel. */
    _event(event) {
      if (this.state !== "subscribed") return;
      const seen = this.position;
      if (seen && event.position.epoch === seen.epoch && event.position.seq <= seen.seq) {
        this.duplicates += 1;
        return;
      }
      if (seen && (event.position.epoch !== seen.epoch || event.prev_seq !== seen.seq)) {
        this.gaps += 1;
        this.emit("gap", { since: seen, prevSeq: event.prev_seq, got: event.position });
        this.setState("subscribing");
        this.emit("subscribing", { reason: "gap" });
        this.host.stopSubscription(this);
        this.host.startSubscription(this, seen);
        return;
      }
      this.position = event.position;
      this.emit("publication", event);
    }
    /** @internal The edge's heartbeat position for this channel. */
    _heartbeat(edge) {
      const seen = this.position;
      if (!seen || seen.epoch !== edge.epoch || seen.seq < edge.seq) this.emit("behind", { seen, edge });
    }
    /** @internal A refusal for this channel. */
    _error(code, message) {
      this.emit("error", { code, message });
    }
    setState(state) {
      const previous = this.state;
      if (previous === state) return;
      this.state = state;
      this.emit("state", { state, previous });
    }
  };

  // src/client.ts
  var BAD_REQUEST = CloseCode.BadRequest;
  var Client = class extends Emitter {
    /** A client for `options.url`; call {@link connect} to start it. */
    constructor(options) {
      super();
      /** The current state. */
      this.state = "disconnected";
      /** The transport in use (or to be tried next). */
      this.transport = "websocket";
      /** Whether the last heartbeat said the edge is live (its feeds current). */
      this.edgeLive = false;
      /** True while heartbeats are late. */
      this.stale = false;
      this.subs = /* @__PURE__ */ new Map();
      this.ws = null;
      this.welcomed = false;
      this.heartbeatMs = 15e3;
      this.lastMessageAt = 0;
      this.attempt = 0;
      this.sse = /* @__PURE__ */ new Map();
      this.wanted = false;
      this.resumed = /* @__PURE__ */ new Map();
      this.fallbackReason = "";
      const sseUrl = options.sseUrl ?? options.url.replace(/^ws/, "http").replace(/\/v1\/ws(\?.*)?$/, "/v1/sse");
      this.options = {
        minReconnectDelayMs: 500,
        maxReconnectDelayMs: 2e4,
        sseHeartbeatMs: 15e3,
        ...options,
        sseUrl
      };
    }
    /** A subscription to `channel`, resuming after `since` when given. One per channel. */
    newSubscription(channel, options = {}) {
      if (this.subs.has(channel)) throw new Error(`already subscribed to ${channel}`);
      const sub = new Subscription(channel, this, options.since);
      this.subs.set(channel, sub);
      return sub;
    }
    /** The subscription to `channel`, if any. */
    getSubscription(channel) {
      return this.subs.get(channel);
    }
    /** Stops and forgets a subscription. */
    removeSubscription(sub) {
      sub.unsubscribe();
      this.subs.delete(sub.channel);
    }
    /** Starts connecting (and keeps reconnecting until {@link disconnect}). */
    connect() {
      if (this.wanted) return;
      this.wanted = true;
      this.attempt = 0;
      this.open("connect called");
    }
    /** Closes the session and stops reconnecting. */
    disconnect() {
      this.wanted = false;
      this.teardown();
      this.setState("disconnected");
      this.emit("disconnected", { code: 1e3, reason: "disconnect called", reconnect: false });
    }
    /** Replaces the token (sent as `refresh` on a WebSocket session, used by the next SSE request). */
    setToken(token) {
      this.options.token = token;
      if (this.ws && this.welcomed) this.send({ type: "refresh", token });
    }
    /** Every subscription's last position, as an `ack` carries them. */
    positions() {
      const out = {};
      for (const sub of this.subs.values()) if (sub.position && sub.state === "subscribed") out[sub.channel] = sub.position;
      return out;
    }
    /** @internal */
    startSubscription(sub, since) {
      if (this.state !== "connected") return;
      if (this.transport === "websocket") {
        this.send(since ? { type: "subscribe", channel: sub.channel, since } : { type: "subscribe", channel: sub.channel });
        this.resumed.set(sub.channel, since !== void 0);
      } else {
        void this.openSse(sub, since);
      }
    }
    /** @internal */
    stopSubscription(sub) {
      if (this.transport === "websocket") {
        if (this.ws && this.welcomed) this.send({ type: "unsubscribe", channel: sub.channel });
      } else {
        this.sse.get(sub.channel)?.abort();
        this.sse.delete(sub.channel);
      }
    }
    open(reason) {
      this.setState("connecting");
      if (this.transport === "sse") {
        this.startSse(reason);
        return;
      }
      const url = this.options.url + (this.options.url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(this.options.token);
      const make = this.options.webSocket ?? ((u) => new globalThis.WebSocket(u));
      let ws;
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
      ws.onerror = () => {
      };
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
    upgradeFailed(reason) {
      if (!this.wanted) return;
      this.transport = "sse";
      this.fallbackReason = reason;
      this.startSse(reason);
    }
    startSse(reason) {
      this.setState("connecting");
      const active = [...this.subs.values()].filter((s) => s.active);
      if (active.length === 0) {
        void this.probeSse(reason);
        return;
      }
      for (const sub of active) void this.openSse(sub, sub.position);
    }
    /** With no channel to open, asks the SSE route anything: an HTTP answer means the edge is up. */
    async probeSse(reason) {
      const doFetch = this.options.fetch ?? globalThis.fetch.bind(globalThis);
      try {
        const response = await doFetch(this.options.sseUrl, { headers: { Authorization: `Bearer ${this.options.token}` } });
        if (response.status === 401) {
          this.refused(await errorMessage(response));
          return;
        }
        if (response.status >= 500) throw new Error(`HTTP ${response.status}`);
        this.connected("sse", void 0, this.options.sseHeartbeatMs);
        this.emit("fallback", { reason });
      } catch (error) {
        this.transport = "websocket";
        this.lost(1006, `edge unreachable (${String(error)})`);
      }
    }
    async openSse(sub, since) {
      this.sse.get(sub.channel)?.abort();
      const controller = new AbortController();
      this.sse.set(sub.channel, controller);
      const headers = {
        Authorization: `Bearer ${this.options.token}`,
        Accept: "text/event-stream"
      };
      if (since) headers["Last-Event-ID"] = `${since.epoch}:${since.seq}`;
      const doFetch = this.options.fetch ?? globalThis.fetch.bind(globalThis);
      let response;
      try {
        response = await doFetch(`${this.options.sseUrl}?channel=${encodeURIComponent(sub.channel)}`, {
          headers,
          signal: controller.signal,
          cache: "no-store"
        });
      } catch (error) {
        if (controller.signal.aborted) return;
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
        if (response.status >= 500) this.transport = "websocket";
        this.lost(response.status, `SSE answered ${response.status}: ${await errorMessage(response)}`);
        return;
      }
      if (this.state !== "connected") {
        this.connected("sse", void 0, this.options.sseHeartbeatMs);
        this.emit("fallback", { reason: this.fallbackReason || "on SSE" });
      }
      this.resumed.set(sub.channel, since !== void 0);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      const parser = new SseParser();
      try {
        for (; ; ) {
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
    onMessage(message, via) {
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
    onHeartbeat(message, via) {
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
        positions: message.positions ?? {}
      });
      if (via === "websocket") this.send({ type: "ack", positions: this.positions() });
    }
    connected(transport, sessionId, heartbeatMs) {
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
    lost(code, reason) {
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
        random: this.options.random
      });
      this.attempt += 1;
      this.setState("connecting");
      this.emit("connecting", { reason, delayMs, attempt: this.attempt });
      this.reconnectTimer = setTimeout(() => {
        this.reconnectTimer = void 0;
        if (this.wanted) this.open(reason);
      }, delayMs);
    }
    refused(message) {
      this.wanted = false;
      this.teardown();
      for (const sub of this.subs.values()) sub._interrupted("unauthorized");
      this.setState("disconnected");
      this.emit("unauthorized", { message });
      this.emit("disconnected", { code: CloseCode.Unauthorized, reason: message, reconnect: false });
    }
    teardown() {
      if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
      this.reconnectTimer = void 0;
      this.stopWatchdog();
      const ws = this.ws;
      this.ws = null;
      this.welcomed = false;
      if (ws) {
        try {
          ws.close(1e3, "client closing");
        } catch {
        }
      }
      for (const controller of this.sse.values()) controller.abort();
      this.sse.clear();
    }
    startWatchdog() {
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
    stopWatchdog() {
      if (this.watchdog) clearInterval(this.watchdog);
      this.watchdog = void 0;
    }
    send(message) {
      if (!this.ws) return;
      try {
        this.ws.send(JSON.stringify(message));
      } catch {
      }
    }
    setState(state) {
      const previous = this.state;
      if (previous === state) return;
      this.state = state;
      this.emit("state", { state, previous });
    }
  };
  async function errorMessage(response) {
    try {
      const text = await response.text();
      try {
        const body = JSON.parse(text);
        return body.message ?? body.detail ?? text;
      } catch {
        return text || `HTTP ${response.status}`;
      }
    } catch {
      return `HTTP ${response.status}`;
    }
  }

  // ../console/src/api.ts
  var ApiError = class extends Error {
    constructor(status, body, title) {
      super(title);
      this.status = status;
      this.body = body;
      this.title = title;
    }
  };
  function describeError(status, body) {
    try {
      const json = JSON.parse(body);
      const title = json.title ?? json.error;
      const detail = json.detail ?? json.message;
      if (title || detail) return [title, detail].filter(Boolean).join(": ");
    } catch {
    }
    return body ? `HTTP ${status}: ${body}` : `HTTP ${status}`;
  }
  var Api = class {
    constructor(base, token) {
      this.base = base;
      this.token = token;
    }
    /** GETs `path` as JSON. */
    async get(path) {
      return this.request("GET", path);
    }
    /** POSTs `body` to `path`; a command gets a fresh Idempotency-Key. */
    async post(path, body) {
      return this.request("POST", path, body);
    }
    async request(method, path, body) {
      const headers = { Authorization: `Bearer ${this.token}`, Accept: "application/json" };
      if (body !== void 0) {
        headers["Content-Type"] = "application/json";
        headers["Idempotency-Key"] = crypto.randomUUID();
      }
      let response;
      try {
        response = await fetch(this.base + path, {
          method,
          headers,
          body: body === void 0 ? void 0 : JSON.stringify(body),
          cache: "no-store"
        });
      } catch (error) {
        throw new ApiError(0, "", `the API at ${this.base} did not answer (${String(error)})`);
      }
      const text = await response.text();
      if (!response.ok) throw new ApiError(response.status, text, describeError(response.status, text));
      return text ? JSON.parse(text) : {};
    }
  };

  // ../console/src/dom.ts
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === void 0 || value === null || value === false) continue;
      if (key.startsWith("on") && typeof value === "function") {
        node.addEventListener(key.slice(2), value);
      } else if (key === "dataset") {
        for (const [k, v] of Object.entries(value)) node.dataset[k] = v;
      } else if (value === true) {
        node.setAttribute(key, "");
      } else {
        node.setAttribute(key, String(value));
      }
    }
    append(node, children);
    return node;
  }
  function append(node, children) {
    for (const child of children) {
      if (child === null || child === void 0 || child === false) continue;
      node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
    }
  }
  function replace(node, ...children) {
    while (node.firstChild) node.removeChild(node.firstChild);
    append(node, children);
  }
  function byId(id) {
    const node = document.getElementById(id);
    if (!node) throw new Error(`the page has no #${id}`);
    return node;
  }
  function money(minor, currency) {
    if (typeof minor !== "number") return "\u2014";
    const zeroDecimal = ["JPY", "KRW", "VND", "CLP", "ISK", "UGX"];
    const digits = typeof currency === "string" && zeroDecimal.includes(currency.toUpperCase()) ? 0 : 2;
    return (minor / 10 ** digits).toFixed(digits);
  }
  function age(iso, now = Date.now()) {
    if (typeof iso !== "string") return "\u2014";
    const ms = now - Date.parse(iso);
    if (!Number.isFinite(ms)) return "\u2014";
    const s = Math.max(0, Math.round(ms / 1e3));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor(s % 3600 / 60)}m`;
    return `${Math.floor(s / 86400)}d`;
  }
  function stamp(stream, seq) {
    return el("span", { class: "stamp", title: `${stream} stream position` }, `${stream} #${seq ?? "?"}`);
  }

  // ../console/src/alerts.ts
  var drafts = /* @__PURE__ */ new Map();
  function ackForm(api, alert, done) {
    if (alert.acked_by) {
      return el(
        "span",
        { class: "acked", dataset: { acked: "true" } },
        "acked by ",
        el("b", { class: "ack-operator" }, alert.acked_by),
        ": ",
        el("q", { class: "ack-note" }, alert.ack_note ?? "")
      );
    }
    const note = el("input", { type: "text", placeholder: "note", class: "ack-note-input", "aria-label": "acknowledgement note" });
    note.value = drafts.get(alert.alert_id) ?? "";
    note.addEventListener("input", () => drafts.set(alert.alert_id, note.value));
    const result = el("span", { class: "ack-result" });
    const button = el("button", { type: "button", class: "ack-button" }, "Ack");
    button.addEventListener("click", async () => {
      const text = note.value.trim();
      if (!text) {
        result.textContent = "a note is required";
        return;
      }
      button.disabled = true;
      try {
        await api.post(`/v1/alerts/${encodeURIComponent(alert.alert_id)}/ack`, { note: text });
        drafts.delete(alert.alert_id);
        done();
      } catch (error) {
        result.textContent = error instanceof ApiError ? error.title : String(error);
        button.disabled = false;
      }
    });
    return el("span", {}, note, button, result);
  }
  var AlertsPanel = class {
    constructor(api) {
      this.api = api;
      this.alerts = [];
    }
    /** Subscribes to the `alerts` channel and loads the list once subscribed. */
    start(client, onSubscription) {
      const sub = client.newSubscription("alerts");
      sub.on("subscribed", () => void this.load());
      sub.on("publication", (e) => this.apply(e));
      sub.on("error", (e) => {
        byId("alerts-problem").textContent = `live alerts refused: ${e.message}`;
      });
      onSubscription(sub);
      sub.subscribe();
    }
    /** A live alert (shown at once) or acknowledgement (then REST is read again). */
    apply(event) {
      byId("alerts-position").textContent = `ALERT #${event.position.seq}`;
      if (event.kind === "alert" && typeof event.alert_id === "string") {
        if (!this.alerts.some((a) => a.alert_id === event.alert_id)) {
          this.alerts = [
            {
              alert_id: event.alert_id,
              kind: String(event.alert_kind ?? "?"),
              payment_id: event.payment_id ?? null,
              detail: String(event.detail ?? ""),
              raised_at: String(event.raised_at ?? (/* @__PURE__ */ new Date()).toISOString())
            },
            ...this.alerts
          ];
          this.render();
        }
      }
      this.poke();
    }
    /** Reads the alerts again soon (after a burst of events, once). */
    poke() {
      if (this.timer) clearTimeout(this.timer);
      this.timer = setTimeout(() => void this.load(), 300);
    }
    async load() {
      let alerts;
      try {
        alerts = (await this.api.get("/v1/alerts")).items;
      } catch (error) {
        byId("alerts-problem").textContent = error instanceof ApiError ? error.title : String(error);
        return;
      }
      byId("alerts-problem").textContent = "";
      const known = new Set(alerts.map((a) => a.alert_id));
      this.alerts = [...this.alerts.filter((a) => !known.has(a.alert_id) && !a.acked_by), ...alerts];
      this.render();
    }
    render() {
      const alerts = this.alerts;
      const counts = /* @__PURE__ */ new Map();
      for (const a of alerts) if (!a.acked_by) counts.set(a.kind, (counts.get(a.kind) ?? 0) + 1);
      replace(
        byId("alert-counts"),
        ...[...counts.entries()].map(([kind, n]) => el("span", { class: "pill", dataset: { tone: "warn", kind } }, `${kind} ${n}`))
      );
      byId("alert-count").textContent = String(alerts.filter((a) => !a.acked_by).length);
      replace(
        byId("alerts"),
        ...alerts.slice(0, 100).map(
          (a) => el(
            "li",
            { dataset: { alertId: a.alert_id, kind: a.kind } },
            el("b", {}, a.kind),
            " ",
            a.payment_id ? el("a", { href: `/payments/${encodeURIComponent(a.payment_id)}`, class: "mono" }, a.payment_id) : "",
            ` ${a.detail} \xB7 ${age(a.raised_at)} ago `,
            ackForm(this.api, a, () => void this.load())
          )
        )
      );
    }
  };

  // ../console/src/connection.ts
  var LABEL = {
    connecting: "connecting",
    live: "live",
    "catching-up": "catching up",
    stale: "stale",
    reconnecting: "reconnecting",
    fallback: "fallback (SSE)",
    unauthorized: "unauthorized"
  };
  var TONE = {
    connecting: "info",
    live: "ok",
    "catching-up": "info",
    stale: "warn",
    reconnecting: "warn",
    fallback: "warn",
    unauthorized: "bad"
  };
  var ConnectionView = class {
    constructor(client) {
      this.client = client;
      this.behind = /* @__PURE__ */ new Set();
      this.reconnectNote = "";
      this.unauthorized = "";
      this.gaps = 0;
      this.heartbeatMs = 15e3;
      this.watched = [];
      client.on("state", () => this.render());
      client.on("connecting", (c) => {
        this.reconnectNote = `attempt ${c.attempt}, next try in ${(c.delayMs / 1e3).toFixed(1)} s: ${c.reason}`;
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
      setInterval(() => this.render(), 1e3);
    }
    /** Follows a subscription's outcomes and gaps. */
    watch(sub) {
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
    state() {
      if (this.unauthorized) return "unauthorized";
      if (this.client.state === "connecting") return this.reconnectNote ? "reconnecting" : "connecting";
      if (this.client.state === "disconnected") return "reconnecting";
      if (this.client.transport === "sse") return "fallback";
      if (this.client.stale || this.client.lastHeartbeatAt !== void 0 && !this.client.edgeLive) return "stale";
      if (this.behind.size > 0) return "catching-up";
      if (this.watched.some((sub) => sub.state === "subscribing")) return "catching-up";
      return "live";
    }
    /** Redraws the header. */
    render() {
      const state = this.state();
      const conn = byId("conn");
      conn.dataset.state = state;
      conn.dataset.tone = TONE[state];
      conn.textContent = LABEL[state];
      conn.title = state === "unauthorized" ? this.unauthorized : state === "reconnecting" ? this.reconnectNote : state === "fallback" ? "the WebSocket upgrade failed; events arrive over Server-Sent Events" : "";
      byId("conn-detail").textContent = state === "reconnecting" ? this.reconnectNote : state === "unauthorized" ? this.unauthorized : "";
      const currency = byId("currency");
      const fresh = this.lastCurrentAt !== void 0 && Date.now() - this.lastCurrentAt < 2.5 * this.heartbeatMs && (state === "live" || state === "fallback");
      currency.dataset.state = fresh ? "current" : "not-current";
      currency.dataset.tone = fresh ? "ok" : "warn";
      currency.textContent = fresh ? "current" : "not current";
      byId("last-current").textContent = this.lastCurrentAt ? new Date(this.lastCurrentAt).toLocaleTimeString() : "never";
    }
  };

  // ../console/src/list.ts
  var FILTERS = [
    "status",
    "merchant",
    "provider",
    "rail",
    "direction",
    "amount_min",
    "amount_max",
    "currency",
    "created_after",
    "created_before",
    "updated_after",
    "updated_before",
    "q",
    "order"
  ];
  function finalText(p) {
    if (p.final) return "yes";
    const why = p.not_final_because;
    return why ? `no: ${why.replace(/_/g, " ")}` : "no";
  }
  var PAGE_SIZE = 50;
  var PaymentList = class {
    constructor(api, client, onSubscription, open) {
      this.api = api;
      this.client = client;
      this.onSubscription = onSubscription;
      this.open = open;
      this.rows = /* @__PURE__ */ new Map();
      this.renderQueued = false;
      this.cursors = [void 0];
      this.page = 0;
      this.newOutside = 0;
    }
    /** Builds the filter bar and loads the first page. */
    async start() {
      const form = byId("filters");
      form.addEventListener("submit", (e) => {
        e.preventDefault();
        this.cursors = [void 0];
        this.page = 0;
        void this.load();
      });
      byId("next-page").addEventListener("click", () => {
        if (this.cursors[this.page + 1] === void 0) return;
        this.page += 1;
        void this.load();
      });
      byId("prev-page").addEventListener("click", () => {
        if (this.page === 0) return;
        this.page -= 1;
        void this.load();
      });
      setInterval(() => this.refreshAges(), 5e3);
      await this.load();
    }
    query() {
      const form = byId("filters");
      const params = new URLSearchParams();
      for (const name of FILTERS) {
        const input = form.elements.namedItem(name);
        const value = input?.value.trim();
        if (value) params.set(name, value);
      }
      params.set("limit", String(PAGE_SIZE));
      const cursor = this.cursors[this.page];
      if (cursor) params.set("cursor", cursor);
      return params;
    }
    /** Loads the current page, then (once) subscribes from the list's position. */
    async load() {
      const params = this.query();
      const problem = byId("list-problem");
      problem.textContent = "";
      let page;
      try {
        page = await this.api.get(`/v1/payments?${params}`);
      } catch (error) {
        problem.textContent = error instanceof ApiError ? error.title : String(error);
        this.follow(void 0);
        return;
      }
      let items = page.items;
      const q = params.get("q");
      if (q && !items.some((p) => p.payment_id === q)) {
        try {
          const exact = await this.api.get(`/v1/payments/${encodeURIComponent(q)}`);
          items = [exact, ...items];
        } catch {
        }
      }
      this.cursors[this.page + 1] = page.next_cursor ?? void 0;
      this.rows.clear();
      for (const p of items) this.rows.set(p.payment_id, p);
      this.newOutside = 0;
      this.render();
      byId("page-label").textContent = `page ${this.page + 1}`;
      byId("list-position").textContent = `list at STATUS #${page.position.seq}`;
      this.follow(page.position.seq > 0 ? page.position : void 0);
    }
    /** Subscribes to the tenant's payments once, from the first list's position. */
    follow(since) {
      if (this.sub) return;
      this.sub = this.client.newSubscription("payments", { since });
      this.sub.on("publication", (e) => this.apply(e));
      this.sub.on("reload", () => void this.load());
      this.onSubscription(this.sub);
      this.sub.subscribe();
    }
    /** A live event: updates a shown row; a payment not shown is counted, not inserted mid-page. */
    apply(event) {
      const id = event.payment_id;
      if (!id) return;
      const row = this.rows.get(id);
      if (event.kind === "checkpoint") {
        if (row && event.version === row.version) {
          if (event.checkpoint === "ledger_posted" || event.checkpoint === "return_window_closed") {
            row.final = Boolean(event.final);
            if (row.final) row.not_final_because = null;
          }
          this.renderRow(row, true);
        }
        return;
      }
      const terms = event.terms ?? {};
      const version = Number(event.version);
      if (row && version <= row.version) return;
      const next = {
        ...row ?? { payment_id: id, created_at: event.recorded_at },
        payment_id: id,
        merchant_id: event.merchant_id,
        status: event.status,
        version,
        seq: event.position.seq,
        final: false,
        not_final_because: event.not_final_because ?? "awaiting_persisted",
        amount_minor: terms.amount_minor ?? row?.amount_minor,
        currency: terms.currency ?? row?.currency,
        provider: terms.provider ?? row?.provider,
        rail: event.rail ?? terms.rail ?? row?.rail,
        trace_id: event.trace_id,
        updated_at: event.recorded_at
      };
      if (row) {
        this.rows.set(id, next);
        this.renderRow(next, true);
      } else if (this.page === 0 && this.filtersEmpty() && this.newestFirst()) {
        this.rows = new Map([[id, next], ...this.rows]);
        for (const old of [...this.rows.keys()].slice(PAGE_SIZE)) this.rows.delete(old);
        this.queueRender();
      } else {
        this.newOutside += 1;
        byId("list-new").textContent = `${this.newOutside} update(s) outside this page: reload to see them`;
      }
    }
    /** Whether the list is ordered newest first (where a new payment belongs on page 1). */
    newestFirst() {
      return (this.query().get("order") ?? "-created_at") === "-created_at";
    }
    /** Renders once for every live event that arrives before the next frame. */
    queueRender() {
      if (this.renderQueued) return;
      this.renderQueued = true;
      setTimeout(() => {
        this.renderQueued = false;
        this.render();
      }, 16);
    }
    filtersEmpty() {
      const params = this.query();
      params.delete("limit");
      params.delete("order");
      return [...params.keys()].length === 0;
    }
    render() {
      const body = byId("payment-rows");
      replace(body, ...[...this.rows.values()].map((p) => this.row(p)));
      byId("payment-count").textContent = String(this.rows.size);
      byId("payments-empty").hidden = this.rows.size > 0;
    }
    renderRow(p, flash) {
      const old = document.querySelector(`tr[data-payment-id="${CSS.escape(p.payment_id)}"]`);
      const row = this.row(p);
      if (flash) row.classList.add("flash");
      if (old) old.replaceWith(row);
    }
    row(p) {
      const cell = (field, value, extra = {}) => el("td", { dataset: { field, value }, ...extra }, field === "status" ? el("span", {}, value) : value);
      const link = el("a", { href: `/payments/${encodeURIComponent(p.payment_id)}`, class: "mono" }, p.payment_id);
      link.addEventListener("click", (e) => {
        e.preventDefault();
        this.open(p.payment_id);
      });
      return el(
        "tr",
        { dataset: { paymentId: p.payment_id } },
        el("td", { dataset: { field: "payment_id" } }, link),
        cell("merchant_id", p.merchant_id ?? "\u2014"),
        cell("amount", money(p.amount_minor, p.currency)),
        cell("currency", p.currency ?? "\u2014"),
        cell("provider", p.provider ?? "\u2014"),
        cell("rail", p.rail ?? "\u2014"),
        cell("status", p.status),
        cell("version", String(p.version)),
        cell("age", age(p.created_at ?? p.occurred_at), { title: p.created_at ?? p.occurred_at ?? "" }),
        cell("final", finalText(p)),
        cell("seq", p.seq !== void 0 ? `#${p.seq}` : "\u2014", { class: "stamp" })
      );
    }
    refreshAges() {
      for (const td of document.querySelectorAll('td[data-field="age"]')) {
        if (td.title) td.textContent = age(td.title);
      }
    }
  };

  // ../console/src/payment.ts
  function actionRules(p) {
    const features = p.capabilities?.features ?? {};
    const unsupported = (feature) => features[feature] === false ? `${feature} is not supported on rail ${p.capabilities?.rail ?? p.rail ?? "?"} in ${p.capabilities?.country ?? "this country"}` : null;
    const status = p.status;
    return {
      cancel: ["initiated", "pending", "held"].includes(status) ? unsupported("cancel") : `a ${status} payment cannot be cancelled (only initiated, pending or held)`,
      retry: status === "failed" ? unsupported("retry") : `only a failed payment can be retried (this one is ${status})`,
      resolve: status === "investigation_required" ? null : `only a payment in investigation_required is resolved (this one is ${status})`
    };
  }
  var PaymentPage = class {
    constructor(api, client, id, onSubscription) {
      this.api = api;
      this.client = client;
      this.id = id;
      this.onSubscription = onSubscription;
    }
    /** Reads the position, then the payment, then subscribes from that position. */
    async start() {
      byId("payment-id").textContent = this.id;
      let position;
      try {
        position = (await this.api.get("/v1/payments?limit=1")).position;
      } catch {
        position = void 0;
      }
      await this.refresh();
      this.sub = this.client.newSubscription(`payment:${this.id}`, {
        since: position && position.seq > 0 ? position : void 0
      });
      this.sub.on("publication", (e) => this.apply(e));
      this.sub.on("subscribed", (s) => {
        if (s.recovery.kind === "snapshot") void this.refresh();
      });
      this.onSubscription(this.sub);
      this.sub.subscribe();
      for (const action of ["cancel", "retry", "resolve"]) {
        byId(`action-${action}`).addEventListener("click", () => void this.act(action));
      }
    }
    /** A live event: the header first (so it shows at once), then REST for the rest. */
    apply(event) {
      const log = byId("live-log");
      log.prepend(
        el("li", {}, stamp("STATUS", event.position.seq), ` ${event.kind} `, String(event.checkpoint ?? event.status ?? ""), ` v${event.version ?? "?"}`)
      );
      if (event.kind === "transition" && this.view && Number(event.version) > this.view.version) {
        const terms = event.terms ?? {};
        this.view = {
          ...this.view,
          status: event.status,
          version: Number(event.version),
          seq: event.position.seq,
          final: false,
          not_final_because: event.not_final_because ?? this.view.not_final_because,
          amounts: event.amounts ?? this.view.amounts,
          rail: event.rail ?? this.view.rail,
          provider: terms.provider ?? this.view.provider,
          provider_ref: terms.provider_ref ?? this.view.provider_ref
        };
        this.renderHeader();
      }
      this.scheduleRefresh();
    }
    scheduleRefresh() {
      if (this.refreshTimer) clearTimeout(this.refreshTimer);
      this.refreshTimer = setTimeout(() => void this.refresh(), 250);
    }
    /** Reads the view and the evidence pack again. */
    async refresh() {
      const problem = byId("payment-problem");
      try {
        const [view, evidence] = await Promise.all([
          this.api.get(`/v1/payments/${encodeURIComponent(this.id)}`),
          this.api.get(`/v1/payments/${encodeURIComponent(this.id)}/evidence`)
        ]);
        problem.textContent = "";
        if (!this.view || view.version >= this.view.version) this.view = view;
        this.renderHeader();
        this.renderEvidence(evidence);
      } catch (error) {
        problem.textContent = error instanceof ApiError ? error.title : String(error);
      }
    }
    renderHeader() {
      const p = this.view;
      if (!p) return;
      const amounts = p.amounts ?? {};
      const status = byId("p-status");
      status.dataset.value = p.status;
      status.textContent = p.status;
      const set = (id, value) => {
        byId(id).textContent = value;
      };
      set("p-version", `v${p.version}`);
      set("p-seq", `STATUS #${p.seq ?? "?"}`);
      set("p-amount", `${money(p.amount_minor, p.currency)} ${p.currency ?? ""}`);
      set("p-captured", money(amounts.captured_minor, p.currency));
      set("p-refunded", money(amounts.refunded_minor, p.currency));
      set("p-disputed", money(amounts.disputed_minor, p.currency));
      set("p-net", money(amounts.net_minor, p.currency));
      set("p-rail", p.rail ?? "\u2014");
      set("p-provider", p.provider ?? "\u2014");
      set("p-provider-ref", p.provider_ref ?? "\u2014");
      set("p-final", finalText(p));
      set("p-merchant", p.merchant_id ?? "\u2014");
      const rules = actionRules(p);
      for (const [action, reason] of Object.entries(rules)) {
        const button = byId(`action-${action}`);
        button.disabled = reason !== null;
        button.title = reason ?? "";
        byId(`action-${action}-why`).textContent = reason ?? "";
      }
      replace(byId("p-movements"), movementsTable(p.movements));
    }
    renderEvidence(e) {
      replace(
        byId("timeline"),
        ...e.timeline.map(
          (t) => t.kind === "transition" ? el(
            "li",
            { dataset: { kind: "transition", version: String(t.version), seq: String(t.seq) } },
            stamp("STATUS", t.seq),
            " ",
            el("b", {}, `v${t.version} ${t.previous_status ?? "\u2205"} \u2192 ${t.status}`),
            " rule ",
            el("code", {}, t.rule ?? "?"),
            " caused by ",
            el("code", {}, t.fact_id),
            ` (${t.source}, IN #${t.inbound_seq})`
          ) : el(
            "li",
            { dataset: { kind: "fact", outcome: t.outcome ?? "" }, class: "nochange" },
            stamp("IN", t.inbound_seq),
            ` changed nothing: ${t.outcome}`,
            t.reason ? ` (${t.reason})` : "",
            " fact ",
            el("code", {}, t.fact_id),
            t.superseded_by ? el("span", {}, " superseded by ", el("code", {}, t.superseded_by)) : ""
          )
        )
      );
      replace(
        byId("checkpoints"),
        ...e.checkpoints.map(
          (c) => el("li", {}, stamp("STATUS", c.seq ?? "?"), ` v${c.version} ${c.kind}${c.final ? " (final)" : ""}`)
        )
      );
      replace(
        byId("ledger"),
        ...e.ledger.map(
          (j) => el("li", {}, stamp("STATUS", j.seq), ` v${j.version} ${j.entry_kind} (${j.status}) `, el("code", {}, JSON.stringify(j.postings)))
        )
      );
      replace(
        byId("facts"),
        ...e.facts.map(
          (f) => el(
            "li",
            {},
            el(
              "details",
              {},
              el("summary", {}, stamp("IN", f.inbound_seq), ` ${f.fact_id} \xB7 ${f.outcome ?? "undecided"} \xB7 received ${age(f.received_at)} ago`),
              el("pre", {}, JSON.stringify(f.raw_headers, null, 2)),
              el("pre", {}, f.raw_body)
            )
          )
        )
      );
      replace(
        byId("sessions"),
        ...e.sessions.map(
          (s) => el("li", {}, el("code", {}, s.session_id), ` ${s.subject} via ${s.transport} on ${s.channel}: versions ${s.versions_sent.join(", ")}`)
        )
      );
      replace(
        byId("payment-alerts"),
        ...e.alerts.map((a) => el("li", { dataset: { alertId: a.alert_id } }, `${a.kind}: ${a.detail} `, ackForm(this.api, a, () => void this.refresh())))
      );
      const link = byId("download-evidence");
      const old = link.href;
      link.href = URL.createObjectURL(new Blob([JSON.stringify(e, null, 2)], { type: "application/json" }));
      link.download = `evidence-${this.id}.json`;
      if (old.startsWith("blob:")) URL.revokeObjectURL(old);
    }
    async act(action) {
      const out = byId("action-result");
      const body = {};
      if (action === "resolve") {
        const reason = byId("resolve-reason").value.trim();
        if (!reason) {
          out.textContent = "resolve needs a reason";
          return;
        }
        body.reason = reason;
        body.status = byId("resolve-status").value;
      }
      out.dataset.outcome = "pending";
      out.textContent = `${action}\u2026`;
      try {
        const answer = await this.api.post(`/v1/payments/${encodeURIComponent(this.id)}/${action}`, body);
        out.dataset.outcome = "accepted";
        out.textContent = `${action} accepted: ${JSON.stringify(answer)}`;
      } catch (error) {
        out.dataset.outcome = "refused";
        out.textContent = error instanceof ApiError ? `${action} refused (HTTP ${error.status}): ${error.title}` : String(error);
      }
    }
  };
  function movementsTable(movements) {
    const list = Array.isArray(movements) ? movements : movements && typeof movements === "object" ? Object.values(movements).flat() : [];
    if (list.length === 0) return el("p", { class: "muted" }, "no refunds, disputes or payouts");
    return el(
      "ul",
      {},
      ...list.map((m) => el("li", { dataset: { movement: "1" } }, el("code", {}, JSON.stringify(m))))
    );
  }

  // ../console/src/main.ts
  var TOKEN_KEY = "paytrack.console.token";
  var API_KEY = "paytrack.console.api";
  function credentials() {
    const url = new URL(location.href);
    const token = url.searchParams.get("token");
    const api = url.searchParams.get("api");
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    if (api) sessionStorage.setItem(API_KEY, api.replace(/\/$/, ""));
    if (token || api) {
      url.searchParams.delete("token");
      url.searchParams.delete("api");
      history.replaceState(null, "", url.pathname + url.search + url.hash);
    }
    return {
      token: sessionStorage.getItem(TOKEN_KEY),
      api: sessionStorage.getItem(API_KEY) ?? location.origin
    };
  }
  function askForToken(message) {
    byId("token-panel").hidden = false;
    byId("console").hidden = true;
    byId("token-error").textContent = message;
    byId("token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const value = byId("token-input").value.trim();
      if (value) {
        sessionStorage.setItem(TOKEN_KEY, value);
        location.reload();
      }
    });
  }
  function main() {
    const { token, api } = credentials();
    byId("forget").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      location.reload();
    });
    if (!token) {
      askForToken("");
      return;
    }
    byId("console").hidden = false;
    byId("forget").hidden = false;
    byId("api-base").textContent = api;
    const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/ws`;
    const client = new Client({ url: wsUrl, sseUrl: `${location.origin}/v1/sse`, token });
    const connection = new ConnectionView(client);
    const rest = new Api(api, token);
    const alerts = new AlertsPanel(rest);
    client.on("unauthorized", (u) => {
      byId("banner").dataset.tone = "bad";
      byId("banner").textContent = `unauthorized: ${u.message}. Paste a new token.`;
      byId("forget").hidden = false;
    });
    const follow = (sub) => connection.watch(sub);
    const match = /^\/payments\/([^/]+)$/.exec(location.pathname);
    window.paytrack = { client, connection };
    if (match) {
      document.body.dataset.page = "payment";
      byId("payment-page").hidden = false;
      const page = new PaymentPage(rest, client, decodeURIComponent(match[1]), follow);
      void page.start();
    } else {
      document.body.dataset.page = "list";
      byId("list-page").hidden = false;
      const list = new PaymentList(rest, client, follow, (id) => location.assign(`/payments/${encodeURIComponent(id)}`));
      void list.start();
    }
    alerts.start(client, follow);
    client.connect();
    connection.render();
  }
  main();
})();
