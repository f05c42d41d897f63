// Leadership, epochs and fencing of partition groups through a real etcd (Debian's etcd-server
// 3.4) on loopback: one leader per epoch, takeover only by an in-sync member and only once the
// old leader's lease is gone, in-sync set changes guarded by the epoch, and a frozen leader that
// stops claiming leadership before a successor can exist.

import t from 'tap';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { Coordinator, type GroupState } from '../src/replication/coordinator.ts';
import { startEtcd, type TestEtcd } from './support/etcd.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TTL_S = 2;

let etcd: TestEtcd;
t.before(async () => {
  etcd = await startEtcd();
});
t.teardown(async () => {
  await etcd?.stop();
});

async function open(cluster: string, center: string): Promise<Coordinator> {
  return Coordinator.open({ endpoints: [etcd.endpoint], cluster, center, lease_ttl_s: TTL_S });
}

t.test('one leader per epoch; a crashed leader is replaced by an in-sync member with the next epoch', async (t) => {
  const a = await open('c1', 'a');
  const b = await open('c1', 'b');
  const d = await open('c1', 'd');
  t.teardown(async () => {
    await Promise.all([b.close(), d.close()]);
  });
  t.ok((await a.initialize(0, ['a', 'b', 'c'], 2)).ok, 'the group is created with its in-sync set');
  t.notOk((await b.initialize(0, ['b'], 1)).ok, 'only once');

  const first = await a.takeOver(0);
  t.ok(first.ok, 'a leads');
  t.same(first.ok && first.state, { epoch: 1, leader: 'a', isr: ['a', 'b', 'c'], min_isr: 2 });
  const contender = await b.takeOver(0);
  t.notOk(contender.ok, 'b cannot take over while a holds its lease');
  t.equal((await b.read(0))?.state.epoch, 1, 'and the epoch did not move');
  const outsider = await d.takeOver(0);
  t.notOk(outsider.ok, 'd is not in the in-sync set');
  t.match(outsider.ok ? '' : outsider.reason, /not in the in-sync set/);
  t.equal(await b.liveLeader(0), 'a');

  // a crashes: no revoke, its lease runs out.
  const crashed_at = Date.now();
  a.abandon();
  t.notOk(a.mayLead(), 'an abandoned coordinator leads nothing');
  let taken: Awaited<ReturnType<Coordinator['takeOver']>>;
  for (;;) {
    taken = await b.takeOver(0);
    if (taken.ok || Date.now() - crashed_at > 10_000) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const took_ms = Date.now() - crashed_at;
  t.ok(taken.ok, `b took over ${took_ms} ms after the crash`);
  t.ok(took_ms >= TTL_S * 1000 - 200 && took_ms < TTL_S * 1000 + 3_000, 'once the lease ran out, not before');
  t.same(taken.ok && taken.state, { epoch: 2, leader: 'b', isr: ['b', 'c'], min_isr: 2 }, 'the crashed leader leaves the in-sync set with its leadership');
  t.notOk((await d.takeOver(0)).ok, 'one leader per epoch');
});

t.test('the in-sync set changes only by the current leader in its epoch', async (t) => {
  const a = await open('c2', 'a');
  const b = await open('c2', 'b');
  t.teardown(async () => {
    await Promise.all([a.close(), b.close()]);
  });
  await a.initialize(7, ['a', 'b', 'c'], 2);
  const led = await a.takeOver(7);
  t.ok(led.ok);
  const changes: GroupState[] = [];
  const stop = await b.watch(7, (state) => changes.push(state));
  const shrunk = await a.setIsr(7, 1, ['a', 'b']);
  t.ok(shrunk.ok, 'the leader drops a lagging replica');
  t.notOk((await b.setIsr(7, 1, ['b'])).ok, 'a follower cannot');
  t.notOk((await a.setIsr(7, 0, ['a'])).ok, 'nor a stale epoch');
  t.notOk((await a.setIsr(7, 1, ['b'])).ok, 'the leader stays in its set');
  const grown = await a.setIsr(7, 1, ['a', 'b', 'c']);
  t.ok(grown.ok, 'and takes a caught-up replica back');
  await new Promise((resolve) => setTimeout(resolve, 300));
  await stop();
  t.same(
    changes.map((s) => s.isr),
    [['a', 'b'], ['a', 'b', 'c']],
    'followers see each change, in order',
  );
  // A clean resign (revoke) lets an in-sync member take over at once.
  await a.close();
  const next = await b.takeOver(7);
  t.ok(next.ok, 'after a resign, at once');
  t.equal(next.ok && next.state.epoch, 2);
});

t.test('a leader that steps down resigns: an in-sync center takes over at once, and nobody resigns for another', async (t) => {
  const a = await open('c4', 'a');
  const b = await open('c4', 'b');
  t.teardown(async () => {
    await Promise.all([a.close(), b.close()]);
  });
  await a.initialize(0, ['a', 'b'], 1);
  t.ok((await a.takeOver(0)).ok, 'a leads');
  t.notOk(await b.resign(0), 'b cannot give up a\'s leadership');
  t.notOk((await b.takeOver(0)).ok, 'so b cannot take over');
  t.ok(await a.resign(0), 'a resigns (its lease still lives)');
  t.ok(a.mayLead(), 'its lease is untouched: only the leader key went');
  const next = await b.takeOver(0);
  t.ok(next.ok, 'b takes over at once, without waiting for a\'s lease');
  t.same(next.ok && [next.state.epoch, next.state.leader, next.state.isr], [2, 'b', ['b']], 'in the next epoch; a leaves the in-sync set with its leadership');
  t.notOk(await a.resign(0), 'a cannot resign b\'s leadership');
  t.equal(await a.liveLeader(0), 'b');
});

t.test('a frozen leader stops claiming leadership before its successor exists', async (t) => {
  const child = spawn(process.execPath, ['--import=tsx', join(ROOT, 'test/support/coordinator-child.ts'), etcd.endpoint, 'c3', 'a', '3'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines: string[] = [];
  let buffer = '';
  child.stdout.on('data', (chunk: Buffer) => {
    buffer += chunk.toString();
    const parts = buffer.split('\n');
    buffer = parts.pop()!;
    lines.push(...parts);
  });
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  const b = await open('c3', 'b');
  t.teardown(() => b.close());
  await b.initialize(3, ['a', 'b'], 1);
  const deadline = Date.now() + 20_000;
  while (!lines.some((l) => l.startsWith('took')) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  t.equal(lines.find((l) => l.startsWith('took')), 'took 1', 'the child leads epoch 1');
  await new Promise((resolve) => setTimeout(resolve, 500));

  child.kill('SIGSTOP');
  const stopped_at = Date.now();
  let taken: Awaited<ReturnType<Coordinator['takeOver']>>;
  for (;;) {
    taken = await b.takeOver(3);
    if (taken.ok || Date.now() - stopped_at > 10_000) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const successor_at = Date.now();
  t.ok(taken.ok, `b took over ${successor_at - stopped_at} ms after the freeze, epoch ${taken.ok ? taken.state.epoch : '?'}`);
  await new Promise((resolve) => setTimeout(resolve, 300));
  const before_resume = lines.length;
  child.kill('SIGCONT');
  await new Promise((resolve) => setTimeout(resolve, 500));

  const claims = lines.filter((l) => /^\d+ [01]$/.test(l)).map((l) => l.split(' ').map(Number) as [number, number]);
  const leading = claims.filter(([, may]) => may === 1);
  t.ok(leading.length > 5, 'the child claimed leadership while it renewed');
  t.ok(Math.max(...leading.map(([at]) => at)) < successor_at, 'every claim came before the successor existed');
  const after_resume = lines.slice(before_resume).filter((l) => /^\d+ [01]$/.test(l));
  t.ok(after_resume.length > 0, 'the child runs again');
  t.ok(after_resume.every((l) => l.endsWith(' 0')), 'and from its first check after resuming it claims nothing');
});

t.test('a center whose lease was lost gets a new one: it may take over again, but its old leadership stays over', async (t) => {
  const a = await open('c5', 'a');
  const b = await open('c5', 'b');
  t.teardown(async () => {
    await Promise.all([a.close(), b.close()]);
  });
  await a.initialize(0, ['a', 'b'], 1);
  const generation = a.lease_generation;
  const first = await a.takeOver(0);
  t.ok(first.ok && first.generation === generation, 'a leads, under its first lease');
  // The lease is revoked behind a's back, as when etcd let it expire while a was frozen.
  const { Etcd3 } = await import('etcd3');
  const admin = new Etcd3({ hosts: `http://${etcd.endpoint}` });
  t.teardown(() => admin.close());
  const held = (await admin.get('/keel/c5/group/0/leader').exec()).kvs[0];
  await admin.leaseClient.leaseRevoke({ ID: held.lease });
  const deadline = Date.now() + 10_000;
  while (a.lease_generation === generation && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  t.ok(a.lease_generation > generation, 'a noticed the loss and holds a new lease');
  t.notOk(a.mayLead(generation), 'the leadership taken under the lost lease is over for good');
  t.ok(a.mayLead(), 'the new lease is live');
  t.equal(await a.liveLeader(0), null, 'the leader key went with the old lease');
  const again = await a.takeOver(0);
  t.ok(again.ok && again.state.epoch === 2 && again.generation === a.lease_generation, 'a may take over again, in a new epoch, under its new lease');
  t.ok(a.mayLead(a.lease_generation), 'and leads under its new lease');
  t.end();
});
