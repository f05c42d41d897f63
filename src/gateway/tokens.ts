// API tokens: `<data_dir>/tokens.json` (mode 0600) holds only SHA-256 hashes of tokens, with each
// token's name, scopes, creation and revocation times. The plaintext (`keel_` + 32 random bytes,
// base64url) is returned once by create() and never stored.
//
// Several processes use the file: the running server reads it (and reloads it when it changes),
// `keel token ...` rewrites it. Every mutation re-reads the file first and replaces it atomically
// (write a temporary file, rename), so a reader never sees half a file.
//
// Errors are values: every fallible call returns `{ok: false, error, message}` with a stable code.

import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, renameSync, rmSync, statSync, unwatchFile, watch, watchFile, writeFileSync } from 'node:fs';
import type { FSWatcher, Stats } from 'node:fs';
import { join } from 'node:path';
import { SCOPES, isScope, type Scope } from './protocol.ts';

export const TOKENS_FILE = 'tokens.json';
const FILE_VERSION = 1;
const TOKEN_PREFIX = 'keel_';
const TOKEN_RANDOM_BYTES = 32;
/** `keel_` + 43 base64url characters. */
const TOKEN_PATTERN = /^keel_[A-Za-z0-9_-]{43}$/;
const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** The poll fallback of watch(): fs.watch misses changes on some file systems (NFS, some containers). */
const POLL_INTERVAL_MS = 1000;

/** A token as stored and listed: never the token itself. */
export interface TokenRecord {
  name: string;
  /** Hex SHA-256 of the token text. Not secret, but useless without the token. */
  sha256: string;
  scopes: Scope[];
  /** ISO 8601. */
  created_at: string;
  /** ISO 8601, or null while the token is active. */
  revoked_at: string | null;
}

/** What a verified token grants. `sha256` identifies the token (names can be reused after revoke). */
export interface Principal {
  name: string;
  scopes: Scope[];
  sha256: string;
}

export type TokenErrorCode = 'invalid_name' | 'invalid_scopes' | 'name_taken' | 'not_found' | 'unreadable' | 'io_error';

export interface TokenFailure {
  ok: false;
  error: TokenErrorCode;
  message: string;
}

export type TokenResult<T> = { ok: true; value: T } | TokenFailure;

function failure(error: TokenErrorCode, message: string): TokenFailure {
  return { ok: false, error, message };
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

export function generateToken(): string {
  return TOKEN_PREFIX + randomBytes(TOKEN_RANDOM_BYTES).toString('base64url');
}

/** Parses `a,b,c` into scopes; an empty list or an unknown scope is an error naming the known ones. */
export function parseScopes(text: string): TokenResult<Scope[]> {
  const parts = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  return checkScopes(parts);
}

function checkScopes(parts: readonly string[]): TokenResult<Scope[]> {
  if (parts.length === 0) return failure('invalid_scopes', `give at least one scope; known scopes: ${SCOPES.join(', ')}`);
  const out: Scope[] = [];
  for (const part of parts) {
    if (!isScope(part)) return failure('invalid_scopes', `unknown scope ${JSON.stringify(part)}; known scopes: ${SCOPES.join(', ')}`);
    if (!out.includes(part)) out.push(part);
  }
  return { ok: true, value: out };
}

// ---------------------------------------------------------------------------------------------------
// The file.

interface TokensFile {
  version: number;
  tokens: TokenRecord[];
}

function parseFile(text: string, path: string): TokenResult<TokenRecord[]> {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    return failure('unreadable', `${path} is not valid JSON (${(error as Error).message}); restore it from a backup or fix it by hand`);
  }
  const bad = (why: string): TokenFailure => failure('unreadable', `${path}: ${why}; restore it from a backup or fix it by hand`);
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return bad('expected an object {version, tokens}');
  const file = raw as Partial<Record<keyof TokensFile, unknown>>;
  if (file.version !== FILE_VERSION) return bad(`unsupported version ${JSON.stringify(file.version)} (expected ${FILE_VERSION})`);
  if (!Array.isArray(file.tokens)) return bad('"tokens" must be an array');
  const records: TokenRecord[] = [];
  for (let i = 0; i < file.tokens.length; i++) {
    const r = file.tokens[i] as Partial<Record<keyof TokenRecord, unknown>> | null;
    if (typeof r !== 'object' || r === null) return bad(`tokens[${i}] must be an object`);
    if (typeof r.name !== 'string' || !NAME_PATTERN.test(r.name)) return bad(`tokens[${i}].name is missing or invalid`);
    if (typeof r.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(r.sha256)) return bad(`tokens[${i}].sha256 must be 64 hex digits`);
    if (!Array.isArray(r.scopes) || !r.scopes.every((s): s is string => typeof s === 'string')) {
      return bad(`tokens[${i}].scopes must be an array of strings`);
    }
    const scopes = checkScopes(r.scopes);
    if (!scopes.ok) return bad(`tokens[${i}].scopes: ${scopes.message}`);
    if (typeof r.created_at !== 'string') return bad(`tokens[${i}].created_at must be a string`);
    if (r.revoked_at !== null && r.revoked_at !== undefined && typeof r.revoked_at !== 'string') {
      return bad(`tokens[${i}].revoked_at must be a string or null`);
    }
    records.push({
      name: r.name,
      sha256: r.sha256,
      scopes: scopes.value,
      created_at: r.created_at,
      revoked_at: typeof r.revoked_at === 'string' ? r.revoked_at : null,
    });
  }
  return { ok: true, value: records };
}

/** The records in the file; a missing file holds none. */
function readRecords(path: string): TokenResult<{ records: TokenRecord[]; text: string | null }> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { ok: true, value: { records: [], text: null } };
    return failure('io_error', `cannot read ${path}: ${(error as Error).message}`);
  }
  const parsed = parseFile(text, path);
  return parsed.ok ? { ok: true, value: { records: parsed.value, text } } : parsed;
}

function writeRecords(path: string, records: readonly TokenRecord[]): TokenResult<string> {
  const file: TokensFile = { version: FILE_VERSION, tokens: [...records] };
  const text = `${JSON.stringify(file, null, 2)}\n`;
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    writeFileSync(tmp, text, { mode: 0o600, flag: 'wx' });
    renameSync(tmp, path);
  } catch (error) {
    rmSync(tmp, { force: true });
    return failure('io_error', `cannot write ${path}: ${(error as Error).message}`);
  }
  return { ok: true, value: text };
}

// ---------------------------------------------------------------------------------------------------
// The store.

export class TokenStore {
  readonly path: string;
  private records: TokenRecord[] = [];
  /** sha256 -> active record. */
  private active = new Map<string, TokenRecord>();
  private text: string | null = null;

  private constructor(path: string) {
    this.path = path;
  }

  /** Loads `<data_dir>/tokens.json`; a missing file is an empty store (see `exists`). */
  static open(data_dir: string): TokenResult<TokenStore> {
    const store = new TokenStore(join(data_dir, TOKENS_FILE));
    const loaded = store.reload();
    return loaded.ok ? { ok: true, value: store } : loaded;
  }

  /** Whether the file exists (a fresh data directory has none). */
  exists(): boolean {
    return existsSync(this.path);
  }

  /**
   * Re-reads the file. value: whether anything changed. On failure the previous tokens stay in force
   * (a half-edited file does not lock everyone out); a deleted file means no tokens at all.
   */
  reload(): TokenResult<boolean> {
    const read = readRecords(this.path);
    if (!read.ok) return read;
    if (read.value.text === this.text) return { ok: true, value: false };
    this.apply(read.value.records, read.value.text);
    return { ok: true, value: true };
  }

  private apply(records: TokenRecord[], text: string | null): void {
    this.records = records;
    this.text = text;
    this.active = new Map();
    for (const r of records) if (r.revoked_at === null) this.active.set(r.sha256, r);
  }

  /** Re-reads, changes and rewrites the file, so that concurrent writers in other processes are not lost. */
  private mutate<T>(change: (records: TokenRecord[]) => TokenResult<T>): TokenResult<T> {
    const read = readRecords(this.path);
    if (!read.ok) return read;
    const records = read.value.records.map((r) => ({ ...r, scopes: [...r.scopes] }));
    const changed = change(records);
    if (!changed.ok) return changed;
    const written = writeRecords(this.path, records);
    if (!written.ok) return written;
    this.apply(records, written.value);
    return changed;
  }

  /** A new token. value.token is the plaintext: show it once, it cannot be recovered. */
  create(name: string, scopes: readonly string[]): TokenResult<{ token: string; record: TokenRecord }> {
    if (!NAME_PATTERN.test(name)) {
      return failure('invalid_name', `invalid token name ${JSON.stringify(name)}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`);
    }
    const checked = checkScopes(scopes);
    if (!checked.ok) return checked;
    return this.mutate((records) => {
      if (records.some((r) => r.name === name && r.revoked_at === null)) {
        return failure('name_taken', `an active token named ${JSON.stringify(name)} already exists; revoke it first or pick another name`);
      }
      const token = generateToken();
      const record: TokenRecord = {
        name,
        sha256: hashToken(token),
        scopes: checked.value,
        created_at: new Date().toISOString(),
        revoked_at: null,
      };
      records.push(record);
      return { ok: true, value: { token, record: { ...record, scopes: [...record.scopes] } } };
    });
  }

  /** Every token, active and revoked, oldest first. */
  list(): TokenRecord[] {
    return this.records.map((r) => ({ ...r, scopes: [...r.scopes] }));
  }

  /** Revokes the active token of that name. */
  revoke(name: string): TokenResult<TokenRecord> {
    return this.mutate((records) => {
      const record = records.find((r) => r.name === name && r.revoked_at === null);
      if (record === undefined) {
        const revoked = records.some((r) => r.name === name);
        return failure(
          'not_found',
          revoked
            ? `token ${JSON.stringify(name)} is already revoked`
            : `no token named ${JSON.stringify(name)}; \`keel token list\` shows the names`,
        );
      }
      record.revoked_at = new Date().toISOString();
      return { ok: true, value: { ...record, scopes: [...record.scopes] } };
    });
  }

  /** The principal of an active token, or null. */
  verify(token: unknown): Principal | null {
    if (typeof token !== 'string' || !TOKEN_PATTERN.test(token)) return null;
    return this.lookup(hashToken(token));
  }

  /** The principal of the active token with this hash, or null (revoked, removed or unknown). */
  lookup(sha256: string): Principal | null {
    const r = this.active.get(sha256);
    return r === undefined ? null : { name: r.name, scopes: [...r.scopes], sha256: r.sha256 };
  }

  /**
   * Calls `onChange` after the file changed and was reloaded (fs.watch on the directory, plus a 1 s
   * stat poll as the fallback). `onError` gets reload failures (the previous tokens stay in force).
   * Returns a function that stops watching.
   */
  watch(onChange: () => void, onError: (failure: TokenFailure) => void): () => void {
    let stopped = false;
    let scheduled: NodeJS.Timeout | null = null;
    const check = (): void => {
      scheduled = null;
      if (stopped) return;
      const result = this.reload();
      if (!result.ok) onError(result);
      else if (result.value) onChange();
    };
    const soon = (): void => {
      if (scheduled === null && !stopped) scheduled = setTimeout(check, 20);
    };
    let watcher: FSWatcher | null = null;
    try {
      const dir = join(this.path, '..');
      watcher = watch(dir, { persistent: false }, (_event, filename) => {
        if (filename === null || filename === TOKENS_FILE) soon();
      });
      watcher.on('error', () => {
        watcher?.close();
        watcher = null;
      });
    } catch {
      watcher = null; // the poll below still works
    }
    const poll = (curr: Stats, prev: Stats): void => {
      if (curr.mtimeMs !== prev.mtimeMs || curr.ino !== prev.ino || curr.size !== prev.size || curr.nlink !== prev.nlink) soon();
    };
    watchFile(this.path, { persistent: false, interval: POLL_INTERVAL_MS }, poll);
    return () => {
      stopped = true;
      if (scheduled !== null) clearTimeout(scheduled);
      watcher?.close();
      unwatchFile(this.path, poll);
    };
  }

  /** The file's permission bits, or null if it does not exist (for a warning when not 0600). */
  mode(): number | null {
    try {
      return statSync(this.path).mode & 0o777;
    } catch {
      return null;
    }
  }
}
