/**
 * The operator console's entry point: the token and API address, the connection
 * header, and the page for the address (the list at `/`, a payment at
 * `/payments/{id}`), all on one {@link Client} session.
 */
import { Client, type Subscription } from "../../typescript/src/index.js";
import { Api } from "./api.js";
import { AlertsPanel } from "./alerts.js";
import { ConnectionView } from "./connection.js";
import { byId } from "./dom.js";
import { PaymentList } from "./list.js";
import { PaymentPage } from "./payment.js";

const TOKEN_KEY = "paytrack.console.token";
const API_KEY = "paytrack.console.api";

/** Takes `token` and `api` out of the address (into this tab's storage), so the token is never shown. */
function credentials(): { token: string | null; api: string } {
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
    api: sessionStorage.getItem(API_KEY) ?? location.origin,
  };
}

function askForToken(message: string): void {
  byId("token-panel").hidden = false;
  byId("console").hidden = true;
  byId("token-error").textContent = message;
  byId<HTMLFormElement>("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = byId<HTMLInputElement>("token-input").value.trim();
    if (value) {
      sessionStorage.setItem(TOKEN_KEY, value);
      location.reload();
    }
  });
}

function main(): void {
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
  const follow = (sub: Subscription) => connection.watch(sub);
  const match = /^\/payments\/([^/]+)$/.exec(location.pathname);
  // Exposed for the browser tests and for operators' own scripts in the devtools.
  (window as unknown as { paytrack: unknown }).paytrack = { client, connection };
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
