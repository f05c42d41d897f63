// Crash durability: a child process applies batches to a shard and is killed with SIGKILL at
// random moments, then restarted on the same directory. Whatever the shard acknowledged must
// survive; nothing else may be half there.
//
// KEEL_CRASH_SEED replays a run's workload and kill delays (the kill moments themselves still
// depend on the machine's speed).

import t from 'tap';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Shard } from '../src/shard/shard.ts';
import { PendingStatus } from '../src/ledger/ledger.ts';
import { type Transfer, CreateAccountStatus as AS } from '../src/ledger/types.ts';
import { stateHash } from '../src/storage/hash.ts';
import { ACCOUNTS, batchFor, type AckLine, type ChildLine, type ReadyLine } from './support/crash-workload.ts';
import { Rng, recomputeBalances, replayHash, tempDir } from './support/shard-helpers.ts';
import { queryFilter } from './support/builders.ts';

const KILLS = 24;
const SEED = Number(process.env.KEEL_CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31));
const CHILD = fileURLToPath(new URL('./support/crash-child.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('..', import.meta.url));
/** Batches a child may have sent beyond its last acknowledged one (in flight at the kill). */
const UNACKED_WINDOW = 8;

interface RunRecord {
  run: number;
  ready: ReadyLine | null;
  acks: AckLine[];
  signal: NodeJS.Signals | null;
  code: number | null;
  stderr: string;
  killed_after_ms: number;
  from: 'ready' | 'spawn';
}

/** Starts the child, kills it after a random delay (from spawn or from its first line), and waits until it is gone. */
async function runChild(dir: string, run: number, rng: Rng): Promise<RunRecord> {
  const from: RunRecord['from'] = rng.chance(0.2) ? 'spawn' : 'ready';
  const delay = rng.int(20, 300);
  const record: RunRecord = { run, ready: null, acks: [], signal: null, code: null, stderr: '', killed_after_ms: delay, from };
  const child = spawn(process.execPath, ['--import=tsx', CHILD, dir, String(SEED), String(run)], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // 'close' comes after the process exited and its output was read to the end.
  const closed = new Promise<void>((resolve) => {
    child.on('close', (code, signal) => {
      record.code = code;
      record.signal = signal;
      resolve();
    });
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    record.stderr += chunk;
  });
  let timer: NodeJS.Timeout | null = null;
  const kill = (): void => {
    if (timer !== null) return;
    timer = setTimeout(() => child.kill('SIGKILL'), delay);
  };
  // A child that never gets ready must not hang the test.
  const watchdog = setTimeout(() => child.kill('SIGKILL'), 20_000);
  const lines = createInterface({ input: child.stdout });
  lines.on('line', (text) => {
    let line: ChildLine;
    try {
      line = JSON.parse(text) as ChildLine;
    } catch {
      return; // cut short by the kill: not an acknowledgement
    }
    if (line.type === 'ready') {
      record.ready = line;
      if (from === 'ready') kill();
    } else {
      record.acks.push(line);
    }
  });
  if (from === 'spawn') kill();
  await closed;
  clearTimeout(watchdog);
  if (timer !== null) clearTimeout(timer);
  return record;
}

t.test('SIGKILL at random moments: acknowledged batches survive, nothing is half applied', async (t) => {
  t.comment(`seed ${SEED} (KEEL_CRASH_SEED=${SEED} to replay the workload)`);
  const { dir, cleanup } = tempDir('crash');
  t.teardown(cleanup);
  const rng = new Rng(SEED);
  const runs: RunRecord[] = [];
  const started = Date.now();
  const account_problems: string[] = [];

  for (let run = 1; run <= KILLS; run++) {
    const record = await runChild(dir, run, rng);
    runs.push(record);
    if (record.signal !== 'SIGKILL') {
      t.fail(`run ${run}: the child ended by itself (code ${record.code}, signal ${record.signal})`, { stderr: record.stderr });
      break;
    }
    if (record.ready !== null) {
      // Once one run has had its accounts acknowledged, every later run must find them all.
      const acknowledged_before = runs.slice(0, -1).some((r) => r.ready !== null);
      const allowed = acknowledged_before ? [AS.exists] : [AS.created, AS.exists];
      if (!record.ready.accounts.every((s) => allowed.includes(s))) {
        account_problems.push(`run ${run}: create_accounts statuses ${record.ready.accounts.join(',')}, but an earlier run had them acknowledged`);
      }
    }
  }
  t.same(account_problems, [], 'acknowledged accounts are found by every later run (restarts re-create nothing)');
  const acked_batches = runs.reduce((n, r) => n + r.acks.length, 0);
  const recovered = runs.filter((r) => r.ready !== null && r.ready.recovery.checkpoint_position > 0 && r.ready.recovery.replayed_entries > 0);
  t.comment(
    `${runs.length} kills in ${Date.now() - started} ms; ${acked_batches} acknowledged batches; ` +
      `kills from spawn: ${runs.filter((r) => r.from === 'spawn').length}; ` +
      `recoveries from checkpoint + tail: ${recovered.length}`,
  );
  t.ok(runs.length >= 20, 'at least 20 kills');
  t.ok(acked_batches >= 50, 'the children made progress between kills');
  t.ok(recovered.length >= 1, 'some restarts recovered from a checkpoint plus a log tail');

  // The survivor: open the shard here, with no pulse, and check it against what was acknowledged.
  const shard = Shard.open({ dir, pulse: false });
  t.teardown(() => shard.close());
  const transfers = new Map<bigint, Transfer>();
  for (let timestamp_min = 0n; ; ) {
    const page = await shard.queryTransfers(queryFilter({ timestamp_min }));
    for (const transfer of page) transfers.set(transfer.id, transfer);
    if (page.length < queryFilter().limit) break;
    timestamp_min = page[page.length - 1].timestamp + 1n;
  }
  t.comment(`${transfers.size} transfers, head at ${shard.head_position}, last checkpoint at ${shard.recovery.checkpoint_position}`);

  await t.test('every acknowledged result is what the shard holds', async (t) => {
    let created = 0;
    let failed = 0;
    const problems: string[] = [];
    for (const run of runs) {
      for (const ack of run.acks) {
        const batch = batchFor(SEED, ack.run, ack.k);
        const ids = batch.events.map((e) => e.id.toString());
        if (ids.join() !== ack.ids.join()) problems.push(`run ${ack.run} batch ${ack.k}: the child sent other ids than the workload says`);
        for (const [i, status] of ack.status.entries()) {
          const id = batch.events[i].id;
          const stored = transfers.get(id);
          if (status === 0) {
            created++;
            const expected = batch.expected.get(id);
            if (stored === undefined) {
              problems.push(`${id} (run ${ack.run} batch ${ack.k}) was acknowledged as created but is missing`);
            } else if (
              expected === undefined ||
              stored.debit_account_id !== expected.debit_account_id ||
              stored.credit_account_id !== expected.credit_account_id ||
              stored.amount !== expected.amount ||
              stored.ledger !== expected.ledger ||
              stored.code !== expected.code ||
              stored.flags !== expected.flags ||
              stored.pending_id !== expected.pending_id
            ) {
              problems.push(`${id}: stored ${JSON.stringify(stored, big)} but expected ${JSON.stringify(expected, big)}`);
            }
          } else {
            failed++;
            if (stored !== undefined) problems.push(`${id} (run ${ack.run} batch ${ack.k}) failed with status ${status} but exists`);
          }
        }
        for (const chain of batch.chains) {
          const statuses = chain.map((id) => ack.status[batch.events.findIndex((e) => e.id === id)]);
          if (!(statuses.every((s) => s === 0) || statuses.every((s) => s !== 0))) {
            problems.push(`run ${ack.run} batch ${ack.k}: chain ${chain.join(',')} acknowledged with statuses ${statuses.join(',')}`);
          }
        }
      }
    }
    t.comment(`${created} acknowledged creations, ${failed} acknowledged failures`);
    t.ok(created > 0 && failed > 0, 'both kinds were acknowledged');
    t.same(problems.slice(0, 20), [], `no acknowledged result was lost or changed (${problems.length} problems)`);
  });

  await t.test('linked chains are all or nothing, and each run left a prefix of its batches', async (t) => {
    const problems: string[] = [];
    let chains_checked = 0;
    let chains_applied = 0;
    for (const run of runs) {
      const last_acked = run.acks.reduce((max, ack) => Math.max(max, ack.k), -1);
      // Whether each batch reached the log, from its marker (a transfer that cannot fail).
      let seen_gap = -1;
      for (let k = 0; k <= last_acked + UNACKED_WINDOW; k++) {
        const batch = batchFor(SEED, run.run, k);
        const present = transfers.has(batch.marker);
        if (k <= last_acked && !present) problems.push(`run ${run.run} batch ${k}: lost, though batch ${last_acked} was acknowledged`);
        if (!present && seen_gap === -1) seen_gap = k;
        if (present && seen_gap !== -1) problems.push(`run ${run.run}: batch ${k} is there but batch ${seen_gap} is not`);
        for (const chain of batch.chains) {
          chains_checked++;
          const existing = chain.filter((id) => transfers.has(id)).length;
          if (existing === chain.length) chains_applied++;
          else if (existing !== 0) problems.push(`run ${run.run} batch ${k}: chain ${chain.join(',')} half applied (${existing}/${chain.length})`);
        }
        if (!present) {
          for (const event of batch.events) {
            if (transfers.has(event.id)) problems.push(`run ${run.run} batch ${k}: ${event.id} exists though its batch is absent`);
          }
        }
      }
    }
    t.comment(`${chains_checked} chains checked, ${chains_applied} applied whole`);
    t.ok(chains_applied > 0 && chains_applied < chains_checked, 'some chains held and some rolled back');
    t.same(problems.slice(0, 20), [], `no partial chain, no hole (${problems.length} problems)`);
  });

  await t.test('balances: per-ledger totals and a recomputation from the transfers', async (t) => {
    const accounts = await shard.lookupAccounts(ACCOUNTS.map((a) => a.id));
    t.equal(accounts.length, ACCOUNTS.length, 'every account is there');
    for (const ledger of [1, 2, 3]) {
      const on = accounts.filter((a) => a.ledger === ledger);
      const sum = (f: (a: (typeof on)[number]) => bigint): bigint => on.reduce((s, a) => s + f(a), 0n);
      t.equal(sum((a) => a.debits_posted), sum((a) => a.credits_posted), `ledger ${ledger}: debits_posted == credits_posted`);
      t.equal(sum((a) => a.debits_pending), sum((a) => a.credits_pending), `ledger ${ledger}: debits_pending == credits_pending`);
    }
    const expired = (id: bigint): boolean => shard.ledger.pending.get(id)?.status === PendingStatus.expired;
    const { balances } = recomputeBalances(accounts, [...transfers.values()], expired);
    for (const a of accounts) {
      const b = balances.get(a.id);
      t.same(
        [a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted],
        [b?.debits_pending, b?.debits_posted, b?.credits_pending, b?.credits_posted],
        `account ${a.id}: balances equal the sum of its transfers`,
      );
    }
    const expired_count = [...shard.ledger.pending.values()].filter((s) => s.status === PendingStatus.expired).length;
    t.comment(`${expired_count} pending transfers expired`);
  });

  await t.test('checkpoint + tail recovery equals a replay of the whole log', async (t) => {
    const recovered_hash = stateHash(shard.ledger);
    await shard.close();
    t.equal(await replayHash(dir), recovered_hash);
  });
});

function big(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? value.toString() : value;
}
