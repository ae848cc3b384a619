/**
 * The edge's wire format (docs/contract.md §7), as the client reads and writes it.
 * One JSON object per message, named by `type`.
 */

/** A place in a stream: `epoch` names the stream's incarnation, `seq` the message. */
export interface Position {
  epoch: string;
  seq: number;
}

/** First message of a WebSocket session. */
export interface WelcomeMessage {
  type: "welcome";
  session_id: string;
  heartbeat_ms: number;
}

/** A subscription's start: where the channel continues from, and how. */
export interface SubscribedMessage {
  type: "subscribed";
  channel: string;
  recovered: boolean;
  position: Position;
  snapshot?: unknown;
}

/** One event of a channel: a transition, a checkpoint, a push or an alert. */
export interface EventMessage {
  type: "event";
  channel: string;
  kind: string;
  position: Position;
  prev_seq: number;
  [field: string]: unknown;
}

/** The edge's latest position per channel, and whether it claims currency. */
export interface HeartbeatMessage {
  type: "heartbeat";
  positions: Record<string, Position>;
  live: boolean;
  lag_ms: number;
}

/** A refused request. */
export interface ErrorMessage {
  type: "error";
  code: number;
  message: string;
}

/** Every message the edge sends. */
export type ServerMessage =
  | WelcomeMessage
  | SubscribedMessage
  | EventMessage
  | HeartbeatMessage
  | ErrorMessage
  | { type: "pong" }
  | { type: "close"; code: number; reason: string };

/** Every message the client sends. */
export type ClientMessage =
  | { type: "subscribe"; channel: string; since?: Position }
  | { type: "unsubscribe"; channel: string }
  | { type: "ping" }
  | { type: "refresh"; token: string }
  | { type: "ack"; positions: Record<string, Position> };

/** Close codes of the contract. */
export const CloseCode = {
  BadRequest: 4000,
  Unauthorized: 4001,
  Forbidden: 4003,
  TooSlow: 4008,
  RateLimited: 4029,
  Restarting: 1012,
} as const;

/** How a subscription started: the answer to "did I miss anything?". */
export type Recovery =
  /** No `since` was given: the channel starts at `position`. */
  | { kind: "fresh" }
  /** `since` was continued gap-free: nothing was missed. */
  | { kind: "recovered" }
  /** Continuity could not be proven; this is the payment's current state. */
  | { kind: "snapshot"; state: unknown }
  /** Continuity could not be proven for a list channel: reload the list from this URL, then resume from its position. */
  | { kind: "reload"; url: string }
  /** Pushes were missed (they are notifications; the channel continues). */
  | { kind: "missed" };

/** Parses a message from the edge; `null` when it is not one. */
export function parseServerMessage(text: string): ServerMessage | null {
  try {
    const value: unknown = JSON.parse(text);
    if (value && typeof value === "object" && typeof (value as { type?: unknown }).type === "string") {
      return value as ServerMessage;
    }
  } catch {
    // not JSON: ignored by the caller
  }
  return null;
}

/** Reads a `subscribed` answer's outcome. */
export function recoveryOf(message: SubscribedMessage, resumed: boolean): Recovery {
  if (message.recovered) return resumed ? { kind: "recovered" } : { kind: "fresh" };
  const snapshot = message.snapshot as Record<string, unknown> | undefined | null;
  if (snapshot && typeof snapshot === "object") {
    if (typeof snapshot.reload === "string") return { kind: "reload", url: snapshot.reload };
    if (snapshot.missed === true) return { kind: "missed" };
    return { kind: "snapshot", state: snapshot };
  }
  return { kind: "fresh" };
}
