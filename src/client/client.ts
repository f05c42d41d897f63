// `connect()` and the typed operations of PROTOCOL.md section 4.

import type { Account, AccountBalance, CreateResult, Transfer } from '../ledger/types.ts';
import type { ReconnectOptions } from './backoff.ts';
import type { CreateCall, Op, QueryCall } from './batch.ts';
import type { WireMap } from './codec.ts';
import { Dispatcher, type ClientState } from './dispatcher.ts';
import { KeelError } from './errors.ts';
import { parseAccounts, parseBalances, parseTransfers, type Fields, type Limits } from './replies.ts';
import {
  accountEvents,
  accountFilterParams,
  idsParams,
  queryFilterParams,
  transferEvents,
  type AccountFilterInput,
  type AccountInput,
  type CreateEvents,
  type QueryFilterInput,
  type TransferInput,
  type U64Input,
} from './requests.ts';
import { Session } from './session.ts';

export interface ConnectOptions {
  /** `ws://HOST:PORT/v1`. */
  url: string;
  /**
   * Other centers of the same cluster (docs/replication.md): any center accepts any request. The
   * first connection tries `url`, then these in turn; after a lost connection each reconnection
   * attempt moves to the next one, so a client survives the loss of a center.
   */
  alternates?: string[];
  token: string;
  /** Sent as `client` in hello, for the server's logs. */
  client_name?: string;
  /** Bound on connecting (socket + hello), and the default per-call timeout. Default 30 000. */
  timeout_ms?: number;
  /** Cap on events per create request, below the server's `events_per_request`. */
  max_batch_events?: number;
  /** Requests waiting locally beyond the server's in-flight cap. Default 1024. */
  max_queued_requests?: number;
  /** Reconnection after a lost connection; `false` disables it. Default {100, 10 000}, no attempt limit. */
  reconnect?: ReconnectOptions | false;
  /** WebSocket ping interval; a ping unanswered by the next ends the connection (and reconnects). Default 10 000; 0 disables. */
  heartbeat_ms?: number;
  /** Called (asynchronously) on 'reconnecting', 'open' (after a reconnect) and 'closed', with the cause. */
  on_state_change?: (state: ClientState, error: KeelError | undefined) => void;
}

export interface CallOptions {
  /** Overrides `ConnectOptions.timeout_ms` for this call; the call then fails with `timeout`. */
  timeout_ms?: number;
}

export interface KeelClient {
  /** From the latest hello. */
  readonly limits: Limits;
  /** The center that answered the latest hello. */
  readonly center: string;
  readonly state: ClientState;

  /** One status and timestamp per account, in order. Concurrent calls are batched into one request. */
  createAccounts(accounts: readonly AccountInput[], options?: CallOptions): Promise<CreateResult>;
  /** One status and timestamp per transfer, in order. Concurrent calls are batched into one request. */
  createTransfers(transfers: readonly TransferInput[], options?: CallOptions): Promise<CreateResult>;
  /** Found accounts in the order of `ids`; unknown ids are left out. */
  lookupAccounts(ids: readonly U64Input[], options?: CallOptions): Promise<Account[]>;
  /** Found transfers in the order of `ids`; unknown ids are left out. */
  lookupTransfers(ids: readonly U64Input[], options?: CallOptions): Promise<Transfer[]>;
  getAccountTransfers(filter: AccountFilterInput, options?: CallOptions): Promise<Transfer[]>;
  /** Balances after each matching transfer; accounts with `history` only. */
  getAccountBalances(filter: AccountFilterInput, options?: CallOptions): Promise<AccountBalance[]>;
  queryAccounts(filter: QueryFilterInput, options?: CallOptions): Promise<Account[]>;
  queryTransfers(filter: QueryFilterInput, options?: CallOptions): Promise<Transfer[]>;
  /** Fails every unanswered call with `client_closed` and closes the connection. */
  close(): Promise<void>;
}

const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_QUEUED = 1024;
const DEFAULT_HEARTBEAT_MS = 10_000;

/** Opens a connection and says hello; rejects with a KeelError (`unauthorized`, `connection_failed`, ...). */
export async function connect(options: ConnectOptions): Promise<KeelClient> {
  const timeout_ms = options.timeout_ms ?? DEFAULT_TIMEOUT_MS;
  const session_options = {
    url: options.url,
    token: options.token,
    client_name: options.client_name,
    timeout_ms,
    heartbeat_ms: options.heartbeat_ms ?? DEFAULT_HEARTBEAT_MS,
  };
  const urls = [options.url, ...(options.alternates ?? [])];
  let session: Session | KeelError = new KeelError('connection_failed', 'no url to connect to');
  let refused: KeelError | null = null;
  let url_index = 0;
  for (; url_index < urls.length; url_index++) {
    session = await Session.open({ ...session_options, url: urls[url_index] });
    if (!(session instanceof KeelError)) break;
    // Tokens live per center: one that refuses this token is passed over if another accepts it.
    if (session.code === 'unauthorized') refused = session;
  }
  if (session instanceof KeelError) throw refused ?? session;
  const dispatcher = new Dispatcher(session, {
    session: { ...session_options, url: urls[url_index] },
    urls,
    timeout_ms,
    max_batch_events: Math.max(1, options.max_batch_events ?? Number.POSITIVE_INFINITY),
    max_queued_requests: Math.max(0, options.max_queued_requests ?? DEFAULT_MAX_QUEUED),
    reconnect: options.reconnect ?? {},
    on_state_change: options.on_state_change,
  });
  return new Client(dispatcher);
}

class Client implements KeelClient {
  constructor(private readonly dispatcher: Dispatcher) {}

  get limits(): Limits {
    return this.dispatcher.limits;
  }

  get center(): string {
    return this.dispatcher.center;
  }

  get state(): ClientState {
    return this.dispatcher.state;
  }

  createAccounts(accounts: readonly AccountInput[], options?: CallOptions): Promise<CreateResult> {
    return this.create('create_accounts', accountEvents(accounts), options);
  }

  createTransfers(transfers: readonly TransferInput[], options?: CallOptions): Promise<CreateResult> {
    return this.create('create_transfers', transferEvents(transfers), options);
  }

  lookupAccounts(ids: readonly U64Input[], options?: CallOptions): Promise<Account[]> {
    return this.lookup('lookup_accounts', ids, parseAccounts, options);
  }

  lookupTransfers(ids: readonly U64Input[], options?: CallOptions): Promise<Transfer[]> {
    return this.lookup('lookup_transfers', ids, parseTransfers, options);
  }

  getAccountTransfers(filter: AccountFilterInput, options?: CallOptions): Promise<Transfer[]> {
    return this.query('get_account_transfers', accountFilterParams(filter), parseTransfers, options);
  }

  getAccountBalances(filter: AccountFilterInput, options?: CallOptions): Promise<AccountBalance[]> {
    return this.query('get_account_balances', accountFilterParams(filter), parseBalances, options);
  }

  queryAccounts(filter: QueryFilterInput, options?: CallOptions): Promise<Account[]> {
    return this.query('query_accounts', queryFilterParams(filter), parseAccounts, options);
  }

  queryTransfers(filter: QueryFilterInput, options?: CallOptions): Promise<Transfer[]> {
    return this.query('query_transfers', queryFilterParams(filter), parseTransfers, options);
  }

  close(): Promise<void> {
    return this.dispatcher.close();
  }

  private create(op: Op, events: CreateEvents | KeelError, options: CallOptions | undefined): Promise<CreateResult> {
    if (events instanceof KeelError) return Promise.reject(events);
    if (events.count === 0) return Promise.resolve({ status: [], timestamp: [] });
    return new Promise<CreateResult>((resolve, reject) => {
      const call: CreateCall = {
        kind: 'create',
        count: events.count,
        bytes: events.bytes,
        imported: events.imported,
        open_chain: events.open_chain,
        settled: false,
        deadline: undefined,
        timeout_ms: 0,
        request: undefined,
        resolve,
        reject,
      };
      this.dispatcher.submit(op, call, options?.timeout_ms);
    });
  }

  private lookup<T>(
    op: Op,
    ids: readonly U64Input[],
    parse: (reply: Fields) => T | KeelError,
    options: CallOptions | undefined,
  ): Promise<T> {
    const limit = this.dispatcher.limits.events_per_request;
    if (Array.isArray(ids) && ids.length > limit) {
      return Promise.reject(new KeelError('too_many_events', `${ids.length} ids in one call; at most ${limit} are allowed`));
    }
    return this.query(op, idsParams(ids), parse, options);
  }

  private query<T>(
    op: Op,
    params: WireMap | KeelError,
    parse: (reply: Fields) => T | KeelError,
    options: CallOptions | undefined,
  ): Promise<T> {
    if (params instanceof KeelError) return Promise.reject(params);
    return new Promise<T>((resolve, reject) => {
      const call: QueryCall = {
        kind: 'query',
        params,
        settled: false,
        deadline: undefined,
        timeout_ms: 0,
        request: undefined,
        complete: (reply) => {
          const result = parse(reply);
          if (result instanceof KeelError) reject(result);
          else resolve(result);
        },
        reject,
      };
      this.dispatcher.submit(op, call, options?.timeout_ms);
    });
  }
}
