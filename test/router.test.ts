// The router's `known` flags and the read that trusts them. A group's read skips looking up an id
// that no shard's filter held when the request was routed: such a lookup can only miss. These
// tests pin down when an id counts as known (so a resend or a reused id is always looked up) and
// that the read with the flags is byte-for-byte the read without them (recovery redoes reads
// without flags and compares the bytes).

import t from 'tap';
import { Ledger } from '../src/ledger/ledger.ts';
import { CreateTransferStatus } from '../src/ledger/types.ts';
import { GroupKind, READ_HORIZON_NS, buildReadSet } from '../src/shard/group.ts';
import { IdFilter } from '../src/shard/idfilter.ts';
import { shardOfAccount } from '../src/shard/partition.ts';
import { routeTransfers, type Route } from '../src/shard/router.ts';
import { encodeTransferBatch } from '../src/storage/codec.ts';
import { account, pending, post, transfer } from './support/builders.ts';

function idsOn(shard: number, n: number): bigint[] {
  const out: bigint[] = [];
  for (let id = 1n; out.length < n; id++) if (shardOfAccount(id, 2) === shard) out.push(id);
  return out;
}

const [A0, B0] = idsOn(0, 2);
const [A1, B1] = idsOn(1, 2);

function known(route: Route): number[] | null {
  if (route.kind !== 'group') throw new Error(`expected a group, got ${route.kind}`);
  return route.known === null ? null : [...route.known];
}

t.test('an id counts as known when any shard may hold it before the request is routed', async (t) => {
  const filters = [new IdFilter(), new IdFilter()];
  filters[1].addId(100n); // shard 1 holds 100 (neither of the accounts' shards of the first event)
  filters[0].addId(200n); // shard 0 holds 200 (one of the accounts' shards)
  const route = routeTransfers(
    encodeTransferBatch([
      transfer(100n, A0, B0, 1n), // held elsewhere: known, and shard 1 joins the group
      transfer(200n, A0, A1, 1n), // held by its debit account's shard: known
      transfer(300n, A0, A1, 1n), // new everywhere
      transfer(300n, B0, B1, 1n), // the same id again in this request: the first reserved it
      post(400n, 100n), // new id, but a shard joined for its pending id: counted as known (safe side)
      transfer(600n, A0, A1, 1n), // new everywhere
    ]),
    6,
    filters,
  );
  t.same(known(route), [1, 1, 0, 1, 1, 0]);
  t.same((route as { participants: number[] }).participants, [0, 1]);

  // Routed once, an id is known from then on, whatever accounts a resend names.
  const again = routeTransfers(encodeTransferBatch([transfer(300n, B0, B1, 1n), transfer(500n, A0, A1, 1n)]), 2, filters);
  t.same(known(again), [1, 0]);
});

t.test('requests that split over shards carry no flags; accounts never do', async (t) => {
  const filters = [new IdFilter(), new IdFilter()];
  const route = routeTransfers(encodeTransferBatch([transfer(1n, A0, B0, 1n), transfer(2n, A1, B1, 1n)]), 2, filters);
  t.equal(route.kind, 'split');
});

t.test('a read with the flags is the read without them; a wrong flag would change it', async (t) => {
  const ledger = new Ledger();
  let now = 1_000_000_000n;
  const tick = (): bigint => (now += 1_000_000n);
  ledger.createAccounts([A0, B0, A1, B1].map((id) => account(id)), tick());
  t.same(ledger.createTransfers([transfer(10n, A0, B0, 5n), pending(11n, A0, B0, 7n)], tick()).status, [0, 0]);
  // A transient failure burns id 12.
  t.equal(ledger.createTransfers([transfer(12n, A0, 999n, 5n)], tick()).status[0], CreateTransferStatus.credit_account_not_found);

  const events = [transfer(10n, A0, A1, 5n), transfer(12n, B0, B1, 1n), transfer(13n, A0, A1, 1n), post(14n, 11n)];
  const body = encodeTransferBatch(events);
  const horizon = ledger.last_timestamp + READ_HORIZON_NS;
  const full = buildReadSet(ledger, GroupKind.transfers, events.length, body, horizon, 8190).bytes;
  const hinted = buildReadSet(ledger, GroupKind.transfers, events.length, body, horizon, 8190, Uint8Array.from([1, 1, 0, 0])).bytes;
  t.same(Buffer.from(hinted), Buffer.from(full), 'skipping ids no shard holds reads the same bytes');
  t.ok(full.byteLength > 0);

  // The flags are trusted: claiming the held id 10 or the burned id 12 is new drops them from the read.
  const wrong_held = buildReadSet(ledger, GroupKind.transfers, events.length, body, horizon, 8190, Uint8Array.from([0, 1, 0, 0])).bytes;
  t.not(Buffer.from(wrong_held).equals(Buffer.from(full)), true, 'a held id marked new is not read');
  const wrong_burned = buildReadSet(ledger, GroupKind.transfers, events.length, body, horizon, 8190, Uint8Array.from([1, 0, 0, 0])).bytes;
  t.not(Buffer.from(wrong_burned).equals(Buffer.from(full)), true, 'a burned id marked new is not read');
});
