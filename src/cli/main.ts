// The `keel` command: parse, dispatch, exit with the command's code.

import { parseCommand, USAGE } from './args.ts';
import { flushStdout, keepStdioErrorsFromKilling, processIo } from './io.ts';
import { EXIT_FAILED, EXIT_OK, runStart } from './start.ts';
import { runToken } from './token.ts';
import { runLog } from './log.ts';
import { runStatus } from './status.ts';
import { runClusterStatus } from './cluster.ts';

async function main(argv: string[]): Promise<number> {
  keepStdioErrorsFromKilling();
  const parsed = parseCommand(argv, process.env);
  if (!parsed.ok) {
    processIo.err(`keel: ${parsed.message}`);
    return EXIT_FAILED;
  }
  const command = parsed.value;
  switch (command.command) {
    case 'help':
      processIo.out(USAGE);
      return EXIT_OK;
    case 'token':
      return runToken(command.args, processIo);
    case 'start':
      return runStart(command.args, processIo);
    case 'log':
      return runLog(command.args, processIo);
    case 'status':
      return runStatus(command.args, processIo);
    case 'cluster':
      return runClusterStatus(command.args, processIo);
  }
}

main(process.argv.slice(2)).then(flushStdout).then(
  (code) => process.exit(code),
  (error: unknown) => {
    processIo.err(`keel: unexpected error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    process.exit(EXIT_FAILED);
  },
);
