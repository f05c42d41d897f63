// A throwaway single-member etcd on loopback for tests: Debian's etcd-server (3.4), started on
// free ports with a temp data directory and removed afterwards. README and .ci/run install it.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestEtcd {
  endpoint: string;
  stop(): Promise<void>;
}

export const ETCD_BINARY = process.env.KEEL_ETCD ?? 'etcd';

/** The kernel's range for the local ports of outgoing connections (Linux; a common default otherwise). */
function ephemeralRange(): [number, number] {
  try {
    const [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (Number.isInteger(low) && Number.isInteger(high) && low > 0 && high >= low) return [low, high];
  } catch {
    // not Linux
  }
  return [32768, 60999];
}

const handed_out = new Set<number>();

/**
 * A port free now, outside the kernel's ephemeral range, not handed out before by this process: a
 * test that kills a center and starts it again on the same port must not find it taken meanwhile
 * as the local port of some outgoing connection, which the kernel picks from that range (it
 * happened).
 */
export async function freePort(): Promise<number> {
  const [low] = ephemeralRange();
  const base = low > 12_000 ? Math.max(1_024, low - 12_000) : 1_024;
  const span = Math.max(1, low - base);
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = base + Math.floor(Math.random() * span);
    if (handed_out.has(port)) continue;
    const bound = await new Promise<boolean>((resolve) => {
      const server = createServer();
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
    });
    if (bound) {
      handed_out.add(port);
      return port;
    }
  }
  throw new Error(`no free port found below the ephemeral range (${low})`);
}

export async function startEtcd(): Promise<TestEtcd> {
  const dir = mkdtempSync(join(tmpdir(), 'keel-etcd-'));
  const client = await freePort();
  const peer = await freePort();
  const child: ChildProcess = spawn(
    ETCD_BINARY,
    [
      '--name', 'keel-test',
      '--data-dir', join(dir, 'data'),
      '--listen-client-urls', `http://127.0.0.1:${client}`,
      '--advertise-client-urls', `http://127.0.0.1:${client}`,
      '--listen-peer-urls', `http://127.0.0.1:${peer}`,
      '--initial-advertise-peer-urls', `http://127.0.0.1:${peer}`,
      '--initial-cluster', `keel-test=http://127.0.0.1:${peer}`,
      '--logger', 'zap',
      '--log-level', 'error',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const spawn_error = new Promise<never>((_, reject) =>
    child.once('error', (error) => reject(new Error(`cannot run ${ETCD_BINARY} (install Debian's etcd-server: apt-get install -y etcd-server): ${error.message}`))),
  );
  const endpoint = `127.0.0.1:${client}`;
  const deadline = Date.now() + 15_000;
  for (;;) {
    const ready = await Promise.race([
      fetch(`http://${endpoint}/health`).then((r) => r.ok, () => false),
      spawn_error,
      exited.then(() => {
        throw new Error(`etcd exited while starting: ${stderr.slice(-2000)}`);
      }),
    ]);
    if (ready) break;
    if (Date.now() > deadline) throw new Error(`etcd did not become healthy in 15 s: ${stderr.slice(-2000)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    endpoint,
    async stop() {
      child.kill('SIGKILL');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
