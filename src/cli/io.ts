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
