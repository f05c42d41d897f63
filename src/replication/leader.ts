// The leader's side of replication (docs/replication.md): it streams each shard's durable entries
// to every connected follower, counts an entry committed once every in-sync replica holds it,
// and only then lets the engine release the replies that depend on it, and only while its etcd
// lease cannot have expired. A follower that falls behind is taken out of the in-sync set in etcd
// before commit goes on without it; one that caught up is taken back in.

import type { WebSocket } from 'ws';
import type { Engine } from '../shard/engine.ts';
import { SHIP_ENTRIES_MAX, type LogHeadWire } from '../shard/messages.ts';
import type { Coordinator, GroupState } from './coordinator.ts';
import { encodeMessage, type LeaderMessage } from './wire.ts';
import { ENTRY_HEADER_BYTES, LogOp, entryHeader, entryOp } from '../storage/log.ts';
import { groupEntryHeader } from '../shard/group.ts';

export interface LeaderOptions {
  coordinator: Coordinator;
  /** The partition group led (the whole engine: docs/replication.md). */
  group: number;
  state: GroupState;
  /** The coordinator's lease generation the leadership was taken under (it ends with that lease). */
  generation: number;
  shard_count: number;
  /** A follower behind (or away) this long leaves the in-sync set. */
  lag_max_ms: number;
  /** This center lost the right to lead (lease at risk, or a newer epoch exists). */
  on_deposed: (reason: string) => void;
  on_event?: (event: string, fields: Record<string, unknown>) => void;
}

/** Entries sent but not acknowledged, per follower and shard, before the leader waits. */
const WINDOW_ENTRIES = 256;
/** Recent entries kept in memory per shard for shipping (older ones are read from the log). */
const RECENT_ENTRIES_MAX = 1024;
const RECENT_BYTES_MAX = 64 << 20;
/** Bytes queued on a follower's socket before the leader waits for it to drain. */
const SOCKET_BUFFERED_MAX = 32 << 20;
const TICK_MS = 50;
/** Durability marks kept per shard for measuring followers' lag. */
const MARKS_MAX = 8192;

interface Link {
  center: string;
  ws: WebSocket;
  next: number[];
  pumping: boolean[];
  closed: boolean;
  /** The commit positions last sent on this link (a follower applies up to them). */
  commit_sent: number[];
}

export class ReplicaLeader {
  private readonly options: LeaderOptions;
  private engine: Engine | null = null;
  readonly epoch: number;
  readonly min_isr: number;
  /** Members of the in-sync set, this center included. */
  isr: Set<string>;
  /** Per shard: the highest position durable here (and handed over for shipping). */
  private readonly durable: number[];
  /** Per shard: the recent entries, from position `first`. */
  private readonly recent: Array<{ first: number; entries: Uint8Array[]; bytes: number }>;
  private readonly commit: number[];
  /** Per center: what it acknowledged durable, per shard (kept across its reconnects). */
  private readonly acked = new Map<string, number[]>();
  private readonly links = new Map<string, Link>();
  /** Per follower center: since when it has been disconnected (ms, monotonic). */
  private readonly away_since = new Map<string, number>();
  /** Per shard: [last position, when durable here] of each batch of entries handed over. */
  private readonly marks: Array<Array<[number, number]>>;
  /** Per shard: the log head when the engine opened (entries from before this leadership). */
  private attach_head: number[] = [];
  private isr_change: Promise<void> | null = null;
  /** Per shard: [position, gid] of group entries whose group is not yet known held whole, in order. */
  private readonly group_entries: Array<Array<[number, number]>>;
  private readonly group_positions = new Map<number, { participants: number[]; at: Map<number, number>; listed: number }>();
  /**
   * A center being added to the in-sync set: from the moment the change is sent to etcd, commit
   * counts it too (Kafka's "maximal ISR"), since etcd may already name it in sync, and so it may
   * already be eligible to take over, before this leader hears back.
   */
  private joining: string | null = null;
  private commit_broadcast_scheduled = false;
  private readonly timer: NodeJS.Timeout;
  private stopped = false;
  /** When this leadership started serving (its engine opened). */
  since_ms = performance.now();

  constructor(options: LeaderOptions) {
    this.options = options;
    this.epoch = options.state.epoch;
    this.min_isr = options.state.min_isr;
    this.isr = new Set(options.state.isr);
    const n = options.shard_count;
    this.durable = new Array<number>(n).fill(-1);
    this.recent = Array.from({ length: n }, () => ({ first: 1, entries: [], bytes: 0 }));
    this.commit = new Array<number>(n).fill(0);
    this.marks = Array.from({ length: n }, () => []);
    this.group_entries = Array.from({ length: n }, () => []);
    this.timer = setInterval(() => this.tick(), TICK_MS);
    this.timer.unref();
  }

  private get self(): string {
    return this.options.coordinator.center;
  }

  /** The engine this leadership serves with (started after the leader object, see Center). */
  attach(engine: Engine, groups: Array<Array<[number, number, number[]]>> = []): void {
    // Group entries already in the log past its commit position: tracked like shipped ones.
    groups.forEach((list, shard) => {
      for (const [gid, position, participants] of list) this.noteGroup(shard, position, gid, participants);
    });
    this.engine = engine;
    // Followers are measured from here: they could not connect while the engine opened.
    this.since_ms = performance.now();
    this.attach_head = engine.log_heads.map((head) => head.position);
    for (let shard = 0; shard < this.options.shard_count; shard++) {
      const head = engine.log_heads[shard].position;
      if (this.durable[shard] < head) this.durable[shard] = head;
      if (this.recent[shard].entries.length === 0) this.recent[shard].first = this.durable[shard] + 1;
    }
    this.recomputeCommit();
  }

  /** The engine's newly durable entries of `shard` (Engine on_entries). */
  onEntries(shard: number, first: number, entries: Uint8Array[]): void {
    if (this.stopped) return;
    if (this.durable[shard] < 0) {
      this.durable[shard] = first - 1;
      this.recent[shard].first = first;
    }
    if (first !== this.durable[shard] + 1) {
      this.options.on_deposed(`shard ${shard} handed over entry ${first} after ${this.durable[shard]}`);
      return;
    }
    const recent = this.recent[shard];
    if (recent.first + recent.entries.length !== first) {
      recent.first = first;
      recent.entries = [];
      recent.bytes = 0;
    }
    for (let k = 0; k < entries.length; k++) {
      const bytes = entries[k];
      recent.entries.push(bytes);
      recent.bytes += bytes.byteLength;
      if (entryOp(bytes) === LogOp.group) {
        const { gid, participants } = groupEntryHeader(bytes.subarray(ENTRY_HEADER_BYTES));
        this.noteGroup(shard, first + k, gid, participants);
      }
    }
    let drop = 0;
    while (recent.entries.length - drop > 1 && (recent.entries.length - drop > RECENT_ENTRIES_MAX || recent.bytes > RECENT_BYTES_MAX)) recent.bytes -= recent.entries[drop++].byteLength;
    if (drop > 0) {
      recent.entries.splice(0, drop);
      recent.first += drop;
    }
    this.durable[shard] = first + entries.length - 1;
    const marks = this.marks[shard];
    marks.push([this.durable[shard], performance.now()]);
    if (marks.length > MARKS_MAX) marks.splice(0, marks.length - MARKS_MAX);
    this.recomputeCommit();
    for (const link of this.links.values()) void this.pump(link, shard);
  }

  /** Writes are refused below the minimum in-sync set (the door answers `unavailable`). */
  get writable(): boolean {
    return !this.stopped && this.isr.size >= this.min_isr;
  }

  get commits(): readonly number[] {
    return this.commit;
  }

  /** Per follower center: entries not acknowledged (summed over shards; null if never connected) and seconds behind. */
  lag(): Record<string, { entries: number | null; seconds: number }> {
    const out: Record<string, { entries: number | null; seconds: number }> = {};
    const now = performance.now();
    for (const member of new Set([...this.isr, ...this.acked.keys()])) {
      if (member === this.self) continue;
      const acked = this.acked.get(member);
      const entries = acked === undefined ? null : acked.reduce((sum, position, shard) => sum + Math.max(0, this.durable[shard] - position), 0);
      out[member] = { entries, seconds: this.lagMs(member, now) / 1000 };
    }
    return out;
  }

  /**
   * A follower said hello (cluster and secret already checked): tells it where its logs agree
   * with these, then streams.
   */
  async accept(ws: WebSocket, center: string, epoch: number, heads: LogHeadWire[]): Promise<void> {
    const engine = this.engine;
    if (engine === null || this.stopped) return this.refuse(ws, 'not_leader', `${this.self} is not serving as leader`);
    if (epoch > this.epoch) {
      this.refuse(ws, 'stale_epoch', `${center} knows epoch ${epoch}; this leader has ${this.epoch}`);
      this.options.on_deposed(`a follower knows a newer epoch (${epoch})`);
      return;
    }
    const head_ok = (head: LogHeadWire): boolean =>
      typeof head === 'object' && head !== null && Number.isSafeInteger(head.position) && head.position >= 0 && Number.isSafeInteger(head.epoch) && head.epoch >= 0 && Number.isInteger(head.checksum);
    if (!Array.isArray(heads) || !heads.every(head_ok) || !Number.isSafeInteger(epoch)) return this.refuse(ws, 'bad_request', 'malformed hello');
    if (heads.length !== this.options.shard_count) {
      return this.refuse(ws, 'shard_count_mismatch', `${center} has ${heads.length} shard(s); the leader has ${this.options.shard_count}`);
    }
    const agree = await Promise.all(heads.map((head, shard) => engine.agree(shard, head)));
    if (this.stopped || ws.readyState !== ws.OPEN) return;
    if (agree.some((a) => a.agree < 0)) {
      // This log was pruned below where the follower stands: it cannot catch up from entries.
      this.send({ center, ws, next: [], pumping: [], closed: false, commit_sent: [] }, { t: 'welcome', epoch: this.epoch, agree: agree.map((a) => a.agree), commit: [...this.commit] });
      this.options.on_event?.('follower needs a rebuild', { follower: center, agree: agree.map((a) => a.agree) });
      return;
    }
    const previous = this.links.get(center);
    if (previous !== undefined) this.drop(previous, 'replaced by a new connection');
    const link: Link = { center, ws, next: agree.map((a) => a.agree + 1), pumping: new Array<boolean>(heads.length).fill(false), closed: false, commit_sent: [...this.commit] };
    this.links.set(center, link);
    // What it holds that agrees with this log (a truncation never removes what this leader had
    // acknowledged from it: that is committed, and committed entries are never truncated).
    this.acked.set(center, agree.map((a, shard) => Math.min(a.agree, heads[shard].position)));
    this.send(link, { t: 'welcome', epoch: this.epoch, agree: agree.map((a) => a.agree), commit: [...this.commit] });
    this.options.on_event?.('follower connected', { follower: center, agree: agree.map((a) => a.agree) });
    this.away_since.delete(center);
    ws.on('close', () => this.drop(link, 'disconnected'));
    // A follower that must truncate says hello again afterwards; streaming now is harmless (it
    // closes), so every follower is treated alike.
    for (let shard = 0; shard < heads.length; shard++) void this.pump(link, shard);
  }

  /** A follower's acknowledgement: shard `shard` is durable there up to `position`. */
  onAck(center: string, shard: number, position: number): void {
    const link = this.links.get(center);
    const acked = this.acked.get(center);
    if (link === undefined || acked === undefined || !Number.isInteger(shard) || !Number.isSafeInteger(position) || shard < 0 || shard >= acked.length) return;
    // Only what this link carried counts (never an append made under another leader).
    if (position >= link.next[shard]) return;
    if (position > acked[shard]) acked[shard] = position;
    this.recomputeCommit();
    void this.pump(link, shard);
  }

  private refuse(ws: WebSocket, code: Extract<LeaderMessage, { t: 'refuse' }>['code'], message: string): void {
    ws.send(encodeMessage({ t: 'refuse', code, message }));
    ws.close(1008, code);
  }

  private sendCommit(link: Link): void {
    link.commit_sent = [...this.commit];
    this.send(link, { t: 'commit', commit: link.commit_sent });
  }

  private send(link: Link, message: LeaderMessage): void {
    if (link.closed || link.ws.readyState !== link.ws.OPEN) return;
    link.ws.send(encodeMessage(message));
  }

  private drop(link: Link, reason: string): void {
    if (link.closed) return;
    link.closed = true;
    if (this.links.get(link.center) === link) {
      this.links.delete(link.center);
      this.away_since.set(link.center, performance.now());
    }
    if (link.ws.readyState === link.ws.OPEN) link.ws.close(1001, reason.slice(0, 100));
    this.options.on_event?.('follower disconnected', { follower: link.center, reason });
  }

  private async pump(link: Link, shard: number): Promise<void> {
    if (link.pumping[shard] || link.closed) return;
    link.pumping[shard] = true;
    try {
      const acked = this.acked.get(link.center)!;
      while (!link.closed && !this.stopped && link.next[shard] <= this.durable[shard]) {
        if (link.next[shard] - acked[shard] > WINDOW_ENTRIES || link.ws.bufferedAmount > SOCKET_BUFFERED_MAX) break;
        const from = link.next[shard];
        let entries = this.fromRecent(shard, from);
        if (entries === null) {
          entries = await this.engine!.storedEntries(shard, from, SHIP_ENTRIES_MAX);
          // A log pruned below `from` starts later: the follower needs a checkpoint, not entries.
          if (entries.length === 0 || entryHeader(entries[0]).position !== from) {
            this.drop(link, `entry ${from} of shard ${shard} is no longer in the leader's log; the follower must be rebuilt`);
            return;
          }
          if (link.next[shard] !== from) continue;
        }
        this.send(link, { t: 'entries', shard, first: from, entries });
        link.next[shard] = from + entries.length;
      }
    } catch (error) {
      this.drop(link, `cannot ship: ${(error as Error).message}`);
    } finally {
      link.pumping[shard] = false;
    }
  }

  private fromRecent(shard: number, from: number): Uint8Array[] | null {
    const recent = this.recent[shard];
    if (from < recent.first || from >= recent.first + recent.entries.length) return null;
    const at = from - recent.first;
    return recent.entries.slice(at, at + SHIP_ENTRIES_MAX);
  }

  /** What every in-sync member (and one joining) holds durably of shard `shard`. */
  private heldEverywhere(shard: number): number {
    let position = this.durable[shard];
    for (const member of this.joining === null ? this.isr : [...this.isr, this.joining]) {
      if (member === this.self) continue;
      const acked = this.acked.get(member);
      position = Math.min(position, acked === undefined ? 0 : acked[shard]);
    }
    return position;
  }

  /**
   * Commit = what every in-sync member holds, except that a shard's commit stops just before a
   * cross-shard group entry until every participant's entry for that group is held by every
   * in-sync member too: so whichever in-sync center takes over has either the whole group or a
   * tail it may cut (Engine.promote). Replies leave only while this center may lead.
   */
  private recomputeCommit(): void {
    if (this.stopped || this.engine === null) return;
    if (this.isr.size < this.min_isr) return;
    const held = this.durable.map((_, shard) => this.heldEverywhere(shard));
    const advanced: number[] = [];
    for (let shard = 0; shard < held.length; shard++) {
      let position = held[shard];
      const waiting = this.group_entries[shard];
      while (waiting.length > 0 && waiting[0][0] <= position) {
        const [at, gid] = waiting[0];
        const group = this.group_positions.get(gid)!;
        const whole = group.participants.every((t) => {
          const p = group.at.get(t);
          return p !== undefined && p <= held[t];
        });
        if (!whole) {
          position = at - 1;
          break;
        }
        waiting.shift();
        if (--group.listed === 0 && group.at.size === group.participants.length) this.group_positions.delete(gid);
      }
      if (position > this.commit[shard]) advanced.push(shard), (held[shard] = position);
    }
    if (advanced.length === 0) return;
    if (!this.options.coordinator.mayLead(this.options.generation)) {
      this.options.on_deposed('the etcd lease could not be renewed in time: stopped acknowledging');
      return;
    }
    for (const shard of advanced) {
      this.commit[shard] = held[shard];
      this.engine.setCommitted(shard, held[shard]);
    }
    if (!this.commit_broadcast_scheduled) {
      this.commit_broadcast_scheduled = true;
      setImmediate(() => {
        this.commit_broadcast_scheduled = false;
        for (const link of this.links.values()) this.sendCommit(link);
      });
    }
  }

  /** A cross-shard group entry of `shard` at `position` (from what is shipped, or the log at attach). */
  private noteGroup(shard: number, position: number, gid: number, participants: number[]): void {
    let group = this.group_positions.get(gid);
    if (group === undefined) {
      group = { participants, at: new Map(), listed: 0 };
      this.group_positions.set(gid, group);
    }
    if (group.at.has(shard)) return;
    group.at.set(shard, position);
    group.listed++;
    const waiting = this.group_entries[shard];
    waiting.push([position, gid]);
    if (waiting.length > 1 && waiting[waiting.length - 2][0] > position) waiting.sort((a, b) => a[0] - b[0]);
  }

  /**
   * How long follower `member` has been behind: the age of the oldest entry durable here that it
   * has not acknowledged (on any shard), or how long it has been away. 0 when caught up.
   */
  lagMs(member: string, now = performance.now()): number {
    if (!this.links.has(member)) return now - (this.away_since.get(member) ?? this.since_ms);
    const acked = this.acked.get(member);
    if (acked === undefined) return now - this.since_ms;
    let lag = 0;
    for (let shard = 0; shard < acked.length; shard++) {
      if (acked[shard] >= this.durable[shard]) continue;
      lag = Math.max(lag, now - this.durableAt(shard, acked[shard] + 1));
    }
    return lag;
  }

  /** When entry `position` of `shard` became durable here (the leader's start, if older than what is kept). */
  private durableAt(shard: number, position: number): number {
    const marks = this.marks[shard];
    // Marks are [last position, time] in order: the first that reaches `position`.
    let low = 0;
    let high = marks.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      if (marks[middle][0] < position) low = middle + 1;
      else high = middle;
    }
    if (low >= marks.length) return performance.now();
    // Older than every mark: durable since before this leadership (or the marks kept).
    if (low === 0 && position <= this.attach_head[shard]) return this.since_ms;
    return marks[low][1];
  }

  private tick(): void {
    if (this.stopped) return;
    if (!this.options.coordinator.mayLead(this.options.generation)) {
      this.options.on_deposed('the etcd lease could not be renewed in time: stopped acknowledging');
      return;
    }
    if (this.isr_change !== null || this.engine === null) return;
    // A follower applies what is committed as far as its log reaches: one that caught up after
    // the last commit change hears the positions again here, so its state converges.
    for (const link of this.links.values()) if (link.commit_sent.some((position, shard) => position !== this.commit[shard])) this.sendCommit(link);
    const now = performance.now();
    for (const member of this.isr) {
      if (member === this.self) continue;
      if (this.lagMs(member, now) > this.options.lag_max_ms) {
        this.changeIsr([...this.isr].filter((m) => m !== member), `${member} is ${this.links.has(member) ? 'behind' : 'away'} for over ${this.options.lag_max_ms} ms`);
        return;
      }
    }
    for (const link of this.links.values()) {
      if (this.isr.has(link.center)) continue;
      // Back in once it holds everything committed and is about as close as the in-sync set.
      const acked = this.acked.get(link.center);
      if (acked !== undefined && acked.every((position, shard) => position >= this.commit[shard]) && this.lagMs(link.center, now) < this.options.lag_max_ms / 2) {
        this.changeIsr([...this.isr, link.center], `${link.center} caught up`);
        return;
      }
    }
  }

  private changeIsr(isr: string[], reason: string): void {
    const added = isr.filter((member) => !this.isr.has(member));
    this.joining = added[0] ?? null;
    this.isr_change = this.options.coordinator
      .setIsr(this.options.group, this.epoch, isr)
      .then((result) => {
        if (!result.ok) {
          this.options.on_deposed(`could not change the in-sync set (${result.reason})`);
          return;
        }
        this.isr = new Set(result.state.isr);
        this.options.on_event?.('in-sync set changed', { isr: result.state.isr, reason });
        this.recomputeCommit();
      })
      .catch((error: unknown) => this.options.on_event?.('in-sync set change failed', { reason, error: (error as Error).message }))
      .finally(() => {
        this.isr_change = null;
        this.joining = null;
      });
  }

  /** Stops leading: no more commits; followers are disconnected. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.timer);
    for (const link of [...this.links.values()]) this.drop(link, 'the leader stepped down');
  }
}
