// `keel log check|repair`: a gap left by a failed write is found and the never-acknowledged
// entries after it are dropped, so the shard replays again; a corrupt entry is refused unless
// --force; an engine's locked data directory is left alone.

import t from 'tap';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { open } from 'lmdb';
import { LogOp, LogStore } from '../src/storage/log.ts';
import { encodeAccountBatch, encodeTransferBatch } from '../src/storage/codec.ts';
import { Shard } from '../src/shard/shard.ts';
import { runLog } from '../src/cli/log.ts';
import type { LogArgs } from '../src/cli/args.ts';
import { account, transfer } from './support/builders.ts';

function capture(): { io: { out: (l: string) => void; err: (l: string) => void }; out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (l) => out.push(l), err: (l) => err.push(l) }, out, err };
}

/** A data directory whose shard 0 log holds accounts and four transfer batches (positions 1..5). */
async function dataDir(): Promise<string> {
  const data = mkdtempSync(join(tmpdir(), 'keel-cli-log-'));
  mkdirSync(join(data, 'shard-0'), { recursive: true });
  const log = LogStore.open({ path: join(data, 'shard-0', 'log') });
  let now = 1_000_000_000n;
  await log.append(1, LogOp.create_accounts, (now += 1000n), 2, encodeAccountBatch([account(1n), account(2n)]));
  for (let k = 0; k < 4; k++) {
    await log.append(1, LogOp.create_transfers, (now += 1000n), 1, encodeTransferBatch([transfer(BigInt(10 + k), 1n, 2n, 5n)]));
  }
  await log.close();
  return data;
}

async function damage(data: string, position: number, how: 'remove' | 'flip'): Promise<void> {
  const env = open({ path: join(data, 'shard-0', 'log'), maxDbs: 4 });
  const entries = env.openDB<Buffer, number>({ name: 'entries', encoding: 'binary' });
  if (how === 'remove') {
    await entries.remove(position);
  } else {
    const bytes = Buffer.from(entries.get(position)!);
    bytes[bytes.length - 1] ^= 0xff;
    await entries.put(position, bytes);
  }
  await env.close();
}

const args = (data: string, action: 'check' | 'repair', extra: Partial<LogArgs> = {}): LogArgs => ({ action, data, json: false, force: false, ...extra });

t.test('a gap: check names it, repair drops the entries after it, and the shard replays', async (t) => {
  const data = await dataDir();
  t.teardown(() => rmSync(data, { recursive: true, force: true }));
  const healthy = capture();
  t.equal(await runLog(args(data, 'check'), healthy.io), 0);
  t.match(healthy.out.join('\n'), /shard 0: log 1\.\.5, checkpoint at 0: ok/);

  await damage(data, 3, 'remove');
  t.throws(() => Shard.open({ dir: join(data, 'shard-0'), pulse: false }), { code: 'log_corrupt' }, 'the shard refuses the gap');
  const check = capture();
  t.equal(await runLog(args(data, 'check', { json: true }), check.io), 1, 'check exits 1');
  const report = JSON.parse(check.out[0]) as { shards: Array<{ problem: { position: number; kind: string; entries_after: number } }> };
  t.same(report.shards[0].problem, { ...report.shards[0].problem, position: 3, kind: 'gap', entries_after: 2 });

  const repair = capture();
  t.equal(await runLog(args(data, 'repair'), repair.io), 0, 'repair exits 0');
  t.match(repair.out.join('\n'), /dropped 2 entries from 3 on/);
  const shard = Shard.open({ dir: join(data, 'shard-0'), pulse: false });
  t.same(
    (await shard.lookupTransfers([10n, 11n, 12n, 13n])).map((x) => x.id),
    [10n],
    'the entries before the gap replayed; the ones after it are gone',
  );
  t.equal((await shard.lookupAccounts([1n]))[0].debits_posted, 5n);
  await shard.close();
  t.equal(await runLog(args(data, 'check'), capture().io), 0, 'and the log checks clean');
});

t.test('a corrupt entry is refused without --force', async (t) => {
  const data = await dataDir();
  t.teardown(() => rmSync(data, { recursive: true, force: true }));
  await damage(data, 4, 'flip');
  const refused = capture();
  t.equal(await runLog(args(data, 'repair'), refused.io), 1);
  t.match(refused.out.join('\n'), /corrupt at 4 .*\n\s+not repaired: a corrupt entry may have been acknowledged/);
  const forced = capture();
  t.equal(await runLog(args(data, 'repair', { force: true }), forced.io), 0);
  t.match(forced.out.join('\n'), /dropped 2 entries from 4 on/);
  const shard = Shard.open({ dir: join(data, 'shard-0'), pulse: false });
  t.equal((await shard.lookupTransfers([10n, 11n, 12n])).length, 2);
  await shard.close();
});

t.test('a running engine\'s data directory is left alone', async (t) => {
  const data = await dataDir();
  t.teardown(() => rmSync(data, { recursive: true, force: true }));
  writeFileSync(join(data, 'keel.lock'), `${process.pid}\n`);
  const locked = capture();
  t.equal(await runLog(args(data, 'repair'), locked.io), 2);
  t.match(locked.err.join('\n'), /in use by process/);
});

t.test('a torn last entry and a log missing its start are found too', async (t) => {
  const torn = await dataDir();
  t.teardown(() => rmSync(torn, { recursive: true, force: true }));
  await damage(torn, 5, 'flip');
  const check = capture();
  t.equal(await runLog(args(torn, 'check'), check.io), 1, 'check opens a log whose last entry is corrupt');
  t.match(check.out.join('\n'), /corrupt at 5 .*0 stored entries after it/);
  t.equal(await runLog(args(torn, 'repair', { force: true }), capture().io), 0);
  const shard = Shard.open({ dir: join(torn, 'shard-0'), pulse: false });
  t.equal((await shard.lookupTransfers([10n, 11n, 12n, 13n])).length, 3, 'entries 1-4 replay');
  await shard.close();

  const headless = await dataDir();
  t.teardown(() => rmSync(headless, { recursive: true, force: true }));
  await damage(headless, 1, 'remove');
  const missing = capture();
  t.equal(await runLog(args(headless, 'check', { json: true }), missing.io), 1, 'a log that does not start at 1 without a checkpoint');
  t.match(missing.out[0], /"kind":"gap","reason":"entry 1 is missing/);
});
