// The main thread's handle on one shard worker: it queues requests, sends everything queued in
// one event turn as a single transferred buffer, and matches replies to callers. The queue is
// bounded in events: past the bound a request is answered `busy` at once instead of waiting.

import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import {
  HEARTBEAT_MS,
  packTransferable,
  unpack,
  type FromWorker,
  type ShardReply,
  type ShardRequest,
  type ShardResult,
  type ShardWorkerData,
  type ToWorker,
  type ShardRole,
  type LogHeadWire,
} from './messages.ts';
import type { MetricsJson } from '../metrics/shard.ts';
import { IdFilter } from './idfilter.ts';
import { StallClock, checkIntervalMs } from './watchdog.ts';
import type { GroupEntryWire } from './messages.ts';

const WORKER_ENTRY = fileURLToPath(new URL('../../workers/shard.mjs', import.meta.url));

export interface ShardHandleOptions {
  index: number;
  dir: string;
  shard_count: number;
  feed_retention_ms: number;
  /** A participant of cross-shard group `gid` has read (see src/shard/group.ts). */
  on_group_read: (shard: number, gid: number, read_set: Uint8Array) => void;
  /** The shard holds a due pending transfer: `foreign` ones (an account elsewhere) need a group. */
  on_due: (shard: number, kind: 'local' | 'foreign') => void;
  /** The shard stopped serving (crashed, or its storage failed). */
  on_failed: (shard: number, message: string) => void;
  /** The shard's live heap crossed a mark: writes to it stop (`full`) or resume. */
  on_memory?: (shard: number, full: boolean, live_bytes: number, limit_bytes: number) => void;
  /** Events queued or in flight in this shard before new requests are answered `busy`. */
  queue_events_max: number;
  /** The worker's old-generation heap limit in MiB; absent: V8's default. */
  heap_mb?: number;
  /**
   * A worker whose event loop makes no progress this long (a hang, or a heap thrashing at its limit)
   * is failed and stopped; 0: never. Armed once the shard has recovered.
   */
  stall_ms: number;
  /** Replication (docs/replication.md): `single` without it. */
  role: ShardRole;
  epoch: number;
  /** A leader's newly durable entries, as stored, from position `first`. */
  on_entries?: (shard: number, first: number, entries: Uint8Array[]) => void;
  /** A follower's append: durable up to `acked`, or refused with a code. */
  on_replica?: (shard: number, outcome: ReplicaOutcome) => void;
}

/** A follower's append, durable up to `acked` or refused; `tag`: the connection it came on. */
export type ReplicaOutcome = ({ acked: number } | { refused: string; message: string }) & { tag: number };

export interface RecoveryInfo {
  checkpoint_position: number;
  replayed_entries: number;
  head_position: number;
  duration_ms: number;
}

export interface StartedShard {
  handle: ShardHandle;
  log_head: LogHeadWire;
  recovery: RecoveryInfo;
  last_gid: number;
  last_timestamp: bigint;
  filter: IdFilter;
}

type Pending = { resolve: (result: ShardResult) => void; events: number };
/** A worker's answer to a control call (metrics have their own path, with a timeout). */
type ControlReply = Exclude<Extract<FromWorker, { request: number }>, { type: 'metrics' }>;
type ControlWaiter = { resolve: (reply: ControlReply) => void; reject: (reason: string) => void };

export class ShardHandle {
  readonly index: number;
  private readonly worker: Worker;
  private readonly queue_events_max: number;
  private readonly waiting = new Map<number, Pending>();
  private outbox: ShardRequest[] = [];
  private flush_scheduled = false;
  private next_id = 1;
  private events_in_flight = 0;
  private failure: string | null = null;
  private closed_resolve: (() => void) | null = null;
  private readonly metrics_waiting = new Map<number, (json: MetricsJson) => void>();
  private next_metrics_request = 1;
  private readonly control_waiting = new Map<number, ControlWaiter>();
  private next_control_request = 1;
  private readonly options: ShardHandleOptions;
  /** The worker's heartbeat counter (shared memory) and the timer that watches it. */
  private readonly heartbeat: Int32Array;
  private watchdog: NodeJS.Timeout | null = null;
  /** Replication role (a follower's may become `leader` in place: `promote`). */
  role: ShardRole;
  /** A leader's commit position: replies that depend on nothing past it may leave. */
  committed = 0;
  /** A leader's replies waiting for their position to be committed, in order. */
  readonly held: Array<[number, ArrayBuffer]> = [];

  private constructor(options: ShardHandleOptions, worker: Worker, heartbeat: SharedArrayBuffer) {
    this.index = options.index;
    this.worker = worker;
    this.heartbeat = new Int32Array(heartbeat);
    this.queue_events_max = options.queue_events_max;
    this.options = options;
    this.role = options.role;
  }

  /** Starts the worker and waits until it has recovered its shard. */
  static start(options: ShardHandleOptions): Promise<StartedShard> {
    const data: ShardWorkerData = {
      role: options.role,
      epoch: options.epoch,
      index: options.index,
      dir: options.dir,
      shard_count: options.shard_count,
      feed_retention_ms: options.feed_retention_ms,
      queue_events_max: options.queue_events_max,
      heartbeat: new SharedArrayBuffer(4),
    };
    const worker = new Worker(WORKER_ENTRY, options.heap_mb === undefined ? { workerData: data } : { workerData: data, resourceLimits: { maxOldGenerationSizeMb: options.heap_mb } });
    const handle = new ShardHandle(options, worker, data.heartbeat);
    return new Promise((resolve, reject) => {
      let crash: Error | null = null;
      const on_exit = (code: number): void => {
        // Out of memory while replaying: the state outgrew the limit it is restarted with.
        const memory = (crash as (Error & { code?: string }) | null)?.code === 'ERR_WORKER_OUT_OF_MEMORY';
        const why = crash === null ? `exited with code ${code}` : `crashed: ${crash.message}`;
        reject(new Error(`shard ${options.index} ${why} while starting${memory ? '; its state needs more memory than this limit: restart with a larger --shard-heap-mb' : ''}`));
      };
      worker.once('exit', on_exit);
      worker.on('error', (error) => {
        crash = error;
        handle.fail(`shard ${options.index} crashed: ${error.message}`);
      });
      worker.on('message', (message: FromWorker) => {
        switch (message.type) {
          case 'ready':
            worker.off('exit', on_exit);
            handle.onMemory(message.memory.full, message.memory.live_bytes, message.memory.limit_bytes);
            worker.on('exit', () => handle.fail(`shard ${options.index} exited`));
            handle.armWatchdog();
            resolve({
              handle,
              log_head: message.log_head,
              recovery: message.recovery,
              last_gid: message.last_gid,
              last_timestamp: message.last_timestamp,
              filter: IdFilter.from(message.filter),
            });
            return;
          case 'group_read':
            options.on_group_read(options.index, message.gid, message.read_set);
            return;
          case 'due':
            options.on_due(options.index, message.kind);
            return;
          case 'memory':
            handle.onMemory(message.full, message.live_bytes, message.limit_bytes);
            return;
          case 'entries':
            options.on_entries?.(options.index, message.first, message.entries);
            return;
          case 'replica_acked':
            options.on_replica?.(options.index, { acked: message.position, tag: message.tag });
            return;
          case 'replica_refused':
            options.on_replica?.(options.index, { refused: message.code, message: message.message, tag: message.tag });
            return;
          case 'group_entries':
          case 'stored':
          case 'agree':
          case 'promoted':
          case 'durable_head':
          case 'snapshot':
          case 'group_positions':
          case 'cut_tail':
          case 'rolled': {
            const waiter = handle.control_waiting.get(message.request);
            handle.control_waiting.delete(message.request);
            waiter?.resolve(message);
            return;
          }
          case 'failed':
            handle.fail(message.message);
            reject(new Error(`shard ${options.index}: ${message.message}`));
            return;
          case 'replies':
            if (handle.role === 'leader' && message.position > handle.committed) handle.held.push([message.position, message.buffer]);
            else handle.onReplies(message.buffer);
            return;
          case 'closed':
            handle.closed_resolve?.();
            return;
          case 'metrics': {
            const waiter = handle.metrics_waiting.get(message.request);
            handle.metrics_waiting.delete(message.request);
            waiter?.(message.json);
            return;
          }
        }
      });
    });
  }

  /** Events queued or in flight. */
  get load_events(): number {
    return this.events_in_flight;
  }

  get queued_requests(): number {
    return this.waiting.size;
  }

  /** Whether a request of `events` events would be queued now rather than answered `busy`. */
  hasRoom(events: number): boolean {
    return this.failure === null && (this.events_in_flight + events <= this.queue_events_max || this.events_in_flight === 0);
  }

  get failed(): boolean {
    return this.failure !== null;
  }

  /** Why writes to this shard are refused for memory (src/shard/memory.ts), or null. */
  memory_full: string | null = null;

  private onMemory(full: boolean, live_bytes: number, limit_bytes: number): void {
    const was = this.memory_full !== null;
    this.memory_full = full
      ? `shard ${this.index} is at its memory capacity (${mib(live_bytes)} MiB live of ${mib(limit_bytes)} MiB): it keeps its state in memory, so writes to it are refused until it is restarted with a larger --shard-heap-mb`
      : null;
    if (full !== was) this.options.on_memory?.(this.index, full, live_bytes, limit_bytes);
  }

  /**
   * Sends one request; resolves with its result (never rejects: errors are results). `force`
   * skips the queue bound: a cross-shard group checks every participant's room first and must
   * then reach all of them.
   */
  request(make: (id: number) => ShardRequest, events: number, force = false): Promise<ShardResult> {
    if (this.failure !== null) return Promise.resolve({ error: 'unavailable', message: this.failure });
    if (!force && this.events_in_flight + events > this.queue_events_max && this.events_in_flight > 0) {
      return Promise.resolve({
        error: 'busy',
        message: `shard ${this.index} has ${this.events_in_flight} events queued (limit ${this.queue_events_max}); retry later`,
      });
    }
    const id = this.next_id;
    this.next_id = this.next_id >= 0x7fff_ffff ? 1 : this.next_id + 1;
    this.events_in_flight += events;
    this.outbox.push(make(id));
    if (!this.flush_scheduled) {
      this.flush_scheduled = true;
      // setImmediate, not a microtask: requests read from every socket in this turn of the event loop
      // go to the worker in one message (one postMessage per socket read was the gateway's largest
      // cost under single-transfer load), and the worker merges them into one log entry.
      setImmediate(() => this.flush());
    }
    return new Promise((resolve) => this.waiting.set(id, { resolve, events }));
  }

  private flush(): void {
    this.flush_scheduled = false;
    if (this.outbox.length === 0) return;
    const outbox = this.outbox;
    this.outbox = [];
    try {
      const buffer = packTransferable(outbox);
      const message: ToWorker = { type: 'requests', buffer };
      this.worker.postMessage(message, [buffer]);
    } catch (error) {
      // Nothing reached the worker: answer every request of this flush rather than lose them.
      const message = `could not hand requests to shard ${this.index}: ${error instanceof Error ? error.message : String(error)}`;
      for (const [id] of outbox) {
        const pending = this.waiting.get(id);
        if (pending === undefined) continue;
        this.waiting.delete(id);
        this.events_in_flight -= pending.events;
        pending.resolve({ error: 'internal', message });
      }
    }
  }

  private onReplies(buffer: ArrayBuffer): void {
    for (const [id, result] of unpack<ShardReply[]>(buffer)) {
      const pending = this.waiting.get(id);
      if (pending === undefined) continue;
      this.waiting.delete(id);
      this.events_in_flight -= pending.events;
      pending.resolve(result);
    }
  }

  /**
   * Replicated: everything up to `position` is held by every in-sync replica. A leader releases
   * the replies that waited for it (the caller checked that it may still lead); a follower
   * applies up to it.
   */
  setCommitted(position: number): void {
    if (this.failure !== null || position <= this.committed) return;
    this.committed = position;
    const message: ToWorker = { type: 'commit', position };
    this.worker.postMessage(message);
    let released = 0;
    while (released < this.held.length && this.held[released][0] <= position) this.onReplies(this.held[released++][1]);
    if (released > 0) this.held.splice(0, released);
  }

  /** A follower: append the leader's entries; `on_replica` tells when they are durable. */
  appendReplica(entries: Uint8Array[], tag: number): void {
    if (this.failure !== null) return;
    const message: ToWorker = { type: 'replica_append', entries, tag };
    this.worker.postMessage(message);
  }

  /** Stored entries from `from`, at most `limit` (a leader reads them for a replica behind). */
  storedEntries(from: number, limit: number): Promise<Uint8Array[]> {
    return this.ask({ type: 'stored', request: 0, from, limit }, 'stored', 'could not read its log').then((reply) => reply.entries);
  }

  /** [gid, position, participants] of group entries from `from` (0: past the commit position), and the last group applied. */
  groupPositions(from: number): Promise<{ groups: Array<[number, number, number[]]>; last_gid: number }> {
    return this.ask({ type: 'group_positions', request: 0, from }, 'group_positions', 'could not list its groups').then((reply) => ({
      groups: reply.groups,
      last_gid: reply.last_gid,
    }));
  }

  /** Drops this follower's unapplied log from `from` on; resolves with how many entries went. */
  cutTail(from: number): Promise<number> {
    return this.ask({ type: 'cut_tail', request: 0, from }, 'cut_tail', 'could not cut its log').then((reply) => reply.removed);
  }

  /** Copies this shard's last checkpoint into the empty directory `dir`. */
  snapshot(dir: string): Promise<void> {
    return this.ask({ type: 'snapshot', request: 0, dir }, 'snapshot', 'could not copy its checkpoint').then(() => undefined);
  }

  /** The log head once everything appended so far is durable. */
  durableHead(): Promise<LogHeadWire> {
    return this.ask({ type: 'durable_head', request: 0 }, 'durable_head', 'could not make its log durable').then((reply) => reply.head);
  }

  /** This follower's shard leads epoch `epoch` from now on; resolves with what the engine needs to route. */
  promote(epoch: number): Promise<{ last_gid: number; last_timestamp: bigint; filter: IdFilter; log_head: LogHeadWire }> {
    return this.ask({ type: 'promote', request: 0, epoch }, 'promoted', 'could not become leader').then((reply) => {
      this.role = 'leader';
      return { last_gid: reply.last_gid, last_timestamp: reply.last_timestamp, filter: IdFilter.from(reply.filter), log_head: reply.log_head };
    });
  }

  /** Where a replica whose log head is `head` agrees with this log, and this log's head. */
  agree(head: LogHeadWire): Promise<{ agree: number; head: number }> {
    return this.ask({ type: 'agree', request: 0, ...head }, 'agree', 'could not compare logs').then((reply) => ({ agree: reply.agree, head: reply.head }));
  }

  /** Every participant of group `gid` has read: it executes over these read sets. */
  groupExec(gid: number, read_sets: Uint8Array[]): void {
    if (this.failure !== null) return;
    const message: ToWorker = { type: 'group_exec', gid, read_sets };
    this.worker.postMessage(message);
  }

  groupAbort(gid: number): void {
    if (this.failure !== null) return;
    const message: ToWorker = { type: 'group_abort', gid };
    this.worker.postMessage(message);
  }

  /** This shard's logged groups after `after` (recovery). */
  groupEntriesAfter(after: number): Promise<GroupEntryWire[]> {
    return this.ask({ type: 'group_entries', request: 0, after }, 'group_entries', 'could not list its group entries').then((reply) => reply.entries);
  }

  /** Redoes groups this shard lacks, in order, and resolves once they are durable (recovery). */
  rollForward(entries: GroupEntryWire[]): Promise<void> {
    return this.ask({ type: 'roll_forward', request: 0, entries }, 'rolled', 'could not redo a cross-shard group').then(() => undefined);
  }

  /**
   * One control call to the worker: rejects if the shard has failed or closes before answering,
   * if the worker answers with an error (prefixed with `failing`), or with another kind of reply.
   */
  private ask<K extends ControlReply['type']>(
    message: Extract<ToWorker, { request: number }>,
    expect: K,
    failing: string,
  ): Promise<Extract<ControlReply, { type: K }>> {
    if (this.failure !== null) return Promise.reject(new Error(`shard ${this.index} ${failing}: ${this.failure}`));
    const request = this.next_control_request++;
    return new Promise<Extract<ControlReply, { type: K }>>((resolve, reject) => {
      this.control_waiting.set(request, {
        resolve: (reply) => {
          if (reply.error !== undefined) reject(new Error(`shard ${this.index} ${failing}: ${reply.error}`));
          else if (reply.type !== expect) reject(new Error(`shard ${this.index} answered ${reply.type} to a ${message.type} request`));
          else resolve(reply as Extract<ControlReply, { type: K }>);
        },
        reject: (reason) => reject(new Error(`shard ${this.index} ${failing}: ${reason}`)),
      });
      this.worker.postMessage({ ...message, request });
    });
  }

  /**
   * Fails the shard when its worker's event loop stops turning for `stall_ms`. A crash or an
   * out-of-memory exit is seen as an exit; a thread stuck in a loop, or in garbage collection just
   * under its heap limit, never exits and would otherwise leave every request to time out while the
   * process (and, replicated, its leadership) looks alive. Armed after recovery, which may
   * legitimately run long without turning.
   */
  private armWatchdog(): void {
    const stall_ms = this.options.stall_ms;
    if (stall_ms <= 0 || this.failure !== null) return;
    const check_ms = checkIntervalMs(stall_ms, HEARTBEAT_MS);
    const clock = new StallClock(stall_ms, check_ms, Atomics.load(this.heartbeat, 0), performance.now());
    this.watchdog = setInterval(() => {
      const still_ms = clock.observe(Atomics.load(this.heartbeat, 0), performance.now());
      if (still_ms >= 0) this.stalled(still_ms);
    }, check_ms);
    this.watchdog.unref();
  }

  private stalled(ms: number): void {
    this.fail(
      `shard ${this.index} stopped responding: its thread made no progress for ${Math.round(ms)} ms ` +
        '(a hang, or a heap at its limit: see --shard-heap-mb; --shard-stall-ms sets this wait)',
    );
    // Interrupts a loop; a thread stuck inside V8 may ignore it, which is why the engine's owner
    // (keel start) exits the process on a failure rather than wait for this.
    this.worker.terminate().catch(() => undefined);
  }

  private stopWatchdog(): void {
    if (this.watchdog === null) return;
    clearInterval(this.watchdog);
    this.watchdog = null;
  }

  private fail(message: string): void {
    this.stopWatchdog();
    if (this.failure !== null) return;
    this.failure = message;
    this.options.on_failed(this.index, message);
    for (const waiter of this.control_waiting.values()) waiter.reject(message);
    this.control_waiting.clear();
    for (const pending of this.waiting.values()) pending.resolve({ error: 'unavailable', message });
    this.waiting.clear();
    this.held.length = 0;
    this.events_in_flight = 0;
    this.closed_resolve?.();
  }

  /** The worker's own metrics, as prom-client JSON; empty if it does not answer within the timeout. */
  metrics(timeout_ms: number): Promise<MetricsJson> {
    if (this.failure !== null) return Promise.resolve([]);
    const request = this.next_metrics_request++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.metrics_waiting.delete(request);
        resolve([]);
      }, timeout_ms);
      this.metrics_waiting.set(request, (json) => {
        clearTimeout(timer);
        resolve(json);
      });
      const message: ToWorker = { type: 'metrics', request };
      this.worker.postMessage(message);
    });
  }

  /** Lets in-flight requests finish, checkpoints, and stops the worker. */
  async close(): Promise<void> {
    // The watchdog stays armed: the final checkpoint is written in steps (the thread turns), so a
    // close that stops turning is a hang, and failing the shard lets the close go on.
    if (this.failure === null) {
      this.flush();
      const closed = new Promise<void>((resolve) => (this.closed_resolve = resolve));
      const message: ToWorker = { type: 'close' };
      this.worker.postMessage(message);
      await closed;
    }
    // From here a request or control call is answered at once (the worker would never see it),
    // and the worker's exit is not taken for a failure.
    this.failure ??= `shard ${this.index} is closed`;
    this.stopWatchdog();
    await this.worker.terminate();
    // Replies a leader held for a commit that will not come now: their outcome is unknown.
    this.held.length = 0;
    for (const waiter of this.control_waiting.values()) waiter.reject('the shard closed');
    this.control_waiting.clear();
    for (const pending of this.waiting.values()) pending.resolve({ error: 'unavailable', message: `shard ${this.index} closed before the request was committed; its outcome is unknown` });
    this.waiting.clear();
    this.events_in_flight = 0;
  }
}

function mib(bytes: number): number {
  return Math.round(bytes / 2 ** 20);
}
