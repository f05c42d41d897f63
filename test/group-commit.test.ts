// Server-side group commit: consecutive create_transfers requests that reach a shard together are
// applied as one batch and one log entry, with exactly the results they would have had one by one.

import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine } from '../src/shard/engine.ts';
import { encodeAccountBatch, encodeTransferBatch } from '../src/storage/codec.ts';
import { CreateTransferStatus as TS, TransferFlags } from '../src/ledger/types.ts';
import { account, transfer } from './support/builders.ts';

const dir = mkdtempSync(join(tmpdir(), 'keel-group-'));
let engine = await Engine.start({ data_dir: dir, shards: 1, queue_events_max: 100_000 });
t.teardown(async () => {
  await engine.close();
  rmSync(dir, { recursive: true, force: true });
});

async function headPosition(): Promise<number> {
  const [json] = await engine.shardMetrics();
  const metric = json.find((m) => m.name === 'keel_shard_log_head_position');
  return Number(metric?.values[0]?.value ?? -1);
}

t.test('requests sent together share one log entry and keep their own results', async (t) => {
  const accounts = await engine.createAccounts(2, encodeAccountBatch([account(1n), account(2n)]));
  t.same('status' in accounts ? accounts.status : null, [0, 0]);
  t.equal(await headPosition(), 1);

  // Six requests in one event turn: they reach the worker in one message.
  const requests = [
    [transfer(10n, 1n, 2n, 5n)],
    [transfer(11n, 1n, 99n, 5n)], // credit account missing
    [transfer(12n, 1n, 2n, 7n), transfer(10n, 1n, 2n, 5n)], // the second repeats request 1's event
    [transfer(13n, 1n, 2n, 1n, { flags: TransferFlags.linked })], // leaves a chain open: never merged
    [transfer(14n, 2n, 1n, 3n)],
    [transfer(15n, 2n, 1n, 4n)],
  ];
  const results = await Promise.all(requests.map((events) => engine.createTransfers(events.length, encodeTransferBatch(events))));
  const statuses = results.map((r) => ('status' in r ? r.status : r));
  t.same(statuses, [
    [TS.created],
    [TS.credit_account_not_found],
    [TS.created, TS.exists],
    [TS.linked_event_chain_open],
    [TS.created],
    [TS.created],
  ]);
  // (request 3's `exists` carries request 1's timestamp; the others are new and increasing)
  const fresh = [results[0], results[2], results[4], results[5]].map((r) => ('timestamp' in r ? r.timestamp[0] : 0n));
  for (let i = 1; i < fresh.length; i++) t.ok(fresh[i] > fresh[i - 1], 'timestamps increase in request order');
  // Requests 1-3 form one entry, 4 stands alone, 5-6 form one: three entries after the accounts.
  t.equal(await headPosition(), 4, 'six requests, three log entries');

  const balances = await engine.lookupAccounts([1n, 2n]);
  const [a, b] = 'accounts' in balances ? balances.accounts : [];
  t.equal(a.debits_posted, 12n);
  t.equal(a.credits_posted, 7n);
  t.equal(b.credits_posted, 12n);
  t.equal(b.debits_posted, 7n);
});

t.test('a merged batch replays to the same state after a restart', async (t) => {
  await engine.close();
  engine = await Engine.start({ data_dir: dir, shards: 1, queue_events_max: 100_000 });
  const balances = await engine.lookupAccounts([1n, 2n]);
  const [a, b] = 'accounts' in balances ? balances.accounts : [];
  t.equal(a.debits_posted, 12n);
  t.equal(b.credits_posted, 12n);
  const ids = await engine.lookupTransfers([10n, 11n, 12n, 13n, 14n, 15n]);
  t.same('transfers' in ids ? ids.transfers.map((x) => x.id) : [], [10n, 12n, 14n, 15n]);
});
