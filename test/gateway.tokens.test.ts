import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hashToken, parseScopes, TokenStore } from '../src/gateway/tokens.ts';

function tempDir(t: { teardown: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'keel-tokens-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function open(dir: string): TokenStore {
  const opened = TokenStore.open(dir);
  if (!opened.ok) throw new Error(opened.message);
  return opened.value;
}

t.test('create, verify, list, revoke', async (t) => {
  const dir = tempDir(t);
  const store = open(dir);
  t.notOk(store.exists(), 'a fresh directory has no tokens file');
  const created = store.create('teller', ['ledger:read', 'ledger:write']);
  if (!created.ok) throw new Error(created.message);
  const { token, record } = created.value;
  t.match(token, /^keel_[A-Za-z0-9_-]{43}$/);
  t.equal(Buffer.from(token.slice(5), 'base64url').length, 32);
  t.equal(record.sha256, hashToken(token));

  const file = readFileSync(store.path, 'utf8');
  t.notOk(file.includes(token), 'the token itself is never stored');
  t.ok(file.includes(hashToken(token)), 'its hash is');
  t.equal(statSync(store.path).mode & 0o777, 0o600, 'mode 0600');

  t.same(store.verify(token), { name: 'teller', scopes: ['ledger:read', 'ledger:write'], sha256: record.sha256 });
  t.equal(store.verify(token.slice(0, -1) + (token.endsWith('A') ? 'B' : 'A')), null, 'another token');
  t.equal(store.verify('nope'), null);
  t.equal(store.verify(42), null);

  const again = store.create('teller', ['ledger:read']);
  t.equal(again.ok ? 'ok' : again.error, 'name_taken');

  // Another process (the CLI) revokes it; this store sees it after reload().
  const other = open(dir);
  const revoked = other.revoke('teller');
  t.ok(revoked.ok);
  t.equal(store.reload().ok && store.verify(token), null, 'revoked after reload');
  const twice = other.revoke('teller');
  t.equal(twice.ok ? 'ok' : twice.error, 'not_found');
  t.match(twice.ok ? '' : twice.message, /already revoked/);

  // The name can be used again; both records stay listed.
  const renewed = other.create('teller', ['ledger:read']);
  t.ok(renewed.ok);
  store.reload();
  t.same(
    store.list().map((r) => [r.name, r.revoked_at === null]),
    [
      ['teller', false],
      ['teller', true],
    ],
  );
});

t.test('invalid names and scopes are errors with codes', async (t) => {
  const store = open(tempDir(t));
  const badName = store.create('no spaces', ['admin']);
  t.equal(badName.ok ? 'ok' : badName.error, 'invalid_name');
  const badScope = store.create('x', ['ledger:read', 'root']);
  t.equal(badScope.ok ? 'ok' : badScope.error, 'invalid_scopes');
  t.match(badScope.ok ? '' : badScope.message, /root.*known scopes: ledger:read/);
  const none = parseScopes(' , ');
  t.equal(none.ok ? 'ok' : none.error, 'invalid_scopes');
  t.same(parseScopes('admin, subscribe,admin'), { ok: true, value: ['admin', 'subscribe'] });
  const missing = store.revoke('ghost');
  t.equal(missing.ok ? 'ok' : missing.error, 'not_found');
});

t.test('a broken file is reported and the previous tokens stay in force', async (t) => {
  const dir = tempDir(t);
  const store = open(dir);
  const created = store.create('a', ['admin']);
  if (!created.ok) throw new Error(created.message);
  writeFileSync(store.path, '{"version": 1, "tokens": [');
  const reloaded = store.reload();
  t.equal(reloaded.ok ? 'ok' : reloaded.error, 'unreadable');
  t.ok(store.verify(created.value.token), 'still valid');
  const opened = TokenStore.open(dir);
  t.equal(opened.ok ? 'ok' : opened.error, 'unreadable', 'opening a broken file fails');
});

t.test('watch() reports changes made by another process', async (t) => {
  const dir = tempDir(t);
  const store = open(dir);
  const created = store.create('a', ['admin']);
  if (!created.ok) throw new Error(created.message);
  let changes = 0;
  const changed = new Promise<void>((resolve) => {
    const stop = store.watch(
      () => {
        changes++;
        stop();
        resolve();
      },
      () => {},
    );
  });
  open(dir).revoke('a');
  await changed;
  t.equal(changes, 1);
  t.equal(store.verify(created.value.token), null);
});
