// The transfer workload shared by bench/transfers.ts (Keel over WebSocket) and
// bench/baseline-postgres.ts (PostgreSQL): a deterministic, seeded stream of transfer events, which
// accounts they touch, and what every account's balances must be given what was applied.
//
// Events are one of: a single-phase transfer, a pending transfer (the first half of a two-phase
// transfer), or the post or void of a pending transfer. A pending transfer's post (9 in 10) or
// void (1 in 10) is released only once the pending transfer has been confirmed created, so it
// always goes in a later request.

import { partitionOf } from '../src/shard/engine.ts';

export const EventKind = {
  single: 0,
  pending: 1,
  post: 2,
  void: 3,
} as const;
export type EventKindValue = (typeof EventKind)[keyof typeof EventKind];

/** One transfer event. Accounts are indexes 1..accounts; posts and voids carry their pending transfer's accounts and amount. */
export interface Ev {
  id: bigint;
  kind: EventKindValue;
  debit: number;
  credit: number;
  amount: number;
  /** The pending transfer's id for posts and voids; 0n otherwise. */
  pending_id: bigint;
}

export type Distribution =
  | { kind: 'uniform' }
  | { kind: 'zipf'; s: number }
  | { kind: 'hot'; accounts: number; share: number };

export interface WorkloadOptions {
  accounts: number;
  /** Transfer events to generate, posts and voids included; Infinity when the run is bounded by time. */
  events: number;
  distribution: Distribution;
  /** Share (0..1) of new transfers that are two-phase (pending, then post or void). */
  two_phase: number;
  /** Share (0..1) of transfers whose two accounts should live on different shards. */
  cross_shard: number;
  /** Shards of the engine; with 1, every transfer is single-shard whatever `cross_shard` says. */
  shards: number;
  /** Account i has id `account_base + i`. */
  account_base: bigint;
  /** Event n has id `id_base + n`. */
  id_base: bigint;
  seed: number;
}

/** xorshift32, as in bench/ledger.ts: deterministic workloads make runs comparable. */
export class Rng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0 || 42;
  }
  next(): number {
    let s = this.state;
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    this.state = s >>> 0;
    return this.state / 0x1_0000_0000;
  }
}

/** Picks account indexes 1..n by the configured distribution. */
export class AccountPicker {
  private readonly n: number;
  private readonly cdf: Float64Array | undefined;
  private readonly dist: Distribution;

  constructor(n: number, dist: Distribution) {
    this.n = n;
    this.dist = dist;
    if (dist.kind === 'zipf') {
      // Rank r (1-based) has weight 1/r^s; rank r is account r.
      const cdf = new Float64Array(n);
      let total = 0;
      for (let r = 1; r <= n; r++) {
        total += 1 / Math.pow(r, dist.s);
        cdf[r - 1] = total;
      }
      for (let i = 0; i < n; i++) cdf[i] /= total;
      this.cdf = cdf;
    }
  }

  pick(rng: Rng): number {
    const u = rng.next();
    switch (this.dist.kind) {
      case 'uniform':
        return 1 + Math.floor(u * this.n);
      case 'hot': {
        const hot = Math.min(this.dist.accounts, this.n);
        if (u < this.dist.share) return 1 + Math.floor(rng.next() * hot);
        return hot >= this.n ? 1 + Math.floor(rng.next() * this.n) : hot + 1 + Math.floor(rng.next() * (this.n - hot));
      }
      case 'zipf': {
        const cdf = this.cdf as Float64Array;
        let lo = 0;
        let hi = this.n - 1;
        while (lo < hi) {
          const mid = (lo + hi) >>> 1;
          if (cdf[mid] < u) lo = mid + 1;
          else hi = mid;
        }
        return lo + 1;
      }
    }
  }
}

export function describeDistribution(d: Distribution): string {
  switch (d.kind) {
    case 'uniform':
      return 'uniform';
    case 'zipf':
      return `zipf s=${d.s}`;
    case 'hot':
      return `hot: ${Math.round(d.share * 100)}% of picks on ${d.accounts} accounts`;
  }
}

/** Resolution of a pending transfer, ready once the pending transfer is confirmed. */
interface Resolution {
  kind: typeof EventKind.post | typeof EventKind.void;
  pending: Ev;
}

/** What `next` gives: events to send, nothing yet (wait for replies), or the end of the workload. */
export type Next = Ev[] | 'wait' | 'done';

export class Workload {
  readonly options: WorkloadOptions;
  /** Expected balances per account index, as sums of what was applied (exact below 2^53). */
  readonly debits_pending: Float64Array;
  readonly debits_posted: Float64Array;
  readonly credits_pending: Float64Array;
  readonly credits_posted: Float64Array;

  private readonly rng: Rng;
  private readonly picker: AccountPicker;
  private readonly shard_of: Int32Array | undefined;
  private seq = 0n;
  /** Events generated or reserved for resolutions of pending transfers already generated. */
  private reserved = 0;
  /** Resolutions reserved but not yet released (their pending transfer is not yet confirmed or failed). */
  private unreleased = 0;
  private readonly ready: Resolution[] = [];
  private ready_head = 0;
  /** Pregenerated new transfers (count mode), consumed in order. */
  private pregenerated: Ev[] | undefined;
  private pregenerated_head = 0;
  private stopped = false;

  generated = 0;
  generated_cross_shard = 0;
  generated_two_phase = 0;

  constructor(options: WorkloadOptions) {
    if (!(options.accounts >= 2)) throw new RangeError('at least 2 accounts are needed');
    this.options = options;
    this.rng = new Rng(options.seed);
    this.picker = new AccountPicker(options.accounts, options.distribution);
    const n = options.accounts + 1;
    this.debits_pending = new Float64Array(n);
    this.debits_posted = new Float64Array(n);
    this.credits_pending = new Float64Array(n);
    this.credits_posted = new Float64Array(n);
    if (options.shards > 1) {
      this.shard_of = new Int32Array(n);
      for (let i = 1; i < n; i++) this.shard_of[i] = partitionOf(options.account_base + BigInt(i)) % options.shards;
    }
  }

  accountId(index: number): bigint {
    return this.options.account_base + BigInt(index);
  }

  /**
   * Generates every new transfer of a count-bounded workload up front (as bench/ledger.ts does), so
   * that the random draws are not on the clock. Posts and voids still follow confirmations.
   */
  pregenerate(): void {
    if (!Number.isFinite(this.options.events)) return;
    const all: Ev[] = [];
    for (;;) {
      const ev = this.newEvent();
      if (ev === undefined) break;
      all.push(ev);
    }
    this.pregenerated = all;
  }

  /** Up to `max` events: released resolutions first (at most half the batch when new transfers remain), then new transfers. */
  next(max: number): Next {
    const out: Ev[] = [];
    const new_left = this.hasNew();
    const resolutions_max = new_left ? Math.max(1, Math.floor(max / 2)) : max;
    while (out.length < resolutions_max && this.ready_head < this.ready.length) {
      const r = this.ready[this.ready_head++];
      out.push({ id: this.nextId(), kind: r.kind, debit: r.pending.debit, credit: r.pending.credit, amount: r.pending.amount, pending_id: r.pending.id });
    }
    if (this.ready_head > 4096 && this.ready_head * 2 > this.ready.length) {
      this.ready.splice(0, this.ready_head);
      this.ready_head = 0;
    }
    while (out.length < max) {
      const ev = this.takeNew();
      if (ev === undefined) break;
      out.push(ev);
    }
    this.generated += out.length;
    if (out.length > 0) return out;
    return this.unreleased > 0 ? 'wait' : 'done';
  }

  /** True when no further event can come (every pending transfer resolved, every new transfer generated). */
  get finished(): boolean {
    return !this.hasNew() && this.unreleased === 0 && this.ready_head >= this.ready.length;
  }

  /**
   * Records an event's outcome. Applied events move the expected balances; a confirmed pending
   * transfer releases its resolution. An event whose outcome is unknown (the request failed in a way
   * that may or may not have applied it) is settled as not applied now, and `apply`-ed later if a
   * lookup finds it.
   */
  settle(ev: Ev, applied: boolean): void {
    if (applied) this.apply(ev);
    if (ev.kind === EventKind.pending) {
      this.unreleased--;
      if (applied) {
        // 1 in 10 pending transfers is voided, the rest posted: derived from the id, so deterministic.
        this.ready.push({ kind: ev.id % 10n === 0n ? EventKind.void : EventKind.post, pending: ev });
      } else {
        this.reserved--; // its resolution will never be sent
      }
    }
  }

  /** Moves the expected balances by one applied event. */
  apply(ev: Ev): void {
    const a = ev.amount;
    switch (ev.kind) {
      case EventKind.single:
        this.debits_posted[ev.debit] += a;
        this.credits_posted[ev.credit] += a;
        break;
      case EventKind.pending:
        this.debits_pending[ev.debit] += a;
        this.credits_pending[ev.credit] += a;
        break;
      case EventKind.post:
        this.debits_pending[ev.debit] -= a;
        this.credits_pending[ev.credit] -= a;
        this.debits_posted[ev.debit] += a;
        this.credits_posted[ev.credit] += a;
        break;
      case EventKind.void:
        this.debits_pending[ev.debit] -= a;
        this.credits_pending[ev.credit] -= a;
        break;
    }
  }

  /** Stops generating new transfers (end of a time-bounded run); resolutions already released remain. */
  stopNew(): void {
    this.stopped = true;
  }

  private hasNew(): boolean {
    if (this.stopped) return false;
    if (this.pregenerated !== undefined) return this.pregenerated_head < this.pregenerated.length;
    return this.reserved < this.options.events;
  }

  private takeNew(): Ev | undefined {
    if (this.stopped) return undefined;
    if (this.pregenerated !== undefined) {
      if (this.pregenerated_head >= this.pregenerated.length) return undefined;
      const ev = this.pregenerated[this.pregenerated_head];
      // Release references as we go: a million events are a few hundred MB.
      (this.pregenerated as Array<Ev | undefined>)[this.pregenerated_head] = undefined;
      this.pregenerated_head++;
      if (ev.kind === EventKind.pending) this.unreleased++;
      return ev;
    }
    const ev = this.newEvent();
    if (ev !== undefined && ev.kind === EventKind.pending) this.unreleased++;
    return ev;
  }

  private nextId(): bigint {
    this.seq++;
    return this.options.id_base + this.seq;
  }

  /** The next new transfer of the seeded stream, or undefined when the event budget is used up. */
  private newEvent(): Ev | undefined {
    const o = this.options;
    if (this.reserved >= o.events) return undefined;
    const rng = this.rng;
    let kind: EventKindValue = EventKind.single;
    if (o.two_phase > 0 && rng.next() < o.two_phase && this.reserved + 2 <= o.events) kind = EventKind.pending;
    this.reserved += kind === EventKind.pending ? 2 : 1;
    if (kind === EventKind.pending) this.generated_two_phase++;
    const debit = this.picker.pick(rng);
    let credit: number;
    if (this.shard_of === undefined) {
      credit = this.pickOther(debit);
    } else {
      const want_cross = o.cross_shard > 0 && rng.next() < o.cross_shard;
      const home = this.shard_of[debit];
      credit = this.pickOther(debit);
      // Rejection sampling keeps the account distribution; a bounded number of tries, then any account that fits.
      for (let tries = 0; tries < 64 && (this.shard_of[credit] !== home) !== want_cross; tries++) credit = this.pickOther(debit);
      if ((this.shard_of[credit] !== home) !== want_cross) {
        for (let i = 1; i <= o.accounts; i++) {
          const c = 1 + ((credit + i - 1) % o.accounts);
          if (c !== debit && (this.shard_of[c] !== home) === want_cross) {
            credit = c;
            break;
          }
        }
      }
      if (this.shard_of[credit] !== home) this.generated_cross_shard++;
    }
    const amount = 1 + Math.floor(rng.next() * 1000);
    return { id: this.nextId(), kind, debit, credit, amount, pending_id: 0n };
  }

  private pickOther(debit: number): number {
    for (let tries = 0; tries < 64; tries++) {
      const c = this.picker.pick(this.rng);
      if (c !== debit) return c;
    }
    return debit === this.options.accounts ? 1 : debit + 1;
  }
}
