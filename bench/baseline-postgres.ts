// The same transfer workload against PostgreSQL: the conventional relational core a bank would
// otherwise run (issue: load-testing benchmarks). It installs and starts nothing: it takes a connection
// URL (bench/README.md says how to start a local PostgreSQL from Debian's packages).
//
//   npm run bench:postgres -- --url postgres://postgres@127.0.0.1:55432/postgres --mode txn --connections 8 --duration 20
//   npm run bench:postgres -- --url postgres://postgres@127.0.0.1:55432/postgres --mode batch --batch 100 --connections 8 --duration 20
//
// Schema (recreated in the schema `keel_bench` at every run): accounts with four balances and the
// overdraft guards' flags; transfers with a primary key, foreign keys to both accounts and an index on
// each account column, as a core that lists an account's transfers needs (--schema lean: primary keys
// only, an upper bound).
//
// --mode txn: one transfer per transaction, as application code would do it: BEGIN; guarded UPDATE of
//   the debit account; UPDATE of the credit account (the two in id order, so that two transfers
//   between the same accounts cannot deadlock); INSERT of the transfer; COMMIT. A post or void first
//   flips its pending transfer's state (guarded on it still being pending).
// --mode batch: up to --batch transfers (default 100) in one statement (one implicit transaction): the
//   events as arrays, the accounts locked in id order, the per-account sums applied with the guards,
//   the transfers inserted. All or nothing, like a linked batch.
//
// Both require fsync=on and synchronous_commit=on on the server, and refuse to run otherwise. At the
// end, every account's balances are checked against what the database confirmed.

import { readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import pg from 'pg';
import {
  UsageError,
  WORKLOAD_USAGE,
  baseReport,
  commonOptions,
  WARMUP_ID_OFFSET,
  cpuSeconds,
  expectedBalances,
  finish,
  int,
  machine,
  parseCli,
  run,
  str,
  warmupSeed,
  type Report,
  type RunResult,
  type Target,
} from './load.ts';
import { EventKind, Workload, type Ev } from './workload.ts';

const USAGE = `Usage: npm run bench:postgres -- --url postgres://USER@127.0.0.1:PORT/DB [options]

The Keel transfer workload against PostgreSQL. Drops and recreates the schema keel_bench in that
database at every run; touches nothing else. Needs fsync=on and synchronous_commit=on.

PostgreSQL options:
  --url URL             connection URL (default $PGURL or $DATABASE_URL); use loopback
  --mode txn|batch      txn: one transfer per transaction (BEGIN, guarded debit, credit, insert,
                        COMMIT); batch: --batch transfers per statement (default txn)
  --server-pid PID      the postmaster's pid, to report the server's memory and CPU time
                        (postmaster and all its children)
  --data-dir DIR        the server's data directory, only to describe its disk in the report
  --schema full|lean    full (default): foreign keys from transfers to both accounts and an index
                        on each account column; lean: primary keys only, as an upper bound

${WORKLOAD_USAGE}

Defaults here: --connections 8 --inflight 1 (a connection runs one transaction at a time), --batch 1
with --mode txn and 100 with --mode batch, --accounts 10000, --transfers 1000000.
Exit code 1 on a balance mismatch or a fatal error; 2 on bad options.`;

const S = 'keel_bench';

const SCHEMA = `
DROP SCHEMA IF EXISTS ${S} CASCADE;
CREATE SCHEMA ${S};
CREATE TABLE ${S}.accounts (
  id bigint PRIMARY KEY,
  ledger integer NOT NULL,
  code integer NOT NULL,
  flags integer NOT NULL DEFAULT 0,           -- 2: debits must not exceed credits; 4: credits must not exceed debits
  debits_pending bigint NOT NULL DEFAULT 0,
  debits_posted bigint NOT NULL DEFAULT 0,
  credits_pending bigint NOT NULL DEFAULT 0,
  credits_posted bigint NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE ${S}.transfers (
  id bigint PRIMARY KEY,
  debit_account_id bigint NOT NULL,
  credit_account_id bigint NOT NULL,
  amount bigint NOT NULL CHECK (amount >= 0),
  pending_id bigint,
  ledger integer NOT NULL,
  code integer NOT NULL,
  flags integer NOT NULL,                     -- the event kind: 0 single, 1 pending, 2 post, 3 void
  state smallint NOT NULL,                    -- 0 final, 1 pending, 2 posted, 3 voided
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE FUNCTION ${S}.fail(message text) RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '%', message USING ERRCODE = 'check_violation';
END $$;
`;

/** What a core that lists an account's transfers has, and --schema lean leaves out. */
const SCHEMA_FULL = `
ALTER TABLE ${S}.transfers ADD FOREIGN KEY (debit_account_id) REFERENCES ${S}.accounts (id);
ALTER TABLE ${S}.transfers ADD FOREIGN KEY (credit_account_id) REFERENCES ${S}.accounts (id);
CREATE INDEX transfers_debit ON ${S}.transfers (debit_account_id);
CREATE INDEX transfers_credit ON ${S}.transfers (credit_account_id);
`;

// One transfer per transaction: the statements application code would send.
const Q = {
  debit_posted: `UPDATE ${S}.accounts SET debits_posted = debits_posted + $2
    WHERE id = $1 AND (flags & 2 = 0 OR debits_posted + debits_pending + $2 <= credits_posted)`,
  credit_posted: `UPDATE ${S}.accounts SET credits_posted = credits_posted + $2
    WHERE id = $1 AND (flags & 4 = 0 OR credits_posted + credits_pending + $2 <= debits_posted)`,
  debit_pending: `UPDATE ${S}.accounts SET debits_pending = debits_pending + $2
    WHERE id = $1 AND (flags & 2 = 0 OR debits_posted + debits_pending + $2 <= credits_posted)`,
  credit_pending: `UPDATE ${S}.accounts SET credits_pending = credits_pending + $2
    WHERE id = $1 AND (flags & 4 = 0 OR credits_posted + credits_pending + $2 <= debits_posted)`,
  debit_post: `UPDATE ${S}.accounts SET debits_pending = debits_pending - $2, debits_posted = debits_posted + $2 WHERE id = $1`,
  credit_post: `UPDATE ${S}.accounts SET credits_pending = credits_pending - $2, credits_posted = credits_posted + $2 WHERE id = $1`,
  debit_void: `UPDATE ${S}.accounts SET debits_pending = debits_pending - $2 WHERE id = $1`,
  credit_void: `UPDATE ${S}.accounts SET credits_pending = credits_pending - $2 WHERE id = $1`,
  resolve: `UPDATE ${S}.transfers SET state = $2 WHERE id = $1 AND state = 1 RETURNING debit_account_id, credit_account_id, amount`,
  insert: `INSERT INTO ${S}.transfers (id, debit_account_id, credit_account_id, amount, pending_id, ledger, code, flags, state)
    VALUES ($1, $2, $3, $4, $5, 1, 1, $6, $7)`,
} as const;

// Many transfers in one statement. Parameters: ids, kinds, debit and credit accounts, amounts, pending ids.
const BATCH = `
WITH ev AS (
  SELECT * FROM unnest($1::bigint[], $2::integer[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])
    AS e (id, kind, debit, credit, amount, pending_id)
),
resolved AS (
  UPDATE ${S}.transfers p SET state = CASE WHEN e.kind = 2 THEN 2 ELSE 3 END
  FROM ev e
  WHERE e.kind IN (2, 3) AND p.id = e.pending_id AND p.state = 1
  RETURNING e.id, e.kind, p.debit_account_id AS debit, p.credit_account_id AS credit, p.amount, p.id AS pending_id
),
applied AS (
  SELECT id, kind, debit, credit, amount, pending_id FROM ev WHERE kind IN (0, 1)
  UNION ALL
  SELECT id, kind, debit, credit, amount, pending_id FROM resolved
),
deltas AS (
  SELECT account, sum(dp)::bigint AS dp, sum(dpo)::bigint AS dpo, sum(cp)::bigint AS cp, sum(cpo)::bigint AS cpo
  FROM (
    SELECT debit AS account,
           CASE kind WHEN 0 THEN 0 WHEN 1 THEN amount ELSE -amount END AS dp,
           CASE WHEN kind IN (0, 2) THEN amount ELSE 0 END AS dpo,
           0::bigint AS cp, 0::bigint AS cpo
    FROM applied
    UNION ALL
    SELECT credit, 0, 0,
           CASE kind WHEN 0 THEN 0 WHEN 1 THEN amount ELSE -amount END,
           CASE WHEN kind IN (0, 2) THEN amount ELSE 0 END
    FROM applied
  ) x
  GROUP BY account
),
locked AS (
  SELECT a.id FROM ${S}.accounts a WHERE a.id IN (SELECT account FROM deltas) ORDER BY a.id FOR UPDATE
),
updated AS (
  UPDATE ${S}.accounts a
  SET debits_pending = a.debits_pending + d.dp, debits_posted = a.debits_posted + d.dpo,
      credits_pending = a.credits_pending + d.cp, credits_posted = a.credits_posted + d.cpo
  FROM deltas d
  WHERE a.id = d.account
    AND (SELECT count(*) FROM locked) > 0       -- runs the locking (in id order) first, once
    AND (a.flags & 2 = 0 OR a.debits_posted + a.debits_pending + d.dpo + d.dp <= a.credits_posted + d.cpo)
    AND (a.flags & 4 = 0 OR a.credits_posted + a.credits_pending + d.cpo + d.cp <= a.debits_posted + d.dpo)
  RETURNING a.id
),
inserted AS (
  INSERT INTO ${S}.transfers (id, debit_account_id, credit_account_id, amount, pending_id, ledger, code, flags, state)
  SELECT id, debit, credit, CASE kind WHEN 3 THEN 0 ELSE amount END, nullif(pending_id, 0), 1, 1, kind,
         CASE kind WHEN 1 THEN 1 ELSE 0 END
  FROM applied
  RETURNING id
)
SELECT CASE WHEN (SELECT count(*) FROM updated) <> (SELECT count(*) FROM deltas)
            THEN ${S}.fail('a guard failed or an account is missing: the batch is rolled back') ELSE 0 END AS guard,
       (SELECT count(*) FROM inserted) AS inserted,
       (SELECT array_agg(e.id) FROM ev e WHERE e.kind IN (2, 3) AND NOT EXISTS (SELECT 1 FROM resolved r WHERE r.id = e.id)) AS unresolved
`;

class TransferFailed extends Error {
  constructor(readonly status: string) {
    super(status);
  }
}

/** SQLSTATEs after which the same transaction is simply run again. */
const RETRY_CODES = new Set(['40P01', '40001']);

interface PgError {
  code?: string;
  message: string;
}

function pgCode(error: unknown): string | undefined {
  return typeof error === 'object' && error !== null && typeof (error as PgError).code === 'string' ? (error as PgError).code : undefined;
}

async function oneTransaction(client: pg.Client, ev: Ev): Promise<void> {
  await client.query('BEGIN');
  try {
    let debit = ev.debit;
    let credit = ev.credit;
    let amount = ev.amount;
    let debit_q: string;
    let credit_q: string;
    let state = 0;
    if (ev.kind === EventKind.post || ev.kind === EventKind.void) {
      const r = await client.query({ name: 'resolve', text: Q.resolve, values: [Number(ev.pending_id), ev.kind === EventKind.post ? 2 : 3] });
      if (r.rowCount !== 1) throw new TransferFailed('pending_transfer_not_found_or_resolved');
      const row = r.rows[0] as { debit_account_id: string; credit_account_id: string; amount: string };
      debit = Number(row.debit_account_id);
      credit = Number(row.credit_account_id);
      amount = Number(row.amount);
      [debit_q, credit_q] = ev.kind === EventKind.post ? ['debit_post', 'credit_post'] : ['debit_void', 'credit_void'];
    } else if (ev.kind === EventKind.pending) {
      [debit_q, credit_q] = ['debit_pending', 'credit_pending'];
      state = 1;
    } else {
      [debit_q, credit_q] = ['debit_posted', 'credit_posted'];
    }
    // Lock the two accounts in id order: two transfers between the same pair in opposite directions
    // would otherwise deadlock.
    const steps: Array<[string, number, string]> = [
      [debit_q, debit, 'debit_guard_failed'],
      [credit_q, credit, 'credit_guard_failed'],
    ];
    if (credit < debit) steps.reverse();
    for (const [name, account, failure] of steps) {
      const r = await client.query({ name, text: Q[name as keyof typeof Q], values: [account, amount] });
      if (r.rowCount !== 1) throw new TransferFailed(failure);
    }
    await client.query({
      name: 'insert',
      text: Q.insert,
      values: [Number(ev.id), debit, credit, ev.kind === EventKind.void ? 0 : amount, ev.pending_id === 0n ? null : Number(ev.pending_id), ev.kind, state],
    });
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

async function oneBatch(client: pg.Client, events: Ev[]): Promise<Array<string | null>> {
  const n = events.length;
  const ids = new Array<number>(n);
  const kinds = new Array<number>(n);
  const debits = new Array<number>(n);
  const credits = new Array<number>(n);
  const amounts = new Array<number>(n);
  const pendings = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const ev = events[i];
    ids[i] = Number(ev.id);
    kinds[i] = ev.kind;
    debits[i] = ev.debit;
    credits[i] = ev.credit;
    amounts[i] = ev.amount;
    pendings[i] = Number(ev.pending_id);
  }
  const r = await client.query({ name: 'batch', text: BATCH, values: [ids, kinds, debits, credits, amounts, pendings] });
  const row = r.rows[0] as { unresolved: string[] | null };
  const out = new Array<string | null>(n).fill(null);
  if (row.unresolved !== null) {
    const missing = new Set(row.unresolved.map(Number));
    for (let i = 0; i < n; i++) if (missing.has(ids[i])) out[i] = 'pending_transfer_not_found_or_resolved';
  }
  return out;
}

/** Sums memory (PSS, shared pages split between processes) and CPU of a process and its children. */
function processTree(pid: number): { pss_mb: number; cpu_s: number } {
  const pids = [pid];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) pids.push(Number(entry));
    } catch {
      // gone
    }
  }
  let pss_kb = 0;
  let cpu = 0;
  for (const p of pids) {
    try {
      const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${p}/smaps_rollup`, 'utf8'));
      if (m !== null) pss_kb += Number(m[1]);
    } catch {
      // gone or not ours
    }
    cpu += cpuSeconds(p) ?? 0;
  }
  return { pss_mb: Math.round(pss_kb / 1024), cpu_s: cpu };
}

async function main(): Promise<number> {
  const values = parseCli({
    url: { type: 'string' },
    mode: { type: 'string', default: 'txn' },
    schema: { type: 'string', default: 'full' },
    'server-pid': { type: 'string' },
    'data-dir': { type: 'string' },
  });
  if (values.help === true) {
    console.log(USAGE);
    return 0;
  }
  const mode = str(values, 'mode');
  if (mode !== 'txn' && mode !== 'batch') throw new UsageError(`--mode must be txn or batch; got ${JSON.stringify(mode)}`);
  const schema = str(values, 'schema');
  if (schema !== 'full' && schema !== 'lean') throw new UsageError(`--schema must be full or lean; got ${JSON.stringify(schema)}`);
  const o = commonOptions(values, { batch: mode === 'txn' ? 1 : 100, connections: 8, inflight: 1, batch_max: 8190 });
  if (mode === 'txn' && o.batch !== 1) throw new UsageError('--mode txn sends one transfer per transaction: use --mode batch for --batch > 1');
  if (o.inflight !== 1) throw new UsageError('a PostgreSQL connection runs one transaction at a time: --inflight must be 1 (add --connections instead)');
  const url = str(values, 'url') ?? process.env.PGURL ?? process.env.DATABASE_URL;
  if (url === undefined || url === '') throw new UsageError('--url is required (or PGURL): see bench/README.md for a local PostgreSQL');
  const server_pid = str(values, 'server-pid') === undefined ? undefined : int('server-pid', str(values, 'server-pid'), 0, 1, 2 ** 31);
  const notes: string[] = [];
  if (o.cross_shard > 0) notes.push(`PostgreSQL is one node: --cross-shard ${o.cross_shard} has no effect`);

  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  const clients: pg.Client[] = [];
  try {
    const setting = async (name: string): Promise<string> => ((await admin.query(`SELECT current_setting('${name}') AS v`)).rows[0] as { v: string }).v;
    const fsync = await setting('fsync');
    const sync_commit = await setting('synchronous_commit');
    if (fsync !== 'on' || sync_commit !== 'on') {
      throw new Error(`the server runs fsync=${fsync}, synchronous_commit=${sync_commit}: this baseline is durable only; turn both on`);
    }
    const version = await setting('server_version');
    notes.push(
      `PostgreSQL ${version}, fsync=${fsync}, synchronous_commit=${sync_commit}, wal_sync_method=${await setting('wal_sync_method')}, ` +
        `shared_buffers=${await setting('shared_buffers')}; ` +
        (schema === 'full' ? 'schema with foreign keys and an index per account column' : 'lean schema: primary keys only'),
    );

    await admin.query(SCHEMA);
    if (schema === 'full') await admin.query(SCHEMA_FULL);
    await admin.query(
      `INSERT INTO ${S}.accounts (id, ledger, code) SELECT g, 1, 1 FROM generate_series(1, $1::bigint) g`,
      [o.accounts],
    );
    await admin.query(`VACUUM ANALYZE ${S}.accounts`);
    await admin.query(`CHECKPOINT`).catch(() => notes.push('CHECKPOINT before the run was not allowed (not a superuser)'));

    for (let i = 0; i < o.connections; i++) {
      const c = new pg.Client({ connectionString: url, application_name: `keel-bench-${i}` });
      await c.connect();
      clients.push(c);
    }

    const workload_options = {
      accounts: o.accounts,
      distribution: o.distribution,
      two_phase: o.two_phase,
      cross_shard: 0,
      shards: 1,
      account_base: 0n,
    };
    const id_base = 1_000_000_000n;
    const workload = new Workload({ ...workload_options, events: o.transfers, id_base, seed: o.seed });

    let retries = 0;
    const target: Target = {
      async send(conn, events) {
        const client = clients[conn];
        for (let attempt = 0; ; attempt++) {
          try {
            if (mode === 'batch') return await oneBatch(client, events);
            try {
              await oneTransaction(client, events[0]);
              return [null];
            } catch (error) {
              if (error instanceof TransferFailed) return [error.status];
              throw error;
            }
          } catch (error) {
            const code = pgCode(error);
            if (code !== undefined && RETRY_CODES.has(code) && attempt < 20) {
              retries++;
              continue;
            }
            if (code === '23514' && mode === 'batch') return events.map(() => 'batch_guard_failed');
            throw error;
          }
        }
      },
      requestError(error) {
        const code = pgCode(error);
        // An error before COMMIT rolls back; one on a broken connection leaves the outcome unknown.
        if (code !== undefined) return { code: `sqlstate_${code}`, outcome_unknown: code.startsWith('08'), fatal: code.startsWith('08') || code.startsWith('42') };
        return { code: 'connection', outcome_unknown: true, fatal: true };
      },
    };

    // Transactions whose outcome is unknown (the connection broke): what the database has counts.
    const resolveUnknown = async (w: Workload, unknown: Ev[]): Promise<number> => {
      if (unknown.length === 0) return 0;
      const found = await admin.query(`SELECT id FROM ${S}.transfers WHERE id = ANY($1::bigint[])`, [unknown.map((ev) => Number(ev.id))]);
      const ids = new Set((found.rows as Array<{ id: string }>).map((row) => BigInt(row.id)));
      let resolved = 0;
      for (const ev of unknown) {
        if (ids.has(ev.id)) {
          w.apply(ev);
          resolved++;
        }
      }
      return resolved;
    };

    const run_options = { connections: o.connections, inflight: 1, batch: o.batch, duration_s: o.duration_s, rate: o.rate, progress: !o.json };
    workload.pregenerate();
    const workloads: Workload[] = [];
    let warm: RunResult | undefined;
    if (o.warmup_s > 0) {
      const w = new Workload({ ...workload_options, events: Number.POSITIVE_INFINITY, id_base: id_base + WARMUP_ID_OFFSET, seed: warmupSeed(o.seed) });
      warm = await run(w, target, { ...run_options, duration_s: o.warmup_s, label: 'warm-up' });
      workloads.push(w);
      await resolveUnknown(w, warm.unknown);
      if (warm.fatal !== undefined) throw new Error(`the warm-up failed: ${warm.fatal}`);
    }
    workloads.push(workload);

    const retries_before_run = retries;
    const server0 = server_pid === undefined ? undefined : processTree(server_pid);
    const result = await run(workload, target, run_options);
    const server1 = server_pid === undefined ? undefined : processTree(server_pid);
    if (retries > retries_before_run) result.request_errors.retried_deadlock_or_serialization = retries - retries_before_run;
    const unknown_resolved = await resolveUnknown(workload, result.unknown);

    // The balance check.
    const rows = (
      await admin.query(`SELECT id, debits_pending, debits_posted, credits_pending, credits_posted FROM ${S}.accounts ORDER BY id`)
    ).rows as Array<{ id: string; debits_pending: string; debits_posted: string; credits_pending: string; credits_posted: string }>;
    let mismatches = Math.max(0, o.accounts - rows.length);
    for (const row of rows) {
      const i = Number(row.id);
      const want = expectedBalances(workloads, i);
      const got = [row.debits_pending, row.debits_posted, row.credits_pending, row.credits_posted].map(Number);
      if (got.some((g, f) => g !== want[f])) {
        if (mismatches < 5) process.stderr.write(`mismatch: account ${i} expected [${want.join(', ')}], has [${got.join(', ')}]\n`);
        mismatches++;
      }
    }
    if (server_pid === undefined) notes.push('no --server-pid: the server memory and CPU time are not known');
    else notes.push('server memory: the PSS of the postmaster and all its children summed at the end (shared buffers split between them)');

    const report: Report = {
      ...baseReport(
        'baseline-postgres',
        `postgresql ${mode === 'txn' ? 'one transfer per transaction' : `${o.batch} transfers per statement`}, ${schema} schema`,
        o,
        1,
        workload,
        result,
        unknown_resolved,
        warm,
      ),
      server_peak_rss_mb: server1?.pss_mb ?? null,
      server_memory_kind: 'PSS at the end',
      server_cpu_s: server0 === undefined || server1 === undefined ? null : Number((server1.cpu_s - server0.cpu_s).toFixed(1)),
      accounts_checked: o.accounts,
      balance_mismatches: mismatches,
      notes,
      machine: machine(str(values, 'data-dir') ?? tmpdir()),
    };
    return finish(report, `PostgreSQL baseline, ${mode === 'txn' ? 'one transfer per transaction' : `${o.batch} transfers per statement`}, ${schema} schema`, o.json);
  } finally {
    await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
    await admin.end().catch(() => undefined);
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    if (error instanceof UsageError) {
      process.stderr.write(`bench/baseline-postgres: ${error.message}\n\n${USAGE}\n`);
      process.exit(2);
    }
    process.stderr.write(`bench/baseline-postgres: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  },
);
