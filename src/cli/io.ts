// Where the CLI's human output goes: stdout for results (the admin token, the summary), stderr for
// errors. An interface so that commands can be driven in-process.

export interface Io {
  out(line: string): void;
  err(line: string): void;
}

/**
 * A reader of stdout or stderr that went away (a supervisor's or log shipper's pipe, `| head`)
 * makes the next write fail with EPIPE, emitted as an 'error' that, unheard, would kill the
 * process: a running engine in the middle of a drain. That output is dropped; the engine's exit
 * code still tells how it ended. Any other failure to write stdout (a full disk under a redirect)
 * is said once on stderr; one of stderr has nowhere left to be said.
 */
export function keepStdioErrorsFromKilling(): void {
  // Always our own listener, even if one is there: a stream piped into stdout listens for 'error'
  // too, but only to unpipe and emit the error again when nobody else listens (seen here).
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE' || error.code === 'ERR_STREAM_DESTROYED') return;
    reportStdoutFailure(error.code ?? error.message);
  });
  process.stderr.on('error', () => {});
}

let stdout_failure: string | null = null;

/** Why stdout could not be written (said on stderr, once), or null. */
export function stdoutFailure(): string | null {
  return stdout_failure;
}

/** Says once on stderr that stdout cannot be written. */
export function reportStdoutFailure(reason: string): void {
  if (stdout_failure !== null) return;
  stdout_failure = reason;
  process.stderr.write(`keel: cannot write to stdout (${reason}); its output is lost\n`);
}

export const processIo: Io = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

/** Rows as aligned columns, two spaces apart (the last column unpadded): one line per row. */
export function table(rows: readonly string[][]): string[] {
  if (rows.length === 0) return [];
  const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)));
  return rows.map((row) => row.map((cell, c) => (c === row.length - 1 ? cell : cell.padEnd(widths[c]))).join('  ').trimEnd());
}
