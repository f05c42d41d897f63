// The gateway over loopback with a raw ws + msgpackr client: PROTOCOL.md sections 1-4 at the wire.

import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Packr, Unpackr } from 'msgpackr';
import WebSocket from 'ws';
import { Engine } from '../src/shard/engine.ts';
import { startGateway, type Gateway, type GatewayOptions } from '../src/gateway/server.ts';
import { TokenStore } from '../src/gateway/tokens.ts';
import { createLogger } from '../src/gateway/log.ts';
import type { LedgerEngine } from '../src/gateway/ops.ts';
import type { ShardResult } from '../src/shard/messages.ts';
import { AccountFlags, CreateTransferStatus } from '../src/ledger/types.ts';
import type { Scope } from '../src/gateway/protocol.ts';

type Test = Parameters<Parameters<typeof t.test>[0]>[0];
type Reply = Record<string, unknown> & { id?: number };

const packr = new Packr({ useRecords: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: 'auto' } as unknown as ConstructorParameters<typeof Unpackr>[0]);
const MiB = 1024 * 1024;
/** An account the end-to-end test creates and later tests read. */
const A_ID = 10_001;

// ---------------------------------------------------------------------------------------------------
// A raw client.

class Raw {
  readonly ws: WebSocket;
  readonly closed: Promise<{ code: number; reason: string }>;
  private readonly queue: Reply[] = [];
  private readonly waiting = new Map<number, (r: Reply) => void>();
  private next_waiter: ((r: Reply) => void) | null = null;
  private next_id = 1;

  private constructor(ws: WebSocket) {
    this.ws = ws;
    this.closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    ws.on('error', () => {});
    ws.on('message', (data: Buffer) => {
      const reply = unpackr.unpack(data) as Reply;
      const id = typeof reply.id === 'number' ? reply.id : -1;
      const waiter = this.waiting.get(id);
      if (waiter !== undefined) {
        this.waiting.delete(id);
        waiter(reply);
      } else if (this.next_waiter !== null) {
        const w = this.next_waiter;
        this.next_waiter = null;
        w(reply);
      } else this.queue.push(reply);
    });
  }

  static connect(url: string, options: WebSocket.ClientOptions = {}): Promise<Raw> {
    const ws = new WebSocket(url, options);
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new Raw(ws)));
      ws.once('error', reject);
    });
  }

  /** Connects and says hello; fails the test on anything but a hello reply. */
  static async hello(url: string, token: string): Promise<Raw> {
    const raw = await Raw.connect(url);
    const reply = await raw.request({ op: 'hello', token });
    if (reply.error !== undefined) throw new Error(`hello failed: ${String(reply.message)}`);
    return raw;
  }

  sendBytes(bytes: Uint8Array | string, binary = true): void {
    this.ws.send(bytes, { binary });
  }

  send(frame: Record<string, unknown>): void {
    this.sendBytes(packr.pack(frame));
  }

  /** Sends with a fresh id unless one is given; resolves with the reply carrying that id. */
  request(frame: Record<string, unknown>): Promise<Reply> {
    const id = typeof frame.id === 'number' ? frame.id : this.next_id++;
    const reply = new Promise<Reply>((resolve) => this.waiting.set(id, resolve));
    this.send({ id, ...frame });
    return reply;
  }

  /** The next reply not claimed by request(). */
  next(): Promise<Reply> {
    const queued = this.queue.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    return new Promise((resolve) => (this.next_waiter = resolve));
  }

  get unclaimed(): number {
    return this.queue.length;
  }

  close(): void {
    this.ws.terminate();
  }
}

function within<T>(ms: number, p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms))),
  ]);
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function until(what: string, check: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

// ---------------------------------------------------------------------------------------------------
// Fixture: one engine, one token store, a default gateway; subtests start extra gateways as needed.

const dir = mkdtempSync(join(tmpdir(), 'keel-gateway-'));
const engine = await Engine.start({ data_dir: dir, shards: 1, queue_events_max: 1_000_000 });
const opened = TokenStore.open(dir);
if (!opened.ok) throw new Error(opened.message);
const tokens = opened.value;

function token(name: string, scopes: Scope[]): string {
  const created = tokens.create(name, scopes);
  if (!created.ok) throw new Error(created.message);
  return created.value.token;
}

const ADMIN = token('admin', ['admin']);
const READER = token('reader', ['ledger:read']);
const WRITER = token('writer', ['ledger:write']);

const quiet = createLogger('silent');
const gateways: Gateway[] = [];
async function gateway(options: Partial<GatewayOptions> = {}): Promise<Gateway> {
  const g = await startGateway({ engine, tokens, port: 0, logger: quiet, ...options });
  gateways.push(g);
  return g;
}

const main = await gateway();
const URL = main.address.url;

t.teardown(async () => {
  await Promise.all(gateways.map((g) => g.close()));
  await engine.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The engine still answers through a fresh connection (used after every kind of bad input). */
async function engineStillUp(t: Test): Promise<void> {
  const c = await Raw.hello(URL, ADMIN);
  const reply = await within(5000, c.request({ op: 'lookup_accounts', ids: [1] }), 'lookup after bad input');
  t.ok(Array.isArray(reply.accounts), 'engine and gateway still answer');
  c.close();
}

const account = (id: number | bigint, fields: Record<string, unknown> = {}): Record<string, unknown> => ({ id, ledger: 1, code: 1, ...fields });

// ---------------------------------------------------------------------------------------------------
// Session.

t.test('hello answers center, version and limits', async (t) => {
  const c = await Raw.connect(URL);
  const reply = await c.request({ id: 9, op: 'hello', token: ADMIN, client: 'gateway.test' });
  t.same(reply, {
    id: 9,
    center: 'local',
    version: 1,
    limits: { events_per_request: 8190, inflight_per_connection: 64, frame_bytes: 4 * MiB },
  });
  const again = await c.request({ op: 'hello', token: ADMIN });
  t.equal(again.error, 'invalid_request', 'a second hello');
  t.equal(again.field, 'op');
  c.close();
});

t.test('a bad token is unauthorized, then close 4401', async (t) => {
  for (const [name, hello] of [
    ['unknown token', { id: 3, op: 'hello', token: 'keel_' + 'A'.repeat(43) }],
    ['garbage token', { id: 3, op: 'hello', token: 'letmein' }],
    ['no token', { id: 3, op: 'hello' }],
    ['token of the wrong type', { id: 3, op: 'hello', token: 12345 }],
  ] as const) {
    const c = await Raw.connect(URL);
    c.send(hello);
    const reply = await c.next();
    t.equal(reply.id, 3, `${name}: echoes the id`);
    t.equal(reply.error, 'unauthorized', name);
    t.type(reply.message, 'string');
    t.equal((await c.closed).code, 4401, `${name}: closed with 4401`);
  }
});

t.test('any other op first is unauthorized, then close 4401', async (t) => {
  const c = await Raw.connect(URL);
  c.send({ id: 5, op: 'lookup_accounts', ids: [1] });
  const reply = await c.next();
  t.same({ id: reply.id, error: reply.error }, { id: 5, error: 'unauthorized' });
  t.match(reply.message, /first request must be hello/);
  t.equal((await c.closed).code, 4401);

  const d = await Raw.connect(URL);
  d.send({ op: 'hello', token: ADMIN }); // a hello without an id
  const r2 = await d.next();
  t.same({ id: r2.id, error: r2.error }, { id: 0, error: 'unauthorized' });
  t.equal((await d.closed).code, 4401);
});

t.test('no hello in time: close 1008', async (t) => {
  const g = await gateway({ hello_timeout_ms: 100 });
  const c = await Raw.connect(g.address.url);
  const { code, reason } = await within(3000, c.closed, 'close');
  t.equal(code, 1008);
  t.match(reason, /no hello/);
});

// ---------------------------------------------------------------------------------------------------
// Framing.

t.test('a text frame closes with 1003', async (t) => {
  const c = await Raw.hello(URL, ADMIN);
  c.sendBytes(JSON.stringify({ id: 1, op: 'lookup_accounts', ids: [1] }), false);
  t.equal((await c.closed).code, 1003);
  const before = await Raw.connect(URL);
  before.sendBytes('hello', false);
  t.equal((await before.closed).code, 1003, 'also before hello');
  await engineStillUp(t);
});

t.test('a frame over the limit closes with 1009', async (t) => {
  const c = await Raw.hello(URL, ADMIN);
  c.sendBytes(Buffer.alloc(4 * MiB + 1));
  t.equal((await c.closed).code, 1009);
  const small = await gateway({ frame_bytes_max: 1024 });
  const d = await Raw.hello(small.address.url, ADMIN);
  d.send({ id: 1, op: 'lookup_accounts', ids: Array.from({ length: 200 }, (_, i) => 2 ** 40 + i) }); // ~1.8 KB
  t.equal((await d.closed).code, 1009, 'a configured limit');
  await engineStillUp(t);
});

t.test('undecodable frames close with 1007', async (t) => {
  const valid = packr.pack({ id: 1, op: 'lookup_accounts', ids: [1, 2, 3] });
  const cases: Array<[string, Uint8Array]> = [
    ['random bytes', Buffer.from('c1d4ffe7a0', 'hex')],
    ['more random bytes', Buffer.from([0xde, 0xff, 0xff, 0x01])],
    ['truncated msgpack', valid.subarray(0, valid.length - 3)],
    ['trailing bytes', Buffer.concat([valid, Buffer.from([0x00])])],
    ['an empty frame', Buffer.alloc(0)],
    ['an array, not a map', packr.pack([1, 'lookup_accounts'])],
  ];
  for (const [name, bytes] of cases) {
    const c = await Raw.hello(URL, ADMIN);
    c.sendBytes(bytes);
    t.equal((await c.closed).code, 1007, name);
  }
  const early = await Raw.connect(URL);
  early.sendBytes(Buffer.from([0xc1]));
  t.equal((await early.closed).code, 1007, 'before hello too');
  await engineStillUp(t);
});

// ---------------------------------------------------------------------------------------------------
// Envelope and validation.

t.test('unknown ops', async (t) => {
  const c = await Raw.hello(URL, ADMIN);
  const r = await c.request({ op: 'drop_tables' });
  t.equal(r.error, 'unknown_op');
  t.match(r.message, /drop_tables/);
  c.close();
});

t.test('missing or unusable ids are invalid_request answered with id 0', async (t) => {
  const c = await Raw.hello(URL, ADMIN);
  for (const [name, id] of [
    ['missing', undefined],
    ['a string', '7'],
    ['negative', -1],
    ['a fraction', 1.5],
    ['above u32', 2 ** 32],
    ['null', null],
  ] as const) {
    c.send(id === undefined ? { op: 'lookup_accounts', ids: [1] } : { id, op: 'lookup_accounts', ids: [1] });
    const r = await c.next();
    t.same({ id: r.id, error: r.error, field: r.field }, { id: 0, error: 'invalid_request', field: 'id' }, name);
  }
  const noOp = await c.request({ ids: [1] });
  t.same({ error: noOp.error, field: noOp.field }, { error: 'invalid_request', field: 'op' }, 'missing op');
  const max = await c.request({ id: 2 ** 32 - 1, op: 'lookup_accounts', ids: [] });
  t.same(max, { id: 2 ** 32 - 1, accounts: [] }, 'the largest u32 id is fine');
  c.close();
  await engineStillUp(t);
});

t.test('missing and mistyped fields are invalid_request naming the field', async (t) => {
  const c = await Raw.hello(URL, ADMIN);
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ['no accounts', { op: 'create_accounts' }, 'accounts'],
    ['accounts not an array', { op: 'create_accounts', accounts: { id: 1 } }, 'accounts'],
    ['account not a map', { op: 'create_accounts', accounts: [7] }, 'accounts[0]'],
    ['missing ledger', { op: 'create_accounts', accounts: [{ id: 1, code: 1 }] }, 'accounts[0].ledger'],
    ['unknown account field', { op: 'create_accounts', accounts: [account(1, { colour: 'red' })] }, 'accounts[0].colour'],
    ['unknown param', { op: 'create_accounts', accounts: [], dry_run: true }, 'dry_run'],
    ['ledger as a string', { op: 'create_accounts', accounts: [account(1, { ledger: '1' })] }, 'accounts[0].ledger'],
    ['code above u16', { op: 'create_accounts', accounts: [account(1, { code: 65536 })] }, 'accounts[0].code'],
    ['negative id', { op: 'create_accounts', accounts: [account(-5)] }, 'accounts[0].id'],
    ['negative bigint id', { op: 'create_accounts', accounts: [account(-(2n ** 40n))] }, 'accounts[0].id'],
    ['fractional amount', { op: 'create_transfers', transfers: [{ id: 1, debit_account_id: 1, credit_account_id: 2, amount: 0.5, ledger: 1, code: 1 }] }, 'transfers[0].amount'],
    ['amount as a string', { op: 'create_transfers', transfers: [{ id: 1, debit_account_id: 1, credit_account_id: 2, amount: '100', ledger: 1, code: 1 }] }, 'transfers[0].amount'],
    // MessagePack cannot carry 2^64 as a uint: a client that tries sends a float, which may have been rounded.
    ['amount 2^64 (as a float)', { op: 'create_transfers', transfers: [{ id: 1, debit_account_id: 1, credit_account_id: 2, amount: 2 ** 64, ledger: 1, code: 1 }] }, 'transfers[0].amount'],
    ['id 2^53+2 as a float', { op: 'lookup_accounts', ids: [1, 2 ** 53 + 2] }, 'ids[1]'],
    ['missing transfer account', { op: 'create_transfers', transfers: [{ id: 1, credit_account_id: 2, amount: 1, ledger: 1, code: 1 }] }, 'transfers[0].debit_account_id'],
    ['ids not an array', { op: 'lookup_transfers', ids: 5 }, 'ids'],
    ['no filter', { op: 'get_account_transfers' }, 'filter'],
    ['filter without limit', { op: 'get_account_balances', filter: { account_id: 1 } }, 'filter.limit'],
    ['limit above 8190', { op: 'query_accounts', filter: { limit: 8191 } }, 'filter.limit'],
    ['unknown filter flag', { op: 'query_transfers', filter: { limit: 1, flags: 2 } }, 'filter.flags'],
  ];
  for (const [name, frame, field] of cases) {
    const r = await c.request(frame);
    t.same({ error: r.error, field: r.field }, { error: 'invalid_request', field }, name);
    const last = field.split('.').pop() as string;
    t.ok(typeof r.message === 'string' && r.message.includes(last), `${name}: the message names ${last}`);
  }
  const lookup = await c.request({ op: 'lookup_accounts', ids: [1, 2] });
  t.same(lookup, { id: lookup.id, accounts: [] }, 'nothing was created by the rejected requests');
  c.close();
  await engineStillUp(t);
});

t.test('more than 8190 events is too_many_events', async (t) => {
  const c = await Raw.hello(URL, ADMIN);
  const accounts = Array.from({ length: 8191 }, (_, i) => account(900_000 + i));
  const r = await c.request({ op: 'create_accounts', accounts });
  t.same({ error: r.error, field: r.field }, { error: 'too_many_events', field: 'accounts' });
  const ids = await c.request({ op: 'lookup_accounts', ids: Array.from({ length: 8191 }, (_, i) => i + 1) });
  t.same({ error: ids.error, field: ids.field }, { error: 'too_many_events', field: 'ids' });
  const check = await c.request({ op: 'lookup_accounts', ids: [900_000] });
  t.same(check.accounts, [], 'nothing created');
  c.close();
});

// ---------------------------------------------------------------------------------------------------
// Scopes.

t.test('an op outside the token scopes is forbidden and changes nothing', async (t) => {
  const reader = await Raw.hello(URL, READER);
  const w = await reader.request({ op: 'create_accounts', accounts: [account(500)] });
  t.equal(w.error, 'forbidden');
  t.match(w.message, /ledger:write/);
  const r = await reader.request({ op: 'lookup_accounts', ids: [500] });
  t.same(r.accounts, [], 'a reader can read');

  const writer = await Raw.hello(URL, WRITER);
  const lookup = await writer.request({ op: 'query_accounts', filter: { limit: 10 } });
  t.equal(lookup.error, 'forbidden', 'a writer without ledger:read cannot query');
  const created = await writer.request({ op: 'create_accounts', accounts: [account(501)] });
  t.same(created.status, [0]);

  const admin = await Raw.hello(URL, ADMIN);
  const seen = await admin.request({ op: 'lookup_accounts', ids: [500, 501] });
  t.same(
    (seen.accounts as Array<{ id: number }>).map((a) => a.id),
    [501],
    'the forbidden create changed nothing; the allowed one happened',
  );
  reader.close();
  writer.close();
  admin.close();
});

t.test('a revoked token loses its open connections (close 4401)', async (t) => {
  const victim = token('victim', ['ledger:read']);
  const c = await Raw.hello(URL, victim);
  const bystander = await Raw.hello(URL, READER);
  t.ok((await c.request({ op: 'lookup_accounts', ids: [1] })).accounts);
  // Revoked by another process, as `keel token revoke` does.
  const cli = TokenStore.open(dir);
  if (!cli.ok) throw new Error(cli.message);
  t.ok(cli.value.revoke('victim').ok);
  const { code, reason } = await within(5000, c.closed, 'close after revoke');
  t.equal(code, 4401);
  t.match(reason, /revoked/);
  const again = await Raw.connect(URL);
  again.send({ id: 1, op: 'hello', token: victim });
  t.equal((await again.next()).error, 'unauthorized', 'the token no longer opens sessions');
  t.ok((await bystander.request({ op: 'lookup_accounts', ids: [1] })).accounts, 'other tokens keep working');
  bystander.close();
});

// ---------------------------------------------------------------------------------------------------
// The ledger end to end.

t.test('create accounts and transfers, then read them back', async (t) => {
  const c = await Raw.hello(URL, ADMIN);
  const A = 10_001;
  const B = 10_002;
  const BIG = 2n ** 64n - 2n; // a u64 past 2^53 stays exact
  const accounts = await c.request({
    op: 'create_accounts',
    accounts: [account(A, { flags: AccountFlags.history, user_data_64: BIG }), account(B, { user_data_32: 7 })],
  });
  t.same(accounts.status, [0, 0]);
  const ts = accounts.timestamp as bigint[];
  t.equal(typeof ts[0], 'bigint', 'nanosecond timestamps arrive as uint64');
  t.ok(ts[1] > ts[0]);

  const transfers = await c.request({
    op: 'create_transfers',
    transfers: [
      { id: 20_001, debit_account_id: A, credit_account_id: B, amount: 100, ledger: 1, code: 1 },
      { id: 20_002, debit_account_id: A, credit_account_id: B, amount: 2n ** 40n, ledger: 1, code: 1, flags: 2, timeout: 3600 },
      { id: 20_003, debit_account_id: A, credit_account_id: 999_999, amount: 1, ledger: 1, code: 1 },
    ],
  });
  t.same(transfers.status, [CreateTransferStatus.created, CreateTransferStatus.created, CreateTransferStatus.credit_account_not_found]);
  t.equal((transfers.timestamp as unknown[])[2], 0, 'a failed event has timestamp 0');

  const again = await c.request({
    op: 'create_transfers',
    transfers: [{ id: 20_001, debit_account_id: A, credit_account_id: B, amount: 100, ledger: 1, code: 1 }],
  });
  t.same(again.status, [CreateTransferStatus.exists], 'idempotent');
  t.same(again.timestamp, [(transfers.timestamp as unknown[])[0]], 'with the original timestamp');

  const looked = await c.request({ op: 'lookup_accounts', ids: [B, 123_456, A] });
  const [b, a] = looked.accounts as Array<Record<string, unknown>>;
  t.same(
    { id: a.id, debits_posted: a.debits_posted, debits_pending: a.debits_pending, credits_posted: a.credits_posted, user_data_64: a.user_data_64 },
    { id: A, debits_posted: 100, debits_pending: 2 ** 40, credits_posted: 0, user_data_64: BIG },
  );
  t.same({ id: b.id, credits_posted: b.credits_posted, credits_pending: b.credits_pending, user_data_32: b.user_data_32 }, { id: B, credits_posted: 100, credits_pending: 2 ** 40, user_data_32: 7 });

  const lt = await c.request({ op: 'lookup_transfers', ids: [20_002, 20_003] });
  t.same(
    (lt.transfers as Array<Record<string, unknown>>).map((x) => [x.id, x.amount, x.flags, x.timeout]),
    [[20_002, 2 ** 40, 2, 3600]],
    'failed transfers are not stored',
  );

  const balances = await c.request({ op: 'get_account_balances', filter: { account_id: A, limit: 10, flags: 3 } });
  t.same(
    (balances.balances as Array<Record<string, unknown>>).map((x) => [x.debits_posted, x.debits_pending]),
    [
      [100, 0],
      [100, 2 ** 40],
    ],
    'history of an account with the history flag',
  );
  const history = await c.request({ op: 'get_account_transfers', filter: { account_id: B, limit: 10, flags: 2 | 4 } });
  t.same((history.transfers as Array<{ id: number }>).map((x) => x.id), [20_002, 20_001], 'credits, reversed');
  const q = await c.request({ op: 'query_accounts', filter: { user_data_32: 7, limit: 5 } });
  t.same((q.accounts as Array<{ id: number }>).map((x) => x.id), [B]);
  const qt = await c.request({ op: 'query_transfers', filter: { ledger: 1, code: 1, limit: 8190 } });
  t.ok((qt.transfers as unknown[]).length >= 2);

  const post = await c.request({
    op: 'create_transfers',
    transfers: [{ id: 20_004, debit_account_id: 0, credit_account_id: 0, amount: 2n ** 64n - 1n, pending_id: 20_002, ledger: 0, code: 0, flags: 4 }],
  });
  t.same(post.status, [CreateTransferStatus.created], 'post the pending transfer (amount 2^64-1 posts all of it)');
  const after = await c.request({ op: 'lookup_accounts', ids: [A] });
  const a2 = (after.accounts as Array<Record<string, unknown>>)[0];
  t.same([a2.debits_posted, a2.debits_pending], [100 + 2 ** 40, 0]);
  c.close();
});

t.test('responses may come out of order, each carries its id', async (t) => {
  const c = await Raw.hello(URL, ADMIN);
  const replies = await Promise.all(
    Array.from({ length: 50 }, (_, i) =>
      i % 2 === 0 ? c.request({ op: 'lookup_accounts', ids: [A_ID] }) : c.request({ op: 'create_accounts', accounts: [account(30_000 + i)] }),
    ),
  );
  t.equal(replies.length, 50);
  t.ok(replies.every((r) => r.error === undefined));
  c.close();
});

// ---------------------------------------------------------------------------------------------------
// Load: in-flight cap, deadlines, engine errors, slow readers, connection cap.

/** An engine whose every call waits for `delay_ms` (forever if null) and then answers `result`. */
function stubEngine(delay_ms: number | null, result: ShardResult = { accounts: [] }): LedgerEngine & { calls: number } {
  const stub = {
    calls: 0,
    answer(): Promise<ShardResult> {
      stub.calls++;
      if (delay_ms === null) return new Promise(() => {});
      return new Promise((resolve) => setTimeout(() => resolve(result), delay_ms));
    },
    createAccounts: () => stub.answer(),
    createTransfers: () => stub.answer(),
    lookupAccounts: () => stub.answer(),
    lookupTransfers: () => stub.answer(),
    getAccountTransfers: () => stub.answer(),
    getAccountBalances: () => stub.answer(),
    queryAccounts: () => stub.answer(),
    queryTransfers: () => stub.answer(),
  };
  return stub;
}

t.test('past the in-flight cap: too_many_inflight', async (t) => {
  const g = await gateway({ inflight_per_connection: 4 });
  const c = await Raw.hello(g.address.url, ADMIN);
  const replies = await Promise.all(Array.from({ length: 100 }, () => c.request({ op: 'lookup_accounts', ids: [A_ID] })));
  const refused = replies.filter((r) => r.error === 'too_many_inflight');
  const answered = replies.filter((r) => Array.isArray(r.accounts));
  t.ok(refused.length > 0, `${refused.length} refused`);
  t.ok(answered.length >= 4, `${answered.length} answered`);
  t.equal(refused.length + answered.length, 100, 'every request got exactly one reply');
  t.match(refused[0].message, /limit 4/);
  c.close();
});

t.test('a duplicate in-flight id is refused; the deadline answers timeout', async (t) => {
  const stub = stubEngine(null);
  const g = await startGateway({ engine: stub, tokens, port: 0, logger: quiet, request_timeout_ms: 200 });
  t.teardown(() => g.close());
  const c = await Raw.hello(g.address.url, ADMIN);
  c.send({ id: 7, op: 'lookup_accounts', ids: [1] });
  c.send({ id: 7, op: 'lookup_accounts', ids: [2] });
  const dup = await c.next();
  t.same({ id: dup.id, error: dup.error, field: dup.field }, { id: 7, error: 'invalid_request', field: 'id' }, 'at once');
  const r = await c.next();
  t.same({ id: r.id, error: r.error }, { id: 7, error: 'timeout' }, 'then the first one times out');
  t.match(r.message, /resending the same events is safe/);
  t.equal(stub.calls, 1, 'the duplicate never reached the engine');
  c.close();
});

t.test('the observer hears of every request once, also of those cut off by a closed connection', async (t) => {
  const heard: Array<[string, string]> = [];
  const observer = { request: (op: string, outcome: string) => void heard.push([op, outcome]), rejected: () => undefined };
  const g = await startGateway({ engine: stubEngine(null), tokens, port: 0, logger: quiet, request_timeout_ms: 60_000, observer });
  t.teardown(() => g.close());
  const c = await Raw.hello(g.address.url, ADMIN);
  c.send({ id: 1, op: 'lookup_accounts', ids: [1] });
  c.send({ id: 2, op: 'nope' });
  await c.next();
  c.close();
  for (let i = 0; i < 100 && heard.length < 2; i++) await sleep(10);
  t.same(heard.sort(), [['lookup_accounts', 'connection_closed'], ['unknown', 'unknown_op']]);
  await sleep(50);
  t.equal(heard.length, 2, 'nothing twice');
});

t.test('a late result after the deadline is dropped', async (t) => {
  const g = await startGateway({ engine: stubEngine(300), tokens, port: 0, logger: quiet, request_timeout_ms: 50 });
  t.teardown(() => g.close());
  const c = await Raw.hello(g.address.url, ADMIN);
  const r = await c.request({ id: 11, op: 'lookup_accounts', ids: [1] });
  t.equal(r.error, 'timeout');
  await sleep(500);
  t.equal(c.unclaimed, 0, 'no second reply for id 11');
  const reused = await c.request({ id: 11, op: 'lookup_accounts', ids: [1] });
  t.equal(reused.error, 'timeout', 'the id can be reused after its timeout');
  c.close();
});

t.test('engine errors pass through', async (t) => {
  for (const error of ['busy', 'unavailable', 'internal'] as const) {
    const g = await startGateway({ engine: stubEngine(0, { error, message: `engine says ${error}` }), tokens, port: 0, logger: quiet });
    const c = await Raw.hello(g.address.url, ADMIN);
    const r = await c.request({ op: 'create_accounts', accounts: [account(1)] });
    t.same({ error: r.error, message: r.message }, { error, message: `engine says ${error}` });
    c.close();
    await g.close();
  }
});

t.test('a client that never reads does not hold up others and is closed with 1008', async (t) => {
  // 4000 accounts: each lookup of all of them is a reply of ~0.7 MB.
  const setup = await Raw.hello(URL, ADMIN);
  const ids = Array.from({ length: 4000 }, (_, i) => 100_000 + i);
  const created = await setup.request({ op: 'create_accounts', accounts: ids.map((id) => account(id)) });
  t.ok((created.status as number[]).every((s) => s === 0));
  setup.close();

  for (const variant of ['stalled', 'overflow'] as const) {
    const g = await gateway(
      variant === 'stalled'
        ? { send_high_water_bytes: 64 * 1024, send_buffer_max_bytes: 1024 * MiB, send_stall_ms: 500, close_grace_ms: 200 }
        : { send_high_water_bytes: 64 * 1024, send_buffer_max_bytes: 4 * MiB, send_stall_ms: 60_000, close_grace_ms: 200 },
    );
    const slow = await Raw.hello(g.address.url, ADMIN);
    const good = await Raw.hello(g.address.url, ADMIN);
    slow.ws.pause(); // never reads its socket again
    for (let i = 0; i < 64; i++) slow.send({ id: 1000 + i, op: 'lookup_accounts', ids });
    // Meanwhile another connection is served.
    for (let i = 0; i < 5; i++) {
      const r = await within(5000, good.request({ op: 'lookup_accounts', ids: [ids[i]] }), `${variant}: reply to the good client`);
      t.equal((r.accounts as unknown[]).length, 1);
    }
    await until(`${variant}: the slow connection is closed`, () => g.connections === 1, 10_000);
    t.pass(`${variant}: closed`);
    const r = await within(5000, good.request({ op: 'lookup_accounts', ids }), `${variant}: good client after`);
    t.equal((r.accounts as unknown[]).length, 4000, `${variant}: the good client still gets big replies`);
    slow.ws.resume();
    const { code } = await within(5000, slow.closed, 'slow client sees the close');
    t.ok(code === 1008 || code === 1006, `${variant}: slow client closed (${code})`);
    good.close();
  }
});

t.test('a peer that answers no pings is dropped, one that does stays', async (t) => {
  const g = await gateway({ ping_interval_ms: 100 });
  const mute = await Raw.connect(g.address.url, { autoPong: false });
  const lively = await Raw.hello(g.address.url, ADMIN);
  const { code } = await within(3000, mute.closed, 'mute peer dropped');
  t.equal(code, 1006, 'terminated without a closing handshake');
  await sleep(400);
  const r = await lively.request({ op: 'lookup_accounts', ids: [A_ID] });
  t.equal((r.accounts as unknown[]).length, 1, 'the answering peer is still connected');
  lively.close();
});

t.test('past connections_max new upgrades get HTTP 503', async (t) => {
  const g = await gateway({ connections_max: 2 });
  const a = await Raw.connect(g.address.url);
  const b = await Raw.connect(g.address.url);
  const status = await new Promise<number>((resolve) => {
    const ws = new WebSocket(g.address.url);
    ws.on('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.on('error', () => {});
    ws.on('open', () => resolve(101));
  });
  t.equal(status, 503);
  a.close();
  await until('a slot frees up', () => g.connections === 1);
  const c = await Raw.hello(g.address.url, ADMIN);
  t.pass('a new connection is accepted once one closed');
  b.close();
  c.close();
});

t.test('other paths are 404, plain HTTP is 426', async (t) => {
  const wrong = main.address.url.replace('/v1', '/v2');
  const status = await new Promise<number>((resolve) => {
    const ws = new WebSocket(wrong);
    ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
    ws.on('error', () => {});
  });
  t.equal(status, 404);
  const res = await fetch(main.address.url.replace('ws:', 'http:'));
  t.equal(res.status, 426);
  await res.text();
});

t.test('close() answers in-flight requests, then closes with 1001', async (t) => {
  const g = await startGateway({ engine: stubEngine(300), tokens, port: 0, logger: quiet });
  const c = await Raw.hello(g.address.url, ADMIN);
  const pending = c.request({ op: 'lookup_accounts', ids: [1] });
  await sleep(20);
  const closing = g.close();
  const refused = await c.request({ op: 'lookup_accounts', ids: [1] });
  t.equal(refused.error, 'unavailable', 'no new requests while draining');
  t.same((await pending).accounts, [], 'the in-flight request is answered');
  t.equal((await c.closed).code, 1001);
  await closing;
  await t.rejects(Raw.connect(g.address.url), 'no longer listening');
});

t.test('wss when TLS is configured', async (t) => {
  const tls_dir = mkdtempSync(join(tmpdir(), 'keel-tls-'));
  t.teardown(() => rmSync(tls_dir, { recursive: true, force: true }));
  try {
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=localhost',
      '-keyout', join(tls_dir, 'key.pem'), '-out', join(tls_dir, 'cert.pem'),
    ], { stdio: 'ignore' });
  } catch {
    t.pass('openssl is not available: wss not tested');
    return;
  }
  const g = await gateway({ tls: { cert: readFileSync(join(tls_dir, 'cert.pem')), key: readFileSync(join(tls_dir, 'key.pem')) } });
  t.match(g.address.url, /^wss:\/\//);
  const c = await Raw.connect(g.address.url, { rejectUnauthorized: false });
  const hello = await c.request({ op: 'hello', token: ADMIN });
  t.equal(hello.version, 1);
  const r = await c.request({ op: 'lookup_accounts', ids: [A_ID] });
  t.equal((r.accounts as unknown[]).length, 1);
  c.close();
});

t.test('the engine is still up after everything', async (t) => {
  await engineStillUp(t);
});
