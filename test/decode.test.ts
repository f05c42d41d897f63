import t from 'tap';
import { Packr, Unpackr } from 'msgpackr';
import {
  decodeAccountFilter,
  decodeAccounts,
  decodeIds,
  decodeQueryFilter,
  decodeTransfers,
  type Decoded,
} from '../src/ledger/decode.ts';
import { EVENTS_PER_REQUEST_MAX, U64_MAX } from '../src/ledger/types.ts';

// the type of a subtest's `t` (the last overload of t.test takes just the callback)
type Test = Parameters<Parameters<typeof t.test>[0]>[0];

function expectFail<T>(
  t: Test,
  r: Decoded<T>,
  field: string,
  error: 'invalid_request' | 'too_many_events' = 'invalid_request',
  message?: RegExp | string,
): void {
  if (r.ok) {
    t.fail(`expected ${error} at ${field}, got ok`);
    return;
  }
  t.equal(r.error, error, `error code for ${field}`);
  t.equal(r.field, field, `field path ${field}`);
  t.type(r.message, 'string');
  t.ok(r.message.length > 0, 'message is not empty');
  // a string is a prefix of the message (the whole message where it is given whole)
  if (typeof message === 'string') t.ok(r.message.startsWith(message), `message ${JSON.stringify(r.message)} starts with ${JSON.stringify(message)}`);
  else if (message) t.match(r.message, message);
}

function expectOk<T>(t: Test, r: Decoded<T>): T {
  if (!r.ok) {
    t.fail(`expected ok, got ${r.error} at ${r.field}: ${r.message}`);
    throw new Error('not ok');
  }
  return r.value;
}

const account = (over: Record<string, unknown> = {}): Record<string, unknown> => ({ id: 1, ledger: 1, code: 1, ...over });
const transfer = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
  id: 10,
  debit_account_id: 1,
  credit_account_id: 2,
  amount: 5,
  ledger: 1,
  code: 1,
  ...over,
});

const TWO_64 = 1n << 64n;

// Values that no integer field accepts, with a short label.
const NOT_INTEGERS: [string, unknown][] = [
  ['negative', -1],
  ['negative bigint', -1n],
  ['fraction', 1.5],
  ['NaN', NaN],
  ['Infinity', Infinity],
  ['-Infinity', -Infinity],
  ['string', '1'],
  ['empty string', ''],
  ['boolean', true],
  ['null', null],
  ['object', {}],
  ['array', [1]],
  ['binary', new Uint8Array([1])],
];
const BAD_U64: [string, unknown][] = [
  ...NOT_INTEGERS,
  ['2^64 as bigint', TWO_64],
  ['huge bigint', 1n << 100n],
  ['unsafe number 2^53+2', 2 ** 53 + 2],
  ['2^64 as number', 2 ** 64],
];
const BAD_U32: [string, unknown][] = [
  ...NOT_INTEGERS,
  ['2^32', 2 ** 32],
  ['2^32 as bigint', 1n << 32n],
  ['2^64 as bigint', TWO_64],
];
const BAD_U16: [string, unknown][] = [
  ...NOT_INTEGERS,
  ['2^16', 65536],
  ['2^16 as bigint', 65536n],
  ['2^32', 2 ** 32],
];

const ACCOUNT_U64 = ['id', 'user_data_64', 'timestamp'];
const ACCOUNT_U32 = ['ledger', 'user_data_32'];
const ACCOUNT_U16 = ['code', 'flags'];
const TRANSFER_U64 = ['id', 'debit_account_id', 'credit_account_id', 'amount', 'pending_id', 'user_data_64', 'timestamp'];
const TRANSFER_U32 = ['ledger', 'user_data_32', 'timeout'];
const TRANSFER_U16 = ['code', 'flags'];

function badTable(kind: 'u64' | 'u32' | 'u16'): [string, unknown][] {
  return kind === 'u64' ? BAD_U64 : kind === 'u32' ? BAD_U32 : BAD_U16;
}
const RANGE_TEXT = {
  u64: 'must be an unsigned 64-bit integer (0..18446744073709551615); got ',
  u32: 'must be an unsigned 32-bit integer (0..4294967295); got ',
  u16: 'must be an unsigned 16-bit integer (0..65535); got ',
};

t.test('accounts: valid input round-trips', async (t) => {
  const v = expectOk(
    t,
    decodeAccounts([
      { id: 1, ledger: 2, code: 3 },
      {
        id: U64_MAX,
        ledger: 4294967295,
        code: 65535,
        flags: 65535,
        user_data_64: U64_MAX,
        user_data_32: 4294967295,
        timestamp: U64_MAX,
      },
      { id: 2n ** 63n, ledger: 7n, code: 9n, flags: 1, user_data_64: Number.MAX_SAFE_INTEGER, user_data_32: 0, timestamp: 0 },
    ]),
  );
  t.strictSame(v, [
    { id: 1n, user_data_64: 0n, user_data_32: 0, ledger: 2, code: 3, flags: 0, timestamp: 0n, reserved: 0 },
    {
      id: U64_MAX,
      user_data_64: U64_MAX,
      user_data_32: 4294967295,
      ledger: 4294967295,
      code: 65535,
      flags: 65535,
      timestamp: U64_MAX,
      reserved: 0,
    },
    {
      id: 2n ** 63n,
      user_data_64: BigInt(Number.MAX_SAFE_INTEGER),
      user_data_32: 0,
      ledger: 7,
      code: 9,
      flags: 1,
      timestamp: 0n,
      reserved: 0,
    },
  ]);
  t.equal(typeof v[0].id, 'bigint');
  t.equal(typeof v[0].ledger, 'number');
  t.equal(typeof v[2].code, 'number');
  t.strictSame(expectOk(t, decodeAccounts([])), [], 'empty array is valid');
});

t.test('u64 numbers: safe integers and exactly 2^53', async (t) => {
  const v = expectOk(t, decodeIds([Number.MAX_SAFE_INTEGER, 2 ** 53, 2n ** 53n + 1n], 'ids'));
  t.strictSame(v, [2n ** 53n - 1n, 2n ** 53n, 2n ** 53n + 1n]);
  expectFail(t, decodeIds([2 ** 53 + 2], 'ids'), 'ids[0]', 'invalid_request', /9007199254740994 \(a float above 2\^53/);
  expectFail(t, decodeIds([1e21], 'ids'), 'ids[0]', 'invalid_request', /got 1e\+21 \(a float above 2\^53/);
});

t.test('accounts: values with a ledger status pass through', async (t) => {
  const v = expectOk(
    t,
    decodeAccounts([
      { id: 0, ledger: 0, code: 0, flags: 0xffff, timestamp: 123 },
      { id: U64_MAX, ledger: 1, code: 1, flags: 1 << 6 },
    ]),
  );
  t.equal(v[0].id, 0n);
  t.equal(v[0].ledger, 0);
  t.equal(v[0].code, 0);
  t.equal(v[0].flags, 0xffff, 'unknown flag bits are the ledger\'s reserved_flag');
  t.equal(v[0].timestamp, 123n, 'timestamp on a non-imported event passes through');
  t.equal(v[1].id, U64_MAX);
  t.equal(v[1].flags, 64);
});

t.test('accounts: every field rejects bad values with its path', async (t) => {
  for (const [kind, fields] of [
    ['u64', ACCOUNT_U64],
    ['u32', ACCOUNT_U32],
    ['u16', ACCOUNT_U16],
  ] as const) {
    for (const field of fields) {
      for (const [label, bad] of badTable(kind)) {
        const r = decodeAccounts([account(), account({ id: 2 }), account({ [field]: bad })]);
        expectFail(t, r, `accounts[2].${field}`, 'invalid_request', `accounts[2].${field} ${RANGE_TEXT[kind]}`);
        t.comment(`${field} ${label}`);
      }
    }
  }
});

t.test('accounts: missing required fields', async (t) => {
  for (const field of ['id', 'ledger', 'code']) {
    const a = account();
    delete a[field];
    expectFail(t, decodeAccounts([account(), a]), `accounts[1].${field}`, 'invalid_request', /is required/);
  }
  expectFail(t, decodeAccounts([{}]), 'accounts[0].id', 'invalid_request', 'accounts[0].id is required (an unsigned 64-bit integer)');
  // undefined counts as absent: default for optional fields, missing for required ones
  const v = expectOk(t, decodeAccounts([account({ flags: undefined, user_data_64: undefined })]));
  t.equal(v[0].flags, 0);
  t.equal(v[0].user_data_64, 0n);
  expectFail(t, decodeAccounts([account({ code: undefined })]), 'accounts[0].code');
});

t.test('accounts: unknown fields', async (t) => {
  for (const key of ['debits_posted', 'credits_pending', 'balance', 'Id', 'ok', 'pending_id', '0']) {
    expectFail(t, decodeAccounts([account({ [key]: 0 })]), `accounts[0].${key}`, 'invalid_request', /unknown field/);
  }
  expectFail(t, decodeAccounts([account({ ok: false })]), 'accounts[0].ok', 'invalid_request', /unknown field "ok"/);
  // an own `__proto__` key (JSON.parse makes one; msgpackr renames it to `__proto_`)
  const proto = JSON.parse('{"id":1,"ledger":1,"code":1,"__proto__":{"x":1}}') as unknown;
  expectFail(t, decodeAccounts([proto]), 'accounts[0].__proto__', 'invalid_request', /unknown field/);
  expectFail(t, decodeAccounts([account({ __proto_: 1 })]), 'accounts[0].__proto_');
  // a hostile key is not echoed back whole
  const long = 'k'.repeat(10_000);
  const r = decodeAccounts([account({ [long]: 1 })]);
  t.notOk(r.ok);
  if (!r.ok) {
    t.ok(r.field.length < 100, 'field path is bounded');
    t.ok(r.message.length < 400, 'message is bounded');
  }
});

t.test('accounts: the events array', async (t) => {
  for (const raw of [undefined, null, {}, 'x', 5, new Map(), new Uint8Array(2)]) {
    expectFail(t, decodeAccounts(raw), 'accounts', 'invalid_request', /accounts (must be an array|is required)/);
  }
  const many = Array.from({ length: EVENTS_PER_REQUEST_MAX + 1 }, (_, i) => account({ id: i + 1 }));
  expectFail(t, decodeAccounts(many), 'accounts', 'too_many_events', /8191.*8190/);
  const max = many.slice(0, EVENTS_PER_REQUEST_MAX);
  t.equal(expectOk(t, decodeAccounts(max)).length, EVENTS_PER_REQUEST_MAX, '8190 events are allowed');
  // too_many_events is reported before any event is looked at
  expectFail(t, decodeAccounts(Array.from({ length: EVENTS_PER_REQUEST_MAX + 1 }, () => 5)), 'accounts', 'too_many_events');
});

t.test('accounts: each event must be a map', async (t) => {
  class Thing {
    id = 1;
    ledger = 1;
    code = 1;
  }
  for (const bad of [5, 'x', null, undefined, true, [1, 1, 1], new Uint8Array(3), new Date(), new Thing(), 1n]) {
    expectFail(t, decodeAccounts([account(), bad]), 'accounts[1]', 'invalid_request', /accounts\[1\] must be a map of account fields/);
  }
  // a hole in a sparse array is no event
  const sparse: unknown[] = [account()];
  sparse[2] = account();
  expectFail(t, decodeAccounts(sparse), 'accounts[1]');
  // a null-prototype object is a map
  const bare = Object.assign(Object.create(null) as Record<string, unknown>, { id: 5, ledger: 1, code: 2 });
  t.equal(expectOk(t, decodeAccounts([bare]))[0].id, 5n);
});

t.test('accounts: Map input', async (t) => {
  const m = new Map<unknown, unknown>([
    ['id', U64_MAX],
    ['ledger', 3],
    ['code', 4],
    ['user_data_32', 7],
  ]);
  t.strictSame(expectOk(t, decodeAccounts([m])), [
    { id: U64_MAX, user_data_64: 0n, user_data_32: 7, ledger: 3, code: 4, flags: 0, timestamp: 0n, reserved: 0 },
  ]);
  const typo = new Map<unknown, unknown>([...m, ['ledgr', 1]]);
  expectFail(t, decodeAccounts([typo]), 'accounts[0].ledgr', 'invalid_request', /unknown field/);
  const numericKey = new Map<unknown, unknown>([...m, [1, 1]]);
  expectFail(t, decodeAccounts([numericKey]), 'accounts[0]', 'invalid_request', /string keys; got the key 1/);
  const protoKey = new Map<unknown, unknown>([...m, ['__proto__', { polluted: true }]]);
  expectFail(t, decodeAccounts([protoKey]), 'accounts[0].__proto__', 'invalid_request', /unknown field/);
  t.equal(({} as Record<string, unknown>).polluted, undefined, 'no prototype pollution');
  const bad = new Map<unknown, unknown>([...m, ['code', 70000]]);
  expectFail(t, decodeAccounts([bad]), 'accounts[0].code');
});

t.test('transfers: valid input round-trips', async (t) => {
  const v = expectOk(
    t,
    decodeTransfers([
      transfer(),
      {
        id: U64_MAX,
        debit_account_id: U64_MAX,
        credit_account_id: 2n ** 64n - 2n,
        amount: U64_MAX,
        pending_id: U64_MAX,
        ledger: 4294967295,
        code: 65535,
        flags: 65535,
        timeout: 4294967295,
        user_data_64: U64_MAX,
        user_data_32: 4294967295,
        timestamp: U64_MAX,
      },
    ]),
  );
  t.strictSame(v, [
    {
      id: 10n,
      debit_account_id: 1n,
      credit_account_id: 2n,
      amount: 5n,
      pending_id: 0n,
      user_data_64: 0n,
      user_data_32: 0,
      timeout: 0,
      ledger: 1,
      code: 1,
      flags: 0,
      timestamp: 0n,
    },
    {
      id: U64_MAX,
      debit_account_id: U64_MAX,
      credit_account_id: 2n ** 64n - 2n,
      amount: U64_MAX,
      pending_id: U64_MAX,
      user_data_64: U64_MAX,
      user_data_32: 4294967295,
      timeout: 4294967295,
      ledger: 4294967295,
      code: 65535,
      flags: 65535,
      timestamp: U64_MAX,
    },
  ]);
  t.strictSame(expectOk(t, decodeTransfers([])), []);
  // -0 is 0
  const z = expectOk(t, decodeTransfers([transfer({ amount: -0, timeout: -0, code: -0 })]))[0];
  t.equal(z.amount, 0n);
  t.ok(Object.is(z.timeout, 0));
  t.ok(Object.is(z.code, 0));
});

function messageOf<T>(r: Decoded<T>): string | undefined {
  return r.ok ? undefined : r.message;
}

t.test('transfers: the documented message', async (t) => {
  t.equal(
    messageOf(decodeTransfers([transfer(), transfer(), transfer(), transfer({ amount: -5 })])),
    'transfers[3].amount must be an unsigned 64-bit integer (0..18446744073709551615); got -5',
  );
  t.equal(messageOf(decodeAccounts([{}])), 'accounts[0].id is required (an unsigned 64-bit integer)');
  t.equal(
    messageOf(decodeTransfers([transfer({ ammount: 5 })])),
    'transfers[0] has unknown field "ammount"; expected only id, debit_account_id, credit_account_id, amount, ' +
      'pending_id, ledger, code, flags, timeout, user_data_64, user_data_32, timestamp',
  );
  t.equal(messageOf(decodeAccountFilter({ account_id: 1, limit: 0 })), 'filter.limit must be an integer in 1..8190; got 0');
  t.equal(
    messageOf(decodeAccountFilter({ account_id: 1, limit: 1, flags: 9 })),
    'filter.flags has unknown bits 0x8; known flags are debits (1), credits (2), reversed (4)',
  );
  const events = [transfer(), transfer(), transfer(), transfer({ amount: -5 })];
  expectFail(
    t,
    decodeTransfers(events),
    'transfers[3].amount',
    'invalid_request',
    'transfers[3].amount must be an unsigned 64-bit integer (0..18446744073709551615); got -5',
  );
  expectFail(
    t,
    decodeTransfers([transfer({ amount: TWO_64 })]),
    'transfers[0].amount',
    'invalid_request',
    'transfers[0].amount must be an unsigned 64-bit integer (0..18446744073709551615); got 18446744073709551616',
  );
  expectFail(t, decodeTransfers([transfer({ amount: '5' })]), 'transfers[0].amount', 'invalid_request', /got the string "5"$/);
  expectFail(t, decodeTransfers([transfer({ amount: null })]), 'transfers[0].amount', 'invalid_request', /got null$/);
  expectFail(t, decodeTransfers([transfer({ ledger: 2 ** 32 })]), 'transfers[0].ledger', 'invalid_request', /got 4294967296$/);
});

t.test('transfers: every field rejects bad values with its path', async (t) => {
  for (const [kind, fields] of [
    ['u64', TRANSFER_U64],
    ['u32', TRANSFER_U32],
    ['u16', TRANSFER_U16],
  ] as const) {
    for (const field of fields) {
      for (const [label, bad] of badTable(kind)) {
        const r = decodeTransfers([transfer(), transfer({ [field]: bad })]);
        expectFail(t, r, `transfers[1].${field}`, 'invalid_request', `transfers[1].${field} ${RANGE_TEXT[kind]}`);
        t.comment(`${field} ${label}`);
      }
    }
  }
});

t.test('transfers: values with a ledger status pass through', async (t) => {
  const v = expectOk(
    t,
    decodeTransfers([
      transfer({ id: 0, debit_account_id: 0, credit_account_id: U64_MAX, flags: 1 << 12, timestamp: 99, timeout: 5 }),
    ]),
  )[0];
  t.equal(v.id, 0n);
  t.equal(v.debit_account_id, 0n);
  t.equal(v.credit_account_id, U64_MAX);
  t.equal(v.flags, 4096);
  t.equal(v.timestamp, 99n);
  t.equal(v.timeout, 5);
});

t.test('transfers: missing required fields, defaults', async (t) => {
  for (const field of ['id', 'debit_account_id', 'credit_account_id', 'amount', 'ledger', 'code']) {
    const tr = transfer();
    delete tr[field];
    expectFail(t, decodeTransfers([tr]), `transfers[0].${field}`, 'invalid_request', `transfers[0].${field} is required`);
  }
  const v = expectOk(t, decodeTransfers([transfer()]))[0];
  t.equal(v.pending_id, 0n);
  t.equal(v.flags, 0);
  t.equal(v.timeout, 0);
  t.equal(v.user_data_64, 0n);
  t.equal(v.user_data_32, 0);
  t.equal(v.timestamp, 0n);
});

t.test('transfers: unknown fields, shape, size', async (t) => {
  expectFail(t, decodeTransfers([transfer({ ammount: 5 })]), 'transfers[0].ammount', 'invalid_request', /unknown field "ammount"/);
  expectFail(t, decodeTransfers([transfer({ debits_posted: 5 })]), 'transfers[0].debits_posted');
  expectFail(t, decodeTransfers([transfer(), 'x']), 'transfers[1]', 'invalid_request', /must be a map of transfer fields/);
  expectFail(t, decodeTransfers({ 0: transfer() }), 'transfers', 'invalid_request', /must be an array/);
  expectFail(t, decodeTransfers(undefined), 'transfers', 'invalid_request', /transfers is required/);
  const many = Array.from({ length: EVENTS_PER_REQUEST_MAX + 1 }, (_, i) => transfer({ id: i + 1 }));
  expectFail(t, decodeTransfers(many), 'transfers', 'too_many_events');
  t.equal(expectOk(t, decodeTransfers(many.slice(1))).length, EVENTS_PER_REQUEST_MAX);
  const m = new Map<unknown, unknown>(Object.entries(transfer({ amount: U64_MAX })));
  t.equal(expectOk(t, decodeTransfers([m]))[0].amount, U64_MAX);
});

t.test('through msgpackr (int64AsType auto)', async (t) => {
  const packr = new Packr({ useRecords: false });
  // 'auto' is missing from msgpackr's option types; it converts a uint64 <= 2^53 to a number
  const unpackr = new Unpackr({ useRecords: false, int64AsType: 'auto' as 'bigint', mapsAsObjects: true });
  const wire = unpackr.unpack(
    packr.pack({
      transfers: [
        transfer({ id: U64_MAX, amount: 2n ** 53n, user_data_64: Number.MAX_SAFE_INTEGER, timeout: 60 }),
        transfer({ id: 2, flags: 2 }),
      ],
    }),
  ) as { transfers: unknown };
  const v = expectOk(t, decodeTransfers(wire.transfers));
  t.equal(v[0].id, U64_MAX);
  t.equal(v[0].amount, 2n ** 53n, 'a uint64 of 2^53 arrives as a number and is accepted');
  t.equal(v[0].user_data_64, BigInt(Number.MAX_SAFE_INTEGER));
  t.equal(v[0].timeout, 60);
  t.equal(v[1].id, 2n);
  t.equal(v[1].flags, 2);
  const hostile = unpackr.unpack(packr.pack([JSON.parse('{"id":1,"ledger":1,"code":1,"__proto__":1}')])) as unknown;
  const r = decodeAccounts(hostile);
  t.notOk(r.ok, 'a __proto__ key is an unknown field either way');
  const negative = unpackr.unpack(packr.pack({ ids: [-(2n ** 63n)] })) as { ids: unknown };
  expectFail(t, decodeIds(negative.ids, 'ids'), 'ids[0]');
});

t.test('ids', async (t) => {
  t.strictSame(expectOk(t, decodeIds([1, 2n, U64_MAX, 0], 'ids')), [1n, 2n, U64_MAX, 0n]);
  t.strictSame(expectOk(t, decodeIds([], 'ids')), []);
  for (const [label, bad] of BAD_U64) {
    expectFail(t, decodeIds([1, 2, bad], 'ids'), 'ids[2]', 'invalid_request', `ids[2] ${RANGE_TEXT.u64}`);
    t.comment(label);
  }
  expectFail(t, decodeIds('1', 'ids'), 'ids', 'invalid_request', /must be an array/);
  expectFail(t, decodeIds(undefined, 'ids'), 'ids', 'invalid_request', /ids is required/);
  expectFail(t, decodeIds(new Array<number>(EVENTS_PER_REQUEST_MAX + 1).fill(1), 'ids'), 'ids', 'too_many_events');
  t.equal(expectOk(t, decodeIds(new Array<number>(EVENTS_PER_REQUEST_MAX).fill(1), 'ids')).length, EVENTS_PER_REQUEST_MAX);
  expectFail(t, decodeIds([1, -1], 'account_ids'), 'account_ids[1]');
});

t.test('account filter', async (t) => {
  t.strictSame(expectOk(t, decodeAccountFilter({ account_id: 7, limit: 10 })), {
    account_id: 7n,
    user_data_64: 0n,
    user_data_32: 0,
    code: 0,
    timestamp_min: 0n,
    timestamp_max: 0n,
    limit: 10,
    flags: 0,
  });
  t.strictSame(
    expectOk(
      t,
      decodeAccountFilter({
        account_id: U64_MAX,
        user_data_64: U64_MAX,
        user_data_32: 4294967295,
        code: 65535,
        timestamp_min: 1,
        timestamp_max: U64_MAX,
        limit: EVENTS_PER_REQUEST_MAX,
        flags: 7,
      }),
    ),
    {
      account_id: U64_MAX,
      user_data_64: U64_MAX,
      user_data_32: 4294967295,
      code: 65535,
      timestamp_min: 1n,
      timestamp_max: U64_MAX,
      limit: 8190,
      flags: 7,
    },
  );
  t.equal(expectOk(t, decodeAccountFilter(new Map<string, unknown>([['account_id', 1], ['limit', 1n]]))).limit, 1, 'Map, bigint limit');
  // account_id 0 is the ledger's business (empty result), as in TigerBeetle
  t.equal(expectOk(t, decodeAccountFilter({ account_id: 0, limit: 1 })).account_id, 0n);

  expectFail(t, decodeAccountFilter({ limit: 1 }), 'filter.account_id', 'invalid_request', /is required/);
  expectFail(t, decodeAccountFilter({ account_id: 1 }), 'filter.limit', 'invalid_request', /is required/);
  for (const limit of [0, -1, 8191, 1.5, 2 ** 32, '10', null, 0n, 8191n]) {
    expectFail(t, decodeAccountFilter({ account_id: 1, limit }), 'filter.limit', 'invalid_request', /filter\.limit must be an integer in 1\.\.8190/);
  }
  for (const flags of [8, 15, 2 ** 31, 2 ** 32 - 1]) {
    expectFail(t, decodeAccountFilter({ account_id: 1, limit: 1, flags }), 'filter.flags', 'invalid_request', /unknown bits/);
  }
  expectFail(t, decodeAccountFilter({ account_id: 1, limit: 1, flags: 2 ** 32 }), 'filter.flags', 'invalid_request', /32-bit/);
  expectFail(t, decodeAccountFilter({ account_id: 1, limit: 1, flags: -1 }), 'filter.flags');
  for (const [field, kind] of [
    ['account_id', 'u64'],
    ['user_data_64', 'u64'],
    ['timestamp_min', 'u64'],
    ['timestamp_max', 'u64'],
    ['user_data_32', 'u32'],
    ['code', 'u16'],
  ] as const) {
    for (const [, bad] of badTable(kind)) {
      expectFail(t, decodeAccountFilter({ account_id: 1, limit: 1, [field]: bad }), `filter.${field}`, 'invalid_request', `filter.${field} ${RANGE_TEXT[kind]}`);
    }
  }
  for (const key of ['ledger', 'account', 'limt', 'ids']) {
    expectFail(t, decodeAccountFilter({ account_id: 1, limit: 1, [key]: 1 }), `filter.${key}`, 'invalid_request', /unknown field/);
  }
  for (const raw of [undefined, null, [], 5, 'x']) {
    expectFail(t, decodeAccountFilter(raw), 'filter', 'invalid_request', /filter (is required|must be a map)/);
  }
});

t.test('query filter', async (t) => {
  t.strictSame(expectOk(t, decodeQueryFilter({ limit: 1 })), {
    user_data_64: 0n,
    user_data_32: 0,
    ledger: 0,
    code: 0,
    timestamp_min: 0n,
    timestamp_max: 0n,
    limit: 1,
    flags: 0,
  });
  t.strictSame(
    expectOk(
      t,
      decodeQueryFilter({
        user_data_64: U64_MAX,
        user_data_32: 4294967295,
        ledger: 4294967295,
        code: 65535,
        timestamp_min: U64_MAX,
        timestamp_max: 2n ** 63n,
        limit: 8190,
        flags: 1,
      }),
    ),
    {
      user_data_64: U64_MAX,
      user_data_32: 4294967295,
      ledger: 4294967295,
      code: 65535,
      timestamp_min: U64_MAX,
      timestamp_max: 2n ** 63n,
      limit: 8190,
      flags: 1,
    },
  );
  expectFail(t, decodeQueryFilter({}), 'filter.limit', 'invalid_request', /is required/);
  for (const limit of [0, 8191, -3, 2.5, 'all']) {
    expectFail(t, decodeQueryFilter({ limit }), 'filter.limit');
  }
  for (const flags of [2, 3, 4, 0x80000000]) {
    expectFail(t, decodeQueryFilter({ limit: 1, flags }), 'filter.flags', 'invalid_request', /unknown bits.*reversed/);
  }
  for (const [field, kind] of [
    ['user_data_64', 'u64'],
    ['timestamp_min', 'u64'],
    ['timestamp_max', 'u64'],
    ['user_data_32', 'u32'],
    ['ledger', 'u32'],
    ['code', 'u16'],
  ] as const) {
    for (const [, bad] of badTable(kind)) {
      expectFail(t, decodeQueryFilter({ limit: 1, [field]: bad }), `filter.${field}`, 'invalid_request', `filter.${field} ${RANGE_TEXT[kind]}`);
    }
  }
  for (const key of ['account_id', 'id', 'user_data_128']) {
    expectFail(t, decodeQueryFilter({ limit: 1, [key]: 1 }), `filter.${key}`, 'invalid_request', /unknown field/);
  }
  expectFail(t, decodeQueryFilter(new Map<unknown, unknown>([[0, 1]])), 'filter', 'invalid_request', /string keys/);
  expectFail(t, decodeQueryFilter(null), 'filter');
});
