// A Jepsen-"bank"-style workload for the active-centers tests: lanes of clients send batches of
// transfers between a few accounts to whichever center etcd names leader, and record each transfer
// as acknowledged, failed (a definite answer that it was not applied) or unknown (timeout, lost
// connection, `unavailable`). `verify` then checks every running center against the record.

import { connect, CreateAccountStatus, KeelError, type Account, type KeelClient, type Transfer } from '../../src/client/index.ts';
import { Shard } from '../../src/shard/shard.ts';
import { join } from 'node:path';
import type { TestCluster } from './cluster.ts';
import { rng } from './order.ts';

export { rng } from './order.ts';

export const BANK_ACCOUNTS = [1n, 2n, 3n, 4n, 5n, 6n, 7n, 8n];
const LEDGER = 1;
const LOOKUP_MAX = 8190;

type Outcome = 'acked' | 'failed' | 'unknown';

export interface BankRecord {
  amount: bigint;
  debit: bigint;
  credit: bigint;
  outcome: Outcome;
}


export class Bank {
  readonly records = new Map<bigint, BankRecord>();
  /** Wall-clock ms of every acknowledged batch, in order (failover gaps are measured on it). */
  readonly acked_at: number[] = [];
  readonly errors = new Map<string, number>();
  private next_id = 1_000_000n;
  private readonly random: () => number;
  private readonly clients = new Map<string, KeelClient>();

  constructor(
    private readonly cluster: TestCluster,
    seed: number,
  ) {
    this.random = rng(seed);
  }

  /** Creates the accounts through the leader (retrying until it serves). */
  async open(): Promise<void> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        const keel = await this.leaderClient();
        const result = await keel.createAccounts(BANK_ACCOUNTS.map((id) => ({ id, ledger: LEDGER, code: 1 })), { timeout_ms: 5_000 });
        if (result.status.every((s) => s === CreateAccountStatus.created || s === CreateAccountStatus.exists)) return;
        throw new Error(`accounts not created: ${result.status.join(',')}`);
      } catch (error) {
        if (Date.now() > deadline) throw error;
        await this.forget();
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }
  }

  private async clientFor(center: string): Promise<KeelClient> {
    const known = this.clients.get(center);
    if (known !== undefined) return known;
    const url = await Promise.race([this.cluster.center(center).url, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no url')), 1_000))]);
    const keel = await connect({ url, token: this.cluster.token, reconnect: false, heartbeat_ms: 0, timeout_ms: 3_000 });
    this.clients.set(center, keel);
    return keel;
  }

  private async leaderClient(): Promise<KeelClient> {
    const state = await this.cluster.state();
    if (state.leader === '') throw new Error('no leader yet');
    return this.clientFor(state.leader);
  }

  private async forget(): Promise<void> {
    const clients = [...this.clients.values()];
    this.clients.clear();
    await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
  }

  private count(code: string): void {
    this.errors.set(code, (this.errors.get(code) ?? 0) + 1);
  }

  /** Lanes of batches until `stop()`; every transfer ends recorded. */
  async run(options: { lanes: number; batch: number; stop: () => boolean; /** `any`: each batch to a random center (followers forward) */ door?: 'leader' | 'any' }): Promise<void> {
    const lane = async (): Promise<void> => {
      while (!options.stop()) {
        let keel: KeelClient;
        try {
          keel = options.door === 'any' ? await this.clientFor(this.cluster.centers[Math.floor(this.random() * this.cluster.centers.length)].name) : await this.leaderClient();
        } catch {
          await this.forget();
          await new Promise((resolve) => setTimeout(resolve, 100));
          continue;
        }
        const events: Array<{ id: bigint; debit_account_id: bigint; credit_account_id: bigint; amount: bigint; ledger: number; code: number }> = [];
        for (let k = 0; k < options.batch; k++) {
          const id = this.next_id++;
          const debit = BANK_ACCOUNTS[Math.floor(this.random() * BANK_ACCOUNTS.length)];
          let credit = BANK_ACCOUNTS[Math.floor(this.random() * BANK_ACCOUNTS.length)];
          if (credit === debit) credit = BANK_ACCOUNTS[(BANK_ACCOUNTS.indexOf(debit) + 1) % BANK_ACCOUNTS.length];
          const amount = BigInt(1 + Math.floor(this.random() * 9));
          this.records.set(id, { amount, debit, credit, outcome: 'unknown' });
          events.push({ id, debit_account_id: debit, credit_account_id: credit, amount, ledger: LEDGER, code: 1 });
        }
        try {
          const result = await keel.createTransfers(events, { timeout_ms: 3_000 });
          result.status.forEach((status, k) => (this.records.get(events[k].id)!.outcome = status === 0 ? 'acked' : 'failed'));
          this.acked_at.push(Date.now());
        } catch (error) {
          if (!(error instanceof KeelError)) throw error;
          this.count(error.code);
          // A definite refusal (nothing sent, or refused at the door) is `failed`; the rest stay unknown.
          if (!error.outcome_unknown) for (const e of events) this.records.get(e.id)!.outcome = 'failed';
          await this.forget();
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      }
    };
    await Promise.all(Array.from({ length: options.lanes }, lane));
  }

  /** The longest stretch without an acknowledgement that starts at or after `from_ms` (ms). */
  gapAfter(from_ms: number): number {
    let previous = this.acked_at.filter((at) => at <= from_ms).pop() ?? from_ms;
    let gap = 0;
    for (const at of this.acked_at) {
      if (at <= from_ms) continue;
      gap = Math.max(gap, at - previous);
      previous = at;
    }
    return gap;
  }

  async close(): Promise<void> {
    await this.forget();
  }

  count_by(outcome: Outcome): number {
    let n = 0;
    for (const r of this.records.values()) if (r.outcome === outcome) n++;
    return n;
  }
}

async function lookupAll(keel: KeelClient, ids: bigint[]): Promise<Map<bigint, Transfer>> {
  const found = new Map<bigint, Transfer>();
  for (let i = 0; i < ids.length; i += LOOKUP_MAX) for (const x of await keel.lookupTransfers(ids.slice(i, i + LOOKUP_MAX))) found.set(x.id, x);
  return found;
}

const balances = (accounts: Account[]): string => accounts.map((a) => `${a.id}:${a.debits_posted}/${a.credits_posted}`).join(' ');

export interface Verified {
  acked: number;
  unknown_applied: number;
  unknown_not_applied: number;
  failed: number;
  problems: string[];
}

/**
 * With every named center running and the faults healed: waits until all of them show the same
 * balances, then checks each against the record: every acknowledged transfer present, every
 * failed one absent, unknown ones present at most once, balances equal to the sum of the
 * transfers present, and debits equal to credits.
 */
export async function verify(cluster: TestCluster, bank: Bank, centers: string[]): Promise<Verified> {
  const problems: string[] = [];
  const clients: KeelClient[] = [];
  try {
    for (const name of centers) clients.push(await connect({ url: await cluster.center(name).url, token: cluster.token, reconnect: false, heartbeat_ms: 0, timeout_ms: 10_000 }));
    let views: string[] = [];
    const deadline = Date.now() + 30_000;
    for (;;) {
      // A center may be changing role for a moment (`unavailable`): ask again.
      views = await Promise.all(
        clients.map(async (c) => {
          try {
            return balances(await c.lookupAccounts(BANK_ACCOUNTS));
          } catch (error) {
            if (error instanceof KeelError && error.code === 'unavailable') return `unavailable: ${error.message}`;
            throw error;
          }
        }),
      );
      if (views.every((v) => v === views[0])) break;
      if (Date.now() > deadline) {
        problems.push(`centers never converged: ${views.map((v, i) => `${centers[i]}: ${v}`).join(' | ')}`);
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    const ids = [...bank.records.keys()];
    const out: Verified = { acked: 0, unknown_applied: 0, unknown_not_applied: 0, failed: 0, problems };
    for (let c = 0; c < clients.length; c++) {
      const found = await lookupAll(clients[c], ids);
      const expected = new Map(BANK_ACCOUNTS.map((id) => [id, { d: 0n, c: 0n }]));
      let applied_unknown = 0;
      for (const [id, record] of bank.records) {
        const x = found.get(id);
        if (record.outcome === 'acked' && x === undefined) problems.push(`${centers[c]}: acknowledged transfer ${id} is missing`);
        if (record.outcome === 'failed' && x !== undefined) problems.push(`${centers[c]}: failed transfer ${id} exists`);
        if (x !== undefined) {
          if (x.amount !== record.amount || x.debit_account_id !== record.debit || x.credit_account_id !== record.credit) problems.push(`${centers[c]}: transfer ${id} differs from what was sent`);
          expected.get(x.debit_account_id)!.d += x.amount;
          expected.get(x.credit_account_id)!.c += x.amount;
          if (record.outcome === 'unknown') applied_unknown++;
        }
      }
      const accounts = await clients[c].lookupAccounts(BANK_ACCOUNTS);
      let debits = 0n;
      let credits = 0n;
      for (const a of accounts) {
        debits += a.debits_posted;
        credits += a.credits_posted;
        const e = expected.get(a.id)!;
        if (a.debits_posted !== e.d || a.credits_posted !== e.c) problems.push(`${centers[c]}: account ${a.id} holds ${a.debits_posted}/${a.credits_posted}, its transfers sum to ${e.d}/${e.c} (applied twice or lost)`);
      }
      if (debits !== credits) problems.push(`${centers[c]}: debits ${debits} != credits ${credits}`);
      if (c === 0) {
        out.acked = bank.count_by('acked');
        out.failed = bank.count_by('failed');
        out.unknown_applied = applied_unknown;
        out.unknown_not_applied = bank.count_by('unknown') - applied_unknown;
      }
    }
    return out;
  } finally {
    await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
  }
}

/**
 * After every center was killed (nothing running): each shard's log has the same head (position
 * and checksum, so the same prefix by the checksum chain) and the same state on every center.
 */
export async function compareLogs(cluster: TestCluster, shards: number): Promise<string[]> {
  const problems: string[] = [];
  for (let s = 0; s < shards; s++) {
    const seen: string[] = [];
    for (const c of cluster.centers) {
      const shard = Shard.open({ dir: join(c.data, `shard-${s}`), index: s, shard_count: shards, pulse: false });
      const head = shard.logHead();
      seen.push(`${head.position}:${head.checksum}:${shard.stateHash()}`);
      await shard.close();
    }
    if (!seen.every((v) => v === seen[0])) problems.push(`shard ${s} differs across centers: ${seen.map((v, i) => `${cluster.centers[i].name}=${v}`).join(' ')}`);
  }
  return problems;
}

/** From the centers' logs: each epoch was led by one center only. */
export function leadersByEpoch(cluster: TestCluster, logs: string[]): Map<number, Set<string>> {
  const by_epoch = new Map<number, Set<string>>();
  for (const text of logs) {
    for (const line of text.split('\n')) {
      if (!line.includes('"msg":"leading"')) continue;
      try {
        const event = JSON.parse(line) as { epoch: number; center: string };
        if (!by_epoch.has(event.epoch)) by_epoch.set(event.epoch, new Set());
        by_epoch.get(event.epoch)!.add(event.center);
      } catch {
        // a line cut by a kill
      }
    }
  }
  void cluster;
  return by_epoch;
}
