/** A tiny DOM builder, so the console needs no framework. */
export type Child = Node | string | number | null | undefined | false;

/** Creates `tag` with attributes (`on*` functions become listeners) and children. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, unknown> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value as EventListener);
    } else if (key === "dataset") {
      for (const [k, v] of Object.entries(value as Record<string, string>)) node.dataset[k] = v;
    } else if (value === true) {
      node.setAttribute(key, "");
    } else {
      node.setAttribute(key, String(value));
    }
  }
  append(node, children);
  return node;
}

/** Appends children, skipping empty ones. */
export function append(node: Node, children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
  }
}

/** Replaces a node's children. */
export function replace(node: Node, ...children: Child[]): void {
  while (node.firstChild) node.removeChild(node.firstChild);
  append(node, children);
}

/** `id`'s element, which the shell page must have. */
export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const node = document.getElementById(id);
  if (!node) throw new Error(`the page has no #${id}`);
  return node as T;
}

/** Minor units as a decimal amount (two decimals unless the currency says otherwise). */
export function money(minor: unknown, currency?: unknown): string {
  if (typeof minor !== "number") return "—";
  const zeroDecimal = ["JPY", "KRW", "VND", "CLP", "ISK", "UGX"];
  const digits = typeof currency === "string" && zeroDecimal.includes(currency.toUpperCase()) ? 0 : 2;
  return (minor / 10 ** digits).toFixed(digits);
}

/** How long ago `iso` was, in words an operator reads at a glance. */
export function age(iso: unknown, now = Date.now()): string {
  if (typeof iso !== "string") return "—";
  const ms = now - Date.parse(iso);
  if (!Number.isFinite(ms)) return "—";
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d`;
}

/** The stamp every element carries: where it is in its stream. */
export function stamp(stream: string, seq: unknown): HTMLElement {
  return el("span", { class: "stamp", title: `${stream} stream position` }, `${stream} #${seq ?? "?"}`);
}
