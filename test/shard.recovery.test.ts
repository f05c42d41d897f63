// Shard durability: determinism of replay, recovery from checkpoint + log tail, refusal to start
// on a corrupt log, and expiry of pending transfers with no traffic.
//
// The workload runs through a real Shard (LMDB log and checkpoints in a temporary directory) with
// an injected clock that only moves when the test says so, so that two runs with the same inputs
// write byte-identical logs whatever their checkpoint settings. Pending transfers that fall due
// while no batch arrives are expired by the shard's own pulse; the runner waits for that pulse at
// a fixed point of the workload, which keeps it deterministic too.

import t, { type Test } from 'tap';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { open } from 'lmdb';
import { Shard } from '../src/shard/shard.ts';
import {
  type AccountInput,
  type CreateResult,
  type TransferInput,
  AccountFlags as AF,
  CreateAccountStatus as AS,
  CreateTransferStatus as TS,
  TransferFlags as TF,
  U64_MAX,
} from '../src/ledger/types.ts';
import { PendingStatus } from '../src/ledger/ledger.ts';
import { decodeEntry, encodeEntry, LogOp } from '../src/storage/log.ts';
import { stateHash } from '../src/storage/hash.ts';
import { account, pending, post, transfer, voidPending } from './support/builders.ts';
import {
  NS_PER_MS,
  Rng,
  VirtualClock,
  copyShardImage,
  replayHash,
  replayLog,
  sleep,
  tempDir,
  waitFor,
} from './support/shard-helpers.ts';

const NS_PER_S = 1_000_000_000n;
const HUGE = 1_000_000_000;
/** 2026-01-01T00:00:00Z: any fixed start works, the ledger only needs it to be positive. */
const CLOCK_START = 1_767_225_600n * NS_PER_S;
const SEED = Number(process.env.KEEL_SEED ?? 20260101);

const dirs: Array<() => void> = [];
function scratch(prefix: string): string {
  const { dir, cleanup } = tempDir(prefix);
  dirs.push(cleanup);
  return dir;
}
t.teardown(() => {
  for (const cleanup of dirs) cleanup();
});

// ---------------------------------------------------------------------------------------------
// The workload: a scripted part that touches every flag and status family, then a seeded random
// part for volume. Events may depend on the clock (imported timestamps), so steps build them.

type Step =
  | { kind: 'accounts'; advance_ns?: bigint; events: (now: bigint) => AccountInput[]; expect?: number[] }
  | { kind: 'transfers'; advance_ns?: bigint; events: (now: bigint) => TransferInput[]; expect?: number[] }
  /** Moves the clock and sends nothing: due pending transfers must expire by the shard's pulse. */
  | { kind: 'idle'; advance_ns: bigint };

const L2 = { ledger: 2 };

function scriptedSteps(): Step[] {
  const steps: Step[] = [];
  const accounts = (events: AccountInput[], expect?: number[], advance_ns?: bigint): void => {
    steps.push({ kind: 'accounts', events: () => events, expect, advance_ns });
  };
  const transfers = (events: TransferInput[], expect?: number[], advance_ns?: bigint): void => {
    steps.push({ kind: 'transfers', events: () => events, expect, advance_ns });
  };

  accounts(
    [
      account(1n, { flags: AF.history }),
      account(2n),
      account(3n, { flags: AF.debits_must_not_exceed_credits | AF.history }),
      account(4n, { flags: AF.credits_must_not_exceed_debits }),
      account(5n),
      account(6n, { flags: AF.history, user_data_64: 77n, user_data_32: 7, code: 2 }),
      account(7n, { flags: AF.closed }),
      account(20n, L2),
      account(21n, { ...L2, flags: AF.history | AF.debits_must_not_exceed_credits }),
      account(22n, L2),
    ],
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
  );
  accounts(
    [
      account(30n, { flags: AF.linked }),
      account(31n, { ledger: 0 }),
      account(32n, { flags: AF.linked }),
      account(33n),
      account(1n, { flags: AF.history }),
      account(2n, { flags: AF.history }),
      account(0n),
      account(34n, { flags: AF.debits_must_not_exceed_credits | AF.credits_must_not_exceed_debits }),
    ],
    [AS.linked_event_failed, AS.ledger_must_not_be_zero, 0, 0, AS.exists, AS.exists_with_different_flags, AS.id_must_not_be_zero, AS.flags_are_mutually_exclusive],
  );
  // Imported accounts: timestamps in the past, above every earlier one.
  steps.push({
    kind: 'accounts',
    events: (now) => [
      account(40n, { flags: AF.imported, timestamp: now - 1000n }),
      account(41n, { flags: AF.imported | AF.history, timestamp: now - 999n }),
    ],
    expect: [0, 0],
  });
  transfers(
    [
      transfer(100n, 2n, 3n, 1000n),
      transfer(101n, 4n, 1n, 500n),
      transfer(102n, 3n, 1n, 10_000n),
      transfer(103n, 6n, 1n, 25n, { user_data_64: 5n, user_data_32: 9, code: 2 }),
      transfer(104n, 20n, 21n, 300n, L2),
      transfer(105n, 1n, 1n, 1n),
      transfer(106n, 1n, 99n, 1n),
      transfer(107n, 1n, 20n, 1n),
      transfer(108n, 2n, 7n, 1n),
    ],
    [0, 0, TS.exceeds_credits, 0, 0, TS.accounts_must_be_different, TS.credit_account_not_found, TS.accounts_must_have_the_same_ledger, TS.credit_account_already_closed],
  );
  transfers(
    [
      transfer(102n, 3n, 1n, 1n),
      transfer(100n, 2n, 3n, 1000n),
      transfer(103n, 6n, 1n, 26n, { user_data_64: 5n, user_data_32: 9, code: 2 }),
      pending(110n, 1n, 2n, 50n, { timeout: 2 }),
      pending(111n, 2n, 6n, 30n, { timeout: 60 }),
      pending(112n, 3n, 1n, 100n),
      pending(113n, 1n, 4n, 40n),
      pending(114n, 21n, 22n, 100n, { ...L2, timeout: 1 }),
    ],
    [TS.id_already_failed, TS.exists, TS.exists_with_different_amount, 0, 0, 0, 0, 0],
  );
  transfers([post(115n, 112n, 60n), voidPending(116n, 113n), post(117n, 114n)], [0, 0, 0]);
  // 110 (2 s) falls due inside this jump; the next batch expires it before its own events.
  transfers([post(118n, 110n)], [TS.pending_transfer_expired], 3n * NS_PER_S);
  transfers(
    [
      transfer(120n, 3n, 2n, 1_000_000n, { flags: TF.balancing_debit }),
      transfer(121n, 1n, 4n, 1_000_000n, { flags: TF.balancing_credit }),
      transfer(122n, 20n, 21n, 5n, { ...L2, flags: TF.balancing_credit }),
    ],
    [0, 0, 0],
  );
  // Closing: 130 closes 5 until voided; 131 closes 6 until it expires.
  transfers(
    [pending(130n, 5n, 2n, 0n, { flags: TF.closing_debit }), pending(131n, 2n, 6n, 0n, { flags: TF.closing_credit, timeout: 1 })],
    [0, 0],
  );
  transfers(
    [transfer(132n, 5n, 1n, 1n), transfer(133n, 1n, 6n, 1n), voidPending(134n, 130n), post(135n, 131n)],
    [TS.debit_account_already_closed, TS.credit_account_already_closed, 0, TS.credit_account_already_closed],
  );
  transfers([transfer(136n, 5n, 1n, 1n), transfer(137n, 1n, 6n, 1n)], [0, 0], 2n * NS_PER_S);
  // Linked chains: one that holds, several that fail and must leave nothing behind.
  transfers(
    [
      transfer(140n, 1n, 2n, 10n, { flags: TF.linked }),
      transfer(141n, 2n, 6n, 10n, { flags: TF.linked }),
      pending(142n, 6n, 1n, 5n, { timeout: 10 }),
    ],
    [0, 0, 0],
  );
  transfers(
    [
      transfer(150n, 1n, 2n, 10n, { flags: TF.linked }),
      transfer(151n, 2n, 6n, 10n, { flags: TF.linked }),
      transfer(152n, 3n, 1n, 1_000_000n),
      transfer(153n, 1n, 2n, 1n),
      post(154n, 111n, U64_MAX, { flags: TF.linked }),
      transfer(155n, 21n, 20n, 10_000_000n, L2),
      voidPending(156n, 142n, 0n, { flags: TF.linked }),
      transfer(157n, 6n, 1n, 1n, { flags: TF.linked | TF.balancing_debit }),
      transfer(158n, 2n, 2n, 1n),
      transfer(159n, 1n, 2n, 1n, { flags: TF.linked }),
    ],
    [
      TS.linked_event_failed,
      TS.linked_event_failed,
      TS.exceeds_credits,
      0,
      TS.linked_event_failed,
      TS.exceeds_credits,
      TS.linked_event_failed,
      TS.linked_event_failed,
      TS.accounts_must_be_different,
      TS.linked_event_chain_open,
    ],
  );
  transfers([post(160n, 111n, 20n), voidPending(161n, 142n, 0n, { flags: TF.linked }), transfer(162n, 1n, 2n, 1n)], [0, 0, 0]);
  // No traffic while these fall due: only the pulse can release them.
  transfers([pending(170n, 1n, 2n, 40n, { timeout: 1 }), pending(171n, 20n, 22n, 7n, { ...L2, timeout: 1 })], [0, 0]);
  steps.push({ kind: 'idle', advance_ns: 2n * NS_PER_S });
  transfers([post(172n, 170n)], [TS.pending_transfer_expired]);
  // Imported transfers: in the past, after every transfer and after both accounts.
  steps.push({
    kind: 'transfers',
    events: (now) => [
      transfer(180n, 1n, 2n, 3n, { flags: TF.imported, timestamp: now - 1000n }),
      transfer(181n, 2n, 41n, 4n, { flags: TF.imported, timestamp: now - 999n }),
    ],
    expect: [0, 0],
  });
  return steps;
}

const L1_ACCOUNTS = [1n, 2n, 3n, 4n, 5n, 6n, 32n, 33n, 40n, 41n];
const L2_ACCOUNTS = [20n, 21n, 22n];

/**
 * Volume: random transfers of every kind except new pending transfers inside linked chains
 * (see the dedicated test below). The same seed gives the same steps.
 */
function randomSteps(seed: number, batches: number): Step[] {
  const rng = new Rng(seed);
  const steps: Step[] = [];
  const pendings: Array<{ id: bigint; amount: bigint }> = [];
  const earlier: TransferInput[] = [];
  let next_id = 10_000n;
  const pair = (): [bigint, bigint, number] => {
    const pool = rng.chance(0.8) ? L1_ACCOUNTS : L2_ACCOUNTS;
    const dr = rng.pick(pool);
    let cr = rng.pick(pool);
    while (cr === dr) cr = rng.pick(pool);
    return [dr, cr, pool === L1_ACCOUNTS ? 1 : 2];
  };
  for (let b = 0; b < batches; b++) {
    const events: TransferInput[] = [];
    const count = rng.int(3, 24);
    while (events.length < count) {
      const roll = rng.next();
      const id = next_id++;
      if (roll < 0.4) {
        const [dr, cr, ledger] = pair();
        events.push(transfer(id, dr, cr, BigInt(rng.int(1, 200)), { ledger, user_data_32: rng.int(0, 3) }));
      } else if (roll < 0.55) {
        const [dr, cr, ledger] = pair();
        const amount = BigInt(rng.int(1, 200));
        events.push(pending(id, dr, cr, amount, { ledger, timeout: rng.pick([0, 0, 1, 2, 3]) }));
        pendings.push({ id, amount });
      } else if (roll < 0.7 && pendings.length > 0) {
        const p = rng.pick(pendings);
        if (rng.chance(0.6)) events.push(post(id, p.id, rng.chance(0.5) ? U64_MAX : BigInt(rng.int(1, Number(p.amount)))));
        else events.push(voidPending(id, p.id));
      } else if (roll < 0.78) {
        const [dr, cr, ledger] = pair();
        const flags = rng.chance(0.5) ? TF.balancing_debit : TF.balancing_credit;
        events.push(transfer(id, dr, cr, BigInt(rng.int(1, 5000)), { ledger, flags }));
      } else if (roll < 0.9 && count - events.length >= 2) {
        const length = Math.min(rng.int(2, 4), count - events.length);
        const fails = rng.chance(0.5);
        for (let k = 0; k < length; k++) {
          const last = k === length - 1;
          const linked = last ? 0 : TF.linked;
          const chain_id = k === 0 ? id : next_id++;
          if (last && fails) {
            // 3 may not debit more than its credits, and 10^12 is more than it will ever hold.
            events.push(transfer(chain_id, 3n, 1n, 1_000_000_000_000n, { flags: linked }));
          } else if (k > 0 && pendings.length > 0 && rng.chance(0.3)) {
            events.push(post(chain_id, rng.pick(pendings).id, U64_MAX, { flags: linked }));
          } else {
            const [dr, cr, ledger] = pair();
            events.push(transfer(chain_id, dr, cr, BigInt(rng.int(1, 50)), { ledger, flags: linked }));
          }
        }
      } else if (earlier.length > 0) {
        const again = rng.pick(earlier);
        const changed = again.amount < 1_000_000n ? { ...again, amount: again.amount + 1n } : { ...again, user_data_32: again.user_data_32 + 1 };
        events.push(rng.chance(0.5) ? again : changed);
      } else {
        const [dr, cr, ledger] = pair();
        events.push(transfer(id, dr, cr, 1n, { ledger }));
      }
    }
    for (const e of events) if (rng.chance(0.1)) earlier.push(e);
    // Odd nanoseconds: deadlines then never fall exactly on a batch boundary by accident.
    const advance_ns = BigInt(rng.int(0, 700)) * NS_PER_MS + BigInt(rng.int(0, 999_999));
    steps.push({ kind: 'transfers', events: () => events, advance_ns });
  }
  return steps;
}

function workload(): Step[] {
  return [...scriptedSteps(), ...randomSteps(SEED, 45)];
}

interface RunOutcome {
  /** Per step: the statuses, or 'pulse' for a pulse the runner waited for. */
  trace: string[];
  hash: string;
  head: number;
  pulses: number;
}

/**
 * Runs steps through a shard. After a step, if a pending transfer is already due on the clock
 * but was not expired by a batch, the shard's pulse will expire it: wait for that pulse here,
 * before the next step, so that it lands at the same log position in every run.
 */
async function runSteps(shard: Shard, clock: VirtualClock, steps: readonly Step[], check?: (step: Step, result: CreateResult, index: number) => void): Promise<RunOutcome> {
  const trace: string[] = [];
  let pulses = 0;
  for (let index = 0; index < steps.length; index++) {
    const step = steps[index];
    clock.advance(step.kind === 'idle' ? step.advance_ns : (step.advance_ns ?? NS_PER_MS));
    if (step.kind !== 'idle') {
      const result = step.kind === 'accounts' ? await shard.createAccounts(step.events(clock.now)) : await shard.createTransfers(step.events(clock.now));
      trace.push(result.status.join(','));
      check?.(step, result, index);
    }
    for (;;) {
      const next = shard.ledger.nextExpiry();
      if (next === 0n || next > clock.now) break;
      const head = shard.head_position;
      const pulsed = await waitFor(() => shard.durable_position > head, 10_000);
      if (!pulsed) throw new Error(`step ${index}: a pending transfer is due but no pulse came within 10 s`);
      trace.push('pulse');
      pulses++;
    }
  }
  return { trace, hash: shard.stateHash(), head: shard.head_position, pulses };
}

function statusesMatch(t: Test): (step: Step, result: CreateResult, index: number) => void {
  return (step, result, index) => {
    if (step.kind === 'idle' || step.expect === undefined) return;
    t.same(result.status, step.expect, `step ${index} statuses`);
  };
}

// ---------------------------------------------------------------------------------------------

t.test('determinism: live state == full log replay == checkpoint recovery', async (t) => {
  const steps = workload();
  t.comment(`seed ${SEED} (KEEL_SEED), ${steps.length} steps`);

  // Run A: no checkpoint, no pruning, until close.
  const dir_a = scratch('det-a');
  const clock_a = new VirtualClock(CLOCK_START);
  const shard_a = Shard.open({ dir: dir_a, clock: clock_a.fn, checkpoint_entries: HUGE, checkpoint_objects: HUGE, log_retain_entries: HUGE });
  const run_a = await runSteps(shard_a, clock_a, steps, statusesMatch(t));
  t.equal(shard_a.checkpointed_position, 0, 'run A took no checkpoint');
  t.ok(run_a.pulses >= 1, `the workload expired pending transfers by pulse (${run_a.pulses})`);

  // What the scripted part promised about balances.
  const [a5, a6, a7] = shard_a.ledger.lookupAccounts([5n, 6n, 7n]);
  t.equal(a5.flags & AF.closed, 0, 'voiding the closing transfer reopened account 5');
  t.equal(a7.flags & AF.closed, AF.closed, 'account 7 was created closed and stays closed');
  t.equal(a6.flags & AF.closed, 0, 'expiry of the closing transfer reopened account 6');
  t.equal(shard_a.ledger.pending.get(170n)?.status, PendingStatus.expired, '170 expired by pulse');
  t.equal(shard_a.ledger.pending.get(111n)?.status, PendingStatus.posted, '111 survived the failed chain and was posted later');
  t.equal(shard_a.ledger.pending.get(142n)?.status, PendingStatus.voided, '142 survived the failed chain and was voided later');
  for (const id of [150n, 151n, 152n, 154n, 156n, 157n, 159n]) t.notOk(shard_a.ledger.transfers.has(id), `failed chain member ${id} absent`);
  t.ok((shard_a.ledger.historyOf(1n)?.length ?? 0) > 0 && (shard_a.ledger.historyOf(41n)?.length ?? 0) > 0, 'history accounts have history');
  t.ok(shard_a.ledger.transfers.has(180n) && shard_a.ledger.accounts.has(40n), 'imported transfers and accounts are in');

  const hash_a = run_a.hash;
  t.equal(shard_a.stateHash(), hash_a);
  await shard_a.close();

  const replay = await replayLog(dir_a);
  t.equal(replay.entries, run_a.head, 'every log entry replayed');
  t.equal(replay.ops[LogOp.pulse], run_a.pulses, 'the pulses are in the log');
  t.equal(replay.ledger.transfers.size, shard_a.ledger.transfers.size);
  t.equal(replay.ledger.last_timestamp, shard_a.ledger.last_timestamp);
  t.equal((await replayHash(dir_a)), hash_a, 'replaying the whole log from position 1 gives the live state hash');

  const reopened = Shard.open({ dir: dir_a, pulse: false });
  t.equal(reopened.recovery.checkpoint_position, run_a.head, 'close wrote a checkpoint at the head');
  t.equal(reopened.recovery.replayed_entries, 0);
  t.equal(reopened.stateHash(), hash_a, 'reopen from the closing checkpoint: same hash');
  await reopened.close();

  // Without the checkpoint: recovery from the log alone.
  rmSync(join(dir_a, 'state'), { recursive: true, force: true });
  const from_log = Shard.open({ dir: dir_a, pulse: false });
  t.equal(from_log.recovery.checkpoint_position, 0);
  t.equal(from_log.recovery.replayed_entries, run_a.head);
  t.equal(from_log.stateHash(), hash_a, 'reopen from the log alone: same hash');
  await from_log.close();

  // Runs B and C: the same inputs and clock, checkpoints taken along the way (B also prunes the
  // log). Just before the last steps, an explicit checkpoint; then the last steps; then a copy of
  // the directory as a crash would leave it: recovery from that checkpoint plus a real tail.
  const variants = [
    { name: 'B', options: { checkpoint_entries: 3, checkpoint_objects: HUGE, log_retain_entries: 4 } },
    { name: 'C', options: { checkpoint_entries: HUGE, checkpoint_objects: 150, log_retain_entries: HUGE } },
  ];
  // Short enough not to reach either threshold: at most 3 entries and 3 * 24 * 2 objects.
  const TAIL = 3;
  for (const variant of variants) {
    await t.test(`run ${variant.name}: ${JSON.stringify(variant.options)}`, async (t) => {
      const dir = scratch(`det-${variant.name}`);
      const clock = new VirtualClock(CLOCK_START);
      const shard = Shard.open({ dir, clock: clock.fn, ...variant.options });
      const head_part = await runSteps(shard, clock, steps.slice(0, steps.length - TAIL));
      t.ok(shard.checkpointed_position > 0, `checkpoints were taken (last at ${shard.checkpointed_position})`);
      // checkpoint() hands back one already in flight, which may cover less than the head.
      for (let i = 0; i < 5 && shard.checkpointed_position < shard.head_position; i++) await shard.checkpoint();
      const checkpoint_at = shard.checkpointed_position;
      t.equal(checkpoint_at, shard.head_position, 'the explicit checkpoint covers the head');
      const tail_part = await runSteps(shard, clock, steps.slice(steps.length - TAIL));
      const trace = [...head_part.trace, ...tail_part.trace];
      t.same(trace, run_a.trace, 'same statuses and pulses as run A, step by step');
      t.equal(tail_part.head, run_a.head, 'same log length as run A');
      t.equal(shard.stateHash(), hash_a, 'live state hash equals run A');
      t.equal(shard.checkpointed_position, checkpoint_at, 'no checkpoint ran during the tail');

      const crash = scratch(`det-${variant.name}-crash`);
      copyShardImage(dir, crash);
      await shard.close();

      const recovered = Shard.open({ dir: crash, pulse: false });
      t.equal(recovered.recovery.checkpoint_position, checkpoint_at, 'recovered from the mid-run checkpoint');
      t.equal(recovered.recovery.replayed_entries, run_a.head - checkpoint_at, 'and replayed the tail');
      t.equal(recovered.stateHash(), hash_a, 'checkpoint + tail: same hash as run A');
      await recovered.close();

      const again = Shard.open({ dir, pulse: false });
      t.equal(again.recovery.replayed_entries, 0);
      t.equal(again.stateHash(), hash_a, 'clean reopen: same hash as run A');
      await again.close();
    });
  }
});

t.test('accounts with no transfers yet survive a checkpoint', async (t) => {
  // Every account must reach the checkpoint that covers its creation, whether or not a transfer
  // has touched it: recovery starts from that checkpoint and never replays the creation again.
  const dir = scratch('untouched-accounts');
  const clock = new VirtualClock(CLOCK_START);
  const shard = Shard.open({ dir, clock: clock.fn, checkpoint_entries: HUGE, log_retain_entries: HUGE, pulse: false });
  t.same((await shard.createAccounts([account(1n), account(2n), account(3n, { flags: AF.history })])).status, [0, 0, 0]);
  clock.advance(NS_PER_MS);
  t.same((await shard.createTransfers([transfer(10n, 1n, 2n, 5n)])).status, [0], 'touches 1 and 2, not 3');
  const live = shard.stateHash();
  await shard.close();
  t.equal(await replayHash(dir), live, 'the log alone replays to the live state');
  const reopened = Shard.open({ dir, clock: clock.fn, pulse: false });
  t.same(
    reopened.ledger.lookupAccounts([1n, 2n, 3n]).map((a) => a.id),
    [1n, 2n, 3n],
    'all three accounts are there after reopen',
  );
  t.equal(reopened.stateHash(), live, 'reopen: same state hash');
  clock.advance(NS_PER_MS);
  t.same((await reopened.createTransfers([transfer(11n, 2n, 3n, 1n)])).status, [TS.created], 'and 3 can take a transfer');
  await reopened.close();
});

t.test('a failed linked chain that created a pending transfer survives checkpoint and reopen', async (t) => {
  // Regression (fixed in 75f04d6): the chain's pending state was rolled back but stayed in the
  // checkpoint's change set, so the checkpoint threw while encoding it, out of createTransfers.
  const dir = scratch('chain-pending');
  const clock = new VirtualClock(CLOCK_START);
  const shard = Shard.open({ dir, clock: clock.fn, checkpoint_entries: 3, log_retain_entries: HUGE, pulse: false });
  await shard.createAccounts([account(1n), account(2n), account(3n, { flags: AF.debits_must_not_exceed_credits })]);
  await shard.createTransfers([transfer(9n, 1n, 2n, 7n), transfer(8n, 2n, 3n, 1n)]);
  clock.advance(NS_PER_MS);
  let result: CreateResult | null = null;
  try {
    result = await shard.createTransfers([pending(10n, 1n, 2n, 5n, { flags: TF.linked, timeout: 5 }), transfer(11n, 3n, 1n, 100n)]);
  } catch (error) {
    t.fail(`createTransfers threw after applying and logging the batch: ${(error as Error).message}`);
  }
  if (result !== null) t.same(result.status, [TS.linked_event_failed, TS.exceeds_credits]);
  t.notOk(shard.ledger.transfers.has(10n), 'the chain left no transfer');
  t.notOk(shard.ledger.pending.has(10n), 'the chain left no pending state');
  clock.advance(NS_PER_MS);
  let later_ok = true;
  try {
    await shard.createTransfers([transfer(12n, 2n, 1n, 3n)]);
  } catch (error) {
    later_ok = false;
    t.fail(`a later batch failed: ${(error as Error).message}`);
  }
  t.ok(later_ok, 'the shard keeps serving');
  const live = shard.stateHash();
  try {
    await shard.close();
  } catch (error) {
    t.fail(`close failed: ${(error as Error).message}`);
  }
  t.equal(await replayHash(dir), live, 'the log replays to the live state');
  let reopened: Shard | null = null;
  try {
    reopened = Shard.open({ dir, pulse: false });
  } catch (error) {
    t.fail(`reopen failed: ${(error as Error).message}`);
  }
  if (reopened !== null) {
    t.equal(reopened.stateHash(), live, 'checkpoint + tail recovery gives the live state');
    t.same(reopened.ledger.lookupAccounts([1n]).map((a) => a.debits_posted), [7n]);
    await reopened.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Corruption: a shard that cannot verify the log entries it must replay refuses to start.

interface Image {
  dir: string;
  checkpoint: number;
  head: number;
  hash: string;
}

/**
 * A crash image: a checkpoint at `checkpoint`, then a tail of log entries up to `head` that
 * recovery must replay. Built once; every case works on its own copy.
 */
async function crashImage(): Promise<Image> {
  const work = scratch('corrupt-src');
  const clock = new VirtualClock(CLOCK_START);
  const shard = Shard.open({ dir: work, clock: clock.fn, checkpoint_entries: HUGE, checkpoint_objects: HUGE, log_retain_entries: HUGE, pulse: false });
  await shard.createAccounts([account(1n), account(2n), account(3n, { flags: AF.history })]);
  let id = 100n;
  const batch = async (): Promise<void> => {
    clock.advance(NS_PER_MS);
    const events = [transfer(id++, 1n, 2n, 10n), transfer(id++, 2n, 3n, 4n), pending(id++, 3n, 1n, 1n)];
    await shard.createTransfers(events);
  };
  for (let i = 0; i < 3; i++) await batch();
  await shard.checkpoint();
  const checkpoint = shard.checkpointed_position;
  for (let i = 0; i < 5; i++) await batch();
  const image = scratch('corrupt-image');
  copyShardImage(work, image);
  const out = { dir: image, checkpoint, head: shard.head_position, hash: shard.stateHash() };
  await shard.close();
  return out;
}

async function withLog<T>(dir: string, fn: (entries: { get(key: number): Buffer | undefined; put(key: number, value: Buffer): Promise<boolean>; remove(key: number): Promise<boolean> }) => Promise<T>): Promise<T> {
  const env = open({ path: join(dir, 'log'), maxDbs: 4 });
  const entries = env.openDB<Buffer, number>({ name: 'entries', encoding: 'binary' });
  try {
    return await fn({
      get: (key) => {
        const value = entries.get(key);
        return value === undefined ? undefined : Buffer.from(value);
      },
      put: (key, value) => entries.put(key, value),
      remove: (key) => entries.remove(key),
    });
  } finally {
    await env.flushed;
    await env.close();
  }
}

interface Corruption {
  name: string;
  /** Where the error must point. */
  position: (image: Image) => number;
  reason: RegExp;
  /** Without the checkpoint: the whole log is the tail. */
  drop_checkpoint?: boolean;
  apply: (image: Image, dir: string) => Promise<void>;
}

function flip(offset: number): (bytes: Buffer) => Buffer {
  return (bytes) => {
    const out = Buffer.from(bytes);
    out[offset] ^= 0x5a;
    return out;
  };
}

async function rewrite(dir: string, position: number, change: (bytes: Buffer) => Buffer): Promise<void> {
  await withLog(dir, async (entries) => {
    const bytes = entries.get(position);
    if (bytes === undefined) throw new Error(`no entry ${position}`);
    await entries.put(position, change(bytes));
  });
}

/** Re-encodes an entry with valid header and body checksums but a predecessor checksum that is not its predecessor's. */
function breakChain(bytes: Buffer): Buffer {
  const entry = decodeEntry(bytes, undefined);
  return encodeEntry(entry.position, entry.epoch, entry.op, entry.now_ns, entry.count, entry.body, (entry.prev_checksum ^ 0x1234_5678) >>> 0);
}

const BODY = 56 + 3; // a byte inside the first event of the body

const corruptions: Corruption[] = [
  { name: 'a flipped body byte in the middle of the tail', position: (i) => i.checkpoint + 2, reason: /body checksum/, apply: (i, d) => rewrite(d, i.checkpoint + 2, flip(BODY)) },
  { name: 'a flipped body byte in the first tail entry', position: (i) => i.checkpoint + 1, reason: /body checksum/, apply: (i, d) => rewrite(d, i.checkpoint + 1, flip(BODY)) },
  { name: 'a flipped body byte in the head entry', position: (i) => i.head, reason: /body checksum/, apply: (i, d) => rewrite(d, i.head, flip(BODY + 40)) },
  { name: 'a flipped header byte (engine time)', position: (i) => i.checkpoint + 3, reason: /header checksum/, apply: (i, d) => rewrite(d, i.checkpoint + 3, flip(26)) },
  {
    name: 'a deleted entry in the middle of the tail (gap)',
    position: (i) => i.checkpoint + 2,
    reason: /missing/,
    apply: (i, d) => withLog(d, async (entries) => void (await entries.remove(i.checkpoint + 2))),
  },
  {
    name: 'a deleted first tail entry',
    position: (i) => i.checkpoint + 1,
    reason: /missing/,
    apply: (i, d) => withLog(d, async (entries) => void (await entries.remove(i.checkpoint + 1))),
  },
  { name: 'an entry that does not follow its predecessor', position: (i) => i.checkpoint + 3, reason: /chain checksum/, apply: (i, d) => rewrite(d, i.checkpoint + 3, breakChain) },
  { name: 'a first tail entry that does not follow the checkpoint', position: (i) => i.checkpoint + 1, reason: /chain checksum/, apply: (i, d) => rewrite(d, i.checkpoint + 1, breakChain) },
  {
    name: 'a log that ends below the checkpoint',
    position: (i) => i.checkpoint,
    reason: /log ends at/,
    apply: (i, d) =>
      withLog(d, async (entries) => {
        for (let p = i.checkpoint; p <= i.head; p++) await entries.remove(p);
      }),
  },
  { name: 'no checkpoint, a flipped body byte in entry 2', position: () => 2, reason: /body checksum/, drop_checkpoint: true, apply: (_i, d) => rewrite(d, 2, flip(BODY)) },
  {
    name: 'no checkpoint, entry 1 deleted',
    position: () => 1,
    reason: /missing/,
    drop_checkpoint: true,
    apply: (_i, d) => withLog(d, async (entries) => void (await entries.remove(1))),
  },
  { name: 'no checkpoint, entry 2 does not follow entry 1', position: () => 2, reason: /chain checksum/, drop_checkpoint: true, apply: (_i, d) => rewrite(d, 2, breakChain) },
];

interface KeelError extends Error {
  code?: unknown;
  position?: unknown;
}

t.test('corruption: the shard refuses to start and names the entry', async (t) => {
  const image = await crashImage();
  t.ok(image.head - image.checkpoint >= 4, `image: checkpoint at ${image.checkpoint}, head ${image.head}`);

  const clean = scratch('corrupt-clean');
  copyShardImage(image.dir, clean);
  const ok = Shard.open({ dir: clean, pulse: false });
  t.equal(ok.recovery.checkpoint_position, image.checkpoint);
  t.equal(ok.recovery.replayed_entries, image.head - image.checkpoint);
  t.equal(ok.stateHash(), image.hash, 'the untouched image recovers to the state it was taken from');
  await ok.close();

  for (const c of corruptions) {
    await t.test(c.name, async (t) => {
      const dir = scratch('corrupt');
      copyShardImage(image.dir, dir);
      if (c.drop_checkpoint === true) rmSync(join(dir, 'state'), { recursive: true, force: true });
      const original = await withLog(dir, async (entries) => {
        const saved = new Map<number, Buffer>();
        for (let p = 1; p <= image.head; p++) {
          const bytes = entries.get(p);
          if (bytes !== undefined) saved.set(p, bytes);
        }
        return saved;
      });
      await c.apply(image, dir);
      const position = c.position(image);
      for (const attempt of [1, 2]) {
        let shard: Shard | null = null;
        let error: KeelError | null = null;
        try {
          shard = Shard.open({ dir, pulse: false });
        } catch (caught) {
          error = caught as KeelError;
        }
        if (shard !== null) {
          t.fail(`attempt ${attempt}: the shard started on a corrupt log (hash ${shard.stateHash() === image.hash ? 'equal' : 'different'})`);
          await shard.close();
          continue;
        }
        t.equal(error?.code, 'log_corrupt', `attempt ${attempt}: code log_corrupt (${error?.message})`);
        t.equal(error?.position, position, `attempt ${attempt}: names position ${position}`);
        t.match(error?.message ?? '', new RegExp(`log entry ${position}\\b`), 'the message names the position');
        t.match(error?.message ?? '', c.reason);
      }
      // Refusing changed nothing on disk: undo the damage and the shard starts with the full state.
      await withLog(dir, async (entries) => {
        for (const [p, bytes] of original) await entries.put(p, bytes);
      });
      const repaired = Shard.open({ dir, pulse: false });
      t.equal(repaired.stateHash(), image.hash, 'after undoing the damage the shard recovers the full state');
      t.equal(repaired.head_position, image.head);
      await repaired.close();
    });
  }
});

t.test('corruption: a checkpoint must belong to the log it sits on', async (t) => {
  // After a clean close the checkpoint covers the head and there is no tail to replay. Replace
  // the head entry by a different, well-formed one that follows its predecessor: the log now
  // describes a different history from the checkpoint's (its checksum no longer matches the one
  // the checkpoint recorded), so the shard cannot tell which one is right and must not start.
  const dir = scratch('foreign-checkpoint');
  const clock = new VirtualClock(CLOCK_START);
  const shard = Shard.open({ dir, clock: clock.fn, checkpoint_entries: HUGE, log_retain_entries: HUGE, pulse: false });
  await shard.createAccounts([account(1n), account(2n)]);
  clock.advance(NS_PER_MS);
  await shard.createTransfers([transfer(10n, 1n, 2n, 5n)]);
  clock.advance(NS_PER_MS);
  await shard.createTransfers([transfer(11n, 1n, 2n, 6n)]);
  const head = shard.head_position;
  await shard.close();
  await rewrite(dir, head, (bytes) => {
    const entry = decodeEntry(bytes, undefined);
    const body = Buffer.from(entry.body);
    body.writeBigUInt64LE(600n, 24); // amount 6 -> 600
    return encodeEntry(entry.position, entry.epoch, entry.op, entry.now_ns, entry.count, body, entry.prev_checksum);
  });
  const log_state = (await replayLog(dir)).ledger.lookupAccounts([1n])[0].debits_posted;
  t.equal(log_state, 605n, 'the rewritten log is well-formed and replays to a different state');
  let opened: Shard | null = null;
  let error: KeelError | null = null;
  try {
    opened = Shard.open({ dir, pulse: false });
  } catch (caught) {
    error = caught as KeelError;
  }
  if (opened !== null) {
    t.fail(`the shard started, serving debits_posted ${opened.ledger.lookupAccounts([1n])[0].debits_posted} from a checkpoint that does not match log entry ${head} (the log says 605)`);
    await opened.close();
  } else {
    t.equal(error?.code, 'log_corrupt', error?.message ?? 'no error');
    t.equal(error?.position, head);
  }
});

// ---------------------------------------------------------------------------------------------
// Expiry with no traffic, on the real clock.

t.test('expiry pulse: a pending transfer expires with no request, and stays expired', async (t) => {
  const dir = scratch('pulse');
  const shard = Shard.open({ dir, checkpoint_entries: HUGE, log_retain_entries: HUGE });
  t.same((await shard.createAccounts([account(1n), account(2n, { flags: AF.history })])).status, [0, 0]);
  t.same((await shard.createTransfers([pending(10n, 1n, 2n, 100n, { timeout: 1 }), pending(11n, 1n, 2n, 5n)])).status, [0, 0]);
  const head = shard.head_position;
  t.equal(shard.ledger.accounts.get(1n)?.debits_pending, 105n);
  const started = Date.now();
  // Watch memory only: no request of any kind reaches the shard while it expires the transfer.
  const released = await waitFor(() => shard.ledger.accounts.get(1n)?.debits_pending === 5n, 5_000, 20);
  const waited = Date.now() - started;
  t.ok(released, `released after ${waited} ms`);
  t.ok(waited >= 800, 'not before the timeout');
  t.ok(await waitFor(() => shard.durable_position === head + 1, 2_000), 'one pulse entry, durable');
  t.equal(shard.ledger.pending.get(10n)?.status, PendingStatus.expired);
  t.equal(shard.ledger.pending.get(11n)?.status, PendingStatus.pending, 'a pending transfer without timeout stays');
  const [a1, a2] = await shard.lookupAccounts([1n, 2n]);
  t.same([a1.debits_pending, a2.credits_pending], [5n, 5n]);
  t.same((await shard.createTransfers([post(12n, 10n)])).status, [TS.pending_transfer_expired]);
  const live = shard.stateHash();
  await shard.close();

  const replay = await replayLog(dir);
  t.equal(replay.ops[LogOp.pulse], 1, 'the pulse is a log entry');
  t.equal(stateHash(replay.ledger), live, 'replay reproduces the expiry');

  const reopened = Shard.open({ dir });
  t.equal(reopened.stateHash(), live, 'reopen: same state');
  const [b1, b2] = await reopened.lookupAccounts([1n, 2n]);
  t.same([b1.debits_pending, b2.credits_pending], [5n, 5n], 'still released after reopen');
  t.equal(reopened.ledger.nextExpiry(), 0n, 'nothing left to expire');
  await reopened.close();
});

t.test('expiry pulse: a transfer that fell due while the shard was down expires after reopen, with no request', async (t) => {
  const dir = scratch('pulse-down');
  const shard = Shard.open({ dir });
  await shard.createAccounts([account(1n), account(2n)]);
  await shard.createTransfers([pending(10n, 1n, 2n, 100n, { timeout: 1 })]);
  await shard.close();
  await sleep(1_200);
  const reopened = Shard.open({ dir });
  const head = reopened.head_position;
  t.equal(reopened.ledger.accounts.get(1n)?.debits_pending, 100n, 'restored as pending');
  t.ok(await waitFor(() => reopened.ledger.accounts.get(1n)?.debits_pending === 0n, 2_000, 10), 'released soon after reopen');
  t.ok(await waitFor(() => reopened.durable_position === head + 1, 2_000), 'by a logged pulse');
  const live = reopened.stateHash();
  await reopened.close();
  const again = Shard.open({ dir, pulse: false });
  t.equal(again.stateHash(), live);
  t.equal(again.ledger.accounts.get(1n)?.debits_pending, 0n, 'still released');
  await again.close();
});
