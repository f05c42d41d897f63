// The process test/shard.crash.test.ts kills: opens a shard and applies the crash workload until
// it is killed, printing one JSON line per batch once the shard acknowledges it (fsynced).
//
//   node --import=tsx test/support/crash-child.ts <dir> <seed> <run>
//
// Lines are written synchronously (stdout is a pipe), so a line the parent reads is a batch the
// shard acknowledged before the kill.

import { writeSync } from 'node:fs';
import { Shard } from '../../src/shard/shard.ts';
import { ACCOUNTS, batchFor, type AckLine, type ReadyLine } from './crash-workload.ts';

const [dir, seed_arg, run_arg] = process.argv.slice(2);
if (dir === undefined || seed_arg === undefined || run_arg === undefined) {
  process.stderr.write('usage: crash-child.ts <dir> <seed> <run>\n');
  process.exit(2);
}
const seed = Number(seed_arg);
const run = Number(run_arg);
/** Batches in flight at once: later ones join the earlier ones' commit (group commit). */
const IN_FLIGHT = 3;
const BATCHES_MAX = 99_999;

function emit(line: AckLine | ReadyLine): void {
  writeSync(1, `${JSON.stringify(line)}\n`);
}

function die(error: unknown): never {
  process.stderr.write(`crash-child run ${run}: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
}

async function main(): Promise<void> {
  const shard = Shard.open({ dir, checkpoint_entries: 8, log_retain_entries: 1_000_000_000 });
  // Accounts 1..N on every start: created the first time, `exists` afterwards.
  const accounts = await shard.createAccounts(ACCOUNTS);
  emit({ type: 'ready', run, accounts: accounts.status, recovery: shard.recovery });

  let k = 0;
  const inflight = new Set<Promise<void>>();
  while (k < BATCHES_MAX) {
    const batch = batchFor(seed, run, k);
    const this_k = k++;
    const done = shard.createTransfers(batch.events).then(
      (result) => emit({ type: 'ack', run, k: this_k, ids: batch.events.map((e) => e.id.toString()), status: result.status }),
      die,
    );
    inflight.add(done);
    void done.finally(() => inflight.delete(done));
    if (inflight.size >= IN_FLIGHT) await Promise.race(inflight);
  }
  await Promise.all(inflight);
  await shard.close();
}

main().catch(die);
