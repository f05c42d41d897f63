// A reference model of the ledger, for model-based tests of src/ledger/ledger.ts.
//
// Written from PROTOCOL.md section 4 and TigerBeetle's state machine (create_account,
// create_transfer, post_or_void_pending_transfer, create_*_exists, expiry), NOT from the engine.
// It favours the obviously correct over the fast:
// - state is a handful of plain maps;
// - a linked chain snapshots the whole state when it opens and puts the snapshot back if it
//   breaks (clone and commit), instead of keeping undo records;
// - every check is written out in the status enum's order, which is also the precedence;
// - queries filter everything and sort it, instead of using indexes.
//
// Only the data model and the status names come from src/ (types.ts): they are the contract.

import {
  type Account,
  type AccountBalance,
  type AccountFilter,
  type AccountInput,
  type CreateResult,
  type QueryFilter,
  type Transfer,
  type TransferInput,
  CreateAccountStatus as AS,
  CreateTransferStatus as TS,
} from '../../src/ledger/types.ts';

export const MAX64 = (1n << 64n) - 1n;
/** Timestamps are u63 (TigerBeetle keeps the top bit): imported ones must be in 1..MAX63. */
export const MAX63 = (1n << 63n) - 1n;
const NS = 1_000_000_000n;
const LIMIT_MAX = 8190;

/**
 * What a post's amount 0 means. PROTOCOL.md section 4 says "zero fields of a post or void are
 * taken from the pending transfer", so a post of amount 0 posts the whole pending amount, like
 * 2^64-1. TigerBeetle 0.16 differs here: there a post of amount 0 posts zero and voids the rest
 * (0.16.0 upgrading notes); set this to true to model that instead.
 */
export const POST_AMOUNT_ZERO_POSTS_ZERO = false;

// Flag bits as PROTOCOL.md section 4 numbers them (deliberately not imported from src/).
export const AF = { linked: 1, debits_must_not_exceed_credits: 2, credits_must_not_exceed_debits: 4, history: 8, imported: 16, closed: 32 } as const;
const AF_ALL = 0b11_1111;
export const TF = {
  linked: 1,
  pending: 2,
  post_pending_transfer: 4,
  void_pending_transfer: 8,
  balancing_debit: 16,
  balancing_credit: 32,
  closing_debit: 64,
  closing_credit: 128,
  imported: 256,
} as const;
const TF_ALL = 0b1_1111_1111;

/** PROTOCOL.md: the statuses whose id may never be reused (`id_already_failed`). */
const TRANSIENT = new Set<number>([
  TS.debit_account_not_found,
  TS.credit_account_not_found,
  TS.pending_transfer_not_found,
  TS.exceeds_credits,
  TS.exceeds_debits,
  TS.debit_account_already_closed,
  TS.credit_account_already_closed,
]);

type Fate = 'pending' | 'posted' | 'voided' | 'expired';

interface State {
  accounts: Map<bigint, Account>;
  transfers: Map<bigint, Transfer>;
  /** For every transfer with flags.pending: what became of it. */
  fate: Map<bigint, Fate>;
  /** Transfer ids that failed with a transient status. */
  failed: Set<bigint>;
  /** Balances of the debit and credit account right after each transfer was applied. */
  after: Map<bigint, { dr: AccountBalance; cr: AccountBalance }>;
}

function emptyState(): State {
  return { accounts: new Map(), transfers: new Map(), fate: new Map(), failed: new Set(), after: new Map() };
}

function cloneState(s: State): State {
  const accounts = new Map<bigint, Account>();
  for (const [id, a] of s.accounts) accounts.set(id, { ...a });
  const transfers = new Map<bigint, Transfer>();
  for (const [id, t] of s.transfers) transfers.set(id, { ...t });
  const after = new Map<bigint, { dr: AccountBalance; cr: AccountBalance }>();
  for (const [id, b] of s.after) after.set(id, { dr: { ...b.dr }, cr: { ...b.cr } });
  return { accounts, transfers, fate: new Map(s.fate), failed: new Set(s.failed), after };
}

function has(flags: number, bit: number): boolean {
  return (flags & bit) !== 0;
}

function min(a: bigint, b: bigint): bigint {
  return a < b ? a : b;
}

function max(a: bigint, b: bigint): bigint {
  return a > b ? a : b;
}

/** a - b, or 0 when b > a. */
function saturatingSub(a: bigint, b: bigint): bigint {
  return a > b ? a - b : 0n;
}

function balanceOf(a: Account, timestamp: bigint): AccountBalance {
  return {
    debits_pending: a.debits_pending,
    debits_posted: a.debits_posted,
    credits_pending: a.credits_pending,
    credits_posted: a.credits_posted,
    timestamp,
  };
}

export class Model {
  private s: State = emptyState();
  /** Greatest timestamp handed out so far (batches and pulses). */
  last = 0n;

  // ------------------------------------------------------------------------------------------
  // Commands.

  createAccounts(events: readonly AccountInput[], now: bigint): CreateResult {
    return this.batch(events, now, false);
  }

  createTransfers(events: readonly TransferInput[], now: bigint): CreateResult {
    return this.batch(events, now, true);
  }

  pulse(now: bigint): number {
    const T = max(now, this.last + 1n);
    const count = this.expire(T);
    this.last = T;
    return count;
  }

  /** Earliest expires_at among pending transfers that can still expire, or 0. */
  nextExpiry(): bigint {
    let best = 0n;
    for (const [id, fate] of this.s.fate) {
      const p = this.s.transfers.get(id)!;
      if (fate !== 'pending' || p.timeout === 0) continue;
      const at = p.timestamp + BigInt(p.timeout) * NS;
      if (best === 0n || at < best) best = at;
    }
    return best;
  }

  private batch(events: readonly (AccountInput | TransferInput)[], now: bigint, transfers: boolean): CreateResult {
    const n = BigInt(Math.max(events.length, 1));
    const T = max(now, this.last + n);
    const first = T - n + 1n;
    this.expire(first);

    const LINKED = transfers ? TF.linked : AF.linked;
    const IMPORTED = transfers ? TF.imported : AF.imported;
    const S = transfers ? TS : AS;
    const status: number[] = [];
    const timestamp: bigint[] = [];
    const batchImported = events.length > 0 && has(events[0].flags, IMPORTED);

    let chainStart = -1;
    let chainBroken = false;
    let saved: State | null = null;

    events.forEach((e, i) => {
      const linked = has(e.flags, LINKED);
      if (linked && chainStart === -1) {
        chainStart = i;
        saved = cloneState(this.s);
      }
      let st: number;
      if (linked && i === events.length - 1) st = S.linked_event_chain_open;
      else if (chainBroken) st = S.linked_event_failed;
      else if (batchImported !== has(e.flags, IMPORTED)) st = batchImported ? S.imported_event_expected : S.imported_event_not_expected;
      else if (batchImported) {
        if (e.timestamp < 1n || e.timestamp > MAX63) st = S.imported_event_timestamp_out_of_range;
        else if (e.timestamp >= T) st = S.imported_event_timestamp_must_not_advance;
        else st = transfers ? this.createTransfer(e as TransferInput, e.timestamp) : this.createAccount(e as AccountInput, e.timestamp);
      } else if (e.timestamp !== 0n) st = S.timestamp_must_be_zero;
      else {
        const ts = first + BigInt(i);
        st = transfers ? this.createTransfer(e as TransferInput, ts) : this.createAccount(e as AccountInput, ts);
      }

      if (st !== S.created && chainStart !== -1 && !chainBroken) {
        // The chain breaks here: put the state back as it was before the chain.
        chainBroken = true;
        this.s = saved!;
        for (let j = chainStart; j < i; j++) {
          status[j] = S.linked_event_failed;
          timestamp[j] = 0n;
        }
      }
      if (transfers && TRANSIENT.has(st)) this.s.failed.add(e.id);

      status[i] = st;
      if (st === S.created || st === S.exists) {
        const object = transfers ? this.s.transfers.get(e.id) : this.s.accounts.get(e.id);
        timestamp[i] = object === undefined ? 0n : object.timestamp;
      } else {
        timestamp[i] = 0n;
      }

      if (chainStart !== -1 && (!linked || st === S.linked_event_chain_open)) {
        chainStart = -1;
        chainBroken = false;
        saved = null;
      }
    });
    this.last = T;
    return { status, timestamp };
  }

  /** Expires every pending transfer due at `at`: releases its amount, re-opens closed accounts. */
  private expire(at: bigint): number {
    let count = 0;
    for (const [id, fate] of this.s.fate) {
      if (fate !== 'pending') continue;
      const p = this.s.transfers.get(id)!;
      if (p.timeout === 0) continue;
      if (p.timestamp + BigInt(p.timeout) * NS > at) continue;
      const dr = this.s.accounts.get(p.debit_account_id)!;
      const cr = this.s.accounts.get(p.credit_account_id)!;
      dr.debits_pending -= p.amount;
      cr.credits_pending -= p.amount;
      if (has(p.flags, TF.closing_debit)) dr.flags &= ~AF.closed;
      if (has(p.flags, TF.closing_credit)) cr.flags &= ~AF.closed;
      this.s.fate.set(id, 'expired');
      count++;
    }
    return count;
  }

  // ------------------------------------------------------------------------------------------
  // create_accounts

  private createAccount(a: AccountInput, ts: bigint): number {
    if ((a.reserved ?? 0) !== 0) return AS.reserved_field;
    if ((a.flags & ~AF_ALL) !== 0) return AS.reserved_flag;
    if (a.id === 0n) return AS.id_must_not_be_zero;
    if (a.id === MAX64) return AS.id_must_not_be_int_max;

    const e = this.s.accounts.get(a.id);
    if (e !== undefined) {
      if (a.flags !== e.flags) return AS.exists_with_different_flags;
      if (a.user_data_64 !== e.user_data_64) return AS.exists_with_different_user_data_64;
      if (a.user_data_32 !== e.user_data_32) return AS.exists_with_different_user_data_32;
      if (a.ledger !== e.ledger) return AS.exists_with_different_ledger;
      if (a.code !== e.code) return AS.exists_with_different_code;
      return AS.exists;
    }

    if (has(a.flags, AF.debits_must_not_exceed_credits) && has(a.flags, AF.credits_must_not_exceed_debits)) {
      return AS.flags_are_mutually_exclusive;
    }
    if (a.ledger === 0) return AS.ledger_must_not_be_zero;
    if (a.code === 0) return AS.code_must_not_be_zero;
    if (has(a.flags, AF.imported)) {
      for (const other of this.s.accounts.values()) if (ts <= other.timestamp) return AS.imported_event_timestamp_must_not_regress;
      for (const t of this.s.transfers.values()) if (t.timestamp === ts) return AS.imported_event_timestamp_must_not_regress;
    }

    this.s.accounts.set(a.id, {
      id: a.id,
      debits_pending: 0n,
      debits_posted: 0n,
      credits_pending: 0n,
      credits_posted: 0n,
      user_data_64: a.user_data_64,
      user_data_32: a.user_data_32,
      ledger: a.ledger,
      code: a.code,
      flags: a.flags,
      timestamp: ts,
    });
    return AS.created;
  }

  // ------------------------------------------------------------------------------------------
  // create_transfers

  private importedRegresses(ts: bigint): boolean {
    for (const t of this.s.transfers.values()) if (ts <= t.timestamp) return true;
    for (const a of this.s.accounts.values()) if (a.timestamp === ts) return true;
    return false;
  }

  private createTransfer(t: TransferInput, ts: bigint): number {
    if ((t.flags & ~TF_ALL) !== 0) return TS.reserved_flag;
    if (t.id === 0n) return TS.id_must_not_be_zero;
    if (t.id === MAX64) return TS.id_must_not_be_int_max;

    const e = this.s.transfers.get(t.id);
    if (e !== undefined) return this.transferExists(t, e);
    if (this.s.failed.has(t.id)) return TS.id_already_failed;

    if (has(t.flags, TF.post_pending_transfer) || has(t.flags, TF.void_pending_transfer)) return this.postOrVoid(t, ts);

    if (t.debit_account_id === 0n) return TS.debit_account_id_must_not_be_zero;
    if (t.debit_account_id === MAX64) return TS.debit_account_id_must_not_be_int_max;
    if (t.credit_account_id === 0n) return TS.credit_account_id_must_not_be_zero;
    if (t.credit_account_id === MAX64) return TS.credit_account_id_must_not_be_int_max;
    if (t.debit_account_id === t.credit_account_id) return TS.accounts_must_be_different;
    if (t.pending_id !== 0n) return TS.pending_id_must_be_zero;
    const pending = has(t.flags, TF.pending);
    if (!pending && t.timeout !== 0) return TS.timeout_reserved_for_pending_transfer;
    if (!pending && (has(t.flags, TF.closing_debit) || has(t.flags, TF.closing_credit))) return TS.closing_transfer_must_be_pending;
    if (t.ledger === 0) return TS.ledger_must_not_be_zero;
    if (t.code === 0) return TS.code_must_not_be_zero;

    const dr = this.s.accounts.get(t.debit_account_id);
    if (dr === undefined) return TS.debit_account_not_found;
    const cr = this.s.accounts.get(t.credit_account_id);
    if (cr === undefined) return TS.credit_account_not_found;
    if (dr.ledger !== cr.ledger) return TS.accounts_must_have_the_same_ledger;
    if (t.ledger !== dr.ledger) return TS.transfer_must_have_the_same_ledger_as_accounts;

    if (has(t.flags, TF.imported)) {
      if (this.importedRegresses(ts)) return TS.imported_event_timestamp_must_not_regress;
      if (ts <= dr.timestamp) return TS.imported_event_timestamp_must_postdate_debit_account;
      if (ts <= cr.timestamp) return TS.imported_event_timestamp_must_postdate_credit_account;
      if (t.timeout !== 0) return TS.imported_event_timeout_must_be_zero;
    }
    if (has(dr.flags, AF.closed)) return TS.debit_account_already_closed;
    if (has(cr.flags, AF.closed)) return TS.credit_account_already_closed;

    // Balancing transfers move at most `amount`: as much as brings the balance to zero.
    let amount = t.amount;
    if (has(t.flags, TF.balancing_debit)) amount = min(amount, saturatingSub(dr.credits_posted, dr.debits_posted + dr.debits_pending));
    if (has(t.flags, TF.balancing_credit)) amount = min(amount, saturatingSub(cr.debits_posted, cr.credits_posted + cr.credits_pending));

    if (pending && amount + dr.debits_pending > MAX64) return TS.overflows_debits_pending;
    if (pending && amount + cr.credits_pending > MAX64) return TS.overflows_credits_pending;
    if (amount + dr.debits_posted > MAX64) return TS.overflows_debits_posted;
    if (amount + cr.credits_posted > MAX64) return TS.overflows_credits_posted;
    if (amount + dr.debits_pending + dr.debits_posted > MAX64) return TS.overflows_debits;
    if (amount + cr.credits_pending + cr.credits_posted > MAX64) return TS.overflows_credits;
    if (ts + BigInt(t.timeout) * NS > MAX63) return TS.overflows_timeout;
    if (has(dr.flags, AF.debits_must_not_exceed_credits) && dr.debits_pending + dr.debits_posted + amount > dr.credits_posted) {
      return TS.exceeds_credits;
    }
    if (has(cr.flags, AF.credits_must_not_exceed_debits) && cr.credits_pending + cr.credits_posted + amount > cr.debits_posted) {
      return TS.exceeds_debits;
    }

    const stored: Transfer = { ...t, amount, timestamp: ts };
    this.s.transfers.set(t.id, stored);
    if (pending) {
      dr.debits_pending += amount;
      cr.credits_pending += amount;
      this.s.fate.set(t.id, 'pending');
    } else {
      dr.debits_posted += amount;
      cr.credits_posted += amount;
    }
    if (has(t.flags, TF.closing_debit)) dr.flags |= AF.closed;
    if (has(t.flags, TF.closing_credit)) cr.flags |= AF.closed;
    this.s.after.set(t.id, { dr: balanceOf(dr, ts), cr: balanceOf(cr, ts) });
    return TS.created;
  }

  private postOrVoid(t: TransferInput, ts: bigint): number {
    const post = has(t.flags, TF.post_pending_transfer);
    const isVoid = has(t.flags, TF.void_pending_transfer);
    if (post && isVoid) return TS.flags_are_mutually_exclusive;
    const forbidden = TF.pending | TF.balancing_debit | TF.balancing_credit | TF.closing_debit | TF.closing_credit;
    if ((t.flags & forbidden) !== 0) return TS.flags_are_mutually_exclusive;
    if (t.pending_id === 0n) return TS.pending_id_must_not_be_zero;
    if (t.pending_id === MAX64) return TS.pending_id_must_not_be_int_max;
    if (t.pending_id === t.id) return TS.pending_id_must_be_different;
    if (t.timeout !== 0) return TS.timeout_reserved_for_pending_transfer;

    const p = this.s.transfers.get(t.pending_id);
    if (p === undefined) return TS.pending_transfer_not_found;
    if (!has(p.flags, TF.pending)) return TS.pending_transfer_not_pending;
    if (t.debit_account_id !== 0n && t.debit_account_id !== p.debit_account_id) return TS.pending_transfer_has_different_debit_account_id;
    if (t.credit_account_id !== 0n && t.credit_account_id !== p.credit_account_id) return TS.pending_transfer_has_different_credit_account_id;
    if (t.ledger !== 0 && t.ledger !== p.ledger) return TS.pending_transfer_has_different_ledger;
    if (t.code !== 0 && t.code !== p.code) return TS.pending_transfer_has_different_code;

    // Void: zero means the pending amount. Post: 2^64-1 means the pending amount (zero posts zero).
    let amount: bigint;
    if (isVoid) amount = t.amount === 0n ? p.amount : t.amount;
    else if (t.amount === MAX64) amount = p.amount;
    else amount = t.amount === 0n && !POST_AMOUNT_ZERO_POSTS_ZERO ? p.amount : t.amount;
    if (amount > p.amount) return TS.exceeds_pending_transfer_amount;
    if (isVoid && amount < p.amount) return TS.pending_transfer_has_different_amount;

    const fate = this.s.fate.get(p.id)!;
    if (fate === 'posted') return TS.pending_transfer_already_posted;
    if (fate === 'voided') return TS.pending_transfer_already_voided;
    if (fate === 'expired') return TS.pending_transfer_expired;
    if (p.timeout !== 0 && p.timestamp + BigInt(p.timeout) * NS <= ts) return TS.pending_transfer_expired;

    if (has(t.flags, TF.imported) && this.importedRegresses(ts)) return TS.imported_event_timestamp_must_not_regress;

    const dr = this.s.accounts.get(p.debit_account_id)!;
    const cr = this.s.accounts.get(p.credit_account_id)!;
    if (!isVoid && has(dr.flags, AF.closed)) return TS.debit_account_already_closed;
    if (!isVoid && has(cr.flags, AF.closed)) return TS.credit_account_already_closed;

    const stored: Transfer = {
      id: t.id,
      debit_account_id: p.debit_account_id,
      credit_account_id: p.credit_account_id,
      amount,
      pending_id: t.pending_id,
      user_data_64: t.user_data_64 !== 0n ? t.user_data_64 : p.user_data_64,
      user_data_32: t.user_data_32 !== 0 ? t.user_data_32 : p.user_data_32,
      timeout: 0,
      ledger: p.ledger,
      code: p.code,
      flags: t.flags,
      timestamp: ts,
    };
    this.s.transfers.set(t.id, stored);
    dr.debits_pending -= p.amount;
    cr.credits_pending -= p.amount;
    if (post) {
      dr.debits_posted += amount;
      cr.credits_posted += amount;
      this.s.fate.set(p.id, 'posted');
    } else {
      if (has(p.flags, TF.closing_debit)) dr.flags &= ~AF.closed;
      if (has(p.flags, TF.closing_credit)) cr.flags &= ~AF.closed;
      this.s.fate.set(p.id, 'voided');
    }
    this.s.after.set(t.id, { dr: balanceOf(dr, ts), cr: balanceOf(cr, ts) });
    return TS.created;
  }

  private transferExists(t: TransferInput, e: Transfer): number {
    if (t.flags !== e.flags) return TS.exists_with_different_flags;
    if (t.pending_id !== e.pending_id) return TS.exists_with_different_pending_id;
    if (t.timeout !== e.timeout) return TS.exists_with_different_timeout;

    if (has(t.flags, TF.post_pending_transfer) || has(t.flags, TF.void_pending_transfer)) {
      // Zero fields were taken from the pending transfer: compare against what they became.
      const p = this.s.transfers.get(t.pending_id)!;
      if (t.debit_account_id !== 0n && t.debit_account_id !== e.debit_account_id) return TS.exists_with_different_debit_account_id;
      if (t.credit_account_id !== 0n && t.credit_account_id !== e.credit_account_id) return TS.exists_with_different_credit_account_id;
      const whole = has(t.flags, TF.void_pending_transfer)
        ? t.amount === 0n
        : t.amount === MAX64 || (t.amount === 0n && !POST_AMOUNT_ZERO_POSTS_ZERO);
      if (whole ? e.amount !== p.amount : t.amount !== e.amount) return TS.exists_with_different_amount;
      if ((t.user_data_64 === 0n ? p.user_data_64 : t.user_data_64) !== e.user_data_64) return TS.exists_with_different_user_data_64;
      if ((t.user_data_32 === 0 ? p.user_data_32 : t.user_data_32) !== e.user_data_32) return TS.exists_with_different_user_data_32;
      if (t.ledger !== 0 && t.ledger !== e.ledger) return TS.exists_with_different_ledger;
      if (t.code !== 0 && t.code !== e.code) return TS.exists_with_different_code;
      return TS.exists;
    }

    if (t.debit_account_id !== e.debit_account_id) return TS.exists_with_different_debit_account_id;
    if (t.credit_account_id !== e.credit_account_id) return TS.exists_with_different_credit_account_id;
    // A balancing transfer recorded the amount it moved, at most the amount asked for.
    const balancing = has(t.flags, TF.balancing_debit) || has(t.flags, TF.balancing_credit);
    if (balancing ? t.amount < e.amount : t.amount !== e.amount) return TS.exists_with_different_amount;
    if (t.user_data_64 !== e.user_data_64) return TS.exists_with_different_user_data_64;
    if (t.user_data_32 !== e.user_data_32) return TS.exists_with_different_user_data_32;
    if (t.ledger !== e.ledger) return TS.exists_with_different_ledger;
    if (t.code !== e.code) return TS.exists_with_different_code;
    return TS.exists;
  }

  // ------------------------------------------------------------------------------------------
  // Queries: filter everything, sort by timestamp, reverse, cut at the limit.

  lookupAccounts(ids: readonly bigint[]): Account[] {
    return ids.flatMap((id) => {
      const a = this.s.accounts.get(id);
      return a === undefined ? [] : [{ ...a }];
    });
  }

  lookupTransfers(ids: readonly bigint[]): Transfer[] {
    return ids.flatMap((id) => {
      const t = this.s.transfers.get(id);
      return t === undefined ? [] : [{ ...t }];
    });
  }

  /** Whether a transfer id is taken, by a transfer or by a transient failure (a test-input helper). */
  transferIdUsed(id: bigint): boolean {
    return this.s.transfers.has(id) || this.s.failed.has(id);
  }

  /** Ids of the pending transfers not yet posted, voided or expired (a test-input helper). */
  livePending(): bigint[] {
    return [...this.s.fate].filter(([, fate]) => fate === 'pending').map(([id]) => id);
  }

  allAccounts(): Account[] {
    return [...this.s.accounts.values()].map((a) => ({ ...a }));
  }

  allTransfers(): Transfer[] {
    return [...this.s.transfers.values()].map((t) => ({ ...t }));
  }

  private accountFilterValid(f: AccountFilter): boolean {
    if (f.account_id === 0n || f.account_id === MAX64) return false;
    if (f.timestamp_min === MAX64 || f.timestamp_max === MAX64) return false;
    if (f.limit < 1 || f.limit > LIMIT_MAX) return false;
    if ((f.flags & ~0b111) !== 0) return false;
    if ((f.flags & 0b11) === 0) return false;
    if (f.timestamp_min !== 0n && f.timestamp_max !== 0n && f.timestamp_min > f.timestamp_max) return false;
    return true;
  }

  private accountTransfers(f: AccountFilter): Transfer[] {
    if (!this.accountFilterValid(f)) return [];
    const debits = has(f.flags, 1);
    const credits = has(f.flags, 2);
    const matching = [...this.s.transfers.values()].filter(
      (t) =>
        ((debits && t.debit_account_id === f.account_id) || (credits && t.credit_account_id === f.account_id)) &&
        (f.user_data_64 === 0n || t.user_data_64 === f.user_data_64) &&
        (f.user_data_32 === 0 || t.user_data_32 === f.user_data_32) &&
        (f.code === 0 || t.code === f.code) &&
        (f.timestamp_min === 0n || t.timestamp >= f.timestamp_min) &&
        (f.timestamp_max === 0n || t.timestamp <= f.timestamp_max),
    );
    return sortCut(matching, has(f.flags, 4), f.limit);
  }

  getAccountTransfers(f: AccountFilter): Transfer[] {
    return this.accountTransfers(f).map((t) => ({ ...t }));
  }

  getAccountBalances(f: AccountFilter): AccountBalance[] {
    const account = this.s.accounts.get(f.account_id);
    if (account === undefined || !has(account.flags, AF.history)) return [];
    return this.accountTransfers(f).map((t) => {
      const after = this.s.after.get(t.id)!;
      return { ...(t.debit_account_id === f.account_id ? after.dr : after.cr) };
    });
  }

  private queryFilterValid(f: QueryFilter): boolean {
    if (f.timestamp_min === MAX64 || f.timestamp_max === MAX64) return false;
    if (f.limit < 1 || f.limit > LIMIT_MAX) return false;
    if ((f.flags & ~1) !== 0) return false;
    if (f.timestamp_min !== 0n && f.timestamp_max !== 0n && f.timestamp_min > f.timestamp_max) return false;
    return true;
  }

  private queryMatches(f: QueryFilter, o: { user_data_64: bigint; user_data_32: number; ledger: number; code: number; timestamp: bigint }): boolean {
    return (
      (f.user_data_64 === 0n || o.user_data_64 === f.user_data_64) &&
      (f.user_data_32 === 0 || o.user_data_32 === f.user_data_32) &&
      (f.ledger === 0 || o.ledger === f.ledger) &&
      (f.code === 0 || o.code === f.code) &&
      (f.timestamp_min === 0n || o.timestamp >= f.timestamp_min) &&
      (f.timestamp_max === 0n || o.timestamp <= f.timestamp_max)
    );
  }

  queryAccounts(f: QueryFilter): Account[] {
    if (!this.queryFilterValid(f)) return [];
    const matching = [...this.s.accounts.values()].filter((a) => this.queryMatches(f, a));
    return sortCut(matching, has(f.flags, 1), f.limit).map((a) => ({ ...a }));
  }

  queryTransfers(f: QueryFilter): Transfer[] {
    if (!this.queryFilterValid(f)) return [];
    const matching = [...this.s.transfers.values()].filter((t) => this.queryMatches(f, t));
    return sortCut(matching, has(f.flags, 1), f.limit).map((t) => ({ ...t }));
  }
}

function sortCut<T extends { timestamp: bigint }>(items: T[], reversed: boolean, limit: number): T[] {
  const sorted = [...items].sort((a, b) => (a.timestamp < b.timestamp ? -1 : a.timestamp > b.timestamp ? 1 : 0));
  if (reversed) sorted.reverse();
  return sorted.slice(0, limit);
}
