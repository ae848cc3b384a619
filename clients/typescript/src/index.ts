/**
 * @paytrack/client: paytrack's live surface for any front end. A {@link Client}
 * holds one session to the edge; {@link Subscription}s follow channels with
 * gap-free resume.
 */
export { Client } from "./client.js";
export type { ClientEvents, ClientOptions, ClientState, Transport, WebSocketLike } from "./client.js";
export { Subscription } from "./subscription.js";
export type { SubscriptionEvents, SubscriptionState } from "./subscription.js";
export { backoffDelay } from "./backoff.js";
export type { BackoffOptions } from "./backoff.js";
export { SseParser } from "./sse.js";
export type { SseEvent } from "./sse.js";
export { CloseCode, parseServerMessage, recoveryOf } from "./types.js";
export type * from "./types.js";
