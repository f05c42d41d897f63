// Reconnect delays: exponential from `initial_delay_ms`, capped at `max_delay_ms`, with "equal jitter"
// (a random point in the upper half of the step) so that many channels do not reconnect in lockstep.

export interface ReconnectOptions {
  /** First delay; doubles per failed attempt. Default 100. */
  initial_delay_ms?: number;
  /** Cap on the delay. Default 10 000. */
  max_delay_ms?: number;
  /** Give up after this many failed attempts in a row (calls then fail with `connection_closed`). Default: never. */
  max_attempts?: number;
}

export interface Backoff {
  initial_delay_ms: number;
  max_delay_ms: number;
  max_attempts: number;
}

export function backoffOf(options: ReconnectOptions | undefined): Backoff {
  const initial = Math.max(1, options?.initial_delay_ms ?? 100);
  return {
    initial_delay_ms: initial,
    max_delay_ms: Math.max(initial, options?.max_delay_ms ?? 10_000),
    max_attempts: options?.max_attempts ?? Number.POSITIVE_INFINITY,
  };
}

/** The delay before attempt `attempt` (0 for the first). */
export function delayOf(backoff: Backoff, attempt: number, random: () => number = Math.random): number {
  const step = Math.min(backoff.max_delay_ms, backoff.initial_delay_ms * 2 ** Math.min(attempt, 30));
  return Math.round(step / 2 + random() * (step / 2));
}
