// The deterministic workload of test/shard.crash.test.ts, shared by the child that applies it and
// the parent that checks what survived: batch k of run r is a pure function of (seed, r, k), so
// the parent can rebuild any batch the child may have sent, acknowledged or not.
//
// Every batch starts with a marker: a pending transfer between unrestricted accounts that always
// succeeds, so its presence says whether the batch reached the log. Then: posts and voids of the
// previous batch's markers, plain transfers (some against balance limits, which may fail), a
// pending + post pair, and linked chains of 2 to 4 events, half of which end with a transfer
// that must fail (it debits 10^12 from an account whose debits must not exceed its credits, far
// more than the workload ever credits), so the whole chain rolls back.

import { type AccountInput, type TransferInput, AccountFlags as AF, TransferFlags as TF, U64_MAX } from '../../src/ledger/types.ts';
import { account, pending, post, transfer, voidPending } from './builders.ts';
import { Rng } from './shard-helpers.ts';

export const LEDGER_1 = [1n, 2n, 3n, 4n, 5n, 6n, 7n, 8n];
export const LEDGER_2 = [9n, 10n, 11n, 12n];

/** Created with the others and never used by a transfer: it must survive on its own. */
export const IDLE_ACCOUNT = 13n;

export const ACCOUNTS: AccountInput[] = [
  ...LEDGER_1.map((id) => account(id, { flags: accountFlags(id) })),
  ...LEDGER_2.map((id) => account(id, { ledger: 2, flags: accountFlags(id) })),
  account(IDLE_ACCOUNT, { ledger: 3, flags: AF.history, user_data_64: 13n }),
];

function accountFlags(id: bigint): number {
  switch (id) {
    case 1n:
      return AF.debits_must_not_exceed_credits | AF.history;
    case 2n:
      return AF.history;
    case 3n:
      return AF.credits_must_not_exceed_debits;
    case 9n:
      return AF.debits_must_not_exceed_credits | AF.history;
    default:
      return 0;
  }
}

/** The fields a created transfer must have. */
export interface Expected {
  debit_account_id: bigint;
  credit_account_id: bigint;
  amount: bigint;
  ledger: number;
  code: number;
  flags: number;
  pending_id: bigint;
}

export interface Batch {
  events: TransferInput[];
  /** Ids of each linked chain: all of them exist or none. */
  chains: bigint[][];
  /** What each event's transfer is if it was created. */
  expected: Map<bigint, Expected>;
  /** Always created when the batch is applied (barring a duplicate id, which never happens). */
  marker: bigint;
}

const HUGE_AMOUNT = 1_000_000_000_000n;

/** Ids: run * 10^7 + batch * 100 + index, so runs and batches never collide. */
export function batchId(run: number, k: number, index: number): bigint {
  return BigInt(run) * 10_000_000n + BigInt(k) * 100n + BigInt(index);
}

interface Marker {
  id: bigint;
  dr: bigint;
  cr: bigint;
  amount: bigint;
  ledger: number;
}

/** The markers of batch k: own random stream, so that batch k+1 can refer to them. */
function markers(seed: number, run: number, k: number): Marker[] {
  const rng = new Rng(mix(seed, run, k, 1));
  const out: Marker[] = [];
  for (let i = 0; i < 2; i++) {
    const ledger2 = i === 1 && rng.chance(0.3);
    const pool = ledger2 ? [10n, 11n, 12n] : [4n, 5n, 6n, 7n, 8n];
    const dr = rng.pick(pool);
    let cr = rng.pick(pool);
    while (cr === dr) cr = rng.pick(pool);
    out.push({ id: batchId(run, k, i), dr, cr, amount: BigInt(rng.int(1, 100)), ledger: ledger2 ? 2 : 1 });
  }
  return out;
}

export function batchFor(seed: number, run: number, k: number): Batch {
  const rng = new Rng(mix(seed, run, k, 2));
  const events: TransferInput[] = [];
  const chains: bigint[][] = [];
  const expected = new Map<bigint, Expected>();
  let index = 2;
  const nextId = (): bigint => batchId(run, k, index++);
  const plain = (id: bigint, dr: bigint, cr: bigint, amount: bigint, ledger: number, flags = 0): TransferInput => {
    expected.set(id, { debit_account_id: dr, credit_account_id: cr, amount, ledger, code: 1, flags, pending_id: 0n });
    return transfer(id, dr, cr, amount, { ledger, flags });
  };
  const pend = (id: bigint, dr: bigint, cr: bigint, amount: bigint, ledger: number, timeout: number, flags = 0): TransferInput => {
    expected.set(id, { debit_account_id: dr, credit_account_id: cr, amount, ledger, code: 1, flags: flags | TF.pending, pending_id: 0n });
    return pending(id, dr, cr, amount, { ledger, timeout, flags });
  };
  const resolve = (id: bigint, p: Marker, how: 'post' | 'partial' | 'void', flags = 0): TransferInput => {
    const amount = how === 'partial' ? (p.amount + 1n) / 2n : p.amount;
    const flag = how === 'void' ? TF.void_pending_transfer : TF.post_pending_transfer;
    expected.set(id, { debit_account_id: p.dr, credit_account_id: p.cr, amount, ledger: p.ledger, code: 1, flags: flag | flags, pending_id: p.id });
    if (how === 'void') return voidPending(id, p.id, 0n, { flags });
    return post(id, p.id, how === 'post' ? U64_MAX : amount, { flags });
  };
  const pair = (): [bigint, bigint, number] => {
    const pool = rng.chance(0.75) ? LEDGER_1 : LEDGER_2;
    const dr = rng.pick(pool);
    let cr = rng.pick(pool);
    while (cr === dr) cr = rng.pick(pool);
    return [dr, cr, pool === LEDGER_1 ? 1 : 2];
  };

  // Markers (no timeout on the first, so it is always there to post or void).
  const own = markers(seed, run, k);
  for (const [i, m] of own.entries()) events.push(pend(m.id, m.dr, m.cr, m.amount, m.ledger, i === 0 ? 0 : rng.pick([0, 1])));
  // Resolve the previous batch's markers (they may have expired or be missing: statuses tell).
  if (k > 0) {
    for (const m of markers(seed, run, k - 1)) {
      if (rng.chance(0.7)) events.push(resolve(nextId(), m, rng.pick(['post', 'partial', 'void'] as const)));
    }
  }
  // Plain transfers; credits to 1 and 9 give their limits something to work with.
  for (let i = rng.int(2, 5); i > 0; i--) {
    const [dr, cr, ledger] = pair();
    events.push(plain(nextId(), dr, cr, BigInt(rng.int(1, 60)), ledger));
  }
  // A pending transfer and its post (or void) in the same batch.
  {
    const [dr, cr, ledger] = pair();
    const p: Marker = { id: nextId(), dr, cr, amount: BigInt(rng.int(1, 80)), ledger };
    events.push(pend(p.id, p.dr, p.cr, p.amount, ledger, rng.pick([0, 0, 1])));
    events.push(resolve(nextId(), p, rng.pick(['post', 'partial', 'void'] as const)));
  }
  // Linked chains.
  for (let c = rng.int(1, 2); c > 0; c--) {
    const length = rng.int(2, 4);
    const fails = rng.chance(0.5);
    const ids: bigint[] = [];
    for (let i = 0; i < length; i++) {
      const last = i === length - 1;
      const flags = last ? 0 : TF.linked;
      const id = nextId();
      ids.push(id);
      if (last && fails) {
        const on_ledger_2 = rng.chance(0.3);
        events.push(plain(id, on_ledger_2 ? 9n : 1n, on_ledger_2 ? 10n : 2n, HUGE_AMOUNT, on_ledger_2 ? 2 : 1, flags));
      } else if (rng.chance(0.3)) {
        const [dr, cr, ledger] = pair();
        events.push(pend(id, dr, cr, BigInt(rng.int(1, 40)), ledger, rng.pick([0, 1]), flags));
      } else {
        const [dr, cr, ledger] = pair();
        events.push(plain(id, dr, cr, BigInt(rng.int(1, 40)), ledger, flags));
      }
    }
    chains.push(ids);
  }
  return { events, chains, expected, marker: own[0].id };
}

function mix(seed: number, run: number, k: number, stream: number): number {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  for (const v of [run, k, stream]) {
    h = Math.imul(h ^ v, 0x85ebca6b) >>> 0;
    h = (h ^ (h >>> 13)) >>> 0;
  }
  return h;
}

/** One acknowledged batch, as the child prints it (bigints as decimal strings). */
export interface AckLine {
  type: 'ack';
  run: number;
  k: number;
  ids: string[];
  status: number[];
}

export interface ReadyLine {
  type: 'ready';
  run: number;
  accounts: number[];
  recovery: { checkpoint_position: number; replayed_entries: number; head_position: number; duration_ms: number };
}

export type ChildLine = AckLine | ReadyLine;
