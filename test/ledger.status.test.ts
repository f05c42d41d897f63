// Every create_accounts and create_transfers status, each reached through the public Ledger API in
// a subtest of its own, with the side effects checked: a failed event changes nothing (all accounts
// and transfers compare equal before and after, the failed id is not found), a rolled-back linked
// chain leaves no trace, and at the end of every subtest the ledger's invariants hold (per ledger,
// sum of debits == sum of credits, posted and pending; posted balances == the sum of the transfers
// that post; limits respected; indexes agree with lookups).
//
// The expected behaviour is PROTOCOL.md section 4 and TigerBeetle 0.16's state machine
// (create_account, create_transfer, post_or_void_pending_transfer, create_*_exists, expiry), with
// the status enum order as precedence. Where PROTOCOL.md says otherwise it wins, and the test says so.

import t from 'tap';
import { Ledger } from '../src/ledger/ledger.ts';
import {
  type Account,
  type AccountInput,
  type CreateAccountStatusName,
  type CreateTransferStatusName,
  type Transfer,
  type TransferInput,
  AccountFilterFlags,
  AccountFlags as AF,
  CREATE_ACCOUNT_STATUS_NAMES,
  CREATE_TRANSFER_STATUS_NAMES,
  CreateAccountStatus,
  CreateTransferStatus,
  NS_PER_S,
  TransferFlags as TF,
  U32_MAX,
  U64_MAX,
} from '../src/ledger/types.ts';
import { account, accountFilter, pending, post, queryFilter, transfer, voidPending } from './support/builders.ts';

type Test = Parameters<Parameters<typeof t.test>[0]>[0];

/** TigerBeetle timestamps are u63: imported ones and pending deadlines must stay within it. */
const MAX63 = (1n << 63n) - 1n;
const NS = NS_PER_S;

// ---------------------------------------------------------------------------------------------
// Harness

interface Snapshot {
  accounts: Account[];
  transfers: Transfer[];
}

interface Outcome<N> {
  names: N[];
  timestamp: bigint[];
}

function allAccounts(l: Ledger): Account[] {
  const out: Account[] = [];
  let after = 0n;
  for (;;) {
    const page = l.queryAccounts(queryFilter({ timestamp_min: after + 1n }));
    out.push(...page);
    if (page.length < queryFilter().limit) return out;
    after = page[page.length - 1].timestamp;
  }
}

function allTransfers(l: Ledger): Transfer[] {
  const out: Transfer[] = [];
  let after = 0n;
  for (;;) {
    const page = l.queryTransfers(queryFilter({ timestamp_min: after + 1n }));
    out.push(...page);
    if (page.length < queryFilter().limit) return out;
    after = page[page.length - 1].timestamp;
  }
}

/** Statuses reached by any subtest, as `account:NAME` / `transfer:NAME`. */
const reached_anywhere = new Set<string>();

class Harness {
  readonly l = new Ledger();
  readonly reached = new Set<string>();

  constructor(readonly t: Test) {}

  createAccounts(events: AccountInput[], now = 0n): Outcome<CreateAccountStatusName> {
    const r = this.l.createAccounts(events, now);
    this.t.equal(r.status.length, events.length, 'one status per event');
    this.t.equal(r.timestamp.length, events.length, 'one timestamp per event');
    const names = r.status.map((s) => CREATE_ACCOUNT_STATUS_NAMES[s] ?? (`unknown(${s})` as CreateAccountStatusName));
    for (const name of names) this.reached.add(`account:${name}`);
    return { names, timestamp: r.timestamp };
  }

  createTransfers(events: TransferInput[], now = 0n): Outcome<CreateTransferStatusName> {
    const r = this.l.createTransfers(events, now);
    this.t.equal(r.status.length, events.length, 'one status per event');
    this.t.equal(r.timestamp.length, events.length, 'one timestamp per event');
    const names = r.status.map((s) => CREATE_TRANSFER_STATUS_NAMES[s] ?? (`unknown(${s})` as CreateTransferStatusName));
    for (const name of names) this.reached.add(`transfer:${name}`);
    return { names, timestamp: r.timestamp };
  }

  /** Creates accounts, expecting these statuses; returns the timestamps. */
  accounts(events: AccountInput[], expected: CreateAccountStatusName[], now = 0n): bigint[] {
    const r = this.createAccounts(events, now);
    this.t.strictSame(r.names, expected, `create_accounts: ${expected.join(', ')}`);
    r.names.forEach((name, i) => {
      if (name === 'created') this.t.equal(this.account(events[i].id).timestamp, r.timestamp[i], 'created: timestamp is the stored one');
    });
    return r.timestamp;
  }

  /** Creates transfers, expecting these statuses; returns the timestamps. */
  transfers(events: TransferInput[], expected: CreateTransferStatusName[], now = 0n): bigint[] {
    const r = this.createTransfers(events, now);
    this.t.strictSame(r.names, expected, `create_transfers: ${expected.join(', ')}`);
    r.names.forEach((name, i) => {
      if (name === 'created') this.t.equal(this.transfer(events[i].id).timestamp, r.timestamp[i], 'created: timestamp is the stored one');
    });
    return r.timestamp;
  }

  /** A batch in which no event may take effect: statuses as expected, and nothing changes. */
  rejectAccounts(events: AccountInput[], expected: CreateAccountStatusName[], now = 0n): void {
    const before = this.snapshot();
    const existing = new Map(before.accounts.map((a) => [a.id, a]));
    const r = this.createAccounts(events, now);
    this.t.strictSame(r.names, expected, `create_accounts rejects: ${expected.join(', ')}`);
    r.names.forEach((name, i) => {
      const want = name === 'exists' ? (existing.get(events[i].id)?.timestamp ?? -1n) : 0n;
      this.t.equal(r.timestamp[i], want, `${name}: timestamp ${want}`);
    });
    this.t.strictSame(this.snapshot(), before, 'no account or transfer changed');
    const fresh = events.map((e) => e.id).filter((id) => !existing.has(id));
    this.t.strictSame(this.l.lookupAccounts(fresh), [], 'the failed ids are not found');
  }

  rejectTransfers(events: TransferInput[], expected: CreateTransferStatusName[], now = 0n): void {
    const before = this.snapshot();
    const existing = new Map(before.transfers.map((x) => [x.id, x]));
    const r = this.createTransfers(events, now);
    this.t.strictSame(r.names, expected, `create_transfers rejects: ${expected.join(', ')}`);
    r.names.forEach((name, i) => {
      const want = name === 'exists' ? (existing.get(events[i].id)?.timestamp ?? -1n) : 0n;
      this.t.equal(r.timestamp[i], want, `${name}: timestamp ${want}`);
    });
    this.t.strictSame(this.snapshot(), before, 'no account or transfer changed (balances, flags, records)');
    const fresh = events.map((e) => e.id).filter((id) => !existing.has(id));
    this.t.strictSame(this.l.lookupTransfers(fresh), [], 'the failed ids are not found');
  }

  account(id: bigint): Account {
    const found = this.l.lookupAccounts([id]);
    this.t.equal(found.length, 1, `account ${id} exists`);
    return found[0];
  }

  transfer(id: bigint): Transfer {
    const found = this.l.lookupTransfers([id]);
    this.t.equal(found.length, 1, `transfer ${id} exists`);
    return found[0];
  }

  /** [debits_pending, debits_posted, credits_pending, credits_posted] */
  balance(id: bigint, expected: [bigint, bigint, bigint, bigint], message = `balances of ${id}`): void {
    const a = this.account(id);
    this.t.strictSame([a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted], expected, message);
  }

  isClosed(id: bigint): boolean {
    return (this.account(id).flags & AF.closed) !== 0;
  }

  absentAccounts(...ids: bigint[]): void {
    this.t.strictSame(this.l.lookupAccounts(ids), [], `accounts ${ids.join(', ')} are not found`);
  }

  absentTransfers(...ids: bigint[]): void {
    this.t.strictSame(this.l.lookupTransfers(ids), [], `transfers ${ids.join(', ')} are not found`);
  }

  snapshot(): Snapshot {
    return { accounts: allAccounts(this.l), transfers: allTransfers(this.l) };
  }

  /** Accounts 1..5 on ledger 1 and 9 on ledger 2, created at `now` (timestamps now-5 .. now). */
  setup(now = 1000n): void {
    this.accounts(
      [account(1n), account(2n), account(3n), account(4n), account(5n), account(9n, { ledger: 2 })],
      ['created', 'created', 'created', 'created', 'created', 'created'],
      now,
    );
  }
}

/** The ledger's invariants, from its public queries only. */
function checkInvariants(t: Test, l: Ledger): void {
  const accounts = allAccounts(l);
  const transfers = allTransfers(l);
  const problems: string[] = [];

  const looked_up_accounts = l.lookupAccounts(accounts.map((a) => a.id));
  if (JSON.stringify(looked_up_accounts, big) !== JSON.stringify(accounts, big)) problems.push('lookupAccounts disagrees with queryAccounts');
  const looked_up_transfers = l.lookupTransfers(transfers.map((x) => x.id));
  if (JSON.stringify(looked_up_transfers, big) !== JSON.stringify(transfers, big)) problems.push('lookupTransfers disagrees with queryTransfers');

  const sums = new Map<number, { dp: bigint; dpo: bigint; cp: bigint; cpo: bigint }>();
  for (const a of accounts) {
    const s = sums.get(a.ledger) ?? { dp: 0n, dpo: 0n, cp: 0n, cpo: 0n };
    s.dp += a.debits_pending;
    s.dpo += a.debits_posted;
    s.cp += a.credits_pending;
    s.cpo += a.credits_posted;
    sums.set(a.ledger, s);
    if (a.debits_pending + a.debits_posted > U64_MAX) problems.push(`account ${a.id}: debits overflow`);
    if (a.credits_pending + a.credits_posted > U64_MAX) problems.push(`account ${a.id}: credits overflow`);
    if ((a.flags & AF.debits_must_not_exceed_credits) !== 0 && a.debits_pending + a.debits_posted > a.credits_posted) {
      problems.push(`account ${a.id}: debits exceed credits`);
    }
    if ((a.flags & AF.credits_must_not_exceed_debits) !== 0 && a.credits_pending + a.credits_posted > a.debits_posted) {
      problems.push(`account ${a.id}: credits exceed debits`);
    }
  }
  for (const [ledger, s] of sums) {
    if (s.dpo !== s.cpo) problems.push(`ledger ${ledger}: debits_posted ${s.dpo} != credits_posted ${s.cpo}`);
    if (s.dp !== s.cp) problems.push(`ledger ${ledger}: debits_pending ${s.dp} != credits_pending ${s.cp}`);
  }

  // Posted balances are exactly what the stored transfers posted: single-phase transfers and posts.
  const by_id = new Map(accounts.map((a) => [a.id, a]));
  const posted_dr = new Map<bigint, bigint>();
  const posted_cr = new Map<bigint, bigint>();
  for (const x of transfers) {
    const dr = by_id.get(x.debit_account_id);
    const cr = by_id.get(x.credit_account_id);
    if (dr === undefined || cr === undefined) {
      problems.push(`transfer ${x.id}: account missing`);
      continue;
    }
    if (dr.ledger !== x.ledger || cr.ledger !== x.ledger) problems.push(`transfer ${x.id}: ledger differs from its accounts`);
    if ((x.flags & (TF.pending | TF.void_pending_transfer)) !== 0) continue;
    posted_dr.set(x.debit_account_id, (posted_dr.get(x.debit_account_id) ?? 0n) + x.amount);
    posted_cr.set(x.credit_account_id, (posted_cr.get(x.credit_account_id) ?? 0n) + x.amount);
  }
  for (const a of accounts) {
    if (a.debits_posted !== (posted_dr.get(a.id) ?? 0n)) problems.push(`account ${a.id}: debits_posted ${a.debits_posted} != sum of posting transfers`);
    if (a.credits_posted !== (posted_cr.get(a.id) ?? 0n)) problems.push(`account ${a.id}: credits_posted ${a.credits_posted} != sum of posting transfers`);
  }
  t.strictSame(problems, [], 'ledger invariants hold');
}

function big(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? `${value}n` : value;
}

// Subtest registration: one subtest per status name, each checking at its end that it reached its
// status and that the invariants hold.

const declared_account = new Set<CreateAccountStatusName>();
const declared_transfer = new Set<CreateTransferStatusName>();

function run(t: Test, fn: (h: Harness) => void): Harness {
  const h = new Harness(t);
  fn(h);
  for (const name of h.reached) reached_anywhere.add(name);
  checkInvariants(t, h.l);
  return h;
}

function accountStatus(name: CreateAccountStatusName, fn: (h: Harness) => void): void {
  if (declared_account.has(name)) throw new Error(`two subtests for account status ${name}`);
  declared_account.add(name);
  t.test(`create_accounts status ${CreateAccountStatus[name]} ${name}`, async (t) => {
    const h = run(t, fn);
    t.ok(h.reached.has(`account:${name}`), `reached ${name}`);
  });
}

function transferStatus(name: CreateTransferStatusName, fn: (h: Harness) => void): void {
  if (declared_transfer.has(name)) throw new Error(`two subtests for transfer status ${name}`);
  declared_transfer.add(name);
  t.test(`create_transfers status ${CreateTransferStatus[name]} ${name}`, async (t) => {
    const h = run(t, fn);
    t.ok(h.reached.has(`transfer:${name}`), `reached ${name}`);
  });
}

function scenario(title: string, fn: (h: Harness) => void): void {
  t.test(title, async (t) => {
    run(t, fn);
  });
}

// =============================================================================================
// create_accounts

accountStatus('created', (h) => {
  const flags = AF.history | AF.debits_must_not_exceed_credits;
  const ts = h.accounts(
    [account(1n, { user_data_64: 5n, user_data_32: 6, ledger: 7, code: 8, flags }), account(2n), account(3n)],
    ['created', 'created', 'created'],
    1000n,
  );
  h.t.strictSame(ts, [998n, 999n, 1000n], 'event i of n gets T-n+1+i, with T = now');
  h.t.strictSame(h.account(1n), {
    id: 1n,
    debits_pending: 0n,
    debits_posted: 0n,
    credits_pending: 0n,
    credits_posted: 0n,
    user_data_64: 5n,
    user_data_32: 6,
    ledger: 7,
    code: 8,
    flags,
    timestamp: 998n,
  });
  h.t.strictSame(h.accounts([account(4n), account(5n)], ['created', 'created'], 500n), [1001n, 1002n], 'a clock behind: T = last + n');
  h.t.strictSame(h.accounts([account(6n)], ['created'], 5000n), [5000n], 'a clock ahead: T = now');
  const r = h.createAccounts([account(7n), account(0n), account(8n)], 6000n);
  h.t.strictSame(r.names, ['created', 'id_must_not_be_zero', 'created']);
  h.t.strictSame(r.timestamp, [5998n, 0n, 6000n], 'a failed event keeps its slot and reports 0');
  // Flags are stored as given; an account may even be created closed (TigerBeetle checks neither).
  h.accounts([account(10n, { flags: AF.closed | AF.credits_must_not_exceed_debits })], ['created']);
  h.t.equal(h.account(10n).flags, AF.closed | AF.credits_must_not_exceed_debits);
  h.accounts([], []);
  h.accounts([account(U64_MAX - 1n)], ['created'], 0n);
});

accountStatus('linked_event_failed', (h) => {
  h.accounts([account(1n)], ['created']);
  h.rejectAccounts(
    [account(2n, { flags: AF.linked }), account(3n, { flags: AF.linked }), account(4n, { ledger: 0 })],
    ['linked_event_failed', 'linked_event_failed', 'ledger_must_not_be_zero'],
  );
  // Members after the breaking event are not evaluated: they all get linked_event_failed.
  h.rejectAccounts(
    [account(5n, { flags: AF.linked }), account(6n, { flags: AF.linked, code: 0 }), account(7n, { flags: AF.linked, ledger: 0 }), account(8n, { code: 0 })],
    ['linked_event_failed', 'code_must_not_be_zero', 'linked_event_failed', 'linked_event_failed'],
  );
  // A chain breaking does not touch the events around it.
  const r = h.createAccounts([account(10n), account(11n, { flags: AF.linked }), account(1n), account(12n)]);
  h.t.strictSame(r.names, ['created', 'linked_event_failed', 'exists', 'created']);
  h.absentAccounts(11n);
  // Account ids are never burned: the rolled-back ones can be created now.
  h.accounts([account(2n), account(3n), account(5n), account(7n), account(8n), account(11n)], Array<CreateAccountStatusName>(6).fill('created'));
});

accountStatus('linked_event_chain_open', (h) => {
  h.rejectAccounts([account(1n, { flags: AF.linked })], ['linked_event_chain_open']);
  h.rejectAccounts([account(1n, { flags: AF.linked }), account(2n, { flags: AF.linked })], ['linked_event_failed', 'linked_event_chain_open']);
  // chain_open is checked before chain_broken.
  h.rejectAccounts(
    [account(1n, { flags: AF.linked }), account(2n, { flags: AF.linked, ledger: 0 }), account(3n, { flags: AF.linked })],
    ['linked_event_failed', 'ledger_must_not_be_zero', 'linked_event_chain_open'],
  );
  // A closed chain before the open one persists.
  const r = h.createAccounts([account(4n, { flags: AF.linked }), account(5n), account(6n, { flags: AF.linked })]);
  h.t.strictSame(r.names, ['created', 'created', 'linked_event_chain_open']);
  h.account(4n);
  h.account(5n);
  h.absentAccounts(6n);
});

accountStatus('imported_event_expected', (h) => {
  h.accounts(
    [account(1n, { flags: AF.imported, timestamp: 100n }), account(2n), account(3n, { timestamp: 5n })],
    ['created', 'imported_event_expected', 'imported_event_expected'],
    1000n,
  );
  h.t.equal(h.account(1n).timestamp, 100n, 'an imported account keeps its timestamp');
  h.absentAccounts(2n, 3n);
});

accountStatus('imported_event_not_expected', (h) => {
  h.accounts([account(1n), account(2n, { flags: AF.imported, timestamp: 100n })], ['created', 'imported_event_not_expected'], 1000n);
  h.absentAccounts(2n);
});

accountStatus('timestamp_must_be_zero', (h) => {
  h.rejectAccounts([account(1n, { timestamp: 1n })], ['timestamp_must_be_zero'], 1000n);
  // before the event's own checks
  h.rejectAccounts([account(0n, { timestamp: 5n, ledger: 0, flags: 1 << 6 })], ['timestamp_must_be_zero'], 2000n);
});

accountStatus('imported_event_timestamp_out_of_range', (h) => {
  const imported = (id: bigint, timestamp: bigint): AccountInput => account(id, { flags: AF.imported, timestamp });
  h.rejectAccounts([imported(1n, 0n)], ['imported_event_timestamp_out_of_range'], 1000n);
  h.rejectAccounts([imported(1n, MAX63 + 1n)], ['imported_event_timestamp_out_of_range'], 2000n);
  h.rejectAccounts([imported(1n, U64_MAX)], ['imported_event_timestamp_out_of_range'], 3000n);
  // both bounds are inclusive
  h.accounts([imported(2n, 1n)], ['created'], 4000n);
  h.accounts([imported(3n, MAX63)], ['created'], MAX63 + 1n);
});

accountStatus('imported_event_timestamp_must_not_advance', (h) => {
  h.rejectAccounts([account(1n, { flags: AF.imported, timestamp: 1000n })], ['imported_event_timestamp_must_not_advance'], 1000n);
  h.rejectAccounts([account(1n, { flags: AF.imported, timestamp: 9000n })], ['imported_event_timestamp_must_not_advance'], 2000n);
  // The bound is the batch timestamp T (the batch's last slot), not the event's own slot.
  h.accounts(
    [account(2n, { flags: AF.imported, timestamp: 4999n }), account(3n, { flags: AF.imported, timestamp: 5000n })],
    ['created', 'imported_event_timestamp_must_not_advance'],
    5000n,
  );
});

accountStatus('reserved_field', (h) => {
  h.rejectAccounts([account(1n, { reserved: 1 })], ['reserved_field']);
  h.rejectAccounts([account(0n, { reserved: 0xffff_ffff, flags: 1 << 6, ledger: 0 })], ['reserved_field'], 0n);
  h.accounts([account(1n, { reserved: 0 })], ['created']);
  // before the exists checks, too
  h.rejectAccounts([account(1n, { reserved: 2 })], ['reserved_field']);
});

accountStatus('reserved_flag', (h) => {
  h.rejectAccounts([account(1n, { flags: 1 << 6 })], ['reserved_flag']);
  h.rejectAccounts([account(1n, { flags: 1 << 15 })], ['reserved_flag']);
  h.rejectAccounts([account(0n, { flags: AF.history | (1 << 7) })], ['reserved_flag']);
  h.accounts([account(2n)], ['created']);
  h.rejectAccounts([account(2n, { flags: 1 << 6 })], ['reserved_flag']);
});

accountStatus('id_must_not_be_zero', (h) => {
  h.rejectAccounts([account(0n)], ['id_must_not_be_zero']);
  h.rejectAccounts([account(0n, { ledger: 0, code: 0, flags: AF.debits_must_not_exceed_credits | AF.credits_must_not_exceed_debits })], ['id_must_not_be_zero']);
});

accountStatus('id_must_not_be_int_max', (h) => {
  h.rejectAccounts([account(U64_MAX)], ['id_must_not_be_int_max']);
  h.rejectAccounts([account(U64_MAX, { ledger: 0 })], ['id_must_not_be_int_max']);
});

const EXISTING = account(1n, { user_data_64: 10n, user_data_32: 20, ledger: 3, code: 4, flags: AF.history });

accountStatus('exists_with_different_flags', (h) => {
  h.accounts([EXISTING], ['created']);
  h.rejectAccounts([{ ...EXISTING, flags: AF.history | AF.debits_must_not_exceed_credits }], ['exists_with_different_flags']);
  h.rejectAccounts([{ ...EXISTING, flags: 0 }], ['exists_with_different_flags']);
  // flags come first, whatever else differs
  h.rejectAccounts([account(1n, { flags: AF.closed, user_data_64: 1n, user_data_32: 1, ledger: 0, code: 0 })], ['exists_with_different_flags']);
  // flags compare whole, linked included; as the first of a chain it also breaks the chain
  h.rejectAccounts([{ ...EXISTING, flags: AF.history | AF.linked }, account(2n)], ['exists_with_different_flags', 'linked_event_failed']);
});

accountStatus('exists_with_different_user_data_64', (h) => {
  h.accounts([EXISTING], ['created']);
  h.rejectAccounts([{ ...EXISTING, user_data_64: 11n }], ['exists_with_different_user_data_64']);
  h.rejectAccounts([{ ...EXISTING, user_data_64: 0n, user_data_32: 0, ledger: 0, code: 0 }], ['exists_with_different_user_data_64']);
});

accountStatus('exists_with_different_user_data_32', (h) => {
  h.accounts([EXISTING], ['created']);
  h.rejectAccounts([{ ...EXISTING, user_data_32: 21 }], ['exists_with_different_user_data_32']);
  h.rejectAccounts([{ ...EXISTING, user_data_32: 0, ledger: 0, code: 0 }], ['exists_with_different_user_data_32']);
});

accountStatus('exists_with_different_ledger', (h) => {
  h.accounts([EXISTING], ['created']);
  h.rejectAccounts([{ ...EXISTING, ledger: 4 }], ['exists_with_different_ledger']);
  // exists_* precede ledger_must_not_be_zero
  h.rejectAccounts([{ ...EXISTING, ledger: 0, code: 0 }], ['exists_with_different_ledger']);
});

accountStatus('exists_with_different_code', (h) => {
  h.accounts([EXISTING], ['created']);
  h.rejectAccounts([{ ...EXISTING, code: 5 }], ['exists_with_different_code']);
  h.rejectAccounts([{ ...EXISTING, code: 0 }], ['exists_with_different_code']);
});

accountStatus('exists', (h) => {
  const [ts] = h.accounts([EXISTING], ['created'], 1000n);
  h.rejectAccounts([EXISTING], ['exists'], 2000n);
  h.t.equal(h.createAccounts([EXISTING], 3000n).timestamp[0], ts, 'exists reports the original timestamp');
  // an id created earlier in the same batch
  const r = h.createAccounts([account(2n), account(2n)], 4000n);
  h.t.strictSame(r.names, ['created', 'exists']);
  h.t.strictSame(r.timestamp, [3999n, 3999n]);
  // `exists` is a failure: it breaks the chain it ends
  h.rejectAccounts([account(5n, { flags: AF.linked }), EXISTING], ['linked_event_failed', 'exists'], 5000n);
  // exists is checked before flags_are_mutually_exclusive (the resend differs in flags)
  h.rejectAccounts(
    [{ ...EXISTING, flags: AF.debits_must_not_exceed_credits | AF.credits_must_not_exceed_debits }],
    ['exists_with_different_flags'],
  );
});

accountStatus('flags_are_mutually_exclusive', (h) => {
  const both = AF.debits_must_not_exceed_credits | AF.credits_must_not_exceed_debits;
  h.rejectAccounts([account(1n, { flags: both })], ['flags_are_mutually_exclusive']);
  h.rejectAccounts([account(1n, { flags: both | AF.history, ledger: 0, code: 0 })], ['flags_are_mutually_exclusive']);
  h.accounts([account(1n, { flags: AF.debits_must_not_exceed_credits })], ['created']);
});

accountStatus('ledger_must_not_be_zero', (h) => {
  h.rejectAccounts([account(1n, { ledger: 0 })], ['ledger_must_not_be_zero']);
  h.rejectAccounts([account(1n, { ledger: 0, code: 0 })], ['ledger_must_not_be_zero']);
  h.rejectAccounts([account(1n, { ledger: 0, flags: AF.imported, timestamp: 5n })], ['ledger_must_not_be_zero'], 1000n);
});

accountStatus('code_must_not_be_zero', (h) => {
  h.rejectAccounts([account(1n, { code: 0 })], ['code_must_not_be_zero']);
  h.rejectAccounts([account(1n, { code: 0, flags: AF.imported, timestamp: 5n })], ['code_must_not_be_zero'], 1000n);
});

accountStatus('imported_event_timestamp_must_not_regress', (h) => {
  const imported = (id: bigint, timestamp: bigint): AccountInput => account(id, { flags: AF.imported, timestamp });
  // an import earlier in the same batch counts
  h.accounts([imported(1n, 100n), imported(2n, 100n)], ['created', 'imported_event_timestamp_must_not_regress'], 10_000n);
  h.rejectAccounts([imported(3n, 50n)], ['imported_event_timestamp_must_not_regress'], 20_000n);
  h.rejectAccounts([imported(3n, 100n)], ['imported_event_timestamp_must_not_regress'], 30_000n);
  // so do accounts created live
  h.accounts([account(4n)], ['created'], 40_000n);
  h.rejectAccounts([imported(3n, 39_999n)], ['imported_event_timestamp_must_not_regress'], 50_000n);
  // An imported account must not take a transfer's timestamp, but it may predate transfers: only
  // account timestamps must increase (TigerBeetle: accounts' key_max, and an exact transfer match).
  h.transfers([transfer(10n, 1n, 4n, 1n, { flags: TF.imported, timestamp: 45_000n })], ['created'], 60_000n);
  h.rejectAccounts([imported(3n, 45_000n)], ['imported_event_timestamp_must_not_regress'], 70_000n);
  h.accounts([imported(3n, 44_000n)], ['created'], 80_000n);
});

// =============================================================================================
// create_transfers

transferStatus('created', (h) => {
  h.setup();
  const [ts] = h.transfers([transfer(10n, 1n, 2n, 100n, { user_data_64: 7n, user_data_32: 8, code: 9 })], ['created'], 2000n);
  h.t.equal(ts, 2000n);
  h.t.strictSame(h.transfer(10n), {
    id: 10n,
    debit_account_id: 1n,
    credit_account_id: 2n,
    amount: 100n,
    pending_id: 0n,
    user_data_64: 7n,
    user_data_32: 8,
    timeout: 0,
    ledger: 1,
    code: 9,
    flags: 0,
    timestamp: 2000n,
  });
  h.balance(1n, [0n, 100n, 0n, 0n]);
  h.balance(2n, [0n, 0n, 0n, 100n]);
  // zero amounts are allowed (TigerBeetle 0.16)
  h.transfers([transfer(11n, 1n, 2n, 0n)], ['created']);
  h.balance(1n, [0n, 100n, 0n, 0n]);
  // a pending transfer reserves
  h.transfers([pending(12n, 2n, 3n, 5n, { timeout: 60 })], ['created']);
  h.balance(2n, [5n, 0n, 0n, 100n]);
  h.balance(3n, [0n, 0n, 5n, 0n]);
  // each event sees the earlier ones of its batch
  h.transfers([transfer(13n, 3n, 4n, 7n), transfer(14n, 4n, 5n, 7n)], ['created', 'created']);
  h.balance(4n, [0n, 7n, 0n, 7n]);
  h.t.strictSame(
    h.l.getAccountTransfers(accountFilter(1n)).map((x) => x.id),
    [10n, 11n],
    'the transfers are indexed by account',
  );
});

transferStatus('linked_event_failed', (h) => {
  h.setup();
  h.transfers([pending(20n, 1n, 3n, 50n)], ['created']);
  h.l.takeChanges();
  // A chain that posts a pending transfer, closes an account and moves money, then fails: all undone.
  h.rejectTransfers(
    [
      transfer(10n, 1n, 2n, 100n, { flags: TF.linked }),
      post(11n, 20n, U64_MAX, { flags: TF.linked }),
      pending(12n, 4n, 5n, 0n, { flags: TF.closing_debit | TF.linked }),
      transfer(13n, 2n, 3n, 10n, { flags: TF.linked }),
      transfer(14n, 1n, 1n, 5n),
    ],
    ['linked_event_failed', 'linked_event_failed', 'linked_event_failed', 'linked_event_failed', 'accounts_must_be_different'],
  );
  h.t.notOk(h.isClosed(4n), 'the closing transfer was rolled back');
  // Nor is the rolled-back pending transfer 12 left in the change set a checkpoint writes.
  h.t.strictSame(
    h.l.takeChanges().pending.filter(([id, state]) => id !== 20n || state === undefined).map(([id]) => id),
    [],
    'the change set holds no pending state of a rolled-back transfer',
  );
  h.t.strictSame(h.l.getAccountTransfers(accountFilter(1n)).map((x) => x.id), [20n], 'no rolled-back transfer is indexed');
  // Members after the breaking event are not evaluated.
  h.rejectTransfers(
    [transfer(30n, 1n, 2n, 1n, { flags: TF.linked, ledger: 0 }), transfer(31n, 1n, 1n, 1n, { flags: TF.linked }), transfer(32n, 0n, 2n, 1n)],
    ['ledger_must_not_be_zero', 'linked_event_failed', 'linked_event_failed'],
  );
  // The pending transfer is still pending (a post that had persisted would make this already_posted).
  h.transfers([voidPending(21n, 20n)], ['created']);
  // Rolled-back ids, and ids that failed with a non-transient status, are not burned.
  h.transfers(
    [transfer(10n, 1n, 2n, 100n), transfer(11n, 1n, 2n, 1n), pending(12n, 4n, 5n, 0n, { flags: TF.closing_debit }), transfer(13n, 2n, 3n, 10n), transfer(14n, 1n, 2n, 5n), transfer(31n, 2n, 1n, 1n)],
    ['created', 'created', 'created', 'created', 'created', 'created'],
  );
  h.t.ok(h.isClosed(4n));
});

transferStatus('linked_event_chain_open', (h) => {
  h.setup();
  h.rejectTransfers([transfer(10n, 1n, 2n, 1n, { flags: TF.linked })], ['linked_event_chain_open']);
  h.rejectTransfers([transfer(10n, 1n, 2n, 1n, { flags: TF.linked }), transfer(11n, 1n, 2n, 1n, { flags: TF.linked })], ['linked_event_failed', 'linked_event_chain_open']);
  h.rejectTransfers(
    [transfer(10n, 1n, 2n, 1n, { flags: TF.linked, ledger: 0 }), transfer(11n, 1n, 2n, 1n, { flags: TF.linked })],
    ['ledger_must_not_be_zero', 'linked_event_chain_open'],
  );
  const r = h.createTransfers([transfer(12n, 1n, 2n, 1n, { flags: TF.linked }), transfer(13n, 1n, 2n, 1n), transfer(14n, 1n, 2n, 1n, { flags: TF.linked })]);
  h.t.strictSame(r.names, ['created', 'created', 'linked_event_chain_open']);
  h.balance(1n, [0n, 2n, 0n, 0n]);
  h.absentTransfers(14n);
});

transferStatus('imported_event_expected', (h) => {
  h.setup(1000n);
  h.transfers(
    [transfer(10n, 1n, 2n, 5n, { flags: TF.imported, timestamp: 1500n }), transfer(11n, 1n, 2n, 5n), transfer(12n, 1n, 2n, 5n, { timestamp: 7n })],
    ['created', 'imported_event_expected', 'imported_event_expected'],
    2000n,
  );
  h.t.equal(h.transfer(10n).timestamp, 1500n, 'an imported transfer keeps its timestamp');
  h.absentTransfers(11n, 12n);
  h.balance(1n, [0n, 5n, 0n, 0n]);
});

transferStatus('imported_event_not_expected', (h) => {
  h.setup(1000n);
  h.transfers([transfer(10n, 1n, 2n, 5n), transfer(11n, 1n, 2n, 5n, { flags: TF.imported, timestamp: 1500n })], ['created', 'imported_event_not_expected'], 2000n);
  h.absentTransfers(11n);
});

transferStatus('timestamp_must_be_zero', (h) => {
  h.setup();
  h.rejectTransfers([transfer(10n, 1n, 2n, 5n, { timestamp: 1n })], ['timestamp_must_be_zero']);
  h.rejectTransfers([transfer(0n, 1n, 1n, 5n, { timestamp: 1n, flags: 1 << 9 })], ['timestamp_must_be_zero']);
});

transferStatus('imported_event_timestamp_out_of_range', (h) => {
  h.setup(1000n);
  h.rejectTransfers([transfer(10n, 1n, 2n, 5n, { flags: TF.imported, timestamp: 0n })], ['imported_event_timestamp_out_of_range'], 2000n);
  h.rejectTransfers([transfer(10n, 1n, 2n, 5n, { flags: TF.imported, timestamp: MAX63 + 1n })], ['imported_event_timestamp_out_of_range'], 3000n);
  h.rejectTransfers([transfer(0n, 1n, 1n, 5n, { flags: TF.imported, timestamp: U64_MAX })], ['imported_event_timestamp_out_of_range'], 4000n);
});

transferStatus('imported_event_timestamp_must_not_advance', (h) => {
  h.setup(1000n);
  h.rejectTransfers([transfer(10n, 1n, 2n, 5n, { flags: TF.imported, timestamp: 2000n })], ['imported_event_timestamp_must_not_advance'], 2000n);
  h.rejectTransfers([transfer(10n, 1n, 2n, 5n, { flags: TF.imported, timestamp: MAX63 })], ['imported_event_timestamp_must_not_advance'], 3000n);
  h.transfers([transfer(10n, 1n, 2n, 5n, { flags: TF.imported, timestamp: 3999n })], ['created'], 4000n);
});

transferStatus('reserved_flag', (h) => {
  h.setup();
  h.rejectTransfers([transfer(10n, 1n, 2n, 5n, { flags: 1 << 9 })], ['reserved_flag']);
  h.rejectTransfers([transfer(10n, 1n, 2n, 5n, { flags: 1 << 15 })], ['reserved_flag']);
  h.rejectTransfers([transfer(0n, 0n, 0n, 5n, { flags: TF.pending | (1 << 10), ledger: 0 })], ['reserved_flag']);
  h.transfers([transfer(10n, 1n, 2n, 5n)], ['created']);
  h.rejectTransfers([transfer(10n, 1n, 2n, 5n, { flags: 1 << 9 })], ['reserved_flag']);
});

transferStatus('id_must_not_be_zero', (h) => {
  h.setup();
  h.rejectTransfers([transfer(0n, 1n, 2n, 5n)], ['id_must_not_be_zero']);
  h.rejectTransfers([transfer(0n, 0n, 0n, 5n, { flags: TF.post_pending_transfer | TF.void_pending_transfer })], ['id_must_not_be_zero']);
});

transferStatus('id_must_not_be_int_max', (h) => {
  h.setup();
  h.rejectTransfers([transfer(U64_MAX, 1n, 2n, 5n)], ['id_must_not_be_int_max']);
  h.rejectTransfers([post(U64_MAX, 0n)], ['id_must_not_be_int_max']);
});

const BASE = transfer(10n, 1n, 2n, 100n, { user_data_64: 7n, user_data_32: 8, code: 9 });

transferStatus('exists_with_different_flags', (h) => {
  h.setup();
  h.transfers([BASE], ['created']);
  h.rejectTransfers([{ ...BASE, flags: TF.pending }], ['exists_with_different_flags']);
  // an imported resend: idempotency comes before the import checks (500 would regress)
  h.rejectTransfers([{ ...BASE, flags: TF.imported, timestamp: 500n }], ['exists_with_different_flags'], 5000n);
  // flags come first, whatever else differs
  h.rejectTransfers([transfer(10n, 3n, 4n, 1n, { flags: TF.balancing_debit, pending_id: 1n, timeout: 1, ledger: 2, code: 0 })], ['exists_with_different_flags']);
  // an existing post resent as a void
  h.transfers([pending(20n, 1n, 2n, 5n), post(21n, 20n)], ['created', 'created']);
  h.rejectTransfers([voidPending(21n, 20n)], ['exists_with_different_flags']);
});

transferStatus('exists_with_different_pending_id', (h) => {
  h.setup();
  h.transfers([BASE], ['created']);
  // before pending_id_must_be_zero
  h.rejectTransfers([{ ...BASE, pending_id: 99n }], ['exists_with_different_pending_id']);
  h.transfers([pending(20n, 1n, 2n, 5n), pending(22n, 1n, 2n, 5n), post(21n, 20n)], ['created', 'created', 'created']);
  h.rejectTransfers([post(21n, 22n)], ['exists_with_different_pending_id']);
  h.rejectTransfers([post(21n, 0n)], ['exists_with_different_pending_id']);
});

transferStatus('exists_with_different_timeout', (h) => {
  h.setup();
  h.transfers([BASE, pending(11n, 1n, 3n, 5n, { timeout: 10 })], ['created', 'created']);
  h.rejectTransfers([pending(11n, 1n, 3n, 5n, { timeout: 20 })], ['exists_with_different_timeout']);
  h.rejectTransfers([pending(11n, 1n, 3n, 5n)], ['exists_with_different_timeout']);
  // before timeout_reserved_for_pending_transfer
  h.rejectTransfers([{ ...BASE, timeout: 1 }], ['exists_with_different_timeout']);
});

transferStatus('exists_with_different_debit_account_id', (h) => {
  h.setup();
  h.transfers([BASE], ['created']);
  h.rejectTransfers([{ ...BASE, debit_account_id: 3n }], ['exists_with_different_debit_account_id']);
  // before debit_account_id_must_not_be_zero
  h.rejectTransfers([{ ...BASE, debit_account_id: 0n, credit_account_id: 0n, amount: 0n }], ['exists_with_different_debit_account_id']);
  // a post resent: zero means "as the pending transfer", anything else must match the stored one
  h.transfers([pending(20n, 1n, 2n, 5n), post(21n, 20n)], ['created', 'created']);
  h.rejectTransfers([post(21n, 20n, U64_MAX, { debit_account_id: 3n })], ['exists_with_different_debit_account_id']);
  h.rejectTransfers([post(21n, 20n, U64_MAX, { debit_account_id: 1n })], ['exists']);
});

transferStatus('exists_with_different_credit_account_id', (h) => {
  h.setup();
  h.transfers([BASE], ['created']);
  h.rejectTransfers([{ ...BASE, credit_account_id: 3n }], ['exists_with_different_credit_account_id']);
  h.rejectTransfers([{ ...BASE, credit_account_id: 1n, amount: 1n }], ['exists_with_different_credit_account_id']);
  h.transfers([pending(20n, 1n, 2n, 5n), voidPending(21n, 20n)], ['created', 'created']);
  h.rejectTransfers([voidPending(21n, 20n, 0n, { credit_account_id: 3n })], ['exists_with_different_credit_account_id']);
  h.rejectTransfers([voidPending(21n, 20n, 0n, { credit_account_id: 2n })], ['exists']);
});

transferStatus('exists_with_different_amount', (h) => {
  h.setup();
  h.transfers([BASE], ['created']);
  h.rejectTransfers([{ ...BASE, amount: 101n }], ['exists_with_different_amount']);
  h.rejectTransfers([{ ...BASE, amount: 99n, user_data_64: 0n, ledger: 2 }], ['exists_with_different_amount']);
  // A post that posted the whole: 2^64-1 or the amount itself match; anything else does not.
  h.transfers([pending(20n, 1n, 2n, 50n), post(21n, 20n)], ['created', 'created']);
  h.rejectTransfers([post(21n, 20n, 50n)], ['exists']);
  h.rejectTransfers([post(21n, 20n, 49n)], ['exists_with_different_amount']);
  // A partial post: 2^64-1 means "the whole", which is not what it posted.
  h.transfers([pending(22n, 1n, 2n, 50n), post(23n, 22n, 30n)], ['created', 'created']);
  h.rejectTransfers([post(23n, 22n, 30n)], ['exists']);
  h.rejectTransfers([post(23n, 22n)], ['exists_with_different_amount']);
  // A void: zero or the pending amount match.
  h.transfers([pending(24n, 1n, 2n, 50n), voidPending(25n, 24n)], ['created', 'created']);
  h.rejectTransfers([voidPending(25n, 24n, 50n)], ['exists']);
  h.rejectTransfers([voidPending(25n, 24n, 1n)], ['exists_with_different_amount']);
});

transferStatus('exists_with_different_user_data_64', (h) => {
  h.setup();
  h.transfers([BASE], ['created']);
  h.rejectTransfers([{ ...BASE, user_data_64: 0n }], ['exists_with_different_user_data_64']);
  h.rejectTransfers([{ ...BASE, user_data_64: 8n, user_data_32: 0, ledger: 0, code: 0 }], ['exists_with_different_user_data_64']);
  // A post that set its own user data: a zero in the resend means "the pending transfer's", which differs.
  h.transfers([pending(20n, 1n, 2n, 5n, { user_data_64: 3n }), post(21n, 20n, U64_MAX, { user_data_64: 55n })], ['created', 'created']);
  h.t.equal(h.transfer(21n).user_data_64, 55n);
  h.rejectTransfers([post(21n, 20n)], ['exists_with_different_user_data_64']);
  h.rejectTransfers([post(21n, 20n, U64_MAX, { user_data_64: 55n })], ['exists']);
  // A post that inherited it: zero, or the inherited value, match.
  h.transfers([pending(22n, 1n, 2n, 5n, { user_data_64: 3n }), post(23n, 22n)], ['created', 'created']);
  h.t.equal(h.transfer(23n).user_data_64, 3n);
  h.rejectTransfers([post(23n, 22n), post(23n, 22n, U64_MAX, { user_data_64: 3n })], ['exists', 'exists']);
  h.rejectTransfers([post(23n, 22n, U64_MAX, { user_data_64: 4n })], ['exists_with_different_user_data_64']);
});

transferStatus('exists_with_different_user_data_32', (h) => {
  h.setup();
  h.transfers([BASE], ['created']);
  h.rejectTransfers([{ ...BASE, user_data_32: 9 }], ['exists_with_different_user_data_32']);
  h.rejectTransfers([{ ...BASE, user_data_32: 0, ledger: 0, code: 0 }], ['exists_with_different_user_data_32']);
  h.transfers([pending(20n, 1n, 2n, 5n, { user_data_32: 3 }), voidPending(21n, 20n, 0n, { user_data_32: 55 })], ['created', 'created']);
  h.rejectTransfers([voidPending(21n, 20n)], ['exists_with_different_user_data_32']);
  h.rejectTransfers([voidPending(21n, 20n, 0n, { user_data_32: 55 })], ['exists']);
});

transferStatus('exists_with_different_ledger', (h) => {
  h.setup();
  h.transfers([BASE], ['created']);
  // before transfer_must_have_the_same_ledger_as_accounts and ledger_must_not_be_zero
  h.rejectTransfers([{ ...BASE, ledger: 2 }], ['exists_with_different_ledger']);
  h.rejectTransfers([{ ...BASE, ledger: 0, code: 0 }], ['exists_with_different_ledger']);
  h.transfers([pending(20n, 1n, 2n, 5n), post(21n, 20n)], ['created', 'created']);
  h.rejectTransfers([post(21n, 20n, U64_MAX, { ledger: 2 })], ['exists_with_different_ledger']);
  h.rejectTransfers([post(21n, 20n, U64_MAX, { ledger: 1 })], ['exists']);
});

transferStatus('exists_with_different_code', (h) => {
  h.setup();
  h.transfers([BASE], ['created']);
  h.rejectTransfers([{ ...BASE, code: 1 }], ['exists_with_different_code']);
  h.rejectTransfers([{ ...BASE, code: 0 }], ['exists_with_different_code']);
  h.transfers([pending(20n, 1n, 2n, 5n, { code: 6 }), post(21n, 20n)], ['created', 'created']);
  h.rejectTransfers([post(21n, 20n, U64_MAX, { code: 7 })], ['exists_with_different_code']);
  h.rejectTransfers([post(21n, 20n, U64_MAX, { code: 6 })], ['exists']);
});

transferStatus('exists', (h) => {
  h.setup();
  const [ts] = h.transfers([BASE], ['created'], 2000n);
  h.rejectTransfers([BASE], ['exists'], 3000n);
  h.t.equal(h.createTransfers([BASE], 4000n).timestamp[0], ts, 'exists reports the original timestamp');
  // created earlier in the same batch: the second one does not move money again
  const r = h.createTransfers([transfer(11n, 2n, 3n, 10n), transfer(11n, 2n, 3n, 10n)], 5000n);
  h.t.strictSame(r.names, ['created', 'exists']);
  h.t.strictSame(r.timestamp, [4999n, 4999n]);
  h.balance(3n, [0n, 0n, 0n, 10n]);
  // `exists` breaks the chain it ends
  h.rejectTransfers([transfer(12n, 1n, 2n, 1n, { flags: TF.linked }), BASE], ['linked_event_failed', 'exists'], 6000n);
  // a pending transfer that has since been posted still `exists` as it was sent
  h.transfers([pending(20n, 1n, 2n, 5n, { timeout: 100 }), post(21n, 20n)], ['created', 'created']);
  h.rejectTransfers([pending(20n, 1n, 2n, 5n, { timeout: 100 }), post(21n, 20n)], ['exists', 'exists']);
  // A resend that would now fail every other check still `exists`: idempotency comes first.
  h.accounts([account(6n, { flags: AF.closed })], ['created']);
  h.transfers([transfer(13n, 6n, 1n, 0n)], ['debit_account_already_closed']);
  h.transfers([transfer(14n, 4n, 5n, 1n)], ['created']);
  h.transfers([pending(15n, 4n, 3n, 0n, { flags: TF.closing_debit })], ['created']);
  h.rejectTransfers([transfer(14n, 4n, 5n, 1n)], ['exists']);
});

transferStatus('id_already_failed', (h) => {
  h.setup();
  h.rejectTransfers([transfer(10n, 1n, 99n, 5n)], ['credit_account_not_found']);
  h.rejectTransfers([transfer(10n, 1n, 2n, 5n)], ['id_already_failed']);
  // the cause going away does not help
  h.accounts([account(99n)], ['created']);
  h.rejectTransfers([transfer(10n, 1n, 99n, 5n)], ['id_already_failed']);
  // precedence: after the id checks, before everything else
  h.rejectTransfers([transfer(10n, 0n, 0n, 5n, { ledger: 0, code: 0, pending_id: 3n })], ['id_already_failed']);
  h.rejectTransfers([transfer(10n, 1n, 2n, 5n, { flags: TF.post_pending_transfer | TF.void_pending_transfer })], ['id_already_failed']);
  h.rejectTransfers([post(10n, 10n)], ['id_already_failed']);
  h.rejectTransfers([transfer(10n, 1n, 2n, 5n, { flags: 1 << 9 })], ['reserved_flag']);
  h.rejectTransfers([transfer(10n, 1n, 2n, 5n, { timestamp: 1n })], ['timestamp_must_be_zero']);
  h.absentTransfers(10n);
});

transferStatus('flags_are_mutually_exclusive', (h) => {
  h.setup();
  h.transfers([BASE, pending(20n, 1n, 2n, 5n)], ['created', 'created']);
  const combos = [
    TF.post_pending_transfer | TF.void_pending_transfer,
    TF.pending | TF.post_pending_transfer,
    TF.pending | TF.void_pending_transfer,
    TF.post_pending_transfer | TF.balancing_debit,
    TF.post_pending_transfer | TF.balancing_credit,
    TF.post_pending_transfer | TF.closing_debit,
    TF.void_pending_transfer | TF.closing_credit,
    TF.void_pending_transfer | TF.balancing_debit,
  ];
  for (const [i, flags] of combos.entries()) {
    const id = 30n + BigInt(i);
    h.rejectTransfers([transfer(id, 0n, 0n, 0n, { flags, pending_id: 20n, ledger: 0, code: 0 })], ['flags_are_mutually_exclusive']);
    // before pending_id_must_not_be_zero / debit_account_id_must_not_be_zero / timeout_reserved
    h.rejectTransfers([transfer(id, 0n, 0n, 0n, { flags, timeout: 1 })], ['flags_are_mutually_exclusive']);
  }
  // after the exists checks: an existing id with exclusive flags differs in flags
  h.rejectTransfers([{ ...BASE, flags: TF.post_pending_transfer | TF.void_pending_transfer }], ['exists_with_different_flags']);
  // Combinations TigerBeetle allows (the pending transfer is still pending, so these succeed).
  h.transfers(
    [
      transfer(40n, 1n, 3n, 0n, { flags: TF.balancing_debit | TF.balancing_credit }),
      pending(41n, 1n, 3n, 0n, { flags: TF.balancing_debit }),
      post(42n, 20n, U64_MAX, { flags: TF.linked }),
      transfer(43n, 3n, 1n, 1n),
    ],
    ['created', 'created', 'created', 'created'],
  );
});

transferStatus('debit_account_id_must_not_be_zero', (h) => {
  h.setup();
  h.rejectTransfers([transfer(10n, 0n, 2n, 5n)], ['debit_account_id_must_not_be_zero']);
  h.rejectTransfers([transfer(10n, 0n, 0n, 5n, { ledger: 0, pending_id: 1n })], ['debit_account_id_must_not_be_zero']);
});

transferStatus('debit_account_id_must_not_be_int_max', (h) => {
  h.setup();
  h.rejectTransfers([transfer(10n, U64_MAX, 2n, 5n)], ['debit_account_id_must_not_be_int_max']);
  h.rejectTransfers([transfer(10n, U64_MAX, U64_MAX, 5n)], ['debit_account_id_must_not_be_int_max']);
});

transferStatus('credit_account_id_must_not_be_zero', (h) => {
  h.setup();
  h.rejectTransfers([transfer(10n, 1n, 0n, 5n)], ['credit_account_id_must_not_be_zero']);
  h.rejectTransfers([transfer(10n, 99n, 0n, 5n, { ledger: 0 })], ['credit_account_id_must_not_be_zero']);
});

transferStatus('credit_account_id_must_not_be_int_max', (h) => {
  h.setup();
  h.rejectTransfers([transfer(10n, 1n, U64_MAX, 5n)], ['credit_account_id_must_not_be_int_max']);
});

transferStatus('accounts_must_be_different', (h) => {
  h.setup();
  h.rejectTransfers([transfer(10n, 1n, 1n, 5n)], ['accounts_must_be_different']);
  h.rejectTransfers([transfer(10n, 99n, 99n, 5n, { pending_id: 5n, ledger: 0 })], ['accounts_must_be_different']);
});

transferStatus('pending_id_must_be_zero', (h) => {
  h.setup();
  h.transfers([pending(20n, 1n, 2n, 5n)], ['created']);
  h.rejectTransfers([transfer(10n, 1n, 2n, 5n, { pending_id: 20n })], ['pending_id_must_be_zero']);
  h.rejectTransfers([pending(10n, 1n, 2n, 5n, { pending_id: 20n })], ['pending_id_must_be_zero']);
  h.rejectTransfers([transfer(10n, 1n, 2n, 5n, { pending_id: 1n, timeout: 1, ledger: 0 })], ['pending_id_must_be_zero']);
});

transferStatus('pending_id_must_not_be_zero', (h) => {
  h.setup();
  h.rejectTransfers([post(10n, 0n)], ['pending_id_must_not_be_zero']);
  h.rejectTransfers([voidPending(10n, 0n, 0n, { timeout: 1 })], ['pending_id_must_not_be_zero']);
});

transferStatus('pending_id_must_not_be_int_max', (h) => {
  h.setup();
  h.rejectTransfers([post(10n, U64_MAX)], ['pending_id_must_not_be_int_max']);
  h.rejectTransfers([voidPending(10n, U64_MAX)], ['pending_id_must_not_be_int_max']);
});

transferStatus('pending_id_must_be_different', (h) => {
  h.setup();
  h.rejectTransfers([post(10n, 10n)], ['pending_id_must_be_different']);
  h.rejectTransfers([voidPending(10n, 10n, 0n, { timeout: 1 })], ['pending_id_must_be_different']);
});

transferStatus('timeout_reserved_for_pending_transfer', (h) => {
  h.setup();
  h.transfers([pending(20n, 1n, 2n, 5n)], ['created']);
  h.rejectTransfers([transfer(10n, 1n, 2n, 5n, { timeout: 1 })], ['timeout_reserved_for_pending_transfer']);
  h.rejectTransfers([post(10n, 20n, U64_MAX, { timeout: 1 })], ['timeout_reserved_for_pending_transfer']);
  h.rejectTransfers([voidPending(10n, 77n, 0n, { timeout: 1 })], ['timeout_reserved_for_pending_transfer']);
  h.rejectTransfers([transfer(10n, 1n, 2n, 5n, { timeout: 1, flags: TF.closing_debit, ledger: 0 })], ['timeout_reserved_for_pending_transfer']);
});

transferStatus('closing_transfer_must_be_pending', (h) => {
  h.setup();
  h.rejectTransfers([transfer(10n, 1n, 2n, 0n, { flags: TF.closing_debit })], ['closing_transfer_must_be_pending']);
  h.rejectTransfers([transfer(10n, 1n, 2n, 0n, { flags: TF.closing_credit, ledger: 0 })], ['closing_transfer_must_be_pending']);
  h.t.notOk(h.isClosed(1n) || h.isClosed(2n), 'nothing was closed');
});

transferStatus('ledger_must_not_be_zero', (h) => {
  h.setup();
  h.rejectTransfers([transfer(10n, 1n, 2n, 5n, { ledger: 0 })], ['ledger_must_not_be_zero']);
  h.rejectTransfers([transfer(10n, 98n, 99n, 5n, { ledger: 0, code: 0 })], ['ledger_must_not_be_zero']);
});

transferStatus('code_must_not_be_zero', (h) => {
  h.setup();
  h.rejectTransfers([transfer(10n, 1n, 2n, 5n, { code: 0 })], ['code_must_not_be_zero']);
  h.rejectTransfers([transfer(10n, 98n, 99n, 5n, { code: 0 })], ['code_must_not_be_zero']);
});

transferStatus('debit_account_not_found', (h) => {
  h.setup();
  h.rejectTransfers([transfer(10n, 98n, 2n, 5n)], ['debit_account_not_found']);
  h.rejectTransfers([transfer(11n, 98n, 99n, 5n, { ledger: 2 })], ['debit_account_not_found']);
});

transferStatus('credit_account_not_found', (h) => {
  h.setup();
  h.rejectTransfers([transfer(10n, 1n, 99n, 5n)], ['credit_account_not_found']);
  h.rejectTransfers([transfer(11n, 9n, 99n, 5n)], ['credit_account_not_found']);
});

transferStatus('accounts_must_have_the_same_ledger', (h) => {
  h.setup();
  h.rejectTransfers([transfer(10n, 1n, 9n, 5n)], ['accounts_must_have_the_same_ledger']);
  h.rejectTransfers([transfer(10n, 9n, 1n, 5n, { ledger: 2 })], ['accounts_must_have_the_same_ledger']);
});

transferStatus('transfer_must_have_the_same_ledger_as_accounts', (h) => {
  h.setup();
  h.rejectTransfers([transfer(10n, 1n, 2n, 5n, { ledger: 2 })], ['transfer_must_have_the_same_ledger_as_accounts']);
  h.rejectTransfers([transfer(10n, 1n, 2n, 5n, { ledger: 3, flags: TF.pending })], ['transfer_must_have_the_same_ledger_as_accounts']);
});

transferStatus('pending_transfer_not_found', (h) => {
  h.setup();
  h.rejectTransfers([post(10n, 77n)], ['pending_transfer_not_found']);
  h.rejectTransfers([voidPending(11n, 77n)], ['pending_transfer_not_found']);
  // a failed (burned) id is no pending transfer either
  h.rejectTransfers([pending(12n, 1n, 99n, 5n)], ['credit_account_not_found']);
  h.rejectTransfers([post(13n, 12n)], ['pending_transfer_not_found']);
});

transferStatus('pending_transfer_not_pending', (h) => {
  h.setup();
  h.transfers([transfer(20n, 1n, 2n, 5n), pending(21n, 1n, 2n, 5n), post(22n, 21n)], ['created', 'created', 'created']);
  h.rejectTransfers([post(10n, 20n)], ['pending_transfer_not_pending']);
  h.rejectTransfers([voidPending(10n, 20n, 3n, { debit_account_id: 3n })], ['pending_transfer_not_pending']);
  h.rejectTransfers([voidPending(10n, 22n)], ['pending_transfer_not_pending']);
});

transferStatus('pending_transfer_has_different_debit_account_id', (h) => {
  h.setup();
  h.transfers([pending(20n, 1n, 2n, 100n)], ['created']);
  h.rejectTransfers([post(10n, 20n, U64_MAX, { debit_account_id: 3n })], ['pending_transfer_has_different_debit_account_id']);
  h.rejectTransfers([voidPending(10n, 20n, 7n, { debit_account_id: 2n, credit_account_id: 1n, ledger: 2, code: 2 })], ['pending_transfer_has_different_debit_account_id']);
  h.transfers([post(10n, 20n, U64_MAX, { debit_account_id: 1n })], ['created']);
});

transferStatus('pending_transfer_has_different_credit_account_id', (h) => {
  h.setup();
  h.transfers([pending(20n, 1n, 2n, 100n)], ['created']);
  h.rejectTransfers([post(10n, 20n, U64_MAX, { credit_account_id: 3n })], ['pending_transfer_has_different_credit_account_id']);
  h.rejectTransfers([voidPending(10n, 20n, 7n, { credit_account_id: 1n, ledger: 2 })], ['pending_transfer_has_different_credit_account_id']);
  h.transfers([voidPending(10n, 20n, 0n, { debit_account_id: 1n, credit_account_id: 2n })], ['created']);
});

transferStatus('pending_transfer_has_different_ledger', (h) => {
  h.setup();
  h.transfers([pending(20n, 1n, 2n, 100n)], ['created']);
  h.rejectTransfers([post(10n, 20n, U64_MAX, { ledger: 2 })], ['pending_transfer_has_different_ledger']);
  h.rejectTransfers([voidPending(10n, 20n, 7n, { ledger: 2, code: 2 })], ['pending_transfer_has_different_ledger']);
  h.transfers([post(10n, 20n, U64_MAX, { ledger: 1 })], ['created']);
});

transferStatus('pending_transfer_has_different_code', (h) => {
  h.setup();
  h.transfers([pending(20n, 1n, 2n, 100n, { code: 4 })], ['created']);
  h.rejectTransfers([post(10n, 20n, U64_MAX, { code: 1 })], ['pending_transfer_has_different_code']);
  h.rejectTransfers([voidPending(10n, 20n, 7n, { code: 5 })], ['pending_transfer_has_different_code']);
  h.transfers([post(10n, 20n, U64_MAX, { code: 4 })], ['created']);
  h.t.equal(h.transfer(10n).code, 4);
});

transferStatus('exceeds_pending_transfer_amount', (h) => {
  h.setup();
  h.transfers([pending(20n, 1n, 2n, 100n)], ['created']);
  h.rejectTransfers([post(10n, 20n, 101n)], ['exceeds_pending_transfer_amount']);
  h.rejectTransfers([voidPending(10n, 20n, 101n)], ['exceeds_pending_transfer_amount']);
  // TigerBeetle: 2^64-1 means "the whole" for a post only; for a void it is just too much.
  h.rejectTransfers([voidPending(10n, 20n, U64_MAX)], ['exceeds_pending_transfer_amount']);
  // before pending_transfer_already_posted
  h.transfers([post(11n, 20n)], ['created']);
  h.rejectTransfers([post(10n, 20n, 101n)], ['exceeds_pending_transfer_amount']);
});

transferStatus('pending_transfer_has_different_amount', (h) => {
  h.setup();
  h.transfers([pending(20n, 1n, 2n, 100n)], ['created']);
  h.rejectTransfers([voidPending(10n, 20n, 99n)], ['pending_transfer_has_different_amount']);
  h.rejectTransfers([voidPending(10n, 20n, 1n)], ['pending_transfer_has_different_amount']);
  // before pending_transfer_already_voided
  h.transfers([voidPending(11n, 20n, 100n)], ['created']);
  h.rejectTransfers([voidPending(10n, 20n, 50n)], ['pending_transfer_has_different_amount']);
});

transferStatus('pending_transfer_already_posted', (h) => {
  h.setup();
  h.transfers([pending(20n, 1n, 2n, 100n, { timeout: 1 })], ['created'], 10_000n);
  h.transfers([post(21n, 20n, 40n)], ['created'], 20_000n);
  h.rejectTransfers([post(10n, 20n, 40n)], ['pending_transfer_already_posted'], 30_000n);
  h.rejectTransfers([voidPending(10n, 20n)], ['pending_transfer_already_posted'], 40_000n);
  // before pending_transfer_expired, even past the deadline
  h.t.equal(h.l.pulse(10_000n + 2n * NS), 0, 'nothing left to expire');
  h.rejectTransfers([post(10n, 20n, 1n)], ['pending_transfer_already_posted'], 10_000n + 3n * NS);
  h.balance(1n, [0n, 40n, 0n, 0n]);
});

transferStatus('pending_transfer_already_voided', (h) => {
  h.setup();
  h.transfers([pending(20n, 1n, 2n, 100n), voidPending(21n, 20n)], ['created', 'created']);
  h.rejectTransfers([voidPending(10n, 20n)], ['pending_transfer_already_voided']);
  h.rejectTransfers([post(10n, 20n, 1n)], ['pending_transfer_already_voided']);
  h.balance(1n, [0n, 0n, 0n, 0n]);
});

transferStatus('pending_transfer_expired', (h) => {
  h.setup();
  const [ts] = h.transfers([pending(20n, 1n, 2n, 100n, { timeout: 1 })], ['created'], 10_000n);
  const deadline = ts + NS;
  h.t.equal(h.l.pulse(deadline), 1, 'expired at its deadline');
  h.balance(1n, [0n, 0n, 0n, 0n], 'the pending amount is released');
  h.rejectTransfers([post(10n, 20n)], ['pending_transfer_expired'], deadline + 1n);
  h.rejectTransfers([voidPending(10n, 20n)], ['pending_transfer_expired']);
  // Past the deadline but not yet expired (no pulse, no batch since): still expired for a post.
  const [ts2] = h.transfers([pending(22n, 3n, 4n, 7n, { timeout: 1 })], ['created'], deadline + 1000n);
  const deadline2 = ts2 + NS;
  const r = h.createTransfers([transfer(23n, 1n, 2n, 1n), post(24n, 22n)], deadline2);
  h.t.strictSame(r.names, ['created', 'pending_transfer_expired'], 'second event sits at the deadline, the batch began before it');
  h.balance(3n, [7n, 0n, 0n, 0n], 'not released until the expiry runs');
  h.absentTransfers(24n);
  h.t.equal(h.l.pulse(0n), 1);
  h.balance(3n, [0n, 0n, 0n, 0n]);
});

transferStatus('imported_event_timestamp_must_not_regress', (h) => {
  h.setup(1000n); // accounts at 995..1000
  h.accounts([account(6n)], ['created'], 5000n);
  const imported = (id: bigint, timestamp: bigint): TransferInput => transfer(id, 1n, 2n, 5n, { flags: TF.imported, timestamp });
  h.transfers([imported(10n, 1500n)], ['created'], 6000n);
  h.rejectTransfers([imported(11n, 1400n)], ['imported_event_timestamp_must_not_regress'], 7000n);
  h.rejectTransfers([imported(11n, 1500n)], ['imported_event_timestamp_must_not_regress'], 8000n);
  // an account's timestamp is taken, though it is past every transfer and both accounts
  h.rejectTransfers([imported(11n, 5000n)], ['imported_event_timestamp_must_not_regress'], 9000n);
  // before the other import checks and the closed checks
  h.rejectTransfers([transfer(11n, 1n, 2n, 5n, { flags: TF.imported | TF.pending, timestamp: 1000n, timeout: 1 })], ['imported_event_timestamp_must_not_regress'], 10_000n);
  h.transfers([imported(11n, 5001n)], ['created'], 11_000n);
  // an imported post or void, too
  h.transfers([pending(12n, 1n, 2n, 5n, { flags: TF.imported, timestamp: 11_500n })], ['created'], 12_000n);
  h.rejectTransfers([post(13n, 12n, U64_MAX, { flags: TF.imported, timestamp: 11_000n })], ['imported_event_timestamp_must_not_regress'], 13_000n);
  h.transfers([post(13n, 12n, U64_MAX, { flags: TF.imported, timestamp: 12_500n })], ['created'], 14_000n);
  h.balance(1n, [0n, 15n, 0n, 0n]);
});

transferStatus('imported_event_timestamp_must_postdate_debit_account', (h) => {
  h.accounts([account(1n, { flags: AF.imported, timestamp: 100n }), account(2n, { flags: AF.imported, timestamp: 200n })], ['created', 'created'], 1000n);
  h.rejectTransfers([transfer(10n, 2n, 1n, 5n, { flags: TF.imported, timestamp: 150n })], ['imported_event_timestamp_must_postdate_debit_account'], 2000n);
  // taking the account's own timestamp is a regression (it collides) before it is a postdate failure
  h.rejectTransfers([transfer(10n, 2n, 1n, 5n, { flags: TF.imported, timestamp: 200n })], ['imported_event_timestamp_must_not_regress'], 3000n);
  // before imported_event_timeout_must_be_zero
  h.rejectTransfers([pending(10n, 2n, 1n, 5n, { flags: TF.imported, timestamp: 199n, timeout: 1 })], ['imported_event_timestamp_must_postdate_debit_account'], 4000n);
  h.transfers([transfer(10n, 2n, 1n, 5n, { flags: TF.imported, timestamp: 201n })], ['created'], 5000n);
});

transferStatus('imported_event_timestamp_must_postdate_credit_account', (h) => {
  h.accounts([account(1n, { flags: AF.imported, timestamp: 100n }), account(2n, { flags: AF.imported, timestamp: 200n })], ['created', 'created'], 1000n);
  h.rejectTransfers([transfer(10n, 1n, 2n, 5n, { flags: TF.imported, timestamp: 150n })], ['imported_event_timestamp_must_postdate_credit_account'], 2000n);
  h.rejectTransfers([transfer(10n, 1n, 2n, 5n, { flags: TF.imported, timestamp: 101n })], ['imported_event_timestamp_must_postdate_credit_account'], 3000n);
  h.transfers([transfer(10n, 1n, 2n, 5n, { flags: TF.imported, timestamp: 201n })], ['created'], 4000n);
});

transferStatus('imported_event_timeout_must_be_zero', (h) => {
  h.setup(1000n);
  h.rejectTransfers([pending(10n, 1n, 2n, 5n, { flags: TF.imported, timestamp: 1500n, timeout: 1 })], ['imported_event_timeout_must_be_zero'], 2000n);
  // a non-pending one with a timeout fails earlier
  h.rejectTransfers([transfer(10n, 1n, 2n, 5n, { flags: TF.imported, timestamp: 2500n, timeout: 1 })], ['timeout_reserved_for_pending_transfer'], 3000n);
  // before the closed checks
  h.accounts([account(6n, { flags: AF.closed })], ['created'], 3500n);
  h.rejectTransfers([pending(10n, 6n, 2n, 5n, { flags: TF.imported, timestamp: 3900n, timeout: 1 })], ['imported_event_timeout_must_be_zero'], 4000n);
  h.transfers([pending(10n, 1n, 2n, 5n, { flags: TF.imported, timestamp: 4500n })], ['created'], 5000n);
});

transferStatus('debit_account_already_closed', (h) => {
  h.setup();
  h.accounts([account(6n, { flags: AF.closed })], ['created']);
  h.rejectTransfers([transfer(10n, 6n, 2n, 5n)], ['debit_account_already_closed']);
  // closed by a closing transfer
  h.transfers([pending(20n, 1n, 2n, 5n), pending(21n, 1n, 3n, 0n, { flags: TF.closing_debit })], ['created', 'created']);
  h.t.ok(h.isClosed(1n));
  h.rejectTransfers([transfer(11n, 1n, 2n, 5n)], ['debit_account_already_closed']);
  h.rejectTransfers([pending(12n, 1n, 2n, 5n)], ['debit_account_already_closed']);
  h.rejectTransfers([pending(13n, 1n, 4n, 0n, { flags: TF.closing_debit })], ['debit_account_already_closed'], 0n);
  // before overflows and limits
  h.rejectTransfers([transfer(14n, 1n, 2n, U64_MAX, { flags: TF.balancing_credit })], ['debit_account_already_closed']);
  // A post moves money, which a closed account refuses, whichever pending transfer it posts:
  // TigerBeetle never posts a closing transfer (it can only be voided or expire).
  h.rejectTransfers([post(15n, 20n)], ['debit_account_already_closed']);
  h.rejectTransfers([post(16n, 21n)], ['debit_account_already_closed']);
  h.t.ok(h.isClosed(1n));
});

transferStatus('credit_account_already_closed', (h) => {
  h.setup();
  h.accounts([account(6n, { flags: AF.closed })], ['created']);
  h.rejectTransfers([transfer(10n, 1n, 6n, 5n)], ['credit_account_already_closed']);
  h.transfers([pending(20n, 3n, 2n, 5n), pending(21n, 1n, 2n, 0n, { flags: TF.closing_credit })], ['created', 'created']);
  h.t.ok(h.isClosed(2n));
  h.rejectTransfers([transfer(11n, 3n, 2n, 5n)], ['credit_account_already_closed']);
  h.rejectTransfers([pending(12n, 3n, 2n, 5n, { timeout: 10 })], ['credit_account_already_closed']);
  // debit side first
  h.rejectTransfers([transfer(13n, 6n, 2n, 5n)], ['debit_account_already_closed']);
  h.rejectTransfers([post(14n, 20n, 1n)], ['credit_account_already_closed']);
  h.rejectTransfers([post(15n, 21n)], ['credit_account_already_closed']);
});

const HALF = U64_MAX / 2n;

transferStatus('overflows_debits_pending', (h) => {
  h.setup();
  h.transfers([pending(20n, 1n, 2n, U64_MAX)], ['created']);
  h.balance(1n, [U64_MAX, 0n, 0n, 0n]);
  // overflows_debits applies too, but comes later
  h.rejectTransfers([pending(10n, 1n, 3n, 1n)], ['overflows_debits_pending']);
  h.rejectTransfers([pending(10n, 1n, 3n, U64_MAX)], ['overflows_debits_pending']);
  h.transfers([pending(11n, 1n, 3n, 0n)], ['created']);
});

transferStatus('overflows_credits_pending', (h) => {
  h.setup();
  h.transfers([pending(20n, 1n, 2n, HALF), pending(21n, 3n, 2n, HALF + 1n)], ['created', 'created']);
  h.balance(2n, [0n, 0n, U64_MAX, 0n]);
  h.rejectTransfers([pending(10n, 4n, 2n, 1n)], ['overflows_credits_pending']);
  // the debit side is checked first
  h.rejectTransfers([pending(10n, 1n, 2n, HALF + 1n)], ['overflows_credits_pending']);
  h.rejectTransfers([pending(10n, 1n, 2n, HALF + 2n)], ['overflows_debits_pending']);
});

transferStatus('overflows_debits_posted', (h) => {
  h.setup();
  h.transfers([transfer(20n, 1n, 2n, U64_MAX)], ['created']);
  h.rejectTransfers([transfer(10n, 1n, 3n, 1n)], ['overflows_debits_posted']);
  // a pending transfer is checked against the posted balance too
  h.rejectTransfers([pending(10n, 1n, 3n, 1n)], ['overflows_debits_posted']);
  h.transfers([transfer(11n, 1n, 3n, 0n)], ['created']);
});

transferStatus('overflows_credits_posted', (h) => {
  h.setup();
  h.transfers([transfer(20n, 1n, 2n, U64_MAX)], ['created']);
  h.rejectTransfers([transfer(10n, 3n, 2n, 1n)], ['overflows_credits_posted']);
  h.rejectTransfers([pending(10n, 3n, 2n, U64_MAX)], ['overflows_credits_posted']);
  h.rejectTransfers([transfer(10n, 1n, 2n, 1n)], ['overflows_debits_posted']);
});

transferStatus('overflows_debits', (h) => {
  h.setup();
  h.transfers([pending(20n, 1n, 2n, U64_MAX - 1n), transfer(21n, 1n, 3n, 1n)], ['created', 'created']);
  h.balance(1n, [U64_MAX - 1n, 1n, 0n, 0n]);
  // neither part overflows on its own
  h.rejectTransfers([transfer(10n, 1n, 4n, 1n)], ['overflows_debits']);
  h.rejectTransfers([pending(10n, 1n, 4n, 1n)], ['overflows_debits']);
  h.rejectTransfers([pending(10n, 1n, 4n, 2n)], ['overflows_debits_pending']);
  // voiding makes room again
  h.transfers([voidPending(22n, 20n), transfer(10n, 1n, 4n, 1n)], ['created', 'created']);
});

transferStatus('overflows_credits', (h) => {
  h.setup();
  h.transfers([pending(20n, 1n, 2n, U64_MAX - 1n), transfer(21n, 3n, 2n, 1n)], ['created', 'created']);
  h.balance(2n, [0n, 0n, U64_MAX - 1n, 1n]);
  h.rejectTransfers([transfer(10n, 4n, 2n, 1n)], ['overflows_credits']);
  h.rejectTransfers([pending(10n, 4n, 2n, 1n)], ['overflows_credits']);
  h.rejectTransfers([pending(10n, 4n, 2n, 2n)], ['overflows_credits_pending']);
  h.transfers([post(22n, 20n, 5n), transfer(10n, 4n, 2n, 1n)], ['created', 'created']);
  h.balance(2n, [0n, 0n, 0n, 7n]);
});

transferStatus('overflows_timeout', (h) => {
  h.setup(1000n);
  h.accounts([account(6n, { flags: AF.debits_must_not_exceed_credits })], ['created']);
  // TigerBeetle: timestamp + timeout must fit in u63.
  const start = MAX63 - NS;
  const [ts] = h.transfers([pending(20n, 1n, 2n, 5n, { timeout: 1 })], ['created'], start);
  h.t.equal(ts, start);
  h.t.equal(h.l.nextExpiry(), MAX63, 'its deadline is the last representable timestamp');
  h.rejectTransfers([pending(10n, 1n, 2n, 5n, { timeout: 1 })], ['overflows_timeout'], start + 1n);
  h.rejectTransfers([pending(10n, 1n, 2n, 5n, { timeout: U32_MAX })], ['overflows_timeout']);
  // before exceeds_credits
  h.rejectTransfers([pending(10n, 6n, 2n, 5n, { timeout: U32_MAX })], ['overflows_timeout']);
  // no timeout, no deadline
  h.transfers([pending(10n, 1n, 2n, 5n)], ['created']);
});

transferStatus('exceeds_credits', (h) => {
  h.setup();
  h.accounts([account(6n, { flags: AF.debits_must_not_exceed_credits })], ['created']);
  h.rejectTransfers([transfer(10n, 6n, 2n, 1n)], ['exceeds_credits']);
  h.transfers([transfer(20n, 2n, 6n, 100n), pending(21n, 6n, 2n, 60n)], ['created', 'created']);
  // pending debits count
  h.rejectTransfers([transfer(11n, 6n, 2n, 41n)], ['exceeds_credits']);
  h.rejectTransfers([pending(12n, 6n, 2n, 41n)], ['exceeds_credits']);
  h.transfers([transfer(22n, 6n, 2n, 40n)], ['created']);
  h.balance(6n, [60n, 40n, 0n, 100n]);
  // pending credits do not
  h.transfers([pending(23n, 3n, 6n, 1000n)], ['created']);
  h.rejectTransfers([transfer(13n, 6n, 2n, 1n)], ['exceeds_credits']);
  // a void of a pending debit frees room
  h.transfers([voidPending(24n, 21n), transfer(13n, 6n, 2n, 60n)], ['created', 'id_already_failed']);
  h.transfers([transfer(14n, 6n, 2n, 60n)], ['created']);
  h.balance(6n, [0n, 100n, 1000n, 100n]);
});

transferStatus('exceeds_debits', (h) => {
  h.setup();
  h.accounts([account(7n, { flags: AF.credits_must_not_exceed_debits })], ['created']);
  h.rejectTransfers([transfer(10n, 2n, 7n, 1n)], ['exceeds_debits']);
  h.transfers([transfer(20n, 7n, 2n, 100n), pending(21n, 3n, 7n, 60n)], ['created', 'created']);
  h.rejectTransfers([transfer(11n, 3n, 7n, 41n)], ['exceeds_debits']);
  h.transfers([transfer(22n, 3n, 7n, 40n)], ['created']);
  // the debit side is checked first
  h.accounts([account(6n, { flags: AF.debits_must_not_exceed_credits })], ['created']);
  h.rejectTransfers([transfer(12n, 6n, 7n, 1n)], ['exceeds_credits']);
  h.transfers([post(23n, 21n, 10n), transfer(13n, 2n, 7n, 50n)], ['created', 'created']);
  h.balance(7n, [0n, 100n, 0n, 100n]);
});

// =============================================================================================
// Cross-cutting behaviour

const TRANSIENT: CreateTransferStatusName[] = [
  'debit_account_not_found',
  'credit_account_not_found',
  'pending_transfer_not_found',
  'exceeds_credits',
  'exceeds_debits',
  'debit_account_already_closed',
  'credit_account_already_closed',
];

scenario('id_already_failed: every transient status burns the id, no other status does', (h) => {
  h.setup(1000n);
  h.accounts(
    [account(6n, { flags: AF.debits_must_not_exceed_credits }), account(7n, { flags: AF.credits_must_not_exceed_debits }), account(8n, { flags: AF.closed })],
    ['created', 'created', 'created'],
    1100n,
  );
  h.transfers(
    [transfer(20n, 1n, 2n, 10n), pending(21n, 1n, 2n, 10n), pending(22n, 1n, 2n, 10n, { timeout: 1 }), post(23n, 21n, 5n), pending(24n, 1n, 2n, 10n), voidPending(25n, 24n)],
    Array<CreateTransferStatusName>(6).fill('created'),
    2000n,
  );
  h.t.equal(h.l.pulse(2000n + 2n * NS), 1, 'pending 22 expired');

  // One failure per transient status, ids 101..107.
  const transient: Array<[bigint, TransferInput, CreateTransferStatusName]> = [
    [101n, transfer(101n, 98n, 2n, 1n), 'debit_account_not_found'],
    [102n, transfer(102n, 1n, 99n, 1n), 'credit_account_not_found'],
    [103n, post(103n, 77n), 'pending_transfer_not_found'],
    [104n, transfer(104n, 6n, 2n, 1n), 'exceeds_credits'],
    [105n, transfer(105n, 1n, 7n, 1n), 'exceeds_debits'],
    [106n, transfer(106n, 8n, 2n, 1n), 'debit_account_already_closed'],
    [107n, transfer(107n, 1n, 8n, 1n), 'credit_account_already_closed'],
  ];
  h.t.strictSame(transient.map(([, , s]) => s).sort(), [...TRANSIENT].sort(), 'every transient status of PROTOCOL.md is exercised');
  for (const [, event, status] of transient) h.rejectTransfers([event], [status]);
  for (const [id] of transient) h.rejectTransfers([transfer(id, 1n, 2n, 1n)], ['id_already_failed']);

  // Non-transient failures, ids 201.., then a valid transfer with each id is created.
  const others: Array<[TransferInput, CreateTransferStatusName]> = [
    [transfer(201n, 1n, 2n, 1n, { timestamp: 1n }), 'timestamp_must_be_zero'],
    [transfer(202n, 1n, 2n, 1n, { flags: 1 << 9 }), 'reserved_flag'],
    [transfer(203n, 1n, 2n, 1n, { flags: TF.post_pending_transfer | TF.void_pending_transfer }), 'flags_are_mutually_exclusive'],
    [transfer(204n, 0n, 2n, 1n), 'debit_account_id_must_not_be_zero'],
    [transfer(205n, U64_MAX, 2n, 1n), 'debit_account_id_must_not_be_int_max'],
    [transfer(206n, 1n, 0n, 1n), 'credit_account_id_must_not_be_zero'],
    [transfer(207n, 1n, U64_MAX, 1n), 'credit_account_id_must_not_be_int_max'],
    [transfer(208n, 1n, 1n, 1n), 'accounts_must_be_different'],
    [transfer(209n, 1n, 2n, 1n, { pending_id: 21n }), 'pending_id_must_be_zero'],
    [post(210n, 0n), 'pending_id_must_not_be_zero'],
    [post(211n, U64_MAX), 'pending_id_must_not_be_int_max'],
    [post(212n, 212n), 'pending_id_must_be_different'],
    [transfer(213n, 1n, 2n, 1n, { timeout: 1 }), 'timeout_reserved_for_pending_transfer'],
    [transfer(214n, 1n, 2n, 1n, { flags: TF.closing_debit }), 'closing_transfer_must_be_pending'],
    [transfer(215n, 1n, 2n, 1n, { ledger: 0 }), 'ledger_must_not_be_zero'],
    [transfer(216n, 1n, 2n, 1n, { code: 0 }), 'code_must_not_be_zero'],
    [transfer(217n, 1n, 9n, 1n), 'accounts_must_have_the_same_ledger'],
    [transfer(218n, 1n, 2n, 1n, { ledger: 2 }), 'transfer_must_have_the_same_ledger_as_accounts'],
    [post(219n, 20n), 'pending_transfer_not_pending'],
    [post(220n, 21n, U64_MAX, { debit_account_id: 3n }), 'pending_transfer_has_different_debit_account_id'],
    [post(221n, 21n, U64_MAX, { credit_account_id: 3n }), 'pending_transfer_has_different_credit_account_id'],
    [post(222n, 21n, U64_MAX, { ledger: 2 }), 'pending_transfer_has_different_ledger'],
    [post(223n, 21n, U64_MAX, { code: 2 }), 'pending_transfer_has_different_code'],
    [post(224n, 21n, 11n), 'exceeds_pending_transfer_amount'],
    [voidPending(225n, 21n, 3n), 'pending_transfer_has_different_amount'],
    [post(226n, 21n), 'pending_transfer_already_posted'],
    [post(227n, 24n), 'pending_transfer_already_voided'],
    [post(228n, 22n), 'pending_transfer_expired'],
    [transfer(229n, 1n, 2n, U64_MAX), 'overflows_debits_posted'],
    [{ ...transfer(20n, 1n, 2n, 11n) }, 'exists_with_different_amount'],
  ];
  for (const [event, status] of others) h.rejectTransfers([event], [status]);
  h.rejectTransfers([transfer(230n, 1n, 2n, 1n, { flags: TF.linked }), transfer(231n, 1n, 2n, 1n, { flags: TF.linked })], ['linked_event_failed', 'linked_event_chain_open']);
  h.rejectTransfers([transfer(232n, 1n, 2n, 1n, { flags: TF.imported, timestamp: 0n })], ['imported_event_timestamp_out_of_range']);
  const retry = [...others.filter(([e]) => e.id !== 20n).map(([e]) => e.id), 230n, 231n, 232n];
  h.transfers(
    retry.map((id) => transfer(id, 2n, 1n, 1n)),
    retry.map((): CreateTransferStatusName => 'created'),
  );
  // id_already_failed itself burns nothing new: the id was burned already.
  // In a chain, only the breaking event's transient status burns its id.
  h.rejectTransfers(
    [transfer(301n, 1n, 2n, 1n, { flags: TF.linked }), transfer(302n, 1n, 99n, 1n, { flags: TF.linked }), transfer(303n, 1n, 2n, 1n)],
    ['linked_event_failed', 'credit_account_not_found', 'linked_event_failed'],
  );
  h.transfers([transfer(301n, 1n, 2n, 1n), transfer(302n, 1n, 2n, 1n), transfer(303n, 1n, 2n, 1n)], ['created', 'id_already_failed', 'created']);
  // A transient failure inside a chain broken earlier is never evaluated, so it burns nothing.
  h.rejectTransfers([transfer(304n, 1n, 1n, 1n, { flags: TF.linked }), transfer(305n, 1n, 99n, 1n)], ['accounts_must_be_different', 'linked_event_failed']);
  h.transfers([transfer(305n, 1n, 2n, 1n)], ['created']);
});

scenario('two-phase: partial post, post of 2^64-1 posts all, inherited fields, void', (h) => {
  h.setup();
  h.transfers([pending(20n, 1n, 2n, 100n, { user_data_64: 5n, user_data_32: 6, code: 7 })], ['created']);
  h.balance(1n, [100n, 0n, 0n, 0n]);
  h.balance(2n, [0n, 0n, 100n, 0n]);
  const [ts] = h.transfers([post(21n, 20n, 30n)], ['created']);
  h.t.strictSame(
    h.transfer(21n),
    {
      id: 21n,
      debit_account_id: 1n,
      credit_account_id: 2n,
      amount: 30n,
      pending_id: 20n,
      user_data_64: 5n,
      user_data_32: 6,
      timeout: 0,
      ledger: 1,
      code: 7,
      flags: TF.post_pending_transfer,
      timestamp: ts,
    },
    'a post records the amount posted and inherits what it left zero',
  );
  h.balance(1n, [0n, 30n, 0n, 0n], 'partial post: 30 posted, the other 70 released');
  h.balance(2n, [0n, 0n, 0n, 30n]);

  h.transfers([pending(22n, 1n, 2n, 100n), post(23n, 22n, U64_MAX, { user_data_64: 9n })], ['created', 'created']);
  h.t.equal(h.transfer(23n).amount, 100n, 'amount 2^64-1 posts (and records) the whole pending amount');
  h.t.equal(h.transfer(23n).user_data_64, 9n, 'user data given is kept');
  h.balance(1n, [0n, 130n, 0n, 0n]);

  h.transfers([pending(24n, 1n, 2n, 100n), post(25n, 24n, 100n, { debit_account_id: 1n, credit_account_id: 2n, ledger: 1, code: 1 })], ['created', 'created']);
  h.t.equal(h.transfer(25n).amount, 100n, 'exactly the pending amount');
  h.balance(1n, [0n, 230n, 0n, 0n]);

  // PROTOCOL.md: "zero fields of a post or void are taken from the pending transfer", amount
  // included (TigerBeetle 0.16 would post zero here).
  h.transfers([pending(26n, 1n, 2n, 40n), post(27n, 26n, 0n)], ['created', 'created']);
  h.t.equal(h.transfer(27n).amount, 40n, 'a zero amount is taken from the pending transfer');
  h.balance(1n, [0n, 270n, 0n, 0n]);

  // A void releases everything and records the pending amount.
  h.transfers([pending(28n, 1n, 2n, 40n), voidPending(29n, 28n)], ['created', 'created']);
  h.t.equal(h.transfer(29n).amount, 40n);
  h.balance(1n, [0n, 270n, 0n, 0n]);
  h.transfers([pending(30n, 1n, 2n, 40n), voidPending(31n, 30n, 40n)], ['created', 'created']);
  // A zero-amount pending transfer is legal and resolves like any other.
  h.transfers([pending(32n, 1n, 2n, 0n), post(33n, 32n)], ['created', 'created']);
  h.t.equal(h.transfer(33n).amount, 0n);
  // resolves once
  h.rejectTransfers([post(34n, 28n), voidPending(35n, 20n), post(36n, 22n, 1n)], ['pending_transfer_already_voided', 'pending_transfer_already_posted', 'pending_transfer_already_posted']);
  h.balance(1n, [0n, 270n, 0n, 0n]);
  h.balance(2n, [0n, 0n, 0n, 270n]);
});

scenario('two-phase: closing accounts; void re-opens; a void is the one movement a closed account allows', (h) => {
  h.setup();
  h.transfers([pending(20n, 1n, 2n, 10n), pending(21n, 1n, 4n, 10n)], ['created', 'created']);
  h.transfers([pending(22n, 1n, 3n, 0n, { flags: TF.closing_debit | TF.closing_credit })], ['created']);
  h.t.ok(h.isClosed(1n) && h.isClosed(3n), 'both accounts of the closing transfer are closed');
  h.t.equal(h.account(1n).flags, AF.closed, 'the closed flag is stored on the account');
  // the original create resent now differs in flags
  h.rejectAccounts([account(1n)], ['exists_with_different_flags']);
  h.rejectTransfers([transfer(10n, 1n, 2n, 1n)], ['debit_account_already_closed']);
  h.rejectTransfers([transfer(11n, 2n, 3n, 1n)], ['credit_account_already_closed']);
  // Voiding another pending transfer on the closed account is allowed; posting one is not.
  h.transfers([voidPending(23n, 20n)], ['created']);
  h.rejectTransfers([post(24n, 21n)], ['debit_account_already_closed']);
  h.balance(1n, [10n, 0n, 0n, 0n]);
  // The closing transfer itself cannot be posted, only voided, which re-opens both accounts.
  h.rejectTransfers([post(25n, 22n)], ['debit_account_already_closed']);
  h.transfers([voidPending(26n, 22n)], ['created']);
  h.t.notOk(h.isClosed(1n) || h.isClosed(3n), 'voiding the closing transfer re-opens both accounts');
  h.rejectAccounts([account(1n)], ['exists']);
  h.transfers([post(27n, 21n), transfer(12n, 1n, 3n, 1n)], ['created', 'created']);
  h.balance(1n, [0n, 11n, 0n, 0n]);
});

scenario('expiry: releases pending amounts at the deadline, never earlier, and re-opens closing accounts', (h) => {
  h.setup(1000n);
  const [t20, t21] = h.transfers([pending(20n, 1n, 2n, 100n, { timeout: 2 }), pending(21n, 3n, 4n, 50n, { timeout: 2 })], ['created', 'created'], 10_000n);
  const d20 = t20 + 2n * NS;
  const d21 = t21 + 2n * NS;
  h.t.equal(d21, d20 + 1n);
  h.t.equal(h.l.nextExpiry(), d20);
  h.t.equal(h.l.pulse(d20 - 1n), 0, 'not before the deadline');
  h.balance(1n, [100n, 0n, 0n, 0n]);
  // A batch whose first event sits at d20: pending 20 expires before it runs; 21 is still live.
  const [tp] = h.transfers([post(22n, 21n)], ['created'], d20 - 5n);
  h.t.equal(tp, d20, 'the batch was pushed to last + 1');
  h.balance(1n, [0n, 0n, 0n, 0n], 'expired: released');
  h.balance(2n, [0n, 0n, 0n, 0n]);
  h.balance(3n, [0n, 50n, 0n, 0n], 'posted one tick before its deadline');
  h.rejectTransfers([post(23n, 20n), voidPending(24n, 20n)], ['pending_transfer_expired', 'pending_transfer_expired']);
  h.t.equal(h.l.nextExpiry(), 0n, 'nothing left to expire');
  h.t.equal(h.l.queryTransfers(queryFilter()).length, 3, 'an expiry creates no transfer');

  // A closing transfer with a timeout: expiry re-opens the account.
  const [tc] = h.transfers([pending(25n, 5n, 2n, 7n, { flags: TF.closing_debit, timeout: 1 })], ['created'], d20 + 1000n);
  h.t.ok(h.isClosed(5n));
  h.t.equal(h.l.pulse(tc + NS), 1);
  h.t.notOk(h.isClosed(5n), 'expiry re-opens the closed account');
  h.balance(5n, [0n, 0n, 0n, 0n]);
  h.transfers([transfer(26n, 5n, 2n, 1n)], ['created']);

  // Expiry works on an account closed by another transfer, and leaves it closed.
  const [tq] = h.transfers([pending(27n, 1n, 2n, 9n, { timeout: 1 })], ['created'], tc + 2n * NS);
  h.transfers([pending(28n, 1n, 3n, 0n, { flags: TF.closing_debit })], ['created']);
  h.t.equal(h.l.pulse(tq + NS), 1);
  h.balance(1n, [0n, 0n, 0n, 0n]);
  h.t.ok(h.isClosed(1n), 'still closed by its own closing transfer');
  // A pending transfer rolled back with its chain is never scheduled.
  h.rejectTransfers([pending(29n, 3n, 4n, 1n, { flags: TF.linked, timeout: 1 }), transfer(30n, 3n, 3n, 1n)], ['linked_event_failed', 'accounts_must_be_different']);
  h.t.equal(h.l.nextExpiry(), 0n);
});

scenario('balancing: clamps to what the limit allows and records the amount moved', (h) => {
  h.setup();
  h.transfers([transfer(20n, 2n, 1n, 100n), transfer(21n, 1n, 3n, 30n)], ['created', 'created']);
  // balancing_debit: at most debits up to credits_posted
  h.transfers([transfer(22n, 1n, 4n, 1000n, { flags: TF.balancing_debit })], ['created']);
  h.t.equal(h.transfer(22n).amount, 70n, 'records the clamped amount');
  h.balance(1n, [0n, 100n, 0n, 100n]);
  // idempotency: the request is an upper bound
  h.rejectTransfers([transfer(22n, 1n, 4n, 1000n, { flags: TF.balancing_debit })], ['exists']);
  h.rejectTransfers([transfer(22n, 1n, 4n, 70n, { flags: TF.balancing_debit })], ['exists']);
  h.rejectTransfers([transfer(22n, 1n, 4n, U64_MAX, { flags: TF.balancing_debit })], ['exists']);
  h.rejectTransfers([transfer(22n, 1n, 4n, 69n, { flags: TF.balancing_debit })], ['exists_with_different_amount']);
  // nothing left: a zero transfer succeeds
  h.transfers([transfer(23n, 1n, 4n, 5n, { flags: TF.balancing_debit })], ['created']);
  h.t.equal(h.transfer(23n).amount, 0n);
  // pending debits count; a pending balancing transfer reserves the clamped amount
  h.transfers([transfer(24n, 2n, 1n, 50n), pending(25n, 1n, 3n, 20n), transfer(26n, 1n, 4n, 1000n, { flags: TF.balancing_debit })], ['created', 'created', 'created']);
  h.t.equal(h.transfer(26n).amount, 30n);
  h.transfers([transfer(27n, 2n, 1n, 10n), pending(28n, 1n, 4n, 1000n, { flags: TF.balancing_debit })], ['created', 'created']);
  h.t.equal(h.transfer(28n).amount, 10n);
  h.balance(1n, [30n, 130n, 0n, 160n]);
  // less than the limit: the request itself
  h.transfers([transfer(29n, 2n, 1n, 10n), transfer(30n, 1n, 4n, 3n, { flags: TF.balancing_debit })], ['created', 'created']);
  h.t.equal(h.transfer(30n).amount, 3n);
  // balancing_credit: at most credits up to debits_posted
  h.transfers([transfer(31n, 5n, 3n, 80n), transfer(32n, 2n, 5n, 1000n, { flags: TF.balancing_credit })], ['created', 'created']);
  h.t.equal(h.transfer(32n).amount, 80n);
  h.balance(5n, [0n, 80n, 0n, 80n]);
  // on an account with a limit, balancing stays within it instead of failing
  h.accounts([account(6n, { flags: AF.debits_must_not_exceed_credits })], ['created']);
  h.transfers([transfer(33n, 2n, 6n, 100n), transfer(34n, 6n, 2n, U64_MAX, { flags: TF.balancing_debit })], ['created', 'created']);
  h.t.equal(h.transfer(34n).amount, 100n);
  // both flags: the smaller clamp wins
  h.transfers([transfer(35n, 3n, 4n, 5n)], ['created']);
  h.balance(3n, [0n, 5n, 20n, 110n]);
  h.balance(4n, [0n, 0n, 10n, 108n]);
  h.transfers([transfer(36n, 3n, 5n, 1000n, { flags: TF.balancing_debit | TF.balancing_credit })], ['created']);
  h.t.equal(h.transfer(36n).amount, 0n, 'account 5 has credits == debits: the credit clamp is 0');
});

scenario('history: getAccountBalances returns the balances right after each transfer', (h) => {
  h.accounts([account(1n, { flags: AF.history }), account(2n, { flags: AF.history }), account(3n)], ['created', 'created', 'created'], 1000n);
  const [t10] = h.transfers([transfer(10n, 1n, 2n, 100n)], ['created'], 2000n);
  const [t11] = h.transfers([pending(11n, 2n, 1n, 30n)], ['created'], 3000n);
  const [t12] = h.transfers([post(12n, 11n, 10n)], ['created'], 4000n);
  const [t13] = h.transfers([pending(13n, 1n, 3n, 5n, { timeout: 1 })], ['created'], 5000n);
  h.t.equal(h.l.pulse(t13 + NS), 1);
  // failures and rolled-back chains leave no entry
  h.rejectTransfers([transfer(15n, 1n, 2n, 1n, { ledger: 0 })], ['ledger_must_not_be_zero']);
  h.rejectTransfers([transfer(16n, 1n, 2n, 1n, { flags: TF.linked }), transfer(17n, 2n, 2n, 1n)], ['linked_event_failed', 'accounts_must_be_different']);
  const [t14] = h.transfers([transfer(14n, 3n, 1n, 7n)], ['created'], t13 + 2n * NS);
  const [t18] = h.transfers([pending(18n, 2n, 1n, 4n), voidPending(19n, 18n)], ['created', 'created'], t14 + 1000n);
  const t19 = t18 + 1n;

  const b = (debits_pending: bigint, debits_posted: bigint, credits_pending: bigint, credits_posted: bigint, timestamp: bigint) => ({
    debits_pending,
    debits_posted,
    credits_pending,
    credits_posted,
    timestamp,
  });
  const one = [
    b(0n, 100n, 0n, 0n, t10),
    b(0n, 100n, 30n, 0n, t11),
    b(0n, 100n, 0n, 10n, t12),
    b(5n, 100n, 0n, 10n, t13),
    // the expiry has no entry of its own: its release shows in the next one
    b(0n, 100n, 0n, 17n, t14),
    b(0n, 100n, 4n, 17n, t18),
    b(0n, 100n, 0n, 17n, t19),
  ];
  h.t.strictSame(h.l.getAccountBalances(accountFilter(1n)), one, 'account 1, oldest first');
  h.t.strictSame(h.l.getAccountBalances(accountFilter(2n)), [
    b(0n, 0n, 0n, 100n, t10),
    b(30n, 0n, 0n, 100n, t11),
    b(0n, 10n, 0n, 100n, t12),
    b(4n, 10n, 0n, 100n, t18),
    b(0n, 10n, 0n, 100n, t19),
  ]);
  h.t.strictSame(h.l.getAccountBalances(accountFilter(3n)), [], 'no history without the history flag');
  h.t.strictSame(h.l.getAccountBalances(accountFilter(99n)), [], 'unknown account');
  h.t.strictSame(
    h.l.getAccountBalances(accountFilter(1n, { flags: AccountFilterFlags.debits })),
    [one[0], one[3]],
    'debits only',
  );
  h.t.strictSame(
    h.l.getAccountBalances(accountFilter(1n, { flags: AccountFilterFlags.credits | AccountFilterFlags.debits | AccountFilterFlags.reversed, limit: 2 })),
    [one[6], one[5]],
    'newest first, limited',
  );
  h.t.strictSame(h.l.getAccountBalances(accountFilter(1n, { timestamp_min: t11, timestamp_max: t13 })), one.slice(1, 4), 'inclusive time range');
  h.t.strictSame(
    h.l.getAccountTransfers(accountFilter(1n)).map((x) => x.id),
    [10n, 11n, 12n, 13n, 14n, 18n, 19n],
    'one balance per transfer of the account',
  );
});

scenario('precedence across groups: the first status in enum order wins', (h) => {
  h.setup();
  h.accounts([account(6n, { flags: AF.debits_must_not_exceed_credits }), account(8n, { flags: AF.closed })], ['created', 'created']);
  h.transfers([transfer(20n, 2n, 1n, U64_MAX), pending(21n, 3n, 4n, 10n), post(22n, 21n)], ['created', 'created', 'created']);
  const cases: Array<[TransferInput, CreateTransferStatusName]> = [
    // reserved_flag < id_must_not_be_zero
    [transfer(0n, 0n, 0n, 0n, { flags: 1 << 12 }), 'reserved_flag'],
    // id_must_not_be_zero < flags_are_mutually_exclusive
    [transfer(0n, 1n, 2n, 0n, { flags: TF.pending | TF.post_pending_transfer }), 'id_must_not_be_zero'],
    // accounts_must_be_different < debit_account_not_found
    [transfer(10n, 98n, 98n, 1n), 'accounts_must_be_different'],
    // debit_account_not_found < accounts_must_have_the_same_ledger
    [transfer(11n, 98n, 9n, 1n), 'debit_account_not_found'],
    // pending_transfer_not_found < anything about the pending transfer
    [post(12n, 77n, 1n, { ledger: 5, code: 5 }), 'pending_transfer_not_found'],
    // pending_transfer_not_pending < pending_transfer_has_different_*
    [post(13n, 20n, 1n, { debit_account_id: 5n }), 'pending_transfer_not_pending'],
    // has_different_code < exceeds_pending_transfer_amount < already_posted
    [post(14n, 21n, 11n, { code: 2 }), 'pending_transfer_has_different_code'],
    [post(15n, 21n, 11n), 'exceeds_pending_transfer_amount'],
    // closed < overflows
    [transfer(16n, 8n, 1n, U64_MAX), 'debit_account_already_closed'],
    // overflows_credits_posted < exceeds_credits
    [transfer(17n, 6n, 1n, 1n), 'overflows_credits_posted'],
  ];
  for (const [event, status] of cases) h.rejectTransfers([event], [status]);
});

// =============================================================================================

t.test('every status of both enums has its own subtest, which reached it', async (t) => {
  CREATE_ACCOUNT_STATUS_NAMES.forEach((name, index) => {
    t.equal(CreateAccountStatus[name], index, `account status ${name} is numbered ${index}`);
    t.ok(declared_account.has(name), `account status ${name} has a subtest`);
    t.ok(reached_anywhere.has(`account:${name}`), `account status ${name} was reached`);
  });
  CREATE_TRANSFER_STATUS_NAMES.forEach((name, index) => {
    t.equal(CreateTransferStatus[name], index, `transfer status ${name} is numbered ${index}`);
    t.ok(declared_transfer.has(name), `transfer status ${name} has a subtest`);
    t.ok(reached_anywhere.has(`transfer:${name}`), `transfer status ${name} was reached`);
  });
  t.equal(declared_account.size, CREATE_ACCOUNT_STATUS_NAMES.length, 'one subtest per account status');
  t.equal(declared_transfer.size, CREATE_TRANSFER_STATUS_NAMES.length, 'one subtest per transfer status');
});
