// The channel client against a small fake Keel server (ws + msgpackr on 127.0.0.1, port 0).

import t, { type Test } from 'tap';
import { once } from 'node:events';
import { isDeepStrictEqual } from 'node:util';
import type { AddressInfo } from 'node:net';
import { Packr } from 'msgpackr';
import { WebSocketServer, type WebSocket } from 'ws';
import {
  AccountFlags,
  CreateTransferStatus,
  KeelError,
  TransferFlags,
  U64_MAX,
  accountStatusName,
  connect,
  transferStatusName,
  type ClientState,
  type ConnectOptions,
  type KeelClient,
  type TransferInput,
} from '../src/client/index.ts';
import { CANONICAL_U64, encodeCreateFrame, encodeFrame, u64, type WireMap } from '../src/client/codec.ts';
import { accountEvents, transferEvents } from '../src/client/requests.ts';
import { rng } from './support/order.ts';
import { decodeTransfers } from '../src/ledger/decode.ts';

// ---------------------------------------------------------------------------------------------------
// Fake server.

type Msg = Record<string, unknown> & { id: number; op: string };
interface Frame {
  raw: Buffer;
  msg: Msg;
  ws: WebSocket;
}
type Handler = (frame: Frame, reply: (body: Record<string, unknown>) => void) => void;

const packr = new Packr({ useRecords: false, int64AsType: 'auto', largeBigIntToFloat: false } as unknown as ConstructorParameters<typeof Packr>[0]);

class FakeServer {
  readonly wss: WebSocketServer;
  token = 'secret';
  limits = { events_per_request: 8190, inflight_per_connection: 64, frame_bytes: 4 * 1024 * 1024 };
  hellos: Msg[] = [];
  frames: Frame[] = [];
  sockets = new Set<WebSocket>();
  handler: Handler = defaultHandler;
  private next_timestamp = 1000n;

  private constructor(wss: WebSocketServer) {
    this.wss = wss;
    wss.on('connection', (ws) => this.accept(ws));
  }

  static async start(options: { autoPong?: boolean } = {}): Promise<FakeServer> {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, path: '/v1', ...options });
    await once(wss, 'listening');
    return new FakeServer(wss);
  }

  get url(): string {
    return `ws://127.0.0.1:${(this.wss.address() as AddressInfo).port}/v1`;
  }

  timestamp(): bigint {
    return this.next_timestamp++;
  }

  /** Requests of one op, in arrival order. */
  ops(op: string): Frame[] {
    return this.frames.filter((f) => f.msg.op === op);
  }

  private accept(ws: WebSocket): void {
    this.sockets.add(ws);
    ws.on('close', () => this.sockets.delete(ws));
    let authed = false;
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (!isBinary) return ws.close(1003);
      const msg = packr.unpack(data) as Msg;
      const reply = (body: Record<string, unknown>): void => {
        if (ws.readyState === ws.OPEN) ws.send(packr.pack({ id: msg.id, ...body }));
      };
      if (!authed) {
        if (msg.op !== 'hello' || msg.token !== this.token) {
          reply({ error: 'unauthorized', message: 'bad token' });
          ws.close(4401, 'unauthorized');
          return;
        }
        authed = true;
        this.hellos.push(msg);
        reply({ center: 'fra-1', version: 1, limits: this.limits });
        return;
      }
      const frame = { raw: Buffer.from(data), msg, ws };
      this.frames.push(frame);
      this.handler(frame, reply);
    });
  }

  async stop(): Promise<void> {
    for (const ws of this.sockets) ws.terminate();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }
}

/** Creates succeed; lookups find nothing. */
function defaultHandler(this: void, frame: Frame, reply: (body: Record<string, unknown>) => void): void {
  const events = (frame.msg.transfers ?? frame.msg.accounts) as unknown[] | undefined;
  if (events !== undefined) {
    reply({ status: events.map(() => 0), timestamp: events.map((_, i) => 1000 + i) });
    return;
  }
  reply({ accounts: [], transfers: [], balances: [] });
}

async function setup(
  t: Test,
  options: Partial<ConnectOptions> = {},
  configure: (server: FakeServer) => void = () => {},
): Promise<{ server: FakeServer; client: KeelClient }> {
  const server = await FakeServer.start();
  configure(server);
  const client = await connect({ url: server.url, token: 'secret', timeout_ms: 2000, ...options });
  t.teardown(async () => {
    await client.close();
    await server.stop();
  });
  return { server, client };
}

function tr(id: bigint, fields: Partial<TransferInput> = {}): TransferInput {
  return { id, debit_account_id: 1n, credit_account_id: 2n, amount: 10n, ledger: 1, code: 1, ...fields };
}

function idsOf(frame: Frame, key = 'transfers'): bigint[] {
  return (frame.msg[key] as Array<{ id: number | bigint }>).map((e) => BigInt(e.id));
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await sleep(5);
  }
}

async function rejection(p: Promise<unknown>): Promise<KeelError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof KeelError) return e;
    throw e;
  }
  throw new Error('expected a rejection');
}

// ---------------------------------------------------------------------------------------------------

t.test('status enums by name and name of code', async (t) => {
  t.equal(CreateTransferStatus.exceeds_credits, 65);
  t.equal(transferStatusName(CreateTransferStatus.exceeds_credits), 'exceeds_credits');
  t.equal(transferStatusName(21), 'exists');
  t.equal(accountStatusName(17), 'exists');
  t.equal(transferStatusName(100), undefined);
  t.equal(accountStatusName(-1), undefined);
});

t.test('hello handshake exposes limits and center', async (t) => {
  const { server, client } = await setup(t, { client_name: 'portal-7' }, (s) => {
    s.limits = { events_per_request: 100, inflight_per_connection: 3, frame_bytes: 65536 };
  });
  t.equal(server.hellos.length, 1);
  t.equal(server.hellos[0].token, 'secret');
  t.equal(server.hellos[0].client, 'portal-7');
  t.equal(server.hellos[0].op, 'hello');
  t.same(client.limits, { events_per_request: 100, inflight_per_connection: 3, frame_bytes: 65536 });
  t.equal(client.center, 'fra-1');
  t.equal(client.state, 'open');
});

t.test('a bad token is unauthorized (the server closes 4401)', async (t) => {
  const server = await FakeServer.start();
  t.teardown(() => server.stop());
  const closes: number[] = [];
  server.wss.on('connection', (ws) => ws.on('close', (code) => closes.push(code)));
  const e = await rejection(connect({ url: server.url, token: 'wrong', timeout_ms: 2000 }));
  t.equal(e.code, 'unauthorized');
  t.equal(e.outcome_unknown, false);
  await until(() => closes.length === 1);
  t.same(closes, [4401]);

  // A server that only closes with 4401 (no reply) is unauthorized too.
  server.wss.removeAllListeners('connection');
  server.wss.on('connection', (ws) => ws.close(4401, 'unauthorized'));
  t.equal((await rejection(connect({ url: server.url, token: 'secret', timeout_ms: 2000 }))).code, 'unauthorized');
});

t.test('nothing listening: connection_failed', async (t) => {
  const server = await FakeServer.start();
  const url = server.url;
  await server.stop();
  const e = await rejection(connect({ url, token: 'secret', timeout_ms: 1000 }));
  t.equal(e.code, 'connection_failed');
});

t.test('concurrent creates share one frame; the reply splits back per call', async (t) => {
  const { server, client } = await setup(t, {}, (s) => {
    s.handler = (frame, reply) => {
      const events = (frame.msg.transfers ?? frame.msg.accounts) as unknown[];
      // Distinct statuses and timestamps per position, to check the split.
      reply({ status: events.map((_, i) => i), timestamp: events.map((_, i) => 5000 + i) });
    };
  });
  const a = client.createTransfers([tr(1n), tr(2n)]);
  const b = client.createTransfers([tr(3n), tr(4n), tr(5n)]);
  const c = client.createTransfers([tr(6n)]);
  const acc = client.createAccounts([{ id: 100n, ledger: 1, code: 1 }]);
  const [ra, rb, rc, racc] = await Promise.all([a, b, c, acc]);

  const creates = server.ops('create_transfers');
  t.equal(creates.length, 1, 'one create_transfers frame');
  t.same(idsOf(creates[0]), [1n, 2n, 3n, 4n, 5n, 6n], 'calls contiguous and in order');
  t.equal(server.ops('create_accounts').length, 1, 'accounts in their own request');
  t.same(ra, { status: [0, 1], timestamp: [5000n, 5001n] });
  t.same(rb, { status: [2, 3, 4], timestamp: [5002n, 5003n, 5004n] });
  t.same(rc, { status: [5], timestamp: [5005n] });
  t.same(racc, { status: [0], timestamp: [5000n] });
  t.equal(typeof ra.timestamp[0], 'bigint');

  // Optional zero fields are left out of the wire.
  const first = (creates[0].msg.transfers as Array<Record<string, unknown>>)[0];
  t.same(Object.keys(first).sort(), ['amount', 'code', 'credit_account_id', 'debit_account_id', 'id', 'ledger']);

  // An empty call answers at once, without a request.
  t.same(await client.createTransfers([]), { status: [], timestamp: [] });
  t.equal(server.ops('create_transfers').length, 1);
});

t.test('whole-request errors fail every call of the batch', async (t) => {
  const { client } = await setup(t, {}, (s) => {
    s.handler = (_frame, reply) => reply({ error: 'busy', message: 'engine overloaded' });
  });
  const [a, b] = await Promise.all([rejection(client.createTransfers([tr(1n)])), rejection(client.createTransfers([tr(2n)]))]);
  t.equal(a.code, 'busy');
  t.equal(a.message, 'engine overloaded');
  t.equal(a.outcome_unknown, false);
  t.equal(b.code, 'busy');
});

t.test('linked chains are never split at the batch limit', async (t) => {
  const { server, client } = await setup(t, { max_batch_events: 5 });
  const L = TransferFlags.linked;
  // A: 3 plain events; B: a chain of 3 (would straddle the limit after A); C: 2 plain.
  const a = client.createTransfers([tr(1n), tr(2n), tr(3n)]);
  const b = client.createTransfers([tr(4n, { flags: L }), tr(5n, { flags: L }), tr(6n)]);
  const c = client.createTransfers([tr(7n), tr(8n)]);
  await Promise.all([a, b, c]);
  const frames = server.ops('create_transfers').map((f) => idsOf(f));
  t.same(frames, [[1n, 2n, 3n], [4n, 5n, 6n, 7n, 8n]]);
  for (const f of server.ops('create_transfers')) {
    const events = f.msg.transfers as Array<{ flags?: number }>;
    t.equal((events[events.length - 1].flags ?? 0) & L, 0, 'no frame ends inside a chain');
    t.ok(events.length <= 5);
  }

  // A call that leaves its chain open ends its request: nothing is appended after it.
  server.frames = [];
  const d = client.createTransfers([tr(10n), tr(11n, { flags: L })]);
  const e = client.createTransfers([tr(12n)]);
  await Promise.all([d, e]);
  t.same(server.ops('create_transfers').map((f) => idsOf(f)), [[10n, 11n], [12n]]);

  // Calls of different import modes never share a request (the server reads the mode off the first event).
  server.frames = [];
  const imported = TransferFlags.imported;
  await Promise.all([
    client.createTransfers([tr(20n, { flags: imported, timestamp: 5n })]),
    client.createTransfers([tr(21n)]),
    client.createTransfers([tr(22n, { flags: imported, timestamp: 6n })]),
  ]);
  t.same(server.ops('create_transfers').map((f) => idsOf(f)), [[20n, 22n], [21n]]);

  // A call larger than the limit is refused locally.
  const big = Array.from({ length: 6 }, (_, i) => tr(BigInt(100 + i)));
  const err = await rejection(client.createTransfers(big));
  t.equal(err.code, 'too_many_events');
  t.equal(err.outcome_unknown, false);
});

t.test('a batch over the frame limit is halved; a lone call over it fails', async (t) => {
  const { server, client } = await setup(t, {}, (s) => {
    s.limits.frame_bytes = 400;
  });
  const calls = Array.from({ length: 6 }, (_, i) => client.createTransfers([tr(BigInt(2 * i + 1)), tr(BigInt(2 * i + 2))]));
  const results = await Promise.all(calls);
  t.same(results.map((r) => r.status), Array.from({ length: 6 }, () => [0, 0]));
  const frames = server.ops('create_transfers');
  t.ok(frames.length > 1, `split into ${frames.length} frames`);
  for (const f of frames) t.ok(f.raw.length <= 400, `frame of ${f.raw.length} bytes`);
  t.same(frames.flatMap((f) => idsOf(f)), Array.from({ length: 12 }, (_, i) => BigInt(i + 1)), 'order kept');
  const big = Array.from({ length: 10 }, (_, i) => tr(BigInt(100 + i)));
  const e = await rejection(client.createTransfers(big));
  t.equal(e.code, 'frame_too_large');
  t.equal(e.outcome_unknown, false);
});

t.test('heartbeat: a peer that stops answering pings is dropped', async (t) => {
  const server = await FakeServer.start({ autoPong: false });
  t.teardown(() => server.stop());
  server.handler = () => {};
  const states: ClientState[] = [];
  const client = await connect({
    url: server.url,
    token: 'secret',
    heartbeat_ms: 30,
    reconnect: false,
    on_state_change: (state) => states.push(state),
  });
  const e = await rejection(client.lookupAccounts([1n]));
  t.equal(e.code, 'connection_closed');
  t.equal(e.outcome_unknown, true);
  await until(() => states.length === 1);
  t.same(states, ['closed']);
});

t.test('responses matched by id, in any order', async (t) => {
  const held: Array<() => void> = [];
  const { server, client } = await setup(t, {}, (s) => {
    s.handler = (frame, reply) => {
      const ids = frame.msg.ids as number[];
      held.push(() =>
        reply({ accounts: ids.map((id) => ({ id, ledger: 1, code: 1, flags: 0, debits_posted: id * 10, timestamp: 7 })) }),
      );
      if (held.length === 3) for (const r of held.reverse()) r();
    };
  });
  const results = await Promise.all([client.lookupAccounts([1n]), client.lookupAccounts([2n, 3n]), client.lookupAccounts([4n])]);
  t.same(
    results.map((r) => r.map((a) => a.id)),
    [[1n], [2n, 3n], [4n]],
  );
  t.equal(results[1][1].debits_posted, 30n);
  t.equal(results[0][0].credits_posted, 0n, 'missing u64 fields read as zero');
  const ids = server.ops('lookup_accounts').map((f) => f.msg.id);
  t.equal(new Set(ids).size, 3, 'distinct request ids');
  for (const id of ids) t.ok(Number.isInteger(id) && id >= 0 && id <= 0xffffffff, 'u32 id');
});

t.test('per-call timeout', async (t) => {
  const { server, client } = await setup(t, {}, (s) => {
    s.limits.inflight_per_connection = 1;
    s.handler = () => {}; // never answers
  });
  const sent = client.createTransfers([tr(1n)], { timeout_ms: 50 });
  const queued = client.createTransfers([tr(2n, { flags: TransferFlags.imported, timestamp: 1n })], { timeout_ms: 80 });
  const e1 = await rejection(sent);
  t.equal(e1.code, 'timeout');
  t.equal(e1.outcome_unknown, true, 'sent: outcome unknown');
  const e2 = await rejection(queued);
  t.equal(e2.code, 'timeout');
  t.equal(e2.outcome_unknown, false, 'never sent (the only in-flight slot was taken)');
  await sleep(30);
  t.equal(server.ops('create_transfers').length, 1, 'the timed-out queued call was never sent');
});

t.test('reconnect after a drop resends in-flight requests with the same events', async (t) => {
  const states: Array<[ClientState, string | undefined]> = [];
  let drops = 0;
  const applied = new Set<bigint>();
  const { server, client } = await setup(
    t,
    {
      reconnect: { initial_delay_ms: 10, max_delay_ms: 50 },
      on_state_change: (state, error) => states.push([state, error?.code]),
    },
    (s) => {
      s.handler = (frame, reply) => {
        if (frame.msg.op === 'lookup_transfers') {
          if (drops === 1) {
            drops++;
            frame.ws.terminate(); // dropped before answering a read
            return;
          }
          reply({ transfers: [] });
          return;
        }
        const events = frame.msg.transfers as Array<{ id: number }>;
        const status = events.map((e) => (applied.has(BigInt(e.id)) ? CreateTransferStatus.exists : CreateTransferStatus.created));
        for (const e of events) applied.add(BigInt(e.id));
        if (drops === 0) {
          drops++;
          frame.ws.terminate(); // applied, but the reply is lost
          return;
        }
        reply({ status, timestamp: events.map(() => 42) });
      };
    },
  );
  const [created, found] = await Promise.all([
    client.createTransfers([tr(1n), tr(2n, { amount: U64_MAX })]),
    (async () => {
      await until(() => drops === 1);
      return client.lookupTransfers([9n]);
    })(),
  ]);
  t.same(created.status, [CreateTransferStatus.exists, CreateTransferStatus.exists], 'applied before the drop: exists');
  t.same(found, []);
  const creates = server.ops('create_transfers');
  t.equal(creates.length, 2, 'sent twice');
  t.same(idsOf(creates[1]), idsOf(creates[0]), 'same event ids');
  t.same(creates[1].msg.transfers, creates[0].msg.transfers, 'same events');
  t.equal(server.hellos.length, 3, 'a new hello per connection');
  t.equal(client.state, 'open');
  await until(() => states.length >= 4);
  t.same(states, [
    ['reconnecting', 'connection_closed'],
    ['open', undefined],
    ['reconnecting', 'connection_closed'],
    ['open', undefined],
  ]);
});

t.test('an error answering a resent request leaves its outcome unknown (the first send may have been applied)', async (t) => {
  let sends = 0;
  const { client } = await setup(t, { reconnect: { initial_delay_ms: 10, max_delay_ms: 50 } }, (s) => {
    s.handler = (frame, reply) => {
      sends++;
      if (sends === 1) {
        frame.ws.terminate(); // maybe applied; the reply is lost
        return;
      }
      reply({ error: 'busy', message: 'queue full' }); // busy alone would mean: not applied
    };
  });
  const failed = await client.createTransfers([tr(1n)]).catch((e: unknown) => e as KeelError);
  t.equal(sends, 2, 'sent again after the reconnect');
  t.ok(failed instanceof KeelError && failed.code === 'busy', 'the resend was answered busy');
  t.equal((failed as KeelError).outcome_unknown, true, 'yet the outcome is unknown: the first send may have been applied');
});

t.test('reconnect keeps queued calls while the server is away', async (t) => {
  const { server, client } = await setup(t, { reconnect: { initial_delay_ms: 20, max_delay_ms: 40 } });
  // The server goes away (and refuses connections) for a while, then comes back on the same port.
  const port = (server.wss.address() as AddressInfo).port;
  for (const ws of server.sockets) ws.terminate();
  server.wss.close();
  await until(() => client.state === 'reconnecting');
  const pending = client.createTransfers([tr(1n)]);
  await sleep(100);
  const back = new WebSocketServer({ host: '127.0.0.1', port, path: '/v1' });
  await once(back, 'listening');
  back.on('connection', (ws) => {
    ws.on('message', (data: Buffer) => {
      const msg = packr.unpack(data) as Msg;
      if (msg.op === 'hello') ws.send(packr.pack({ id: msg.id, center: 'fra-2', version: 1, limits: server.limits }));
      else ws.send(packr.pack({ id: msg.id, status: [0], timestamp: [1] }));
    });
  });
  t.teardown(() => {
    for (const ws of back.clients) ws.terminate();
    back.close();
  });
  t.same(await pending, { status: [0], timestamp: [1n] });
  t.equal(client.center, 'fra-2');
});

t.test('reconnect disabled: a drop fails in-flight and queued calls', async (t) => {
  const { client } = await setup(t, { reconnect: false }, (s) => {
    s.handler = (frame) => frame.ws.terminate();
  });
  const e = await rejection(client.createTransfers([tr(1n)]));
  t.equal(e.code, 'connection_closed');
  t.equal(e.outcome_unknown, true);
  t.equal(client.state, 'closed');
  const after = await rejection(client.lookupAccounts([1n]));
  t.equal(after.code, 'client_closed');
});

t.test('a token revoked while reconnecting closes the client with unauthorized', async (t) => {
  const { server, client } = await setup(t, { reconnect: { initial_delay_ms: 10, max_delay_ms: 20 } }, (s) => {
    s.handler = (frame) => {
      s.token = 'rotated';
      frame.ws.terminate();
    };
  });
  const e = await rejection(client.createTransfers([tr(1n)]));
  t.equal(e.code, 'unauthorized');
  t.equal(e.outcome_unknown, true, 'it was sent before the drop');
  t.equal(client.state, 'closed');
  t.equal(server.ops('create_transfers').length, 1);
});

t.test('reconnect gives up after max_attempts', async (t) => {
  const server = await FakeServer.start();
  server.handler = () => {};
  const reconnect = { initial_delay_ms: 5, max_delay_ms: 10, max_attempts: 3 };
  const client = await connect({ url: server.url, token: 'secret', reconnect });
  t.teardown(() => client.close());
  const pending = rejection(client.lookupAccounts([1n], { timeout_ms: 5000 }));
  await server.stop();
  const e = await pending;
  t.equal(e.code, 'connection_closed');
  t.match(e.message, /gave up reconnecting after 3 attempts/);
  t.equal(client.state, 'closed');
});

t.test('u64 values go out as MessagePack uints; 2^64-1 round-trips', async (t) => {
  t.ok(CANONICAL_U64, 'the uint64 hook of msgpackr works');
  const hex = (v: bigint) => encodeFrame({ v: u64(v) }).subarray(5).toString('hex'); // past map16 + "v"
  t.equal(hex(0n), '00');
  t.equal(hex(127n), '7f');
  t.equal(hex(255n), 'ccff');
  t.equal(hex(65535n), 'cdffff');
  t.equal(hex(0xffff_ffffn), 'ceffffffff');
  t.equal(hex(2n ** 32n), 'cf0000000100000000');
  t.equal(hex(2n ** 53n + 1n), 'cf0020000000000001');
  t.equal(hex(2n ** 63n - 1n), 'cf7fffffffffffffff', 'below 2^63: unsigned, not int64 (0xd3)');
  t.equal(hex(2n ** 63n), 'cf8000000000000000');
  t.equal(hex(U64_MAX), 'cfffffffffffffffff');

  let received: Record<string, unknown> | undefined;
  let raw: Buffer | undefined;
  const { client } = await setup(t, {}, (s) => {
    s.handler = (frame, reply) => {
      if (frame.msg.op === 'create_transfers') {
        raw = frame.raw;
        received = (frame.msg.transfers as Array<Record<string, unknown>>)[0];
        reply({ status: [0], timestamp: [U64_MAX] });
        return;
      }
      // Replies as a msgpackr server sends them: small values as numbers, 2^64-1 as a bigint.
      reply({
        transfers: [
          {
            id: 2n ** 63n - 1n,
            debit_account_id: 1,
            credit_account_id: 2 ** 40,
            amount: U64_MAX,
            pending_id: 0,
            user_data_64: 2n ** 53n + 1n,
            user_data_32: 7,
            timeout: 0,
            ledger: 1,
            code: 1,
            flags: 0,
            timestamp: 1_700_000_000_000_000_000n,
          },
        ],
      });
    };
  });
  const r = await client.createTransfers([
    tr(2n ** 63n - 1n, { amount: U64_MAX, credit_account_id: 2 ** 40, user_data_64: 2n ** 53n + 1n, pending_id: 2n ** 32n }),
  ]);
  t.same(r.timestamp, [U64_MAX]);
  const bytes = (raw as Buffer).toString('hex');
  const key = (name: string) => Buffer.from([0xa0 + name.length, ...Buffer.from(name)]).toString('hex');
  t.match(bytes, key('amount') + 'cfffffffffffffffff');
  t.match(bytes, key('id') + 'cf7fffffffffffffff');
  t.match(bytes, key('credit_account_id') + 'cf0000010000000000');
  t.match(bytes, key('user_data_64') + 'cf0020000000000001');
  t.match(bytes, key('pending_id') + 'cf0000000100000000');
  t.match(bytes, key('debit_account_id') + '01');
  t.equal(received?.amount, U64_MAX);

  // What the client sends passes the server's own input decoder unchanged.
  const decoded = decodeTransfers([received]);
  t.ok(decoded.ok);
  if (decoded.ok) {
    t.equal(decoded.value[0].amount, U64_MAX);
    t.equal(decoded.value[0].id, 2n ** 63n - 1n);
    t.equal(decoded.value[0].user_data_64, 2n ** 53n + 1n);
    t.equal(decoded.value[0].credit_account_id, 2n ** 40n);
  }

  const [found] = await client.lookupTransfers([2n ** 63n - 1n]);
  t.equal(found.amount, U64_MAX);
  t.equal(found.id, 2n ** 63n - 1n);
  t.equal(found.debit_account_id, 1n);
  t.equal(found.credit_account_id, 2n ** 40n);
  t.equal(found.user_data_64, 2n ** 53n + 1n);
  t.equal(found.timestamp, 1_700_000_000_000_000_000n);
  for (const k of ['id', 'debit_account_id', 'credit_account_id', 'amount', 'pending_id', 'user_data_64', 'timestamp'] as const) {
    t.equal(typeof found[k], 'bigint', `${k} is a bigint`);
  }
  t.equal(typeof found.ledger, 'number');
});

t.test('create frames: the maps the client used to build, written without building them', async (t) => {
  const random = rng(0xc0de);
  const U64 = ['id', 'debit_account_id', 'credit_account_id', 'amount', 'pending_id', 'user_data_64', 'timestamp'];
  const TRANSFER_ORDER = ['id', 'debit_account_id', 'credit_account_id', 'amount', 'pending_id', 'ledger', 'code', 'flags', 'timeout', 'user_data_64', 'user_data_32', 'timestamp'];
  const ACCOUNT_ORDER = ['id', 'ledger', 'code', 'flags', 'user_data_64', 'user_data_32', 'timestamp', 'reserved'];
  const REQUIRED = ['id', 'debit_account_id', 'credit_account_id', 'amount', 'ledger', 'code'];
  const MAX: Record<string, number> = { code: 0xffff, flags: 0xffff };
  const value = (name: string): bigint | number => {
    const r = random();
    if (U64.includes(name)) {
      const v = r < 0.2 ? 0n : r < 0.4 ? BigInt(Math.floor(random() * 300)) : r < 0.5 ? U64_MAX : BigInt.asUintN(Math.ceil(random() * 64), BigInt(Math.floor(random() * 2 ** 53)) * 2n ** 11n + 1n);
      // A channel may pass a safe integer as a number.
      return v <= BigInt(Number.MAX_SAFE_INTEGER) && random() < 0.5 ? Number(v) : v;
    }
    const max = MAX[name] ?? 0xffff_ffff;
    return r < 0.3 ? 0 : r < 0.4 ? max : Math.floor(random() * (r < 0.7 ? 300 : max));
  };
  /** The reference: the wire map the client used to build, for msgpackr to encode. */
  const wire = (e: Record<string, bigint | number | undefined>, order: string[], required: string[]): WireMap => {
    const out: WireMap = {};
    for (const name of order) {
      const v = e[name];
      if (v === undefined) continue;
      if (!required.includes(name) && (v === 0 || v === 0n)) continue;
      out[name] = U64.includes(name) ? u64(BigInt(v)) : Number(v);
    }
    return out;
  };
  for (let round = 0; round < 300; round++) {
    const accounts = round % 3 === 0;
    const order = accounts ? ACCOUNT_ORDER : TRANSFER_ORDER;
    const required = accounts ? ['id', 'ledger', 'code'] : REQUIRED;
    const calls = 1 + Math.floor(random() * 3);
    const chunks: Uint8Array[] = [];
    const maps: WireMap[] = [];
    for (let c = 0; c < calls; c++) {
      const n = round === 7 && c === 0 ? 8190 : 1 + Math.floor(random() * 20);
      const events: Array<Record<string, bigint | number | undefined>> = [];
      for (let i = 0; i < n; i++) {
        const e: Record<string, bigint | number | undefined> = {};
        for (const name of order) if (required.includes(name) || random() < 0.5) e[name] = value(name);
        events.push(e);
        maps.push(wire(e, order, required));
      }
      const encoded = accounts ? accountEvents(events as never) : transferEvents(events as never);
      if (encoded instanceof KeelError) throw encoded;
      t.equal(encoded.count, n);
      chunks.push(encoded.bytes);
    }
    const op = accounts ? 'create_accounts' : 'create_transfers';
    const param = accounts ? 'accounts' : 'transfers';
    const id = Math.floor(random() * 2 ** 32);
    // msgpackr writes every map with a map16 header, the writer a fixmap: compare what they decode to.
    const reference = packr.unpack(encodeFrame({ id, op, [param]: maps }));
    const written = packr.unpack(encodeCreateFrame(id, op, param, maps.length, chunks));
    if (!isDeepStrictEqual(reference, written)) {
      t.same(written, reference, `round ${round}`);
      break;
    }
  }
});

t.test('a getter that calls the client while its event is written does not change that event', async (t) => {
  let inner: unknown;
  const outer = transferEvents([
    {
      id: 1n,
      debit_account_id: 2n,
      get credit_account_id(): bigint {
        inner = transferEvents([{ id: 99n, debit_account_id: 98n, credit_account_id: 97n, amount: 96n, ledger: 9, code: 9 }]);
        return 3n;
      },
      amount: 4n,
      ledger: 1,
      code: 1,
    },
  ]);
  if (outer instanceof KeelError || !(inner !== undefined && !(inner instanceof KeelError))) throw new Error('both calls should encode');
  const decode = (e: { count: number; bytes: Uint8Array }): unknown => packr.unpack(encodeCreateFrame(1, 'create_transfers', 'transfers', e.count, [e.bytes]));
  t.same(decode(outer), { id: 1, op: 'create_transfers', transfers: [{ id: 1, debit_account_id: 2, credit_account_id: 3, amount: 4, ledger: 1, code: 1 }] });
  t.same(decode(inner as { count: number; bytes: Uint8Array }), { id: 1, op: 'create_transfers', transfers: [{ id: 99, debit_account_id: 98, credit_account_id: 97, amount: 96, ledger: 9, code: 9 }] });
});

t.test('invalid input fails alone, locally, naming the field', async (t) => {
  const { server, client } = await setup(t);
  const ok = client.createTransfers([tr(1n)]);
  const bad = rejection(client.createTransfers([tr(2n), tr(3n, { amount: -1n })]));
  const tooBig = rejection(client.createTransfers([tr(4n, { amount: U64_MAX + 1n })]));
  const unsafe = rejection(client.lookupAccounts([2 ** 53]));
  const badCode = rejection(client.createAccounts([{ id: 1n, ledger: 1, code: 70000 }]));
  await ok;
  const [e1, e2, e3, e4] = await Promise.all([bad, tooBig, unsafe, badCode]);
  t.equal(e1.code, 'invalid_request');
  t.equal(e1.field, 'transfers[1].amount');
  t.equal(e2.field, 'transfers[0].amount');
  t.equal(e3.field, 'ids[0]');
  t.equal(e4.field, 'accounts[0].code');
  t.same(idsOf(server.ops('create_transfers')[0]), [1n], 'only the valid call was sent');
  const acc = await client.createAccounts([{ id: 1n, ledger: 1, code: 1, flags: AccountFlags.history }]);
  t.same(acc.status, [0]);
});

t.test('bounded local queue: too_many_inflight_local past the cap', async (t) => {
  const held: Array<() => void> = [];
  const { server, client } = await setup(t, { max_queued_requests: 2 }, (s) => {
    s.limits.inflight_per_connection = 1;
    s.handler = (frame, reply) =>
      held.push(() => {
        const events = frame.msg.transfers as unknown[] | undefined;
        if (events === undefined) reply({ accounts: [] });
        else reply({ status: events.map(() => 0), timestamp: events.map(() => 1) });
      });
  });
  const release = async (): Promise<void> => {
    await until(() => held.length > 0);
    (held.shift() as () => void)();
  };
  // Same tick: one for the free in-flight slot and two to wait; the fourth is refused.
  const a = client.lookupAccounts([1n]);
  const b = client.lookupAccounts([2n]);
  const c = client.lookupAccounts([3n]);
  const ed = await rejection(client.lookupAccounts([4n]));
  t.equal(ed.code, 'too_many_inflight_local');
  t.equal(ed.outcome_unknown, false);
  await until(() => server.frames.length === 1);
  await sleep(20);
  t.equal(server.frames.length, 1, 'never more than the server cap in flight');
  // One in flight, two waiting: no room.
  t.equal((await rejection(client.lookupAccounts([5n]))).code, 'too_many_inflight_local');
  await release();
  await a;
  await until(() => server.frames.length === 2);
  // In flight: b; waiting: c. A create opens a batch (the queue is then full) and the next create
  // joins that batch; a lookup needs a queue slot and is refused.
  const e = client.createTransfers([tr(1n)]);
  const f = client.createTransfers([tr(2n)]);
  t.equal((await rejection(client.lookupAccounts([6n]))).code, 'too_many_inflight_local');
  for (let i = 0; i < 3; i++) await release();
  await Promise.all([b, c, e, f]);
  t.same(
    server.frames.map((fr) => fr.msg.op),
    ['lookup_accounts', 'lookup_accounts', 'lookup_accounts', 'create_transfers'],
  );
  t.same(idsOf(server.frames[3]), [1n, 2n]);
  t.same(
    server.frames.slice(0, 3).map((fr) => fr.msg.ids),
    [[1], [2], [3]],
  );
});

t.test('close fails pending calls with client_closed', async (t) => {
  const server = await FakeServer.start();
  t.teardown(() => server.stop());
  server.handler = () => {};
  server.limits.inflight_per_connection = 1;
  const client = await connect({ url: server.url, token: 'secret' });
  const inflight = rejection(client.lookupAccounts([1n]));
  await until(() => server.frames.length === 1);
  const queued = rejection(client.lookupAccounts([2n]));
  await client.close();
  const [a, b] = await Promise.all([inflight, queued]);
  t.equal(a.code, 'client_closed');
  t.equal(a.outcome_unknown, true);
  t.equal(b.code, 'client_closed');
  t.equal(b.outcome_unknown, false);
  t.equal(client.state, 'closed');
  t.equal((await rejection(client.createTransfers([tr(1n)]))).code, 'client_closed');
});
