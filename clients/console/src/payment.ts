import type { Client, EventMessage, Subscription } from "../../typescript/src/index.js";
import { Api, ApiError, type Alert, type Payment } from "./api.js";
import { finalText } from "./list.js";
import { age, byId, el, money, replace, stamp } from "./dom.js";
import { ackForm } from "./alerts.js";

interface TimelineItem {
  kind: "transition" | "fact";
  version?: number;
  status?: string;
  previous_status?: string | null;
  seq?: number;
  fact_id: string;
  source?: string;
  rule?: string | null;
  outcome?: string;
  reason?: string | null;
  event_type?: string | null;
  superseded_by?: string | null;
  inbound_seq: number;
  recorded_at: string;
}

interface Evidence {
  payment: Payment | null;
  timeline: TimelineItem[];
  facts: Array<{ fact_id: string; inbound_seq: number; raw_headers: unknown; raw_body: string; received_at: string; outcome?: string | null }>;
  checkpoints: Array<{ version: number; kind: string; final: boolean; seq?: number | null; observed: boolean; created_at: string }>;
  ledger: Array<{ version: number; entry_kind: string; status: string; seq: number; occurred_at: string; postings: unknown[] }>;
  sessions: Array<{ session_id: string; subject: string; transport: string; channel: string; at: string; versions_sent: number[] }>;
  alerts: Alert[];
  [k: string]: unknown;
}

/** Which actions the payment's state and capabilities allow, and why not. */
export function actionRules(p: Payment): Record<"cancel" | "retry" | "resolve", string | null> {
  const features = p.capabilities?.features ?? {};
  const unsupported = (feature: string) =>
    features[feature] === false
      ? `${feature} is not supported on rail ${p.capabilities?.rail ?? p.rail ?? "?"} in ${p.capabilities?.country ?? "this country"}`
      : null;
  const status = p.status;
  return {
    cancel: ["initiated", "pending", "held"].includes(status)
      ? unsupported("cancel")
      : `a ${status} payment cannot be cancelled (only initiated, pending or held)`,
    retry: status === "failed" ? unsupported("retry") : `only a failed payment can be retried (this one is ${status})`,
    resolve:
      status === "investigation_required"
        ? null
        : `only a payment in investigation_required is resolved (this one is ${status})`,
  };
}

/**
 * A payment's page (`/payments/{id}`): its header, timeline, checkpoints, ledger,
 * movements, raw evidence, sessions and alerts from REST, every element stamped with
 * its stream position, kept live on the `payment:<id>` channel from the position the
 * REST reads were taken at. A live transition updates the header at once and the
 * rest is read again from REST.
 */
export class PaymentPage {
  private view: Payment | undefined;
  private sub: Subscription | undefined;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly api: Api,
    private readonly client: Client,
    private readonly id: string,
    private readonly onSubscription: (sub: Subscription) => void,
  ) {}

  /** Reads the position, then the payment, then subscribes from that position. */
  async start(): Promise<void> {
    byId("payment-id").textContent = this.id;
    let position: { epoch: string; seq: number } | undefined;
    try {
      // Position first: every message up to it is in what the reads below return.
      position = (await this.api.get<{ position: { epoch: string; seq: number } }>("/v1/payments?limit=1")).position;
    } catch {
      position = undefined;
    }
    await this.refresh();
    this.sub = this.client.newSubscription(`payment:${this.id}`, {
      since: position && position.seq > 0 ? position : undefined,
    });
    this.sub.on("publication", (e) => this.apply(e));
    this.sub.on("subscribed", (s) => {
      if (s.recovery.kind === "snapshot") void this.refresh();
    });
    this.onSubscription(this.sub);
    this.sub.subscribe();
    for (const action of ["cancel", "retry", "resolve"] as const) {
      byId(`action-${action}`).addEventListener("click", () => void this.act(action));
    }
  }

  /** A live event: the header first (so it shows at once), then REST for the rest. */
  apply(event: EventMessage): void {
    const log = byId("live-log");
    log.prepend(
      el("li", {}, stamp("STATUS", event.position.seq), ` ${event.kind} `, String(event.checkpoint ?? event.status ?? ""), ` v${event.version ?? "?"}`),
    );
    if (event.kind === "transition" && this.view && Number(event.version) > this.view.version) {
      const terms = (event.terms ?? {}) as Record<string, unknown>;
      this.view = {
        ...this.view,
        status: event.status as string,
        version: Number(event.version),
        seq: event.position.seq,
        final: false,
        not_final_because: (event.not_final_because as string) ?? this.view.not_final_because,
        amounts: (event.amounts as Record<string, unknown>) ?? this.view.amounts,
        rail: (event.rail as string) ?? this.view.rail,
        provider: (terms.provider as string) ?? this.view.provider,
        provider_ref: (terms.provider_ref as string) ?? this.view.provider_ref,
      };
      this.renderHeader();
    }
    this.scheduleRefresh();
  }

  private scheduleRefresh(): void {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => void this.refresh(), 250);
  }

  /** Reads the view and the evidence pack again. */
  async refresh(): Promise<void> {
    const problem = byId("payment-problem");
    try {
      const [view, evidence] = await Promise.all([
        this.api.get<Payment>(`/v1/payments/${encodeURIComponent(this.id)}`),
        this.api.get<Evidence>(`/v1/payments/${encodeURIComponent(this.id)}/evidence`),
      ]);
      problem.textContent = "";
      if (!this.view || view.version >= this.view.version) this.view = view;
      this.renderHeader();
      this.renderEvidence(evidence);
    } catch (error) {
      problem.textContent = error instanceof ApiError ? error.title : String(error);
    }
  }

  private renderHeader(): void {
    const p = this.view;
    if (!p) return;
    const amounts = (p.amounts ?? {}) as Record<string, unknown>;
    const status = byId("p-status");
    status.dataset.value = p.status;
    status.textContent = p.status;
    const set = (id: string, value: string) => {
      byId(id).textContent = value;
    };
    set("p-version", `v${p.version}`);
    set("p-seq", `STATUS #${p.seq ?? "?"}`);
    set("p-amount", `${money(p.amount_minor, p.currency)} ${p.currency ?? ""}`);
    set("p-captured", money(amounts.captured_minor, p.currency));
    set("p-refunded", money(amounts.refunded_minor, p.currency));
    set("p-disputed", money(amounts.disputed_minor, p.currency));
    set("p-net", money(amounts.net_minor, p.currency));
    set("p-rail", p.rail ?? "—");
    set("p-provider", p.provider ?? "—");
    set("p-provider-ref", p.provider_ref ?? "—");
    set("p-final", finalText(p));
    set("p-merchant", p.merchant_id ?? "—");
    const rules = actionRules(p);
    for (const [action, reason] of Object.entries(rules)) {
      const button = byId<HTMLButtonElement>(`action-${action}`);
      button.disabled = reason !== null;
      button.title = reason ?? "";
      byId(`action-${action}-why`).textContent = reason ?? "";
    }
    replace(byId("p-movements"), movementsTable(p.movements));
  }

  private renderEvidence(e: Evidence): void {
    replace(
      byId("timeline"),
      ...e.timeline.map((t) =>
        t.kind === "transition"
          ? el(
              "li",
              { dataset: { kind: "transition", version: String(t.version), seq: String(t.seq) } },
              stamp("STATUS", t.seq),
              " ",
              el("b", {}, `v${t.version} ${t.previous_status ?? "∅"} → ${t.status}`),
              " rule ",
              el("code", {}, t.rule ?? "?"),
              " caused by ",
              el("code", {}, t.fact_id),
              ` (${t.source}, IN #${t.inbound_seq})`,
            )
          : el(
              "li",
              { dataset: { kind: "fact", outcome: t.outcome ?? "" }, class: "nochange" },
              stamp("IN", t.inbound_seq),
              ` changed nothing: ${t.outcome}`,
              t.reason ? ` (${t.reason})` : "",
              " fact ",
              el("code", {}, t.fact_id),
              t.superseded_by ? el("span", {}, " superseded by ", el("code", {}, t.superseded_by)) : "",
            ),
      ),
    );
    replace(
      byId("checkpoints"),
      ...e.checkpoints.map((c) =>
        el("li", {}, stamp("STATUS", c.seq ?? "?"), ` v${c.version} ${c.kind}${c.final ? " (final)" : ""}`),
      ),
    );
    replace(
      byId("ledger"),
      ...e.ledger.map((j) =>
        el("li", {}, stamp("STATUS", j.seq), ` v${j.version} ${j.entry_kind} (${j.status}) `, el("code", {}, JSON.stringify(j.postings))),
      ),
    );
    replace(
      byId("facts"),
      ...e.facts.map((f) =>
        el(
          "li",
          {},
          el(
            "details",
            {},
            el("summary", {}, stamp("IN", f.inbound_seq), ` ${f.fact_id} · ${f.outcome ?? "undecided"} · received ${age(f.received_at)} ago`),
            el("pre", {}, JSON.stringify(f.raw_headers, null, 2)),
            el("pre", {}, f.raw_body),
          ),
        ),
      ),
    );
    replace(
      byId("sessions"),
      ...e.sessions.map((s) =>
        el("li", {}, el("code", {}, s.session_id), ` ${s.subject} via ${s.transport} on ${s.channel}: versions ${s.versions_sent.join(", ")}`),
      ),
    );
    replace(
      byId("payment-alerts"),
      ...e.alerts.map((a) => el("li", { dataset: { alertId: a.alert_id } }, `${a.kind}: ${a.detail} `, ackForm(this.api, a, () => void this.refresh()))),
    );
    const link = byId<HTMLAnchorElement>("download-evidence");
    const old = link.href;
    link.href = URL.createObjectURL(new Blob([JSON.stringify(e, null, 2)], { type: "application/json" }));
    link.download = `evidence-${this.id}.json`;
    if (old.startsWith("blob:")) URL.revokeObjectURL(old);
  }

  private async act(action: "cancel" | "retry" | "resolve"): Promise<void> {
    const out = byId("action-result");
    const body: Record<string, string> = {};
    if (action === "resolve") {
      const reason = byId<HTMLInputElement>("resolve-reason").value.trim();
      if (!reason) {
        out.textContent = "resolve needs a reason";
        return;
      }
      body.reason = reason;
      body.status = byId<HTMLSelectElement>("resolve-status").value;
    }
    out.dataset.outcome = "pending";
    out.textContent = `${action}…`;
    try {
      const answer = await this.api.post<unknown>(`/v1/payments/${encodeURIComponent(this.id)}/${action}`, body);
      out.dataset.outcome = "accepted";
      out.textContent = `${action} accepted: ${JSON.stringify(answer)}`;
    } catch (error) {
      out.dataset.outcome = "refused";
      out.textContent = error instanceof ApiError ? `${action} refused (HTTP ${error.status}): ${error.title}` : String(error);
    }
  }
}

function movementsTable(movements: unknown): Node {
  const list = Array.isArray(movements)
    ? movements
    : movements && typeof movements === "object"
      ? Object.values(movements as Record<string, unknown>).flat()
      : [];
  if (list.length === 0) return el("p", { class: "muted" }, "no refunds, disputes or payouts");
  return el(
    "ul",
    {},
    ...list.map((m) => el("li", { dataset: { movement: "1" } }, el("code", {}, JSON.stringify(m)))),
  );
}
