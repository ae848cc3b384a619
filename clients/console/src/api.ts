/** The REST API (ingest) as the console calls it: bearer token, JSON, errors verbatim. */

/** A refusal from the API, with its body exactly as answered. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: string,
    readonly title: string,
  ) {
    super(title);
  }
}

/** Reads an error body: RFC 9457 `title`/`detail`, or paytrack's `error`/`message`. */
export function describeError(status: number, body: string): string {
  try {
    const json = JSON.parse(body) as Record<string, unknown>;
    const title = json.title ?? json.error;
    const detail = json.detail ?? json.message;
    if (title || detail) return [title, detail].filter(Boolean).join(": ");
  } catch {
    // not JSON
  }
  return body ? `HTTP ${status}: ${body}` : `HTTP ${status}`;
}

/** The API at `base` with `token`. */
export class Api {
  constructor(
    readonly base: string,
    private token: string,
  ) {}

  /** GETs `path` as JSON. */
  async get<T>(path: string): Promise<T> {
    return this.request<T>("GET", path);
  }

  /** POSTs `body` to `path`; a command gets a fresh Idempotency-Key. */
  async post<T>(path: string, body: unknown): Promise<T> {
    return this.request<T>("POST", path, body);
  }

  private async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { Authorization: `Bearer ${this.token}`, Accept: "application/json" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      headers["Idempotency-Key"] = crypto.randomUUID();
    }
    let response: Response;
    try {
      response = await fetch(this.base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch (error) {
      throw new ApiError(0, "", `the API at ${this.base} did not answer (${String(error)})`);
    }
    const text = await response.text();
    if (!response.ok) throw new ApiError(response.status, text, describeError(response.status, text));
    return (text ? JSON.parse(text) : {}) as T;
  }
}

/** A page of `GET /v1/payments`. */
export interface ListPage {
  items: Payment[];
  next_cursor?: string | null;
  position: { epoch: string; seq: number };
}

/** A payment as the list, the view and live transitions describe it. */
export interface Payment {
  payment_id: string;
  merchant_id?: string;
  status: string;
  version: number;
  seq?: number;
  final?: boolean;
  not_final_because?: string | null;
  amount_minor?: number | null;
  currency?: string | null;
  rail?: string | null;
  provider?: string | null;
  provider_ref?: string | null;
  direction?: string;
  trace_id?: string;
  occurred_at?: string;
  updated_at?: string;
  created_at?: string;
  amounts?: Record<string, unknown> | null;
  movements?: unknown;
  capabilities?: { features?: Record<string, boolean>; rail?: string; country?: string } | null;
  [field: string]: unknown;
}

/** An alert as `GET /v1/alerts` lists it. */
export interface Alert {
  alert_id: string;
  kind: string;
  payment_id?: string | null;
  detail: string;
  raised_at: string;
  acked_by?: string | null;
  acked_at?: string | null;
  ack_note?: string | null;
  [field: string]: unknown;
}
