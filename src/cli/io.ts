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
    if (!readerGone(error)) reportStdoutFailure(error);
  });
  process.stderr.on('error', () => {});
}

/**
 * Waits until what was written to stdout is handed to the system; a command whose output failed
 * to arrive (a full disk under a redirect) exits 1, not 0: it may have printed a secret once (a
 * new token). A reader gone away is not that.
 */
export function flushStdout(code: number): Promise<number> {
  return new Promise((resolve) => {
    process.stdout.write('', (error?: Error | null) => {
      if (error !== null && error !== undefined && !readerGone(error)) reportStdoutFailure(error);
      resolve(stdout_failed && code === 0 ? 1 : code);
    });
  });
}

function readerGone(error: NodeJS.ErrnoException): boolean {
  return error.code === 'EPIPE' || error.code === 'ERR_STREAM_DESTROYED';
}

let stdout_failed = false;

/** Says once on stderr that stdout cannot be written. */
function reportStdoutFailure(error: NodeJS.ErrnoException): void {
  if (stdout_failed) return;
  stdout_failed = true;
  process.stderr.write(`keel: cannot write to stdout (${error.code ?? error.message}); its output is lost\n`);
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
