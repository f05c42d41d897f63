// A failed log write stops acknowledgements: no later entry is acknowledged over the gap, and the
// shard stops serving (a restart recovers from what is on disk).

import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LogOp, LogStore } from '../src/storage/log.ts';
import { Shard } from '../src/shard/shard.ts';
import { account, transfer } from './support/builders.ts';

type Put = (key: number, value: Buffer) => Promise<boolean> & { flushed?: Promise<void> };

/** Makes the n-th put (1-based) from now fail like a full disk; the others go through. */
function failNthPut(log: LogStore, n: number): void {
  const entries = (log as unknown as { entries: { put: Put } }).entries;
  const real = entries.put.bind(entries);
  let count = 0;
  entries.put = (key, value) => {
    count++;
    if (count !== n) return real(key, value);
    const failed = Promise.reject(new Error('ENOSPC: no space left on device')) as Promise<boolean> & { flushed?: Promise<void> };
    failed.catch(() => {});
    failed.flushed = failed as unknown as Promise<void>;
    return failed;
  };
}

t.test('an entry after a failed one is never acknowledged', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'keel-logfail-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const log = LogStore.open({ path: dir });
  failNthPut(log, 2);
  const [first, second, third] = await Promise.allSettled([
    log.append(1, LogOp.pulse, 1n, 0, Buffer.alloc(0)),
    log.append(1, LogOp.pulse, 2n, 0, Buffer.alloc(0)),
    log.append(1, LogOp.pulse, 3n, 0, Buffer.alloc(0)),
  ]);
  t.same(first, { status: 'fulfilled', value: 1 });
  t.equal(second.status, 'rejected');
  t.equal(third.status, 'rejected', 'the third entry was written, but the second is missing: no acknowledgement');
  t.match(String((third as PromiseRejectedResult).reason), /ENOSPC/);
  await t.rejects(log.append(1, LogOp.pulse, 4n, 0, Buffer.alloc(0)), /ENOSPC/, 'and nothing after');
  await log.close();
});

t.test('a shard whose log write failed stops serving', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'keel-logfail-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const shard = Shard.open({ dir, pulse: false });
  await shard.createAccounts([account(1n), account(2n)]);
  failNthPut((shard as unknown as { log: LogStore }).log, 1);
  const [failed, later] = await Promise.allSettled([
    shard.createTransfers([transfer(10n, 1n, 2n, 5n)]),
    shard.createTransfers([transfer(11n, 1n, 2n, 5n)]),
  ]);
  t.equal(failed.status, 'rejected');
  t.equal(later.status, 'rejected', 'a batch queued behind the failed one is not acknowledged');
  t.throws(() => shard.createTransfers([transfer(12n, 1n, 2n, 5n)]), { code: 'unavailable' }, 'new batches are refused');
  await t.rejects(shard.lookupAccounts([1n]), { code: 'unavailable' }, 'so are reads of memory ahead of the disk');
  await shard.close();

  // The failed write left a gap before an entry that was written but never acknowledged: the
  // shard refuses to start rather than guess (the operator truncates the log after the gap).
  t.throws(() => Shard.open({ dir, pulse: false }), { code: 'log_corrupt', position: 2 });
});

t.test('a shard tells its owner once when it stops serving', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'keel-logfail-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const failures: string[] = [];
  const shard = Shard.open({ dir, pulse: false, on_failed: (error) => failures.push(error.message) });
  await shard.createAccounts([account(1n), account(2n)]);
  t.same(failures, [], 'not while it serves');
  failNthPut((shard as unknown as { log: LogStore }).log, 1);
  await Promise.allSettled([shard.createTransfers([transfer(10n, 1n, 2n, 5n)]), shard.createTransfers([transfer(11n, 1n, 2n, 5n)])]);
  t.equal(failures.length, 1, 'once, however many batches failed');
  t.match(failures[0], /ENOSPC/, 'with the cause');
  await t.rejects(shard.whenDurable(), { code: 'unavailable' }, 'a group barrier waiting on its log hears it too');
  await shard.close();
});
