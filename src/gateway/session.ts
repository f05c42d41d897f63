// One WebSocket connection: hello first, then requests. Tracks the connection's in-flight requests
// (cap, unique ids, per-request deadline), and its send queue (backpressure: reading pauses above the
// high-water mark; a client that does not drain its replies is closed with 1008).
//
// Lifecycle: awaiting_hello -> open -> closing -> closed. Every reply goes through send(); every
// close through close(), which also bounds how long a peer may take to finish the closing handshake.

import type { WebSocket } from 'ws';
import type { Logger } from 'pino';
import { decodeFrame, encodeReply, type Frame } from './codec.ts';
import { callEngine, prepare, type EngineCall, type LedgerEngine, type Prepared } from './ops.ts';
import { readTransfersFrame } from './transfers.ts';
import {
  CloseCode,
  EVENTS_PER_REQUEST_MAX,
  LEDGER_OPS,
  PROTOCOL_VERSION,
  hasScope,
  isLedgerOp,
  type ErrorCode,
  type LedgerOp,
} from './protocol.ts';
import type { Principal, TokenStore } from './tokens.ts';
import { Subscription, formatCursor, parseCursor, parseLedgers, readHeads, type FeedEngine } from './feed.ts';
import type { ShardResult } from '../shard/messages.ts';
// The client library's deadline slots: dependency-free, and the same trade (one timer, 10 ms slack).
import { Deadlines, type Expiring } from '../client/deadlines.ts';

export interface SessionLimits {
  frame_bytes_max: number;
  inflight_per_connection: number;
  request_timeout_ms: number;
  hello_timeout_ms: number;
  send_high_water_bytes: number;
  send_buffer_max_bytes: number;
  send_stall_ms: number;
  close_grace_ms: number;
}

export interface SessionContext {
  readonly engine: LedgerEngine;
  readonly tokens: TokenStore;
  readonly logger: Logger;
  readonly limits: SessionLimits;
  readonly center: string;
  /** True once the server is shutting down: new requests are answered `unavailable`. */
  draining(): boolean;
  /** Called once, when the socket has closed. */
  closed(session: Session): void;
  /** Told of every request's outcome (metrics); optional. */
  readonly observer?: GatewayObserver;
  /** Request deadlines of every session, under one timer (`request_timeout_ms`). */
  readonly deadlines: Deadlines<InFlight>;
}

/** What the gateway reports about its traffic (implemented by src/metrics). */
export interface GatewayObserver {
  /** One request answered: its op (or `invalid` when unusable), `ok` or the error code, and its duration. */
  request(op: string, outcome: string, seconds: number): void;
  /** A connection refused before it became a session, or closed by the server for a reason. */
  rejected(reason: string): void;
}

type State = 'awaiting_hello' | 'open' | 'closing' | 'closed';

/** One in-flight request; identity tells a late result from the result of a reused id. */
export interface InFlight extends Expiring {
  readonly id: number;
  readonly op: LedgerOp;
  readonly session: Session;
  /** performance.now() when its frame was read (metrics). */
  readonly started_ms: number;
}

const U32_MAX = 0xffff_ffff;
/** Change-feed subscriptions one connection may hold at once. */
const SUBSCRIPTIONS_MAX = 16;
/** How long a subscribe waits for a following center to reach the cursor it was given. */
const FEED_CATCH_UP_MS = 5_000;
/** Close reasons are at most 123 bytes (RFC 6455 5.5). */
const CLOSE_REASON_MAX = 123;

function closeReason(text: string): string {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= CLOSE_REASON_MAX) return text;
  // Cut on a character boundary.
  let cut = Buffer.from(bytes.subarray(0, CLOSE_REASON_MAX)).toString('utf8');
  while (Buffer.byteLength(cut, 'utf8') > CLOSE_REASON_MAX || cut.endsWith('\ufffd')) cut = cut.slice(0, -1);
  return cut;
}

/** The request id as a u32, or -1 when missing or not a u32. */
function requestId(v: unknown): number {
  if (typeof v === 'number') return Number.isInteger(v) && v >= 0 && v <= U32_MAX ? v + 0 : -1;
  if (typeof v === 'bigint') return v >= 0n && v <= BigInt(U32_MAX) ? Number(v) : -1;
  return -1;
}

function describeId(v: unknown): string {
  if (v === undefined) return 'id is required (a u32 chosen by the client)';
  const shown = typeof v === 'string' ? JSON.stringify(v.slice(0, 32)) : typeof v === 'number' || typeof v === 'bigint' ? String(v) : `a ${v === null ? 'null' : typeof v}`;
  return `id must be an unsigned 32-bit integer (0..${U32_MAX}); got ${shown}`;
}

let next_session = 1;

export class Session {
  readonly serial = next_session++;
  private readonly ws: WebSocket;
  private readonly ctx: SessionContext;
  private readonly log: Logger;
  private state: State = 'awaiting_hello';
  private principal: Principal | null = null;
  private readonly inflight = new Map<number, InFlight>();
  private readonly subscriptions = new Map<number, Subscription>();
  private next_subscription = 1;
  /** Subscribes accepted but still reading the feed's head. */
  private subscribing = 0;
  private idle_waiters: Array<() => void> = [];
  private paused = false;
  private corked = false;
  /** A pong (or any frame) arrived since the last heartbeat ping. */
  private alive = true;
  private hello_timer: NodeJS.Timeout | null;
  private stall_timer: NodeJS.Timeout | null = null;
  private kill_timer: NodeJS.Timeout | null = null;

  constructor(ws: WebSocket, ctx: SessionContext, remote: string) {
    this.ws = ws;
    this.ctx = ctx;
    this.log = ctx.logger.child({ session: this.serial, remote });
    ws.on('message', (data, isBinary) => this.onFrame(data, isBinary));
    ws.on('error', (error) => this.log.debug({ err: error.message }, 'socket error'));
    ws.on('pong', () => (this.alive = true));
    ws.on('close', (code, reason) => this.onClosed(code, reason.toString('utf8')));
    this.hello_timer = setTimeout(() => {
      this.hello_timer = null;
      if (this.state === 'awaiting_hello') this.close(CloseCode.policy_violation, `no hello within ${ctx.limits.hello_timeout_ms} ms`);
    }, ctx.limits.hello_timeout_ms);
    this.log.debug('connected');
  }

  /** The token's name once authenticated. */
  get token_name(): string | null {
    return this.principal?.name ?? null;
  }

  get inflight_count(): number {
    return this.inflight.size;
  }

  get is_closed(): boolean {
    return this.state === 'closed';
  }

  /** Resolves when no request of this session is in flight. */
  idle(): Promise<void> {
    if (this.inflight.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idle_waiters.push(resolve));
  }

  /** Resolves when the socket has closed. */
  whenClosed(): Promise<void> {
    if (this.state === 'closed') return Promise.resolve();
    return new Promise((resolve) => this.ws.once('close', () => resolve()));
  }

  /**
   * Called every ping interval: a peer that answered neither the last ping nor sent anything since
   * is gone (half-open TCP) and its socket is destroyed, freeing its slot. Skipped while reading is
   * paused (pongs cannot be read then; the stall timer covers that case).
   */
  heartbeat(): void {
    if (this.state === 'closing' || this.state === 'closed' || this.paused) return;
    if (!this.alive) {
      this.log.info('no pong: terminating');
      this.ws.terminate();
      return;
    }
    this.alive = false;
    this.ws.ping();
  }

  /** After the token file changed: a revoked token's connection is closed, changed scopes apply. */
  refreshPrincipal(): void {
    if (this.principal === null || this.state !== 'open') return;
    const current = this.ctx.tokens.lookup(this.principal.sha256);
    if (current === null) {
      this.log.info({ token: this.principal.name }, 'token revoked: closing its connection');
      this.close(CloseCode.unauthorized, `token ${this.principal.name} was revoked`);
      return;
    }
    this.principal = current;
  }

  /**
   * Sends a close frame (after the replies already queued) and destroys the socket if the peer has
   * not completed the closing handshake within close_grace_ms. In-flight results arriving later are dropped.
   */
  close(code: number, reason: string): void {
    if (this.state === 'closing' || this.state === 'closed') return;
    this.state = 'closing';
    this.clearTimers();
    this.log.debug({ code, reason }, 'closing');
    // Read again, so that the peer's close frame (the end of the handshake) is seen.
    if (this.paused) {
      this.paused = false;
      this.ws.resume();
    }
    try {
      this.ws.close(code, closeReason(reason));
    } catch (error) {
      this.log.debug({ err: (error as Error).message }, 'close failed; terminating');
      this.ws.terminate();
      return;
    }
    this.kill_timer = setTimeout(() => this.ws.terminate(), this.ctx.limits.close_grace_ms);
  }

  // -------------------------------------------------------------------------------------------------
  // Inbound.

  private onFrame(data: WebSocket.RawData, isBinary: boolean): void {
    if (this.state === 'closing' || this.state === 'closed') return;
    this.alive = true;
    if (!isBinary) {
      this.close(CloseCode.unsupported_data, 'binary frames only: each frame is one MessagePack map');
      return;
    }
    const bytes = Array.isArray(data) ? Buffer.concat(data) : data instanceof ArrayBuffer ? new Uint8Array(data) : data;
    if (this.state === 'open') {
      const transfers = readTransfersFrame(bytes);
      if (transfers !== undefined) {
        const call: EngineCall = { op: 'create_transfers', count: transfers.count, body: transfers.body };
        this.handleRequest({ id: transfers.id, op: 'create_transfers' }, performance.now(), call);
        return;
      }
    }
    const decoded = decodeFrame(bytes);
    if (!decoded.ok) {
      this.close(CloseCode.invalid_payload, decoded.message);
      return;
    }
    const frame = decoded.frame;
    if (this.state === 'awaiting_hello') this.onHello(frame);
    else this.onRequest(frame);
  }

  private onHello(frame: Frame): void {
    const id = requestId(frame.id);
    const reply_id = id < 0 ? 0 : id;
    let message: string | null = null;
    let principal: Principal | null = null;
    if (frame.op !== 'hello') {
      message = `the first request must be hello with a token; got ${typeof frame.op === 'string' ? `op ${JSON.stringify(frame.op.slice(0, 64))}` : 'no op'}`;
    } else if (id < 0) {
      message = `hello: ${describeId(frame.id)}`;
    } else {
      principal = this.ctx.tokens.verify(frame.token);
      if (principal === null) {
        message = typeof frame.token === 'string' ? 'unknown or revoked token' : 'hello needs a token (a string keel_...)';
      }
    }
    if (principal === null) {
      this.log.info({ reason: message }, 'unauthorized');
      this.ctx.observer?.rejected('unauthorized');
      this.sendError(reply_id, 'unauthorized', message ?? 'unauthorized');
      this.close(CloseCode.unauthorized, 'unauthorized');
      return;
    }
    if (this.hello_timer !== null) {
      clearTimeout(this.hello_timer);
      this.hello_timer = null;
    }
    this.principal = principal;
    this.state = 'open';
    const client = typeof frame.client === 'string' ? frame.client.slice(0, 128) : undefined;
    this.log.info({ token: principal.name, client }, 'authenticated');
    this.send({
      id,
      center: this.ctx.center,
      version: PROTOCOL_VERSION,
      limits: {
        events_per_request: EVENTS_PER_REQUEST_MAX,
        inflight_per_connection: this.ctx.limits.inflight_per_connection,
        frame_bytes: this.ctx.limits.frame_bytes_max,
      },
    });
  }

  private onRequest(frame: Frame): void {
    this.handleRequest(frame, performance.now());
  }

  /** Tells the observer (metrics) a request's outcome: exactly once per request, on every path. */
  private report(op: string, outcome: string, started_ms: number): void {
    this.ctx.observer?.request(op, outcome, (performance.now() - started_ms) / 1000);
  }

  /** `read` is the engine call of a create_transfers frame already read by transfers.ts. */
  private handleRequest(frame: Frame, started_ms: number, read?: EngineCall): void {
    const id = requestId(frame.id);
    if (id < 0) {
      this.sendError(0, 'invalid_request', describeId(frame.id), 'id');
      this.report('invalid', 'invalid_request', started_ms);
      return;
    }
    const op = frame.op;
    if (typeof op !== 'string') {
      this.sendError(id, 'invalid_request', op === undefined ? 'op is required (a string)' : 'op must be a string', 'op');
      this.report('invalid', 'invalid_request', started_ms);
      return;
    }
    if (op === 'hello') {
      this.sendError(id, 'invalid_request', 'already authenticated: hello is only the first request', 'op');
      this.report('hello', 'invalid_request', started_ms);
      return;
    }
    if (op === 'subscribe' || op === 'unsubscribe') {
      this.handleFeed(op, id, frame, started_ms);
      return;
    }
    if (!isLedgerOp(op)) {
      const shown = JSON.stringify(op.slice(0, 64));
      const message = `unknown op ${shown}; known ops: hello, subscribe, unsubscribe, ${Object.keys(LEDGER_OPS).join(', ')}`;
      this.sendError(id, 'unknown_op', message);
      this.report('unknown', 'unknown_op', started_ms);
      return;
    }
    const principal = this.principal as Principal;
    const scope = LEDGER_OPS[op];
    if (!hasScope(principal.scopes, scope)) {
      this.sendError(id, 'forbidden', `${op} needs scope ${scope}; token ${principal.name} has ${principal.scopes.join(', ')}`);
      this.report(op, 'forbidden', started_ms);
      return;
    }
    if (this.inflight.has(id)) {
      this.sendError(id, 'invalid_request', `id ${id} is already in flight on this connection; ids must be unique among in-flight requests`, 'id');
      this.report(op, 'invalid_request', started_ms);
      return;
    }
    if (this.ctx.draining()) {
      this.sendError(id, 'unavailable', 'the server is shutting down; retry on another connection');
      this.report(op, 'unavailable', started_ms);
      return;
    }
    if (this.inflight.size >= this.ctx.limits.inflight_per_connection) {
      this.sendError(
        id,
        'too_many_inflight',
        `${this.inflight.size} requests are in flight on this connection (limit ${this.ctx.limits.inflight_per_connection}); wait for replies`,
      );
      this.report(op, 'too_many_inflight', started_ms);
      return;
    }
    // Decoding checks every value first: an encoder or engine call that still throws is a bug of ours.
    let prepared: Prepared;
    let promise: Promise<ShardResult> | null = null;
    try {
      prepared = read === undefined ? prepare(op, frame) : { ok: true, call: read };
      if (prepared.ok && 'call' in prepared) promise = callEngine(this.ctx.engine, prepared.call);
    } catch (error) {
      this.log.error({ err: (error as Error).message, op }, 'request failed before reaching the engine');
      this.sendError(id, 'internal', 'internal error; see the server log');
      this.report(op, 'internal', started_ms);
      return;
    }
    if (!prepared.ok) {
      this.sendError(id, prepared.error, prepared.message, prepared.field);
      this.report(op, prepared.error, started_ms);
      return;
    }
    if ('result' in prepared) {
      this.sendResult(id, prepared.result);
      this.report(op, 'error' in prepared.result ? prepared.result.error : 'ok', started_ms);
      return;
    }
    if (promise === null) throw new Error('unreachable: a prepared call without its promise');
    const entry: InFlight = { id, op, session: this, started_ms, deadline: undefined };
    this.inflight.set(id, entry);
    this.ctx.deadlines.add(entry, this.ctx.limits.request_timeout_ms);
    promise.then(
      (result) => this.onResult(entry, result),
      (error: unknown) => this.onEngineError(entry, error),
    );
  }

  private onResult(entry: InFlight, result: ShardResult): void {
    if (this.inflight.get(entry.id) !== entry) return; // timed out or closed: the late result is dropped
    this.settle(entry);
    this.sendResult(entry.id, result);
    this.report(entry.op, 'error' in result ? result.error : 'ok', entry.started_ms);
  }

  private onEngineError(entry: InFlight, error: unknown): void {
    if (this.inflight.get(entry.id) !== entry) return;
    this.settle(entry);
    this.log.error({ err: error instanceof Error ? error.message : String(error), op: entry.op }, 'engine call failed');
    this.sendError(entry.id, 'internal', 'internal error; see the server log');
    this.report(entry.op, 'internal', entry.started_ms);
  }

  /** The request's deadline passed (called by the gateway's shared deadlines). */
  timedOut(entry: InFlight): void {
    if (this.inflight.get(entry.id) !== entry) return;
    this.settle(entry);
    const timeout_ms = this.ctx.limits.request_timeout_ms;
    this.log.warn({ op: entry.op, id: entry.id, timeout_ms }, 'request timed out');
    this.sendError(entry.id, 'timeout', `no result within ${timeout_ms} ms; the outcome is unknown: resending the same events is safe`);
    this.report(entry.op, 'timeout', entry.started_ms);
  }

  // -------------------------------------------------------------------------------------------------
  // Change feed (PROTOCOL.md section 5).

  private handleFeed(op: 'subscribe' | 'unsubscribe', id: number, frame: Frame, started_ms: number): void {
    const fail = (error: ErrorCode, message: string, field?: string): void => {
      this.sendError(id, error, message, field);
      this.report(op, error, started_ms);
    };
    const principal = this.principal as Principal;
    if (!hasScope(principal.scopes, 'subscribe')) {
      fail('forbidden', `${op} needs scope subscribe; token ${principal.name} has ${principal.scopes.join(', ')}`);
      return;
    }
    const candidate = this.ctx.engine as unknown as Partial<FeedEngine>;
    if (typeof candidate.feedRead !== 'function' || typeof candidate.onCommitted !== 'function') {
      fail('unknown_op', `op ${op} (change feed) is not served by this server`);
      return;
    }
    const engine = candidate as FeedEngine;
    const allowed = op === 'subscribe' ? ['id', 'op', 'from', 'ledgers'] : ['id', 'op', 'subscription'];
    for (const key in frame) {
      if (!allowed.includes(key) && frame[key] !== undefined) {
        fail('invalid_request', `${op} has unknown field ${JSON.stringify(key.slice(0, 64))}; expected ${allowed.slice(2).join(', ')}`, key.slice(0, 64));
        return;
      }
    }
    if (op === 'unsubscribe') {
      const subscription = requestId(frame.subscription);
      const found = this.subscriptions.get(subscription);
      if (found === undefined) {
        fail('invalid_request', `no subscription ${String(frame.subscription)} on this connection`, 'subscription');
        return;
      }
      found.stop();
      this.subscriptions.delete(subscription);
      this.send({ id });
      this.report(op, 'ok', started_ms);
      return;
    }
    if (this.subscriptions.size + this.subscribing >= SUBSCRIPTIONS_MAX) {
      fail('too_many_inflight', `${this.subscriptions.size} subscriptions are open on this connection (limit ${SUBSCRIPTIONS_MAX}); unsubscribe one first`);
      return;
    }
    const ledgers = parseLedgers(frame.ledgers);
    if (!ledgers.ok) {
      fail('invalid_request', ledgers.message, 'ledgers');
      return;
    }
    const shard_count = engine.shard_count ?? 1;
    if (!Number.isSafeInteger(shard_count) || shard_count < 1) {
      this.log.error({ shard_count }, 'the engine reports no usable shard count');
      fail('internal', 'internal error; see the server log');
      return;
    }
    let positions: number[] | null = null; // null: from the start of every shard, or latest
    const latest = frame.from === 'latest';
    if (frame.from !== undefined && !latest) {
      const cursor = parseCursor(frame.from, shard_count);
      if (!cursor.ok) {
        fail('invalid_request', cursor.message, 'from');
        return;
      }
      positions = cursor.positions;
    }
    // The shards' heads decide 'latest' and whether a cursor belongs to this engine at all. The
    // slot is held meanwhile, so a burst of subscribes cannot pass the limit.
    this.subscribing++;
    // A center that follows may be a moment behind the one that gave out the cursor: it waits
    // (bounded) to reach it rather than refuse it.
    const caught_up = positions !== null && engine.waitForFeed !== undefined ? engine.waitForFeed(positions, FEED_CATCH_UP_MS) : Promise.resolve();
    caught_up.then(() => readHeads(engine, shard_count)).finally(() => {
      this.subscribing--;
    }).then((heads) => {
      if (this.state !== 'open') return;
      if (!heads.ok) {
        fail(heads.error, heads.message);
        return;
      }
      if (positions !== null) {
        for (let shard = 0; shard < shard_count; shard++) {
          if (positions[shard] < heads.floor[shard]) {
            // PROTOCOL.md: the oldest cursor still available. Shards whose position is still
            // served keep it, so resuming there delivers nothing twice.
            const oldest = formatCursor(
              heads.oldest.map((first, s) => (positions![s] >= heads.floor[s] ? positions![s] : Math.min(first, heads.heads[s]))),
            );
            this.send({
              id,
              error: 'cursor_expired',
              message: `cursor is older than the feed's retention (shard ${shard} serves from transfer ${heads.floor[shard]}, the cursor says ${positions[shard]}); resume from oldest, and consider the transfers in between lost to this consumer`,
              oldest,
            });
            this.report(op, 'cursor_expired', started_ms);
            return;
          }
          const head = heads.heads[shard];
          if (positions[shard] > head) {
            if (engine.waitForFeed !== undefined) {
              // A center of a cluster that is behind the cursor's: another center can serve it.
              fail(
                'unavailable',
                `cursor is ahead of this center's feed (shard ${shard} has ${head} transfers committed, the cursor says ${positions[shard]}) and it did not catch up within ${FEED_CATCH_UP_MS} ms: retry here later or at another center`,
              );
              return;
            }
            fail(
              'invalid_request',
              `cursor is ahead of this engine's feed (shard ${shard} has ${head} transfers committed, the cursor says ${positions[shard]}): it comes from another data directory`,
              'from',
            );
            return;
          }
        }
      }
      // `from` omitted: the oldest retained committed transfer of every shard.
      const start = positions ?? (latest ? heads.heads : heads.oldest);
      const subscription_id = this.next_subscription++;
      const subscription = new Subscription(subscription_id, start, ledgers.ledgers, {
        engine,
        buffered: () => this.ws.bufferedAmount,
        push: (message) => this.send(message),
        ended: (ended) => this.subscriptions.delete(ended.id),
        high_water_bytes: this.ctx.limits.send_high_water_bytes,
        stall_ms: Math.max(1, Math.floor(this.ctx.limits.send_stall_ms / 3)),
      });
      this.subscriptions.set(subscription_id, subscription);
      // `cursor` (an extension, docs/change-feed.md): where the subscription starts, so a client
      // that drops before the first push resumes without a gap.
      this.send({ id, subscription: subscription_id, cursor: subscription.cursor });
      this.report(op, 'ok', started_ms);
      void subscription.run();
    }, (error: unknown) => {
      this.log.error({ err: error instanceof Error ? error.message : String(error) }, 'subscribe failed');
      fail('internal', 'internal error; see the server log');
    });
  }

  private settle(entry: InFlight): void {
    Deadlines.remove(entry);
    this.inflight.delete(entry.id);
    if (this.inflight.size === 0 && this.idle_waiters.length > 0) {
      const waiters = this.idle_waiters;
      this.idle_waiters = [];
      for (const resolve of waiters) resolve();
    }
  }

  // -------------------------------------------------------------------------------------------------
  // Outbound.

  private sendResult(id: number, result: ShardResult): void {
    if ('error' in result) this.sendError(id, result.error, result.message);
    else this.send({ id, ...result });
  }

  private sendError(id: number, error: ErrorCode, message: string, field?: string): void {
    this.send(field === undefined ? { id, error, message } : { id, error, message, field });
  }

  private send(reply: object): void {
    if (this.state === 'closing' || this.state === 'closed') return;
    let frame: Buffer;
    try {
      frame = encodeReply(reply);
    } catch (error) {
      this.log.error({ err: (error as Error).message }, 'reply could not be encoded');
      const id = (reply as { id?: unknown }).id;
      frame = encodeReply({ id: typeof id === 'number' ? id : 0, error: 'internal', message: 'internal error; see the server log' });
    }
    const limits = this.ctx.limits;
    if (this.ws.bufferedAmount + frame.byteLength > limits.send_buffer_max_bytes) {
      this.log.warn({ buffered: this.ws.bufferedAmount, limit: limits.send_buffer_max_bytes }, 'send buffer overflow: closing');
      this.close(CloseCode.policy_violation, `send buffer over ${limits.send_buffer_max_bytes} bytes: the client does not read its replies`);
      return;
    }
    this.cork();
    this.ws.send(frame, this.afterWrite);
    if (!this.paused && this.ws.bufferedAmount > limits.send_high_water_bytes) this.pauseReading();
  }

  /**
   * Replies queued in the same tick leave in one write: the socket is corked on the first and
   * uncorked on the next tick. A shard answers many requests at once, and one writev per reply
   * was the gateway's largest cost under single-transfer load.
   */
  private cork(): void {
    if (this.corked) return;
    const socket = (this.ws as unknown as { _socket?: { cork(): void; uncork(): void } })._socket;
    if (socket === undefined) return;
    this.corked = true;
    socket.cork();
    process.nextTick(() => {
      this.corked = false;
      socket.uncork();
    });
  }

  private readonly afterWrite = (): void => {
    if (this.paused && this.ws.bufferedAmount <= this.ctx.limits.send_high_water_bytes / 2) this.resumeReading();
  };

  private pauseReading(): void {
    this.paused = true;
    this.ws.pause();
    this.log.debug({ buffered: this.ws.bufferedAmount }, 'send buffer above high water: reading paused');
    this.stall_timer = setTimeout(() => {
      this.stall_timer = null;
      if (!this.paused) return;
      this.log.warn({ buffered: this.ws.bufferedAmount, stall_ms: this.ctx.limits.send_stall_ms }, 'client does not read its replies: closing');
      this.close(CloseCode.policy_violation, `replies not read for ${this.ctx.limits.send_stall_ms} ms`);
    }, this.ctx.limits.send_stall_ms);
  }

  private resumeReading(): void {
    this.paused = false;
    if (this.stall_timer !== null) {
      clearTimeout(this.stall_timer);
      this.stall_timer = null;
    }
    if (this.state === 'open' || this.state === 'awaiting_hello') this.ws.resume();
    this.log.debug('send buffer drained: reading resumed');
  }

  // -------------------------------------------------------------------------------------------------
  // Teardown.

  private clearTimers(): void {
    if (this.hello_timer !== null) clearTimeout(this.hello_timer);
    if (this.stall_timer !== null) clearTimeout(this.stall_timer);
    this.hello_timer = null;
    this.stall_timer = null;
  }

  private onClosed(code: number, reason: string): void {
    this.state = 'closed';
    for (const subscription of this.subscriptions.values()) subscription.stop();
    this.subscriptions.clear();
    this.clearTimers();
    if (this.kill_timer !== null) clearTimeout(this.kill_timer);
    this.kill_timer = null;
    // Requests cut off by the close are counted too (their outcome is unknown to the client).
    for (const entry of this.inflight.values()) {
      Deadlines.remove(entry);
      this.report(entry.op, 'connection_closed', entry.started_ms);
    }
    this.inflight.clear();
    const waiters = this.idle_waiters;
    this.idle_waiters = [];
    for (const resolve of waiters) resolve();
    this.log.debug({ code, reason }, 'closed');
    this.ctx.closed(this);
  }
}
