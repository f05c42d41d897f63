// The shard actor: a worker thread that owns one shard exclusively. It takes batches of requests
// from the main thread, applies them in arrival order (so each request sees the effects of the
// ones before it), and answers each one once its log entry is durable. Requests that arrive
// while LMDB commits join the next commit: group commit falls out of lmdb's event-turn batching.

import { parentPort, workerData } from 'node:worker_threads';
import { Shard } from './shard.ts';
import { ShardMetrics } from '../metrics/shard.ts';
import { LogOp } from '../storage/log.ts';
import {
  ShardOp,
  packTransferable,
  unpack,
  type FromWorker,
  type ShardReply,
  type ShardRequest,
  type ShardResult,
  type ShardWorkerData,
  type ToWorker,
} from './messages.ts';

const port = parentPort;
if (port === null) throw new Error('workers/shard.mjs must run as a worker thread');
const data = workerData as ShardWorkerData;

function post(message: FromWorker, transfer?: ArrayBuffer[]): void {
  port!.postMessage(message, transfer ?? []);
}

let shard: Shard;
const metrics = new ShardMetrics(data.index, () => {
  const next = shard.ledger.nextExpiry();
  return {
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
  shard = Shard.open({ dir: data.dir, on_checkpoint: (seconds) => metrics.observeCheckpoint(seconds) });
  post({ type: 'ready', recovery: shard.recovery });
} catch (error) {
  post({ type: 'failed', message: error instanceof Error ? error.message : String(error) });
  process.exit(1);
}

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
  post({ type: 'replies', buffer }, [buffer]);
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
        shard.createEncoded(accounts ? LogOp.create_accounts : LogOp.create_transfers, payload.count, payload.body).then(
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
      case ShardOp.query_transfers:
        void shard.queryTransfers(payload.filter).then((transfers) => reply(id, { transfers }), (e: unknown) => reply(id, failure(e)));
        return;
    }
  } catch (error) {
    reply(id, failure(error));
  }
}

port.on('message', (message: ToWorker) => {
  if (message.type === 'requests') {
    for (const request of unpack<ShardRequest[]>(message.buffer)) handle(request);
  } else if (message.type === 'metrics') {
    const request = message.request;
    metrics.json().then(
      (json) => post({ type: 'metrics', request, json }),
      (error: unknown) => post({ type: 'metrics', request, json: [], error: error instanceof Error ? error.message : String(error) }),
    );
  } else if (message.type === 'close') {
    void shard
      .close()
      .then(() => {
        flush();
        post({ type: 'closed' });
      })
      .catch((error: unknown) => post({ type: 'failed', message: error instanceof Error ? error.message : String(error) }));
  }
});
