import type { Client, EventMessage, Subscription } from "../../typescript/src/index.js";
import { Api, ApiError, type ListPage, type Payment } from "./api.js";
import { age, byId, el, money, replace } from "./dom.js";

/** The list's filters: exactly the REST list's query parameter names. */
export const FILTERS = [
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
  "order",
] as const;

/** Why a payment is not final, in words. */
export function finalText(p: Payment): string {
  if (p.final) return "yes";
  const why = p.not_final_because;
  return why ? `no: ${why.replace(/_/g, " ")}` : "no";
}

/**
 * The payments list: a page of the REST list (filters, search, sort, cursor), then
 * kept live from the list's `position` on the `payments` channel. Paging or filtering
 * reloads the page; the subscription keeps going, so no update is lost in between.
 */
/** The rows a page shows: what the list asks the REST list for. */
export const PAGE_SIZE = 50;

export class PaymentList {
  private rows = new Map<string, Payment>();
  private renderQueued = false;
  private sub: Subscription | undefined;
  private cursors: Array<string | undefined> = [undefined];
  private page = 0;
  private newOutside = 0;

  constructor(
    private readonly api: Api,
    private readonly client: Client,
    private readonly onSubscription: (sub: Subscription) => void,
    private readonly open: (id: string) => void,
  ) {}

  /** Builds the filter bar and loads the first page. */
  async start(): Promise<void> {
    const form = byId<HTMLFormElement>("filters");
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.cursors = [undefined];
      this.page = 0;
      void this.load();
    });
    byId("next-page").addEventListener("click", () => {
      if (this.cursors[this.page + 1] === undefined) return;
      this.page += 1;
      void this.load();
    });
    byId("prev-page").addEventListener("click", () => {
      if (this.page === 0) return;
      this.page -= 1;
      void this.load();
    });
    setInterval(() => this.refreshAges(), 5000);
    await this.load();
  }

  private query(): URLSearchParams {
    const form = byId<HTMLFormElement>("filters");
    const params = new URLSearchParams();
    for (const name of FILTERS) {
      const input = form.elements.namedItem(name) as HTMLInputElement | HTMLSelectElement | null;
      const value = input?.value.trim();
      if (value) params.set(name, value);
    }
    params.set("limit", String(PAGE_SIZE));
    const cursor = this.cursors[this.page];
    if (cursor) params.set("cursor", cursor);
    return params;
  }

  /** Loads the current page, then (once) subscribes from the list's position. */
  async load(): Promise<void> {
    const params = this.query();
    const problem = byId("list-problem");
    problem.textContent = "";
    let page: ListPage;
    try {
      page = await this.api.get<ListPage>(`/v1/payments?${params}`);
    } catch (error) {
      problem.textContent = error instanceof ApiError ? error.title : String(error);
      // The list could not be read: the page still follows live events, from now.
      this.follow(undefined);
      return;
    }
    let items = page.items;
    const q = params.get("q");
    if (q && !items.some((p) => p.payment_id === q)) {
      // A payment id is found even where the list does not search it.
      try {
        const exact = await this.api.get<Payment>(`/v1/payments/${encodeURIComponent(q)}`);
        items = [exact, ...items];
      } catch {
        // not a payment id
      }
    }
    this.cursors[this.page + 1] = page.next_cursor ?? undefined;
    this.rows.clear();
    for (const p of items) this.rows.set(p.payment_id, p);
    this.newOutside = 0;
    this.render();
    byId("page-label").textContent = `page ${this.page + 1}`;
    byId("list-position").textContent = `list at STATUS #${page.position.seq}`;
    this.follow(page.position.seq > 0 ? page.position : undefined);
  }

  /** Subscribes to the tenant's payments once, from the first list's position. */
  private follow(since: { epoch: string; seq: number } | undefined): void {
    if (this.sub) return;
    this.sub = this.client.newSubscription("payments", { since });
    this.sub.on("publication", (e) => this.apply(e));
    this.sub.on("reload", () => void this.load());
    this.onSubscription(this.sub);
    this.sub.subscribe();
  }

  /** A live event: updates a shown row; a payment not shown is counted, not inserted mid-page. */
  apply(event: EventMessage): void {
    const id = event.payment_id as string | undefined;
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
    const terms = (event.terms ?? {}) as Record<string, unknown>;
    const version = Number(event.version);
    if (row && version <= row.version) return; // the list already had it
    const next: Payment = {
      ...(row ?? { payment_id: id, created_at: event.recorded_at as string }),
      payment_id: id,
      merchant_id: event.merchant_id as string,
      status: event.status as string,
      version,
      seq: event.position.seq,
      final: false,
      not_final_because: (event.not_final_because as string | undefined) ?? "awaiting_persisted",
      amount_minor: (terms.amount_minor as number | undefined) ?? row?.amount_minor,
      currency: (terms.currency as string | undefined) ?? row?.currency,
      provider: (terms.provider as string | undefined) ?? row?.provider,
      rail: (event.rail as string | undefined) ?? (terms.rail as string | undefined) ?? row?.rail,
      trace_id: event.trace_id as string,
      updated_at: event.recorded_at as string,
    };
    if (row) {
      this.rows.set(id, next);
      this.renderRow(next, true);
    } else if (this.page === 0 && this.filtersEmpty() && this.newestFirst()) {
      // A new payment goes on top of the first page, which keeps its size: a busy
      // tenant's stream never grows the table, and one render serves a burst.
      this.rows = new Map([[id, next], ...this.rows]);
      for (const old of [...this.rows.keys()].slice(PAGE_SIZE)) this.rows.delete(old);
      this.queueRender();
    } else {
      this.newOutside += 1;
      byId("list-new").textContent = `${this.newOutside} update(s) outside this page: reload to see them`;
    }
  }

  /** Whether the list is ordered newest first (where a new payment belongs on page 1). */
  private newestFirst(): boolean {
    return (this.query().get("order") ?? "-created_at") === "-created_at";
  }

  /** Renders once for every live event that arrives before the next frame. */
  private queueRender(): void {
    if (this.renderQueued) return;
    this.renderQueued = true;
    setTimeout(() => {
      this.renderQueued = false;
      this.render();
    }, 16);
  }

  private filtersEmpty(): boolean {
    const params = this.query();
    params.delete("limit");
    params.delete("order");
    return [...params.keys()].length === 0;
  }

  private render(): void {
    const body = byId("payment-rows");
    replace(body, ...[...this.rows.values()].map((p) => this.row(p)));
    byId("payment-count").textContent = String(this.rows.size);
    byId("payments-empty").hidden = this.rows.size > 0;
  }

  private renderRow(p: Payment, flash: boolean): void {
    const old = document.querySelector(`tr[data-payment-id="${CSS.escape(p.payment_id)}"]`);
    const row = this.row(p);
    if (flash) row.classList.add("flash");
    if (old) old.replaceWith(row);
  }

  private row(p: Payment): HTMLTableRowElement {
    const cell = (field: string, value: string, extra: Record<string, unknown> = {}) =>
      el("td", { dataset: { field, value }, ...extra }, field === "status" ? el("span", {}, value) : value);
    const link = el("a", { href: `/payments/${encodeURIComponent(p.payment_id)}`, class: "mono" }, p.payment_id);
    link.addEventListener("click", (e) => {
      e.preventDefault();
      this.open(p.payment_id);
    });
    return el(
      "tr",
      { dataset: { paymentId: p.payment_id } },
      el("td", { dataset: { field: "payment_id" } }, link),
      cell("merchant_id", p.merchant_id ?? "—"),
      cell("amount", money(p.amount_minor, p.currency)),
      cell("currency", p.currency ?? "—"),
      cell("provider", p.provider ?? "—"),
      cell("rail", p.rail ?? "—"),
      cell("status", p.status),
      cell("version", String(p.version)),
      cell("age", age(p.created_at ?? p.occurred_at), { title: p.created_at ?? p.occurred_at ?? "" }),
      cell("final", finalText(p)),
      cell("seq", p.seq !== undefined ? `#${p.seq}` : "—", { class: "stamp" }),
    );
  }

  private refreshAges(): void {
    for (const td of document.querySelectorAll<HTMLElement>('td[data-field="age"]')) {
      if (td.title) td.textContent = age(td.title);
    }
  }
}
