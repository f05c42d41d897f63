// Where the CLI's human output goes: stdout for results (the admin token, the summary), stderr for
// errors. An interface so that commands can be driven in-process.

export interface Io {
  out(line: string): void;
  err(line: string): void;
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
