// A center whose replication port is taken fails its start with the reason and exit code 1. (ws
// re-emits the HTTP server's listen error on the WebSocketServer; without a listener there the
// process died of an unhandled 'error' event instead, and a test saw a restarted center vanish.)

import t from 'tap';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, startEtcd } from './support/etcd.ts';
import { CLUSTER_SECRET } from './support/cluster.ts';

const MAIN = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));

t.test('a replication port in use: the start fails with the reason, exit 1', async (t) => {
  const etcd = await startEtcd();
  t.teardown(() => etcd.stop());
  const dir = mkdtempSync(join(tmpdir(), 'keel-listen-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const port = await freePort();
  const holder = createServer();
  await new Promise<void>((resolve) => holder.listen(port, '127.0.0.1', () => resolve()));
  t.teardown(() => new Promise<void>((resolve) => holder.close(() => resolve())));
  const peer = await freePort();
  const child = spawn(
    process.execPath,
    [
      '--import=tsx', MAIN, 'start', '--port', '0', '--metrics-port', '0', '--data', dir, '--shards', '1',
      '--center', 'a', '--etcd', `http://${etcd.endpoint}`, '--peers', `b=127.0.0.1:${peer}`, '--cluster', `listen${process.pid}`,
      '--replication-port', String(port), '--min-insync', '1', '--lease-ttl', '2',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, KEEL_CLUSTER_SECRET: CLUSTER_SECRET } },
  );
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  t.equal(code, 1, 'exit 1');
  t.match(stderr, `cannot listen for replication on 127.0.0.1:${port}: the address is in use`, 'says what is wrong');
  t.match(stderr, 'choose another --replication-port', 'and what to do');
  t.notMatch(stderr, "Unhandled 'error' event", 'not a crash');
});
