// The replication port's protocol edges (docs/replication.md, src/replication/wire.ts), against a
// real leading center: a peer must say hello with the cluster's name and secret, as a configured
// center, with well-formed log heads; anything else is refused with a code and changes nothing,
// and malformed frames or oversized ones never take the center down. A well-formed peer is
// welcomed, and a write it forwards is run by the leader once.

import t from 'tap';
import { WebSocket } from 'ws';
import { Packr } from 'msgpackr';
import { connect, CreateTransferStatus } from '../src/client/index.ts';
import { encodeTransferBatch } from '../src/storage/codec.ts';
import { CLUSTER_SECRET, startCluster } from './support/cluster.ts';
import { transfer } from './support/builders.ts';

const packr = new Packr({ useRecords: false, moreTypes: false, int64AsType: 'bigint' });
type Message = Record<string, unknown>;

/** Opens the replication port, sends `frames`, and collects what comes back until it closes (or 1 s). */
async function exchange(port: number, frames: Array<Buffer | Message>): Promise<{ messages: Message[]; close: number | null }> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/replicate`);
  const messages: Message[] = [];
  let close: number | null = null;
  ws.on('message', (data: Buffer) => messages.push(packr.unpack(data) as Message));
  const closed = new Promise<void>((resolve) => ws.on('close', (code) => ((close = code), resolve())));
  await new Promise<void>((resolve, reject) => ws.once('open', () => resolve()).once('error', reject));
  for (const frame of frames) ws.send(Buffer.isBuffer(frame) ? frame : packr.pack(frame));
  await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 1_000))]);
  ws.terminate();
  return { messages, close };
}

t.test('the replication port refuses what is not a well-formed peer, and serves one that is', async (t) => {
  // Only `a` runs; `b` is configured, so a peer may say hello as `b`. One center in sync suffices.
  const cluster = await startCluster({ names: ['a', 'b'], shards: 2, min_insync: 1, start: ['a'] });
  t.teardown(() => cluster.stop());
  await cluster.waitLeader();
  const port = cluster.center('a').replication_port;
  const heads = [{ position: 0, epoch: 0, checksum: 0 }, { position: 0, epoch: 0, checksum: 0 }];
  const hello = (fields: Message): Message => ({ t: 'hello', cluster: cluster.name, secret: CLUSTER_SECRET, center: 'b', epoch: 0, heads, ...fields });

  const garbage = await exchange(port, [Buffer.from([0xc1, 0xff, 0x00])]);
  t.equal(garbage.close, 1008, 'a frame that is not msgpack: closed 1008');
  const first = await exchange(port, [{ t: 'ack', shard: 0, position: 1 }]);
  t.equal(first.close, 1008, 'anything before hello: closed');
  const secret = await exchange(port, [hello({ secret: 'wrong-secret-0123456789' })]);
  t.same(secret.messages.map((m) => m.code), ['unauthorized'], 'a wrong secret: unauthorized');
  const stranger = await exchange(port, [hello({ center: 'z' })]);
  t.same(stranger.messages.map((m) => m.code), ['bad_request'], 'a center that is not configured: bad_request');
  const malformed = await exchange(port, [hello({ heads: [{ position: 'x' }, null] })]);
  t.same(malformed.messages.map((m) => m.code), ['bad_request'], 'malformed log heads: bad_request');
  const shards = await exchange(port, [hello({ heads: heads.slice(1) })]);
  t.same(shards.messages.map((m) => m.code), ['shard_count_mismatch'], 'another shard count: shard_count_mismatch');
  const newer = await exchange(port, [hello({ epoch: 1_000 })]);
  t.same(newer.messages.map((m) => m.code), ['stale_epoch'], 'a peer that knows a newer epoch: the leader is stale');
  const huge = await exchange(port, [Buffer.alloc((4 << 20) + 1)]);
  // 1009 when the close frame arrives; 1006 when the server drops the socket while the client still sends.
  t.ok(huge.close === 1009 || huge.close === 1006, `a frame over 4 MiB: the connection is closed (${huge.close})`);
  await cluster.waitLeader();

  // A well-formed peer: welcomed from an empty log; nonsense acks are ignored; a forwarded write runs once.
  const keel = await connect({ url: await cluster.center('a').url, token: cluster.token, reconnect: false, heartbeat_ms: 0 });
  // The stale-epoch hello above made it step down and take over again: it may still be changing role.
  let created: { status: number[] } | null = null;
  for (let tries = 0; created === null && tries < 100; tries++) {
    created = await keel.createAccounts([1n, 2n].map((id) => ({ id, ledger: 1, code: 1 }))).catch(async (error: unknown) => {
      if ((error as { code?: string }).code !== 'unavailable') throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
      return null;
    });
  }
  t.same(created?.status, [0, 0]);
  const body = encodeTransferBatch([transfer(500n, 1n, 2n, 7n)]);
  const peer = await exchange(port, [
    hello({}),
    { t: 'ack', shard: 0.5, position: 1 },
    { t: 'ack', shard: 0, position: 99 },
    { t: 'forward', id: 1, op: 'create_transfers', count: 2, body },
    { t: 'forward', id: 2, op: 'create_transfers', count: 1, body },
    { t: 'forward', id: 3, op: 'create_transfers', count: 1, body },
  ]);
  const welcome = peer.messages.find((m) => m.t === 'welcome');
  t.same(welcome?.agree, [0, 0], 'welcomed: its empty logs agree with the leader\'s up to position 0');
  const answers = new Map(peer.messages.filter((m) => m.t === 'forwarded').map((m) => [m.id, m.result as Message]));
  t.equal(answers.get(1)?.error, 'internal', 'a forwarded write whose body does not match its count is refused');
  t.same(answers.get(2)?.status, [0], 'a forwarded write is created by the leader');
  t.same(answers.get(3)?.status, [CreateTransferStatus.exists], 'and the same one again is `exists`, not applied twice');
  const [a1, a2] = await keel.lookupAccounts([1n, 2n]);
  t.equal(a1.debits_posted, 7n, 'applied once');
  t.equal(a2.credits_posted, 7n);
  await keel.close();
  t.equal(cluster.center('a').child?.exitCode, null, 'the center is still running');
});
