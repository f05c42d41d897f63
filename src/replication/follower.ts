// The follower's side of replication (docs/replication.md): one connection to the leader named in
// etcd. It says where its logs stand, truncates a divergent tail when the leader says so (through
// the center, which reopens the engine), appends the leader's entries as stored, acknowledges
// what is durable, and applies what the leader reports committed.

import { WebSocket } from 'ws';
import { closeSync, fsyncSync, mkdirSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Engine } from '../shard/engine.ts';
import type { LogHeadWire } from '../shard/messages.ts';
import { entryHeader } from '../storage/log.ts';
import { FORWARD_INFLIGHT_MAX, REPLICATION_FRAME_BYTES_MAX, REPLICATION_PATH, decodeMessage, encodeMessage, type FollowerMessage, type LeaderMessage } from './wire.ts';
import type { ReplicaOutcome } from '../shard/handle.ts';
import type { ShardResult } from '../shard/messages.ts';

export interface FollowerOptions {
  engine: Engine;
  /** The leader's replication address, host:port. */
  leader_address: string;
  leader: string;
  cluster: string;
  secret: string;
  center: string;
  /** The newest epoch this center knows of. */
  epoch: number;
  /** Some shards' logs run past where they agree with the leader: truncate them, then follow again. */
  on_truncate: (agree: number[]) => void;
  /**
   * Where rebuilt shards are staged: `<staging>/shard-<n>/state/data.mdb` (a copy of the leader's
   * checkpoint), written while the engine still runs.
   */
  staging_dir: string;
  /** Every shard that had to be rebuilt has its checkpoint copy staged, with the entry it summarises. */
  on_rebuilt: (shards: Array<{ shard: number; entry: Uint8Array }>) => void;
  /** The connection ended (or was refused): the center decides what next. */
  on_end: (reason: string) => void;
  on_event?: (event: string, fields: Record<string, unknown>) => void;
}

/** Each connection's appends carry its own tag: an acknowledgement of another connection's is ignored. */
let next_tag = 1;

const isPosition = (value: unknown): value is number => Number.isSafeInteger(value) && (value as number) >= -1;

export class ReplicaFollower {
  readonly tag = next_tag++;
  private readonly options: FollowerOptions;
  private readonly ws: WebSocket;
  /** Per shard: the head of what was handed to the engine (appended, or about to be). */
  private readonly heads: LogHeadWire[];
  private welcomed = false;
  /** A rebuild in progress: shards still to fetch, what is staged, and the file being written. */
  private rebuild: { remaining: number[]; done: Array<{ shard: number; entry: Uint8Array }>; fd: number | null; written: number } | null = null;
  private next_forward = 1;
  private readonly forwards = new Map<number, (result: ShardResult) => void>();
  private ended = false;
  readonly commit: number[];
  /** The leader's commit positions as last heard (applied as far as this log reaches). */
  private readonly leader_commit: number[];

  constructor(options: FollowerOptions, heads: LogHeadWire[]) {
    this.options = options;
    this.heads = heads.map((head) => ({ ...head }));
    this.commit = heads.map(() => 0);
    this.leader_commit = heads.map(() => 0);
    this.ws = new WebSocket(`ws://${options.leader_address}${REPLICATION_PATH}`, { maxPayload: REPLICATION_FRAME_BYTES_MAX, handshakeTimeout: 2_000 });
    this.ws.binaryType = 'nodebuffer';
    this.ws.on('open', () => {
      this.ws.send(
        encodeMessage({ t: 'hello', cluster: options.cluster, secret: options.secret, center: options.center, epoch: options.epoch, heads: this.heads }),
      );
    });
    this.ws.on('message', (data: Buffer) => this.onMessage(data));
    this.ws.on('error', (error) => this.end(`connection to ${options.leader} failed: ${error.message}`));
    this.ws.on('close', (code, reason) => this.end(`connection to ${options.leader} closed (${code} ${reason.toString()})`));
  }

  /** The engine acknowledged (or refused) what it was handed (Engine on_replica). */
  onReplica(shard: number, outcome: ReplicaOutcome): void {
    if (this.ended || outcome.tag !== this.tag) return;
    if ('refused' in outcome) {
      // Our heads no longer say where the log stands: the center reopens and asks again.
      this.end(`shard ${shard} refused the leader's entry (${outcome.refused}: ${outcome.message})`, true);
      return;
    }
    this.send({ t: 'ack', shard, position: outcome.acked });
  }

  /** Whether the leader welcomed this follower (writes can be forwarded). */
  get following(): boolean {
    return this.welcomed && !this.ended;
  }

  /**
   * Hands a write that reached this center's door to the leader, over this connection; its
   * answer is the leader's. Bounded: past FORWARD_INFLIGHT_MAX in flight, `busy`.
   */
  forward(op: 'create_accounts' | 'create_transfers', count: number, body: Uint8Array): Promise<ShardResult> {
    if (!this.following) return Promise.resolve({ error: 'unavailable', message: `this center is not connected to the leader ${this.options.leader}; retry` });
    if (this.forwards.size >= FORWARD_INFLIGHT_MAX) {
      return Promise.resolve({ error: 'busy', message: `${FORWARD_INFLIGHT_MAX} writes are already on their way to the leader from this center; retry later` });
    }
    const id = this.next_forward++;
    return new Promise((resolve) => {
      this.forwards.set(id, resolve);
      this.send({ t: 'forward', id, op, count, body });
    });
  }

  get leader(): string {
    return this.options.leader;
  }

  close(): void {
    this.end('closed by this center');
  }

  private send(message: FollowerMessage): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(encodeMessage(message));
  }

  private onMessage(data: Buffer): void {
    if (this.ended) return;
    const message = decodeMessage<LeaderMessage>(data);
    if (message === null || !wellFormed(message, this.heads.length)) return this.end('the leader sent a malformed message');
    switch (message.t) {
      case 'refuse':
        return this.end(`the leader refused: ${message.code}: ${message.message}`);
      case 'welcome': {
        if (message.epoch < this.options.epoch) return this.end(`${this.options.leader} leads epoch ${message.epoch}, older than ${this.options.epoch}`);
        const remaining = message.agree.flatMap((agree, shard) => (agree < 0 ? [shard] : []));
        if (remaining.length > 0) {
          // The leader's log no longer reaches back to these shards' heads: fetch its checkpoint.
          this.options.on_event?.('rebuilding from the leader\'s checkpoint', { leader: this.options.leader, shards: remaining });
          rmSync(this.options.staging_dir, { recursive: true, force: true });
          this.rebuild = { remaining, done: [], fd: null, written: 0 };
          this.nextSnapshot();
          return;
        }
        const diverged = message.agree.some((agree, shard) => agree < this.heads[shard].position);
        if (diverged) {
          this.options.on_event?.('log diverged from the leader', { leader: this.options.leader, agree: message.agree, heads: this.heads.map((h) => h.position) });
          this.ended = true;
          this.ws.close(1000, 'truncating');
          for (const resolve of this.forwards.values()) resolve({ error: 'unavailable', message: 'this center is catching up with the leader; retry' });
          this.forwards.clear();
          this.options.on_truncate(message.agree);
          return;
        }
        this.welcomed = true;
        this.applyCommit(message.commit);
        this.options.on_event?.('following', { leader: this.options.leader, epoch: message.epoch });
        return;
      }
      case 'entries': {
        if (!this.welcomed) return this.end('entries before welcome');
        const head = this.heads[message.shard];
        if (head === undefined || message.first !== head.position + 1 || message.entries.length === 0) {
          return this.end(`shard ${message.shard}: entries from ${message.first} do not follow ${head?.position}`, true);
        }
        let last;
        try {
          last = entryHeader(message.entries[message.entries.length - 1]);
        } catch (error) {
          return this.end(`shard ${message.shard}: ${(error as Error).message}`, true);
        }
        this.heads[message.shard] = { position: last.position, epoch: last.epoch, checksum: last.checksum };
        this.options.engine.appendReplica(message.shard, message.entries, this.tag);
        // A commit heard before these entries arrived covers them now.
        this.applyCommit(this.leader_commit);
        return;
      }
      case 'commit':
        if (this.welcomed) this.applyCommit(message.commit);
        return;
      case 'snapshot_part':
      case 'snapshot_done':
      case 'snapshot_failed':
        return this.onSnapshot(message);
      case 'forwarded': {
        const resolve = this.forwards.get(message.id);
        this.forwards.delete(message.id);
        resolve?.(message.result);
        return;
      }
    }
  }

  private nextSnapshot(): void {
    const rebuild = this.rebuild!;
    const shard = rebuild.remaining[0];
    if (shard === undefined) {
      // Every copy staged: the center swaps them in (with the engine closed) and says hello again.
      this.ended = true;
      this.ws.close(1000, 'rebuilding');
      this.options.on_rebuilt(rebuild.done);
      return;
    }
    const dir = join(this.options.staging_dir, `shard-${shard}`, 'state');
    mkdirSync(dir, { recursive: true });
    rebuild.fd = openSync(join(dir, 'data.mdb'), 'w');
    rebuild.written = 0;
    this.send({ t: 'snapshot', shard });
  }

  private onSnapshot(message: Extract<LeaderMessage, { t: 'snapshot_part' | 'snapshot_done' | 'snapshot_failed' }>): void {
    const rebuild = this.rebuild;
    if (rebuild === null || rebuild.fd === null || message.shard !== rebuild.remaining[0]) return this.end('a checkpoint copy nobody asked for');
    try {
      if (message.t === 'snapshot_failed') throw new Error(`the leader could not copy its checkpoint of shard ${message.shard}: ${message.message}`);
      if (message.t === 'snapshot_part') {
        if (message.offset !== rebuild.written) throw new Error(`checkpoint copy of shard ${message.shard}: part at ${message.offset}, expected ${rebuild.written}`);
        writeSync(rebuild.fd, message.bytes);
        rebuild.written += message.bytes.byteLength;
        return;
      }
      if (message.total !== rebuild.written) throw new Error(`checkpoint copy of shard ${message.shard}: ${rebuild.written} of ${message.total} bytes`);
      fsyncSync(rebuild.fd);
      closeSync(rebuild.fd);
      rebuild.fd = null;
      rebuild.done.push({ shard: message.shard, entry: message.entry });
      rebuild.remaining.shift();
      this.nextSnapshot();
    } catch (error) {
      if (rebuild.fd !== null) closeSync(rebuild.fd);
      rebuild.fd = null;
      this.end(`rebuild failed: ${(error as Error).message}`);
    }
  }

  private applyCommit(commit: number[]): void {
    for (let shard = 0; shard < commit.length && shard < this.commit.length; shard++) {
      if (commit[shard] > this.leader_commit[shard]) this.leader_commit[shard] = commit[shard];
      // Only what this log holds is applied: a commit position past it waits for the entries.
      const position = Math.min(commit[shard], this.heads[shard].position);
      if (position > this.commit[shard]) {
        this.commit[shard] = position;
        this.options.engine.setCommitted(shard, position);
      }
    }
  }

  private end(reason: string, reopen = false): void {
    if (this.ended) return;
    this.ended = true;
    if (this.rebuild !== null && this.rebuild.fd !== null) {
      closeSync(this.rebuild.fd);
      this.rebuild.fd = null;
    }
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate();
    // Sent, maybe run by the leader, answer lost: the outcome is unknown (resending is safe).
    for (const resolve of this.forwards.values()) resolve({ error: 'unavailable', message: `the connection to the leader ${this.options.leader} ended before it answered; the outcome is unknown` });
    this.forwards.clear();
    this.options.on_end(reopen ? `reopen: ${reason}` : reason);
  }
}

/** The leader is a peer that knows the secret, but its messages are still checked before use. */
function wellFormed(message: LeaderMessage, shards: number): boolean {
  const positions = (value: unknown): boolean => Array.isArray(value) && value.length === shards && value.every(isPosition);
  switch (message.t) {
    case 'welcome':
      return Number.isSafeInteger(message.epoch) && positions(message.agree) && positions(message.commit);
    case 'entries':
      return Number.isInteger(message.shard) && message.shard >= 0 && message.shard < shards && isPosition(message.first) && Array.isArray(message.entries) && message.entries.every((e) => e instanceof Uint8Array);
    case 'commit':
      return positions(message.commit);
    case 'forwarded':
      return Number.isSafeInteger(message.id) && typeof message.result === 'object' && message.result !== null;
    case 'snapshot_part':
      return Number.isInteger(message.shard) && Number.isSafeInteger(message.offset) && message.bytes instanceof Uint8Array;
    case 'snapshot_done':
      return Number.isInteger(message.shard) && Number.isSafeInteger(message.total) && message.entry instanceof Uint8Array;
    case 'snapshot_failed':
      return Number.isInteger(message.shard) && typeof message.message === 'string';
    case 'refuse':
      return typeof message.code === 'string' && typeof message.message === 'string';
    default:
      return false;
  }
}
