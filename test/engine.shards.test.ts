// The engine with several shards, driven in-process: cross-shard transfers, id uniqueness across
// shards, linked chains that span shards, two-phase transfers and expiry across shards, request
// order, restart, and recovery of a cross-shard group that only some shards logged before a crash.
// After every scenario the books balance per ledger across all shards.

import t from 'tap';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { open } from 'lmdb';
import { Engine } from '../src/shard/engine.ts';
import { shardOfAccount } from '../src/shard/partition.ts';
import { encodeAccountBatch, encodeTransferBatch } from '../src/storage/codec.ts';
import {
  CREATE_TRANSFER_STATUS_NAMES,
  CREATE_ACCOUNT_STATUS_NAMES,
  type Account,
  type AccountInput,
  type Transfer,
  type TransferInput,
  TransferFlags,
} from '../src/ledger/types.ts';
import { account, accountFilter, pending, post, queryFilter, transfer, voidPending } from './support/builders.ts';
import { tempDir } from './support/shard-helpers.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** The first `n` account ids (from `from`) that live on `shard` of `shards`. */
function idsOn(shard: number, shards: number, n: number, from = 1n): bigint[] {
  const out: bigint[] = [];
  for (let id = from; out.length < n; id++) if (shardOfAccount(id, shards) === shard) out.push(id);
  return out;
}

async function start(dir: string, shards = 2): Promise<Engine> {
  return Engine.start({ data_dir: dir, shards, queue_events_max: 100_000 });
}

async function createAccounts(engine: Engine, accounts: AccountInput[]): Promise<string[]> {
  const result = await engine.createAccounts(accounts.length, encodeAccountBatch(accounts));
  if (!('status' in result)) throw new Error(`create_accounts failed: ${JSON.stringify(result)}`);
  return result.status.map((s) => CREATE_ACCOUNT_STATUS_NAMES[s]);
}

async function createTransfers(engine: Engine, transfers: TransferInput[]): Promise<{ names: string[]; timestamps: bigint[] }> {
  const result = await engine.createTransfers(transfers.length, encodeTransferBatch(transfers));
  if (!('status' in result)) throw new Error(`create_transfers failed: ${JSON.stringify(result)}`);
  return { names: result.status.map((s) => CREATE_TRANSFER_STATUS_NAMES[s]), timestamps: result.timestamp };
}

async function balances(engine: Engine, ids: bigint[]): Promise<Map<bigint, Account>> {
  const result = await engine.lookupAccounts(ids);
  if (!('accounts' in result)) throw new Error(JSON.stringify(result));
  return new Map(result.accounts.map((a) => [a.id, a]));
}

async function allTransfers(engine: Engine): Promise<Transfer[]> {
  const result = await engine.queryTransfers(queryFilter({ limit: 8190 }));
  if (!('transfers' in result)) throw new Error(JSON.stringify(result));
  return result.transfers;
}

/** Per ledger, over every account of every shard: debits equal credits, posted and pending. */
async function assertBooksBalance(t: Tap, engine: Engine, label: string): Promise<void> {
  const result = await engine.queryAccounts(queryFilter({ limit: 8190 }));
  if (!('accounts' in result)) throw new Error(JSON.stringify(result));
  const sums = new Map<number, [bigint, bigint, bigint, bigint]>();
  for (const a of result.accounts) {
    const s = sums.get(a.ledger) ?? [0n, 0n, 0n, 0n];
    s[0] += a.debits_posted;
    s[1] += a.credits_posted;
    s[2] += a.debits_pending;
    s[3] += a.credits_pending;
    sums.set(a.ledger, s);
  }
  for (const [ledger, [dp, cp, dq, cq]] of sums) {
    t.equal(dp, cp, `${label}: ledger ${ledger} posted debits equal credits`);
    t.equal(dq, cq, `${label}: ledger ${ledger} pending debits equal credits`);
  }
}

type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

/** A 2-shard engine on a temp directory, closed and removed when the test ends. */
async function fresh(t: Tap): Promise<Engine> {
  const { dir, cleanup } = tempDir('keel-shards-');
  const engine = await start(dir);
  t.teardown(async () => {
    await engine.close();
    cleanup();
  });
  return engine;
}

const [A0, B0, C0] = idsOn(0, 2, 3);
const [A1, B1, C1] = idsOn(1, 2, 3);
const ALL = [A0, B0, C0, A1, B1, C1];

t.test('cross-shard transfers apply on both shards at once; queries see each transfer once', async (t) => {
  const engine = await fresh(t);
  t.same(await createAccounts(engine, ALL.map((id) => account(id))), ALL.map(() => 'created'));

  // One request mixing cross-shard and single-shard events runs whole as a group.
  const mixed = await createTransfers(engine, [transfer(101n, A0, A1, 100n), transfer(102n, A1, B1, 30n), transfer(103n, B0, A0, 7n)]);
  t.same(mixed.names, ['created', 'created', 'created']);
  t.ok(engine.group_stats.groups >= 1, 'it took the cross-shard path');
  let b = await balances(engine, ALL);
  t.equal(b.get(A0)!.debits_posted, 100n);
  t.equal(b.get(A0)!.credits_posted, 7n);
  t.equal(b.get(A1)!.credits_posted, 100n);
  t.equal(b.get(A1)!.debits_posted, 30n);
  t.equal(b.get(B1)!.credits_posted, 30n);

  // A request whose events each stay on one shard splits, and keeps request order in timestamps.
  const groups_before = engine.group_stats.groups;
  const split = await createTransfers(engine, [transfer(201n, A0, B0, 1n), transfer(202n, A1, B1, 2n), transfer(203n, B0, C0, 3n), transfer(204n, C1, A1, 4n)]);
  t.same(split.names, ['created', 'created', 'created', 'created']);
  t.equal(engine.group_stats.groups, groups_before, 'no group for a request whose events stay on their shards');
  for (let i = 1; i < 4; i++) t.equal(split.timestamps[i], split.timestamps[i - 1] + 1n, `event ${i} follows event ${i - 1} by one nanosecond`);

  // Each shard indexes its side: the credit account's shard finds the cross-shard transfer.
  const a1 = await engine.getAccountTransfers(accountFilter(A1));
  t.ok('transfers' in a1 && a1.transfers.map((x) => x.id).includes(101n), 'get_account_transfers of the credit side finds it');
  const lookup = await engine.lookupTransfers([101n, 999n, 202n]);
  t.same('transfers' in lookup ? lookup.transfers.map((x) => x.id) : lookup, [101n, 202n], 'lookup_transfers across shards, in request order');
  const all = await allTransfers(engine);
  t.same(all.map((x) => x.id), [101n, 102n, 103n, 201n, 202n, 203n, 204n], 'query_transfers: each once, in timestamp order');
  const reversed = await engine.queryTransfers(queryFilter({ limit: 3, flags: 1 << 0 }));
  t.same('transfers' in reversed ? reversed.transfers.map((x) => x.id) : reversed, [204n, 203n, 202n], 'reversed with a limit');
  b = await balances(engine, ALL);
  t.equal(b.get(A1)!.credits_posted, 104n);
  await assertBooksBalance(t, engine, 'after cross-shard transfers');
});

t.test('ids are unique across shards', async (t) => {
  const engine = await fresh(t);
  await createAccounts(engine, ALL.map((id) => account(id)));
  t.same((await createTransfers(engine, [transfer(1n, A0, B0, 5n)])).names, ['created'], 'created on shard 0 alone');
  const resent = await createTransfers(engine, [transfer(1n, A1, B1, 5n), transfer(1n, A0, B0, 5n), transfer(1n, A0, A1, 5n)]);
  t.same(
    resent.names,
    ['exists_with_different_debit_account_id', 'exists', 'exists_with_different_credit_account_id'],
    'a resend reaches the shard that holds the id, whatever its accounts',
  );
  t.equal(resent.timestamps[1], (await allTransfers(engine))[0].timestamp, 'exists answers the original timestamp');
  // A transient failure burns the id everywhere.
  const missing = idsOn(1, 2, 1, 10_000n)[0];
  t.same((await createTransfers(engine, [transfer(2n, missing, A0, 5n)])).names, ['debit_account_not_found']);
  t.same((await createTransfers(engine, [transfer(2n, A1, B1, 5n)])).names, ['id_already_failed'], 'on another shard too');
  // Two events of one request with one id on two shards: the second sees the first.
  t.same((await createTransfers(engine, [transfer(3n, A0, B0, 1n), transfer(3n, A1, B1, 1n)])).names, ['created', 'exists_with_different_debit_account_id']);
  const b = await balances(engine, ALL);
  t.equal(b.get(A1)!.debits_posted, 0n, 'no duplicate was applied on shard 1');
  t.equal(b.get(A0)!.debits_posted, 6n);
  await assertBooksBalance(t, engine, 'after resends');
});

t.test('a linked chain that spans shards is atomic', async (t) => {
  const engine = await fresh(t);
  await createAccounts(engine, [...ALL.map((id) => account(id)), account(idsOn(1, 2, 1, 20_000n)[0], { flags: 1 << 1 /* debits_must_not_exceed_credits */ })]);
  const strict = idsOn(1, 2, 1, 20_000n)[0];
  const linked = { flags: TransferFlags.linked };
  const failed = await createTransfers(engine, [
    transfer(10n, A0, A1, 10n, linked),
    transfer(11n, B1, B0, 20n, linked),
    transfer(12n, strict, C0, 1n), // exceeds_credits ends the chain
  ]);
  t.same(failed.names, ['linked_event_failed', 'linked_event_failed', 'exceeds_credits']);
  let b = await balances(engine, ALL);
  for (const id of ALL) t.equal(b.get(id)!.debits_posted + b.get(id)!.credits_posted, 0n, `account ${id} untouched`);
  t.same((await engine.lookupTransfers([10n, 11n, 12n])) as unknown, { transfers: [] }, 'no transfer of the chain exists on any shard');
  const ok = await createTransfers(engine, [transfer(20n, A0, A1, 10n, linked), transfer(21n, B1, B0, 20n)]);
  t.same(ok.names, ['created', 'created']);
  b = await balances(engine, ALL);
  t.equal(b.get(A1)!.credits_posted, 10n);
  t.equal(b.get(B0)!.credits_posted, 20n);
  await assertBooksBalance(t, engine, 'after chains');
});

t.test('two-phase transfers across shards: post, void, and expiry of both sides at once', async (t) => {
  const { dir, cleanup } = tempDir('keel-shards-');
  let engine = await start(dir);
  t.teardown(async () => {
    await engine.close();
    cleanup();
  });
  await createAccounts(engine, ALL.map((id) => account(id)));
  t.same((await createTransfers(engine, [pending(30n, A0, A1, 50n), pending(31n, B1, B0, 40n), pending(32n, C0, C1, 9n, { timeout: 1 })])).names, [
    'created',
    'created',
    'created',
  ]);
  let b = await balances(engine, ALL);
  t.equal(b.get(A0)!.debits_pending, 50n);
  t.equal(b.get(A1)!.credits_pending, 50n);
  // A post names no account: the router finds the pending transfer's shards by its id.
  t.same((await createTransfers(engine, [post(40n, 30n, 30n), voidPending(41n, 31n)])).names, ['created', 'created']);
  b = await balances(engine, ALL);
  t.same([b.get(A0)!.debits_pending, b.get(A0)!.debits_posted, b.get(A1)!.credits_pending, b.get(A1)!.credits_posted], [0n, 30n, 0n, 30n], 'posted on both sides');
  t.same([b.get(B1)!.debits_pending, b.get(B0)!.credits_pending], [0n, 0n], 'voided on both sides');
  t.same((await createTransfers(engine, [post(42n, 30n)])).names, ['pending_transfer_already_posted']);

  // The 1 s pending transfer expires on both shards, with no traffic, through a cross-shard pulse.
  const deadline = Date.now() + 10_000;
  for (;;) {
    b = await balances(engine, [C0, C1]);
    if (b.get(C0)!.debits_pending === 0n || Date.now() > deadline) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  t.same([b.get(C0)!.debits_pending, b.get(C1)!.credits_pending], [0n, 0n], 'expired on both sides');
  t.same((await createTransfers(engine, [post(43n, 32n)])).names, ['pending_transfer_expired']);
  await assertBooksBalance(t, engine, 'after two-phase transfers');

  // Restart: the same books from the logs and checkpoints of both shards.
  const before = await allTransfers(engine);
  await engine.close();
  engine = await start(dir);
  t.same(await allTransfers(engine), before, 'transfers survive a restart');
  b = await balances(engine, ALL);
  t.equal(b.get(A1)!.credits_posted, 30n);
  t.same((await createTransfers(engine, [post(44n, 31n)])).names, ['pending_transfer_already_voided'], 'pending states survive too');
  await assertBooksBalance(t, engine, 'after restart');
});

t.test('concurrent cross-shard requests share groups, each answered for itself', async (t) => {
  const engine = await fresh(t);
  await createAccounts(engine, ALL.map((id) => account(id)));
  const before = { ...engine.group_stats };
  // 200 single-transfer requests at once, every one cross-shard, some failing, one chain left open.
  const requests = Array.from({ length: 200 }, (_, k) => {
    if (k === 100) return [transfer(1_000n + BigInt(k), A0, A1, 1n, { flags: TransferFlags.linked })];
    if (k % 10 === 0) return [transfer(1_000n + BigInt(k), A0, idsOn(1, 2, 1, 30_000n)[0], 1n)];
    return [transfer(1_000n + BigInt(k), k % 2 === 0 ? A0 : A1, k % 2 === 0 ? B1 : B0, 1n)];
  });
  const results = await Promise.all(requests.map((events) => createTransfers(engine, events)));
  results.forEach((result, k) => {
    const expected = k === 100 ? 'linked_event_chain_open' : k % 10 === 0 ? 'credit_account_not_found' : 'created';
    if (result.names[0] !== expected) t.fail(`request ${k}: ${result.names[0]}, expected ${expected}`);
  });
  const groups = engine.group_stats.groups - before.groups;
  const merged = engine.group_stats.requests - before.requests;
  t.equal(merged, 200, 'every request went through a group');
  t.ok(groups < 200, `they shared ${groups} groups`);
  const b = await balances(engine, ALL);
  t.equal(b.get(A0)!.debits_posted, 80n, 'each created transfer applied once');
  t.equal(b.get(B0)!.credits_posted, 100n);
  await assertBooksBalance(t, engine, 'after concurrent groups');
});

t.test('a data directory keeps its shard count', async (t) => {
  const { dir, cleanup } = tempDir('keel-shards-');
  t.teardown(cleanup);
  const engine = await start(dir, 2);
  await engine.close();
  await t.rejects(start(dir, 3), { code: 'shard_count_mismatch' }, 'a restart with another count is refused');
  const again = await start(dir, 2);
  await again.close();
});

t.test('after close, requests and control calls to a shard are answered at once instead of hanging', async (t) => {
  const { dir, cleanup } = tempDir('keel-shards-');
  t.teardown(cleanup);
  const engine = await start(dir, 2);
  await createAccounts(engine, ALL.map((id) => account(id)));
  t.same(await engine.groupPositions(1, 0), [], 'a control call answers while the shard runs');
  await engine.close();
  await t.rejects(engine.groupPositions(1, 0), /shard 1 could not list its groups: shard 1 is closed/, 'a control call after close rejects with why');
  const late = await engine.createTransfers(1, encodeTransferBatch([transfer(1n, A0, B0, 1n)]));
  t.same(late, { error: 'unavailable', message: 'the engine is shutting down; retry once it is back (or at another center)' }, 'a write after close is answered unavailable');
});

t.test('close finishes requests handed to the shards just before it (single-shard and cross-shard)', async (t) => {
  const { dir, cleanup } = tempDir('keel-shards-');
  t.teardown(cleanup);
  const engine = await start(dir, 2);
  t.same(await createAccounts(engine, ALL.map((id) => account(id))), ALL.map(() => 'created'));
  // Not awaited: both are still queued for the workers when close is called.
  const local = engine.createTransfers(1, encodeTransferBatch([transfer(9001n, A0, B0, 5n)]));
  const cross = engine.createTransfers(1, encodeTransferBatch([transfer(9002n, A0, A1, 7n)]));
  await engine.close();
  for (const [name, pending] of [['single-shard', local], ['cross-shard', cross]] as const) {
    const result = await pending;
    t.ok('status' in result, `${name}: answered with a result, not ${'error' in result ? `${result.error}: ${result.message}` : '?'}`);
    if ('status' in result) t.same(result.status.map((s) => CREATE_TRANSFER_STATUS_NAMES[s]), ['created'], `${name}: created`);
  }
  const again = await start(dir, 2);
  t.teardown(() => again.close());
  const after = await balances(again, [A0, B0, A1]);
  t.equal(after.get(A0)?.debits_posted, 12n, 'both debits survived the restart');
  t.equal(after.get(B0)?.credits_posted, 5n);
  t.equal(after.get(A1)?.credits_posted, 7n);
  await assertBooksBalance(t, again, 'after close and restart');
});

/** Runs the child: a 2-shard engine that creates, then exits without a checkpoint. */
function runChild(dir: string, accounts: AccountInput[], transfers: TransferInput[]): Promise<{ accounts: number[]; transfers: number[] }> {
  const json = JSON.stringify({ accounts, transfers }, (_, value: unknown) => (typeof value === 'bigint' ? `${value}n` : value));
  const child = spawn(process.execPath, ['--import=tsx', join(ROOT, 'test/support/shards-child.ts'), dir, json], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  return new Promise((resolve, reject) => {
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out.trim().split('\n').pop()!)) : reject(new Error(`child exited ${code}`))));
  });
}

/** Runs the child in `kill` mode: the batches go out at once and the child dies `delay_ms` later. */
function killChild(dir: string, accounts: AccountInput[], batches: TransferInput[][], delay_ms: number, env: NodeJS.ProcessEnv = {}): Promise<void> {
  const json = JSON.stringify({ accounts, transfers: [], batches }, (_, value: unknown) => (typeof value === 'bigint' ? `${value}n` : value));
  const input = join(dir, 'input.json');
  writeFileSync(input, json);
  const child = spawn(process.execPath, ['--import=tsx', join(ROOT, 'test/support/shards-child.ts'), join(dir, 'data'), `@${input}`, 'kill', String(delay_ms)], {
    cwd: ROOT,
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, ...env },
  });
  return new Promise((resolve) => child.on('exit', () => resolve()));
}

/** Removes a shard's last log entry (a group) as if its fsync had never completed. */
async function dropLastGroupEntry(shard_dir: string): Promise<void> {
  const env = open({ path: join(shard_dir, 'log'), maxDbs: 4 });
  const entries = env.openDB<Buffer, number>({ name: 'entries', encoding: 'binary' });
  const groups = env.openDB<number, number>({ name: 'groups' });
  let head = 0;
  for (const key of entries.getKeys({ reverse: true, limit: 1 })) head = key;
  let gid = 0;
  for (const { key, value } of groups.getRange({ reverse: true, limit: 1 })) if (value === head) gid = key;
  if (gid === 0) throw new Error(`the last entry of ${shard_dir} is no group`);
  await entries.remove(head);
  await groups.remove(gid);
  await env.close();
}

t.test('recovery redoes a cross-shard group on the shards that did not log it', async (t) => {
  const accounts = ALL.map((id) => account(id));
  const transfers = [transfer(501n, A0, A1, 70n), transfer(502n, B1, B0, 5n, { flags: TransferFlags.linked }), transfer(503n, C0, C1, 6n)];

  for (const [label, drop] of [
    ['shard 1 lost its entry', [1]],
    ['shard 0 lost its entry', [0]],
  ] as const) {
    const { dir, cleanup } = tempDir('keel-shards-crash-');
    const acked = await runChild(dir, accounts, transfers);
    t.same(acked.transfers, [0, 0, 0], `${label}: the child created the group`);
    for (const shard of drop) await dropLastGroupEntry(join(dir, `shard-${shard}`));
    const engine = await start(dir);
    t.equal(engine.group_stats.rolled_forward, 1, `${label}: one group redone at startup`);
    const b = await balances(engine, ALL);
    t.same([b.get(A0)!.debits_posted, b.get(A1)!.credits_posted, b.get(B1)!.debits_posted, b.get(B0)!.credits_posted], [70n, 70n, 5n, 5n], `${label}: both sides applied`);
    t.same((await allTransfers(engine)).map((x) => x.id), [501n, 502n, 503n], `${label}: every transfer once`);
    // `exists` fails a chain like any other status: the chain's last event reports the failure.
    t.same((await createTransfers(engine, transfers)).names, ['exists', 'exists', 'linked_event_failed'], `${label}: a resend applies nothing twice`);
    await assertBooksBalance(t, engine, label);
    await engine.close();
    // And once more from the logs alone, now that every shard has the group.
    const again = await start(dir);
    t.equal(again.group_stats.rolled_forward, 0, `${label}: nothing left to redo`);
    t.equal((await balances(again, [A1])).get(A1)!.credits_posted, 70n);
    await again.close();
    cleanup();
  }

  // No shard logged it: it never happened (and was never acknowledged).
  const { dir, cleanup } = tempDir('keel-shards-crash-');
  await runChild(dir, accounts, transfers);
  await dropLastGroupEntry(join(dir, 'shard-0'));
  await dropLastGroupEntry(join(dir, 'shard-1'));
  const engine = await start(dir);
  t.equal(engine.group_stats.rolled_forward, 0);
  const b = await balances(engine, ALL);
  t.same([b.get(A0)!.debits_posted, b.get(A1)!.credits_posted], [0n, 0n], 'neither side applied');
  t.same(await allTransfers(engine), [], 'no transfer on any shard');
  t.same((await createTransfers(engine, transfers)).names, ['created', 'created', 'created'], 'the ids are free');
  await assertBooksBalance(t, engine, 'after a group no shard logged');
  await engine.close();
  cleanup();
});

t.test('kill -9 while a group and the batches before it are in flight: recovery always succeeds, the group is whole or absent', async (t) => {
  // Shard 1 gets a large batch of its own, then a cross-shard group reads it before that batch is
  // durable. A participant must not hand its read over before then: otherwise shard 0 could log
  // the group while shard 1 loses the batch the group's read depended on, and recovery could not
  // redo the group there.
  const [D1, E1] = idsOn(1, 2, 2, 40_000n);
  const accounts = [...ALL, D1, E1].map((id) => account(id));
  const outcomes: number[] = [];
  for (let round = 0; round < 10; round++) {
    const { dir, cleanup } = tempDir('keel-shards-kill-');
    const local: TransferInput[] = Array.from({ length: 4_000 }, (_, k) => transfer(10_000n + BigInt(k), k % 2 === 0 ? D1 : E1, k % 2 === 0 ? E1 : D1, 1n));
    const group: TransferInput[] = [transfer(900n, A0, D1, 50n), transfer(901n, E1, B0, 20n)];
    // Shard 1's writes reach the disk 150 ms late (a slow disk): kills land before its batch is
    // durable, between the group being logged on shard 0 and on shard 1, and after.
    await killChild(dir, accounts, [local, group, [transfer(902n, C1, C0, 3n)]], 60 + round * 40, { KEEL_FAULT_LOG_WRITE_DELAY: '1:150' });
    const engine = await start(join(dir, 'data'));
    const b = await balances(engine, [A0, D1, E1, B0, C1, C0]);
    const group_here = (await engine.lookupTransfers([900n, 901n])) as { transfers: Transfer[] };
    const applied = group_here.transfers.length;
    outcomes.push(applied);
    t.ok(applied === 0 || applied === 2, `round ${round}: the group is whole or absent (${applied} of 2)`);
    t.equal(b.get(A0)!.debits_posted, applied === 2 ? 50n : 0n, `round ${round}: shard 0 side`);
    t.equal(b.get(B0)!.credits_posted, applied === 2 ? 20n : 0n, `round ${round}: shard 0 side`);
    await assertBooksBalance(t, engine, `round ${round}`);
    await engine.close();
    cleanup();
  }
  t.comment(`group transfers present after each kill: ${outcomes.join(' ')}`);
});

t.test('a cross-shard pending transfer that fell due while the engine was down expires on both shards after restart', async (t) => {
  const { dir, cleanup } = tempDir('keel-shards-');
  let engine = await start(dir);
  t.teardown(async () => {
    await engine.close();
    cleanup();
  });
  await createAccounts(engine, ALL.map((id) => account(id)));
  t.same((await createTransfers(engine, [pending(60n, A0, A1, 7n, { timeout: 1 }), pending(61n, B0, C0, 5n, { timeout: 1 })])).names, ['created', 'created']);
  await engine.close();
  await new Promise((resolve) => setTimeout(resolve, 1_500));
  engine = await start(dir);
  const deadline = Date.now() + 10_000;
  let b = await balances(engine, ALL);
  while ((b.get(A0)!.debits_pending !== 0n || b.get(B0)!.debits_pending !== 0n) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    b = await balances(engine, ALL);
  }
  t.same([b.get(A0)!.debits_pending, b.get(A1)!.credits_pending, b.get(B0)!.debits_pending, b.get(C0)!.credits_pending], [0n, 0n, 0n, 0n], 'expired on every side');
  t.same((await createTransfers(engine, [transfer(62n, A0, B0, 1n), transfer(63n, A0, A1, 1n)])).names, ['created', 'created'], 'and the shards serve');
  t.same((await createTransfers(engine, [post(64n, 60n), post(65n, 61n)])).names, ['pending_transfer_expired', 'pending_transfer_expired']);
  await assertBooksBalance(t, engine, 'after expiry across a restart');
});

t.test('a participant that cannot read a group stops the engine instead of stalling it', async (t) => {
  const { dir, cleanup } = tempDir('keel-shards-');
  process.env.KEEL_FAULT_GROUP_READ = '1';
  let engine: Engine;
  try {
    engine = await start(dir);
  } finally {
    delete process.env.KEEL_FAULT_GROUP_READ;
  }
  t.teardown(cleanup);
  await createAccounts(engine, ALL.map((id) => account(id)));
  const cross = await engine.createTransfers(1, encodeTransferBatch([transfer(70n, A0, A1, 1n)]));
  t.ok('error' in cross, `the cross-shard transfer is answered: ${'error' in cross ? cross.error : 'status'}`);
  const later = await engine.createTransfers(1, encodeTransferBatch([transfer(71n, A0, B0, 1n)]));
  t.same('error' in later && later.error, 'unavailable', 'and the engine serves nothing more until a restart');
  await engine.close();
  const again = await start(dir);
  const b = await balances(again, [A0, A1]);
  t.same([b.get(A0)!.debits_posted, b.get(A1)!.credits_posted], [0n, 0n], 'the group was applied nowhere');
  await assertBooksBalance(t, again, 'after the failed group');
  await again.close();
});
