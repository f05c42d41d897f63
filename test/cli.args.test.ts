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

t.test('keel log check|repair', (t) => {
  const check = parseCommand(['log', 'check', '--data', '/d'], {});
  t.same(check.ok && check.value, { command: 'log', args: { action: 'check', data: '/d', json: false, force: false } });
  const repair = parseCommand(['log', 'repair', '--force', '--json'], { KEEL_DATA: '/e' });
  t.same(repair.ok && repair.value, { command: 'log', args: { action: 'repair', data: '/e', json: true, force: true } });
  t.notOk(parseCommand(['log'], {}).ok, 'an action is required');
  t.notOk(parseCommand(['log', 'check', '--force'], {}).ok, '--force only with repair');
  t.end();
});
