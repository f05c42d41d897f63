// The load generator shared by bench/transfers.ts and bench/baseline-postgres.ts: command-line options
// of the workload, the closed- and open-loop drivers, the latency histogram, the progress line, and
// the report (a human table, or one JSON line with --json).
//
// Closed loop: every connection keeps `inflight` requests outstanding; a request's latency runs from
// the call to its reply. Open loop: requests are due at a fixed rate whatever the replies do; a due
// request waits in a local backlog while every connection has `inflight` outstanding, and its latency
// runs from the time it was due, not the time it was sent, so a stalled server shows up in the
// latency instead of silently slowing the load (no coordinated omission).

import { readFileSync } from 'node:fs';
import { cpus, freemem, loadavg, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import { build } from 'hdr-histogram-js';
import type { Histogram } from 'hdr-histogram-js';
import { describeDistribution, type Distribution, type Ev, type Workload } from './workload.ts';

// -------------------------------------------------------------------------------------------------
// Options.

export const WORKLOAD_OPTIONS = {
  accounts: { type: 'string', default: '10000' },
  transfers: { type: 'string' },
  duration: { type: 'string' },
  batch: { type: 'string' },
  connections: { type: 'string' },
  inflight: { type: 'string' },
  distribution: { type: 'string', default: 'uniform' },
  'two-phase': { type: 'string', default: '0' },
  'cross-shard': { type: 'string', default: '0' },
  rate: { type: 'string' },
  warmup: { type: 'string', default: '0' },
  seed: { type: 'string', default: '42' },
  json: { type: 'boolean', default: false },
  help: { type: 'boolean', default: false },
} as const;

export const WORKLOAD_USAGE = `Workload options:
  --accounts N          accounts, created before the clock starts (default 10000)
  --transfers N         stop after N transfer events (posts and voids of two-phase transfers count)
  --duration S          or: stop sending after S seconds (default: --transfers 1000000)
  --batch N             transfers per request, 1..8190
  --connections N       connections
  --inflight N          requests in flight per connection (closed loop: outstanding at all times)
  --distribution D      uniform | zipf[:S] (rank r weighs 1/r^S, default S=1) |
                        hot[:K[:P]] (share P of picks on K hot accounts; default hot:10:0.9)
  --two-phase F         share 0..1 of new transfers that are two-phase: pending, then (in a later
                        request, once created) posted, or voided one time in ten
  --cross-shard F       share 0..1 of transfers whose two accounts are on different shards
  --rate R              open loop: offer R transfers/s at fixed intervals; latency is measured from
                        each request's intended send time
  --warmup S            run the same load for S seconds first, untimed (JIT, caches), with transfers
                        of their own (checked at the end like the others; default 0)
  --seed N              workload seed (default 42)
  --json                one JSON line on stdout instead of the table and progress line`;

export class UsageError extends Error {}

export function parseCli<O extends Record<string, { type: 'string' | 'boolean'; default?: string | boolean }>>(
  extra: O,
): Record<string, string | boolean | undefined> {
  try {
    const { values } = parseArgs({ options: { ...WORKLOAD_OPTIONS, ...extra }, strict: true, allowPositionals: false });
    return values as Record<string, string | boolean | undefined>;
  } catch (error) {
    throw new UsageError((error as Error).message.split('\n')[0]);
  }
}

export function str(values: Record<string, string | boolean | undefined>, name: string): string | undefined {
  const v = values[name];
  return typeof v === 'string' ? v : undefined;
}

export function int(name: string, text: string | undefined, fallback: number, min: number, max: number): number {
  if (text === undefined) return fallback;
  const n = Number(text.replaceAll('_', ''));
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`--${name} must be an integer in ${min}..${max}; got ${JSON.stringify(text)}`);
  return n;
}

export function num(name: string, text: string | undefined, fallback: number, min: number, max: number): number {
  if (text === undefined) return fallback;
  const n = Number(text.replaceAll('_', ''));
  if (!Number.isFinite(n) || n < min || n > max) throw new UsageError(`--${name} must be a number in ${min}..${max}; got ${JSON.stringify(text)}`);
  return n;
}

export function parseDistribution(text: string): Distribution {
  const [kind, a, b] = text.split(':');
  if (kind === 'uniform' && a === undefined) return { kind: 'uniform' };
  if (kind === 'zipf' && b === undefined) return { kind: 'zipf', s: num('distribution zipf:S', a, 1, 0.01, 10) };
  if (kind === 'hot') return { kind: 'hot', accounts: int('distribution hot:K', a, 10, 1, 1e9), share: num('distribution hot:K:P', b, 0.9, 0, 1) };
  throw new UsageError(`--distribution must be uniform, zipf[:S] or hot[:K[:P]]; got ${JSON.stringify(text)}`);
}

export interface CommonOptions {
  accounts: number;
  /** Infinity with --duration. */
  transfers: number;
  duration_s: number | undefined;
  batch: number;
  connections: number;
  inflight: number;
  distribution: Distribution;
  two_phase: number;
  cross_shard: number;
  /** Open loop when set: offered transfers per second. */
  rate: number | undefined;
  warmup_s: number;
  seed: number;
  json: boolean;
}

export function commonOptions(
  values: Record<string, string | boolean | undefined>,
  defaults: { batch: number; connections: number; inflight: number; batch_max: number },
): CommonOptions {
  const duration_text = str(values, 'duration');
  const transfers_text = str(values, 'transfers');
  if (duration_text !== undefined && transfers_text !== undefined) throw new UsageError('give --transfers or --duration, not both');
  const duration_s = duration_text === undefined ? undefined : num('duration', duration_text, 0, 0.1, 86_400);
  return {
    accounts: int('accounts', str(values, 'accounts'), 10_000, 2, 100_000_000),
    transfers: duration_s === undefined ? int('transfers', transfers_text, 1_000_000, 1, Number.MAX_SAFE_INTEGER) : Number.POSITIVE_INFINITY,
    duration_s,
    batch: int('batch', str(values, 'batch'), defaults.batch, 1, defaults.batch_max),
    connections: int('connections', str(values, 'connections'), defaults.connections, 1, 4096),
    inflight: int('inflight', str(values, 'inflight'), defaults.inflight, 1, 65_536),
    distribution: parseDistribution(str(values, 'distribution') ?? 'uniform'),
    two_phase: num('two-phase', str(values, 'two-phase'), 0, 0, 1),
    cross_shard: num('cross-shard', str(values, 'cross-shard'), 0, 0, 1),
    rate: str(values, 'rate') === undefined ? undefined : num('rate', str(values, 'rate'), 0, 1, 1e9),
    warmup_s: num('warmup', str(values, 'warmup'), 0, 0, 3600),
    seed: int('seed', str(values, 'seed'), 42, 0, 0xffff_ffff),
    json: values.json === true,
  };
}

// -------------------------------------------------------------------------------------------------
// The driver.

/** What a system under test offers the driver. */
export interface Target {
  /** Sends one request on connection `conn`; per event, null when applied, else the failure status's name. */
  send(conn: number, events: Ev[]): Promise<Array<string | null>>;
  /** Classifies a rejected request. `fatal` stops the run (e.g. the connection is gone for good). */
  requestError(error: unknown): { code: string; outcome_unknown: boolean; fatal: boolean };
}

export interface RunOptions {
  connections: number;
  inflight: number;
  batch: number;
  duration_s: number | undefined;
  /** Open loop when set (transfers/s). */
  rate: number | undefined;
  progress: boolean;
  /** Shown before the progress line, e.g. 'warm-up'. */
  label?: string;
  /** Sampled once a second for the progress line, e.g. the engine's RSS. */
  progress_extra?: () => string;
}

export interface RunResult {
  elapsed_s: number;
  requests: number;
  events_sent: number;
  events_applied: number;
  events_failed: number;
  failed_by_status: Record<string, number>;
  request_errors: Record<string, number>;
  /** Events of requests whose outcome is unknown: look them up, then `Workload.apply` those found. */
  unknown: Ev[];
  latency_us: Histogram;
  /** Open loop: the largest number of due requests that waited for a free connection. */
  backlog_max: number;
  fatal: string | undefined;
  client_cpu_s: number;
}

export async function run(workload: Workload, target: Target, o: RunOptions): Promise<RunResult> {
  const latency = build({ lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: 3 });
  const window = build({ lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: 3 });
  const r: RunResult = {
    elapsed_s: 0,
    requests: 0,
    events_sent: 0,
    events_applied: 0,
    events_failed: 0,
    failed_by_status: {},
    request_errors: {},
    unknown: [],
    latency_us: latency,
    backlog_max: 0,
    fatal: undefined,
    client_cpu_s: 0,
  };
  const cpu0 = process.cpuUsage();
  const started = performance.now();
  const deadline = o.duration_s === undefined ? Number.POSITIVE_INFINITY : started + o.duration_s * 1000;
  let stop = false;
  let outstanding = 0;
  let finished_at = started;
  // Lanes waiting for a reply to free more work (two-phase resolutions).
  let progress_waiters: Array<() => void> = [];
  const wake = (): void => {
    const w = progress_waiters;
    progress_waiters = [];
    for (const f of w) f();
  };

  async function sendOne(conn: number, events: Ev[], since: number): Promise<void> {
    outstanding++;
    r.requests++;
    r.events_sent += events.length;
    try {
      const result = await target.send(conn, events);
      const now = performance.now();
      finished_at = now;
      const us = Math.max(1, Math.round((now - since) * 1000));
      latency.recordValue(us);
      window.recordValue(us);
      for (let i = 0; i < events.length; i++) {
        const status = result[i];
        if (status === null) {
          r.events_applied++;
          workload.settle(events[i], true);
        } else {
          r.events_failed++;
          r.failed_by_status[status] = (r.failed_by_status[status] ?? 0) + 1;
          workload.settle(events[i], false);
        }
      }
    } catch (error) {
      finished_at = performance.now();
      const c = target.requestError(error);
      r.request_errors[c.code] = (r.request_errors[c.code] ?? 0) + 1;
      for (const ev of events) workload.settle(ev, false);
      if (c.outcome_unknown) r.unknown.push(...events);
      if (c.fatal && r.fatal === undefined) {
        r.fatal = `${c.code}: ${(error as Error).message}`;
        stop = true;
      }
    } finally {
      outstanding--;
      wake();
    }
  }

  let last_report = started;
  let last_applied = 0;
  const progress = o.progress
    ? setInterval(() => {
        const now = performance.now();
        const rate = ((r.events_applied - last_applied) * 1000) / (now - last_report);
        last_applied = r.events_applied;
        last_report = now;
        const p99 = window.totalCount > 0 ? (window.getValueAtPercentile(99) / 1000).toFixed(1) : '-';
        window.reset();
        const errors = r.events_failed + Object.values(r.request_errors).reduce((a, b) => a + b, 0);
        const extra = o.progress_extra === undefined ? '' : `  ${o.progress_extra()}`;
        process.stderr.write(
          `\r${o.label === undefined ? '' : `${o.label} `}${((now - started) / 1000).toFixed(0).padStart(4)} s  ${r.events_applied.toLocaleString('en-US').padStart(11)} transfers  ` +
            `${Math.round(rate).toLocaleString('en-US').padStart(9)}/s  p99 ${p99} ms  errors ${errors}${extra}   `,
        );
      }, 1000)
    : undefined;

  if (o.rate === undefined) {
    // Closed loop: connections x inflight lanes, each with one request outstanding at all times.
    const lane = async (conn: number): Promise<void> => {
      while (!stop) {
        if (performance.now() >= deadline) break;
        const next = workload.next(o.batch);
        if (next === 'done') break;
        if (next === 'wait') {
          await new Promise<void>((resolve) => progress_waiters.push(resolve));
          continue;
        }
        await sendOne(conn, next, performance.now());
      }
    };
    const lanes: Array<Promise<void>> = [];
    for (let lane_index = 0; lane_index < o.connections * o.inflight; lane_index++) lanes.push(lane(lane_index % o.connections));
    await Promise.all(lanes);
  } else {
    // Open loop: request n is due at started + n * interval.
    const interval_ms = (o.batch / o.rate) * 1000;
    const busy = new Int32Array(o.connections);
    const backlog: Array<{ events: Ev[]; due: number }> = [];
    let backlog_head = 0;
    let rr = 0;
    let due_count = 0;
    let generating = true;
    let all_done: () => void = () => {};
    const done = new Promise<void>((resolve) => (all_done = resolve));
    const dispatch = (): void => {
      while (backlog_head < backlog.length && !stop) {
        let conn = -1;
        for (let k = 0; k < o.connections; k++) {
          const c = (rr + k) % o.connections;
          if (busy[c] < o.inflight) {
            conn = c;
            break;
          }
        }
        if (conn < 0) break;
        rr = (conn + 1) % o.connections;
        const item = backlog[backlog_head++];
        busy[conn]++;
        void sendOne(conn, item.events, item.due).then(() => {
          busy[conn]--;
          dispatch();
        });
      }
      if (backlog_head > 4096 && backlog_head * 2 > backlog.length) {
        backlog.splice(0, backlog_head);
        backlog_head = 0;
      }
      if (!generating && (backlog_head >= backlog.length || stop) && outstanding === 0) all_done();
    };
    const tick = (): void => {
      const now = performance.now();
      while (generating) {
        const due = started + due_count * interval_ms;
        if (due > now) break;
        if (due >= deadline || stop) {
          generating = false;
          break;
        }
        due_count++;
        const next = workload.next(o.batch);
        if (next === 'done') {
          generating = false;
          break;
        }
        if (next !== 'wait') backlog.push({ events: next, due });
        // 'wait': only resolutions of unconfirmed pending transfers remain; this slot passes empty.
      }
      r.backlog_max = Math.max(r.backlog_max, backlog.length - backlog_head);
      dispatch();
      if (generating) {
        // Timers have millisecond resolution: requests due within the same millisecond leave together,
        // and the up to ~1 ms that a request waits for its tick counts in its latency.
        const wait = started + due_count * interval_ms - performance.now();
        setTimeout(tick, Math.max(1, Math.round(wait)));
      }
    };
    tick();
    await done;
  }

  if (progress !== undefined) {
    clearInterval(progress);
    process.stderr.write('\n');
  }
  r.elapsed_s = (finished_at - started) / 1000;
  const cpu = process.cpuUsage(cpu0);
  r.client_cpu_s = (cpu.user + cpu.system) / 1e6;
  return r;
}

/** Id offset of the warm-up's transfers: far above any measured run's. */
export const WARMUP_ID_OFFSET = 1n << 40n;

/** The seed of the warm-up's workload: a different stream from the measured one. */
export function warmupSeed(seed: number): number {
  return (seed ^ 0x5bd1_e995) >>> 0;
}

/** Expected balances of account `i` over several workloads run one after the other. */
export function expectedBalances(workloads: readonly Workload[], i: number): [number, number, number, number] {
  const out: [number, number, number, number] = [0, 0, 0, 0];
  for (const w of workloads) {
    out[0] += w.debits_pending[i];
    out[1] += w.debits_posted[i];
    out[2] += w.credits_pending[i];
    out[3] += w.credits_posted[i];
  }
  return out;
}

// -------------------------------------------------------------------------------------------------
// Process and machine facts.

/** Peak resident set (VmHWM) of a process in MiB, or null when it cannot be read. */
export function peakRssMiB(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? null : Math.round(Number(m[1]) / 1024);
  } catch {
    return null;
  }
}

/** Current resident set (VmRSS) of a process in MiB, or null. */
export function rssMiB(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? null : Math.round(Number(m[1]) / 1024);
  } catch {
    return null;
  }
}

/** User + system CPU seconds a process has used (all its threads), or null. Linux clock ticks are 100 Hz. */
export function cpuSeconds(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // After the command: state is field 3, utime 14, stime 15 (1-based) -> indexes 11 and 12 here.
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return null;
  }
}

export interface Machine {
  cores: number;
  cpu: string;
  memory_gib: number;
  free_memory_gib: number;
  load_average_1m: number;
  node: string;
  /** The filesystem holding `dir`: device, type, and whether the kernel says it rotates. */
  disk: string | null;
}

export function machine(dir: string | undefined): Machine {
  return {
    cores: cpus().length,
    cpu: cpus()[0]?.model.trim() ?? 'unknown',
    memory_gib: Math.round(totalmem() / 2 ** 30),
    free_memory_gib: Math.round(freemem() / 2 ** 30),
    load_average_1m: Number(loadavg()[0].toFixed(2)),
    node: process.version,
    disk: dir === undefined ? null : diskOf(dir),
  };
}

function diskOf(dir: string): string | null {
  try {
    let best: { mount: string; dev: string; type: string } | undefined;
    for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
      const [dev, mount, type] = line.split(' ');
      if (mount === undefined) continue;
      if ((dir === mount || dir.startsWith(mount === '/' ? '/' : `${mount}/`)) && (best === undefined || mount.length > best.mount.length)) {
        best = { mount, dev, type };
      }
    }
    if (best === undefined) return null;
    const name = best.dev.replace(/^\/dev\//, '');
    let rotational = '';
    try {
      const rot = readFileSync(`/sys/block/${name.replace(/p?\d+$/, '')}/queue/rotational`, 'utf8').trim();
      rotational = rot === '0' ? ', non-rotational' : ', rotational';
    } catch {
      // a partition or virtual device without the attribute
    }
    return `${best.dev} (${best.type}${rotational}) at ${best.mount}`;
  } catch {
    return null;
  }
}

// -------------------------------------------------------------------------------------------------
// The report.

export interface Report {
  bench: 'transfers' | 'baseline-postgres';
  target: string;
  loop: 'closed' | 'open';
  rate_target: number | null;
  /** Untimed run before the measured one; its transfers are in the balance check. */
  warmup_s: number;
  warmup_transfers_created: number;
  accounts: number;
  distribution: string;
  transfers_requested: number | null;
  duration_requested_s: number | null;
  batch: number;
  connections: number;
  inflight: number;
  two_phase: number;
  two_phase_generated: number;
  cross_shard_requested: number;
  cross_shard_generated: number;
  /** The engine's shard count as the bench placed accounts for it; null: attached without --shards. */
  shards: number | null;
  transfers_sent: number;
  transfers_created: number;
  transfers_failed: number;
  transfers_per_s: number;
  requests: number;
  requests_per_s: number;
  elapsed_s: number;
  latency_ms: { p50: number; p90: number; p99: number; p99_9: number; max: number; mean: number };
  failed_by_status: Record<string, number>;
  request_errors: Record<string, number>;
  unknown_outcome_resolved: number;
  backlog_max: number | null;
  server_peak_rss_mb: number | null;
  /** How server_peak_rss_mb was measured. */
  server_memory_kind: 'VmHWM' | 'PSS at the end';
  server_cpu_s: number | null;
  client_cpu_s: number;
  accounts_checked: number;
  balance_mismatches: number;
  notes: string[];
  machine: Machine;
  fatal: string | null;
}

const ms = (us: number): number => Number((us / 1000).toFixed(us < 10_000 ? 3 : 1));

export function latencySummary(h: Histogram): Report['latency_ms'] {
  if (h.totalCount === 0) return { p50: 0, p90: 0, p99: 0, p99_9: 0, max: 0, mean: 0 };
  // A percentile is reported as its bucket's highest equivalent value: never above the true max.
  const at = (p: number): number => ms(Math.min(h.getValueAtPercentile(p), h.maxValue));
  return {
    p50: at(50),
    p90: at(90),
    p99: at(99),
    p99_9: at(99.9),
    max: ms(h.maxValue),
    mean: ms(h.mean),
  };
}

export function baseReport(
  bench: Report['bench'],
  target: string,
  o: CommonOptions,
  shards: number | null,
  workload: Workload,
  r: RunResult,
  unknown_resolved: number,
  warm: RunResult | undefined,
): Omit<Report, 'server_peak_rss_mb' | 'server_memory_kind' | 'server_cpu_s' | 'accounts_checked' | 'balance_mismatches' | 'notes' | 'machine'> {
  const created = r.events_applied + unknown_resolved;
  return {
    bench,
    target,
    loop: o.rate === undefined ? 'closed' : 'open',
    rate_target: o.rate ?? null,
    warmup_s: o.warmup_s,
    warmup_transfers_created: warm?.events_applied ?? 0,
    accounts: o.accounts,
    distribution: describeDistribution(o.distribution),
    transfers_requested: Number.isFinite(o.transfers) ? o.transfers : null,
    duration_requested_s: o.duration_s ?? null,
    batch: o.batch,
    connections: o.connections,
    inflight: o.inflight,
    two_phase: o.two_phase,
    two_phase_generated: workload.generated_two_phase,
    cross_shard_requested: o.cross_shard,
    cross_shard_generated: workload.generated_cross_shard,
    shards,
    transfers_sent: r.events_sent,
    transfers_created: created,
    transfers_failed: r.events_failed,
    transfers_per_s: r.elapsed_s > 0 ? Math.round(created / r.elapsed_s) : 0,
    requests: r.requests,
    requests_per_s: r.elapsed_s > 0 ? Math.round(r.requests / r.elapsed_s) : 0,
    elapsed_s: Number(r.elapsed_s.toFixed(2)),
    latency_ms: latencySummary(r.latency_us),
    failed_by_status: r.failed_by_status,
    request_errors: r.request_errors,
    unknown_outcome_resolved: unknown_resolved,
    backlog_max: o.rate === undefined ? null : r.backlog_max,
    client_cpu_s: Number(r.client_cpu_s.toFixed(1)),
    fatal: r.fatal ?? null,
  };
}

const fmt = (n: number): string => n.toLocaleString('en-US');

function counts(m: Record<string, number>): string {
  return Object.entries(m)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ${fmt(v)}`)
    .join(', ');
}

/** The human table (stdout). */
export function printReport(rep: Report, title: string): void {
  const lines: Array<[string, string]> = [];
  const loop =
    rep.loop === 'closed'
      ? `closed loop, ${rep.connections} connection${rep.connections === 1 ? '' : 's'} x ${rep.inflight} in flight`
      : `open loop at ${fmt(rep.rate_target ?? 0)} transfers/s offered, ${rep.connections} connection${rep.connections === 1 ? '' : 's'} x up to ${rep.inflight} in flight`;
  lines.push(['run', `${loop}, ${fmt(rep.batch)} transfer${rep.batch === 1 ? '' : 's'} per request`]);
  const bound = rep.transfers_requested !== null ? `${fmt(rep.transfers_requested)} transfers` : `${rep.duration_requested_s} s`;
  lines.push(['workload', `${fmt(rep.accounts)} accounts (${rep.distribution}), ${bound}`]);
  if (rep.warmup_s > 0) lines.push(['warm-up', `${rep.warmup_s} s first, untimed: ${fmt(rep.warmup_transfers_created)} transfers (in the balance check)`]);
  lines.push([
    'two-phase',
    rep.two_phase === 0 ? 'none' : `${rep.two_phase * 100}% of new transfers (${fmt(rep.two_phase_generated)} pending, each posted or voided later)`,
  ]);
  lines.push([
    'cross-shard',
    rep.bench === 'baseline-postgres'
      ? 'n/a: one PostgreSQL node'
      : rep.shards === null
      ? 'unknown: attached to an engine without --shards, so accounts were placed as for 1 shard and the bench cannot tell which transfers crossed shards (give --shards N, the engine\'s count)'
      : rep.shards === 1
      ? `none: the engine runs 1 shard, so every transfer is single-shard${rep.cross_shard_requested > 0 ? ` (--cross-shard ${rep.cross_shard_requested} had no effect)` : ''}`
      : `${fmt(rep.cross_shard_generated)} of the new transfers (${rep.cross_shard_requested * 100}% requested) over ${rep.shards} shards`,
  ]);
  lines.push(['transfers/s', `${fmt(rep.transfers_per_s)}   (${fmt(rep.transfers_created)} created in ${rep.elapsed_s} s; ${fmt(rep.requests_per_s)} requests/s)`]);
  const l = rep.latency_ms;
  lines.push([
    'latency (ms)',
    `p50 ${l.p50}  p90 ${l.p90}  p99 ${l.p99}  p99.9 ${l.p99_9}  max ${l.max}   (per request, ${rep.loop === 'open' ? 'from its intended send time' : 'from the call'})`,
  ]);
  if (rep.backlog_max !== null) lines.push(['backlog max', `${fmt(rep.backlog_max)} due requests waiting for a free connection`]);
  if (rep.rate_target !== null && rep.transfers_per_s < 0.95 * rep.rate_target) {
    lines.push(['offered load', `NOT sustained: ${fmt(rep.transfers_per_s)} of ${fmt(rep.rate_target)} transfers/s; the latencies include the wait`]);
  }
  const failed = counts(rep.failed_by_status);
  const request_errors = counts(rep.request_errors);
  lines.push(['errors', failed === '' && request_errors === '' ? 'none' : [failed && `by status: ${failed}`, request_errors && `by request: ${request_errors}`].filter(Boolean).join('; ')]);
  if (rep.unknown_outcome_resolved > 0) lines.push(['unknown outcome', `${fmt(rep.unknown_outcome_resolved)} transfers of failed requests were found applied`]);
  lines.push([
    rep.server_memory_kind === 'VmHWM' ? 'server peak RSS' : 'server memory',
    rep.server_peak_rss_mb === null ? 'unknown (pass the server pid)' : `${fmt(rep.server_peak_rss_mb)} MiB (${rep.server_memory_kind})`,
  ]);
  lines.push([
    'cpu',
    `${rep.server_cpu_s === null ? 'server unknown' : `server ${rep.server_cpu_s} s`}, bench client ${rep.client_cpu_s} s, over ${rep.elapsed_s} s on ${rep.machine.cores} cores`,
  ]);
  lines.push(['balance check', rep.balance_mismatches === 0 ? `ok (${fmt(rep.accounts_checked)} accounts)` : `${fmt(rep.balance_mismatches)} of ${fmt(rep.accounts_checked)} accounts MISMATCH`]);
  console.log(title);
  for (const [k, v] of lines) console.log(`  ${k.padEnd(16)}${v}`);
  for (const note of rep.notes) console.log(`  note: ${note}`);
  if (rep.fatal !== null) console.log(`  STOPPED: ${rep.fatal}`);
}

/** Prints the report (table or JSON) and returns the exit code: 1 on a mismatch or a fatal error. */
export function finish(rep: Report, title: string, json: boolean): number {
  if (json) console.log(JSON.stringify(rep));
  else printReport(rep, title);
  if (rep.balance_mismatches > 0) {
    process.stderr.write(`BALANCE MISMATCH: ${rep.balance_mismatches} accounts differ from what was sent\n`);
    return 1;
  }
  return rep.fatal === null ? 0 : 1;
}
