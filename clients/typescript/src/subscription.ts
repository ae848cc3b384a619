import { Emitter } from "./emitter.js";
import { recoveryOf, type EventMessage, type Position, type Recovery, type SubscribedMessage } from "./types.js";

/** A subscription's state, as in centrifuge-js. */
export type SubscriptionState = "unsubscribed" | "subscribing" | "subscribed";

/** What a subscription reports. */
export interface SubscriptionEvents {
  [name: string]: unknown;
  /** Every state change. */
  state: { state: SubscriptionState; previous: SubscriptionState };
  /** (Re)subscribing, and why. */
  subscribing: { reason: string };
  /**
   * Subscribed. The position is set before this is emitted and before any event
   * after it is delivered, so a snapshot and the events that follow it never overlap.
   */
  subscribed: { position: Position; recovery: Recovery; transport: "websocket" | "sse" };
  /** The typed "cannot recover" outcome of a list channel: reload the list from `url`. */
  reload: { url: string; position: Position };
  /** An event, in order, never twice. */
  publication: EventMessage;
  /** An event's `prev_seq` did not match: a gap, being healed by a resume from `since`. */
  gap: { since: Position; prevSeq: number; got: Position };
  /** The edge's heartbeat says it has sent more than this subscription has seen. */
  behind: { seen: Position | undefined; edge: Position };
  /** A refusal for this channel (4003 forbidden, 4029 rate limited, ...). */
  error: { code: number; message: string };
  /** No longer subscribed. */
  unsubscribed: { reason: string };
}

/** What a subscription needs from its client. */
export interface SubscriptionHost {
  readonly transport: "websocket" | "sse";
  /** Asks the transport to (re)subscribe the channel from `since`. */
  startSubscription(sub: Subscription, since: Position | undefined): void;
  /** Asks the transport to stop the channel. */
  stopSubscription(sub: Subscription): void;
}

/**
 * One channel's view: it keeps the last position seen, delivers each event once in
 * order (`prev_seq` must equal the last `seq`), resumes with `since` after a drop or a
 * gap, and reports how each start went ({@link Recovery}).
 */
export class Subscription extends Emitter<SubscriptionEvents> {
  /** The current state. */
  state: SubscriptionState = "unsubscribed";
  /** The last position seen; the next event's `prev_seq` must equal its `seq`. */
  position: Position | undefined;
  /** How many gaps this subscription has seen (each is healed by a resume). */
  gaps = 0;
  /** How many duplicate events were dropped. */
  duplicates = 0;

  /** @internal Created by {@link Client.newSubscription}. */
  constructor(
    readonly channel: string,
    private readonly host: SubscriptionHost,
    since?: Position,
  ) {
    super();
    this.position = since;
  }

  /** Starts (or keeps) the subscription; it resumes by itself after drops. */
  subscribe(): void {
    if (this.state !== "unsubscribed") return;
    this.setState("subscribing");
    this.emit("subscribing", { reason: "subscribe called" });
    this.host.startSubscription(this, this.position);
  }

  /** Stops the subscription. */
  unsubscribe(): void {
    if (this.state === "unsubscribed") return;
    this.setState("unsubscribed");
    this.host.stopSubscription(this);
    this.emit("unsubscribed", { reason: "unsubscribe called" });
  }

  /** Whether the subscription wants to be subscribed. */
  get active(): boolean {
    return this.state !== "unsubscribed";
  }

  /** @internal The transport lost the channel: it will resubscribe from the last position. */
  _interrupted(reason: string): void {
    if (this.state !== "subscribed") return;
    this.setState("subscribing");
    this.emit("subscribing", { reason });
  }

  /** @internal The edge answered a subscribe. */
  _subscribed(message: SubscribedMessage, resumed: boolean): void {
    if (this.state === "unsubscribed") return;
    const recovery = recoveryOf(message, resumed);
    // Position before data: whatever the caller does with the snapshot, the next
    // event is checked against this position.
    this.position = message.position;
    this.setState("subscribed");
    this.emit("subscribed", { position: message.position, recovery, transport: this.host.transport });
    if (recovery.kind === "reload") this.emit("reload", { url: recovery.url, position: message.position });
  }

  /** @internal An event of this channel. */
  _event(event: EventMessage): void {
    if (this.state !== "subscribed") return; // a resume is in flight: its replay brings it
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
  _heartbeat(edge: Position): void {
    const seen = this.position;
    if (!seen || seen.epoch !== edge.epoch || seen.seq < edge.seq) this.emit("behind", { seen, edge });
  }

  /** @internal A refusal for this channel. */
  _error(code: number, message: string): void {
    this.emit("error", { code, message });
  }

  private setState(state: SubscriptionState): void {
    const previous = this.state;
    if (previous === state) return;
    this.state = state;
    this.emit("state", { state, previous });
  }
}
