// Three (or more) `keel start` processes joined into one cluster through a throwaway etcd, all on
// loopback: the harness of the active-centers tests (docs/replication.md). Every center shares
// one admin token (the tokens file is copied) and the cluster secret; gateways listen on free
// ports, read from each start's banner.

import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { connect as netConnect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Etcd3 } from 'etcd3';
import { TokenStore, TOKENS_FILE } from '../../src/gateway/tokens.ts';
import type { GroupState } from '../../src/replication/coordinator.ts';
import { freePort, startEtcd, type TestEtcd } from './etcd.ts';

export { freePort } from './etcd.ts';

const MAIN = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
export const CLUSTER_SECRET = 'test-cluster-secret-0123456789';


export interface CenterProcess {
  name: string;
  data: string;
  replication_port: number;
  child: ChildProcess | null;
  /** The gateway's ws:// URL of the current life (rejects if it ends before listening). */
  url: Promise<string>;
  stdout: string;
  stderr: string;
  /** stderr of every life of this center. */
  history: string;
  exited: Promise<void>;
}

/**
 * A TCP relay for one direction of replication (a follower reaching a leader): cutting it ends
 * every connection through it and refuses new ones until it heals, like a broken link.
 */
export class Link {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  cut = false;
  port = 0;

  constructor(private readonly target: number) {
    this.server = createServer((socket) => {
      if (this.cut) return socket.destroy();
      const upstream = netConnect(this.target, '127.0.0.1');
      this.sockets.add(socket);
      this.sockets.add(upstream);
      const end = (): void => {
        socket.destroy();
        upstream.destroy();
        this.sockets.delete(socket);
        this.sockets.delete(upstream);
      };
      socket.on('error', end).on('close', end);
      upstream.on('error', end).on('close', end);
      socket.pipe(upstream);
      upstream.pipe(socket);
    });
  }

  listen(): Promise<void> {
    return new Promise((resolve) => this.server.listen(0, '127.0.0.1', () => {
      const address = this.server.address();
      this.port = typeof address === 'object' && address !== null ? address.port : 0;
      resolve();
    }));
  }

  setCut(cut: boolean): void {
    this.cut = cut;
    if (cut) for (const socket of this.sockets) socket.destroy();
  }

  close(): Promise<void> {
    this.setCut(true);
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

export interface TestCluster {
  etcd: TestEtcd;
  /** `from>to` → the relay a follower `from` reaches leader `to` through. */
  links: Map<string, Link>;
  name: string;
  token: string;
  centers: CenterProcess[];
  dir: string;
  center(name: string): CenterProcess;
  start(name: string): CenterProcess;
  /** kill -9 (or another signal) and wait for the exit. */
  kill(name: string, signal?: NodeJS.Signals): Promise<void>;
  state(): Promise<GroupState>;
  /** Waits until etcd names a leader with a live lease whose gateway listens; returns its name. */
  waitLeader(options?: { not?: string; min_epoch?: number; timeout_ms?: number }): Promise<string>;
  /**
   * The in-sync set once it has `size` members, none of them in `without` (a killed center: under
   * a loaded machine another may leave for lag first and come back, which is not what is awaited).
   */
  waitIsr(size: number, timeout_ms?: number, without?: readonly string[]): Promise<GroupState>;
  stop(): Promise<void>;
}

export async function startCluster(options: {
  names?: string[];
  shards: number;
  min_insync?: number;
  lag_max_ms?: number;
  /** default: every name */
  start?: string[];
  /** More environment for every center (tuning such as KEEL_CHECKPOINT_ENTRIES). */
  env?: Record<string, string>;
}): Promise<TestCluster> {
  const names = options.names ?? ['a', 'b', 'c'];
  const etcd = await startEtcd();
  const dir = mkdtempSync(join(tmpdir(), 'keel-cluster-'));
  const name = `t${process.pid}x${Date.now().toString(36)}`;
  const ports = new Map<string, number>();
  for (const n of names) ports.set(n, await freePort());
  const links = new Map<string, Link>();
  for (const from of names) {
    for (const to of names) {
      if (from === to) continue;
      const link = new Link(ports.get(to)!);
      await link.listen();
      links.set(`${from}>${to}`, link);
    }
  }
  // One token for every center: created in the first directory, the file copied to the others.
  const first = join(dir, names[0]);
  mkdirSync(first, { recursive: true });
  const opened = TokenStore.open(first);
  if (!opened.ok) throw new Error(opened.message);
  const created = opened.value.create('admin', ['admin']);
  if (!created.ok) throw new Error(created.message);
  for (const n of names.slice(1)) {
    mkdirSync(join(dir, n), { recursive: true });
    copyFileSync(join(first, TOKENS_FILE), join(dir, n, TOKENS_FILE));
  }
  const client = new Etcd3({ hosts: `http://${etcd.endpoint}` });
  const centers: CenterProcess[] = names.map((n) => ({
    name: n,
    data: join(dir, n),
    replication_port: ports.get(n)!,
    child: null,
    url: Promise.reject(new Error('not started')),
    stdout: '',
    stderr: '',
    history: '',
    exited: Promise.resolve(),
  }));
  for (const c of centers) c.url.catch(() => {});

  const center = (n: string): CenterProcess => {
    const found = centers.find((c) => c.name === n);
    if (found === undefined) throw new Error(`no center ${n}`);
    return found;
  };

  const startOne = (n: string): CenterProcess => {
    const c = center(n);
    const peers = names.filter((p) => p !== n).map((p) => `${p}=127.0.0.1:${links.get(`${n}>${p}`)!.port}`).join(',');
    const child = spawn(
      process.execPath,
      [
        '--import=tsx', MAIN, 'start',
        '--port', '0', '--data', c.data, '--shards', String(options.shards),
        '--center', n, '--etcd', `http://${etcd.endpoint}`, '--peers', peers, '--cluster', name,
        '--replication-port', String(c.replication_port), '--min-insync', String(options.min_insync ?? 2), '--lease-ttl', '2',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, KEEL_CLUSTER_SECRET: CLUSTER_SECRET, KEEL_LOG_LEVEL: 'info', KEEL_REPLICA_LAG_MAX_MS: String(options.lag_max_ms ?? 1500), ...options.env } },
    );
    c.child = child;
    c.stdout = '';
    c.stderr = '';
    child.stdout!.on('data', (chunk: Buffer) => (c.stdout += chunk.toString()));
    // The gateway's per-connection lines are left out: the tests read the replication events.
    let partial = '';
    child.stderr!.on('data', (chunk: Buffer) => {
      const lines = (partial + chunk.toString()).split('\n');
      partial = lines.pop()!;
      const kept = lines.filter((line) => !line.includes('"session":')).map((line) => `${line}\n`).join('');
      c.stderr += kept;
      c.history += kept;
    });
    c.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    c.url = new Promise<string>((resolve, reject) => {
      const look = (): void => {
        const m = /keel listening on (ws:\/\/\S+)/.exec(c.stdout);
        if (m !== null) resolve(m[1]);
      };
      child.stdout!.on('data', look);
      void c.exited.then(() => reject(new Error(`center ${n} ended before listening:\n${c.stdout}\n${c.stderr.slice(-3000)}`)));
    });
    c.url.catch(() => {});
    return c;
  };

  const state = async (): Promise<GroupState> => {
    const text = await client.get(`/keel/${name}/group/0/state`).string();
    if (text === null) throw new Error('no cluster state in etcd yet');
    return JSON.parse(text) as GroupState;
  };

  const cluster: TestCluster = {
    etcd,
    links,
    name,
    token: created.value.token,
    centers,
    dir,
    center,
    start: startOne,
    async kill(n, signal = 'SIGKILL') {
      const c = center(n);
      c.child?.kill(signal);
      await c.exited;
    },
    state,
    async waitLeader(wait = {}) {
      const deadline = Date.now() + (wait.timeout_ms ?? 60_000);
      for (;;) {
        try {
          const s = await state();
          const live = await client.get(`/keel/${name}/group/0/leader`).string();
          if (live !== null && live === s.leader && live !== wait.not && s.epoch >= (wait.min_epoch ?? 1)) {
            await center(live).url;
            return live;
          }
        } catch {
          // not yet
        }
        if (Date.now() > deadline) throw new Error(`no leader within ${wait.timeout_ms ?? 60_000} ms; logs:\n${centers.map((c) => `${c.name}: ${c.stderr.slice(-1500)}`).join('\n')}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    },
    async waitIsr(size, timeout_ms = 30_000, without = []) {
      const deadline = Date.now() + timeout_ms;
      for (;;) {
        const s = await state().catch(() => null);
        if (s !== null && s.isr.length === size && !s.isr.some((m) => without.includes(m))) return s;
        if (Date.now() > deadline) {
          // Each center's recent log says who left the set and why (lag, a crash, a refused change).
          const logs = centers.map((c) => `${c.name}: ${c.stderr.slice(-1500)}`).join('\n');
          throw new Error(`in-sync set not of ${size} within ${timeout_ms} ms: ${JSON.stringify(s)}; logs:\n${logs}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    },
    async stop() {
      for (const c of centers) c.child?.kill('SIGKILL');
      await Promise.all(centers.map((c) => c.exited));
      client.close();
      for (const link of links.values()) await link.close();
      await etcd.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  for (const n of options.start ?? names) startOne(n);
  return cluster;
}
