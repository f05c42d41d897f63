// The change feed over several shards, against a fake engine (in-memory transfers per shard, the
// FeedEngine interface only): one subscription follows every shard, in commit order per shard, each
// transfer exactly once across random disconnects, resumes and a gateway restart; composite cursors
// (`k2.<n0>.<n1>...`), `latest`, bad cursors, and fairness between a busy shard and a quiet one.

import t, { type Test } from 'tap';
import { rng } from './support/order.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TokenStore } from '../src/gateway/tokens.ts';
import { startGateway, type Gateway } from '../src/gateway/server.ts';
import { createLogger } from '../src/gateway/log.ts';
import type { LedgerEngine } from '../src/gateway/ops.ts';
import { FEED_PAGE_TRANSFERS, Subscription, formatCursor, parseCursor, type FeedEngine, type FeedIo } from '../src/gateway/feed.ts';
import type { ShardResult } from '../src/shard/messages.ts';
import type { Transfer } from '../src/ledger/types.ts';
import { subscribe } from '../src/client/index.ts';

import { Raw, ids, type Message } from './support/raw-feed.ts';

const SHARD_ID_STRIDE = 1_000_000n;
/** Transfer ids say their shard: shard s's n-th transfer (from 0) has id s * 1e6 + n + 1. */
const shardOf = (id: bigint): number => Number((id - 1n) / SHARD_ID_STRIDE);

/** Shard data that outlives one fake engine, as a data directory outlives a process. */
type Store = Transfer[][];

function newStore(shards: number): Store {
  return Array.from({ length: shards }, () => []);
}

/**
 * The engine as the gateway's feed sees it: `shard_count`, `feedRead` and `onCommitted`, with the
 * real shard's paging rules (commit order, `next`, `head`, a scan bound), an asynchronous answer,
 * and optional `busy` or `unavailable` answers.
 */
class FakeEngine implements FeedEngine {
  readonly reads: number[] = [];
  private readonly listeners = new Set<(shard: number) => void>();
  busy_rate = 0;
  /** Shards that answer `unavailable` to their next read. */
  readonly fail_next = new Set<number>();
  /** Shards that answer `busy` to this many more reads. */
  readonly busy_for = new Map<number, number>();
  /** Called at every read, before it is answered. */
  on_read: ((shard: number) => void) | null = null;

  constructor(
    readonly store: Store,
    private readonly random: () => number = Math.random,
    private readonly scan_max = 65_536,
  ) {}

  get shard_count(): number {
    return this.store.length;
  }

  /**
   * Commits `count` transfers to `shard` (ledger 2 for every third) and returns their ids. The
   * commit notice comes from a later turn, as from the real engine, or at once with `notify: 'now'`.
   */
  commit(shard: number, count: number, notify: 'later' | 'now' = 'later'): bigint[] {
    const transfers = this.store[shard];
    const ids: bigint[] = [];
    for (let i = 0; i < count; i++) {
      const n = transfers.length;
      const id = BigInt(shard) * SHARD_ID_STRIDE + BigInt(n) + 1n;
      transfers.push({
        id,
        debit_account_id: 1n,
        credit_account_id: 2n,
        amount: 1n,
        pending_id: 0n,
        user_data_64: 0n,
        user_data_32: shard,
        timeout: 0,
        ledger: n % 3 === 0 ? 2 : 1,
        code: 1,
        flags: 0,
        timestamp: BigInt(n + 1),
      });
      ids.push(id);
    }
    const notice = (): void => {
      for (const listener of this.listeners) listener(shard);
    };
    if (notify === 'now') notice();
    else setImmediate(notice);
    return ids;
  }

  async feedRead(shard: number, from: number, limit: number, ledgers: number[] | null): Promise<ShardResult> {
    await new Promise((resolve) => (this.random() < 0.5 ? setImmediate(resolve) : setTimeout(resolve, Math.floor(this.random() * 3))));
    if (!Number.isInteger(shard) || shard < 0 || shard >= this.store.length) return { error: 'internal', message: `no shard ${shard}` };
    this.on_read?.(shard);
    if (limit > 0) this.reads.push(shard);
    if (this.fail_next.delete(shard)) return { error: 'unavailable', message: `shard ${shard} is not serving` };
    const busy = this.busy_for.get(shard) ?? 0;
    if (busy > 0) {
      this.busy_for.set(shard, busy - 1);
      return { error: 'busy', message: `shard ${shard} is busy` };
    }
    if (limit > 0 && this.random() < this.busy_rate) return { error: 'busy', message: `shard ${shard} is busy` };
    const all = this.store[shard];
    const head = all.length;
    const transfers: Transfer[] = [];
    let next = Math.max(0, Math.min(from, head));
    const stop = Math.min(head, next + this.scan_max);
    while (next < stop && transfers.length < limit) {
      const transfer = all[next++];
      if (ledgers === null || ledgers.includes(transfer.ledger)) transfers.push({ ...transfer });
    }
    return { feed: { transfers, next, head, oldest: 0, floor: 0 } };
  }

  onCommitted(listener: (shard: number) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get listening(): number {
    return this.listeners.size;
  }
}

/** Every shard's transfers exactly once and in its commit order (no order asked between shards). */
function checkPerShard(t: Test, seen: readonly bigint[], expected: readonly (readonly bigint[])[], label: string): void {
  const by_shard: bigint[][] = expected.map(() => []);
  for (const id of seen) by_shard[shardOf(id)].push(id);
  t.equal(seen.length, expected.reduce((sum, list) => sum + list.length, 0), `${label}: as many transfers as committed`);
  for (let shard = 0; shard < expected.length; shard++) t.same(by_shard[shard], expected[shard], `${label}: shard ${shard} complete, in commit order, once`);
}

const idsOf = (store: Store, filter: (transfer: Transfer) => boolean = () => true): bigint[][] =>
  store.map((transfers) => transfers.filter(filter).map((transfer) => transfer.id));

// -------------------------------------------------------------------------------------------------
// Cursors.

t.test('cursor format: one position per shard; k1 only for one shard', async (t) => {
  t.equal(formatCursor([0, 12, 3]), 'k2.0.12.3');
  t.equal(formatCursor([7]), 'k2.7');
  t.same(parseCursor('k2.0.12.3', 3), { ok: true, positions: [0, 12, 3] });
  t.same(parseCursor(formatCursor([5, 9]), 2), { ok: true, positions: [5, 9] });
  t.same(parseCursor('k1.0.42', 1), { ok: true, positions: [42] }, 'a single-shard cursor of an earlier version still resumes');
  const bad = (raw: unknown, shards: number, pattern: RegExp, label: string): void => {
    const parsed = parseCursor(raw, shards);
    t.equal(parsed.ok, false, label);
    if (!parsed.ok) t.match(parsed.message, pattern, label);
  };
  bad('k2.1.2', 3, /2 shards but this engine has 3 shards/, 'too few positions');
  bad('k2.1.2.3.4', 3, /4 shards but this engine has 3 shards/, 'too many positions');
  bad('k2.1', 2, /1 shard but this engine has 2 shards/, 'one position for two shards');
  bad('k1.0.5', 3, /single shard but this engine has 3 shards/, 'k1 on several shards');
  bad('k1.1.0', 1, /names no position/, 'k1 of another shard');
  for (const raw of ['', 'k2', 'k2.', 'k2.1..2', 'k2.1.2.', 'k2.a.b.c', 'k3.1.2.3', 'K2.1.2.3', ' k2.1.2.3', 'k2.1.2.3 ', 'k2.-1.2.3', 'k2.1.2.12345678901234567', 'k1.0', 'latest2']) {
    bad(raw, 3, /malformed/, `malformed ${JSON.stringify(raw)}`);
  }
  bad('k2.0.0.9007199254740993', 3, /names no position/, 'past a safe integer');
  bad(42, 3, /cursor string/, 'not a string');
});

// -------------------------------------------------------------------------------------------------
// The subscription alone, with a fake socket.

interface FakeSocket {
  io: FeedIo;
  pushes: Message[];
  ended: boolean;
  buffered: number;
}

function fakeSocket(engine: FakeEngine, stall_ms = 60_000): FakeSocket {
  const socket: FakeSocket = {
    pushes: [],
    ended: false,
    buffered: 0,
    io: {
      engine,
      buffered: () => socket.buffered,
      push: (message) => socket.pushes.push(message as Message),
      ended: () => (socket.ended = true),
      high_water_bytes: 1024,
      stall_ms,
    },
  };
  return socket;
}

async function waitFor(predicate: () => boolean, timeout_ms = 10_000): Promise<void> {
  const deadline = Date.now() + timeout_ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

const pushShard = (push: Message): number => shardOf((push.transfers as Transfer[])[0].id);

t.test('fairness: shards with data take turns, one page each', async (t) => {
  const engine = new FakeEngine(newStore(3));
  engine.commit(0, 10 * FEED_PAGE_TRANSFERS);
  engine.commit(1, 5);
  engine.commit(2, 3 * FEED_PAGE_TRANSFERS - 7);
  const socket = fakeSocket(engine);
  const subscription = new Subscription(1, [0, 0, 0], null, socket.io);
  void subscription.run();
  await waitFor(() => ids(socket.pushes).length === 13 * FEED_PAGE_TRANSFERS - 2);
  subscription.stop();
  t.same(
    socket.pushes.map(pushShard),
    [0, 1, 2, 0, 2, 0, 2, 0, 0, 0, 0, 0, 0, 0],
    'the quiet shard is served second, not after the busy one drains',
  );
  for (const push of socket.pushes) t.ok((push.transfers as Transfer[]).every((transfer) => shardOf(transfer.id) === pushShard(push)), 'a push holds one shard page');
  t.equal(socket.pushes.at(-1)?.cursor, formatCursor([10 * FEED_PAGE_TRANSFERS, 5, 3 * FEED_PAGE_TRANSFERS - 7]));
  checkPerShard(t, ids(socket.pushes), idsOf(engine.store), 'fair');
  t.equal(engine.listening, 0, 'stop unlistens');
});

t.test('fairness: a shard that never catches up does not starve a quiet one', async (t) => {
  const engine = new FakeEngine(newStore(2));
  engine.commit(0, 2 * FEED_PAGE_TRANSFERS);
  const socket = fakeSocket(engine);
  let quiet: bigint[] = [];
  let during = -1;
  let shard0_reads = 0;
  // Shard 0 commits another page at every read of it: it always has more. During its sixth read,
  // shard 1 (read once at the start, empty, and idle since) commits a few transfers.
  engine.on_read = (shard) => {
    if (shard !== 0) return;
    engine.commit(0, FEED_PAGE_TRANSFERS);
    if (++shard0_reads === 6) {
      during = socket.pushes.length; // the index of this read's push
      quiet = engine.commit(1, 3, 'now');
    }
  };
  const subscription = new Subscription(1, [0, 0], null, socket.io);
  void subscription.run();
  await waitFor(() => quiet.length > 0 && ids(socket.pushes).includes(quiet[2]), 5_000);
  await waitFor(() => socket.pushes.length >= during + 4);
  subscription.stop();
  engine.on_read = null;
  t.same(
    socket.pushes.slice(during, during + 4).map(pushShard),
    [0, 1, 0, 0],
    "the quiet shard's transfers are the very next push after the busy shard's page in flight",
  );
  t.same(ids(socket.pushes).filter((id) => shardOf(id) === 1), quiet);
  const busy = ids(socket.pushes).filter((id) => shardOf(id) === 0);
  t.same(busy, engine.store[0].slice(0, busy.length).map((transfer) => transfer.id), 'the busy shard in commit order');
});

t.test('a commit on any shard wakes an idle subscription', async (t) => {
  const engine = new FakeEngine(newStore(3));
  const socket = fakeSocket(engine);
  const subscription = new Subscription(1, [0, 0, 0], null, socket.io);
  void subscription.run();
  await new Promise((resolve) => setTimeout(resolve, 50)); // every shard read once: all idle
  for (const shard of [2, 0, 1]) {
    const started = Date.now();
    const fresh = engine.commit(shard, 2);
    await waitFor(() => ids(socket.pushes).includes(fresh[1]), 2_000);
    t.ok(Date.now() - started < 500, `shard ${shard}'s commit pushed in ${Date.now() - started} ms, well before the idle poll`);
  }
  subscription.stop();
  checkPerShard(t, ids(socket.pushes), idsOf(engine.store), 'woken');
});

t.test('busy shard: the others go on, it is read again shortly', async (t) => {
  const engine = new FakeEngine(newStore(3));
  engine.commit(0, 3 * FEED_PAGE_TRANSFERS);
  engine.commit(1, 100);
  engine.commit(2, 3 * FEED_PAGE_TRANSFERS);
  engine.busy_for.set(1, 3);
  const socket = fakeSocket(engine);
  const subscription = new Subscription(1, [0, 0, 0], null, socket.io);
  void subscription.run();
  await waitFor(() => ids(socket.pushes).length === 6 * FEED_PAGE_TRANSFERS + 100);
  subscription.stop();
  t.notOk(socket.ended, 'busy does not end the subscription');
  t.ok(socket.pushes.findIndex((push) => pushShard(push) === 1) > 0, 'the busy shard came later');
  checkPerShard(t, ids(socket.pushes), idsOf(engine.store), 'busy');
});

t.test('lagging (stalled socket, or a shard not serving) carries the composite cursor; resuming from it loses nothing', async (t) => {
  const engine = new FakeEngine(newStore(3));
  engine.commit(0, 5 * FEED_PAGE_TRANSFERS);
  engine.commit(1, 4 * FEED_PAGE_TRANSFERS);
  engine.commit(2, 5 * FEED_PAGE_TRANSFERS);
  const seen: bigint[] = [];

  // A stalled reader.
  const slow = fakeSocket(engine, 50);
  const first = new Subscription(1, [0, 0, 0], null, slow.io);
  void first.run();
  await waitFor(() => slow.pushes.length >= 4);
  slow.buffered = 1 << 20;
  await waitFor(() => slow.ended);
  const lagging = slow.pushes.at(-1) as Message;
  t.equal(lagging.push, 'lagging');
  const events = slow.pushes.filter((push) => push.push === 'events');
  t.equal(lagging.cursor, events.at(-1)?.cursor, 'lagging names the cursor after the last push');
  t.equal(engine.listening, 0);
  seen.push(...ids(events));

  // A shard that stops serving mid-way.
  const parsed = parseCursor(lagging.cursor, 3);
  if (!parsed.ok) throw new Error(parsed.message);
  const socket = fakeSocket(engine);
  const second = new Subscription(2, parsed.positions, null, socket.io);
  void second.run();
  await waitFor(() => socket.pushes.length >= 2);
  engine.fail_next.add(1);
  await waitFor(() => socket.ended);
  const lagging2 = socket.pushes.at(-1) as Message;
  t.equal(lagging2.push, 'lagging');
  t.equal(lagging2.cursor, socket.pushes.filter((push) => push.push === 'events').at(-1)?.cursor ?? lagging.cursor);
  seen.push(...ids(socket.pushes));

  const parsed2 = parseCursor(lagging2.cursor, 3);
  if (!parsed2.ok) throw new Error(parsed2.message);
  const rest = fakeSocket(engine);
  const third = new Subscription(3, parsed2.positions, null, rest.io);
  void third.run();
  await waitFor(() => seen.length + ids(rest.pushes).length >= 14 * FEED_PAGE_TRANSFERS);
  third.stop();
  seen.push(...ids(rest.pushes));
  checkPerShard(t, seen, idsOf(engine.store), 'across lagging');
});

// -------------------------------------------------------------------------------------------------
// End to end over a real WebSocket, with the fake engine behind the gateway.

const dir = mkdtempSync(join(tmpdir(), 'keel-feed-shards-'));
const quiet = createLogger('silent');
const opened = TokenStore.open(dir);
if (!opened.ok) throw new Error(opened.message);
const tokens = opened.value;
const admin = tokens.create('admin', ['admin']);
if (!admin.ok) throw new Error('token');
const ADMIN = admin.value.token;
const gateways: Gateway[] = [];

async function gatewayFor(engine: FakeEngine, options: { port?: number; send_high_water_bytes?: number; send_stall_ms?: number } = {}): Promise<Gateway> {
  const gateway = await startGateway({ engine: engine as unknown as LedgerEngine, tokens, port: 0, logger: quiet, ...options });
  gateways.push(gateway);
  return gateway;
}

t.teardown(async () => {
  for (const gateway of gateways) await gateway.close();
  rmSync(dir, { recursive: true, force: true });
});

t.test('exactly once, in order per shard, across random disconnects, resumes and a gateway restart', async (t) => {
  const seed = Number(process.env.FEED_SEED ?? Date.now() % 1_000_000);
  t.comment(`seed ${seed} (FEED_SEED=${seed} replays it)`);
  const random = rng(seed);
  const store = newStore(3);
  let engine = new FakeEngine(store, random, 700);
  engine.busy_rate = 0.1;
  let gateway = await gatewayFor(engine);
  for (let shard = 0; shard < 3; shard++) engine.commit(shard, Math.floor(random() * 3000));
  const total = (): number => store.reduce((sum, transfers) => sum + transfers.length, 0);

  const seen: bigint[] = [];
  let cursor: unknown = undefined;
  for (let hop = 0; hop < 40; hop++) {
    if (hop === 20) {
      // A restart: a new gateway and engine over the same committed transfers.
      await gateway.close();
      engine = new FakeEngine(store, random, 700);
      engine.busy_rate = 0.1;
      gateway = await gatewayFor(engine);
    }
    if (random() < 0.5) engine.commit(Math.floor(random() * 3), Math.floor(random() * 1500));
    const c = await Raw.hello(gateway.address.url, ADMIN);
    const reply = await c.request(cursor === undefined ? { op: 'subscribe' } : { op: 'subscribe', from: cursor });
    t.notOk(reply.error, `hop ${hop} subscribes`);
    t.match(reply.cursor, /^k2\.\d+\.\d+\.\d+$/);
    if (cursor !== undefined) t.equal(reply.cursor, cursor, 'the subscription starts where the cursor says');
    // Commits while subscribed, on random shards.
    if (random() < 0.5) engine.commit(Math.floor(random() * 3), Math.floor(random() * 300));
    const take = Math.floor(random() * 4); // 0: drop before any push, resume from the reply
    const before = seen.length;
    await c.until((pushes) => pushes.length >= take || before + ids(pushes).length >= total());
    const used = c.pushes.slice(0, take);
    t.notOk(used.some((push) => push.push !== 'events'), 'only events');
    seen.push(...ids(used));
    cursor = used.length > 0 ? used.at(-1)?.cursor : reply.cursor;
    c.close();
  }
  const c = await Raw.hello(gateway.address.url, ADMIN);
  t.notOk((await c.request({ op: 'subscribe', from: cursor })).error);
  await c.until((pushes) => seen.length + ids(pushes).length >= total());
  await new Promise((resolve) => setTimeout(resolve, 100)); // nothing more may come
  seen.push(...ids(c.pushes));
  c.close();
  checkPerShard(t, seen, idsOf(store), 'random hops');
});

t.test('ledgers filter across shards, with scan-only pages, resumable', async (t) => {
  const store = newStore(3);
  const engine = new FakeEngine(store, Math.random, 300);
  const gateway = await gatewayFor(engine);
  engine.commit(0, 2000);
  engine.commit(1, 10);
  engine.commit(2, 1000);
  const expected = idsOf(store, (transfer) => transfer.ledger === 2);
  const count = expected.reduce((sum, list) => sum + list.length, 0);
  const c = await Raw.hello(gateway.address.url, ADMIN);
  t.notOk((await c.request({ op: 'subscribe', ledgers: [2] })).error);
  await c.until((pushes) => ids(pushes).length >= count);
  const half = c.pushes.findIndex((_, i) => ids(c.pushes.slice(0, i + 1)).length >= count / 2);
  const seen = ids(c.pushes.slice(0, half + 1));
  const cursor = c.pushes[half].cursor;
  c.close();
  const again = await Raw.hello(gateway.address.url, ADMIN);
  t.notOk((await again.request({ op: 'subscribe', ledgers: [2], from: cursor })).error);
  await again.until((pushes) => seen.length + ids(pushes).length >= count);
  seen.push(...ids(again.pushes));
  again.close();
  checkPerShard(t, seen, expected, 'ledger 2');
});

t.test('latest: every shard from its head', async (t) => {
  const store = newStore(3);
  const engine = new FakeEngine(store);
  const gateway = await gatewayFor(engine);
  engine.commit(0, 50);
  engine.commit(2, 7);
  const c = await Raw.hello(gateway.address.url, ADMIN);
  const reply = await c.request({ op: 'subscribe', from: 'latest' });
  t.equal(reply.cursor, 'k2.50.0.7', 'the reply names every shard head');
  const fresh = [engine.commit(1, 3), engine.commit(2, 4), engine.commit(0, 5)];
  await c.until((pushes) => ids(pushes).length >= 12);
  await new Promise((resolve) => setTimeout(resolve, 100));
  checkPerShard(t, ids(c.pushes), [fresh[2], fresh[0], fresh[1]], 'latest');
  t.equal(c.pushes.at(-1)?.cursor !== undefined && parseCursor(c.pushes.at(-1)?.cursor, 3).ok, true);
  c.close();
  // The cursor of the last push is every head now.
  const again = await Raw.hello(gateway.address.url, ADMIN);
  const from_end = await again.request({ op: 'subscribe', from: 'k2.55.3.11' });
  t.notOk(from_end.error, 'a cursor at every head is fine');
  t.equal(from_end.cursor, 'k2.55.3.11');
  again.close();
});

t.test('bad cursors: invalid_request on from, with the reason', async (t) => {
  const store = newStore(3);
  const engine = new FakeEngine(store);
  const gateway = await gatewayFor(engine);
  engine.commit(0, 10);
  engine.commit(1, 20);
  engine.commit(2, 30);
  const c = await Raw.hello(gateway.address.url, ADMIN);
  const cases: Array<[unknown, RegExp]> = [
    ['k2.1.2', /2 shards but this engine has 3 shards/],
    ['k2.1.2.3.4', /4 shards but this engine has 3/],
    ['k1.0.5', /single shard but this engine has 3 shards/],
    ['k2.1..3', /malformed/],
    ['nonsense', /malformed/],
    [17, /cursor string/],
    ['k2.10.21.30', /ahead.*shard 1 has 20/],
    ['k2.0.0.31', /ahead.*shard 2 has 30/],
  ];
  for (const [from, message] of cases) {
    const reply = await c.request({ op: 'subscribe', from });
    t.equal(reply.error, 'invalid_request', `${String(from)} refused`);
    t.equal(reply.field, 'from');
    t.match(reply.message, message);
  }
  const ok = await c.request({ op: 'subscribe', from: 'k2.10.20.30' });
  t.notOk(ok.error, 'a cursor at the heads is fine');
  t.equal(engine.listening, 1, 'refused subscriptions hold nothing');
  c.close();
});

t.test('one shard: k1 cursors still resume, as k2', async (t) => {
  const store = newStore(1);
  const engine = new FakeEngine(store);
  const gateway = await gatewayFor(engine);
  const all = engine.commit(0, 40);
  const c = await Raw.hello(gateway.address.url, ADMIN);
  const reply = await c.request({ op: 'subscribe', from: 'k1.0.15' });
  t.notOk(reply.error);
  t.equal(reply.cursor, 'k2.15');
  await c.until((pushes) => ids(pushes).length >= 25);
  t.same(ids(c.pushes), all.slice(15));
  t.equal(c.pushes.at(-1)?.cursor, 'k2.40');
  t.equal((await c.request({ op: 'subscribe', from: 'k1.1.0' })).error, 'invalid_request');
  t.equal((await c.request({ op: 'subscribe', from: 'k1.0.41' })).error, 'invalid_request');
  const two = await c.request({ op: 'subscribe', from: 'k2.1.1' });
  t.equal(two.error, 'invalid_request');
  t.match(two.message, /2 shards but this engine has 1 shard\b/);
  c.close();
});

t.test('a stalled subscriber on several shards gets lagging with a composite cursor', async (t) => {
  const store = newStore(3);
  const engine = new FakeEngine(store);
  const gateway = await gatewayFor(engine, { send_high_water_bytes: 16 * 1024, send_stall_ms: 600 });
  const c = await Raw.hello(gateway.address.url, ADMIN);
  const reply = await c.request({ op: 'subscribe', from: 'latest' });
  t.notOk(reply.error);
  c.ws.pause(); // stop reading: the server's sends back up
  for (let i = 0; i < 40; i++) engine.commit(i % 3, 4000);
  // Stay stalled until the subscription gives up (it stops listening for commits), however long
  // filling the socket buffers takes on a loaded machine.
  await waitFor(() => engine.listening === 0, 20_000);
  c.ws.resume();
  await c.until((pushes) => pushes.some((p) => p.push === 'lagging'), 15_000);
  const lagging = c.pushes.find((p) => p.push === 'lagging') as Message;
  t.match(lagging.cursor, /^k2\.\d+\.\d+\.\d+$/);
  const received = ids(c.pushes);
  t.ok(received.length < 160_000, `paced: ${received.length} of 160000 pushed before lagging`);
  c.close();
  const again = await Raw.hello(gateway.address.url, ADMIN);
  t.notOk((await again.request({ op: 'subscribe', from: lagging.cursor })).error);
  await again.until((pushes) => received.length + ids(pushes).length >= 160_000, 20_000);
  checkPerShard(t, [...received, ...ids(again.pushes)], idsOf(store), 'after lagging');
  again.close();
});

t.test('client iterator over several shards: opaque cursors, a dropped connection, no gap or duplicate', async (t) => {
  const store = newStore(3);
  const engine = new FakeEngine(store);
  let gateway = await gatewayFor(engine);
  const port = gateway.address.port;
  for (let shard = 0; shard < 3; shard++) engine.commit(shard, 2500 + shard * 500);
  const total = store.reduce((sum, transfers) => sum + transfers.length, 0);
  const feed = subscribe({ url: gateway.address.url, token: ADMIN, reconnect: { initial_delay_ms: 20, max_delay_ms: 200 } });
  const seen: bigint[] = [];
  let dropped = false;
  for await (const batch of feed) {
    seen.push(...batch.transfers.map((transfer) => transfer.id));
    if (!dropped && seen.length > 3000) {
      dropped = true;
      await gateway.close();
      gateway = await gatewayFor(engine, { port }); // a new gateway takes over the same port
    }
    if (seen.length >= total) break;
  }
  t.ok(dropped, 'the connection was dropped mid-stream');
  checkPerShard(t, seen, idsOf(store), 'client');
});
