// The ledger state machine: double entry with TigerBeetle's semantics over u64 numbers.
//
// Pure and deterministic: no I/O, no clock, no randomness. Time is an input (`now_ns`) that the
// caller logs with the batch, so that replaying the log reproduces the state byte for byte.
// Every check follows PROTOCOL.md section 4, where the status enum order is also the precedence.

import {
  type Account,
  type AccountBalance,
  type AccountFilter,
  type AccountInput,
  type CreateResult,
  type QueryFilter,
  type Transfer,
  type TransferInput,
  ACCOUNT_FILTER_FLAGS_KNOWN,
  ACCOUNT_FLAGS_KNOWN,
  AccountFilterFlags,
  AccountFlags,
  CreateAccountStatus as AS,
  CreateTransferStatus as TS,
  EVENTS_PER_REQUEST_MAX,
  NS_PER_S,
  QUERY_FILTER_FLAGS_KNOWN,
  QueryFilterFlags,
  TRANSFER_FLAGS_KNOWN,
  TRANSIENT_TRANSFER_STATUSES,
  TransferFlags as TF,
  U64_MAX,
} from './types.ts';
import { lowerBound, pushIndexed, timestampRange } from './sorted.ts';
import { ExpiryQueue } from './expiry.ts';
import { IdMap, IdSet } from './idmap.ts';

/** Where a pending transfer stands; stored beside it, since transfers themselves are immutable. */
export const PendingStatus = { pending: 1, posted: 2, voided: 3, expired: 4 } as const;
export type PendingStatusValue = (typeof PendingStatus)[keyof typeof PendingStatus];

/** Imported timestamps must fit in 63 bits, as TigerBeetle's do (the top bit is reserved). */
export const TIMESTAMP_MAX = (1n << 63n) - 1n;
/** Below this, an amount and two balances sum to less than 2^64: no overflow check can fail. */
const OVERFLOW_FREE = 1n << 62n;

const ACCOUNT_BALANCE_FLAGS = AccountFlags.debits_must_not_exceed_credits | AccountFlags.credits_must_not_exceed_debits;

/** Per account: its transfers on each side and, with `history`, its balance after each of them. */
export interface AccountIndex {
  debits: Transfer[];
  credits: Transfer[];
  history: AccountBalance[] | null;
}

export interface PendingState {
  status: PendingStatusValue;
  /** 0 when the pending transfer has no timeout. */
  expires_at: bigint;
}

// Undo records for the scope of a linked chain. Tagged tuples, not closures: no allocation per
// event outside chains, and one small array per mutation inside them.
const UNDO_ACCOUNT_BALANCES = 0;
const UNDO_ACCOUNT_INSERT = 1;
const UNDO_TRANSFER_INSERT = 2;
const UNDO_PENDING_STATUS = 3;
type Undo =
  | [typeof UNDO_ACCOUNT_BALANCES, Account, bigint, bigint, bigint, bigint, number]
  | [typeof UNDO_ACCOUNT_INSERT, Account]
  | [typeof UNDO_TRANSFER_INSERT, Transfer]
  | [typeof UNDO_PENDING_STATUS, bigint, PendingState | undefined];

/**
 * What a checkpoint must write: mutable objects changed since the last one, and where the
 * append-only sequences (transfers and history, in timestamp order) were when it was last taken.
 */
export interface LedgerChanges {
  accounts: Account[];
  pending: Array<[bigint, PendingState]>;
  transient: bigint[];
  /** Ordinals in `transfersInOrder()` from here on are new. */
  transfers_from: number;
  transfers_to: number;
  /** Ordinals in `historyInOrder()` from here on are new. */
  history_from: number;
  history_to: number;
}

/** A history entry: an account's balance right after one of its transfers. */
export type HistoryEntry = [account_id: bigint, balance: AccountBalance];

interface ScopedTransfer {
  transfer: Transfer;
  dr_balance: AccountBalance | null;
  cr_balance: AccountBalance | null;
}

/**
 * What a ledger is expected to hold, when it is known up front: a partial ledger seeded for one
 * cross-shard group (src/shard/group.ts) starts its tables at that size instead of growing through
 * it, and its other tables small, since one is made per group.
 */
export interface LedgerSizes {
  accounts: number;
  transfers: number;
}

export class Ledger {
  readonly accounts: IdMap<Account>;
  readonly transfers: IdMap<Transfer>;
  readonly pending: IdMap<PendingState>;
  /** Ids whose transfer failed with a transient status: reusing them is `id_already_failed`. */
  readonly transient: IdSet;
  /** Pending transfers not yet posted, voided or expired (for operators). */
  pending_live = 0;
  /** Pending transfers expired since start (for operators). */
  expired_total = 0;

  /** Greatest timestamp assigned or imported so far; every new one is above it. */
  last_timestamp = 0n;
  /** Greatest account / transfer timestamp: imported events must not regress below these. */
  account_timestamp_max = 0n;
  transfer_timestamp_max = 0n;

  private readonly account_index: IdMap<AccountIndex>;
  private readonly accounts_by_time: Account[] = [];
  /**
   * A seeded partial ledger takes its accounts in read order and sorts them by timestamp only if
   * execution asks (imports, a rolled-back account): most groups never do.
   */
  private accounts_unsorted = false;
  // User data can be distinct per object (an external reference): IdMaps, which have no 16.7
  // million-entry ceiling (the u32 field is keyed as a bigint). Ledgers and codes are few.
  private readonly accounts_by_user_data_64: IdMap<Account[]>;
  private readonly accounts_by_user_data_32: IdMap<Account[]>;
  private readonly accounts_by_ledger = new Map<number, Account[]>();
  private readonly accounts_by_code = new Map<number, Account[]>();
  private readonly transfers_by_time: Transfer[] = [];
  private readonly transfers_by_user_data_64: IdMap<Transfer[]>;
  private readonly transfers_by_user_data_32: IdMap<Transfer[]>;
  private readonly transfers_by_ledger = new Map<number, Transfer[]>();
  private readonly transfers_by_code = new Map<number, Transfer[]>();
  private readonly expiry = new ExpiryQueue();
  /**
   * Deadlines of pending transfers that this ledger holds but one of whose accounts it does not
   * (a cross-shard transfer kept by both shards). It cannot expire them alone: the engine expires
   * them in a cross-shard group, so that both sides change at once.
   */
  private readonly foreign_expiry = new ExpiryQueue();
  /**
   * Timestamps held by objects outside this ledger (a partial ledger seeded for a cross-shard
   * group): imported events must not reuse them either.
   */
  private readonly timestamps_taken = new Set<bigint>();
  /** The maxima a seeded partial ledger starts from: objects held elsewhere still count. */
  private seeded_account_timestamp_max = 0n;
  private seeded_transfer_timestamp_max = 0n;
  /**
   * A seeded partial ledger runs one group and is dropped: it keeps only what execution reads
   * (objects, timestamp order, history), not the query indexes.
   */
  private partial = false;

  /** Set for the duration of an `adopt` batch: see createTransfers. */
  private adopt_inputs = false;

  // Linked-chain scope: undo records, and index work deferred until the chain persists.
  private scope_open = false;
  private readonly undo: Undo[] = [];
  private readonly scope_accounts: Account[] = [];
  private readonly scope_transfers: ScopedTransfer[] = [];

  // Change tracking for incremental checkpoints.
  private readonly changed_accounts = new Set<Account>();
  private transfers_taken = 0;
  private history_taken = 0;
  private readonly history_log: HistoryEntry[] = [];
  private readonly changed_pending = new Set<bigint>();
  private changed_transient: bigint[] = [];

  constructor(sizes?: LedgerSizes) {
    const other = sizes === undefined ? 1024 : 16;
    this.accounts = new IdMap<Account>(sizes?.accounts ?? 1024);
    this.transfers = new IdMap<Transfer>(sizes?.transfers ?? 1024);
    this.pending = new IdMap<PendingState>(other);
    this.transient = new IdSet(other);
    this.account_index = new IdMap<AccountIndex>(other);
    this.accounts_by_user_data_64 = new IdMap<Account[]>(other);
    this.accounts_by_user_data_32 = new IdMap<Account[]>(other);
    this.transfers_by_user_data_64 = new IdMap<Transfer[]>(other);
    this.transfers_by_user_data_32 = new IdMap<Transfer[]>(other);
  }

  // ---------------------------------------------------------------------------------------------
  // Commands.

  /**
   * The batch timestamp: the caller's clock, pushed forward so that the batch's events get
   * timestamps strictly above every earlier one, whatever the clock did.
   */
  batchTimestamp(now_ns: bigint, count: number): bigint {
    assert(now_ns >= 0n, 'now_ns must be non-negative');
    const floor = this.last_timestamp + BigInt(Math.max(count, 1));
    return now_ns > floor ? now_ns : floor;
  }

  createAccounts(events: readonly AccountInput[], now_ns: bigint, runs?: TimestampRuns): CreateResult {
    assert(events.length <= EVENTS_PER_REQUEST_MAX, 'too many events');
    const { timestamp, stamps } = this.stamp(now_ns, events.length, runs);
    this.expirePending(stamps === null ? timestamp - BigInt(Math.max(events.length, 1)) + 1n : stamps[0]);
    const result = this.execute(events, timestamp, stamps, false);
    this.last_timestamp = timestamp;
    return result;
  }

  /**
   * `adopt`: the events are distinct objects that the caller hands over (freshly decoded), so a
   * created transfer may be stored as its own input object instead of a copy. Callers that keep
   * or reuse their event objects must pass false.
   *
   * `runs`: the events' timestamps, assigned by the engine's sequencer rather than derived from
   * `now_ns` (see TimestampRuns).
   */
  createTransfers(
    events: readonly TransferInput[],
    now_ns: bigint,
    options: { adopt: boolean; runs?: TimestampRuns } = { adopt: false },
  ): CreateResult {
    assert(events.length <= EVENTS_PER_REQUEST_MAX, 'too many events');
    const { timestamp, stamps } = this.stamp(now_ns, events.length, options.runs);
    this.expirePending(stamps === null ? timestamp - BigInt(Math.max(events.length, 1)) + 1n : stamps[0]);
    this.adopt_inputs = options.adopt;
    try {
      return this.execute(events, timestamp, stamps, true);
    } finally {
      this.adopt_inputs = false;
      this.last_timestamp = timestamp;
    }
  }

  /**
   * The batch timestamp (its last event's) and, when the timestamps come in several runs, every
   * event's. One run ending at T is the same as `now_ns` = T: events get T-n+1 .. T.
   */
  private stamp(now_ns: bigint, count: number, runs: TimestampRuns | undefined): { timestamp: bigint; stamps: bigint[] | null } {
    if (runs === undefined) return { timestamp: this.batchTimestamp(now_ns, count), stamps: null };
    assert(runs.length >= 1, 'timestamp runs cover the batch');
    let covered = 0;
    let previous = this.last_timestamp;
    for (const [top, n] of runs) {
      assert(Number.isInteger(n) && n >= 1, 'a timestamp run is not empty');
      assert(top - BigInt(n) + 1n > previous, 'assigned timestamps increase');
      previous = top;
      covered += n;
    }
    assert(covered === Math.max(count, 1), 'timestamp runs cover the batch exactly');
    const timestamp = runs[runs.length - 1][0];
    if (runs.length === 1) return { timestamp, stamps: null };
    const stamps: bigint[] = new Array(count);
    let at = 0;
    for (const [top, n] of runs) for (let k = n - 1; k >= 0; k--) stamps[at++] = top - BigInt(k);
    return { timestamp, stamps };
  }

  /** Expires every pending transfer due at `now_ns`; the engine calls it when no batch comes. */
  pulse(now_ns: bigint): number {
    const timestamp = this.batchTimestamp(now_ns, 1);
    const expired = this.expirePending(timestamp);
    this.last_timestamp = timestamp;
    return expired;
  }

  /** The earliest deadline among live pending transfers, or 0 when none has a timeout. */
  nextExpiry(): bigint {
    return this.earliestLive(this.expiry);
  }

  /** The earliest deadline among live pending transfers with an account elsewhere, or 0. */
  nextForeignExpiry(): bigint {
    return this.earliestLive(this.foreign_expiry);
  }

  /** Drops the queue's stale heads (posted, voided, re-timed) and returns the live one's deadline. */
  private earliestLive(queue: ExpiryQueue): bigint {
    for (;;) {
      const head = queue.peek();
      if (head === undefined) return 0n;
      const state = this.pending.get(head.id);
      if (state !== undefined && state.status === PendingStatus.pending && state.expires_at === head.expires_at) {
        return head.expires_at;
      }
      queue.pop();
    }
  }

  /**
   * Ids of live pending transfers (local or foreign) due at or before `horizon`: the `limit`
   * earliest, by deadline then id (deterministic, whatever the heaps' shapes).
   */
  duePending(horizon: bigint, limit: number): bigint[] {
    const due = new Map<bigint, bigint>();
    for (const queue of [this.expiry, this.foreign_expiry]) {
      queue.collectUpTo(horizon, (entry) => {
        const state = this.pending.get(entry.id);
        if (state !== undefined && state.status === PendingStatus.pending && state.expires_at === entry.expires_at) due.set(entry.id, entry.expires_at);
      });
    }
    const ordered = [...due].sort((a, b) => (a[1] !== b[1] ? (a[1] < b[1] ? -1 : 1) : a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    return ordered.slice(0, limit).map(([id]) => id);
  }

  /** Whether any account or transfer here has this timestamp. */
  hasObjectTimestamp(timestamp: bigint): boolean {
    return hasTimestamp(this.accountsByTime(), timestamp) || hasTimestamp(this.transfers_by_time, timestamp);
  }

  private execute(events: readonly (AccountInput | TransferInput)[], timestamp: bigint, stamps: bigint[] | null, transfers: boolean): CreateResult {
    const count = events.length;
    const status: number[] = new Array(count);
    const timestamps: bigint[] = new Array(count);
    if (count === 0) return { status, timestamp: timestamps };
    const imported_flag = transfers ? TF.imported : AccountFlags.imported;
    const batch_imported = (events[0].flags & imported_flag) !== 0;
    const LINKED = transfers ? TF.linked : AccountFlags.linked;
    let chain = -1;
    let chain_broken = false;

    for (let index = 0; index < count; index++) {
      const event = events[index];
      const event_timestamp = stamps === null ? timestamp - BigInt(count) + BigInt(index) + 1n : stamps[index];
      let result: number;
      if ((event.flags & LINKED) !== 0 && chain === -1) {
        chain = index;
        this.scopeOpen();
      }
      if ((event.flags & LINKED) !== 0 && index === count - 1) {
        result = transfers ? TS.linked_event_chain_open : AS.linked_event_chain_open;
      } else if (chain_broken) {
        result = transfers ? TS.linked_event_failed : AS.linked_event_failed;
      } else if (batch_imported !== ((event.flags & imported_flag) !== 0)) {
        result = batch_imported
          ? transfers ? TS.imported_event_expected : AS.imported_event_expected
          : transfers ? TS.imported_event_not_expected : AS.imported_event_not_expected;
      } else if ((event.flags & imported_flag) !== 0) {
        if (event.timestamp < 1n || event.timestamp > TIMESTAMP_MAX) {
          result = transfers ? TS.imported_event_timestamp_out_of_range : AS.imported_event_timestamp_out_of_range;
        } else if (event.timestamp >= timestamp) {
          result = transfers ? TS.imported_event_timestamp_must_not_advance : AS.imported_event_timestamp_must_not_advance;
        } else {
          result = transfers
            ? this.createTransfer(event as TransferInput, event.timestamp)
            : this.createAccount(event as AccountInput, event.timestamp);
        }
      } else if (event.timestamp !== 0n) {
        result = transfers ? TS.timestamp_must_be_zero : AS.timestamp_must_be_zero;
      } else {
        result = transfers
          ? this.createTransfer(event as TransferInput, event_timestamp)
          : this.createAccount(event as AccountInput, event_timestamp);
      }

      if (result !== 0 && chain !== -1 && !chain_broken) {
        chain_broken = true;
        this.scopeDiscard();
        const failed = transfers ? TS.linked_event_failed : AS.linked_event_failed;
        for (let i = chain; i < index; i++) {
          status[i] = failed;
          timestamps[i] = 0n;
        }
      }
      if (transfers && TRANSIENT_TRANSFER_STATUSES.has(result)) {
        this.transient.add(event.id);
        this.changed_transient.push(event.id);
      }
      status[index] = result;
      // A created object has the event's timestamp: assigned by position, or its own if imported.
      if (result === 0) timestamps[index] = (event.flags & imported_flag) !== 0 ? event.timestamp : event_timestamp;
      else timestamps[index] = this.existingTimestamp(event, result, transfers);

      if (chain !== -1 && ((event.flags & LINKED) === 0 || result === (transfers ? TS.linked_event_chain_open : AS.linked_event_chain_open))) {
        if (!chain_broken) this.scopePersist();
        chain = -1;
        chain_broken = false;
      }
    }
    // A chain still open here ended on its last event, which closed it above.
    assert(!this.scope_open, 'scope left open');
    return { status, timestamp: timestamps };
  }

  private existingTimestamp(event: AccountInput | TransferInput, result: number, transfers: boolean): bigint {
    if (result !== (transfers ? TS.exists : AS.exists)) return 0n;
    const object = transfers ? this.transfers.get(event.id) : this.accounts.get(event.id);
    return object === undefined ? 0n : object.timestamp;
  }

  // ---------------------------------------------------------------------------------------------
  // create_accounts

  private createAccount(a: AccountInput, timestamp: bigint): number {
    if (a.reserved !== undefined && a.reserved !== 0) return AS.reserved_field;
    if ((a.flags & ~ACCOUNT_FLAGS_KNOWN) !== 0) return AS.reserved_flag;
    if (a.id === 0n) return AS.id_must_not_be_zero;
    if (a.id === U64_MAX) return AS.id_must_not_be_int_max;
    const existing = this.accounts.get(a.id);
    if (existing !== undefined) {
      if (a.flags !== existing.flags) return AS.exists_with_different_flags;
      if (a.user_data_64 !== existing.user_data_64) return AS.exists_with_different_user_data_64;
      if (a.user_data_32 !== existing.user_data_32) return AS.exists_with_different_user_data_32;
      if (a.ledger !== existing.ledger) return AS.exists_with_different_ledger;
      if (a.code !== existing.code) return AS.exists_with_different_code;
      return AS.exists;
    }
    if ((a.flags & ACCOUNT_BALANCE_FLAGS) === ACCOUNT_BALANCE_FLAGS) return AS.flags_are_mutually_exclusive;
    if (a.ledger === 0) return AS.ledger_must_not_be_zero;
    if (a.code === 0) return AS.code_must_not_be_zero;
    if ((a.flags & AccountFlags.imported) !== 0) {
      // Timestamps identify objects: an imported one must not collide with any other.
      if (timestamp <= this.account_timestamp_max || hasTimestamp(this.transfers_by_time, timestamp) || this.timestamps_taken.has(timestamp)) {
        return AS.imported_event_timestamp_must_not_regress;
      }
    }
    const account: Account = {
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
      timestamp,
    };
    const inserted = this.accounts.insert(account.id, account);
    assert(inserted, 'a created account is new');
    this.changed_accounts.add(account);
    if (timestamp > this.account_timestamp_max) this.account_timestamp_max = timestamp;
    if (this.scope_open) {
      this.undo.push([UNDO_ACCOUNT_INSERT, account]);
      this.scope_accounts.push(account);
    } else {
      this.indexAccount(account);
    }
    return AS.created;
  }

  // ---------------------------------------------------------------------------------------------
  // create_transfers

  private createTransfer(t: TransferInput, timestamp: bigint): number {
    if ((t.flags & ~TRANSFER_FLAGS_KNOWN) !== 0) return TS.reserved_flag;
    if (t.id === 0n) return TS.id_must_not_be_zero;
    if (t.id === U64_MAX) return TS.id_must_not_be_int_max;
    const existing = this.transfers.get(t.id);
    if (existing !== undefined) return this.transferExists(t, existing);
    if (this.transient.has(t.id)) return TS.id_already_failed;

    const flags = t.flags;
    const post_or_void = (flags & (TF.post_pending_transfer | TF.void_pending_transfer)) !== 0;
    if (mutuallyExclusive(flags)) return TS.flags_are_mutually_exclusive;
    if (post_or_void) return this.postOrVoidPendingTransfer(t, timestamp);

    if (t.debit_account_id === 0n) return TS.debit_account_id_must_not_be_zero;
    if (t.debit_account_id === U64_MAX) return TS.debit_account_id_must_not_be_int_max;
    if (t.credit_account_id === 0n) return TS.credit_account_id_must_not_be_zero;
    if (t.credit_account_id === U64_MAX) return TS.credit_account_id_must_not_be_int_max;
    if (t.credit_account_id === t.debit_account_id) return TS.accounts_must_be_different;
    if (t.pending_id !== 0n) return TS.pending_id_must_be_zero;
    const is_pending = (flags & TF.pending) !== 0;
    if (!is_pending) {
      if (t.timeout !== 0) return TS.timeout_reserved_for_pending_transfer;
      if ((flags & (TF.closing_debit | TF.closing_credit)) !== 0) return TS.closing_transfer_must_be_pending;
    }
    if (t.ledger === 0) return TS.ledger_must_not_be_zero;
    if (t.code === 0) return TS.code_must_not_be_zero;

    const dr = this.accounts.get(t.debit_account_id);
    if (dr === undefined) return TS.debit_account_not_found;
    const cr = this.accounts.get(t.credit_account_id);
    if (cr === undefined) return TS.credit_account_not_found;
    if (dr.ledger !== cr.ledger) return TS.accounts_must_have_the_same_ledger;
    if (t.ledger !== dr.ledger) return TS.transfer_must_have_the_same_ledger_as_accounts;

    if ((flags & TF.imported) !== 0) {
      if (this.importedTimestampRegresses(timestamp)) return TS.imported_event_timestamp_must_not_regress;
      if (timestamp <= dr.timestamp) return TS.imported_event_timestamp_must_postdate_debit_account;
      if (timestamp <= cr.timestamp) return TS.imported_event_timestamp_must_postdate_credit_account;
      if (t.timeout !== 0) return TS.imported_event_timeout_must_be_zero;
    }
    if ((dr.flags & AccountFlags.closed) !== 0) return TS.debit_account_already_closed;
    if ((cr.flags & AccountFlags.closed) !== 0) return TS.credit_account_already_closed;

    let amount = t.amount;
    if ((flags & TF.balancing_debit) !== 0) {
      const dr_balance = dr.debits_posted + dr.debits_pending;
      amount = min(amount, saturatingSub(dr.credits_posted, dr_balance));
    }
    if ((flags & TF.balancing_credit) !== 0) {
      const cr_balance = cr.credits_posted + cr.credits_pending;
      amount = min(amount, saturatingSub(cr.debits_posted, cr_balance));
    }

    // Each bigint sum allocates. Three terms below 2^62 cannot reach 2^64, so the common case
    // compares (which does not allocate) and skips the sums.
    if (
      amount >= OVERFLOW_FREE ||
      dr.debits_pending >= OVERFLOW_FREE ||
      dr.debits_posted >= OVERFLOW_FREE ||
      cr.credits_pending >= OVERFLOW_FREE ||
      cr.credits_posted >= OVERFLOW_FREE
    ) {
      if (is_pending) {
        if (amount + dr.debits_pending > U64_MAX) return TS.overflows_debits_pending;
        if (amount + cr.credits_pending > U64_MAX) return TS.overflows_credits_pending;
      }
      if (amount + dr.debits_posted > U64_MAX) return TS.overflows_debits_posted;
      if (amount + cr.credits_posted > U64_MAX) return TS.overflows_credits_posted;
      if (amount + dr.debits_pending + dr.debits_posted > U64_MAX) return TS.overflows_debits;
      if (amount + cr.credits_pending + cr.credits_posted > U64_MAX) return TS.overflows_credits;
    }
    const timeout_ns = t.timeout === 0 ? 0n : BigInt(t.timeout) * NS_PER_S;
    if (t.timeout === 0 ? timestamp > TIMESTAMP_MAX : timestamp + timeout_ns > TIMESTAMP_MAX) return TS.overflows_timeout;

    if ((dr.flags & AccountFlags.debits_must_not_exceed_credits) !== 0) {
      if (dr.debits_pending + dr.debits_posted + amount > dr.credits_posted) return TS.exceeds_credits;
    }
    if ((cr.flags & AccountFlags.credits_must_not_exceed_debits) !== 0) {
      if (cr.credits_pending + cr.credits_posted + amount > cr.debits_posted) return TS.exceeds_debits;
    }

    let transfer: Transfer;
    if (this.adopt_inputs) {
      // The input already has every field of the record but these two (pending_id is zero here).
      transfer = t;
      transfer.amount = amount;
      transfer.timestamp = timestamp;
      // The same values, as the accounts' own bigints: a transfer lives as long as the ledger, and
      // sharing saves it two heap numbers (the input's become garbage while still young).
      transfer.debit_account_id = dr.id;
      transfer.credit_account_id = cr.id;
    } else {
      transfer = {
        id: t.id,
        debit_account_id: dr.id,
        credit_account_id: cr.id,
        amount,
        pending_id: 0n,
        user_data_64: t.user_data_64,
        user_data_32: t.user_data_32,
        timeout: t.timeout,
        ledger: t.ledger,
        code: t.code,
        flags,
        timestamp,
      };
    }
    this.touchAccount(dr);
    this.touchAccount(cr);
    if (is_pending) {
      dr.debits_pending += amount;
      cr.credits_pending += amount;
      this.setPending(t.id, { status: PendingStatus.pending, expires_at: t.timeout === 0 ? 0n : timestamp + timeout_ns });
      if ((flags & TF.closing_debit) !== 0) dr.flags |= AccountFlags.closed;
      if ((flags & TF.closing_credit) !== 0) cr.flags |= AccountFlags.closed;
    } else {
      dr.debits_posted += amount;
      cr.credits_posted += amount;
    }
    this.insertTransfer(transfer, dr, cr);
    return TS.created;
  }

  private postOrVoidPendingTransfer(t: TransferInput, timestamp: bigint): number {
    const flags = t.flags;
    const posting = (flags & TF.post_pending_transfer) !== 0;
    if (t.pending_id === 0n) return TS.pending_id_must_not_be_zero;
    if (t.pending_id === U64_MAX) return TS.pending_id_must_not_be_int_max;
    if (t.pending_id === t.id) return TS.pending_id_must_be_different;
    if (t.timeout !== 0) return TS.timeout_reserved_for_pending_transfer;

    const p = this.transfers.get(t.pending_id);
    if (p === undefined) return TS.pending_transfer_not_found;
    if ((p.flags & TF.pending) === 0) return TS.pending_transfer_not_pending;
    const state = this.pending.get(p.id);
    assert(state !== undefined, 'pending transfer has a state');

    const dr = this.accounts.get(p.debit_account_id);
    const cr = this.accounts.get(p.credit_account_id);
    assert(dr !== undefined && cr !== undefined, 'pending transfer accounts exist');

    if (t.debit_account_id !== 0n && t.debit_account_id !== p.debit_account_id) {
      return TS.pending_transfer_has_different_debit_account_id;
    }
    if (t.credit_account_id !== 0n && t.credit_account_id !== p.credit_account_id) {
      return TS.pending_transfer_has_different_credit_account_id;
    }
    if (t.ledger !== 0 && t.ledger !== p.ledger) return TS.pending_transfer_has_different_ledger;
    if (t.code !== 0 && t.code !== p.code) return TS.pending_transfer_has_different_code;

    // Post: the maximum posts the whole pending amount, less posts part of it and voids the rest.
    // PROTOCOL.md also takes a zero amount from the pending transfer (TigerBeetle 0.16 would post
    // zero); see docs/ledger.md. Void: zero means the pending amount, which is the only valid one.
    let amount: bigint;
    if (posting) amount = t.amount === 0n || t.amount === U64_MAX ? p.amount : t.amount;
    else amount = t.amount === 0n ? p.amount : t.amount;
    if (amount > p.amount) return TS.exceeds_pending_transfer_amount;
    if (!posting && amount < p.amount) return TS.pending_transfer_has_different_amount;

    if (state.status === PendingStatus.posted) return TS.pending_transfer_already_posted;
    if (state.status === PendingStatus.voided) return TS.pending_transfer_already_voided;
    if (state.status === PendingStatus.expired) return TS.pending_transfer_expired;
    if (state.expires_at !== 0n && state.expires_at <= timestamp) return TS.pending_transfer_expired;

    if ((flags & TF.imported) !== 0 && this.importedTimestampRegresses(timestamp)) {
      return TS.imported_event_timestamp_must_not_regress;
    }
    // A void is the one movement a closed account allows: it is how a closing transfer is undone.
    if (posting && (dr.flags & AccountFlags.closed) !== 0) return TS.debit_account_already_closed;
    if (posting && (cr.flags & AccountFlags.closed) !== 0) return TS.credit_account_already_closed;

    const transfer: Transfer = {
      id: t.id,
      debit_account_id: p.debit_account_id,
      credit_account_id: p.credit_account_id,
      amount,
      pending_id: t.pending_id,
      user_data_64: t.user_data_64 === 0n ? p.user_data_64 : t.user_data_64,
      user_data_32: t.user_data_32 === 0 ? p.user_data_32 : t.user_data_32,
      timeout: 0,
      ledger: p.ledger,
      code: p.code,
      flags,
      timestamp,
    };
    this.touchAccount(dr);
    this.touchAccount(cr);
    dr.debits_pending -= p.amount;
    cr.credits_pending -= p.amount;
    if (posting) {
      dr.debits_posted += amount;
      cr.credits_posted += amount;
      this.setPending(p.id, { status: PendingStatus.posted, expires_at: state.expires_at });
    } else {
      if ((p.flags & TF.closing_debit) !== 0) dr.flags &= ~AccountFlags.closed;
      if ((p.flags & TF.closing_credit) !== 0) cr.flags &= ~AccountFlags.closed;
      this.setPending(p.id, { status: PendingStatus.voided, expires_at: state.expires_at });
    }
    this.insertTransfer(transfer, dr, cr);
    return TS.created;
  }

  private transferExists(t: TransferInput, e: Transfer): number {
    if (t.flags !== e.flags) return TS.exists_with_different_flags;
    if (t.pending_id !== e.pending_id) return TS.exists_with_different_pending_id;
    if (t.timeout !== e.timeout) return TS.exists_with_different_timeout;
    const post_or_void = (t.flags & (TF.post_pending_transfer | TF.void_pending_transfer)) !== 0;
    if (post_or_void) {
      // Fields left zero were taken from the pending transfer.
      if (t.debit_account_id !== 0n && t.debit_account_id !== e.debit_account_id) {
        return TS.exists_with_different_debit_account_id;
      }
      if (t.credit_account_id !== 0n && t.credit_account_id !== e.credit_account_id) {
        return TS.exists_with_different_credit_account_id;
      }
      const p = this.transfers.get(e.pending_id);
      assert(p !== undefined, 'a posted or voided transfer has its pending transfer');
      const posting = (t.flags & TF.post_pending_transfer) !== 0;
      const takes_whole = t.amount === 0n || (posting && t.amount === U64_MAX);
      if (takes_whole ? e.amount !== p.amount : t.amount !== e.amount) return TS.exists_with_different_amount;
      if (t.user_data_64 === 0n ? e.user_data_64 !== p.user_data_64 : t.user_data_64 !== e.user_data_64) {
        return TS.exists_with_different_user_data_64;
      }
      if (t.user_data_32 === 0 ? e.user_data_32 !== p.user_data_32 : t.user_data_32 !== e.user_data_32) {
        return TS.exists_with_different_user_data_32;
      }
      if (t.ledger !== 0 && t.ledger !== e.ledger) return TS.exists_with_different_ledger;
      if (t.code !== 0 && t.code !== e.code) return TS.exists_with_different_code;
      return TS.exists;
    }
    if (t.debit_account_id !== e.debit_account_id) return TS.exists_with_different_debit_account_id;
    if (t.credit_account_id !== e.credit_account_id) return TS.exists_with_different_credit_account_id;
    // A balancing transfer records the amount it moved, which may be less than it asked for.
    const balancing = (t.flags & (TF.balancing_debit | TF.balancing_credit)) !== 0;
    if (balancing ? t.amount < e.amount : t.amount !== e.amount) return TS.exists_with_different_amount;
    if (t.user_data_64 !== e.user_data_64) return TS.exists_with_different_user_data_64;
    if (t.user_data_32 !== e.user_data_32) return TS.exists_with_different_user_data_32;
    if (t.ledger !== e.ledger) return TS.exists_with_different_ledger;
    if (t.code !== e.code) return TS.exists_with_different_code;
    return TS.exists;
  }

  // ---------------------------------------------------------------------------------------------
  // Expiry

  private expirePending(now: bigint): number {
    let expired = 0;
    for (;;) {
      const head = this.expiry.peek();
      if (head === undefined || head.expires_at > now) break;
      this.expiry.pop();
      const state = this.pending.get(head.id);
      if (state === undefined || state.status !== PendingStatus.pending || state.expires_at !== head.expires_at) continue;
      const p = this.transfers.get(head.id);
      assert(p !== undefined, 'expiring transfer exists');
      const dr = this.accounts.get(p.debit_account_id);
      const cr = this.accounts.get(p.credit_account_id);
      assert(dr !== undefined && cr !== undefined, 'expiring transfer accounts exist');
      this.touchAccount(dr);
      this.touchAccount(cr);
      dr.debits_pending -= p.amount;
      cr.credits_pending -= p.amount;
      if ((p.flags & TF.closing_debit) !== 0) dr.flags &= ~AccountFlags.closed;
      if ((p.flags & TF.closing_credit) !== 0) cr.flags &= ~AccountFlags.closed;
      this.setPending(p.id, { status: PendingStatus.expired, expires_at: state.expires_at });
      expired++;
      this.expired_total++;
    }
    return expired;
  }

  // ---------------------------------------------------------------------------------------------
  // Mutation helpers: every change goes through these, so that chains can undo and checkpoints
  // can find what changed.

  private touchAccount(account: Account): void {
    if (this.scope_open) {
      this.undo.push([
        UNDO_ACCOUNT_BALANCES,
        account,
        account.debits_pending,
        account.debits_posted,
        account.credits_pending,
        account.credits_posted,
        account.flags,
      ]);
    }
    this.changed_accounts.add(account);
  }

  private setPending(id: bigint, state: PendingState): void {
    const previous = this.pending.get(id);
    if (this.scope_open) this.undo.push([UNDO_PENDING_STATUS, id, previous]);
    this.pending_live += livePending(state) - livePending(previous);
    this.pending.set(id, state);
    this.changed_pending.add(id);
    if (state.status === PendingStatus.pending && state.expires_at !== 0n && !this.scope_open) {
      this.expiry.push(state.expires_at, id);
    }
  }

  private insertTransfer(transfer: Transfer, dr: Account, cr: Account): void {
    const inserted = this.transfers.insert(transfer.id, transfer);
    assert(inserted, 'a created transfer is new');
    if (transfer.timestamp > this.transfer_timestamp_max) this.transfer_timestamp_max = transfer.timestamp;
    // History records the balance right after this transfer, before later events move it again.
    const dr_balance = (dr.flags & AccountFlags.history) !== 0 ? balanceOf(dr, transfer.timestamp) : null;
    const cr_balance = (cr.flags & AccountFlags.history) !== 0 ? balanceOf(cr, transfer.timestamp) : null;
    if (this.scope_open) {
      this.undo.push([UNDO_TRANSFER_INSERT, transfer]);
      this.scope_transfers.push({ transfer, dr_balance, cr_balance });
    } else {
      this.indexTransfer(transfer, dr_balance, cr_balance);
    }
  }

  private scopeOpen(): void {
    assert(!this.scope_open, 'nested scope');
    this.scope_open = true;
  }

  private scopePersist(): void {
    assert(this.scope_open, 'no scope to persist');
    this.scope_open = false;
    this.undo.length = 0;
    for (const account of this.scope_accounts) this.indexAccount(account);
    for (const { transfer, dr_balance, cr_balance } of this.scope_transfers) {
      this.indexTransfer(transfer, dr_balance, cr_balance);
      const state = (transfer.flags & TF.pending) !== 0 ? this.pending.get(transfer.id) : undefined;
      if (state !== undefined && state.status === PendingStatus.pending && state.expires_at !== 0n) {
        this.expiry.push(state.expires_at, transfer.id);
      }
    }
    this.scope_accounts.length = 0;
    this.scope_transfers.length = 0;
  }

  private scopeDiscard(): void {
    assert(this.scope_open, 'no scope to discard');
    for (let i = this.undo.length - 1; i >= 0; i--) {
      const undo = this.undo[i];
      switch (undo[0]) {
        case UNDO_ACCOUNT_BALANCES: {
          const account = undo[1];
          account.debits_pending = undo[2];
          account.debits_posted = undo[3];
          account.credits_pending = undo[4];
          account.credits_posted = undo[5];
          account.flags = undo[6];
          break;
        }
        case UNDO_ACCOUNT_INSERT:
          this.accounts.delete(undo[1].id);
          this.changed_accounts.delete(undo[1]);
          break;
        case UNDO_TRANSFER_INSERT:
          this.transfers.delete(undo[1].id);
          break;
        case UNDO_PENDING_STATUS:
          this.pending_live += livePending(undo[2]) - livePending(this.pending.get(undo[1]));
          if (undo[2] === undefined) {
            // Created in this scope, so no checkpoint can hold it: nothing to write either.
            this.pending.delete(undo[1]);
            this.changed_pending.delete(undo[1]);
          } else {
            this.pending.set(undo[1], undo[2]);
          }
          break;
      }
    }
    this.undo.length = 0;
    this.scope_accounts.length = 0;
    this.scope_transfers.length = 0;
    this.scope_open = false;
    // The chain's timestamps stay consumed, but the maxima must not keep a discarded object's.
    this.account_timestamp_max = this.recomputeMax(this.accountsByTime(), this.account_timestamp_max, this.seeded_account_timestamp_max);
    this.transfer_timestamp_max = this.recomputeMax(this.transfers_by_time, this.transfer_timestamp_max, this.seeded_transfer_timestamp_max);
  }

  /** An imported transfer must follow every transfer and must not share an account's timestamp. */
  private importedTimestampRegresses(timestamp: bigint): boolean {
    return timestamp <= this.transfer_timestamp_max || hasTimestamp(this.accountsByTime(), timestamp) || this.timestamps_taken.has(timestamp);
  }

  private recomputeMax(items: readonly { timestamp: bigint }[], current: bigint, floor: bigint): bigint {
    let last = items.length === 0 ? 0n : items[items.length - 1].timestamp;
    if (last < floor) last = floor;
    return last < current ? last : current;
  }

  private indexAccount(account: Account): void {
    this.accounts_by_time.push(account);
    // A partial ledger never lists an account's transfers or history (see indexTransfer: its
    // history goes to the log the participants adopt from), so it keeps no index entry.
    if (this.partial) return;
    this.account_index.set(account.id, {
      debits: [],
      credits: [],
      history: (account.flags & AccountFlags.history) !== 0 ? [] : null,
    });
    if (account.user_data_64 !== 0n) pushIndexed(this.accounts_by_user_data_64, account.user_data_64, account);
    if (account.user_data_32 !== 0) pushIndexed(this.accounts_by_user_data_32, BigInt(account.user_data_32), account);
    pushIndexed(this.accounts_by_ledger, account.ledger, account);
    pushIndexed(this.accounts_by_code, account.code, account);
  }

  private indexTransfer(transfer: Transfer, dr_balance: AccountBalance | null, cr_balance: AccountBalance | null): void {
    this.transfers_by_time.push(transfer);
    if (this.partial) {
      if (dr_balance !== null) this.history_log.push([transfer.debit_account_id, dr_balance]);
      if (cr_balance !== null) this.history_log.push([transfer.credit_account_id, cr_balance]);
      return;
    }
    if (transfer.user_data_64 !== 0n) pushIndexed(this.transfers_by_user_data_64, transfer.user_data_64, transfer);
    if (transfer.user_data_32 !== 0) pushIndexed(this.transfers_by_user_data_32, BigInt(transfer.user_data_32), transfer);
    pushIndexed(this.transfers_by_ledger, transfer.ledger, transfer);
    pushIndexed(this.transfers_by_code, transfer.code, transfer);
    const dr_index = this.account_index.get(transfer.debit_account_id)!;
    const cr_index = this.account_index.get(transfer.credit_account_id)!;
    dr_index.debits.push(transfer);
    cr_index.credits.push(transfer);
    if (dr_balance !== null) {
      dr_index.history!.push(dr_balance);
      this.history_log.push([transfer.debit_account_id, dr_balance]);
    }
    if (cr_balance !== null) {
      cr_index.history!.push(cr_balance);
      this.history_log.push([transfer.credit_account_id, cr_balance]);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Queries. Each walks an index in timestamp order from a binary-searched start.

  lookupAccounts(ids: readonly bigint[]): Account[] {
    const out: Account[] = [];
    for (const id of ids) {
      const account = this.accounts.get(id);
      if (account !== undefined) out.push({ ...account });
    }
    return out;
  }

  lookupTransfers(ids: readonly bigint[]): Transfer[] {
    const out: Transfer[] = [];
    for (const id of ids) {
      const transfer = this.transfers.get(id);
      if (transfer !== undefined) out.push({ ...transfer });
    }
    return out;
  }

  getAccountTransfers(filter: AccountFilter): Transfer[] {
    const out: Transfer[] = [];
    this.scanAccount(filter, (transfer) => {
      out.push({ ...transfer });
    });
    return out;
  }

  getAccountBalances(filter: AccountFilter): AccountBalance[] {
    const index = this.account_index.get(filter.account_id);
    if (index === undefined || index.history === null) return [];
    const history = index.history;
    const out: AccountBalance[] = [];
    this.scanAccount(filter, (transfer) => {
      const at = lowerBound(history, transfer.timestamp);
      assert(at < history.length && history[at].timestamp === transfer.timestamp, 'history entry per transfer');
      out.push({ ...history[at] });
    });
    return out;
  }

  private scanAccount(filter: AccountFilter, visit: (transfer: Transfer) => void): void {
    if (!validAccountFilter(filter)) return;
    const index = this.account_index.get(filter.account_id);
    if (index === undefined) return;
    const reversed = (filter.flags & AccountFilterFlags.reversed) !== 0;
    const debits = (filter.flags & AccountFilterFlags.debits) !== 0 ? index.debits : EMPTY;
    const credits = (filter.flags & AccountFilterFlags.credits) !== 0 ? index.credits : EMPTY;
    let [d_lo, d_hi] = timestampRange(debits, filter.timestamp_min, filter.timestamp_max);
    let [c_lo, c_hi] = timestampRange(credits, filter.timestamp_min, filter.timestamp_max);
    let found = 0;
    // Merge the two sides by timestamp (they never share one: a transfer has two accounts).
    while (found < filter.limit && (d_lo < d_hi || c_lo < c_hi)) {
      let transfer: Transfer;
      if (!reversed) {
        if (c_lo >= c_hi || (d_lo < d_hi && debits[d_lo].timestamp < credits[c_lo].timestamp)) transfer = debits[d_lo++];
        else transfer = credits[c_lo++];
      } else {
        if (c_lo >= c_hi || (d_lo < d_hi && debits[d_hi - 1].timestamp > credits[c_hi - 1].timestamp)) transfer = debits[--d_hi];
        else transfer = credits[--c_hi];
      }
      if (filter.user_data_64 !== 0n && transfer.user_data_64 !== filter.user_data_64) continue;
      if (filter.user_data_32 !== 0 && transfer.user_data_32 !== filter.user_data_32) continue;
      if (filter.code !== 0 && transfer.code !== filter.code) continue;
      visit(transfer);
      found++;
    }
  }

  queryAccounts(filter: QueryFilter): Account[] {
    if (!validQueryFilter(filter)) return [];
    const candidates = this.pickIndex<Account>(filter, this.accountsByTime(), this.accounts_by_user_data_64, this.accounts_by_user_data_32, this.accounts_by_ledger, this.accounts_by_code);
    return scanQuery(candidates, filter).map((account) => ({ ...account }));
  }

  queryTransfers(filter: QueryFilter): Transfer[] {
    if (!validQueryFilter(filter)) return [];
    const candidates = this.pickIndex<Transfer>(filter, this.transfers_by_time, this.transfers_by_user_data_64, this.transfers_by_user_data_32, this.transfers_by_ledger, this.transfers_by_code);
    return scanQuery(candidates, filter).map((transfer) => ({ ...transfer }));
  }

  /** The smallest index among the filter's fields: the rest of the AND is checked per candidate. */
  private pickIndex<T extends QueryFiltered>(
    filter: QueryFilter,
    all: T[],
    by_user_data_64: IdMap<T[]>,
    by_user_data_32: IdMap<T[]>,
    by_ledger: Map<number, T[]>,
    by_code: Map<number, T[]>,
  ): T[] {
    let best = all;
    const consider = (list: T[] | undefined): void => {
      const candidate = list ?? (EMPTY as unknown as T[]);
      if (candidate.length < best.length) best = candidate;
    };
    if (filter.user_data_64 !== 0n) consider(by_user_data_64.get(filter.user_data_64));
    if (filter.user_data_32 !== 0) consider(by_user_data_32.get(BigInt(filter.user_data_32)));
    if (filter.ledger !== 0) consider(by_ledger.get(filter.ledger));
    if (filter.code !== 0) consider(by_code.get(filter.code));
    return best;
  }

  // ---------------------------------------------------------------------------------------------
  // Checkpoints and recovery.

  /** Everything created or changed since the last call; the caller writes it in one transaction. */
  takeChanges(): LedgerChanges {
    assert(!this.scope_open, 'changes taken inside a chain');
    const changes: LedgerChanges = {
      accounts: [...this.changed_accounts],
      pending: [...this.changed_pending].map((id) => [id, this.pending.get(id)!] as [bigint, PendingState]),
      transient: this.changed_transient,
      transfers_from: this.transfers_taken,
      transfers_to: this.transfers_by_time.length,
      history_from: this.history_taken,
      history_to: this.history_log.length,
    };
    this.changed_accounts.clear();
    this.changed_pending.clear();
    this.changed_transient = [];
    this.transfers_taken = this.transfers_by_time.length;
    this.history_taken = this.history_log.length;
    return changes;
  }

  /** All accounts in timestamp order (read-only view: do not mutate). */
  accountsInOrder(): readonly Account[] {
    return this.accountsByTime();
  }

  private accountsByTime(): Account[] {
    if (this.accounts_unsorted) {
      this.accounts_by_time.sort((a, b) => (a.timestamp < b.timestamp ? -1 : a.timestamp > b.timestamp ? 1 : 0));
      this.accounts_unsorted = false;
    }
    return this.accounts_by_time;
  }

  /** All transfers in timestamp order (read-only view: do not mutate). */
  transfersInOrder(): readonly Transfer[] {
    return this.transfers_by_time;
  }

  /** Every history entry, in the order they were made (timestamp order); read-only view. */
  historyInOrder(): readonly HistoryEntry[] {
    return this.history_log;
  }

  /** Account index entries (history) are rebuilt from transfers, so a checkpoint need not hold them. */
  historyOf(account_id: bigint): readonly AccountBalance[] | null {
    return this.account_index.get(account_id)?.history ?? null;
  }

  /**
   * Rebuilds a ledger from a checkpoint. Objects come in timestamp order; history balances are
   * stored by the checkpoint because they cannot be recomputed from final balances.
   */
  restore(snapshot: LedgerSnapshot): void {
    assert(this.accounts.size === 0 && this.transfers.size === 0, 'restore into an empty ledger');
    for (const account of snapshot.accounts) {
      const inserted = this.accounts.insert(account.id, account);
      assert(inserted, 'a restored account is new');
      this.indexAccount(account);
      if (account.timestamp > this.account_timestamp_max) this.account_timestamp_max = account.timestamp;
    }
    for (const transfer of snapshot.transfers) {
      this.storeTransfer(transfer);
      // A cross-shard transfer is kept by both shards; each indexes only its own account's side.
      this.account_index.get(transfer.debit_account_id)?.debits.push(transfer);
      this.account_index.get(transfer.credit_account_id)?.credits.push(transfer);
    }
    for (const entry of snapshot.history) {
      const index = this.account_index.get(entry[0]);
      assert(index !== undefined && index.history !== null, 'history for a history account');
      index.history.push(entry[1]);
      this.history_log.push(entry);
    }
    for (const [id, state] of snapshot.pending) {
      this.pending.set(id, state);
      this.pending_live += livePending(state);
      if (state.status === PendingStatus.pending && state.expires_at !== 0n) this.queueExpiry(id, state.expires_at);
    }
    for (const id of snapshot.transient) this.transient.add(id);
    this.last_timestamp = snapshot.last_timestamp;
    this.takeChanges();
  }

  // ---------------------------------------------------------------------------------------------
  // Cross-shard groups. A shard holds only its own accounts; a group of events that spans shards
  // runs on a partial ledger seeded with what every participant read (`seed`), and each
  // participant then takes over the effects on what it holds (`adoptFrom`).

  /** Fills an empty ledger with the union of the participants' read sets. */
  seed(read: SeedInput): void {
    assert(this.accounts.size === 0 && this.transfers.size === 0, 'seed into an empty ledger');
    this.partial = true;
    for (const account of read.accounts) {
      const inserted = this.accounts.insert(account.id, account);
      assert(inserted, 'an account is read from one shard only');
      this.indexAccount(account);
    }
    this.accounts_unsorted = true;
    // Existing transfers serve only the exists checks and pending lookups: they are not indexed.
    for (const transfer of read.transfers) {
      this.transfers.insert(transfer.id, transfer); // read by several participants: the first copy stays
    }
    for (const [id, state] of read.pending) {
      const known = this.pending.get(id);
      if (known !== undefined) {
        assert(known.status === state.status && known.expires_at === state.expires_at, 'shards agree on a pending state');
        continue;
      }
      const transfer = this.transfers.get(id);
      assert(transfer !== undefined, 'a pending state comes with its transfer');
      this.pending.set(id, state);
      this.pending_live += livePending(state);
    }
    for (const [id, state] of this.pending) {
      if (state.status !== PendingStatus.pending || state.expires_at === 0n) continue;
      const transfer = this.transfers.get(id)!;
      // Only a pending transfer whose accounts were both read can expire here.
      if (this.accounts.has(transfer.debit_account_id) && this.accounts.has(transfer.credit_account_id)) {
        this.expiry.push(state.expires_at, id);
      }
    }
    for (const id of read.transient) this.transient.add(id);
    for (const timestamp of read.taken) this.timestamps_taken.add(timestamp);
    this.last_timestamp = read.last_timestamp;
    this.account_timestamp_max = read.account_timestamp_max;
    this.transfer_timestamp_max = read.transfer_timestamp_max;
    this.seeded_account_timestamp_max = read.account_timestamp_max;
    this.seeded_transfer_timestamp_max = read.transfer_timestamp_max;
    this.takeChanges();
  }

  /**
   * Takes over the effects of a group executed on `scratch` (a seeded partial ledger) for what
   * this ledger holds: its own accounts, the transfers that touch one of them (with their pending
   * states and history), and every transient id of the group.
   */
  adoptFrom(scratch: Ledger, owns: (account_id: bigint) => boolean): void {
    assert(!this.scope_open && !scratch.scope_open, 'adopt outside a chain');
    for (const account of scratch.changed_accounts) {
      const mine = this.accounts.get(account.id);
      if (mine === account) {
        // Seeded from this ledger's own object, which the group changed in place.
        this.changed_accounts.add(mine);
        continue;
      }
      if (!owns(account.id)) continue;
      if (mine === undefined) {
        assert(account.timestamp > this.last_timestamp || (account.flags & AccountFlags.imported) !== 0, 'adopted account is new');
        const inserted = this.accounts.insert(account.id, account);
        assert(inserted, 'an adopted account is new');
        this.indexAccount(account);
        this.changed_accounts.add(account);
        if (account.timestamp > this.account_timestamp_max) this.account_timestamp_max = account.timestamp;
      } else {
        mine.debits_pending = account.debits_pending;
        mine.debits_posted = account.debits_posted;
        mine.credits_pending = account.credits_pending;
        mine.credits_posted = account.credits_posted;
        mine.flags = account.flags;
        this.changed_accounts.add(mine);
      }
    }
    // Only transfers created by the group are indexed in the scratch ledger, in timestamp order.
    // An account is this ledger's if it has it (accounts were adopted above).
    for (const transfer of scratch.transfers_by_time) {
      const dr_index = this.account_index.get(transfer.debit_account_id);
      const cr_index = this.account_index.get(transfer.credit_account_id);
      if (dr_index === undefined && cr_index === undefined) continue;
      this.storeTransfer(transfer);
      dr_index?.debits.push(transfer);
      cr_index?.credits.push(transfer);
    }
    for (const entry of scratch.history_log) {
      const index = this.account_index.get(entry[0]);
      if (index === undefined) continue; // another shard's account
      assert(index.history !== null, 'adopted history for a history account');
      index.history.push(entry[1]);
      this.history_log.push(entry);
    }
    for (const id of scratch.changed_pending) {
      const transfer = this.transfers.get(id);
      if (transfer === undefined) continue; // kept by other shards only
      const state = scratch.pending.get(id)!;
      const previous = this.pending.get(id);
      this.pending_live += livePending(state) - livePending(previous);
      if (previous !== undefined && previous.status === PendingStatus.pending && state.status === PendingStatus.expired && this.accounts.has(transfer.debit_account_id)) {
        this.expired_total++;
      }
      this.pending.set(id, state);
      this.changed_pending.add(id);
      if (state.status === PendingStatus.pending && state.expires_at !== 0n) this.queueExpiry(id, state.expires_at);
    }
    for (const id of scratch.changed_transient) {
      if (this.transient.has(id)) continue;
      this.transient.add(id);
      this.changed_transient.push(id);
    }
    if (scratch.last_timestamp > this.last_timestamp) this.last_timestamp = scratch.last_timestamp;
  }

  /** Stores a transfer that is already final (restored, or adopted from a group) with its query indexes. */
  private storeTransfer(transfer: Transfer): void {
    const inserted = this.transfers.insert(transfer.id, transfer);
    assert(inserted, 'a stored transfer is new');
    if (transfer.timestamp > this.transfer_timestamp_max) this.transfer_timestamp_max = transfer.timestamp;
    this.transfers_by_time.push(transfer);
    if (transfer.user_data_64 !== 0n) pushIndexed(this.transfers_by_user_data_64, transfer.user_data_64, transfer);
    if (transfer.user_data_32 !== 0) pushIndexed(this.transfers_by_user_data_32, BigInt(transfer.user_data_32), transfer);
    pushIndexed(this.transfers_by_ledger, transfer.ledger, transfer);
    pushIndexed(this.transfers_by_code, transfer.code, transfer);
  }

  /** A live pending transfer's deadline goes where it can be acted on: here, or in a group. */
  private queueExpiry(id: bigint, expires_at: bigint): void {
    const transfer = this.transfers.get(id);
    assert(transfer !== undefined, 'pending transfer exists');
    if (this.accounts.has(transfer.debit_account_id) && this.accounts.has(transfer.credit_account_id)) {
      this.expiry.push(expires_at, id);
    } else {
      this.foreign_expiry.push(expires_at, id);
    }
  }
}

/**
 * Timestamps assigned from outside, as runs of consecutive values: [last of the run, events in
 * it], in event order. The engine's sequencer gives each request a range in the order requests
 * are dispatched, so events keep request order across shards; a shard that merges several
 * requests, or gets part of a split one, receives several runs.
 */
export type TimestampRuns = ReadonlyArray<readonly [top: bigint, count: number]>;

/** What a cross-shard group's participants read, united: see Ledger.seed. */
export interface SeedInput {
  accounts: Account[];
  transfers: Transfer[];
  pending: Array<[bigint, PendingState]>;
  transient: bigint[];
  /** Timestamps of objects held elsewhere that imported events must not reuse. */
  taken: bigint[];
  last_timestamp: bigint;
  account_timestamp_max: bigint;
  transfer_timestamp_max: bigint;
}

export interface LedgerSnapshot {
  /** In timestamp order. */
  accounts: Account[];
  /** In timestamp order. */
  transfers: Transfer[];
  /** In the order they were made. */
  history: HistoryEntry[];
  pending: Array<[bigint, PendingState]>;
  transient: bigint[];
  last_timestamp: bigint;
}

interface QueryFiltered {
  timestamp: bigint;
  user_data_64: bigint;
  user_data_32: number;
  ledger: number;
  code: number;
}

const EMPTY: Transfer[] = [];

function scanQuery<T extends QueryFiltered>(items: readonly T[], filter: QueryFilter): T[] {
  const out: T[] = [];
  const [lo, hi] = timestampRange(items, filter.timestamp_min, filter.timestamp_max);
  const reversed = (filter.flags & QueryFilterFlags.reversed) !== 0;
  for (let k = 0; k < hi - lo && out.length < filter.limit; k++) {
    const item = items[reversed ? hi - 1 - k : lo + k];
    if (filter.user_data_64 !== 0n && item.user_data_64 !== filter.user_data_64) continue;
    if (filter.user_data_32 !== 0 && item.user_data_32 !== filter.user_data_32) continue;
    if (filter.ledger !== 0 && item.ledger !== filter.ledger) continue;
    if (filter.code !== 0 && item.code !== filter.code) continue;
    out.push(item);
  }
  return out;
}

function hasTimestamp(items: readonly { timestamp: bigint }[], timestamp: bigint): boolean {
  const at = lowerBound(items, timestamp);
  return at < items.length && items[at].timestamp === timestamp;
}

function validAccountFilter(filter: AccountFilter): boolean {
  if (filter.account_id === 0n || filter.account_id === U64_MAX) return false;
  if (filter.timestamp_min === U64_MAX || filter.timestamp_max === U64_MAX) return false;
  if (filter.limit < 1 || filter.limit > EVENTS_PER_REQUEST_MAX) return false;
  if ((filter.flags & ~ACCOUNT_FILTER_FLAGS_KNOWN) !== 0) return false;
  if ((filter.flags & (AccountFilterFlags.debits | AccountFilterFlags.credits)) === 0) return false;
  if (filter.timestamp_min !== 0n && filter.timestamp_max !== 0n && filter.timestamp_min > filter.timestamp_max) return false;
  return true;
}

function validQueryFilter(filter: QueryFilter): boolean {
  if (filter.timestamp_min === U64_MAX || filter.timestamp_max === U64_MAX) return false;
  if (filter.limit < 1 || filter.limit > EVENTS_PER_REQUEST_MAX) return false;
  if ((filter.flags & ~QUERY_FILTER_FLAGS_KNOWN) !== 0) return false;
  if (filter.timestamp_min !== 0n && filter.timestamp_max !== 0n && filter.timestamp_min > filter.timestamp_max) return false;
  return true;
}

function mutuallyExclusive(flags: number): boolean {
  const post = (flags & TF.post_pending_transfer) !== 0;
  const void_ = (flags & TF.void_pending_transfer) !== 0;
  const pending = (flags & TF.pending) !== 0;
  const balancing = (flags & (TF.balancing_debit | TF.balancing_credit)) !== 0;
  const closing = (flags & (TF.closing_debit | TF.closing_credit)) !== 0;
  if (post && void_) return true;
  if (pending && (post || void_)) return true;
  if ((post || void_) && (balancing || closing)) return true;
  return false;
}

function livePending(state: PendingState | undefined): number {
  return state !== undefined && state.status === PendingStatus.pending ? 1 : 0;
}

function balanceOf(account: Account, timestamp: bigint): AccountBalance {
  return {
    debits_pending: account.debits_pending,
    debits_posted: account.debits_posted,
    credits_pending: account.credits_pending,
    credits_posted: account.credits_posted,
    timestamp,
  };
}

function min(a: bigint, b: bigint): bigint {
  return a < b ? a : b;
}

function saturatingSub(a: bigint, b: bigint): bigint {
  return a > b ? a - b : 0n;
}

export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`ledger invariant violated: ${message}`);
}
