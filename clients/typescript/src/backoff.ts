/** How long to wait before reconnect attempt `attempt` (0-based). */
export interface BackoffOptions {
  /** The first delay's ceiling, in milliseconds. */
  minDelayMs: number;
  /** No delay is longer than this. */
  maxDelayMs: number;
  /** A source of numbers in [0, 1); `Math.random` unless a test fixes it. */
  random?: () => number;
}

/**
 * Exponential backoff with jitter ("equal jitter"): the ceiling doubles per attempt up
 * to `maxDelayMs`, and the delay is half the ceiling plus a random part of the other
 * half, so many clients cut off together do not come back together, and none retries
 * at once.
 */
export function backoffDelay(attempt: number, options: BackoffOptions): number {
  const random = options.random ?? Math.random;
  const ceiling = Math.min(options.maxDelayMs, options.minDelayMs * 2 ** Math.min(attempt, 30));
  const half = ceiling / 2;
  return Math.round(half + random() * half);
}
