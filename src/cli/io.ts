// Where the CLI's human output goes: stdout for results (the admin token, the summary), stderr for
// errors. An interface so that commands can be driven in-process.

export interface Io {
  out(line: string): void;
  err(line: string): void;
}

/**
 * A reader of stdout or stderr that went away (a supervisor's or log shipper's pipe, `| head`)
 * makes the next write fail with EPIPE, emitted as an 'error' that, unheard, would kill the
 * process: a running engine in the middle of a drain. Output that cannot be delivered is dropped;
 * the engine's logs and exit code still tell what happened.
 */
export function keepStdioErrorsFromKilling(): void {
  // Always our own listener, even if one is there: a stream piped into stdout listens for 'error'
  // too, but only to unpipe and emit the error again when nobody else listens (seen here).
  for (const stream of [process.stdout, process.stderr]) stream.on('error', () => {});
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
