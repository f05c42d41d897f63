// Helpers for shard durability tests: temporary directories, an injectable clock, a full replay
// of a shard's log into a fresh Ledger, and a "crash image" copy of a shard's directory.

import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ledger } from '../../src/ledger/ledger.ts';
import type { Account, Transfer } from '../../src/ledger/types.ts';
import { decodeAccountBatch, decodeTransferBatch } from '../../src/storage/codec.ts';
import { stateHash } from '../../src/storage/hash.ts';
import { LogOp, LogStore, type LogOpValue } from '../../src/storage/log.ts';

export const NS_PER_MS = 1_000_000n;

/** A fresh directory under the OS temp dir; `cleanup` removes it (and is safe to call twice). */
export function tempDir(prefix: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `keel-${prefix}-`));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A clock that only moves when told to: `clock.fn` is what the shard calls. */
export class VirtualClock {
  now: bigint;
  constructor(start: bigint) {
    this.now = start;
  }
  readonly fn = (): bigint => this.now;
  advance(ns: bigint): void {
    this.now += ns;
  }
}

export interface Replay {
  ledger: Ledger;
  entries: number;
  ops: Record<LogOpValue, number>;
  first_position: number;
  head_position: number;
}

/**
 * Rebuilds a ledger from nothing but the log at `${dir}/log`, from position 1. Throws if the log
 * no longer starts at 1 (pruned) or fails verification. The shard must be closed.
 */
export async function replayLog(dir: string): Promise<Replay> {
  const log = LogStore.open({ path: join(dir, 'log') });
  try {
    const first = log.firstPosition();
    if (first !== 1) throw new Error(`the log starts at ${first}, not 1: it was pruned`);
    const ledger = new Ledger();
    const ops: Record<LogOpValue, number> = { [LogOp.create_accounts]: 0, [LogOp.create_transfers]: 0, [LogOp.pulse]: 0, [LogOp.group]: 0 };
    let entries = 0;
    for (const entry of log.read(1)) {
      switch (entry.op) {
        case LogOp.create_accounts:
          ledger.createAccounts(decodeAccountBatch(entry.body, entry.count), entry.now_ns);
          break;
        case LogOp.create_transfers:
          ledger.createTransfers(decodeTransferBatch(entry.body, entry.count), entry.now_ns);
          break;
        case LogOp.pulse:
          ledger.pulse(entry.now_ns);
          break;
        case LogOp.group:
          throw new Error('replayLog replays one-shard logs only; this one holds a cross-shard group');
      }
      ops[entry.op]++;
      entries++;
    }
    return { ledger, entries, ops, first_position: first, head_position: log.head.position };
  } finally {
    await log.close();
  }
}

export async function replayHash(dir: string): Promise<string> {
  return stateHash((await replayLog(dir)).ledger);
}

/**
 * Copies the LMDB data files of a shard (log and checkpoints) to `to`, leaving out the lock files:
 * the image of a process that died right now. Only call it when nothing is being written (every
 * acknowledged batch resolved, no checkpoint in flight), so that the copy is what is on disk.
 */
export function copyShardImage(from: string, to: string): void {
  for (const env of ['log', 'state']) {
    const source = join(from, env, 'data.mdb');
    if (!existsSync(source)) continue;
    mkdirSync(join(to, env), { recursive: true });
    copyFileSync(source, join(to, env, 'data.mdb'));
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `condition` every `every_ms` until it holds; false if `timeout_ms` passed first. */
export async function waitFor(condition: () => boolean | Promise<boolean>, timeout_ms: number, every_ms = 10): Promise<boolean> {
  const deadline = Date.now() + timeout_ms;
  for (;;) {
    if (await condition()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(every_ms);
  }
}

/** A small seeded PRNG (mulberry32): the same seed gives the same workload in every run. */
export class Rng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let x = this.state;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [lo, hi] inclusive. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)];
  }
}

/** Every account's balances recomputed from transfers, and the per-ledger totals. */
export interface Recomputed {
  balances: Map<bigint, { debits_pending: bigint; debits_posted: bigint; credits_pending: bigint; credits_posted: bigint }>;
}

/**
 * Balances implied by a set of transfers. `released(pending_id)` says whether a pending transfer
 * no longer holds its amount although no post or void of it exists (it expired).
 */
export function recomputeBalances(accounts: readonly Account[], transfers: readonly Transfer[], expired: (pending_id: bigint) => boolean): Recomputed {
  const balances: Recomputed['balances'] = new Map();
  for (const a of accounts) balances.set(a.id, { debits_pending: 0n, debits_posted: 0n, credits_pending: 0n, credits_posted: 0n });
  const by_id = new Map<bigint, Transfer>();
  for (const t of transfers) by_id.set(t.id, t);
  const resolved = new Set<bigint>();
  const POST = 1 << 2;
  const VOID = 1 << 3;
  const PENDING = 1 << 1;
  for (const t of transfers) {
    if ((t.flags & (POST | VOID)) !== 0) resolved.add(t.pending_id);
  }
  for (const t of transfers) {
    const dr = balances.get(t.debit_account_id);
    const cr = balances.get(t.credit_account_id);
    if (dr === undefined || cr === undefined) throw new Error(`transfer ${t.id} names an unknown account`);
    if ((t.flags & PENDING) !== 0) {
      if (!resolved.has(t.id) && !expired(t.id)) {
        dr.debits_pending += t.amount;
        cr.credits_pending += t.amount;
      }
    } else if ((t.flags & POST) !== 0) {
      if (!by_id.has(t.pending_id)) throw new Error(`post ${t.id} of a missing pending transfer ${t.pending_id}`);
      dr.debits_posted += t.amount;
      cr.credits_posted += t.amount;
    } else if ((t.flags & VOID) !== 0) {
      if (!by_id.has(t.pending_id)) throw new Error(`void ${t.id} of a missing pending transfer ${t.pending_id}`);
    } else {
      dr.debits_posted += t.amount;
      cr.credits_posted += t.amount;
    }
  }
  return { balances };
}
