// The change feed end to end over a real WebSocket: every committed transfer exactly once, in commit
// order, resumable from any push's cursor across reconnects and an engine restart.

import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { Engine } from '../src/shard/engine.ts';
import { TokenStore } from '../src/gateway/tokens.ts';
import { startGateway, type Gateway } from '../src/gateway/server.ts';
import { createLogger } from '../src/gateway/log.ts';
import { connect, subscribe } from '../src/client/index.ts';

import { Raw, ids, type Message } from './support/raw-feed.ts';


const dir = mkdtempSync(join(tmpdir(), 'keel-feed-'));
const quiet = createLogger('silent');
let engine = await Engine.start({ data_dir: dir, shards: 1, queue_events_max: 1_000_000 });
const opened = TokenStore.open(dir);
if (!opened.ok) throw new Error(opened.message);
const tokens = opened.value;
const admin = tokens.create('admin', ['admin']);
const reader = tokens.create('reader', ['ledger:read']);
if (!admin.ok || !reader.ok) throw new Error('token');
const ADMIN = admin.value.token;
let gateway: Gateway = await startGateway({ engine, tokens, port: 0, logger: quiet });

t.teardown(async () => {
  await gateway.close();
  await engine.close();
  rmSync(dir, { recursive: true, force: true });
});

let next_transfer = 1000n;
/** Creates `count` transfers (every fifth on ledger 2) and returns the ids created, in order. */
async function load(count: number): Promise<bigint[]> {
  const keel = await connect({ url: gateway.address.url, token: ADMIN, reconnect: false });
  const batch = Array.from({ length: count }, (_, i) => {
    const ledger2 = (Number(next_transfer) + i) % 5 === 0;
    return {
      id: next_transfer + BigInt(i),
      debit_account_id: ledger2 ? 11n : 1n,
      credit_account_id: ledger2 ? 12n : 2n,
      amount: 1n,
      ledger: ledger2 ? 2 : 1,
      code: 1,
    };
  });
  next_transfer += BigInt(count);
  const result = await keel.createTransfers(batch);
  await keel.close();
  return batch.filter((_, i) => result.status[i] === 0).map((transfer) => transfer.id);
}

const setup = await connect({ url: gateway.address.url, token: ADMIN, reconnect: false });
await setup.createAccounts([
  { id: 1n, ledger: 1, code: 1 },
  { id: 2n, ledger: 1, code: 1 },
  { id: 11n, ledger: 2, code: 1 },
  { id: 12n, ledger: 2, code: 1 },
]);
await setup.close();

const committed: bigint[] = [];
for (let i = 0; i < 3; i++) committed.push(...(await load(1500)));

t.test('from the start: every committed transfer once, in commit order', async (t) => {
  const c = await Raw.hello(gateway.address.url, ADMIN);
  const reply = await c.request({ op: 'subscribe' });
  t.type(reply.subscription, 'number');
  await c.until((pushes) => ids(pushes).length >= committed.length);
  t.same(ids(c.pushes), committed);
  for (const p of c.pushes) t.equal(p.subscription, reply.subscription);
  c.close();
});

t.test('resume from any push cursor: no gap, no duplicate, across reconnects', async (t) => {
  const seen: bigint[] = [];
  let cursor: unknown = undefined;
  // Read one push per connection, then drop it and resume from that push's cursor.
  for (let hop = 0; hop < 20 && seen.length < committed.length; hop++) {
    const c = await Raw.hello(gateway.address.url, ADMIN);
    const reply = await c.request(cursor === undefined ? { op: 'subscribe' } : { op: 'subscribe', from: cursor });
    t.notOk(reply.error, `hop ${hop} subscribes`);
    await c.until((pushes) => pushes.length >= 1);
    const first = c.pushes[0];
    seen.push(...ids([first]));
    cursor = first.cursor;
    c.close();
  }
  t.same(seen, committed);
});

t.test('latest: only what commits after subscribing; ledgers filter', async (t) => {
  const all = await Raw.hello(gateway.address.url, ADMIN);
  const only2 = await Raw.hello(gateway.address.url, ADMIN);
  t.notOk((await all.request({ op: 'subscribe', from: 'latest' })).error);
  t.notOk((await only2.request({ op: 'subscribe', from: 'latest', ledgers: [2] })).error);
  const fresh = await load(500);
  committed.push(...fresh);
  await all.until((pushes) => ids(pushes).length >= fresh.length);
  t.same(ids(all.pushes), fresh);
  const ledger2 = fresh.filter((id) => id % 5n === 0n);
  await only2.until((pushes) => ids(pushes).length >= ledger2.length);
  t.same(ids(only2.pushes), ledger2);
  for (const p of only2.pushes) for (const transfer of p.transfers as Message[]) t.equal(transfer.ledger, 2);
  all.close();
  only2.close();
});

t.test('bad subscriptions get clear errors and change nothing', async (t) => {
  const c = await Raw.hello(gateway.address.url, ADMIN);
  const malformed = await c.request({ op: 'subscribe', from: 'not-a-cursor' });
  t.equal(malformed.error, 'invalid_request');
  t.equal(malformed.field, 'from');
  const ahead = await c.request({ op: 'subscribe', from: 'k1.0.999999999' });
  t.equal(ahead.error, 'invalid_request');
  t.match(ahead.message, /ahead/);
  const other_shard = await c.request({ op: 'subscribe', from: 'k1.7.0' });
  t.equal(other_shard.error, 'invalid_request');
  const bad_ledgers = await c.request({ op: 'subscribe', ledgers: [0] });
  t.equal(bad_ledgers.error, 'invalid_request');
  t.equal(bad_ledgers.field, 'ledgers');
  const unknown_field = await c.request({ op: 'subscribe', since: 3 });
  t.equal(unknown_field.error, 'invalid_request');
  const no_such = await c.request({ op: 'unsubscribe', subscription: 42 });
  t.equal(no_such.error, 'invalid_request');
  // Unsubscribe stops the pushes.
  const sub = await c.request({ op: 'subscribe', from: 'latest' });
  const unsubscribed = await c.request({ op: 'unsubscribe', subscription: sub.subscription });
  t.same(Object.keys(unsubscribed), ['id'], 'unsubscribe answers {id}');
  const before = c.pushes.length;
  committed.push(...(await load(10)));
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.equal(c.pushes.length, before, 'no push after unsubscribe');
  c.close();

  const r = await Raw.hello(gateway.address.url, reader.value.token);
  const forbidden = await r.request({ op: 'subscribe' });
  t.equal(forbidden.error, 'forbidden');
  r.close();
});

t.test('a cursor survives an engine restart', async (t) => {
  const c = await Raw.hello(gateway.address.url, ADMIN);
  await c.request({ op: 'subscribe' });
  await c.until((pushes) => pushes.length >= 2);
  const seen = ids(c.pushes.slice(0, 2));
  const cursor = c.pushes[1].cursor;
  c.close();

  await gateway.close();
  await engine.close();
  engine = await Engine.start({ data_dir: dir, shards: 1, queue_events_max: 1_000_000 });
  gateway = await startGateway({ engine, tokens, port: 0, logger: quiet });

  const again = await Raw.hello(gateway.address.url, ADMIN);
  t.notOk((await again.request({ op: 'subscribe', from: cursor })).error);
  await again.until((pushes) => seen.length + ids(pushes).length >= committed.length);
  t.same([...seen, ...ids(again.pushes)], committed, 'the restarted engine continues right after the cursor');
  again.close();
});

t.test('a stalled subscriber is paced, then told it lags; transfers keep committing', async (t) => {
  // A small high-water mark and stall time so the test is quick; the engine is shared.
  const slow_gateway = await startGateway({
    engine,
    tokens,
    port: 0,
    logger: quiet,
    send_high_water_bytes: 16 * 1024,
    send_buffer_max_bytes: 64 * 1024 * 1024,
    send_stall_ms: 1_500,
  });
  const c = await Raw.hello(slow_gateway.address.url, ADMIN);
  const reply = await c.request({ op: 'subscribe', from: 'latest' });
  t.notOk(reply.error);
  (c as unknown as { ws: WebSocket }).ws.pause(); // stop reading: the server's sends back up
  const fresh: bigint[] = [];
  // Far more than the kernel's socket buffers can absorb (~4 MB here), so the gateway's own send
  // buffer must fill and the subscription must stall.
  for (let i = 0; i < 24; i++) fresh.push(...(await load(4000)));
  committed.push(...fresh);
  t.equal(fresh.length, 96_000, 'every transfer committed while the subscriber was stalled');
  await new Promise((resolve) => setTimeout(resolve, 1_500));
  (c as unknown as { ws: WebSocket }).ws.resume();
  await c.until((pushes) => pushes.some((p) => p.push === 'lagging'), 15_000);
  const lagging = c.pushes.find((p) => p.push === 'lagging') as Message;
  t.equal(lagging.subscription, reply.subscription);
  const received = ids(c.pushes);
  t.ok(received.length < fresh.length, `paced: ${received.length} of ${fresh.length} pushed before lagging`);
  c.close();

  // Resuming from the lagging cursor replays the rest, exactly once.
  const again = await Raw.hello(gateway.address.url, ADMIN);
  t.notOk((await again.request({ op: 'subscribe', from: lagging.cursor })).error);
  await again.until((pushes) => received.length + ids(pushes).length >= fresh.length);
  t.same([...received, ...ids(again.pushes)].slice(0, fresh.length), fresh);
  again.close();
  await slow_gateway.close();
});

t.test('client iterator: everything once, in order, across a dropped connection', async (t) => {
  const port = gateway.address.port;
  const feed = subscribe({ url: gateway.address.url, token: ADMIN, reconnect: { initial_delay_ms: 20, max_delay_ms: 200 } });
  const seen: bigint[] = [];
  let dropped = false;
  for await (const batch of feed) {
    if (seen.length === 0) t.type(batch.transfers[0].id, 'bigint', 'u64 fields are bigints');
    for (const transfer of batch.transfers) seen.push(transfer.id);
    if (!dropped && seen.length > 0) {
      // Drop every connection: a new gateway takes over the same port.
      dropped = true;
      await gateway.close();
      gateway = await startGateway({ engine, tokens, port, logger: quiet });
    }
    if (seen.length >= committed.length) break;
  }
  t.ok(dropped, 'the connection was dropped mid-stream');
  t.same(seen, committed, 'no gap and no duplicate');

  // A latest subscription sees only new commits.
  const live = subscribe({ url: gateway.address.url, token: ADMIN, from: 'latest', ledgers: [1] });
  await new Promise((resolve) => setTimeout(resolve, 200));
  const fresh = await load(100);
  committed.push(...fresh);
  const got: bigint[] = [];
  for await (const batch of live) {
    got.push(...batch.transfers.map((transfer) => transfer.id));
    if (got.length >= fresh.filter((id) => id % 5n !== 0n).length) break;
  }
  t.same(got, fresh.filter((id) => id % 5n !== 0n));

  const refused = subscribe({ url: gateway.address.url, token: ADMIN, from: 'garbage' });
  await t.rejects(refused.next(), { code: 'invalid_request' });
});
