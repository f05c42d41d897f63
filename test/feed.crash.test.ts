// The change feed across kill -9: a consumer reading the feed while transfers are written, through
// several SIGKILLs and restarts of the engine, ends with exactly the committed transfers, in commit
// order per shard, once each; and it never saw a transfer that the restarted engine does not hold.

import t from 'tap';
import { orderedRuns } from './support/order.ts';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect, subscribe, type FeedBatch } from '../src/client/index.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const MAIN = join(ROOT, 'src', 'cli', 'main.ts');
const TOKEN_RE = /keel_[A-Za-z0-9_-]{43}/;
const KILLS = 5;

interface Server {
  child: ChildProcess;
  url: Promise<string>;
  exited: Promise<void>;
  stdout: () => string;
}

function startKeel(data: string): Server {
  const child = spawn(process.execPath, ['--import=tsx', MAIN, 'start', '--port', '0', '--data', data], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', () => {});
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
  const url = new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', () => {
      const m = /keel listening on (ws:\/\/\S+)/.exec(out);
      if (m !== null) resolve(m[1]);
    });
    void exited.then(() => reject(new Error(`keel start ended before listening: ${out}`)));
  });
  url.catch(() => {});
  return { child, url, exited, stdout: () => out };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

const byId = (a: bigint, b: bigint): number => (a < b ? -1 : a > b ? 1 : 0);

t.test('feed cursors resume exactly once across kill -9 of the engine', async (t) => {
  const data = mkdtempSync(join(tmpdir(), 'keel-feed-crash-'));
  t.teardown(() => rmSync(data, { recursive: true, force: true }));
  let server = startKeel(data);
  let url = await server.url;
  const token = TOKEN_RE.exec(server.stdout())?.[0];
  if (token === undefined) throw new Error('no admin token printed');
  const setup = await connect({ url, token, reconnect: false });
  await setup.createAccounts(Array.from({ length: 20 }, (_, i) => ({ id: BigInt(i + 1), ledger: 1, code: 1 })));
  await setup.close();

  const seen: bigint[] = [];
  let cursor: string | undefined;
  let next_id = 1n;
  for (let life = 0; life <= KILLS; life++) {
    // A writer and a feed consumer run until the engine is killed (or, the last time, until done).
    let alive = true;
    const writer = (async () => {
      const keel = await connect({ url, token, reconnect: false }).catch(() => null);
      if (keel === null) return;
      while (alive) {
        const batch = Array.from({ length: 200 }, (_, i) => ({
          id: next_id + BigInt(i),
          debit_account_id: BigInt(1 + (i % 20)),
          credit_account_id: BigInt(1 + ((i + 7) % 20)),
          amount: 1n,
          ledger: 1,
          code: 1,
        }));
        next_id += 200n;
        try {
          await keel.createTransfers(batch);
        } catch {
          break; // the engine died: the outcome of this batch is unknown, which the feed will tell
        }
      }
      await keel.close().catch(() => {});
    })();
    const feed = subscribe({ url, token, from: cursor, reconnect: false });
    const reader = (async () => {
      try {
        for await (const batch of feed as AsyncIterable<FeedBatch>) {
          for (const transfer of batch.transfers) seen.push(transfer.id);
          cursor = batch.cursor;
        }
      } catch {
        // connection lost with the engine
      }
    })();
    if (life < KILLS) {
      await sleep(300 + Math.floor(Math.random() * 500));
      server.child.kill('SIGKILL');
      await server.exited;
      alive = false;
      await Promise.all([writer, reader]);
      feed.close();
      server = startKeel(data);
      url = await server.url;
    } else {
      await sleep(500);
      alive = false;
      await writer;
      // Let the consumer catch up with everything committed, then stop it.
      const keel = await connect({ url, token, reconnect: false });
      const all = await keel.queryTransfers({ limit: 8190 });
      let total = all.length;
      let last = all.at(-1)?.timestamp ?? 0n;
      while (true) {
        const page = await keel.queryTransfers({ limit: 8190, timestamp_min: last + 1n });
        if (page.length === 0) break;
        total += page.length;
        last = page.at(-1)!.timestamp;
      }
      for (let waited = 0; seen.length < total && waited < 10_000; waited += 50) await sleep(50);
      feed.close();
      await reader;

      // The engine's transfers in timestamp order (each shard's commit order) are the truth.
      const truth: bigint[] = [];
      let after = 0n;
      while (true) {
        const page = await keel.queryTransfers({ limit: 8190, timestamp_min: after + 1n });
        if (page.length === 0) break;
        truth.push(...page.map((transfer) => transfer.id));
        after = page.at(-1)!.timestamp;
      }
      await keel.close();
      t.ok(truth.length > 1000, `${truth.length} transfers committed over ${KILLS} kills`);
      t.equal(new Set(seen).size, seen.length, 'no transfer pushed twice');
      t.same([...seen].sort(byId), [...truth].sort(byId), 'the feed delivered exactly the committed transfers');
      // Order is promised per shard, not across shards. The shard count is read from the cursor
      // (opaque to clients; this test knows its format, k2.<n0>.<n1>...).
      const shards = String(cursor).split('.').length - 1;
      const runs = orderedRuns(seen, truth);
      t.ok(runs <= shards, `in commit order per shard: ${runs} ordered run(s) over ${shards} shard(s)`);
      server.child.kill('SIGTERM');
      await server.exited;
    }
  }
});
