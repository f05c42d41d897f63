// Child process for test/engine.shards.test.ts: starts a 2-shard engine on argv[2], creates the
// accounts and transfers of argv[3] (JSON, bigints as strings), prints the statuses, and exits
// without closing (no final checkpoint, as after kill -9: only the fsynced logs remain).

import { Engine } from '../../src/shard/engine.ts';
import { encodeAccountBatch, encodeTransferBatch } from '../../src/storage/codec.ts';
import type { AccountInput, TransferInput } from '../../src/ledger/types.ts';

const [dir, json] = process.argv.slice(2);
const input = JSON.parse(json, (_, value: unknown) => (typeof value === 'string' && /^\d+n$/.test(value) ? BigInt(value.slice(0, -1)) : value)) as {
  accounts: AccountInput[];
  transfers: TransferInput[];
};
const engine = await Engine.start({ data_dir: dir, shards: 2, queue_events_max: 100_000 });
const accounts = await engine.createAccounts(input.accounts.length, encodeAccountBatch(input.accounts));
const transfers = await engine.createTransfers(input.transfers.length, encodeTransferBatch(input.transfers));
process.stdout.write(`${JSON.stringify({ accounts: 'status' in accounts ? accounts.status : accounts, transfers: 'status' in transfers ? transfers.status : transfers })}\n`);
process.exit(0);
