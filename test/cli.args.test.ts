// Command-line parsing of the metrics options (values that look like flags must still parse).
import t from 'tap';
import { parseCommand } from '../src/cli/args.ts';

function startArgs(argv: string[]) {
  const parsed = parseCommand(['start', ...argv], {});
  if (!parsed.ok) return parsed;
  if (parsed.value.command !== 'start') throw new Error('not start');
  return { ok: true as const, args: parsed.value.args };
}

t.test('metrics port: default, explicit, off, and picked freely with --port 0', async (t) => {
  const base = startArgs([]);
  t.ok(base.ok && base.args.metrics_port === 9464 && base.args.metrics_host === '127.0.0.1');
  const explicit = startArgs(['--metrics-port', '9500']);
  t.ok(explicit.ok && explicit.args.metrics_port === 9500);
  const off = startArgs(['--metrics-port', 'off']);
  t.ok(off.ok && off.args.metrics_port === -1, 'off turns the endpoint off');
  const free = startArgs(['--port', '0']);
  t.ok(free.ok && free.args.metrics_port === 0, '--port 0 picks the metrics port freely too');
  const bad = startArgs(['--metrics-port', 'ninety']);
  t.notOk(bad.ok, 'a non-number is refused');
  t.match(bad.ok ? '' : bad.message, /--metrics-port/);
  const env = parseCommand(['start'], { KEEL_METRICS_PORT: 'off' });
  t.ok(env.ok && env.value.command === 'start' && env.value.args.metrics_port === -1, 'KEEL_METRICS_PORT=off');
});

t.test('shard stall: default 30 s, explicit, off, and a floor', async (t) => {
  const base = startArgs([]);
  t.ok(base.ok && base.args.shard_stall_ms === 30_000, 'default 30 s');
  const explicit = startArgs(['--shard-stall-ms', '1500']);
  t.ok(explicit.ok && explicit.args.shard_stall_ms === 1500);
  const off = parseCommand(['start'], { KEEL_SHARD_STALL_MS: 'off' });
  t.ok(off.ok && off.value.command === 'start' && off.value.args.shard_stall_ms === 0, 'KEEL_SHARD_STALL_MS=off');
  const low = startArgs(['--shard-stall-ms', '999']);
  t.notOk(low.ok, 'below 1000 ms is refused');
  t.match(low.ok ? '' : low.message, /--shard-stall-ms/);
});

t.test('keel log check|repair', (t) => {
  const check = parseCommand(['log', 'check', '--data', '/d'], {});
  t.same(check.ok && check.value, { command: 'log', args: { action: 'check', data: '/d', json: false, force: false } });
  const repair = parseCommand(['log', 'repair', '--force', '--json'], { KEEL_DATA: '/e' });
  t.same(repair.ok && repair.value, { command: 'log', args: { action: 'repair', data: '/e', json: true, force: true } });
  t.notOk(parseCommand(['log'], {}).ok, 'an action is required');
  t.notOk(parseCommand(['log', 'check', '--force'], {}).ok, '--force only with repair');
  t.end();
});

t.test('keel start joins a cluster only with --etcd, --peers and a cluster secret', (t) => {
  const secret = { KEEL_CLUSTER_SECRET: 'sixteen-chars-or-more' };
  const single = parseCommand(['start'], {});
  t.ok(single.ok && single.value.command === 'start' && single.value.args.cluster === null, 'no --etcd: a single center');
  const joined = parseCommand(['start', '--center', 'a', '--etcd', 'http://127.0.0.1:2379', '--peers', 'b=10.0.0.2:7170,c=10.0.0.3:7171', '--min-insync', '3'], secret);
  t.ok(joined.ok, 'a cluster');
  if (joined.ok && joined.value.command === 'start') {
    t.same(joined.value.args.cluster, {
      etcd: ['http://127.0.0.1:2379'],
      peers: { b: '10.0.0.2:7170', c: '10.0.0.3:7171' },
      name: 'keel',
      replication_host: '127.0.0.1',
      replication_port: 7170,
      min_insync: 3,
      lease_ttl_s: 2,
      lag_max_ms: 2000,
      secret: 'sixteen-chars-or-more',
    });
  }
  const refused = (argv: string[], env: Record<string, string>, pattern: RegExp, what: string): void => {
    const result = parseCommand(['start', ...argv], env);
    t.ok(!result.ok && pattern.test(result.message), `${what}: ${result.ok ? 'accepted' : result.message}`);
  };
  refused(['--peers', 'b=h:1'], secret, /--peers needs --etcd/, 'peers without etcd');
  refused(['--etcd', 'http://e:2379'], secret, /--peers must name the other centers/, 'etcd without peers');
  refused(['--etcd', 'http://e:2379', '--peers', 'b:1'], secret, /NAME=HOST:PORT/, 'a peer without a name');
  refused(['--etcd', 'e:2379', '--peers', 'b=h:1'], secret, /URLs like http/, 'an endpoint without scheme');
  refused(['--etcd', 'http://e:2379', '--peers', 'b=h:1'], {}, /KEEL_CLUSTER_SECRET/, 'no secret');
  refused(['--etcd', 'http://e:2379', '--peers', 'b=h:1', '--min-insync', '3'], secret, /--min-insync/, 'more in sync than centers');
  refused(['--etcd', 'http://e:2379', '--peers', 'b=h:1', '--lease-ttl', '1'], secret, /--lease-ttl/, 'a lease under etcd\'s minimum');
  t.end();
});

t.test('keel cluster status', (t) => {
  const parsed = parseCommand(['cluster', 'status', '--json'], { KEEL_ETCD: 'http://127.0.0.1:2379', KEEL_CLUSTER: 'prod' });
  t.ok(parsed.ok && parsed.value.command === 'cluster');
  if (parsed.ok && parsed.value.command === 'cluster') t.same(parsed.value.args, { etcd: ['http://127.0.0.1:2379'], cluster: 'prod', json: true });
  t.notOk(parseCommand(['cluster', 'status'], {}).ok, 'needs etcd');
  t.notOk(parseCommand(['cluster'], { KEEL_ETCD: 'http://e:1' }).ok, 'needs an action');
  t.end();
});
