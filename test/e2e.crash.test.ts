// End-to-end crash test: `keel start` (the CLI, a real process) on a temp data directory, a load
// generator in this process sending transfer batches over the wire through the client library
// (reconnect off; several connections, so that every batch is a log entry of its own and the log
// passes the checkpoint interval), and SIGKILL at random moments: at least KILLS times 100..600 ms
// after the engine listens, under load, and now and then 100..600 ms after the spawn, during startup
// and recovery. Each time the engine is restarted on the same data directory (the dead engine's lock
// must be taken over) and the load goes on once it listens.
//
// Every batch is recorded with what the channel learnt of it:
// - acknowledged: a status and a timestamp per event;
// - unknown: in flight when the engine died (`outcome_unknown`), so it may or may not have been applied;
// - not sent: failed before it left the client (`outcome_unknown` false), so it must not be there.
//
// Batches mix plain transfers (some against balance limits, which may fail), linked chains (half of
// them end with a transfer that must fail, so the whole chain rolls back; some hold a pending transfer
// and its post), pending transfers, and posts and voids of earlier batches' pending transfers.
//
// At the end, on the last engine (which is then stopped cleanly and restarted once more):
// - every acknowledged created transfer is there, with the fields it was sent with and its timestamp;
// - every acknowledged failure, and every batch never sent, is absent;
// - no linked chain is half applied, acknowledged or not;
// - the engine holds no transfer that was never sent;
// - per ledger, debits equal credits (posted and pending);
// - every account's balances are the sums of the transfers that exist.
// Then every batch of unknown outcome and a sample of acknowledged ones are resent, as a channel
// does after a lost connection: what exists answers `exists` with its original timestamp (a chain:
// `exists` for its first event, `linked_event_failed` for the rest, as in TigerBeetle), burned ids
// `id_already_failed`, nothing acknowledged as failed gets created, chains stay whole, and the books
// still balance. A clean SIGTERM and restart must then show exactly the same accounts and transfers.
//
// The engine runs SHARDS shards (2 unless KEEL_E2E_CRASH_SHARDS says otherwise), and the accounts
// spread over them by partition, so about half of the transfers and most chains are cross-shard:
// kills land in the middle of cross-shard groups, which recovery must finish on every shard or on
// none. The test counts the cross-shard transfers it got acknowledged.
//
// KEEL_E2E_CRASH_SEED replays a run's workload and kill delays (the kill moments themselves still
// depend on the machine's speed); KEEL_E2E_CRASH_KILLS sets the number of kills.

import t from 'tap';
import { shardOfAccount } from '../src/shard/partition.ts';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  connect,
  AccountFlags as AF,
  CreateAccountStatus,
  CreateTransferStatus as TS,
  KeelError,
  TransferFlags as TF,
  transferStatusName,
  type Account,
  type KeelClient,
  type Transfer,
} from '../src/client/index.ts';

const SEED = Number(process.env.KEEL_E2E_CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31));
const KILLS = Number(process.env.KEEL_E2E_CRASH_KILLS ?? 20);
const SHARDS = Number(process.env.KEEL_E2E_CRASH_SHARDS ?? 2);
/** Connections sending batches, one at a time each. */
const LANES = 8;
/** Share of kills timed from the spawn rather than from "listening": some land during recovery. */
const KILL_FROM_SPAWN = 0.1;

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const MAIN = join(ROOT, 'src/cli/main.ts');
const TOKEN_RE = /keel_[A-Za-z0-9_-]{43}/;
const LIMIT = 8190;
const HUGE = 1_000_000_000_000n;

/** mulberry32: small, seeded, good enough to pick workloads and delays. */
class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let x = this.s;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  }
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)];
  }
}

// ---------------------------------------------------------------------------------------------
// Accounts and the workload.

const L1 = 1;
const L2 = 2;
/** Ledger 1, no limits. */
const OPEN_1 = [1n, 2n, 3n, 4n, 5n, 6n].map((i) => (1n << 40n) + i);
/** Ledger 1: debits must not exceed credits (debiting it often fails). */
const CAPPED_DEBIT = (1n << 40n) + 7n;
/** Ledger 1: credits must not exceed debits (crediting it often fails). */
const CAPPED_CREDIT = (1n << 40n) + 8n;
/** Ledger 2, no limits. */
const OPEN_2 = [11n, 12n, 13n].map((i) => (1n << 40n) + i);
/** Ledger 2: debits must not exceed credits. */
const CAPPED_DEBIT_2 = (1n << 40n) + 14n;
/** Never touched by a transfer: must simply survive. */
const IDLE = (1n << 40n) + 20n;

const ACCOUNTS = [
  ...OPEN_1.map((id, i) => ({ id, ledger: L1, code: 10, flags: i % 2 === 0 ? AF.history : 0, user_data_64: id })),
  { id: CAPPED_DEBIT, ledger: L1, code: 10, flags: AF.debits_must_not_exceed_credits | AF.history },
  { id: CAPPED_CREDIT, ledger: L1, code: 10, flags: AF.credits_must_not_exceed_debits },
  ...OPEN_2.map((id) => ({ id, ledger: L2, code: 20, flags: 0 })),
  { id: CAPPED_DEBIT_2, ledger: L2, code: 20, flags: AF.debits_must_not_exceed_credits },
  { id: IDLE, ledger: 3, code: 30, flags: AF.history, user_data_32: 7 },
];
const ACCOUNT_IDS = ACCOUNTS.map((a) => a.id);
const LEDGER_OF = new Map(ACCOUNTS.map((a) => [a.id, a.ledger]));

/** A transfer as sent: every field explicit, so that a created transfer must equal it (but for its timestamp). */
interface Event {
  id: bigint;
  debit_account_id: bigint;
  credit_account_id: bigint;
  amount: bigint;
  pending_id: bigint;
  ledger: number;
  code: number;
  flags: number;
  timeout: number;
  user_data_64: bigint;
  user_data_32: number;
}

type Outcome =
  | { kind: 'acked'; status: number[]; timestamp: bigint[] }
  | { kind: 'unknown'; error: string }
  | { kind: 'not_sent'; error: string };

interface Batch {
  n: number;
  life: number;
  events: Event[];
  /** Index ranges [start, end) of the linked chains. */
  chains: [number, number][];
  outcome: Outcome | null;
}

interface PendingRef {
  id: bigint;
  dr: bigint;
  cr: bigint;
  amount: bigint;
  ledger: number;
  code: number;
}

class Workload {
  private next_id = 1n << 41n;
  private batches_made = 0;
  readonly batches: Batch[] = [];
  /** Pending transfers acknowledged as created and not yet targeted by a post or void. */
  readonly pending_acked: PendingRef[] = [];
  /** Pending transfers of batches with an unknown outcome (may or may not exist). */
  readonly pending_maybe: PendingRef[] = [];

  constructor(private readonly rng: Rng) {}

  private id(): bigint {
    return this.next_id++;
  }

  private plain(dr: bigint, cr: bigint, amount: bigint, flags = 0, batch: number): Event {
    const ledger = LEDGER_OF.get(dr)!;
    return { id: this.id(), debit_account_id: dr, credit_account_id: cr, amount, pending_id: 0n, ledger, code: ledger * 10 + 1, flags, timeout: 0, user_data_64: BigInt(batch), user_data_32: this.rng.int(1, 1000) };
  }

  private two(accounts: readonly bigint[]): [bigint, bigint] {
    const a = this.rng.pick(accounts);
    let b = this.rng.pick(accounts);
    while (b === a) b = this.rng.pick(accounts);
    return [a, b];
  }

  private pending(dr: bigint, cr: bigint, batch: number, flags = 0): Event {
    const e = this.plain(dr, cr, BigInt(this.rng.int(1, 500)), TF.pending | flags, batch);
    // Some with a deadline far beyond the test: the expiry heap goes through recovery, nothing expires.
    if (this.rng.chance(0.3)) e.timeout = 3600;
    return e;
  }

  /** A post (of `amount` at most the pending amount) or a void (of exactly it) of `p`. */
  private resolve(p: PendingRef, batch: number, flags = 0): Event {
    const post = this.rng.chance(0.7);
    // Never 0: a post of 0 posts the whole amount (PROTOCOL.md), and the stored amount would differ from the one sent.
    const amount = post ? (this.rng.chance(0.5) ? p.amount : BigInt(this.rng.int(1, Number(p.amount)))) : p.amount;
    return {
      id: this.id(),
      debit_account_id: p.dr,
      credit_account_id: p.cr,
      amount,
      pending_id: p.id,
      ledger: p.ledger,
      code: p.code,
      flags: (post ? TF.post_pending_transfer : TF.void_pending_transfer) | flags,
      timeout: 0,
      user_data_64: BigInt(batch),
      user_data_32: this.rng.int(1, 1000),
    };
  }

  make(life: number): Batch {
    const n = this.batches_made++;
    const events: Event[] = [];
    const chains: [number, number][] = [];
    const size = this.rng.int(2, 12);
    while (events.length < size) {
      const r = this.rng.next();
      if (r < 0.35) {
        // Plain, between unrestricted accounts of either ledger.
        const [dr, cr] = this.two(this.rng.chance(0.75) ? OPEN_1 : OPEN_2);
        events.push(this.plain(dr, cr, BigInt(this.rng.int(1, 1000)), 0, n));
      } else if (r < 0.5) {
        // Against a limit: may fail with exceeds_credits / exceeds_debits (and burn its id).
        const which = this.rng.int(0, 2);
        if (which === 0) events.push(this.plain(CAPPED_DEBIT, this.rng.pick(OPEN_1), BigInt(this.rng.int(1, 400)), 0, n));
        else if (which === 1) events.push(this.plain(this.rng.pick(OPEN_1), CAPPED_CREDIT, BigInt(this.rng.int(1, 400)), 0, n));
        else events.push(this.plain(this.rng.pick(OPEN_1), CAPPED_DEBIT, BigInt(this.rng.int(1, 300)), 0, n)); // feeds CAPPED_DEBIT
        if (this.rng.chance(0.3)) events.push(this.plain(CAPPED_DEBIT_2, this.rng.pick(OPEN_2), BigInt(this.rng.int(1, 100)), 0, n));
        if (this.rng.chance(0.3)) events.push(this.plain(this.rng.pick(OPEN_2), CAPPED_DEBIT_2, BigInt(this.rng.int(1, 120)), 0, n));
      } else if (r < 0.7) {
        // A linked chain of 2..4; half end with a transfer that must fail, rolling the chain back;
        // some hold a pending transfer and its post or void.
        const members: Event[] = [];
        const length = this.rng.int(2, 4);
        const doomed = this.rng.chance(0.5);
        if (this.rng.chance(0.3)) {
          const [dr, cr] = this.two(OPEN_1);
          const p = this.pending(dr, cr, n);
          members.push(p, this.resolve({ id: p.id, dr, cr, amount: p.amount, ledger: p.ledger, code: p.code }, n));
        }
        while (members.length < length - (doomed ? 1 : 0)) {
          const [dr, cr] = this.two(OPEN_1);
          members.push(this.plain(dr, cr, BigInt(this.rng.int(1, 100)), 0, n));
        }
        if (doomed) members.push(this.plain(CAPPED_DEBIT, this.rng.pick(OPEN_1), HUGE, 0, n));
        members.forEach((m, k) => {
          if (k < members.length - 1) m.flags |= TF.linked;
          else m.flags &= ~TF.linked;
        });
        chains.push([events.length, events.length + members.length]);
        events.push(...members);
      } else if (r < 0.85) {
        // A pending transfer, resolved by a later batch (or never).
        const [dr, cr] = this.two(this.rng.chance(0.75) ? OPEN_1 : OPEN_2);
        events.push(this.pending(dr, cr, n));
      } else {
        // A post or void of an earlier batch's pending transfer (acknowledged, or of unknown fate).
        const pool = this.rng.chance(0.85) || this.pending_maybe.length === 0 ? this.pending_acked : this.pending_maybe;
        if (pool.length === 0) continue;
        const p = pool.splice(this.rng.int(0, pool.length - 1), 1)[0];
        events.push(this.resolve(p, n));
      }
    }
    const batch: Batch = { n, life, events, chains, outcome: null };
    this.batches.push(batch);
    return batch;
  }

  /** Records what the channel learnt, and offers the batch's pending transfers to later batches. */
  settle(batch: Batch, outcome: Outcome): void {
    batch.outcome = outcome;
    if (outcome.kind === 'not_sent') return;
    const inChain = new Set<number>();
    for (const [s, e] of batch.chains) for (let i = s; i < e; i++) inChain.add(i);
    batch.events.forEach((e, i) => {
      if ((e.flags & TF.pending) === 0 || inChain.has(i)) return;
      const ref = { id: e.id, dr: e.debit_account_id, cr: e.credit_account_id, amount: e.amount, ledger: e.ledger, code: e.code };
      if (outcome.kind === 'unknown') this.pending_maybe.push(ref);
      else if (outcome.status[i] === TS.created) this.pending_acked.push(ref);
    });
  }
}

// ---------------------------------------------------------------------------------------------
// The engine process.

interface Server {
  child: ChildProcess;
  pid: number;
  spawned_at: number;
  /** Resolves with the URL once it listens; rejects if it exits first. */
  listening: Promise<string>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  out: { stdout: string; stderr: string };
}

function startKeel(data: string): Server {
  const child = spawn(process.execPath, ['--import=tsx', MAIN, 'start', '--port', '0', '--data', data, '--shards', String(SHARDS)], {
    cwd: ROOT,
    env: { ...process.env, KEEL_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const out = { stdout: '', stderr: '' };
  child.stdout.on('data', (d: Buffer) => (out.stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out.stderr += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal })),
  );
  const listening = new Promise<string>((resolve, reject) => {
    const look = (): void => {
      const m = /keel listening on (ws:\/\/\S+)/.exec(out.stdout);
      if (m !== null) resolve(m[1]);
    };
    child.stdout.on('data', look);
    void exited.then(({ code, signal }) => reject(new Error(`keel start ended (${code ?? signal}) before listening:\n${out.stdout}\n${out.stderr}`)));
  });
  listening.catch(() => {});
  if (child.pid === undefined) throw new Error('keel start could not be spawned');
  return { child, pid: child.pid, spawned_at: Date.now(), listening, exited, out };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * LANES connections, each sending one batch at a time until its connection dies or `stop()` says so.
 * Separate connections, so that batches are not merged into one request: every batch is a log entry
 * of its own, and the log passes the checkpoint interval (4096 entries) during the run.
 */
async function load(url: string, token: string, work: Workload, life: number, stop: () => boolean, unexpected: string[]): Promise<void> {
  const lane = async (): Promise<void> => {
    let keel: KeelClient;
    try {
      keel = await connect({ url, token, reconnect: false, heartbeat_ms: 0, timeout_ms: 20_000 });
    } catch (error) {
      if (error instanceof KeelError && error.code === 'connection_failed' && stop()) return; // killed meanwhile
      throw error;
    }
    try {
      while (!stop()) {
        const batch = work.make(life);
        try {
          const r = await keel.createTransfers(batch.events, { timeout_ms: 20_000 });
          work.settle(batch, { kind: 'acked', status: r.status, timestamp: r.timestamp });
        } catch (error) {
          if (!(error instanceof KeelError)) throw error;
          work.settle(batch, error.outcome_unknown ? { kind: 'unknown', error: error.code } : { kind: 'not_sent', error: error.code });
          if (error.code === 'busy') {
            await sleep(5);
            continue;
          }
          if (error.code !== 'connection_closed') unexpected.push(`${error.code}: ${error.message}`);
          return;
        }
      }
    } finally {
      await keel.close();
    }
  };
  await Promise.all(Array.from({ length: LANES }, lane));
}

// ---------------------------------------------------------------------------------------------
// Reading the final state.

async function lookupAll(keel: KeelClient, ids: readonly bigint[]): Promise<Map<bigint, Transfer>> {
  const found = new Map<bigint, Transfer>();
  for (let i = 0; i < ids.length; i += LIMIT) {
    for (const x of await keel.lookupTransfers(ids.slice(i, i + LIMIT))) found.set(x.id, x);
  }
  return found;
}

/** Every transfer in the engine, by pages of query_transfers in timestamp order. */
async function scanAll(keel: KeelClient): Promise<Transfer[]> {
  const out: Transfer[] = [];
  let from = 0n;
  for (;;) {
    const page = await keel.queryTransfers({ timestamp_min: from, limit: LIMIT });
    out.push(...page);
    if (page.length < LIMIT) return out;
    from = page[page.length - 1].timestamp + 1n;
  }
}

const show = (value: unknown): string => JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v));
const fields = (x: Event | Transfer): Event => ({
  id: x.id,
  debit_account_id: x.debit_account_id,
  credit_account_id: x.credit_account_id,
  amount: x.amount,
  pending_id: x.pending_id,
  ledger: x.ledger,
  code: x.code,
  flags: x.flags,
  timeout: x.timeout,
  user_data_64: x.user_data_64,
  user_data_32: x.user_data_32,
});

/** Balances recomputed from the transfers that exist (no expiry: no transfer here can expire during the test). */
function balancesFrom(transfers: Iterable<Transfer>): Map<bigint, { dp: bigint; dP: bigint; cp: bigint; cP: bigint }> {
  const all = [...transfers];
  const resolved = new Set(all.filter((x) => (x.flags & (TF.post_pending_transfer | TF.void_pending_transfer)) !== 0).map((x) => x.pending_id));
  const b = new Map(ACCOUNT_IDS.map((id) => [id, { dp: 0n, dP: 0n, cp: 0n, cP: 0n }]));
  for (const x of all) {
    const dr = b.get(x.debit_account_id)!;
    const cr = b.get(x.credit_account_id)!;
    if ((x.flags & TF.pending) !== 0) {
      if (resolved.has(x.id)) continue;
      dr.dp += x.amount;
      cr.cp += x.amount;
    } else if ((x.flags & TF.void_pending_transfer) !== 0) {
      continue;
    } else {
      dr.dP += x.amount;
      cr.cP += x.amount;
    }
  }
  return b;
}


const TRANSIENT = new Set<number>([
  TS.debit_account_not_found,
  TS.credit_account_not_found,
  TS.pending_transfer_not_found,
  TS.exceeds_credits,
  TS.exceeds_debits,
  TS.debit_account_already_closed,
  TS.credit_account_already_closed,
]);

/**
 * The books as a whole: no transfer that was never sent, none twice, timestamps strictly increasing;
 * every account there; balances equal to the sums of the transfers that exist; limits kept; per
 * ledger, debits equal credits.
 */
async function checkBooks(keel: KeelClient, ids: readonly bigint[]): Promise<{ problems: string[]; accounts: Account[]; scanned: Transfer[] }> {
  const problems: string[] = [];
  const problem = (text: string): void => {
    if (problems.length < 30) problems.push(text);
  };
  const found = await lookupAll(keel, ids);
  const scanned = await scanAll(keel);
  const sent = new Set(ids);
  const seen = new Set<bigint>();
  for (const x of scanned) {
    if (!sent.has(x.id)) problem(`transfer ${x.id} exists but was never sent: ${show(x)}`);
    if (seen.has(x.id)) problem(`transfer ${x.id} is listed twice`);
    seen.add(x.id);
  }
  if (scanned.length !== found.size) problem(`query_transfers lists ${scanned.length} transfers, lookups found ${found.size}`);
  for (let i = 1; i < scanned.length; i++) {
    if (scanned[i].timestamp <= scanned[i - 1].timestamp) problem(`timestamps not strictly increasing at ${scanned[i].id}`);
  }
  for (const x of found.values()) {
    if ((x.flags & (TF.post_pending_transfer | TF.void_pending_transfer)) !== 0 && !found.has(x.pending_id)) {
      problem(`transfer ${x.id} resolves ${x.pending_id}, which does not exist`);
    }
  }
  const accounts = await keel.lookupAccounts(ACCOUNT_IDS);
  if (accounts.length !== ACCOUNTS.length) problem(`${accounts.length} of ${ACCOUNTS.length} accounts found`);
  const expected = balancesFrom(found.values());
  const books = new Map<number, { dp: bigint; dP: bigint; cp: bigint; cP: bigint }>();
  for (const a of accounts) {
    const e = expected.get(a.id)!;
    const got = { dp: a.debits_pending, dP: a.debits_posted, cp: a.credits_pending, cP: a.credits_posted };
    if (show(got) !== show(e)) problem(`account ${a.id}: balances ${show(got)}, but its transfers sum to ${show(e)}`);
    const l = books.get(a.ledger) ?? { dp: 0n, dP: 0n, cp: 0n, cP: 0n };
    l.dp += a.debits_pending;
    l.dP += a.debits_posted;
    l.cp += a.credits_pending;
    l.cP += a.credits_posted;
    books.set(a.ledger, l);
    if ((a.flags & AF.debits_must_not_exceed_credits) !== 0 && a.debits_posted + a.debits_pending > a.credits_posted) problem(`account ${a.id} breaks its debit limit`);
    if ((a.flags & AF.credits_must_not_exceed_debits) !== 0 && a.credits_posted + a.credits_pending > a.debits_posted) problem(`account ${a.id} breaks its credit limit`);
  }
  for (const [ledger, l] of books) {
    if (l.dP !== l.cP) problem(`ledger ${ledger}: posted debits ${l.dP} != posted credits ${l.cP}`);
    if (l.dp !== l.cp) problem(`ledger ${ledger}: pending debits ${l.dp} != pending credits ${l.cp}`);
  }
  return { problems, accounts, scanned };
}

// ---------------------------------------------------------------------------------------------

t.test('kill -9 at random moments under load over the wire: acknowledged transfers survive, chains are whole, books balance', async (t) => {
  t.comment(`seed ${SEED} (KEEL_E2E_CRASH_SEED=${SEED} to replay the workload and delays), ${KILLS} kills`);
  const dir = mkdtempSync(join(tmpdir(), 'keel-e2e-crash-'));
  const data = join(dir, 'data');
  let server: Server | null = null;
  t.teardown(async () => {
    if (server !== null && server.child.exitCode === null && server.child.signalCode === null) {
      process.kill(server.pid, 'SIGKILL');
      await server.exited;
    }
    rmSync(dir, { recursive: true, force: true });
  });

  const rng = new Rng(SEED);
  const work = new Workload(new Rng(SEED ^ 0x5eed));
  const started = Date.now();
  let token = '';
  let kills_under_load = 0;
  let kills_before_listening = 0;
  /** Kills timed from the spawn that came after the engine listened anyway. */
  let kills_from_spawn_listening = 0;
  /** Spawn to "listening", per start. */
  const startups: number[] = [];
  let stale_locks = 0;
  const killed_pids = new Set<number>();
  const recoveries: string[] = [];
  /** Errors other than the lost connection of a kill (or `busy`). */
  const unexpected: string[] = [];
  let life = 0;

  // Accounts first, acknowledged before any kill.
  server = startKeel(data);
  {
    const url = await server.listening;
    token = TOKEN_RE.exec(server.out.stdout)?.[0] ?? '';
    t.ok(token, 'the first start prints the admin token');
    const keel = await connect({ url, token, reconnect: false });
    const r = await keel.createAccounts(ACCOUNTS);
    t.same(r.status, ACCOUNTS.map(() => CreateAccountStatus.created), 'accounts created');
    await keel.close();
  }

  // KILLS kills under load, timed from "listening"; besides them, now and then a kill timed from the
  // spawn, which lands during startup and recovery.
  while (kills_under_load < KILLS) {
    life++;
    const from_spawn = life > 1 && rng.chance(KILL_FROM_SPAWN);
    const delay = rng.int(100, 600);
    const current: Server = server;
    let killed = false;
    const kill = (): void => {
      if (killed) return;
      killed = true;
      process.kill(current.pid, 'SIGKILL');
    };
    let timer: NodeJS.Timeout | null = null;
    if (from_spawn) timer = setTimeout(kill, Math.max(0, delay - (Date.now() - current.spawned_at)));
    let url: string | null = null;
    try {
      url = await current.listening;
    } catch (error) {
      if (!killed) throw error; // ended by itself: recovery refused, or the lock was not taken over
    }
    if (url !== null) {
      startups.push(Date.now() - current.spawned_at);
      if (life > 1) t.notMatch(current.out.stdout, TOKEN_RE, `life ${life}: no new token on a restart`);
      if (!from_spawn) timer = setTimeout(kill, delay);
      await load(url, token, work, life, () => killed, unexpected);
    }
    if (timer !== null) clearTimeout(timer);
    kill();
    const { signal } = await current.exited;
    t.equal(signal, 'SIGKILL', `life ${life}: the engine died of the kill (stderr: ${current.out.stderr.trim()})`);
    // A dead engine's lock stays behind; the next start must take it over.
    const lock = existsSync(join(data, 'keel.lock')) ? Number.parseInt(readFileSync(join(data, 'keel.lock'), 'utf8'), 10) : null;
    killed_pids.add(current.pid);
    if (lock !== null) {
      // An engine killed before it locked leaves an older dead engine's lock in place.
      if (killed_pids.has(lock)) stale_locks++;
      else t.fail(`life ${life}: keel.lock names ${lock}, no engine this test killed`);
    }
    const summary = /recovery\s+(shard 0: .*)/.exec(current.out.stdout)?.[1];
    if (summary !== undefined) recoveries.push(summary);
    if (url === null) kills_before_listening++;
    else if (!from_spawn) kills_under_load++;
    else kills_from_spawn_listening++;
    server = startKeel(data);
  }
  const kills = life;

  // The last engine: a little more load, then the checks.
  life++;
  const url = await server.listening;
  const until = Date.now() + 300;
  await load(url, token, work, life, () => Date.now() > until, unexpected);
  const keel = await connect({ url, token, reconnect: false, timeout_ms: 30_000 });
  const load_ms = Date.now() - started;

  const batches = work.batches.filter((b) => b.outcome !== null);
  const acked = batches.filter((b) => b.outcome?.kind === 'acked');
  const unknown = batches.filter((b) => b.outcome?.kind === 'unknown');
  const not_sent = batches.filter((b) => b.outcome?.kind === 'not_sent');
  const events = batches.reduce((n, b) => n + b.events.length, 0);
  t.comment(
    `${kills} kills in ${load_ms} ms: ${kills_under_load} under load, ${kills_before_listening} before the engine listened, ${kills_from_spawn_listening} other; ` +
      `spawn to listening ${Math.min(...startups)}..${Math.max(...startups)} ms; ${batches.length} batches of ${events} transfers: ` +
      `${acked.length} acknowledged, ${unknown.length} of unknown outcome, ${not_sent.length} never sent`,
  );
  t.ok(acked.length > kills, 'the load got through between kills');
  if (SHARDS > 1) {
    const sent = acked.flatMap((b) => b.events).filter((e) => e.debit_account_id !== 0n);
    const cross = sent.filter((e) => shardOfAccount(e.debit_account_id, SHARDS) !== shardOfAccount(e.credit_account_id, SHARDS));
    t.comment(`${cross.length} of ${sent.length} acknowledged transfers (posts and voids aside) were cross-shard (${SHARDS} shards)`);
    t.ok(cross.length >= sent.length / 4, 'a high share of the acknowledged load crossed shards');
  }
  t.ok(stale_locks >= KILLS, `the next start took over the dead engine's lock (${stale_locks} times)`);
  t.same(unexpected, [], 'no call failed but for the connection lost at a kill');

  const ids = batches.flatMap((b) => b.events.map((e) => e.id));
  const found = await lookupAll(keel, ids);
  const problems: string[] = [];
  const problem = (text: string): void => {
    if (problems.length < 30) problems.push(text);
  };
  let created = 0;
  let failed = 0;
  let unknown_applied_chains = 0;
  let unknown_absent_chains = 0;
  for (const b of batches) {
    const outcome = b.outcome!;
    const inChain = new Set<number>();
    for (const [s, e] of b.chains) {
      for (let i = s; i < e; i++) inChain.add(i);
      const present = b.events.slice(s, e).map((x) => found.has(x.id));
      if (!present.every((p) => p === present[0])) problem(`batch ${b.n} (${outcome.kind}): chain [${s}, ${e}) is half applied: ${present.join(',')}`);
      if (outcome.kind === 'unknown') {
        if (present[0]) unknown_applied_chains++;
        else unknown_absent_chains++;
      }
      if (outcome.kind === 'acked') {
        const statuses = outcome.status.slice(s, e);
        const all = statuses.every((st) => st === TS.created);
        const none = statuses.every((st) => st !== TS.created);
        if (!all && !none) problem(`batch ${b.n}: chain [${s}, ${e}) acknowledged half created: ${statuses.map(transferStatusName).join(',')}`);
        if (none && !statuses.includes(TS.linked_event_failed)) problem(`batch ${b.n}: failed chain without linked_event_failed: ${statuses.map(transferStatusName).join(',')}`);
      }
    }
    b.events.forEach((e, i) => {
      const x = found.get(e.id);
      if (x !== undefined && show(fields(x)) !== show(fields(e))) problem(`batch ${b.n} (${outcome.kind}) event ${i}: stored ${show(x)}, sent ${show(e)}`);
      if (outcome.kind === 'not_sent') {
        if (x !== undefined) problem(`batch ${b.n} was never sent (${outcome.error}) but event ${i} (${e.id}) exists`);
      } else if (outcome.kind === 'acked') {
        const st = outcome.status[i];
        if (st === TS.created) {
          created++;
          if (x === undefined) problem(`batch ${b.n} event ${i} (${e.id}) was acknowledged created at ${outcome.timestamp[i]} but is gone`);
          else if (x.timestamp !== outcome.timestamp[i]) problem(`batch ${b.n} event ${i}: timestamp ${x.timestamp}, acknowledged ${outcome.timestamp[i]}`);
        } else {
          failed++;
          if (x !== undefined) problem(`batch ${b.n} event ${i} (${e.id}) was acknowledged ${transferStatusName(st)} but exists`);
          if (st === TS.exists || st === TS.id_already_failed) problem(`batch ${b.n} event ${i}: ${transferStatusName(st)} for an id never sent before`);
          if (outcome.timestamp[i] !== 0n) problem(`batch ${b.n} event ${i}: failed with a timestamp`);
        }
      }
    });
  }
  t.comment(
    `${created} acknowledged created and ${failed} acknowledged failed transfers checked; unknown-outcome chains: ` +
      `${unknown_applied_chains} applied whole, ${unknown_absent_chains} absent whole`,
  );

  const first = await checkBooks(keel, ids);
  problems.push(...first.problems);
  t.same(problems, [], 'acknowledged transfers survive with their fields, failures and unsent batches are absent, chains are whole, balances add up');
  t.ok(found.size > 0 && unknown.length > 0, `some batches were in flight at a kill (${unknown.length}), and ${found.size} transfers exist`);

  // What a channel does after a lost connection: resend the same events (docs/client.md). Every
  // batch of unknown outcome, and a sample of acknowledged ones, go again, after all those crashes.
  const resend_rng = new Rng(SEED ^ 0x7e5e);
  const sample = [...unknown, ...acked.filter(() => resend_rng.chance(120 / Math.max(1, acked.length)))];
  const resent = await Promise.all(sample.map(async (b) => ({ b, r: await keel.createTransfers(b.events, { timeout_ms: 30_000 }) })));
  const after_resend = await lookupAll(keel, ids);
  const resend_problems: string[] = [];
  const rp = (text: string): void => {
    if (resend_problems.length < 30) resend_problems.push(text);
  };
  let exists = 0;
  let burned = 0;
  let applied_now = 0;
  let chains_exist = 0;
  for (const { b, r } of resent) {
    const outcome = b.outcome!;
    // As in TigerBeetle (and the reference model), `exists` is not `created`: it breaks a linked
    // chain like any other status, so a chain resent whole answers `exists` for its first event and
    // `linked_event_failed` for the others, changing nothing. (docs/client.md says a resent chain
    // answers `exists` throughout; see the report.)
    const laterInChain = new Set<number>();
    for (const [s, e] of b.chains) {
      if (!found.has(b.events[s].id)) continue;
      chains_exist++;
      for (let i = s + 1; i < e; i++) laterInChain.add(i);
    }
    b.events.forEach((e, i) => {
      const st = r.status[i];
      const before = found.get(e.id);
      const now = after_resend.get(e.id);
      if (before !== undefined && laterInChain.has(i)) {
        if (st !== TS.linked_event_failed || r.timestamp[i] !== 0n) rp(`batch ${b.n} (${outcome.kind}) event ${i}: in a chain that exists, resent: ${transferStatusName(st)} at ${r.timestamp[i]}`);
      } else if (before !== undefined) {
        if (st !== TS.exists) rp(`batch ${b.n} (${outcome.kind}) event ${i}: exists, resent: ${transferStatusName(st)}`);
        else if (r.timestamp[i] !== before.timestamp) rp(`batch ${b.n} event ${i}: resent exists with timestamp ${r.timestamp[i]}, stored ${before.timestamp}`);
        else exists++;
      } else if (outcome.kind === 'acked') {
        const original = outcome.status[i];
        if (TRANSIENT.has(original) && st !== TS.id_already_failed) rp(`batch ${b.n} event ${i}: failed ${transferStatusName(original)}, resent: ${transferStatusName(st)}, not id_already_failed`);
        if (st === TS.id_already_failed) burned++;
        if (st === TS.created || now !== undefined) rp(`batch ${b.n} event ${i}: failed ${transferStatusName(original)}, but the resend created it`);
      } else if (st === TS.created) {
        applied_now++;
        if (now === undefined) rp(`batch ${b.n} event ${i}: resent and created, but not found`);
      } else if (st === TS.exists) rp(`batch ${b.n} event ${i}: was absent, resent: exists`);
    });
    for (const [s, e] of b.chains) {
      const present = b.events.slice(s, e).map((x) => after_resend.has(x.id));
      if (!present.every((p) => p === present[0])) rp(`batch ${b.n}: chain [${s}, ${e}) half applied after a resend: ${present.join(',')}`);
    }
  }
  const second = await checkBooks(keel, ids);
  t.same([...resend_problems, ...second.problems], [], 'resends after the crashes: exists with the original timestamp, id_already_failed for burned ids, chains whole, books balance');
  t.comment(
    `resent ${resent.length} batches (${unknown.length} of unknown outcome): ${exists} exists (${chains_exist} of them chains), ` +
      `${burned} id_already_failed, ${applied_now} applied only now`,
  );
  const { accounts, scanned } = second;

  // A clean stop and start must not change a thing either.
  await keel.close();
  process.kill(server.pid, 'SIGTERM');
  const stopped = await server.exited;
  t.equal(stopped.code, 0, 'SIGTERM: exit 0');
  server = startKeel(data);
  const again = await connect({ url: await server.listening, token, reconnect: false, timeout_ms: 30_000 });
  t.same(await again.lookupAccounts(ACCOUNT_IDS), accounts, 'the same accounts after a clean stop and start');
  const rescanned = await scanAll(again);
  t.equal(show(rescanned), show(scanned), 'the same transfers after a clean stop and start');
  await again.close();
  process.kill(server.pid, 'SIGTERM');
  t.equal((await server.exited).code, 0, 'SIGTERM: exit 0');
  t.comment(`recoveries seen: ${recoveries.length}; last: ${recoveries[recoveries.length - 1] ?? 'none'}; total ${Date.now() - started} ms`);
});
