// The `keel` command as an operator runs it: a real process, its stdout/stderr and exit codes.

import t from 'tap';
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Packr, Unpackr } from 'msgpackr';
import WebSocket from 'ws';
import { MAIN, ROOT, finished, startServer, type Done } from './support/keel-process.ts';

const TOKEN_RE = /keel_[A-Za-z0-9_-]{43}/;

const packr = new Packr({ useRecords: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: 'auto' } as unknown as ConstructorParameters<typeof Unpackr>[0]);

/** Runs `keel ARGS` to completion. */
function keel(args: string[], env: Record<string, string> = {}): Promise<Done> {
  const child = spawn(process.execPath, ['--import=tsx', MAIN, ...args], { cwd: ROOT, env: { ...process.env, ...env } });
  return finished(child, { stdout: '', stderr: '' });
}

async function oneRequest(url: string, token: string, request: Record<string, unknown>): Promise<Record<string, unknown>[]> {
  const ws = new WebSocket(url);
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const replies: Record<string, unknown>[] = [];
  const two = new Promise<void>((resolve) =>
    ws.on('message', (data: Buffer) => {
      replies.push(unpackr.unpack(data) as Record<string, unknown>);
      if (replies.length === 2) resolve();
    }),
  );
  ws.send(packr.pack({ id: 1, op: 'hello', token }));
  ws.send(packr.pack({ id: 2, ...request }));
  await two;
  ws.close();
  return replies;
}

function tempDir(t: Tap): string {
  const dir = mkdtempSync(join(tmpdir(), 'keel-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}
type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

t.test('start prints the admin token once, serves, refuses a second start, stops on SIGTERM', async (t) => {
  const data = join(tempDir(t), 'data');
  const server = await startServer(data);
  t.teardown(() => {
    if (server.child.exitCode === null) server.child.kill('SIGKILL');
  });
  const token = TOKEN_RE.exec(server.out.stdout)?.[0];
  t.ok(token, 'the admin token is printed');
  t.match(server.out.stdout, /shown only this once/);
  t.match(server.out.stdout, new RegExp(`data directory\\s+${data.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
  t.match(server.out.stdout, /recovery\s+shard 0: checkpoint at log position \d+/);
  t.match(server.url, /^ws:\/\/127\.0\.0\.1:\d+\/v1$/);
  t.not(server.url, 'ws://127.0.0.1:0/v1', 'the real port, not 0');

  const [hello, created] = await oneRequest(server.url, token as string, {
    op: 'create_accounts',
    accounts: [
      { id: 1, ledger: 1, code: 1 },
      { id: 2, ledger: 1, code: 1 },
      { id: 3, ledger: 1, code: 1 },
    ],
  });
  t.equal(hello.version, 1);
  t.same(created.status, [0, 0, 0]);
  const [, moved] = await oneRequest(server.url, token as string, {
    op: 'create_transfers',
    transfers: [{ id: 10, debit_account_id: 1, credit_account_id: 2, amount: 5, ledger: 1, code: 1 }],
  });
  t.same(moved.status, [0]);

  const second = await keel(['start', '--port', '0', '--data', data]);
  t.equal(second.code, 2, 'a second start on the same data directory exits 2');
  t.match(second.stderr, /is in use by process \d+; stop that engine first/);

  server.child.kill('SIGTERM');
  const done = await server.exited;
  t.equal(done.code, 0, 'SIGTERM: exit 0');
  t.match(done.stdout, /SIGTERM: stopping/);
  t.match(done.stdout, /keel: stopped/);

  // A restart recovers and prints no new token.
  const again = await startServer(data);
  t.notMatch(again.out.stdout, TOKEN_RE, 'no token printed on a later start');
  const [, lookup] = await oneRequest(again.url, token as string, { op: 'lookup_accounts', ids: [1, 2, 3] });
  const ids = (lookup.accounts as Array<{ id: number; debits_posted: number }>).map((a) => a.id);
  t.ok(ids.includes(1) && ids.includes(2), 'accounts and the transfer survived the restart');
  t.ok(ids.includes(3), 'an account without transfers survived the restart');
  again.child.kill('SIGINT');
  t.equal((await again.exited).code, 0, 'SIGINT: exit 0');
});

t.test('a reader of its output that went away (EPIPE) does not stop the engine: SIGTERM still drains, exit 0', async (t) => {
  const data = join(tempDir(t), 'data');
  const server = await startServer(data);
  t.teardown(() => {
    if (server.child.exitCode === null) server.child.kill('SIGKILL');
  });
  const token = TOKEN_RE.exec(server.out.stdout)?.[0] as string;
  // Close our end of its stdout: its next write there ("SIGTERM: stopping") fails with EPIPE.
  server.child.stdout?.destroy();
  const [, created] = await oneRequest(server.url, token, { op: 'create_accounts', accounts: [{ id: 1, ledger: 1, code: 1 }] });
  t.same(created.status, [0], 'still serving');
  server.child.kill('SIGTERM');
  const done = await server.exited;
  t.equal(done.code, 0, 'exit 0 after the drain');
  t.notMatch(done.stderr, /EPIPE|Unhandled 'error'/, 'no crash on the broken pipe');
  const again = await startServer(data);
  const [, lookup] = await oneRequest(again.url, token, { op: 'lookup_accounts', ids: [1] });
  t.equal((lookup.accounts as unknown[]).length, 1, 'what it acknowledged is there after the restart');
  again.child.kill('SIGTERM');
  t.equal((await again.exited).code, 0);
});

t.test('output that cannot be written (a full disk under a redirect) is said on stderr and fails the command', async (t) => {
  const data = join(tempDir(t), 'data');
  const full = openSync('/dev/full', 'w');
  t.teardown(() => closeSync(full));
  const child = spawn(process.execPath, ['--import=tsx', MAIN, 'token', 'create', 'teller', '--scopes', 'ledger:read', '--data', data], {
    cwd: ROOT,
    stdio: ['ignore', full, 'pipe'],
  });
  const done = await finished(child, { stdout: '', stderr: '' });
  t.equal(done.code, 1, 'not exit 0: the secret was printed nowhere');
  t.match(done.stderr, 'keel: cannot write to stdout (ENOSPC)');
  t.equal(done.stderr.split('cannot write to stdout').length, 2, 'said once');
});

t.test('token create, list, revoke', async (t) => {
  const data = tempDir(t);
  const created = await keel(['token', 'create', 'teller', '--scopes', 'ledger:read,ledger:write', '--data', data]);
  t.equal(created.code, 0, created.stderr);
  t.match(created.stdout, /Created token "teller" with scopes ledger:read, ledger:write/);
  t.match(created.stdout, TOKEN_RE);

  const json = await keel(['token', 'create', 'auditor', '--scopes', 'ledger:read', '--data', data, '--json']);
  t.equal(json.code, 0);
  const parsed = JSON.parse(json.stdout) as { name: string; scopes: string[]; token: string; revoked_at: null };
  t.same({ name: parsed.name, scopes: parsed.scopes, revoked_at: parsed.revoked_at }, { name: 'auditor', scopes: ['ledger:read'], revoked_at: null });
  t.match(parsed.token, TOKEN_RE);

  const taken = await keel(['token', 'create', 'teller', '--scopes', 'ledger:read', '--data', data]);
  t.equal(taken.code, 1);
  t.match(taken.stderr, /already exists; revoke it first or pick another name/);

  const badScope = await keel(['token', 'create', 'x', '--scopes', 'ledger:read,root', '--data', data]);
  t.equal(badScope.code, 1);
  t.match(badScope.stderr, /unknown scope "root"; known scopes: ledger:read, ledger:write/);

  const noScopes = await keel(['token', 'create', 'x', '--data', data]);
  t.equal(noScopes.code, 1);
  t.match(noScopes.stderr, /needs --scopes/);

  const revoked = await keel(['token', 'revoke', 'teller', '--data', data]);
  t.equal(revoked.code, 0);
  t.match(revoked.stdout, /Revoked token "teller"/);
  const twice = await keel(['token', 'revoke', 'teller', '--data', data]);
  t.equal(twice.code, 1);
  t.match(twice.stderr, /already revoked/);

  const list = await keel(['token', 'list', '--data', data]);
  t.equal(list.code, 0);
  const lines = list.stdout.trim().split('\n');
  t.match(lines[0], /^NAME\s+SCOPES\s+CREATED\s+STATUS$/);
  t.match(lines[1], /^teller\s+ledger:read,ledger:write\s+\S+\s+revoked \S+$/);
  t.match(lines[2], /^auditor\s+ledger:read\s+\S+\s+active$/);
  t.notMatch(list.stdout, TOKEN_RE, 'list never shows tokens');

  const listJson = await keel(['token', 'list', '--data', data, '--json']);
  const records = JSON.parse(listJson.stdout) as Array<{ name: string; revoked_at: string | null; sha256?: string }>;
  t.same(records.map((r) => [r.name, r.revoked_at === null]), [
    ['teller', false],
    ['auditor', true],
  ]);
  t.notOk('sha256' in records[0], 'no hashes in the output either');
});

t.test('errors say what was wrong and what to do', async (t) => {
  const missing = await keel(['token', 'list', '--data', join(tmpdir(), 'keel-no-such-dir-for-sure')]);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /no data directory at .*check --data/);
  const unknown = await keel(['stop']);
  t.equal(unknown.code, 1);
  t.match(unknown.stderr, /unknown command "stop"/);
  const port = await keel(['start', '--port', 'eighty']);
  t.equal(port.code, 1);
  t.match(port.stderr, /--port must be an integer in 0\.\.65535/);
  const flag = await keel(['start', '--prot', '1']);
  t.equal(flag.code, 1);
  t.match(flag.stderr, /Unknown option '--prot'.*keel --help/);
  const tls = await keel(['start', '--tls-cert', 'x.pem']);
  t.equal(tls.code, 1);
  t.match(tls.stderr, /both --tls-cert and --tls-key/);
  const help = await keel(['--help']);
  t.equal(help.code, 0);
  t.match(help.stdout, /keel start \[--data DIR\]/);
});

t.test('a port in use is explained', async (t) => {
  const data = join(tempDir(t), 'data');
  const first = await startServer(data);
  t.teardown(() => {
    if (first.child.exitCode === null) first.child.kill('SIGKILL');
  });
  const port = new URL(first.url).port;
  const other = await keel(['start', '--port', port, '--data', join(tempDir(t), 'other')]);
  t.equal(other.code, 1);
  t.match(other.stderr, new RegExp(`127\\.0\\.0\\.1:${port} is already in use; stop the other process or pick another --port`));
  first.child.kill('SIGTERM');
  t.equal((await first.exited).code, 0);
});
