// Load test of a running Keel engine over WebSocket, through the client library (issue: load-testing
// benchmarks). Starts its own engine on a temporary data directory unless given --url.
//
//   npm run bench:transfers -- --accounts 10000 --transfers 1000000 --batch 8190 --connections 1 --inflight 4
//   npm run bench:transfers -- --batch 1 --connections 64 --inflight 32 --duration 20
//   npm run bench:transfers -- --batch 1 --connections 64 --inflight 64 --rate 20000 --duration 20   # open loop
//   npm run bench:transfers -- --url ws://127.0.0.1:7070/v1 --token $KEEL_TOKEN --engine-pid 1234 ...
//
// Creates the accounts (before the clock), drives the seeded workload of bench/workload.ts, and at the
// end checks every account's four balances against what the engine confirmed (sums of amounts per
// account, plus the balances the accounts had before the run). A mismatch fails the run (exit 1).

import { spawn, type ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  connect,
  CreateAccountStatus,
  CreateTransferStatus,
  KeelError,
  TransferFlags,
  transferStatusName,
  accountStatusName,
  type KeelClient,
  type TransferInput,
} from '../src/client/index.ts';
import { EVENTS_PER_REQUEST_MAX } from '../src/ledger/types.ts';
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
  peakRssMiB,
  rssMiB,
  run,
  str,
  warmupSeed,
  type Report,
  type RunResult,
  type Target,
} from './load.ts';
import { EventKind, Workload, type Ev } from './workload.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const MAIN = join(ROOT, 'src/cli/main.ts');
const TOKEN_RE = /keel_[A-Za-z0-9_-]{43}/;

const USAGE = `Usage: npm run bench:transfers -- [options]

Drives a Keel engine over WebSocket through the client library. Without --url it starts an engine
(node --import=tsx src/cli/main.ts start --port 0) on a temporary data directory and stops it after.

Engine options:
  --url URL             attach to a running engine (ws://HOST:PORT/v1) instead of starting one
  --token TOKEN         token with ledger:read and ledger:write (default $KEEL_TOKEN); needed with --url
  --engine-pid PID      with --url: the engine's pid, to report its peak RSS (VmHWM) and CPU time
  --data DIR            start the engine on DIR instead of a temporary directory (kept afterwards)
  --shards N            shards of the engine: passed to the engine it starts (default 1); with --url,
                        the attached engine's shard count (the bench cannot see it), so that
                        --cross-shard places accounts right
  --account-base N      accounts get ids N+1..N+accounts (default 0)
  --id-base N           transfer ids start after N (default 1e9 for a fresh engine, a random
                        multiple of 2^41 with --url or --data so that a rerun does not collide)

${WORKLOAD_USAGE}

Defaults here: --batch 8190 --connections 1 --inflight 4 --transfers 1000000.
Exit code 1 on a balance mismatch or a fatal error; 2 on bad options.`;

/** The engine could not be started: its own message says why; no stack trace needed. */
class EngineStartError extends Error {}

interface Engine {
  url: string;
  token: string;
  pid: number | undefined;
  /** Stops the engine if this bench started it. */
  stop(): Promise<void>;
  data_dir: string | undefined;
}

async function startEngine(data_dir: string, shards: number, token_option: string | undefined): Promise<Engine> {
  const child: ChildProcess = spawn(process.execPath, ['--import=tsx', MAIN, 'start', '--data', data_dir, '--port', '0', '--shards', String(shards)], {
    cwd: ROOT,
    env: { ...process.env, KEEL_LOG_LEVEL: process.env.KEEL_LOG_LEVEL ?? 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // Keep the start-up output whole (URL, token) and only the tail of what follows (warnings).
  let stdout = '';
  let stderr = '';
  const keep = (text: string): string => (text.length > 65_536 ? text.slice(-32_768) : text);
  child.stdout?.on('data', (d: Buffer) => (stdout = keep(stdout + d.toString())));
  child.stderr?.on('data', (d: Buffer) => (stderr = keep(stderr + d.toString())));
  // Interrupted: take the engine down too rather than leave it running.
  const interrupted = (signal: NodeJS.Signals): void => {
    child.kill('SIGTERM');
    process.stderr.write(`\nbench/transfers: ${signal}: stopped the engine; its data directory ${data_dir} is left behind\n`);
    process.exit(130);
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  const exited = new Promise<number | null>((resolve_exit) => child.on('close', (code) => resolve_exit(code)));
  const url = await new Promise<string>((resolve_url, reject) => {
    const timer = setTimeout(() => reject(new EngineStartError(`the engine printed no "listening on" line in 60 s:\n${stdout}\n${stderr}`)), 60_000);
    const look = (): void => {
      const m = /keel listening on (wss?:\/\/\S+)/.exec(stdout);
      if (m !== null) {
        clearTimeout(timer);
        resolve_url(m[1]);
      }
    };
    child.stdout?.on('data', look);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new EngineStartError(`the engine exited with code ${code} before serving:\n${(stderr || stdout).trim()}`));
    });
  });
  const token = token_option ?? TOKEN_RE.exec(stdout)?.[0];
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null) return;
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    const code = await exited;
    clearTimeout(killer);
    if (code !== 0) process.stderr.write(`warning: the engine exited with code ${code}: ${stderr.trim().slice(-2000)}\n`);
  };
  if (token === undefined) {
    await stop();
    throw new UsageError(`${data_dir} already has tokens, so the engine printed none: pass --token (or KEEL_TOKEN)`);
  }
  return { url, token, pid: child.pid, stop, data_dir };
}

function transferInput(ev: Ev, account_ids: bigint[]): TransferInput {
  switch (ev.kind) {
    case EventKind.single:
      return { id: ev.id, debit_account_id: account_ids[ev.debit], credit_account_id: account_ids[ev.credit], amount: ev.amount, ledger: 1, code: 1 };
    case EventKind.pending:
      return {
        id: ev.id,
        debit_account_id: account_ids[ev.debit],
        credit_account_id: account_ids[ev.credit],
        amount: ev.amount,
        ledger: 1,
        code: 1,
        flags: TransferFlags.pending,
      };
    case EventKind.post:
      return { id: ev.id, pending_id: ev.pending_id, debit_account_id: 0, credit_account_id: 0, amount: ev.amount, ledger: 0, code: 0, flags: TransferFlags.post_pending_transfer };
    case EventKind.void:
      return { id: ev.id, pending_id: ev.pending_id, debit_account_id: 0, credit_account_id: 0, amount: 0, ledger: 0, code: 0, flags: TransferFlags.void_pending_transfer };
  }
}

const FATAL_CODES = new Set(['connection_closed', 'client_closed', 'unauthorized', 'forbidden', 'invalid_request', 'protocol_error', 'unknown_op', 'too_many_events', 'frame_too_large']);

async function main(): Promise<number> {
  const values = parseCli({
    url: { type: 'string' },
    token: { type: 'string' },
    'engine-pid': { type: 'string' },
    data: { type: 'string' },
    shards: { type: 'string' },
    'account-base': { type: 'string', default: '0' },
    'id-base': { type: 'string' },
  });
  if (values.help === true) {
    console.log(USAGE);
    return 0;
  }
  const o = commonOptions(values, { batch: EVENTS_PER_REQUEST_MAX, connections: 1, inflight: 4, batch_max: EVENTS_PER_REQUEST_MAX });
  const shards_text = str(values, 'shards');
  const shards = int('shards', shards_text ?? '1', 1, 1, 1024);
  // Attached to a running engine, the bench cannot see its shard count: --shards must say it.
  const shards_known = shards_text !== undefined || str(values, 'url') === undefined;
  const url_option = str(values, 'url');
  const data_option = str(values, 'data');
  if (url_option !== undefined && data_option !== undefined) throw new UsageError('--data starts an engine; --url attaches to one: give one of them');
  const engine_pid_option = str(values, 'engine-pid');
  if (engine_pid_option !== undefined && url_option === undefined) throw new UsageError('--engine-pid goes with --url (an engine this bench starts is measured anyway)');
  const account_base = BigInt(int('account-base', str(values, 'account-base'), 0, 0, Number.MAX_SAFE_INTEGER));
  const fresh = url_option === undefined && data_option === undefined;
  const id_base_text = str(values, 'id-base');
  // A rerun against a kept engine must not reuse transfer ids. Each run takes 2^41 ids at a random
  // multiple of 2^41 below 2^63: its transfers from the base, its warm-up from base + 2^40
  // (WARMUP_ID_OFFSET). Two runs share a base with odds of 1 in 4 million. (Seconds << 32 collided
  // for two runs in one second, and with the warm-up ids of a run 256 seconds earlier.)
  const id_base = id_base_text !== undefined ? BigInt(id_base_text) : fresh ? 1_000_000_000n : BigInt(randomInt(1, 2 ** 22)) << 41n;
  const notes: string[] = [];
  if (!shards_known) {
    notes.push('attached without --shards: accounts are placed as for 1 shard; give --shards N (the engine\'s shard count) for --cross-shard to apply and be reported');
  } else if (shards === 1 && o.cross_shard > 0) {
    notes.push(`the engine runs 1 shard: every transfer is single-shard, so --cross-shard ${o.cross_shard} has no effect`);
  }

  // The engine.
  const temp_dir = fresh ? mkdtempSync(join(tmpdir(), 'keel-bench-transfers-')) : undefined;
  let engine: Engine;
  if (url_option !== undefined) {
    const token = str(values, 'token') ?? process.env.KEEL_TOKEN;
    if (token === undefined || token === '') throw new UsageError('--url needs --token (or KEEL_TOKEN) with ledger:read and ledger:write');
    const pid = engine_pid_option === undefined ? undefined : int('engine-pid', engine_pid_option, 0, 1, 2 ** 31);
    if (pid === undefined) notes.push('attached without --engine-pid: the engine RSS and CPU time are not known');
    engine = { url: url_option, token, pid, stop: async () => {}, data_dir: undefined };
  } else {
    const data_dir = resolve(data_option ?? join(temp_dir as string, 'data'));
    try {
      engine = await startEngine(data_dir, shards, str(values, 'token') ?? (data_option !== undefined ? process.env.KEEL_TOKEN : undefined));
    } catch (error) {
      if (temp_dir !== undefined) rmSync(temp_dir, { recursive: true, force: true });
      throw error;
    }
  }

  const clients: KeelClient[] = [];
  let admin: KeelClient | undefined;
  let reconnects = 0;
  try {
    // Accounts, lookups and the check go over a connection of their own, without the batch cap.
    admin = await connect({ url: engine.url, token: engine.token, client_name: 'keel-bench-admin', timeout_ms: 120_000 });
    for (let i = 0; i < o.connections; i++) {
      clients.push(
        await connect({
          url: engine.url,
          token: engine.token,
          client_name: `keel-bench-${i}`,
          timeout_ms: 120_000,
          max_batch_events: o.batch,
          max_queued_requests: Math.max(1024, o.inflight),
          reconnect: { initial_delay_ms: 100, max_delay_ms: 2_000, max_attempts: 10 },
          on_state_change: (state) => {
            if (state === 'reconnecting') reconnects++;
          },
        }),
      );
    }
    const limits = admin.limits;
    if (o.inflight > limits.inflight_per_connection) {
      notes.push(`--inflight ${o.inflight} is above the server's ${limits.inflight_per_connection} per connection: the rest wait in the client's queue`);
    }

    const workload_options = {
      accounts: o.accounts,
      distribution: o.distribution,
      two_phase: o.two_phase,
      cross_shard: o.cross_shard,
      shards,
      account_base,
    };
    const workload = new Workload({ ...workload_options, events: o.transfers, id_base, seed: o.seed });
    const account_ids: bigint[] = new Array<bigint>(o.accounts + 1);
    for (let i = 0; i <= o.accounts; i++) account_ids[i] = account_base + BigInt(i);

    // Accounts, and the balances they start from (non-zero only when they were there already).
    const chunk = limits.events_per_request;
    let existing = 0;
    for (let start = 1; start <= o.accounts; start += chunk) {
      const batch = [];
      for (let i = start; i < Math.min(start + chunk, o.accounts + 1); i++) batch.push({ id: account_ids[i], ledger: 1, code: 1 });
      const result = await admin.createAccounts(batch);
      for (let k = 0; k < result.status.length; k++) {
        const s = result.status[k];
        if (s === CreateAccountStatus.exists) existing++;
        else if (s !== CreateAccountStatus.created) {
          throw new Error(`creating account ${batch[k].id} failed: ${accountStatusName(s) ?? s}; pick another --account-base`);
        }
      }
    }
    if (existing > 0) notes.push(`${existing} accounts existed before the run: balances are checked as differences from where they started`);
    const start_balances = await readBalances(admin, account_ids, chunk);

    const target: Target = {
      async send(conn, events) {
        const inputs: TransferInput[] = new Array<TransferInput>(events.length);
        for (let i = 0; i < events.length; i++) inputs[i] = transferInput(events[i], account_ids);
        const { status } = await clients[conn].createTransfers(inputs);
        const out: Array<string | null> = new Array<string | null>(status.length);
        for (let i = 0; i < status.length; i++) {
          const s = status[i];
          // `exists` after a reconnect's resend means applied earlier (docs/client.md).
          out[i] = s === CreateTransferStatus.created || s === CreateTransferStatus.exists ? null : (transferStatusName(s) ?? `status_${s}`);
        }
        return out;
      },
      requestError(error) {
        if (error instanceof KeelError) return { code: error.code, outcome_unknown: error.outcome_unknown, fatal: FATAL_CODES.has(error.code) };
        return { code: 'exception', outcome_unknown: true, fatal: true };
      },
    };

    // Requests whose outcome is unknown: what the engine has is what counts.
    const resolveUnknown = async (w: Workload, unknown: Ev[]): Promise<number> => {
      let resolved = 0;
      for (let start = 0; start < unknown.length; start += chunk) {
        const part = unknown.slice(start, start + chunk);
        const found = new Set((await (admin as KeelClient).lookupTransfers(part.map((ev) => ev.id))).map((t) => t.id));
        for (const ev of part) {
          if (found.has(ev.id)) {
            w.apply(ev);
            resolved++;
          }
        }
      }
      return resolved;
    };

    const run_options = {
      connections: o.connections,
      inflight: o.inflight,
      batch: o.batch,
      duration_s: o.duration_s,
      rate: o.rate,
      progress: !o.json,
      progress_extra: engine.pid === undefined ? undefined : () => `engine RSS ${rssMiB(engine.pid)} MiB`,
    };
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

    const cpu0 = cpuSeconds(engine.pid);
    const result = await run(workload, target, run_options);
    const cpu1 = cpuSeconds(engine.pid);
    if (reconnects > 0) result.request_errors.reconnects = reconnects;
    const unknown_resolved = await resolveUnknown(workload, result.unknown);

    // The balance check.
    const end_balances = await readBalances(admin, account_ids, chunk);
    let mismatches = 0;
    for (let i = 1; i <= o.accounts; i++) {
      const want = expectedBalances(workloads, i);
      const got = end_balances[i];
      const base = start_balances[i];
      let ok = got !== undefined && base !== undefined;
      for (let f = 0; ok && f < 4; f++) if ((got as bigint[])[f] - (base as bigint[])[f] !== BigInt(want[f])) ok = false;
      if (!ok) {
        if (mismatches < 5) {
          process.stderr.write(
            `mismatch: account ${account_ids[i]} expected +[dp ${want[0]}, dpo ${want[1]}, cp ${want[2]}, cpo ${want[3]}], ` +
              `has ${got === undefined ? 'nothing (not found)' : `[${got.join(', ')}]`} from [${base?.join(', ')}]\n`,
          );
        }
        mismatches++;
      }
    }

    const server_peak = peakRssMiB(engine.pid);
    const report: Report = {
      ...baseReport('transfers', `keel ${engine.url}`, o, shards_known ? shards : null, workload, result, unknown_resolved, warm),
      server_peak_rss_mb: server_peak,
      server_memory_kind: 'VmHWM',
      server_cpu_s: cpu0 === null || cpu1 === null ? null : Number((cpu1 - cpu0).toFixed(1)),
      accounts_checked: o.accounts,
      balance_mismatches: mismatches,
      notes,
      machine: machine(engine.data_dir ?? tmpdir()),
    };
    return finish(report, `Keel over WebSocket (${engine.url})`, o.json);
  } finally {
    await Promise.all([...clients, ...(admin === undefined ? [] : [admin])].map((c) => c.close().catch(() => undefined)));
    await engine.stop();
    if (temp_dir !== undefined) rmSync(temp_dir, { recursive: true, force: true });
  }
}

/** [debits_pending, debits_posted, credits_pending, credits_posted] per account index. */
async function readBalances(client: KeelClient, ids: bigint[], chunk: number): Promise<Array<bigint[] | undefined>> {
  const out = new Array<bigint[] | undefined>(ids.length);
  const index = new Map<bigint, number>();
  for (let i = 1; i < ids.length; i++) index.set(ids[i], i);
  for (let start = 1; start < ids.length; start += chunk) {
    const accounts = await client.lookupAccounts(ids.slice(start, Math.min(start + chunk, ids.length)));
    for (const a of accounts) {
      const i = index.get(a.id);
      if (i !== undefined) out[i] = [a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted];
    }
  }
  return out;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    if (error instanceof UsageError) {
      process.stderr.write(`bench/transfers: ${error.message}\n\n${USAGE}\n`);
      process.exit(2);
    }
    if (error instanceof EngineStartError) {
      process.stderr.write(`bench/transfers: ${error.message}\n`);
      process.exit(1);
    }
    process.stderr.write(`bench/transfers: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  },
);
