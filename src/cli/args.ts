// Command-line parsing: flags, their environment variables and defaults, usage text. Errors are
// values: a message that says what was wrong and what to do.

import { parseArgs } from 'node:util';
import { SHARDS_MAX } from '../shard/router.ts';

export const USAGE = `Usage:
  keel start [--data DIR] [--host HOST] [--port PORT] [--metrics-port PORT] [--shards N] [--feed-retention HOURS] [--shard-heap-mb M] [--shard-stall-ms MS] [--tls-cert FILE --tls-key FILE] [--center NAME]
             [--etcd URLS --peers NAME=HOST:PORT,... [--cluster NAME] [--replication-port PORT] [--min-insync N] [--lease-ttl S]]
  keel token create NAME --scopes SCOPE[,SCOPE...] [--data DIR] [--json]
  keel token list [--data DIR] [--json]
  keel token revoke NAME [--data DIR] [--json]
  keel status [--metrics-url URL] [--json]   a running engine's shards and their health
  keel cluster status --etcd URLS [--cluster NAME] [--json]   active centers: who leads, who is in sync, lag
  keel log check [--data DIR] [--json]       find what stops a shard's log from replaying
  keel log repair [--data DIR] [--force] [--json]   drop never-acknowledged entries after a gap
                                             (--force: also a corrupt entry and all after it)

Options (and their environment variables):
  --data DIR        data directory (KEEL_DATA, default ./data)
  --host HOST       listen address (KEEL_HOST, default 127.0.0.1)
  --port PORT       listen port, 0 picks a free one (KEEL_PORT, default 7070)
  --metrics-host H  Prometheus /metrics address (KEEL_METRICS_HOST, default 127.0.0.1)
  --metrics-port P  Prometheus /metrics port, 0 picks one, off turns it off (KEEL_METRICS_PORT, default 9464; 0 with --port 0)
  --shards N        shard workers, 1..16 (KEEL_SHARDS; default: the data directory's count,
                    or one per core for a new one; fixed once the directory exists)
  --feed-retention H  the change feed serves transfers of the last H hours; older cursors get
                    cursor_expired (KEEL_FEED_RETENTION_HOURS, default 168; 0 keeps all)
  --shard-heap-mb M each shard worker's heap limit in MiB, 256 or more (KEEL_SHARD_HEAP_MB; default:
                    the machine's memory less 2 GiB, shared by the shards, at most 4096): a shard
                    keeps its state in memory and refuses writes (busy) near the limit
  --shard-stall-ms MS  a shard whose thread makes no progress for MS (a hang, a heap thrashing at
                    its limit) stops the engine, which exits 1 for a supervisor to restart it
                    (KEEL_SHARD_STALL_MS, default 30000; 1000 or more, or off)
  --tls-cert FILE   serve wss:// with this PEM certificate (KEEL_TLS_CERT), needs --tls-key
  --tls-key FILE    the certificate's PEM private key (KEEL_TLS_KEY)
  --center NAME     the center's name reported by hello (KEEL_CENTER, default local)
 Active centers (docs/replication.md; all of these, or none for a single center):
  --etcd URLS       etcd endpoints, comma-separated: joins a cluster (KEEL_ETCD)
  --peers LIST      the other centers, NAME=HOST:PORT of their replication ports (KEEL_PEERS)
  --cluster NAME    the cluster's name in etcd (KEEL_CLUSTER, default keel)
  --replication-host H / --replication-port P   where peers reach this center
                    (KEEL_REPLICATION_HOST, default 127.0.0.1; KEEL_REPLICATION_PORT, default 7170)
  --min-insync N    writes are refused while fewer centers are in sync (KEEL_MIN_INSYNC, default 2)
  --lease-ttl S     the leader's etcd lease in seconds, at least 2 (KEEL_LEASE_TTL, default 2)
                    KEEL_CLUSTER_SECRET (16+ characters, the same on every center) is required;
                    KEEL_REPLICA_LAG_MAX_MS: a follower behind this long leaves the in-sync set (2000)
  --scopes LIST     comma-separated: ledger:read, ledger:write, banking:read, banking:write, subscribe, admin
  --json            machine-readable output
Logs are JSON lines on stderr; KEEL_LOG_LEVEL sets the level (default warn).`;

export type ArgsResult<T> = { ok: true; value: T } | { ok: false; message: string };

export interface StartArgs {
  data: string;
  host: string;
  port: number;
  /** -1: no metrics endpoint. */
  metrics_port: number;
  metrics_host: string;
  /** null: the data directory's count, or one per core for a new directory. */
  shards: number | null;
  /** The change feed's retention in hours (0: all). */
  feed_retention_hours: number;
  /** Each shard worker's heap limit in MiB; null: start.ts's default (defaultShardHeapMb). */
  shard_heap_mb: number | null;
  /** A shard thread's longest pause before the engine fails it; 0: never (off). */
  shard_stall_ms: number;
  tls_cert: string | null;
  tls_key: string | null;
  center: string;
  /** Present when the center joins a cluster. */
  cluster: ClusterArgs | null;
}

export interface ClusterArgs {
  etcd: string[];
  peers: Record<string, string>;
  name: string;
  replication_host: string;
  replication_port: number;
  min_insync: number;
  lease_ttl_s: number;
  /** A follower behind this long leaves the in-sync set (KEEL_REPLICA_LAG_MAX_MS). */
  lag_max_ms: number;
  secret: string;
}

export type TokenArgs =
  | { action: 'create'; data: string; json: boolean; name: string; scopes: string }
  | { action: 'list'; data: string; json: boolean }
  | { action: 'revoke'; data: string; json: boolean; name: string };

export interface ClusterStatusArgs {
  etcd: string[];
  cluster: string;
  json: boolean;
}

export interface StatusArgs {
  /** The engine's /metrics endpoint (KEEL_METRICS_URL, default http://127.0.0.1:9464/metrics). */
  metrics_url: string;
  json: boolean;
}

export interface LogArgs {
  action: 'check' | 'repair';
  data: string;
  json: boolean;
  force: boolean;
}

export type Command =
  | { command: 'start'; args: StartArgs }
  | { command: 'token'; args: TokenArgs }
  | { command: 'log'; args: LogArgs }
  | { command: 'status'; args: StatusArgs }
  | { command: 'cluster'; args: ClusterStatusArgs }
  | { command: 'help' };

type Env = Readonly<Record<string, string | undefined>>;

function bad(message: string): { ok: false; message: string } {
  return { ok: false, message };
}

function pick(flag: string | undefined, env: string | undefined, fallback: string): string {
  if (flag !== undefined) return flag;
  if (env !== undefined && env !== '') return env;
  return fallback;
}

function integer(name: string, text: string, min: number, max: number): ArgsResult<number> {
  if (!/^\d+$/.test(text)) return bad(`${name} must be an integer in ${min}..${max}; got ${JSON.stringify(text)}`);
  const n = Number(text);
  if (n < min || n > max) return bad(`${name} must be an integer in ${min}..${max}; got ${n}`);
  return { ok: true, value: n };
}

function parse(argv: string[], options: Record<string, { type: 'string' | 'boolean' }>): ArgsResult<{ values: Record<string, string | boolean | undefined>; positionals: string[] }> {
  try {
    const { values, positionals } = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
    return { ok: true, value: { values: values as Record<string, string | boolean | undefined>, positionals } };
  } catch (error) {
    return bad(`${(error as Error).message.split('\n')[0]}; see \`keel --help\``);
  }
}

function str(v: string | boolean | undefined): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/**
 * The shortest stall limit: several looks of the watchdog (a quarter of the limit apart), each far
 * longer than one batch's synchronous work or a collection, so that timer drift never fails a shard.
 */
const STALL_MS_MIN = 1000;

export function parseCommand(argv: string[], env: Env): ArgsResult<Command> {
  const [command, ...rest] = argv;
  if (command === undefined || command === 'help' || command === '--help' || command === '-h') return { ok: true, value: { command: 'help' } };
  if (command === 'start') return parseStart(rest, env);
  if (command === 'token') return parseToken(rest, env);
  if (command === 'log') return parseLog(rest, env);
  if (command === 'status') return parseStatus(rest, env);
  if (command === 'cluster') return parseClusterCommand(rest, env);
  return bad(`unknown command ${JSON.stringify(command)}; use \`keel start\`, \`keel token create|list|revoke\`, \`keel status\`, \`keel cluster status\` or \`keel log check|repair\` (see \`keel --help\`)`);
}

function parseStart(argv: string[], env: Env): ArgsResult<Command> {
  const parsed = parse(argv, {
    data: { type: 'string' },
    host: { type: 'string' },
    port: { type: 'string' },
    'metrics-port': { type: 'string' },
    'metrics-host': { type: 'string' },
    shards: { type: 'string' },
    'feed-retention': { type: 'string' },
    'shard-heap-mb': { type: 'string' },
    'shard-stall-ms': { type: 'string' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    center: { type: 'string' },
    etcd: { type: 'string' },
    peers: { type: 'string' },
    cluster: { type: 'string' },
    'replication-host': { type: 'string' },
    'replication-port': { type: 'string' },
    'min-insync': { type: 'string' },
    'lease-ttl': { type: 'string' },
  });
  if (!parsed.ok) return parsed;
  const { values, positionals } = parsed.value;
  const cluster = parseCluster(values, env);
  if (!cluster.ok) return cluster;
  if (positionals.length > 0) return bad(`keel start takes no arguments besides options; got ${JSON.stringify(positionals[0])}`);
  const port = integer('--port', pick(str(values.port), env.KEEL_PORT, '7070'), 0, 65535);
  if (!port.ok) return port;
  const shards_text = pick(str(values.shards), env.KEEL_SHARDS, 'auto');
  const shards = shards_text === 'auto' ? { ok: true as const, value: null } : integer('--shards', shards_text, 1, SHARDS_MAX);
  if (!shards.ok) return shards;
  const retention = integer('--feed-retention', pick(str(values['feed-retention']), env.KEEL_FEED_RETENTION_HOURS, '168'), 0, 24 * 365 * 100);
  if (!retention.ok) return retention;
  const heap_text = pick(str(values['shard-heap-mb']), env.KEEL_SHARD_HEAP_MB, 'default');
  const heap = heap_text === 'default' ? { ok: true as const, value: null } : integer('--shard-heap-mb', heap_text, 256, 1_048_576);
  if (!heap.ok) return heap;
  const stall_text = pick(str(values['shard-stall-ms']), env.KEEL_SHARD_STALL_MS, '30000');
  const stall = stall_text === 'off' ? { ok: true as const, value: 0 } : integer('--shard-stall-ms', stall_text, STALL_MS_MIN, 86_400_000);
  if (!stall.ok) return stall;
  // With --port 0 (tests, several engines on one machine) the metrics port is picked freely too.
  const metrics_default = port.value === 0 ? '0' : '9464';
  const metrics_text = pick(str(values['metrics-port']), env.KEEL_METRICS_PORT, metrics_default);
  const metrics_port = metrics_text === 'off' ? { ok: true as const, value: -1 } : integer('--metrics-port', metrics_text, 0, 65535);
  if (!metrics_port.ok) return metrics_port;
  const metrics_host = pick(str(values['metrics-host']), env.KEEL_METRICS_HOST, '127.0.0.1');
  if (metrics_host === '') return bad('--metrics-host must not be empty');
  const cert = pick(str(values['tls-cert']), env.KEEL_TLS_CERT, '');
  const key = pick(str(values['tls-key']), env.KEEL_TLS_KEY, '');
  if ((cert === '') !== (key === '')) return bad('TLS needs both --tls-cert and --tls-key (or KEEL_TLS_CERT and KEEL_TLS_KEY)');
  const host = pick(str(values.host), env.KEEL_HOST, '127.0.0.1');
  if (host === '') return bad('--host must not be empty');
  return {
    ok: true,
    value: {
      command: 'start',
      args: {
        data: pick(str(values.data), env.KEEL_DATA, './data'),
        host,
        port: port.value,
        metrics_port: metrics_port.value,
        metrics_host,
        shards: shards.value,
        feed_retention_hours: retention.value,
        shard_heap_mb: heap.value,
        shard_stall_ms: stall.value,
        tls_cert: cert === '' ? null : cert,
        tls_key: key === '' ? null : key,
        center: pick(str(values.center), env.KEEL_CENTER, 'local'),
        cluster: cluster.value,
      },
    },
  };
}

function parseCluster(values: Record<string, string | boolean | undefined>, env: Env): ArgsResult<ClusterArgs | null> {
  const etcd = pick(str(values.etcd), env.KEEL_ETCD, '');
  const peers_text = pick(str(values.peers), env.KEEL_PEERS, '');
  if (etcd === '') {
    if (peers_text !== '') return bad('--peers needs --etcd (the cluster coordinates through etcd); or drop --peers for a single center');
    return { ok: true, value: null };
  }
  const endpoints = etcd.split(',').map((e) => e.trim()).filter((e) => e !== '');
  if (!endpoints.every((e) => /^https?:\/\/[^\s/]+$/.test(e))) return bad(`--etcd takes URLs like http://127.0.0.1:2379, comma-separated; got ${JSON.stringify(etcd)}`);
  const peers: Record<string, string> = {};
  for (const item of peers_text.split(',').map((p) => p.trim()).filter((p) => p !== '')) {
    const match = /^([a-z0-9][a-z0-9_-]{0,62})=([^\s=]+:\d{1,5})$/.exec(item);
    if (match === null) return bad(`--peers: ${JSON.stringify(item)} is not NAME=HOST:PORT (names: a-z, 0-9, _ and -)`);
    peers[match[1]] = match[2];
  }
  if (Object.keys(peers).length === 0) return bad('--peers must name the other centers, e.g. --peers b=10.0.0.2:7170,c=10.0.0.3:7170');
  const port = integer('--replication-port', pick(str(values['replication-port']), env.KEEL_REPLICATION_PORT, '7170'), 0, 65535);
  if (!port.ok) return port;
  const min_insync = integer('--min-insync', pick(str(values['min-insync']), env.KEEL_MIN_INSYNC, '2'), 1, Object.keys(peers).length + 1);
  if (!min_insync.ok) return min_insync;
  const ttl = integer('--lease-ttl', pick(str(values['lease-ttl']), env.KEEL_LEASE_TTL, '2'), 2, 60);
  if (!ttl.ok) return ttl;
  const lag = integer('KEEL_REPLICA_LAG_MAX_MS', env.KEEL_REPLICA_LAG_MAX_MS ?? '2000', 100, 600_000);
  if (!lag.ok) return lag;
  const secret = env.KEEL_CLUSTER_SECRET ?? '';
  if (secret.length < 16) return bad('a cluster needs KEEL_CLUSTER_SECRET set to the same secret of at least 16 characters on every center');
  return {
    ok: true,
    value: {
      etcd: endpoints,
      peers,
      name: pick(str(values.cluster), env.KEEL_CLUSTER, 'keel'),
      replication_host: pick(str(values['replication-host']), env.KEEL_REPLICATION_HOST, '127.0.0.1'),
      replication_port: port.value,
      min_insync: min_insync.value,
      lease_ttl_s: ttl.value,
      lag_max_ms: lag.value,
      secret,
    },
  };
}

function parseToken(argv: string[], env: Env): ArgsResult<Command> {
  const parsed = parse(argv, {
    data: { type: 'string' },
    json: { type: 'boolean' },
    scopes: { type: 'string' },
  });
  if (!parsed.ok) return parsed;
  const { values, positionals } = parsed.value;
  const [action, name, extra] = positionals;
  const data = pick(str(values.data), env.KEEL_DATA, './data');
  const json = values.json === true;
  const scopes = str(values.scopes);
  if (action === undefined) return bad('keel token needs an action: create NAME --scopes ..., list, or revoke NAME');
  if (extra !== undefined) return bad(`unexpected argument ${JSON.stringify(extra)}`);
  switch (action) {
    case 'create':
      if (name === undefined) return bad('keel token create needs a NAME, e.g. `keel token create teller --scopes ledger:read,ledger:write`');
      if (scopes === undefined) {
        return bad('keel token create needs --scopes, e.g. --scopes ledger:read,ledger:write (known: ledger:read, ledger:write, banking:read, banking:write, subscribe, admin)');
      }
      return { ok: true, value: { command: 'token', args: { action, data, json, name, scopes } } };
    case 'list':
      if (name !== undefined) return bad(`keel token list takes no NAME; got ${JSON.stringify(name)}`);
      if (scopes !== undefined) return bad('--scopes only applies to keel token create');
      return { ok: true, value: { command: 'token', args: { action, data, json } } };
    case 'revoke':
      if (name === undefined) return bad('keel token revoke needs the NAME of the token (`keel token list` shows them)');
      if (scopes !== undefined) return bad('--scopes only applies to keel token create');
      return { ok: true, value: { command: 'token', args: { action, data, json, name } } };
    default:
      return bad(`unknown token action ${JSON.stringify(action)}; use create, list or revoke`);
  }
}

function parseLog(argv: string[], env: Env): ArgsResult<Command> {
  const parsed = parse(argv, { data: { type: 'string' }, json: { type: 'boolean' }, force: { type: 'boolean' } });
  if (!parsed.ok) return parsed;
  const { values, positionals } = parsed.value;
  const [action, extra] = positionals;
  if (action !== 'check' && action !== 'repair') return bad('keel log needs an action: check or repair');
  if (extra !== undefined) return bad(`unexpected argument ${JSON.stringify(extra)}`);
  if (action === 'check' && values.force === true) return bad('--force only applies to keel log repair');
  return {
    ok: true,
    value: { command: 'log', args: { action, data: pick(str(values.data), env.KEEL_DATA, './data'), json: values.json === true, force: values.force === true } },
  };
}

function parseClusterCommand(argv: string[], env: Env): ArgsResult<Command> {
  const parsed = parse(argv, { etcd: { type: 'string' }, cluster: { type: 'string' }, json: { type: 'boolean' } });
  if (!parsed.ok) return parsed;
  const { values, positionals } = parsed.value;
  if (positionals[0] !== 'status' || positionals.length > 1) return bad('keel cluster takes one action: status (e.g. `keel cluster status --etcd http://127.0.0.1:2379`)');
  const etcd = pick(str(values.etcd), env.KEEL_ETCD, '');
  const endpoints = etcd.split(',').map((e) => e.trim()).filter((e) => e !== '');
  if (endpoints.length === 0 || !endpoints.every((e) => /^https?:\/\/[^\s/]+$/.test(e))) return bad('keel cluster status needs --etcd URLS (or KEEL_ETCD), e.g. --etcd http://127.0.0.1:2379');
  return { ok: true, value: { command: 'cluster', args: { etcd: endpoints, cluster: pick(str(values.cluster), env.KEEL_CLUSTER, 'keel'), json: values.json === true } } };
}

function parseStatus(argv: string[], env: Env): ArgsResult<Command> {
  const parsed = parse(argv, { 'metrics-url': { type: 'string' }, json: { type: 'boolean' } });
  if (!parsed.ok) return parsed;
  const { values, positionals } = parsed.value;
  if (positionals.length > 0) return bad(`keel status takes no arguments besides options; got ${JSON.stringify(positionals[0])}`);
  const metrics_url = pick(str(values['metrics-url']), env.KEEL_METRICS_URL, 'http://127.0.0.1:9464/metrics');
  if (!/^https?:\/\//.test(metrics_url)) return bad('--metrics-url must be an http(s) URL, e.g. http://127.0.0.1:9464/metrics');
  return { ok: true, value: { command: 'status', args: { metrics_url, json: values.json === true } } };
}
