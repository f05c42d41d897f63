// `keel token create|list|revoke`: edits <data>/tokens.json directly. A running server picks the
// change up within about a second and closes the connections of revoked tokens.

import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseScopes, TokenStore, type TokenRecord } from '../gateway/tokens.ts';
import type { TokenArgs } from './args.ts';
import { table, type Io } from './io.ts';

function publicRecord(r: TokenRecord): { name: string; scopes: string[]; created_at: string; revoked_at: string | null } {
  return { name: r.name, scopes: r.scopes, created_at: r.created_at, revoked_at: r.revoked_at };
}

/** Returns the exit code. */
export function runToken(args: TokenArgs, io: Io): number {
  const dir = resolve(args.data);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    io.err(`keel: no data directory at ${dir}; check --data (or KEEL_DATA), or run \`keel start --data ${args.data}\` once to create it`);
    return 1;
  }
  const opened = TokenStore.open(dir);
  if (!opened.ok) {
    io.err(`keel: ${opened.message}`);
    return 1;
  }
  const store = opened.value;
  switch (args.action) {
    case 'create': {
      const scopes = parseScopes(args.scopes);
      if (!scopes.ok) {
        io.err(`keel: --scopes: ${scopes.message}`);
        return 1;
      }
      const created = store.create(args.name, scopes.value);
      if (!created.ok) {
        io.err(`keel: ${created.message}`);
        return 1;
      }
      const { token, record } = created.value;
      if (args.json) {
        io.out(JSON.stringify({ ...publicRecord(record), token }));
      } else {
        io.out(`Created token "${record.name}" with scopes ${record.scopes.join(', ')}.`);
        io.out('It is shown only this once (only its hash is stored):');
        io.out('');
        io.out(`    ${token}`);
        io.out('');
      }
      return 0;
    }
    case 'list': {
      const records = store.list();
      if (args.json) {
        io.out(JSON.stringify(records.map(publicRecord)));
      } else if (records.length === 0) {
        io.out(`No tokens in ${store.path}; create one with \`keel token create NAME --scopes ...\``);
      } else {
        const rows = [['NAME', 'SCOPES', 'CREATED', 'STATUS']];
        for (const r of records) rows.push([r.name, r.scopes.join(','), r.created_at, r.revoked_at === null ? 'active' : `revoked ${r.revoked_at}`]);
        for (const line of table(rows)) io.out(line);
      }
      return 0;
    }
    case 'revoke': {
      const revoked = store.revoke(args.name);
      if (!revoked.ok) {
        io.err(`keel: ${revoked.message}`);
        return 1;
      }
      if (args.json) io.out(JSON.stringify(publicRecord(revoked.value)));
      else io.out(`Revoked token "${revoked.value.name}". A running server closes its open connections within about a second.`);
      return 0;
    }
  }
}
