// How much heap a shard's state takes per transfer: the figure behind `--shard-heap-mb` sizing
// (docs/operations.md, "Memory capacity"). Pure ledger, no storage: the heap a shard worker holds
// is this state plus a fixed base (modules, buffers).
//
//   node --expose-gc --import=tsx bench/memory.ts [--accounts 10000] [--transfers 1000000] [--json]
//
// Transfers are posted (no pending), with user_data_64 set, so every query index holds them.

import { getHeapStatistics } from 'node:v8';
import { parseArgs } from 'node:util';
import { Ledger } from '../src/ledger/ledger.ts';
import type { AccountInput, TransferInput } from '../src/ledger/types.ts';

const { values } = parseArgs({
  options: {
    accounts: { type: 'string', default: '10000' },
    transfers: { type: 'string', default: '1000000' },
    json: { type: 'boolean', default: false },
  },
});
const accounts = Number(values.accounts);
const transfers = Number(values.transfers);
if (!(Number.isInteger(accounts) && accounts >= 2 && Number.isInteger(transfers) && transfers >= 1)) {
  console.error('--accounts must be an integer >= 2 and --transfers >= 1');
  process.exit(2);
}
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) {
  console.error('run with node --expose-gc (the figure is the heap after a full collection)');
  process.exit(2);
}

const ledger = new Ledger();
let now = 1_700_000_000_000_000_000n;
const tick = (): bigint => (now += 1_000_000n);
for (let first = 0; first < accounts; first += 8190) {
  const batch: AccountInput[] = [];
  for (let i = first; i < Math.min(accounts, first + 8190); i++) {
    batch.push({ id: BigInt(i + 1), user_data_64: 0n, user_data_32: 0, ledger: 1, code: 1, flags: 0, timestamp: 0n });
  }
  ledger.createAccounts(batch, tick());
}
ledger.takeChanges();
gc();
const before = getHeapStatistics().used_heap_size;
let id = 1n;
for (let done = 0; done < transfers; ) {
  const batch: TransferInput[] = [];
  for (let i = 0; i < 8190 && done < transfers; i++, done++) {
    const debit = 1 + ((done * 7919) % accounts);
    let credit = 1 + ((done * 104_729 + 1) % accounts);
    if (credit === debit) credit = (credit % accounts) + 1;
    batch.push({ id: id++, debit_account_id: BigInt(debit), credit_account_id: BigInt(credit), amount: 1n, pending_id: 0n, user_data_64: BigInt(done), user_data_32: 0, timeout: 0, ledger: 1, code: 1, flags: 0, timestamp: 0n });
  }
  ledger.createTransfers(batch, tick());
  ledger.takeChanges(); // as a shard does after each batch (the checkpoint takes the changes)
}
gc();
const after = getHeapStatistics().used_heap_size;
const per_transfer = (after - before) / ledger.transfers.size;
const result = { accounts, transfers: ledger.transfers.size, heap_mib: Math.round(after / 2 ** 20), bytes_per_transfer: Math.round(per_transfer) };
if (values.json) console.log(JSON.stringify(result));
else console.log(`${result.transfers.toLocaleString('en-US')} transfers over ${accounts.toLocaleString('en-US')} accounts: heap ${result.heap_mib} MiB after collection, ${result.bytes_per_transfer} bytes per transfer`);
