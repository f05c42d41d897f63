// The channel client end to end: the real gateway and engine on loopback.

import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine } from '../src/shard/engine.ts';
import { startGateway } from '../src/gateway/server.ts';
import { TokenStore } from '../src/gateway/tokens.ts';
import {
  AccountFilterFlags,
  AccountFlags,
  CreateAccountStatus,
  CreateTransferStatus as TS,
  KeelError,
  TransferFlags,
  U64_MAX,
  connect,
} from '../src/client/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'keel-client-'));
const engine = await Engine.start({ data_dir: dir, shards: 1, queue_events_max: 1_000_000 });
const opened = TokenStore.open(dir);
if (!opened.ok) throw new Error(opened.message);
const created = opened.value.create('channel', ['ledger:read', 'ledger:write']);
if (!created.ok) throw new Error(created.message);
const reader = opened.value.create('reader', ['ledger:read']);
if (!reader.ok) throw new Error(reader.message);
const gateway = await startGateway({ engine, tokens: opened.value, port: 0 });
const client = await connect({ url: gateway.address.url, token: created.value.token, client_name: 'client.gateway.test' });

t.teardown(async () => {
  await client.close();
  await gateway.close();
  await engine.close();
  rmSync(dir, { recursive: true, force: true });
});

t.test('hello', async (t) => {
  t.equal(client.limits.events_per_request, 8190);
  t.ok(client.limits.inflight_per_connection > 0);
  t.equal(typeof client.center, 'string');
});

t.test('accounts, batched transfers, two-phase, queries', async (t) => {
  const acc = await client.createAccounts([
    { id: 1n, ledger: 1, code: 1, flags: AccountFlags.history },
    { id: 2n, ledger: 1, code: 1, flags: AccountFlags.debits_must_not_exceed_credits | AccountFlags.history },
    { id: U64_MAX - 1n, ledger: 1, code: 1 },
  ]);
  t.same(acc.status, [CreateAccountStatus.created, CreateAccountStatus.created, CreateAccountStatus.created]);

  const [a, b, c] = await Promise.all([
    client.createTransfers([{ id: 10n, debit_account_id: 1n, credit_account_id: 2n, amount: 100n, ledger: 1, code: 1 }]),
    client.createTransfers([
      { id: 11n, debit_account_id: 2n, credit_account_id: 1n, amount: 60n, ledger: 1, code: 1, flags: TransferFlags.linked },
      { id: 12n, debit_account_id: 2n, credit_account_id: 1n, amount: 60n, ledger: 1, code: 1 },
    ]),
    client.createTransfers([{ id: 13n, debit_account_id: 1n, credit_account_id: U64_MAX - 1n, amount: 2n ** 63n, ledger: 1, code: 1 }]),
  ]);
  t.same(a.status, [TS.created]);
  t.same(b.status, [TS.linked_event_failed, TS.exceeds_credits], 'the second leg overdraws: the chain fails whole');
  t.same(c.status, [TS.created]);
  t.ok(a.timestamp[0] > 0n);
  t.same(b.timestamp, [0n, 0n]);

  const p = await client.createTransfers([
    { id: 20n, debit_account_id: 1n, credit_account_id: 2n, amount: 50n, ledger: 1, code: 1, flags: TransferFlags.pending, timeout: 3600 },
  ]);
  t.same(p.status, [TS.created]);
  const post = await client.createTransfers([
    { id: 21n, pending_id: 20n, debit_account_id: 0n, credit_account_id: 0n, amount: U64_MAX, ledger: 0, code: 0, flags: TransferFlags.post_pending_transfer },
  ]);
  t.same(post.status, [TS.created]);
  const again = await client.createTransfers([{ id: 10n, debit_account_id: 1n, credit_account_id: 2n, amount: 100n, ledger: 1, code: 1 }]);
  t.same(again.status, [TS.exists]);
  t.equal(again.timestamp[0], a.timestamp[0]);

  const [one, two, big] = await client.lookupAccounts([1n, 2n, U64_MAX - 1n, 999n]);
  t.equal(one.debits_posted, 150n + 2n ** 63n);
  t.equal(two.credits_posted, 150n);
  t.equal(big.credits_posted, 2n ** 63n);
  const transfers = await client.lookupTransfers([21n, 13n]);
  t.same(transfers.map((x) => x.id), [21n, 13n]);
  t.equal(transfers[0].amount, 50n);
  t.equal(transfers[1].amount, 2n ** 63n);

  const history = await client.getAccountTransfers({ account_id: 1n, limit: 10, flags: AccountFilterFlags.debits | AccountFilterFlags.credits });
  t.same(history.map((x) => x.id), [10n, 13n, 20n, 21n]);
  const balances = await client.getAccountBalances({ account_id: 2n, limit: 10, flags: AccountFilterFlags.credits });
  t.ok(balances.length > 0);
  const queried = await client.queryTransfers({ ledger: 1, limit: 100 });
  t.ok(queried.length >= 4);
  const accounts = await client.queryAccounts({ ledger: 1, limit: 100 });
  t.equal(accounts.length, 3);
});

t.test('server errors arrive as KeelError codes', async (t) => {
  const ro = await connect({ url: gateway.address.url, token: reader.value.token });
  t.teardown(() => ro.close());
  const e = await ro.createAccounts([{ id: 5n, ledger: 1, code: 1 }]).catch((x: unknown) => x);
  t.ok(e instanceof KeelError);
  t.equal((e as KeelError).code, 'forbidden');
  const bad = await connect({ url: gateway.address.url, token: 'keel_nope' }).catch((x: unknown) => x);
  t.equal((bad as KeelError).code, 'unauthorized');
  const filter = await client.getAccountTransfers({ account_id: 1n, limit: 0 }).catch((x: unknown) => x);
  t.equal((filter as KeelError).code, 'invalid_request');
  t.equal((filter as KeelError).field, 'filter.limit');
});

t.test('many concurrent calls', async (t) => {
  await client.createAccounts([{ id: 100n, ledger: 2, code: 1 }, { id: 101n, ledger: 2, code: 1 }]);
  const calls = Array.from({ length: 5000 }, (_, i) =>
    client.createTransfers([{ id: 1000n + BigInt(i), debit_account_id: 100n, credit_account_id: 101n, amount: 1n, ledger: 2, code: 1 }]),
  );
  const results = await Promise.all(calls);
  t.ok(results.every((r) => r.status[0] === TS.created));
  const [acc] = await client.lookupAccounts([100n]);
  t.equal(acc.debits_posted, 5000n);
});

t.test('alternates: a center that does not answer is passed over, at connect and on reconnect', async (t) => {
  // A port nobody listens on: connecting there fails at once.
  const dead = 'ws://127.0.0.1:9/v1';
  const other = await connect({ url: dead, alternates: [gateway.address.url], token: created.value.token, reconnect: false });
  t.teardown(() => other.close());
  t.equal(other.state, 'open', 'connected to the first center that answered');
  t.ok((await other.lookupAccounts([1n])).length >= 0, 'and it serves');
  await t.rejects(connect({ url: dead, alternates: [dead], token: created.value.token, reconnect: false }), { code: 'connection_failed' }, 'none answers: connection_failed');
  await t.rejects(connect({ url: gateway.address.url, alternates: [dead], token: 'keel_wrong', reconnect: false }), { code: 'unauthorized' }, 'no center accepts the token: unauthorized');
  // Tokens live per center: one that does not know this token is passed over for one that does.
  const elsewhere = mkdtempSync(join(tmpdir(), 'keel-client-other-'));
  t.teardown(() => rmSync(elsewhere, { recursive: true, force: true }));
  const other_tokens = TokenStore.open(elsewhere);
  if (!other_tokens.ok) throw new Error(other_tokens.message);
  other_tokens.value.create('someone-else', ['ledger:read']);
  const stranger = await startGateway({ engine, tokens: other_tokens.value, port: 0 });
  t.teardown(() => stranger.close());
  const passed = await connect({ url: stranger.address.url, alternates: [gateway.address.url], token: created.value.token, reconnect: false });
  t.equal(passed.state, 'open', 'a center that refuses the token is passed over');
  await passed.close();
});
