// The change feed at the door (PROTOCOL.md section 5): subscriptions that pull committed transfers
// from a shard, page by page, at the pace the subscriber reads.
//
// Nothing is buffered for a subscriber beyond its socket's high-water mark: a page is read from the
// shard only when the socket has drained, so a slow reader costs no engine memory and never slows
// down transfers. A reader that stays stalled past `stall_ms` gets `lagging` with its cursor and the
// subscription ends; resuming from that cursor replays from the shard.
//
// Cursors are opaque to clients: `k1.<shard>.<n>` means "after the first n committed transfers of
// that shard, in commit order". Commit order and the count are the same after a restart (the
// state is rebuilt in the same order), so a cursor resumes with no gap and no duplicate.

import type { ShardResult } from '../shard/messages.ts';
import type { Transfer } from '../ledger/types.ts';

export const FEED_PAGE_TRANSFERS = 1024;
export const LEDGERS_FILTER_MAX = 64;

export interface FeedEngine {
  feedRead(shard: number, from: number, limit: number, ledgers: number[] | null): Promise<ShardResult>;
  onCommitted(listener: (shard: number) => void): () => void;
}

export interface FeedIo {
  engine: FeedEngine;
  /** Bytes queued on the socket and not yet sent. */
  buffered(): number;
  push(message: object): void;
  /** The subscription ended by itself (lagging or engine failure). */
  ended(subscription: Subscription): void;
  high_water_bytes: number;
  stall_ms: number;
}

export type CursorParsed = { ok: true; shard: number; position: number } | { ok: false; message: string };

export function formatCursor(shard: number, position: number): string {
  return `k1.${shard}.${position}`;
}

export function parseCursor(raw: unknown, shard_count: number): CursorParsed {
  if (typeof raw !== 'string') return { ok: false, message: 'from must be "latest" or a cursor string from an earlier push' };
  const match = /^k1\.(\d{1,4})\.(\d{1,16})$/.exec(raw);
  if (match === null) return { ok: false, message: `malformed cursor ${JSON.stringify(raw.slice(0, 64))}: use a cursor exactly as an events push gave it` };
  const shard = Number(match[1]);
  const position = Number(match[2]);
  if (shard >= shard_count || !Number.isSafeInteger(position)) return { ok: false, message: `cursor ${JSON.stringify(raw)} names no position of this engine` };
  return { ok: true, shard, position };
}

/** Validates `ledgers` (an array of u32): null when absent. */
export function parseLedgers(raw: unknown): { ok: true; ledgers: number[] | null } | { ok: false; message: string } {
  if (raw === undefined) return { ok: true, ledgers: null };
  if (!Array.isArray(raw) || raw.length === 0 || raw.length > LEDGERS_FILTER_MAX) {
    return { ok: false, message: `ledgers must be an array of 1 to ${LEDGERS_FILTER_MAX} ledger numbers (u32)` };
  }
  const out: number[] = [];
  for (let i = 0; i < raw.length; i++) {
    const v: unknown = raw[i];
    const n = typeof v === 'bigint' ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 0xffff_ffff) {
      return { ok: false, message: `ledgers[${i}] must be a ledger number 1..4294967295` };
    }
    out.push(n);
  }
  return { ok: true, ledgers: out };
}

export class Subscription {
  private active = true;
  private wake_up: (() => void) | null = null;
  private readonly unlisten: () => void;

  constructor(
    readonly id: number,
    private readonly shard: number,
    private position: number,
    private readonly ledgers: number[] | null,
    private readonly io: FeedIo,
  ) {
    this.unlisten = io.engine.onCommitted((committed) => {
      if (committed === this.shard) this.wake();
    });
  }

  get cursor(): string {
    return formatCursor(this.shard, this.position);
  }

  stop(): void {
    if (!this.active) return;
    this.active = false;
    this.unlisten();
    this.wake();
  }

  private wake(): void {
    const wake_up = this.wake_up;
    this.wake_up = null;
    wake_up?.();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wake_up = null;
        resolve();
      }, ms);
      this.wake_up = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  /** Pushes pages until stopped; call once, after the subscribe reply went out. */
  async run(): Promise<void> {
    let stalled_since = 0;
    while (this.active) {
      if (this.io.buffered() > this.io.high_water_bytes) {
        const now = Date.now();
        if (stalled_since === 0) stalled_since = now;
        if (now - stalled_since > this.io.stall_ms) {
          this.end({ push: 'lagging', subscription: this.id, cursor: this.cursor });
          return;
        }
        await this.sleep(10);
        continue;
      }
      stalled_since = 0;
      const result = await this.io.engine.feedRead(this.shard, this.position, FEED_PAGE_TRANSFERS, this.ledgers);
      if (!this.active) return;
      if (!('feed' in result)) {
        if ('error' in result && result.error === 'busy') {
          await this.sleep(50); // the shard's queue is full: read again shortly, keep the subscription
          continue;
        }
        // The shard is not serving: the subscriber resumes from its cursor, elsewhere or later.
        this.end({ push: 'lagging', subscription: this.id, cursor: this.cursor });
        return;
      }
      const page = result.feed;
      if (page.transfers.length > 0) {
        this.position = page.next;
        this.io.push({ push: 'events', subscription: this.id, cursor: this.cursor, transfers: page.transfers as Transfer[] });
        continue;
      }
      if (page.next > this.position) {
        this.position = page.next; // scanned transfers of other ledgers
        continue;
      }
      await this.sleep(1_000); // caught up: a commit on this shard wakes us sooner
    }
  }

  private end(message: object): void {
    this.io.push(message);
    this.stop();
    this.io.ended(this);
  }
}
