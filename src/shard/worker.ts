// The shard actor: a worker thread that owns one shard exclusively. It takes batches of requests
// from the main thread, applies them in arrival order (so each request sees the effects of the
// ones before it), and answers each one once its log entry is durable. Requests that arrive
// while LMDB commits join the next commit: group commit falls out of lmdb's event-turn batching.

import { parentPort, workerData } from 'node:worker_threads';
import { Shard } from './shard.ts';
import { ShardMetrics } from '../metrics/shard.ts';
import { watchHeap, type HeapState } from './memory.ts';
import { LogOp } from '../storage/log.ts';
import { EVENTS_PER_REQUEST_MAX, TransferFlags } from '../ledger/types.ts';
import { TRANSFER_BYTES, recordFlags } from '../storage/codec.ts';
import { IdFilter } from './idfilter.ts';
import { firstEventTimestamp } from './group.ts';
import {
  HEARTBEAT_MS,
  ShardOp,
  packTransferable,
  unpack,
  type FromWorker,
  type ShardReply,
  type ShardRequest,
  type ShardResult,
  type ShardWorkerData,
  type ToWorker,
  type GroupRequest,
  type GroupEntryWire,
  type CreateRequest,
  runsOf,
  SHIP_ENTRIES_MAX,
} from './messages.ts';

const port = parentPort;
if (port === null) throw new Error('workers/shard.mjs must run as a worker thread');
const data = workerData as ShardWorkerData;

// The engine's watchdog (ShardHandle) reads this counter: it stops only if this thread stops turning.
const heartbeat = new Int32Array(data.heartbeat);
setInterval(() => Atomics.add(heartbeat, 0, 1), HEARTBEAT_MS).unref();

function post(message: FromWorker, transfer?: ArrayBuffer[]): void {
  port!.postMessage(message, transfer ?? []);
}

let shard: Shard;
/** Replication role: a follower's shard may be promoted to leader in place. */
let role = data.role;
/** A leader's last position handed to the main thread for shipping. */
let shipped = 0;
let ship_scheduled = false;

function scheduleShip(): void {
  if (ship_scheduled) return;
  ship_scheduled = true;
  setImmediate(ship);
}

/** A leader hands its newly durable entries, as stored, to the main thread, which ships them. */
function ship(): void {
  ship_scheduled = false;
  const durable = shard.durable_position;
  if (durable <= shipped) return;
  const entries = shard.storedEntries(shipped + 1, Math.min(durable - shipped, SHIP_ENTRIES_MAX));
  const first = shipped + 1;
  shipped += entries.length;
  if (shipped < durable) scheduleShip();
  post({ type: 'entries', first, entries }, entries.map((bytes) => bytes.buffer as ArrayBuffer));
}
/** Measured once recovery is done (src/shard/memory.ts); zeros until then. */
let heap: HeapState = { live_bytes: 0, limit_bytes: 0, full_bytes: 0, full: false };
const metrics = new ShardMetrics(data.index, () => {
  const next = shard.ledger.nextExpiry();
  return {
    heap_live_bytes: heap.live_bytes,
    heap_limit_bytes: heap.limit_bytes,
    memory_full: heap.full,
    head_position: shard.head_position,
    durable_position: shard.durable_position,
    checkpointed_position: shard.checkpointed_position,
    accounts: shard.ledger.accounts.size,
    transfers: shard.ledger.transfers.size,
    pending_live: shard.ledger.pending_live,
    expired_total: shard.ledger.expired_total,
    next_expiry_s: next === 0n ? null : Number(next - BigInt(Date.now()) * 1_000_000n) / 1e9,
    last_commit_unix_s: shard.last_commit_unix_ms / 1000,
  };
});
try {
  shard = Shard.open({
    dir: data.dir,
    index: data.index,
    shard_count: data.shard_count,
    on_checkpoint: (seconds) => metrics.observeCheckpoint(seconds),
    on_due: (kind) => post({ type: 'due', kind }),
    feed_retention_ms: data.feed_retention_ms,
    log_write_delay_ms: faultDelay(process.env.KEEL_FAULT_LOG_WRITE_DELAY, data.index),
    epoch: data.epoch,
    checkpoint_entries: positiveEnv('KEEL_CHECKPOINT_ENTRIES'),
    log_retain_entries: positiveEnv('KEEL_LOG_RETAIN_ENTRIES'),
    replicated: data.role !== 'single',
    // A follower's pulses come in the leader's log.
    pulse: data.role !== 'follower',
    defer_tail: data.role === 'follower',
    on_durable: data.role === 'single' ? undefined : () => {
      if (role === 'leader') scheduleShip();
    },
    on_failed: (error) => post({ type: 'failed', message: `shard ${data.index} stopped serving: ${error.message}` }),
  });
  const filter = new IdFilter();
  for (const id of shard.ledger.transfers.keys()) filter.addId(id);
  for (const id of shard.ledger.transient) filter.addId(id);
  shipped = shard.durable_position;
  // Measured before `ready`, so that a shard that recovers into a full heap refuses writes from
  // its first request, not from its next collection.
  heap = watchHeap(data.queue_events_max, (state) => post({ type: 'memory', ...memoryOf(state) }));
  post({ type: 'ready', recovery: shard.recovery, last_gid: shard.last_gid, last_timestamp: shard.ledger.last_timestamp, filter: filter.toJSON(), log_head: shard.logHead(), memory: memoryOf(heap) });
} catch (error) {
  post({ type: 'failed', message: error instanceof Error ? error.message : String(error) });
  process.exit(1);
}

/**
 * Tuning (docs/operations.md): KEEL_CHECKPOINT_ENTRIES (a checkpoint after this many log entries,
 * default 4096) and KEEL_LOG_RETAIN_ENTRIES (entries kept behind the last checkpoint for followers
 * and the feed, default 100,000). Unset or not a positive integer: the default.
 */
function positiveEnv(name: string): number | undefined {
  const value = Number(process.env[name]);
  return Number.isSafeInteger(value) && value > 0 ? value : undefined;
}

/**
 * Fault injection for tests only: KEEL_FAULT_LOG_WRITE_DELAY="<shard>:<ms>" makes that shard's
 * log writes reach the disk <ms> late (a slow disk), so a test can kill the engine in that window.
 */
function faultDelay(spec: string | undefined, index: number): number {
  if (spec === undefined) return 0;
  const match = /^(\d+):(\d+)$/.exec(spec);
  return match !== null && Number(match[1]) === index ? Number(match[2]) : 0;
}

/**
 * Fault injection for tests only: KEEL_FAULT_SHARD_STALL="<shard>:<n>" stops that shard's thread for
 * good at its n-th create request, before applying it (a hang the engine's watchdog must catch).
 * Counted as requests are taken up: one held back by a checkpoint or group barrier counts again.
 */
const fault_stall_at = ((): number => {
  const match = /^(\d+):(\d+)$/.exec(process.env.KEEL_FAULT_SHARD_STALL ?? '');
  return match !== null && Number(match[1]) === data.index ? Number(match[2]) : 0;
})();
/** KEEL_FAULT_SHARD_STALL="<shard>:close": the same, when the shard is asked to close. */
const fault_stall_on_close = process.env.KEEL_FAULT_SHARD_STALL === `${data.index}:close`;
let creates_seen = 0;

function stallForever(): never {
  // Blocks the thread without spinning a core; nothing will ever notify it.
  for (;;) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
}

/** Fault injection for tests only: KEEL_FAULT_GROUP_READ="<shard>" makes that shard fail every group read. */
const fault_group_read = process.env.KEEL_FAULT_GROUP_READ !== undefined && Number(process.env.KEEL_FAULT_GROUP_READ) === data.index;

// Replies are gathered per event turn and sent in one message.
let outbox: ShardReply[] = [];
let flush_scheduled = false;

function reply(id: number, result: ShardResult): void {
  outbox.push([id, result]);
  if (!flush_scheduled) {
    flush_scheduled = true;
    setImmediate(flush);
  }
}

function flush(): void {
  flush_scheduled = false;
  if (outbox.length === 0) return;
  const buffer = packTransferable(outbox);
  outbox = [];
  // Replicated, the main thread holds these until `position` is committed.
  post({ type: 'replies', buffer, position: shard.durable_position }, [buffer]);
}

function failure(error: unknown): ShardResult {
  const message = error instanceof Error ? error.message : String(error);
  const code = (error as { code?: unknown }).code === 'unavailable' ? 'unavailable' : 'internal';
  return { error: code, message };
}

function handle(request: ShardRequest): void {
  const [id, op, payload] = request;
  try {
    switch (op) {
      case ShardOp.create_accounts:
      case ShardOp.create_transfers: {
        const accounts = op === ShardOp.create_accounts;
        const started = performance.now();
        shard.createEncoded(accounts ? LogOp.create_accounts : LogOp.create_transfers, payload.count, payload.body, runsOf(payload)).then(
          (result) => {
            metrics.observeBatch(accounts ? 'create_accounts' : 'create_transfers', result.status, (performance.now() - started) / 1000);
            reply(id, result);
          },
          (error: unknown) => reply(id, failure(error)),
        );
        return;
      }
      case ShardOp.lookup_accounts:
        void shard.lookupAccounts(payload.ids).then((accounts) => reply(id, { accounts }), (e: unknown) => reply(id, failure(e)));
        return;
      case ShardOp.lookup_transfers:
        void shard.lookupTransfers(payload.ids).then((transfers) => reply(id, { transfers }), (e: unknown) => reply(id, failure(e)));
        return;
      case ShardOp.get_account_transfers:
        void shard.getAccountTransfers(payload.filter).then((transfers) => reply(id, { transfers }), (e: unknown) => reply(id, failure(e)));
        return;
      case ShardOp.get_account_balances:
        void shard.getAccountBalances(payload.filter).then((balances) => reply(id, { balances }), (e: unknown) => reply(id, failure(e)));
        return;
      case ShardOp.query_accounts:
        void shard.queryAccounts(payload.filter).then((accounts) => reply(id, { accounts }), (e: unknown) => reply(id, failure(e)));
        return;
      case ShardOp.feed_read:
        reply(id, { feed: shard.feedRead(payload.from, payload.limit, payload.ledgers) });
        return;
      case ShardOp.pulse:
        shard.pulseAt(payload.timestamp).then(
          () => reply(id, { status: [], timestamp: [] }),
          (error: unknown) => reply(id, failure(error)),
        );
        return;
      case ShardOp.group:
        reply(id, { error: 'internal', message: 'a group reached the plain request path' });
        return;
      case ShardOp.query_transfers:
        void shard.queryTransfers(payload.filter).then((transfers) => reply(id, { transfers }), (e: unknown) => reply(id, failure(e)));
        return;
    }
  } catch (error) {
    reply(id, failure(error));
  }
}

// Server-side group commit of small requests: consecutive create_transfers requests of one message
// are applied as one ledger batch and one log entry, and the results are split back per request.
// It is exactly what applying them one after another at the same instant would give, provided no
// request leaves a linked chain open (its last event is not linked) and each request's import
// mode (taken from its first event) is the run's. Many small requests then cost one log append.
type CreateTransfers = [number, typeof ShardOp.create_transfers, CreateRequest];

function flagsOf(body: Uint8Array, index: number): number {
  return recordFlags(body, index, TRANSFER_BYTES);
}

function mergeable(request: ShardRequest): request is CreateTransfers {
  if (request[1] !== ShardOp.create_transfers) return false;
  const { count, body } = request[2];
  if (count <= 0 || body.byteLength !== count * TRANSFER_BYTES) return false; // handled alone: its own error
  return (flagsOf(body, count - 1) & TransferFlags.linked) === 0;
}

function handleRun(run: CreateTransfers[]): void {
  if (run.length === 1) {
    handle(run[0]);
    return;
  }
  let count = 0;
  for (const request of run) count += request[2].count;
  const started = performance.now();
  let result: Promise<{ status: number[]; timestamp: bigint[] }>;
  try {
    const body = new Uint8Array(count * TRANSFER_BYTES);
    const runs: Array<[bigint, number]> = [];
    let offset = 0;
    for (const request of run) {
      body.set(request[2].body, offset);
      offset += request[2].body.byteLength;
      for (const stamp of runsOf(request[2])) {
        // Adjacent ranges (requests reserved back to back) join into one run.
        const last = runs[runs.length - 1];
        if (last !== undefined && last[0] + BigInt(stamp[1]) === stamp[0]) last[0] = stamp[0], (last[1] += stamp[1]);
        else runs.push([stamp[0], stamp[1]]);
      }
    }
    result = shard.createEncoded(LogOp.create_transfers, count, body, runs);
  } catch (error) {
    for (const request of run) reply(request[0], failure(error));
    return;
  }
  result.then(
    (combined) => {
      metrics.observeBatch('create_transfers', combined.status, (performance.now() - started) / 1000);
      let at = 0;
      for (const request of run) {
        const n = request[2].count;
        reply(request[0], { status: combined.status.slice(at, at + n), timestamp: combined.timestamp.slice(at, at + n) });
        at += n;
      }
    },
    (error: unknown) => {
      for (const request of run) reply(request[0], failure(error));
    },
  );
}

// A cross-shard group stops the shard: from the group's read until its execution nothing else
// may run here, so requests arriving meanwhile wait in `backlog`, in order.
let barrier: { id: number; request: GroupRequest; read_at: number } | null = null;
let backlog: ShardRequest[] = [];
/** Groups the engine gave up on (a participant failed) that may still be ahead in the backlog. */
const aborted = new Set<number>();

function startGroup(id: number, request: GroupRequest): void {
  if (aborted.delete(request.gid)) {
    reply(id, { error: 'unavailable', message: `cross-shard group ${request.gid} was abandoned: a participant stopped` });
    return;
  }
  let read_set: Uint8Array;
  try {
    if (fault_group_read) throw new Error('fault injected: this shard cannot read its groups (KEEL_FAULT_GROUP_READ)');
    read_set = shard.groupRead(request.kind, request.count, request.body, firstEventTimestamp(request.timestamp, request.count), request.known);
  } catch (error) {
    // Could not even read: the shard is not serving. The group's other participants wait for a
    // read that never comes; the engine fails the whole group when this reply arrives.
    reply(id, failure(error));
    return;
  }
  barrier = { id, request, read_at: performance.now() };
  // Hand the read over only once everything it reflects is durable here (see Shard.whenDurable).
  shard.whenDurable().then(
    () => {
      if (barrier === null || barrier.request.gid !== request.gid) return;
      post({ type: 'group_read', gid: request.gid, read_set }, [read_set.buffer as ArrayBuffer]);
    },
    (error: unknown) => {
      if (barrier === null || barrier.request.gid !== request.gid) return;
      barrier = null;
      reply(id, failure(error));
    },
  );
}

function abortGroup(gid: number): void {
  if (barrier !== null && barrier.request.gid === gid) {
    const { id } = barrier;
    barrier = null;
    shard.groupRelease();
    reply(id, { error: 'unavailable', message: `cross-shard group ${gid} was abandoned: a participant stopped` });
    drainBacklog();
    return;
  }
  aborted.add(gid);
}

function execGroup(gid: number, read_sets: Uint8Array[]): void {
  const current = barrier;
  if (current === null || current.request.gid !== gid) return; // a late or duplicate message
  barrier = null;
  const { id, request } = current;
  const timestamp = request.timestamp;
  const started = performance.now();
  metrics.observeGroup((started - current.read_at) / 1000);
  try {
    shard
      .groupApply({ gid, kind: request.kind, participants: request.participants, count: request.count, body: request.body, read_sets }, timestamp)
      .then(
        (result) => {
          metrics.observeBatch(request.kind === 1 ? 'create_accounts' : 'create_transfers', result.status, (performance.now() - started) / 1000);
          reply(id, result);
        },
        (error: unknown) => reply(id, failure(error)),
      );
  } catch (error) {
    reply(id, failure(error));
  }
  drainBacklog();
}

let drain_scheduled = false;

function scheduleDrain(): void {
  if (drain_scheduled) return;
  drain_scheduled = true;
  setImmediate(drainBacklog);
}

function drainBacklog(): void {
  drain_scheduled = false;
  if (barrier !== null || shard.checkpoint_wanted || backlog.length === 0) return;
  const waiting = backlog;
  backlog = [];
  handleAll(waiting);
}

function handleAll(requests: ShardRequest[]): void {
  let run: CreateTransfers[] = [];
  let run_events = 0;
  let run_imported = -1;
  const flush = (): void => {
    if (run.length > 0) handleRun(run);
    run = [];
    run_events = 0;
    run_imported = -1;
  };
  for (let k = 0; k < requests.length; k++) {
    const request = requests[k];
    if (fault_stall_at > 0 && (request[1] === ShardOp.create_transfers || request[1] === ShardOp.create_accounts) && ++creates_seen === fault_stall_at) {
      stallForever();
    }
    if (barrier !== null || shard.checkpoint_wanted) {
      backlog.push(...requests.slice(k));
      break;
    }
    if (request[1] === ShardOp.group) {
      flush();
      startGroup(request[0], request[2]);
      continue;
    }
    if (!mergeable(request)) {
      flush();
      handle(request);
      continue;
    }
    const { count, body } = request[2];
    const imported = flagsOf(body, 0) & TransferFlags.imported;
    if (run.length > 0 && (imported !== run_imported || run_events + count > EVENTS_PER_REQUEST_MAX)) flush();
    run.push(request);
    run_events += count;
    run_imported = imported;
  }
  flush();
}

function rollForward(request: number, entries: GroupEntryWire[]): void {
  let last: Promise<unknown> = Promise.resolve();
  try {
    for (const [, timestamp, body] of entries) last = shard.groupRollForward(body, timestamp);
  } catch (error) {
    post({ type: 'rolled', request, error: error instanceof Error ? error.message : String(error) });
    return;
  }
  last.then(
    () => post({ type: 'rolled', request }),
    (error: unknown) => post({ type: 'rolled', request, error: error instanceof Error ? error.message : String(error) }),
  );
}

/**
 * A follower's shard leads from here (epoch `epoch`). Answered once everything in its log is
 * durable here: the leader counts its own log as durable from that head, and ships what follows.
 */
function promote(request: number, epoch: number): void {
  const failed = (error: unknown): void =>
    post({
      type: 'promoted',
      request,
      last_gid: 0,
      last_timestamp: 0n,
      filter: new IdFilter().toJSON(),
      log_head: { position: 0, epoch: 0, checksum: 0 },
      error: error instanceof Error ? error.message : String(error),
    });
  try {
    shard.promote(epoch);
    role = 'leader';
    // Everything already in the log reaches followers from storage; only new entries are shipped
    // from here (the leader counts its log as durable from this head once promoted answers).
    shipped = shard.head_position;
  } catch (error) {
    failed(error);
    return;
  }
  shard.whenDurable().then(() => {
    const filter = new IdFilter();
    for (const id of shard.ledger.transfers.keys()) filter.addId(id);
    for (const id of shard.ledger.transient) filter.addId(id);
    post({ type: 'promoted', request, last_gid: shard.last_gid, last_timestamp: shard.ledger.last_timestamp, filter: filter.toJSON(), log_head: shard.logHead() });
  }, failed);
}

/** A follower appends the leader's entries and acknowledges once they are durable. */
function replicaAppend(entries: Uint8Array[], tag: number): void {
  let last: Promise<number> | null = null;
  for (const bytes of entries) {
    try {
      last = shard.appendReplica(bytes);
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      post({ type: 'replica_refused', code: typeof code === 'string' ? code : 'internal', message: error instanceof Error ? error.message : String(error), tag });
      break;
    }
  }
  last?.then(
    (position) => post({ type: 'replica_acked', position, tag }),
    (error: unknown) => post({ type: 'failed', message: `shard ${data.index} could not store replicated entries: ${error instanceof Error ? error.message : String(error)}` }),
  );
}

port.on('message', (message: ToWorker) => {
  if (message.type === 'requests') {
    // Messages that queued up while this thread was busy are merged into one run (see handleRun):
    // they wait in the backlog, behind anything older, until the end of this turn.
    const requests = unpack<ShardRequest[]>(message.buffer);
    for (let k = 0; k < requests.length; k++) backlog.push(requests[k]);
    scheduleDrain();
    return;
  }
  // Anything else but a commit position sees every request that arrived before it applied (close,
  // above all, finishes them), as when requests were applied on arrival. A commit position (one per
  // replica acknowledgement on a leader) only schedules the drain, so that requests keep merging.
  if (message.type !== 'commit' && drain_scheduled) drainBacklog();
  if (message.type === 'commit') {
    try {
      shard.setCommitted(message.position);
    } catch (error) {
      post({ type: 'failed', message: `shard ${data.index} could not apply committed entries: ${error instanceof Error ? error.message : String(error)}` });
      return;
    }
    // A replicated checkpoint held new requests until everything applied was committed.
    if (backlog.length > 0) scheduleDrain();
  } else if (message.type === 'replica_append') {
    replicaAppend(message.entries, message.tag);
  } else if (message.type === 'group_positions') {
    try {
      const from = message.from > 0 ? message.from : shard.committed + 1;
      post({ type: 'group_positions', request: message.request, groups: shard.groupPositions(from), last_gid: shard.last_gid });
    } catch (error) {
      post({ type: 'group_positions', request: message.request, groups: [], last_gid: 0, error: error instanceof Error ? error.message : String(error) });
    }
  } else if (message.type === 'cut_tail') {
    const request = message.request;
    let cut: Promise<number>;
    try {
      cut = shard.cutTail(message.from);
    } catch (error) {
      cut = Promise.reject(error);
    }
    cut.then(
      (removed) => post({ type: 'cut_tail', request, removed }),
      (error: unknown) => post({ type: 'cut_tail', request, removed: 0, error: error instanceof Error ? error.message : String(error) }),
    );
  } else if (message.type === 'snapshot') {
    const request = message.request;
    let copied: Promise<void>;
    try {
      copied = shard.snapshot(message.dir);
    } catch (error) {
      copied = Promise.reject(error);
    }
    copied.then(
      () => post({ type: 'snapshot', request }),
      (error: unknown) => post({ type: 'snapshot', request, error: error instanceof Error ? error.message : String(error) }),
    );
  } else if (message.type === 'durable_head') {
    const request = message.request;
    shard.whenDurable().then(
      () => post({ type: 'durable_head', request, head: shard.logHead() }),
      (error: unknown) => post({ type: 'durable_head', request, head: { position: 0, epoch: 0, checksum: 0 }, error: error instanceof Error ? error.message : String(error) }),
    );
  } else if (message.type === 'stored') {
    try {
      const entries = shard.storedEntries(message.from, message.limit);
      post({ type: 'stored', request: message.request, entries }, entries.map((bytes) => bytes.buffer as ArrayBuffer));
    } catch (error) {
      post({ type: 'stored', request: message.request, entries: [], error: error instanceof Error ? error.message : String(error) });
    }
  } else if (message.type === 'promote') {
    promote(message.request, message.epoch);
  } else if (message.type === 'agree') {
    try {
      // The replica agrees up to the end of its last epoch here (never past its own head); at
      // its head, the checksums must match too, else one step back and the replica asks again.
      let agree = Math.min(message.position, shard.lastPositionOfEpoch(message.epoch));
      const checksum = shard.checksumAt(agree);
      if (checksum === null) agree = -1; // pruned below: only a rebuild can help this replica
      else if (agree === message.position && checksum !== message.checksum) agree = Math.max(0, agree - 1);
      post({ type: 'agree', request: message.request, agree, head: shard.head_position });
    } catch (error) {
      post({ type: 'agree', request: message.request, agree: 0, head: 0, error: error instanceof Error ? error.message : String(error) });
    }
  } else if (message.type === 'group_exec') {
    execGroup(message.gid, message.read_sets);
  } else if (message.type === 'group_abort') {
    abortGroup(message.gid);
  } else if (message.type === 'group_entries') {
    try {
      post({ type: 'group_entries', request: message.request, entries: shard.groupEntriesAfter(message.after) });
    } catch (error) {
      post({ type: 'group_entries', request: message.request, entries: [], error: error instanceof Error ? error.message : String(error) });
    }
  } else if (message.type === 'roll_forward') {
    rollForward(message.request, message.entries);
  } else if (message.type === 'metrics') {
    const request = message.request;
    metrics.json().then(
      (json) => post({ type: 'metrics', request, json }),
      (error: unknown) => post({ type: 'metrics', request, json: [], error: error instanceof Error ? error.message : String(error) }),
    );
  } else if (message.type === 'close') {
    if (fault_stall_on_close) stallForever();
    void shard
      .close()
      .then(() => {
        flush();
        post({ type: 'closed' });
      })
      .catch((error: unknown) => post({ type: 'failed', message: error instanceof Error ? error.message : String(error) }));
  }
});

function memoryOf(state: HeapState): { full: boolean; live_bytes: number; limit_bytes: number } {
  return { full: state.full, live_bytes: state.live_bytes, limit_bytes: state.limit_bytes };
}
