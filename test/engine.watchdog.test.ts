// A shard thread that stops making progress (a hang; in production, a heap thrashing just under its
// limit) never exits, so nothing but a watchdog sees it. `keel start` must then exit 1 promptly (so a
// supervisor restarts it and, replicated, the lease lapses to another center), lose nothing
// acknowledged, and a process that was merely paused (SIGSTOP) must not be taken for a hang.

import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, KeelError, type KeelClient, type TransferInput } from '../src/client/index.ts';
import { StallClock, checkIntervalMs } from '../src/shard/watchdog.ts';
import { startServer, type Server } from './support/keel-process.ts';

const TOKEN_RE = /keel_[A-Za-z0-9_-]{43}/;

/** One shard: the fault and the checks name shard 0. */
const ONE_SHARD = ['--shards', '1'];

const ACCOUNTS = 20;

function batch(k: number): TransferInput[] {
  const out: TransferInput[] = [];
  for (let i = 0; i < 50; i++) {
    const debit = 1 + ((k * 7 + i) % ACCOUNTS);
    const credit = 1 + ((k * 7 + i + 1 + (i % 5)) % ACCOUNTS);
    out.push({ id: BigInt(k * 1000 + i + 1), debit_account_id: BigInt(debit), credit_account_id: BigInt(credit), amount: BigInt(1 + i), ledger: 1, code: 1 });
  }
  return out;
}

/** Sum of what `batches` move, per account: [debits, credits]. */
function expected(batches: number[]): Map<bigint, [bigint, bigint]> {
  const sums = new Map<bigint, [bigint, bigint]>();
  for (let a = 1; a <= ACCOUNTS; a++) sums.set(BigInt(a), [0n, 0n]);
  for (const k of batches) {
    for (const tr of batch(k)) {
      sums.get(BigInt(tr.debit_account_id))![0] += BigInt(tr.amount);
      sums.get(BigInt(tr.credit_account_id))![1] += BigInt(tr.amount);
    }
  }
  return sums;
}

async function client(server: Server): Promise<KeelClient> {
  const token = TOKEN_RE.exec(server.out.stdout)?.[0];
  if (token === undefined) throw new Error('no admin token printed');
  return connect({ url: server.url, token, reconnect: false });
}

t.test('a hung shard stops the engine: exit 1 within the stall time, nothing acknowledged lost', async (t) => {
  const data = mkdtempSync(join(tmpdir(), 'keel-watchdog-'));
  t.teardown(() => rmSync(data, { recursive: true, force: true }));
  const token_holder = { token: '' };
  // The shard's 4th create request hangs: accounts are the 1st, transfer batches 0 and 1 the 2nd and 3rd.
  const server = await startServer(data, [...ONE_SHARD, '--shard-stall-ms', '1000'], { KEEL_FAULT_SHARD_STALL: '0:4' });
  token_holder.token = TOKEN_RE.exec(server.out.stdout)?.[0] ?? '';
  const keel = await client(server);
  const accounts = Array.from({ length: ACCOUNTS }, (_, i) => ({ id: BigInt(i + 1), ledger: 1, code: 1 }));
  t.same((await keel.createAccounts(accounts)).status.filter((s) => s !== 0), [], 'accounts created');
  for (const k of [0, 1]) t.same((await keel.createTransfers(batch(k))).status.filter((s) => s !== 0), [], `batch ${k} acknowledged`);
  const hung_at = Date.now();
  const outcome = await keel.createTransfers(batch(2), { timeout_ms: 15_000 }).then(
    () => 'acknowledged',
    (error: unknown) => (error instanceof KeelError ? error.code : String(error)),
  );
  t.not(outcome, 'acknowledged', `the batch the shard hung on is not acknowledged (${outcome})`);
  const { code } = await server.exited;
  const exit_ms = Date.now() - hung_at;
  t.equal(code, 1, 'keel start exits 1');
  t.ok(exit_ms < 10_000, `exited ${exit_ms} ms after the hang (stall limit 1000 ms, close at most 5000 ms)`);
  t.match(server.out.stderr, /shard 0 stopped responding: its thread made no progress for \d+ ms/, 'stderr says which shard hung and for how long');
  t.match(server.out.stderr, /exiting \(code 1\)/, 'and that it exits to be restarted');
  await keel.close().catch(() => undefined);

  // Restarted without the fault: the acknowledged batches are there, the hung one is not, money is conserved.
  const again = await startServer(data, ONE_SHARD);
  t.teardown(() => {
    again.child.kill('SIGKILL');
  });
  const token = token_holder.token;
  const keel2 = await connect({ url: again.url, token, reconnect: false });
  const found = await keel2.lookupTransfers([...batch(0), ...batch(1), ...batch(2)].map((tr) => tr.id));
  const ids = new Set(found.map((tr) => tr.id));
  t.ok([...batch(0), ...batch(1)].every((tr) => ids.has(BigInt(tr.id))), 'every acknowledged transfer survived');
  t.equal(batch(2).filter((tr) => ids.has(BigInt(tr.id))).length, 0, 'the hung batch was never applied (it hung before)');
  const balances = await keel2.lookupAccounts(accounts.map((a) => a.id));
  const want = expected([0, 1]);
  let debits = 0n;
  let credits = 0n;
  for (const a of balances) {
    debits += a.debits_posted;
    credits += a.credits_posted;
    t.same([a.debits_posted, a.credits_posted], want.get(a.id), `account ${a.id}`);
  }
  t.equal(debits, credits, 'debits equal credits');
  await keel2.close();
  again.child.kill('SIGTERM');
  t.equal((await again.exited).code, 0, 'the restarted engine stops cleanly');
});

t.test('a shard that hangs while the engine stops: the stop still ends, in exit 1, and nothing is lost', async (t) => {
  const data = mkdtempSync(join(tmpdir(), 'keel-watchdog-'));
  t.teardown(() => rmSync(data, { recursive: true, force: true }));
  const server = await startServer(data, [...ONE_SHARD, '--shard-stall-ms', '1000'], { KEEL_FAULT_SHARD_STALL: '0:close' });
  t.teardown(() => {
    server.child.kill('SIGKILL');
  });
  const token = TOKEN_RE.exec(server.out.stdout)?.[0] ?? '';
  const keel = await client(server);
  const accounts = Array.from({ length: ACCOUNTS }, (_, i) => ({ id: BigInt(i + 1), ledger: 1, code: 1 }));
  await keel.createAccounts(accounts);
  t.same((await keel.createTransfers(batch(0))).status.filter((s) => s !== 0), [], 'batch 0 acknowledged');
  await keel.close();
  const stopped_at = Date.now();
  server.child.kill('SIGTERM');
  const { code, stderr } = await server.exited;
  const stop_ms = Date.now() - stopped_at;
  t.equal(code, 1, 'the stop ends in exit 1');
  t.ok(stop_ms < 10_000, `the stop took ${stop_ms} ms (stall limit 1000 ms)`);
  t.match(stderr, /shard 0 stopped responding/, 'stderr names the hung shard');
  t.match(stderr, /failed while stopping/, 'and says the stop was not clean');

  const again = await startServer(data, ONE_SHARD);
  t.teardown(() => {
    again.child.kill('SIGKILL');
  });
  const keel2 = await connect({ url: again.url, token, reconnect: false });
  const found = await keel2.lookupTransfers(batch(0).map((tr) => tr.id));
  t.equal(found.length, batch(0).length, 'the acknowledged batch is there (replayed from the log)');
  const balances = await keel2.lookupAccounts(accounts.map((a) => a.id));
  const want = expected([0]);
  for (const a of balances) t.same([a.debits_posted, a.credits_posted], want.get(a.id), `account ${a.id}`);
  await keel2.close();
  again.child.kill('SIGTERM');
  t.equal((await again.exited).code, 0);
});

t.test('a paused process is not a hung shard: SIGSTOP past the stall time, SIGCONT, it serves on', async (t) => {
  const data = mkdtempSync(join(tmpdir(), 'keel-watchdog-'));
  t.teardown(() => rmSync(data, { recursive: true, force: true }));
  const server = await startServer(data, [...ONE_SHARD, '--shard-stall-ms', '1000']);
  t.teardown(() => {
    server.child.kill('SIGKILL');
  });
  const keel = await client(server);
  const accounts = Array.from({ length: ACCOUNTS }, (_, i) => ({ id: BigInt(i + 1), ledger: 1, code: 1 }));
  await keel.createAccounts(accounts);
  t.same((await keel.createTransfers(batch(0))).status.filter((s) => s !== 0), [], 'batch 0 acknowledged');
  server.child.kill('SIGSTOP');
  await new Promise((resolve) => setTimeout(resolve, 3_000));
  server.child.kill('SIGCONT');
  // Long enough for the watchdog to look again several times.
  await new Promise((resolve) => setTimeout(resolve, 1_500));
  t.same((await keel.createTransfers(batch(1), { timeout_ms: 10_000 })).status.filter((s) => s !== 0), [], 'batch 1 acknowledged after the pause');
  t.equal(server.child.exitCode, null, 'still running');
  t.notMatch(server.out.stderr, /stopped responding/);
  const balances = await keel.lookupAccounts(accounts.map((a) => a.id));
  const want = expected([0, 1]);
  for (const a of balances) t.same([a.debits_posted, a.credits_posted], want.get(a.id), `account ${a.id}`);
  await keel.close();
  server.child.kill('SIGTERM');
  t.equal((await server.exited).code, 0);
});

t.test('the stall decision: a standing counter over on-time looks, never a late look', async (t) => {
  // Limit 1000 ms, a look every 250 ms.
  const still = (looks: Array<[beat: number, at_ms: number]>): number[] => {
    const clock = new StallClock(1000, 250, 0, 0);
    return looks.map(([beat, at]) => clock.observe(beat, at));
  };
  t.same(still([[1, 250], [2, 500], [3, 750], [4, 1000], [5, 1250]]), [-1, -1, -1, -1, -1], 'a beating worker never stalls');
  t.same(still([[0, 250], [0, 500], [0, 750], [0, 1000]]), [-1, -1, -1, 1000], 'a counter still for 1000 ms of on-time looks stalls');
  t.same(still([[0, 250], [0, 3000], [0, 3250], [0, 3500]]), [-1, -1, -1, -1], 'a late look (the process was stopped) starts the wait over');
  t.same(still([[0, 250], [0, 3000], [0, 3250], [0, 3500], [0, 3750], [0, 4000]]), [-1, -1, -1, -1, -1, 1000], '...and a counter still after it stalls in its turn');
  t.same(still([[0, 250], [0, 500], [1, 750], [1, 1000], [1, 1250], [1, 1500], [1, 1750]]), [-1, -1, -1, -1, -1, -1, 1000], 'a beat restarts the wait');
  t.throws(() => new StallClock(0, 250, 0, 0), RangeError);
  t.equal(checkIntervalMs(30_000, 100), 1000, 'at most once a second');
  t.equal(checkIntervalMs(1000, 100), 250, 'a quarter of the limit');
  t.equal(checkIntervalMs(100, 100), 100, 'never more often than the worker beats');
});
