import type { Client, EventMessage, Subscription } from "../../typescript/src/index.js";
import { Api, ApiError, type Alert } from "./api.js";
import { age, byId, el, replace } from "./dom.js";

/** Notes being typed, by alert id, so a re-render (a live alert arriving) keeps them. */
const drafts = new Map<string, string>();

/**
 * An alert's acknowledgement: who and the note once acked, else a note field and a
 * button (a note is required: it is the audit's "why").
 */
export function ackForm(api: Api, alert: Alert, done: () => void): HTMLElement {
  if (alert.acked_by) {
    return el(
      "span",
      { class: "acked", dataset: { acked: "true" } },
      "acked by ",
      el("b", { class: "ack-operator" }, alert.acked_by),
      ": ",
      el("q", { class: "ack-note" }, alert.ack_note ?? ""),
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

/**
 * The alerts panel: the tenant's alerts with counts by kind, each linking to its
 * payment, acknowledged with a note. Live on the edge's `alerts` channel: subscribed
 * first, then read from REST (so nothing raised in between is missed); an alert is
 * shown as it arrives, and REST is read again after it for the acknowledgements.
 */
export class AlertsPanel {
  private timer: ReturnType<typeof setTimeout> | undefined;
  private alerts: Alert[] = [];

  constructor(private readonly api: Api) {}

  /** Subscribes to the `alerts` channel and loads the list once subscribed. */
  start(client: Client, onSubscription: (sub: Subscription) => void): void {
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
  apply(event: EventMessage): void {
    byId("alerts-position").textContent = `ALERT #${event.position.seq}`;
    if (event.kind === "alert" && typeof event.alert_id === "string") {
      if (!this.alerts.some((a) => a.alert_id === event.alert_id)) {
        this.alerts = [
          {
            alert_id: event.alert_id,
            kind: String(event.alert_kind ?? "?"),
            payment_id: (event.payment_id as string | undefined) ?? null,
            detail: String(event.detail ?? ""),
            raised_at: String(event.raised_at ?? new Date().toISOString()),
          },
          ...this.alerts,
        ];
        this.render();
      }
    }
    this.poke();
  }

  /** Reads the alerts again soon (after a burst of events, once). */
  poke(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.load(), 300);
  }

  private async load(): Promise<void> {
    let alerts: Alert[];
    try {
      alerts = (await this.api.get<{ items: Alert[] }>("/v1/alerts")).items;
    } catch (error) {
      byId("alerts-problem").textContent = error instanceof ApiError ? error.title : String(error);
      return;
    }
    byId("alerts-problem").textContent = "";
    // Alerts that arrived live and are not in the projection yet stay shown.
    const known = new Set(alerts.map((a) => a.alert_id));
    this.alerts = [...this.alerts.filter((a) => !known.has(a.alert_id) && !a.acked_by), ...alerts];
    this.render();
  }

  private render(): void {
    const alerts = this.alerts;
    const counts = new Map<string, number>();
    for (const a of alerts) if (!a.acked_by) counts.set(a.kind, (counts.get(a.kind) ?? 0) + 1);
    replace(
      byId("alert-counts"),
      ...[...counts.entries()].map(([kind, n]) => el("span", { class: "pill", dataset: { tone: "warn", kind } }, `${kind} ${n}`)),
    );
    byId("alert-count").textContent = String(alerts.filter((a) => !a.acked_by).length);
    replace(
      byId("alerts"),
      ...alerts.slice(0, 100).map((a) =>
        el(
          "li",
          { dataset: { alertId: a.alert_id, kind: a.kind } },
          el("b", {}, a.kind),
          " ",
          a.payment_id ? el("a", { href: `/payments/${encodeURIComponent(a.payment_id)}`, class: "mono" }, a.payment_id) : "",
          ` ${a.detail} · ${age(a.raised_at)} ago `,
          ackForm(this.api, a, () => void this.load()),
        ),
      ),
    );
  }
}
