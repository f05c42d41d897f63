// When a shard thread counts as stalled: the decision of ShardHandle's watchdog, apart from its
// timer so that it can be tested with made-up clocks.
//
// The worker increments a shared counter every HEARTBEAT_MS; the main thread looks every `check_ms`.
// The counter standing still for `stall_ms` of on-time looks is a stall. A look that comes late
// (more than three intervals since the last) means the main thread did not run either: the process
// was stopped (SIGSTOP, a paused virtual machine) or starved, and the worker had no chance to beat,
// so the wait starts over instead of failing a healthy shard.

export class StallClock {
  private seen: number;
  private changed_at_ms: number;
  private checked_at_ms: number;

  constructor(
    readonly stall_ms: number,
    readonly check_ms: number,
    beat: number,
    now_ms: number,
  ) {
    if (!(stall_ms > 0 && check_ms > 0)) throw new RangeError('stall_ms and check_ms must be positive');
    this.seen = beat;
    this.changed_at_ms = now_ms;
    this.checked_at_ms = now_ms;
  }

  /** One look at the counter: how long it has stood still if that is a stall, else -1. */
  observe(beat: number, now_ms: number): number {
    if (beat !== this.seen || now_ms - this.checked_at_ms > 3 * this.check_ms) {
      this.seen = beat;
      this.changed_at_ms = now_ms;
    }
    this.checked_at_ms = now_ms;
    const still_ms = now_ms - this.changed_at_ms;
    return still_ms >= this.stall_ms ? still_ms : -1;
  }
}

/** How often to look, for a stall limit: often enough to be a quarter of it late at most. */
export function checkIntervalMs(stall_ms: number, heartbeat_ms: number): number {
  return Math.max(heartbeat_ms, Math.min(1000, Math.floor(stall_ms / 4)));
}
