// The engine's sequencer: every timestamp the engine hands out, taken in the main thread at the
// moment a request is dispatched to its shards.
//
// Timestamps identify objects and order them, so they must be unique and increasing across the
// whole engine, not only per shard. Taking them in dispatch order gives that for free: each shard
// runs what it is sent in the order it was sent, so its timestamps increase; a request split over
// shards keeps its events' timestamps in request order; a cross-shard group gets its range above
// everything dispatched before it. Shards log the values they were given, so replay needs no clock.

export type WallClock = () => bigint;

/** Wall-clock nanoseconds. */
export const wallClock: WallClock = () => BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e3)) * 1000n;

export class Sequencer {
  private last_: bigint;
  private readonly wall: WallClock;

  constructor(last: bigint, wall: WallClock = wallClock) {
    this.last_ = last;
    this.wall = wall;
  }

  /** The last timestamp handed out. */
  get last(): bigint {
    return this.last_;
  }

  /**
   * Reserves `count` (at least 1) consecutive timestamps and returns the greatest: the wall
   * clock, or just above the last reservation if the clock is behind it.
   */
  reserve(count: number): bigint {
    const floor = this.last_ + BigInt(Math.max(count, 1));
    const now = this.wall();
    this.last_ = now > floor ? now : floor;
    return this.last_;
  }

  /** Makes every later reservation exceed `timestamp` (recovered groups). */
  observe(timestamp: bigint): void {
    if (timestamp > this.last_) this.last_ = timestamp;
  }
}
