// The Keel channel client: the public surface. See docs/client.md.

export { connect, type CallOptions, type ConnectOptions, type KeelClient } from './client.ts';
export { subscribe, FeedSubscription, type FeedBatch, type FeedOptions } from './feed.ts';
export type { ClientState } from './dispatcher.ts';
export type { ReconnectOptions } from './backoff.ts';
export type { HelloReply, Limits } from './replies.ts';
export type { AccountFilterInput, AccountInput, QueryFilterInput, TransferInput, U64Input } from './requests.ts';
export {
  CLIENT_ERROR_CODES,
  KeelError,
  SERVER_ERROR_CODES,
  isKeelError,
  type ClientErrorCode,
  type KeelErrorCode,
  type KeelErrorOptions,
  type ServerErrorCode,
} from './errors.ts';
export * from './statuses.ts';
export type { Account, AccountBalance, CreateResult, Transfer } from '../ledger/types.ts';
