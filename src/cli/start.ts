// `keel start`: lock and recover the data directory (the engine), create the first admin token on a
// fresh directory, serve the gateway, and on SIGTERM/SIGINT stop in order: stop accepting, answer
// in-flight requests, close connections, then close the engine (drain and checkpoint) and exit 0.
//
// Exit codes: 0 stopped cleanly, 1 failed (message on stderr), 2 data directory in use.

import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Engine, EngineLockedError, storedShardCount } from '../shard/engine.ts';
import { Center } from '../replication/center.ts';
import { registerClusterMetrics } from '../metrics/cluster.ts';
import { SHARDS_MAX } from '../shard/router.ts';
import { availableParallelism, totalmem } from 'node:os';
import { createLogger } from '../gateway/log.ts';
import { startGateway, type Gateway } from '../gateway/server.ts';
import { MainMetrics } from '../metrics/gateway.ts';
import { startMetricsServer, type MetricsServer } from '../metrics/server.ts';
import { TokenStore } from '../gateway/tokens.ts';
import { EVENTS_PER_REQUEST_MAX } from '../gateway/protocol.ts';
import type { StartArgs } from './args.ts';
import type { Io } from './io.ts';

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_LOCKED = 2;

/** Per shard: events queued or in flight before requests are answered `busy` (16 full requests). */
const QUEUE_EVENTS_MAX = 16 * EVENTS_PER_REQUEST_MAX;

function readPem(what: string, path: string): { ok: true; value: Buffer } | { ok: false; message: string } {
  try {
    return { ok: true, value: readFileSync(path) };
  } catch (error) {
    return { ok: false, message: `cannot read the TLS ${what} ${path}: ${(error as Error).message}; check --tls-${what}` };
  }
}

function listenAdvice(error: NodeJS.ErrnoException, args: StartArgs): string {
  switch (error.code) {
    case 'EADDRINUSE':
      return `${args.host}:${args.port} is already in use; stop the other process or pick another --port`;
    case 'EACCES':
      return `no permission to listen on ${args.host}:${args.port}; ports below 1024 need privileges: pick another --port`;
    case 'EADDRNOTAVAIL':
    case 'ENOTFOUND':
      return `cannot listen on ${args.host}: it is not an address of this machine; check --host`;
    default:
      return `cannot listen on ${args.host}:${args.port}: ${error.message}`;
  }
}

/** Runs until a signal stops it; resolves with the exit code. */
export async function runStart(args: StartArgs, io: Io): Promise<number> {
  const data_dir = resolve(args.data);
  let tls: { cert: Buffer; key: Buffer } | undefined;
  if (args.tls_cert !== null && args.tls_key !== null) {
    const cert = readPem('cert', args.tls_cert);
    if (!cert.ok) return fail(io, cert.message);
    const key = readPem('key', args.tls_key);
    if (!key.ok) return fail(io, key.message);
    tls = { cert: cert.value, key: key.value };
  }

  const logger = createLogger();
  // Set once the gateway is up: a failure then drains it before exiting.
  let stop_failed: (() => void) | null = null;
  let engine: Engine | Center;
  try {
    const shards = args.shards ?? storedShardCount(data_dir) ?? Math.min(SHARDS_MAX, availableParallelism());
    const engine_options = {
      data_dir,
      shards,
      queue_events_max: QUEUE_EVENTS_MAX,
      feed_retention_ms: args.feed_retention_hours * 3_600_000,
      shard_heap_mb: args.shard_heap_mb ?? defaultShardHeapMb(shards),
      shard_stall_ms: args.shard_stall_ms,
      // Crash-only: an engine that stopped serving answers nothing but `unavailable` until it is
      // restarted, and, replicated, would keep its leadership alive meanwhile. Exiting hands the
      // restart to the supervisor and the leadership to another center once the lease lapses.
      on_failed: (message: string) => {
        logger.error({ reason: message }, 'engine stopped serving');
        io.err(`keel: the engine stopped serving: ${message}; exiting (code ${EXIT_FAILED}) so that it is restarted: recovery replays the log`);
        if (stop_failed !== null) stop_failed();
        else process.exit(EXIT_FAILED);
      },
      on_memory: (shard: number, full: boolean, live_bytes: number, limit_bytes: number) => {
        const fields = { shard, live_mib: Math.round(live_bytes / 2 ** 20), limit_mib: Math.round(limit_bytes / 2 ** 20) };
        if (full) logger.error(fields, 'shard at its memory capacity: writes to it are refused; restart with a larger --shard-heap-mb');
        else logger.warn(fields, 'shard memory back under its mark: writes resume');
      },
    };
    if (args.cluster === null) engine = await Engine.start(engine_options);
    else {
      const cluster = args.cluster;
      engine = await Center.start({
        engine: engine_options,
        cluster: {
          cluster: cluster.name,
          center: args.center,
          peers: cluster.peers,
          etcd_endpoints: cluster.etcd,
          secret: cluster.secret,
          replication_host: cluster.replication_host,
          replication_port: cluster.replication_port,
          min_insync: cluster.min_insync,
          lease_ttl_s: cluster.lease_ttl_s,
          lag_max_ms: cluster.lag_max_ms,
        },
        on_event: (event, fields) => logger.info(fields, event),
        on_error: (event, fields) => logger.error(fields, event),
        on_fatal: (message) => {
          // The engine's state is not what the cluster needs: a restart recovers from the log.
          logger.error({ reason: message }, 'center stopped');
          io.err(`keel: ${message}`);
          process.exit(EXIT_FAILED);
        },
      });
    }
  } catch (error) {
    if (error instanceof EngineLockedError) {
      io.err(`keel: ${error.message}`);
      return EXIT_LOCKED;
    }
    return fail(io, `cannot start the engine on ${data_dir}: ${(error as Error).message}`);
  }

  const opened = TokenStore.open(data_dir);
  if (!opened.ok) {
    await engine.close();
    return fail(io, opened.message);
  }
  const tokens = opened.value;
  let admin_token: string | null = null;
  if (!tokens.exists()) {
    const created = tokens.create('admin', ['admin']);
    if (!created.ok) {
      await engine.close();
      return fail(io, `cannot create the first admin token: ${created.message}`);
    }
    admin_token = created.value.token;
  } else {
    const mode = tokens.mode();
    if (mode !== null && (mode & 0o077) !== 0) {
      logger.warn({ path: tokens.path, mode: mode.toString(8) }, 'tokens file is readable by others; chmod 600 it');
    }
  }

  const metrics = new MainMetrics();
  let gateway: Gateway;
  try {
    gateway = await startGateway({ engine, tokens, host: args.host, port: args.port, tls, center: args.center, logger, observer: metrics });
  } catch (error) {
    await engine.close();
    return fail(io, listenAdvice(error as NodeJS.ErrnoException, args));
  }
  const live = gateway;
  metrics.attach({ connections: () => live.connections, inflight: () => live.inflight, shardLoads: () => engine.shardLoads(), queue_events_max: QUEUE_EVENTS_MAX });
  if (engine instanceof Center) {
    const center = engine;
    registerClusterMetrics(metrics.registry, () => center.metricsSnapshot());
  }
  let metrics_server: MetricsServer | null = null;
  if (args.metrics_port >= 0) {
    try {
      metrics_server = await startMetricsServer({
        host: args.metrics_host,
        port: args.metrics_port,
        main: metrics.registry,
        workers: () => engine.shardMetrics(),
        on_error: (error) => logger.error({ err: error.message }, 'metrics server error'),
      });
    } catch (error) {
      await gateway.close();
      await engine.close();
      return fail(io, `cannot serve metrics: ${listenAdvice(error as NodeJS.ErrnoException, { ...args, host: args.metrics_host, port: args.metrics_port })} (or --metrics-port off)`);
    }
  }

  if (engine instanceof Center) {
    try {
      await engine.announce({ gateway: gateway.address.url, metrics: metrics_server === null ? null : metrics_server.url });
    } catch (error) {
      logger.warn({ error: (error as Error).message }, 'could not announce this center in etcd; keel cluster status will not list it');
    }
  }
  // One write, so that whoever reads stdout (a supervisor, a test) sees the banner whole.
  const banner: string[] = [];
  if (admin_token !== null) {
    banner.push('Created the first token, "admin" (scope admin). It is shown only this once; store it safely:');
    banner.push('');
    banner.push(`    ${admin_token}`);
    banner.push('');
    banner.push('Create narrower tokens with `keel token create NAME --scopes ledger:read,ledger:write`.');
    banner.push('');
  }
  banner.push(`keel listening on ${gateway.address.url}`);
  banner.push(`  metrics         ${metrics_server === null ? 'off' : metrics_server.url}`);
  banner.push(`  data directory  ${data_dir}`);
  banner.push(`  center          ${args.center}`);
  if (engine instanceof Center) {
    const status = engine.status();
    banner.push(`  cluster         ${args.cluster?.name}: ${status.role} in epoch ${status.epoch}, in sync ${status.isr.join(', ')}; replication on ${engine.replication_address}`);
  }
  if (engine instanceof Engine) engine.recovery.forEach((r, shard) => {
    const replay = r.replayed_entries === 0 ? 'nothing to replay' : `replayed ${r.replayed_entries} log entries`;
    banner.push(
      `  recovery        shard ${shard}: checkpoint at log position ${r.checkpoint_position}, ${replay}, ` +
        `log head ${r.head_position} (${Math.round(r.duration_ms)} ms)`,
    );
  });
  const active = tokens.list().filter((r) => r.revoked_at === null).length;
  banner.push(`  tokens          ${tokens.path} (${active} active)`);
  banner.push('  stop with Ctrl-C or SIGTERM: in-flight requests are answered, then the engine checkpoints');
  io.out(banner.join('\n'));

  return new Promise<number>((resolveExit) => {
    let stopping = false;
    // The engine failed (possibly while a signal's stop was already draining): never exit 0 then.
    let failed = false;
    /** Answers in-flight requests, closes the connections and the engine, and exits. */
    const shutdown = (): void => {
      stopping = true;
      void (async () => {
        try {
          await gateway.close();
          await metrics_server?.close();
          await engine.close();
        } catch (error) {
          io.err(`keel: error while stopping: ${(error as Error).message}`);
          resolveExit(EXIT_FAILED);
          return;
        }
        // A shard that failed while the engine closed (its final checkpoint could not be written,
        // a cross-shard group could not finish) is not reported as the engine failing: look.
        const failure = engine.failed;
        if (failure !== null && !failed) {
          io.err(`keel: the engine failed while stopping: ${failure}; the next start recovers from the log`);
          failed = true;
        }
        if (!failed) io.out('keel: stopped');
        resolveExit(failed ? EXIT_FAILED : EXIT_OK);
      })();
    };
    const stop = (signal: NodeJS.Signals): void => {
      if (stopping) {
        io.err(`keel: ${signal} again: exiting at once; the next start replays the log from the last checkpoint`);
        // After a failure a thread may be stuck where process.exit would wait for it forever.
        if (failed) process.kill(process.pid, 'SIGKILL');
        process.exit(EXIT_FAILED);
      }
      io.out(`keel: ${signal}: stopping (answering ${gateway.inflight} in-flight requests)`);
      shutdown();
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    stop_failed = (): void => {
      failed = true;
      // A thread stuck where it cannot be stopped (inside V8, or a native call on a hung disk) would
      // hold up the close, and process.exit too, which waits for every thread: the process kills
      // itself instead, so that its supervisor still sees a failure.
      setTimeout(() => {
        io.err(`keel: the engine did not close within ${FAILED_EXIT_MS} ms of failing; killing the process`);
        process.kill(process.pid, 'SIGKILL');
      }, FAILED_EXIT_MS);
      if (!stopping) shutdown();
    };
  });
}

/** How long a failed engine may take to answer its connections and close before the process exits. */
const FAILED_EXIT_MS = 5_000;

function fail(io: Io, message: string): number {
  io.err(`keel: ${message}`);
  return EXIT_FAILED;
}

/**
 * Each shard's heap when `--shard-heap-mb` is not given: the machine's memory less 2 GiB (the main
 * thread, the page cache LMDB reads through), shared by the shards, and never more than V8's own
 * default of 4 GiB. V8's default alone is per worker: one per core would promise more than the
 * machine has, and the operating system would kill the process before any shard refused a write.
 */
export function defaultShardHeapMb(shards: number): number {
  const spare_mb = Math.floor((totalmem() - 2 * 2 ** 30) / 2 ** 20);
  return Math.max(256, Math.min(4096, Math.floor(spare_mb / shards)));
}
