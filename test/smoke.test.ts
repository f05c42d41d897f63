import t from 'tap';
import { Ledger } from '../src/ledger/ledger.ts';
import { CreateTransferStatus as TS } from '../src/ledger/types.ts';

t.test('smoke', async (t) => {
  const l = new Ledger();
  const a = (id: bigint) => ({ id, user_data_64: 0n, user_data_32: 0, ledger: 1, code: 1, flags: 0, timestamp: 0n });
  const r = l.createAccounts([a(1n), a(2n)], 1000n);
  t.same(r.status, [0, 0]);
  const tr = { id: 10n, debit_account_id: 1n, credit_account_id: 2n, amount: 5n, pending_id: 0n, user_data_64: 0n, user_data_32: 0, timeout: 0, ledger: 1, code: 1, flags: 0, timestamp: 0n };
  t.same(l.createTransfers([tr, tr], 0n).status, [TS.created, TS.exists]);
  t.equal(l.lookupAccounts([1n])[0].debits_posted, 5n);
});
