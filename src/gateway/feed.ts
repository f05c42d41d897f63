// The change feed at the door (PROTOCOL.md section 5): subscriptions that pull committed transfers
// from every shard of the engine, page by page, at the pace the subscriber reads.
//
// Nothing is buffered for a subscriber beyond its socket's high-water mark: a page is read from a
// shard only when the socket has drained, so a slow reader costs no engine memory and never slows
// down transfers. A reader that stays stalled past `stall_ms` gets `lagging` with its cursor and the
// subscription ends; resuming from that cursor replays from the shards.
//
// One subscription follows all shards. Each shard's feed is its own commit order, and the shards
// are read in turn, one page each (a busy shard cannot starve another): transfers come in commit
// order per shard, each exactly once, with no order between shards.
//
// Cursors are opaque to clients: `k2.<n0>.<n1>...<nS-1>` holds one count per shard, "after the
// first n_s committed transfers of shard s, in commit order". Commit order and the counts are the
// same after a restart (the state is rebuilt in the same order), so a cursor resumes with no gap and
// no duplicate. The single-shard cursors of earlier versions, `k1.<shard>.<n>`, are still accepted
// by an engine of one shard (as `k2.<n>`).

import type { ShardResult } from '../shard/messages.ts';
import type { Transfer } from '../ledger/types.ts';

export const FEED_PAGE_TRANSFERS = 1024;
export const LEDGERS_FILTER_MAX = 64;

export interface FeedEngine {
  /** How many shards the engine runs; absent means one. */
  readonly shard_count?: number;
  /**
   * A page of shard `shard`'s feed: its committed transfers (of `ledgers`, if any) from ordinal
   * `from`, in commit order; `next` is where to continue, `head` how many transfers it has committed.
   */
  feedRead(shard: number, from: number, limit: number, ledgers: number[] | null): Promise<ShardResult>;
  /** Calls `listener(shard)` after transfers commit on `shard`; returns an unsubscribe. */
  onCommitted(listener: (shard: number) => void): () => void;
  /**
   * A center of a cluster: resolves once every shard's feed reaches `positions` (a cursor another
   * center gave out), or after `timeout_ms`. Absent on a single engine.
   */
  waitForFeed?(positions: readonly number[], timeout_ms: number): Promise<void>;
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

export type CursorParsed = { ok: true; positions: number[] } | { ok: false; message: string };

/** The cursor after the first `positions[s]` committed transfers of every shard s. */
export function formatCursor(positions: readonly number[]): string {
  return `k2.${positions.join('.')}`;
}

const K2 = /^k2((?:\.\d{1,16})+)$/;
const K1 = /^k1\.(\d{1,4})\.(\d{1,16})$/;

/** Checks a client's cursor against an engine of `shard_count` shards: one position per shard. */
export function parseCursor(raw: unknown, shard_count: number): CursorParsed {
  if (typeof raw !== 'string') return { ok: false, message: 'from must be "latest" or a cursor string from an earlier push' };
  const shown = JSON.stringify(raw.slice(0, 64));
  const k2 = K2.exec(raw);
  if (k2 !== null) {
    const positions = k2[1].slice(1).split('.').map(Number);
    if (!positions.every((position) => Number.isSafeInteger(position))) return { ok: false, message: `cursor ${shown} names no position of this engine` };
    if (positions.length !== shard_count) {
      return {
        ok: false,
        message: `cursor ${shown} holds positions for ${positions.length} shard${positions.length === 1 ? '' : 's'} but this engine has ${shard_count} shard${shard_count === 1 ? '' : 's'}: it comes from an engine with another shard count`,
      };
    }
    return { ok: true, positions };
  }
  const k1 = K1.exec(raw);
  if (k1 !== null) {
    // A single-shard cursor of an earlier version: it still resumes an engine of one shard.
    const shard = Number(k1[1]);
    const position = Number(k1[2]);
    if (shard_count !== 1) {
      return {
        ok: false,
        message: `cursor ${shown} follows a single shard but this engine has ${shard_count} shards: it cannot say where to resume the others`,
      };
    }
    if (shard !== 0 || !Number.isSafeInteger(position)) return { ok: false, message: `cursor ${shown} names no position of this engine` };
    return { ok: true, positions: [position] };
  }
  return { ok: false, message: `malformed cursor ${shown}: use a cursor exactly as an events push gave it` };
}

export type HeadsRead =
  | { ok: true; heads: number[]; oldest: number[]; floor: number[] }
  | { ok: false; error: 'unavailable' | 'internal' | 'busy'; message: string };

/**
 * How many transfers every shard has committed (what `latest` starts from, and no cursor may
 * pass), and the first position each still serves (retention: no cursor may start before it).
 */
export async function readHeads(engine: FeedEngine, shard_count: number): Promise<HeadsRead> {
  const results = await Promise.all(
    Array.from({ length: shard_count }, (_, shard) => engine.feedRead(shard, Number.MAX_SAFE_INTEGER, 0, null)),
  );
  const heads: number[] = [];
  const oldest: number[] = [];
  const floor: number[] = [];
  for (const result of results) {
    if (!('feed' in result)) {
      if ('error' in result) return { ok: false, error: result.error, message: result.message };
      return { ok: false, error: 'internal', message: 'the feed is not available' };
    }
    heads.push(result.feed.head);
    oldest.push(result.feed.oldest ?? 0);
    floor.push(result.feed.floor ?? 0);
  }
  return { ok: true, heads, oldest, floor };
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

/** How long a shard that sent no commit notice goes unread while it is caught up (a safety net). */
const IDLE_POLL_MS = 1_000;
/** How long a shard that answered `busy` (its queue is full) is left alone. */
const BUSY_RETRY_MS = 50;

export class Subscription {
  private active = true;
  private wake_up: (() => void) | null = null;
  private readonly unlisten: () => void;
  /** Per shard: how many of its committed transfers are behind the cursor. */
  private readonly positions: number[];
  /** Per shard: may have transfers past its position (a commit notice, or not yet found caught up). */
  private readonly pending: boolean[];
  /** Per shard: when it was last found caught up. */
  private readonly checked_at: number[];
  /** Per shard: not read before this time (it answered `busy`). */
  private readonly retry_at: number[];
  /** Per shard: commit notices received; tells a notice that raced a read from one before it. */
  private readonly notices: number[];
  /** The shard whose turn comes next. */
  private turn = 0;

  constructor(
    readonly id: number,
    positions: readonly number[],
    private readonly ledgers: number[] | null,
    private readonly io: FeedIo,
  ) {
    if (positions.length === 0) throw new Error('a subscription follows at least one shard');
    const shards = positions.length;
    this.positions = [...positions];
    this.pending = new Array<boolean>(shards).fill(true);
    this.checked_at = new Array<number>(shards).fill(0);
    this.retry_at = new Array<number>(shards).fill(0);
    this.notices = new Array<number>(shards).fill(0);
    this.unlisten = io.engine.onCommitted((shard) => {
      if (!Number.isInteger(shard) || shard < 0 || shard >= shards) return;
      this.notices[shard]++;
      this.pending[shard] = true;
      this.wake();
    });
  }

  /** After everything pushed so far, on every shard. */
  get cursor(): string {
    return formatCursor(this.positions);
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

  private ready(shard: number, now: number): boolean {
    return now >= this.retry_at[shard] && (this.pending[shard] || now - this.checked_at[shard] >= IDLE_POLL_MS);
  }

  /** The next shard in turn that is worth a read, or -1. */
  private pick(now: number): number {
    const shards = this.positions.length;
    for (let i = 0; i < shards; i++) {
      const shard = (this.turn + i) % shards;
      if (this.ready(shard, now)) {
        this.turn = (shard + 1) % shards;
        return shard;
      }
    }
    return -1;
  }

  /** How long until some shard is worth a read, with no commit notice meanwhile. */
  private idleMs(now: number): number {
    let at = Infinity;
    for (let shard = 0; shard < this.positions.length; shard++) {
      const due = this.pending[shard] ? this.retry_at[shard] : Math.max(this.retry_at[shard], this.checked_at[shard] + IDLE_POLL_MS);
      at = Math.min(at, due);
    }
    return Math.max(1, Math.min(IDLE_POLL_MS, at - now));
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
      const now = Date.now();
      const shard = this.pick(now);
      if (shard < 0) {
        await this.sleep(this.idleMs(now)); // caught up everywhere: a commit on any shard wakes us sooner
        continue;
      }
      const notices = this.notices[shard];
      const from = this.positions[shard];
      let result: ShardResult;
      try {
        result = await this.io.engine.feedRead(shard, from, FEED_PAGE_TRANSFERS, this.ledgers);
      } catch (error) {
        result = { error: 'internal', message: error instanceof Error ? error.message : String(error) };
      }
      if (!this.active) return;
      if (!('feed' in result)) {
        if ('error' in result && result.error === 'busy') {
          this.retry_at[shard] = Date.now() + BUSY_RETRY_MS; // the shard's queue is full: the others go on meanwhile
          continue;
        }
        // A shard is not serving: the subscriber resumes from its cursor, elsewhere or later.
        this.end({ push: 'lagging', subscription: this.id, cursor: this.cursor });
        return;
      }
      const page = result.feed;
      if (from < (page.floor ?? 0)) {
        // This subscriber fell behind retention: resuming from its cursor answers cursor_expired.
        this.end({ push: 'lagging', subscription: this.id, cursor: this.cursor });
        return;
      }
      if (page.transfers.length > 0 && page.next - from < page.transfers.length) {
        // A page that does not move its position past its transfers would push them twice.
        this.end({ push: 'lagging', subscription: this.id, cursor: this.cursor });
        return;
      }
      if (page.next > from) this.positions[shard] = page.next; // past transfers of other ledgers too
      if (page.next >= page.head && this.notices[shard] === notices) {
        this.pending[shard] = false;
        this.checked_at[shard] = Date.now();
      } else {
        this.pending[shard] = true;
      }
      if (page.transfers.length > 0) {
        this.io.push({ push: 'events', subscription: this.id, cursor: this.cursor, transfers: page.transfers as Transfer[] });
      }
    }
  }

  private end(message: object): void {
    this.io.push(message);
    this.stop();
    this.io.ended(this);
  }
}
