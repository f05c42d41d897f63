// Calls and the requests that carry them: which create calls may share a request, how a request is
// built, and how its reply splits back per call. No I/O and no timers.
//
// Rules for putting several create calls into one request (as TigerBeetle's clients batch):
// - a call is never split: its events stay contiguous and in order, so a linked chain (which lies
//   within one call) never spans two requests; a call larger than the limit is rejected;
// - a call whose last event has `linked` set leaves its chain open: the server answers that chain with
//   `linked_event_chain_open` only at the end of a request, so such a call ends its request;
// - the server takes a request's import mode from its first event (`imported_event_expected` /
//   `imported_event_not_expected`), so only calls whose first events agree on `imported` share one.

import type { CreateResult } from '../ledger/types.ts';
import { encodeCreateFrame, encodeFrame, type WireMap } from './codec.ts';
import type { KeelError } from './errors.ts';
import type { Fields } from './replies.ts';
import type { Slot } from './deadlines.ts';

export type CreateOp = 'create_accounts' | 'create_transfers';
export type QueryOp =
  | 'lookup_accounts'
  | 'lookup_transfers'
  | 'get_account_transfers'
  | 'get_account_balances'
  | 'query_accounts'
  | 'query_transfers';
export type Op = CreateOp | QueryOp;

interface CallBase {
  /** Set once the caller has been answered (result, error or timeout). */
  settled: boolean;
  /** The deadline slot keeping the call (deadlines.ts), while it has a timeout running. */
  deadline: Slot | undefined;
  /** The call's timeout, for its message. */
  timeout_ms: number;
  /** The request carrying the call (maintained by Request). */
  request: Request | undefined;
  reject(error: KeelError): void;
}

export interface CreateCall extends CallBase {
  kind: 'create';
  /** Events in the call. */
  count: number;
  /** The events, encoded (requests.ts). */
  bytes: Uint8Array;
  imported: boolean;
  open_chain: boolean;
  resolve(result: CreateResult): void;
}

export interface QueryCall extends CallBase {
  kind: 'query';
  params: WireMap;
  /** Parses the reply and answers the caller (called once, after `settled` is set). */
  complete(reply: Fields): void;
}

export type Call = CreateCall | QueryCall;

export class Request {
  readonly op: Op;
  readonly calls: Call[] = [];
  /** Events of the calls still in the request. */
  events = 0;
  /** No more calls may join (sent, or ended by an open chain). */
  sealed = false;
  /** Sent on some connection: its outcome is unknown until answered. */
  sent_once = false;
  /** Sent more than once (resent after a reconnect, maybe to another center). */
  resent = false;
  /** The id of the current send, while in flight. */
  id = -1;
  /** Events sent, for checking the reply (timed-out calls stay in the frame). */
  sent_events = 0;

  constructor(op: Op, first: Call) {
    this.op = op;
    this.add(first);
  }

  add(call: Call): void {
    this.calls.push(call);
    call.request = this;
    if (call.kind === 'create') {
      this.events += call.count;
      if (call.open_chain) this.sealed = true;
    }
  }

  /** Whether `call` may join this (unsent) request under a limit of `limit` events. */
  accepts(call: CreateCall, op: Op, limit: number): boolean {
    if (this.sealed || this.op !== op) return false;
    const first = this.calls[0];
    if (first === undefined || first.kind !== 'create' || first.imported !== call.imported) return false;
    return this.events + call.count <= limit;
  }

  /** Drops an unsent call (timed out); false if it was not here. */
  remove(call: Call): boolean {
    const i = this.calls.indexOf(call);
    if (i < 0) return false;
    this.calls.splice(i, 1);
    if (call.request === this) call.request = undefined;
    if (call.kind === 'create') this.events -= call.count;
    return true;
  }

  /** Drops calls already answered (timed out while in flight), before a resend. */
  prune(): void {
    for (let i = this.calls.length - 1; i >= 0; i--) {
      const call = this.calls[i];
      if (call.settled) this.remove(call);
    }
  }

  get empty(): boolean {
    return this.calls.length === 0;
  }

  /** The request's frame: `{id, op}` and the events of all calls in order, or the one query's params. */
  encode(id: number): Buffer {
    const first = this.calls[0];
    if (first === undefined || first.kind === 'query') return encodeFrame({ id, op: this.op, ...(first === undefined ? {} : first.params) });
    const chunks: Uint8Array[] = [];
    for (const call of this.calls) if (call.kind === 'create') chunks.push(call.bytes);
    return encodeCreateFrame(id, this.op, this.op === 'create_accounts' ? 'accounts' : 'transfers', this.events, chunks);
  }
}

/** Splits `calls` into groups of at most `limit` events, in order, never splitting a call. */
export function regroup(op: Op, calls: readonly CreateCall[], limit: number): Request[] {
  const out: Request[] = [];
  let current: Request | undefined;
  for (const call of calls) {
    if (current !== undefined && current.accepts(call, op, limit)) current.add(call);
    else {
      current = new Request(op, call);
      out.push(current);
    }
  }
  for (const r of out) r.sealed = true;
  return out;
}

/** The slice of a batch's result that belongs to each call, in the order of `calls`. */
export function splitResult(calls: readonly CreateCall[], result: CreateResult): CreateResult[] {
  const out: CreateResult[] = [];
  let offset = 0;
  for (const call of calls) {
    const end = offset + call.count;
    out.push({ status: result.status.slice(offset, end), timestamp: result.timestamp.slice(offset, end) });
    offset = end;
  }
  return out;
}
