// Child process for test/engine.shards.test.ts: starts a 2-shard engine on argv[2] and creates
// the accounts of argv[3] (JSON, bigints as "123n"). Then, by argv[4]:
// - `exit` (default): creates the transfers, prints the statuses, and exits without closing (no
//   final checkpoint, as after kill -9: only the fsynced logs remain);
// - `kill <ms>`: sends each batch of transfers (argv[3]'s `batches`) at once without waiting, and
//   SIGKILLs itself <ms> later, with everything in flight.

import { readFileSync } from 'node:fs';
import { Engine } from '../../src/shard/engine.ts';
import { encodeAccountBatch, encodeTransferBatch } from '../../src/storage/codec.ts';
import type { AccountInput, TransferInput } from '../../src/ledger/types.ts';

const [dir, arg, mode = 'exit', delay = '0'] = process.argv.slice(2);
// `@file`: the JSON is in that file (large inputs do not fit in argv).
const json = arg.startsWith('@') ? readFileSync(arg.slice(1), 'utf8') : arg;
const input = JSON.parse(json, (_, value: unknown) => (typeof value === 'string' && /^\d+n$/.test(value) ? BigInt(value.slice(0, -1)) : value)) as {
  accounts: AccountInput[];
  transfers: TransferInput[];
  batches?: TransferInput[][];
};
const engine = await Engine.start({ data_dir: dir, shards: 2, queue_events_max: 100_000 });
const accounts = await engine.createAccounts(input.accounts.length, encodeAccountBatch(input.accounts));
if (mode === 'kill') {
  for (const batch of input.batches ?? []) void engine.createTransfers(batch.length, encodeTransferBatch(batch));
  setTimeout(() => process.kill(process.pid, 'SIGKILL'), Number(delay));
} else {
  const transfers = await engine.createTransfers(input.transfers.length, encodeTransferBatch(input.transfers));
  process.stdout.write(`${JSON.stringify({ accounts: 'status' in accounts ? accounts.status : accounts, transfers: 'status' in transfers ? transfers.status : transfers })}\n`);
  process.exit(0);
}
