// Moves calls to the server and answers back: a bounded local queue, at most the server's in-flight cap
// on the wire, per-call timeouts, and reconnection with the resend of what was in flight.
//
// Life of a call: `submit` puts it into a queued request (a create call joins the open batch of its
// kind when it may, see batch.ts); `pump` (at the end of the tick, and whenever a slot frees) sends
// queued requests while the in-flight cap allows; the reply, matched by request id, answers every call
// of the request. When the connection drops, requests in flight go back to the head of the queue and
// are sent again, with the same events, once a new session has said hello.

import { backoffOf, delayOf, type Backoff, type ReconnectOptions } from './backoff.ts';
import { regroup, Request, splitResult, type Call, type CreateCall, type CreateOp, type Op } from './batch.ts';
import { Deadlines } from './deadlines.ts';
import { KeelError, serverError } from './errors.ts';
import { parseCreate, type Fields, type Limits } from './replies.ts';
import { Session, type SessionEnd, type SessionOptions } from './session.ts';

export type ClientState = 'open' | 'reconnecting' | 'closed';

export interface DispatcherOptions {
  session: SessionOptions;
  /** Every center to (re)connect to, in turn; `session.url` is the one connected first. */
  urls?: string[];
  /** Default per-call timeout. */
  timeout_ms: number;
  /** Cap on events per create request below the server's `events_per_request`. */
  max_batch_events: number;
  /** Requests waiting locally (beyond those in flight) before calls fail with `too_many_inflight_local`. */
  max_queued_requests: number;
  /** false: no reconnection, a dropped connection closes the client. */
  reconnect: ReconnectOptions | false;
  on_state_change: ((state: ClientState, error: KeelError | undefined) => void) | undefined;
}

const U32_MAX = 0xffff_ffff;

/** Keys of open batches of imported events (normal ones use the op): no string built per call. */
const IMPORTED_KEYS: Readonly<Record<CreateOp, string>> = {
  create_accounts: 'create_accounts:imported',
  create_transfers: 'create_transfers:imported',
};

/** How late past its timeout a call may fail with `timeout`. */
const DEADLINE_SLOT_MS = 10;

export class Dispatcher {
  private readonly options: DispatcherOptions;
  /** Reconnection attempts refused `unauthorized` in a row. */
  private refusals = 0;
  private readonly backoff: Backoff | undefined;
  private session: Session | undefined;
  private current_limits: Limits;
  private current_center: string;
  private state_: ClientState = 'open';
  /** Unsent requests, oldest first. */
  private readonly queue: Request[] = [];
  /** Sent and unanswered, by request id, in send order. */
  private readonly inflight = new Map<number, Request>();
  /** Requests still open for more create calls, by op and import mode. */
  private readonly open_batches = new Map<string, Request>();
  /** Per-call timeouts, in slots of DEADLINE_SLOT_MS. */
  private readonly deadlines = new Deadlines<Call>(DEADLINE_SLOT_MS, (call) => this.timeout(call));
  private next_id = 1;
  private pump_scheduled = false;
  private reconnect_timer: NodeJS.Timeout | undefined;
  private attempts = 0;
  private closing: Promise<void> | undefined;
  private close_waiters: Array<() => void> = [];

  constructor(session: Session, options: DispatcherOptions) {
    this.options = options;
    this.backoff = options.reconnect === false ? undefined : backoffOf(options.reconnect);
    this.current_limits = session.hello.limits;
    this.current_center = session.hello.center;
    this.adopt(session);
  }

  get state(): ClientState {
    return this.state_;
  }

  get limits(): Limits {
    return this.current_limits;
  }

  get center(): string {
    return this.current_center;
  }

  /** Events per create request: the server's limit, or the client's lower cap. */
  get batch_limit(): number {
    return Math.min(this.current_limits.events_per_request, this.options.max_batch_events);
  }

  // ---------------------------------------------------------------------------------------------
  // Submitting.

  submit(op: Op, call: Call, timeout_ms: number | undefined): void {
    if (this.state_ === 'closed') {
      settle(call, new KeelError('client_closed', 'the client is closed', { outcome_unknown: false }));
      return;
    }
    if (call.kind === 'create' && call.count > this.batch_limit) {
      settle(
        call,
        new KeelError('too_many_events', `${call.count} events in one call; at most ${this.batch_limit} are allowed`),
      );
      return;
    }
    if (!this.enqueue(op, call)) {
      settle(
        call,
        new KeelError(
          'too_many_inflight_local',
          `${this.inflight.size} requests in flight (the server's cap is ${this.current_limits.inflight_per_connection}) ` +
          `and ${this.queue.length} waiting locally (max_queued_requests is ${this.options.max_queued_requests})`,
        ),
      );
      return;
    }
    const ms = timeout_ms ?? this.options.timeout_ms;
    if (ms > 0 && Number.isFinite(ms)) {
      call.timeout_ms = ms;
      this.deadlines.add(call, ms);
    }
    this.schedulePump();
  }

  /** Whether one more request may wait: `max_queued_requests` beyond the free in-flight slots. */
  private get queue_has_room(): boolean {
    const free =
      this.state_ === 'open' && this.session !== undefined
        ? Math.max(0, this.current_limits.inflight_per_connection - this.inflight.size)
        : 0;
    return this.queue.length < this.options.max_queued_requests + free;
  }

  private enqueue(op: Op, call: Call): boolean {
    if (call.kind === 'create') {
      const key = call.imported ? IMPORTED_KEYS[op as CreateOp] : op; // a create call comes with a create op
      const open = this.open_batches.get(key);
      if (open !== undefined && open.accepts(call, op, this.batch_limit)) {
        open.add(call);
        if (open.sealed) this.open_batches.delete(key);
        return true;
      }
      if (!this.queue_has_room) return false;
      const request = new Request(op, call);
      this.queue.push(request);
      if (request.sealed) this.open_batches.delete(key);
      else this.open_batches.set(key, request);
      return true;
    }
    if (!this.queue_has_room) return false;
    this.queue.push(new Request(op, call));
    return true;
  }

  private timeout(call: Call): void {
    if (call.settled) return;
    const ms = call.timeout_ms;
    const request = call.request;
    const sent = request === undefined || request.sent_once;
    const message = `no reply within ${ms} ms; ${sent ? 'the outcome is unknown' : 'it was not sent'}`;
    settle(call, new KeelError('timeout', message, { outcome_unknown: sent }));
    // A call that has not been sent yet leaves its request; one on the wire stays (the frame is gone).
    if (request !== undefined && !this.isInflight(request)) {
      request.remove(call);
      if (request.empty) this.dropQueued(request);
    }
  }

  private isInflight(request: Request): boolean {
    return request.id >= 0 && this.inflight.get(request.id) === request;
  }

  private dropQueued(request: Request): void {
    const i = this.queue.indexOf(request);
    if (i >= 0) this.queue.splice(i, 1);
    this.closeBatch(request);
  }

  /** Takes `request` out of the open batches (it is sent, or dropped): no later call joins it. */
  private closeBatch(request: Request): void {
    // forEach rather than for-of over entries: no [key, value] array per entry on the send path.
    if (this.open_batches.size > 0) {
      this.open_batches.forEach((open, key) => {
        if (open === request) this.open_batches.delete(key);
      });
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Sending.

  private schedulePump(): void {
    if (this.pump_scheduled) return;
    this.pump_scheduled = true;
    // setImmediate rather than a microtask: every call made during this turn of the event loop, also
    // after awaits that resolve within it, joins the same batch.
    setImmediate(() => {
      this.pump_scheduled = false;
      this.pump();
    });
  }

  private pump(): void {
    const session = this.session;
    if (session === undefined || !session.open || this.state_ !== 'open') return;
    session.cork();
    try {
      this.fill(session);
    } finally {
      session.uncork();
    }
  }

  private fill(session: Session): void {
    while (this.inflight.size < this.current_limits.inflight_per_connection && this.queue.length > 0) {
      const request = this.queue.shift() as Request;
      this.closeBatch(request);
      request.sealed = true;
      request.prune();
      if (request.empty) continue;
      if (request.calls[0].kind === 'create' && request.events > this.batch_limit) {
        // The limit shrank since the request formed (a new hello): regroup it.
        this.queue.unshift(...this.regroup(request));
        continue;
      }
      const id = this.allocateId();
      const frame = request.encode(id);
      if (frame.length > this.current_limits.frame_bytes) {
        this.oversize(request, frame.length);
        continue;
      }
      request.id = id;
      if (request.sent_once) request.resent = true;
      request.sent_once = true;
      request.sent_events = request.events;
      this.inflight.set(id, request);
      session.send(frame);
    }
  }

  private regroup(request: Request): Request[] {
    const calls: CreateCall[] = [];
    for (const call of request.calls) {
      if (call.kind !== 'create') continue;
      if (call.count > this.batch_limit) {
        const message = `${call.count} events in one call; the server now allows at most ${this.batch_limit}`;
        settle(call, new KeelError('too_many_events', message, { outcome_unknown: request.sent_once }));
      } else calls.push(call);
    }
    const groups = regroup(request.op, calls, this.batch_limit);
    for (const g of groups) g.sent_once = request.sent_once;
    return groups;
  }

  /** A frame over the server's limit: halve the batch, or fail a lone call. */
  private oversize(request: Request, bytes: number): void {
    if (request.calls.length > 1) {
      const half = Math.ceil(request.calls.length / 2);
      const parts = [request.calls.slice(0, half), request.calls.slice(half)].map((calls) => {
        const r = new Request(request.op, calls[0]);
        for (const c of calls.slice(1)) r.add(c);
        r.sealed = true;
        r.sent_once = request.sent_once;
        return r;
      });
      this.queue.unshift(...parts);
      return;
    }
    const message = `the call encodes to ${bytes} bytes; the server accepts at most ${this.current_limits.frame_bytes}`;
    settle(request.calls[0], new KeelError('frame_too_large', message, { outcome_unknown: request.sent_once }));
  }

  /** A u32 not used by any request in flight. */
  private allocateId(): number {
    for (;;) {
      const id = this.next_id;
      this.next_id = id >= U32_MAX ? 1 : id + 1;
      if (!this.inflight.has(id)) return id;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Receiving.

  private reply(id: number, reply: Fields): void {
    const request = this.inflight.get(id);
    if (request === undefined) return; // answered already, or from before a resend
    this.inflight.delete(id);
    request.id = -1;
    this.schedulePump();
    if (reply.error !== undefined) {
      let error = serverError(reply.error, reply.message, reply.field);
      // An error to a resend says nothing of an earlier send, which may have been applied.
      if (request.resent && !error.outcome_unknown) error = new KeelError(error.code, error.message, { outcome_unknown: true, field: error.field });
      for (const call of request.calls) settle(call, error);
      return;
    }
    const first = request.calls[0];
    if (first.kind === 'query') {
      if (first.settled) return;
      first.settled = true;
      Deadlines.remove(first);
      first.complete(reply);
      return;
    }
    const result = parseCreate(reply, request.sent_events);
    if (result instanceof KeelError) {
      for (const call of request.calls) settle(call, result);
      return;
    }
    const creates = request.calls as CreateCall[];
    const parts = splitResult(creates, result);
    creates.forEach((call, i) => {
      if (call.settled) return;
      call.settled = true;
      Deadlines.remove(call);
      call.resolve(parts[i]);
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Connection life.

  private adopt(session: Session): void {
    this.session = session;
    this.current_limits = session.hello.limits;
    this.current_center = session.hello.center;
    session.attach({
      reply: (id, reply) => this.reply(id, reply),
      end: (end) => this.lost(session, end),
    });
  }

  private lost(session: Session, end: SessionEnd): void {
    if (this.session !== session) return;
    this.session = undefined;
    if (this.state_ === 'closed') {
      this.closed();
      return;
    }
    // What was in flight goes back to the head of the queue, in send order, to be sent again; unless
    // the server rejected a frame (protocol_error), where sending the same again would fail the same.
    const requeue: Request[] = [];
    for (const request of this.inflight.values()) {
      request.id = -1;
      if (end.error.code === 'protocol_error') {
        for (const call of request.calls) settle(call, end.error);
        continue;
      }
      request.prune();
      if (!request.empty) requeue.push(request);
    }
    this.inflight.clear();
    this.queue.unshift(...requeue);

    if (end.error.code === 'unauthorized' || this.backoff === undefined) {
      this.fail(end.error.code === 'unauthorized' ? end.error : new KeelError('connection_closed', end.error.message));
      return;
    }
    this.setState('reconnecting', end.error);
    this.attempts = 0;
    this.scheduleReconnect(this.backoff);
  }

  private scheduleReconnect(backoff: Backoff): void {
    const delay = delayOf(backoff, this.attempts);
    this.reconnect_timer = setTimeout(() => {
      this.reconnect_timer = undefined;
      void this.reconnect(backoff);
    }, delay);
  }

  private async reconnect(backoff: Backoff): Promise<void> {
    // With several centers, each attempt tries the next one.
    const urls = this.options.urls ?? [];
    if (urls.length > 1) this.options.session = { ...this.options.session, url: urls[(urls.indexOf(this.options.session.url) + 1) % urls.length] };
    const session = await Session.open(this.options.session);
    if (this.state_ === 'closed') {
      if (!(session instanceof KeelError)) session.close();
      return;
    }
    if (session instanceof KeelError) {
      this.attempts++;
      // With several centers, the token is refused for good only when every one refused it in turn.
      this.refusals = session.code === 'unauthorized' ? this.refusals + 1 : 0;
      if (session.code === 'unauthorized' && this.refusals >= Math.max(1, urls.length)) return this.fail(session);
      if (this.attempts >= backoff.max_attempts) {
        const message = `gave up reconnecting after ${this.attempts} attempts: ${session.message}`;
        return this.fail(new KeelError('connection_closed', message));
      }
      this.scheduleReconnect(backoff);
      return;
    }
    this.attempts = 0;
    this.refusals = 0;
    // State first: a session that ends at once is reported by `adopt` (back to 'reconnecting').
    this.setState('open', undefined);
    this.adopt(session);
    this.schedulePump();
  }

  /** Ends the client: every call not yet answered fails with `error`. */
  private fail(error: KeelError): void {
    this.setState('closed', error);
    this.deadlines.clear();
    if (this.reconnect_timer !== undefined) clearTimeout(this.reconnect_timer);
    this.reconnect_timer = undefined;
    const requests = [...this.inflight.values(), ...this.queue];
    this.inflight.clear();
    this.queue.length = 0;
    this.open_batches.clear();
    for (const request of requests) {
      for (const call of request.calls) {
        settle(call, new KeelError(error.code, error.message, { outcome_unknown: request.sent_once, field: error.field }));
      }
    }
  }

  private setState(state: ClientState, error: KeelError | undefined): void {
    if (this.state_ === state) return;
    this.state_ = state;
    const listener = this.options.on_state_change;
    // Outside of the dispatcher's own stack: a throwing listener cannot leave it half-updated.
    if (listener !== undefined) queueMicrotask(() => listener(state, error));
  }

  close(): Promise<void> {
    if (this.closing !== undefined) return this.closing;
    this.closing = new Promise<void>((resolve) => {
      this.close_waiters.push(resolve);
    });
    const session = this.session;
    this.fail(new KeelError('client_closed', 'the client was closed'));
    if (session !== undefined) session.close();
    else this.closed();
    return this.closing;
  }

  private closed(): void {
    this.session = undefined;
    const waiters = this.close_waiters;
    this.close_waiters = [];
    for (const w of waiters) w();
  }
}

/** Answers a call with an error unless it was answered already. */
function settle(call: Call, error: KeelError): void {
  if (call.settled) return;
  call.settled = true;
  Deadlines.remove(call);
  call.reject(error);
}

