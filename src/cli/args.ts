// Command-line parsing: flags, their environment variables and defaults, usage text. Errors are
// values: a message that says what was wrong and what to do.

import { parseArgs } from 'node:util';
import { SHARDS_MAX } from '../shard/router.ts';

export const USAGE = `Usage:
  keel start [--data DIR] [--host HOST] [--port PORT] [--metrics-port PORT] [--shards N] [--feed-retention HOURS] [--tls-cert FILE --tls-key FILE] [--center NAME]
  keel token create NAME --scopes SCOPE[,SCOPE...] [--data DIR] [--json]
  keel token list [--data DIR] [--json]
  keel token revoke NAME [--data DIR] [--json]
  keel status [--metrics-url URL] [--json]   a running engine's shards and their health
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
  --tls-cert FILE   serve wss:// with this PEM certificate (KEEL_TLS_CERT), needs --tls-key
  --tls-key FILE    the certificate's PEM private key (KEEL_TLS_KEY)
  --center NAME     the center's name reported by hello (KEEL_CENTER, default local)
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
  tls_cert: string | null;
  tls_key: string | null;
  center: string;
}

export type TokenArgs =
  | { action: 'create'; data: string; json: boolean; name: string; scopes: string }
  | { action: 'list'; data: string; json: boolean }
  | { action: 'revoke'; data: string; json: boolean; name: string };

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

export function parseCommand(argv: string[], env: Env): ArgsResult<Command> {
  const [command, ...rest] = argv;
  if (command === undefined || command === 'help' || command === '--help' || command === '-h') return { ok: true, value: { command: 'help' } };
  if (command === 'start') return parseStart(rest, env);
  if (command === 'token') return parseToken(rest, env);
  if (command === 'log') return parseLog(rest, env);
  if (command === 'status') return parseStatus(rest, env);
  return bad(`unknown command ${JSON.stringify(command)}; use \`keel start\`, \`keel token create|list|revoke\`, \`keel status\` or \`keel log check|repair\` (see \`keel --help\`)`);
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
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    center: { type: 'string' },
  });
  if (!parsed.ok) return parsed;
  const { values, positionals } = parsed.value;
  if (positionals.length > 0) return bad(`keel start takes no arguments besides options; got ${JSON.stringify(positionals[0])}`);
  const port = integer('--port', pick(str(values.port), env.KEEL_PORT, '7070'), 0, 65535);
  if (!port.ok) return port;
  const shards_text = pick(str(values.shards), env.KEEL_SHARDS, 'auto');
  const shards = shards_text === 'auto' ? { ok: true as const, value: null } : integer('--shards', shards_text, 1, SHARDS_MAX);
  if (!shards.ok) return shards;
  const retention = integer('--feed-retention', pick(str(values['feed-retention']), env.KEEL_FEED_RETENTION_HOURS, '168'), 0, 24 * 365 * 100);
  if (!retention.ok) return retention;
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
        tls_cert: cert === '' ? null : cert,
        tls_key: key === '' ? null : key,
        center: pick(str(values.center), env.KEEL_CENTER, 'local'),
      },
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

function parseStatus(argv: string[], env: Env): ArgsResult<Command> {
  const parsed = parse(argv, { 'metrics-url': { type: 'string' }, json: { type: 'boolean' } });
  if (!parsed.ok) return parsed;
  const { values, positionals } = parsed.value;
  if (positionals.length > 0) return bad(`keel status takes no arguments besides options; got ${JSON.stringify(positionals[0])}`);
  const metrics_url = pick(str(values['metrics-url']), env.KEEL_METRICS_URL, 'http://127.0.0.1:9464/metrics');
  if (!/^https?:\/\//.test(metrics_url)) return bad('--metrics-url must be an http(s) URL, e.g. http://127.0.0.1:9464/metrics');
  return { ok: true, value: { command: 'status', args: { metrics_url, json: values.json === true } } };
}
