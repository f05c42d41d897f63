// Change-feed retention (PROTOCOL.md section 5): the feed serves the transfers of the retention
// window R (here 1.5 s, on a 2-shard engine), and expires a cursor only once it points behind
// 1.5 R; such a cursor gets `cursor_expired` naming the oldest cursor still available (shards it
// had not fallen behind keep its position), `from` omitted starts at the window's start, and a
// subscriber starting there under steady traffic is not expired at once.

import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine } from '../src/shard/engine.ts';
import { TokenStore } from '../src/gateway/tokens.ts';
import { startGateway } from '../src/gateway/server.ts';
import { createLogger } from '../src/gateway/log.ts';
import { connect, subscribe, KeelError } from '../src/client/index.ts';
import { Raw, ids } from './support/raw-feed.ts';

const RETENTION_MS = 1_500;

t.test('a cursor older than retention gets cursor_expired with the oldest cursor; from there nothing retained is missed', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'keel-feed-retention-'));
  const engine = await Engine.start({ data_dir: dir, shards: 2, queue_events_max: 1_000_000, feed_retention_ms: RETENTION_MS });
  const opened = TokenStore.open(dir);
  if (!opened.ok) throw new Error(opened.message);
  const admin = opened.value.create('admin', ['admin']);
  if (!admin.ok) throw new Error('token');
  const gateway = await startGateway({ engine, tokens: opened.value, port: 0, logger: createLogger('silent') });
  t.teardown(async () => {
    await gateway.close();
    await engine.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const keel = await connect({ url: gateway.address.url, token: admin.value.token, reconnect: false });
  t.teardown(() => keel.close());
  await keel.createAccounts(Array.from({ length: 8 }, (_, i) => ({ id: BigInt(i + 1), ledger: 1, code: 1 })));
  const batch = async (from: bigint, n: number): Promise<bigint[]> => {
    const transfers = Array.from({ length: n }, (_, i) => ({ id: from + BigInt(i), debit_account_id: BigInt((i % 8) + 1), credit_account_id: BigInt(((i + 3) % 8) + 1), amount: 1n, ledger: 1, code: 1 }));
    const result = await keel.createTransfers(transfers);
    t.ok(result.status.every((s) => s === 0), `${n} transfers created`);
    return transfers.map((x) => x.id);
  };

  const start = await Raw.hello(gateway.address.url, admin.value.token);
  const first = await start.request({ op: 'subscribe' });
  const start_cursor = first.cursor;
  start.close();
  const early = await batch(1_000n, 200);
  const at_early = await Raw.hello(gateway.address.url, admin.value.token);
  const heads_after_early = String((await at_early.request({ op: 'subscribe', from: 'latest' })).cursor);
  at_early.close();
  await new Promise((resolve) => setTimeout(resolve, RETENTION_MS * 1.5 + 500));
  const late = await batch(2_000n, 300);

  const expired = await Raw.hello(gateway.address.url, admin.value.token);
  const reply = await expired.request({ op: 'subscribe', from: start_cursor });
  t.equal(reply.error, 'cursor_expired', 'the cursor from before the early transfers has expired');
  t.match(String(reply.message), /older than the feed's retention/);
  t.match(String(reply.oldest), /^k2\.\d+\.\d+$/, 'and names the oldest cursor still available');
  expired.close();

  const resumed = await Raw.hello(gateway.address.url, admin.value.token);
  t.notOk((await resumed.request({ op: 'subscribe', from: reply.oldest })).error, 'subscribing from it works');
  await resumed.until((pushes) => ids(pushes).length >= late.length);
  t.same(new Set(ids(resumed.pushes)), new Set(late), 'exactly the retained transfers, none of the expired');
  resumed.close();

  const omitted = await Raw.hello(gateway.address.url, admin.value.token);
  const fresh = await omitted.request({ op: 'subscribe' });
  t.notOk(fresh.error);
  t.equal(fresh.cursor, reply.oldest, 'from omitted starts at the oldest retained transfer');
  await omitted.until((pushes) => ids(pushes).length >= late.length);
  const seen = ids(omitted.pushes);
  t.equal(seen.length, late.length, 'once each');
  t.notOk(seen.some((id) => early.includes(id)), 'nothing expired');
  omitted.close();

  // A cursor behind on shard 0 only keeps its shard-1 position in `oldest`: nothing twice.
  const [, , h1] = heads_after_early.split('.');
  const partly = await Raw.hello(gateway.address.url, admin.value.token);
  const partial = await partly.request({ op: 'subscribe', from: `k2.0.${h1}` });
  t.equal(partial.error, 'cursor_expired');
  t.equal(String(partial.oldest).split('.')[2], h1, 'the shard the cursor was not behind on keeps its position');
  partly.close();

  // Under steady traffic, a subscriber that starts at the window's start is not expired at once.
  const steady = await Raw.hello(gateway.address.url, admin.value.token);
  t.notOk((await steady.request({ op: 'subscribe' })).error);
  for (let k = 0; k < 10; k++) {
    await batch(3_000n + BigInt(k * 10), 10);
    await new Promise((resolve) => setTimeout(resolve, 60));
  }
  t.notOk(steady.pushes.some((p) => p.push === 'lagging'), 'no lagging while it keeps up');
  t.ok(ids(steady.pushes).length >= 100, 'and it got the new transfers');
  steady.close();

  // The client library: its iterator ends with a KeelError that names the oldest cursor.
  let caught: unknown;
  try {
    for await (const _ of subscribe({ url: gateway.address.url, token: admin.value.token, from: String(start_cursor) })) break;
  } catch (error) {
    caught = error;
  }
  t.ok(caught instanceof KeelError && caught.code === 'cursor_expired', 'subscribe() fails with cursor_expired');
  // The window keeps moving (a slow machine ages even the late transfers out by now): the oldest
  // cursor the client carries lies between the one the server named before and the one it names
  // right after, shard by shard.
  const check = await Raw.hello(gateway.address.url, admin.value.token);
  const after = await check.request({ op: 'subscribe', from: start_cursor });
  check.close();
  t.equal(after.error, 'cursor_expired');
  const positions = (cursor: unknown): number[] => String(cursor).split('.').slice(1).map(Number);
  const carried = positions((caught as KeelError).oldest);
  t.match(String((caught as KeelError).oldest), /^k2\.\d+\.\d+$/, 'and carries an oldest cursor');
  const before = positions(reply.oldest);
  const later = positions(after.oldest);
  for (let shard = 0; shard < 2; shard++) {
    t.ok(before[shard] <= carried[shard] && carried[shard] <= later[shard], `shard ${shard}: ${before[shard]} <= ${carried[shard]} <= ${later[shard]}`);
  }
});
