// The change feed as an async iterator (PROTOCOL.md section 5): one dedicated connection, one
// subscription, resumed automatically from the last cursor received after a dropped connection or
// a `lagging` push, so the consumer sees every committed transfer once, in commit order per shard
// (no order between shards). Cursors are opaque: kept and sent back as the server gave them.
//
//   for await (const { cursor, transfers } of subscribe({ url, token, from: saved })) { ... }
//
// A bounded local buffer: past `buffer_batches` undelivered pushes the socket stops being read,
// which makes the server pace its pushes instead of anything growing without bound.

import { backoffOf, delayOf, type ReconnectOptions } from './backoff.ts';
import { encodeFrame, type WireMap } from './codec.ts';
import { KeelError, serverError } from './errors.ts';
import { parseTransfers, type Fields } from './replies.ts';
import { Session, type SessionEnd } from './session.ts';
import type { Transfer } from '../ledger/types.ts';

export interface FeedOptions {
  url: string;
  /** Other centers of the same cluster: each resubscription after a failure tries the next (cursors mean the same on every center). */
  alternates?: string[];
  token: string;
  /** Omitted: from the oldest retained transfer; 'latest'; or a cursor from an earlier batch. */
  from?: string;
  ledgers?: number[];
  client_name?: string;
  timeout_ms?: number;
  reconnect?: ReconnectOptions | false;
  /** Undelivered pushes held before the socket stops being read. Default 16. */
  buffer_batches?: number;
}

export interface FeedBatch {
  /** Resume point: subscribing `from` it continues right after this batch. */
  cursor: string;
  transfers: Transfer[];
}

/** Errors after which resubscribing cannot help. */
const FINAL: ReadonlySet<string> = new Set(['unauthorized', 'forbidden', 'invalid_request', 'cursor_expired', 'unknown_op']);

export class FeedSubscription implements AsyncIterableIterator<FeedBatch> {
  private readonly options: FeedOptions;
  private readonly buffer_max: number;
  private readonly queue: FeedBatch[] = [];
  private waiter: { resolve: (r: IteratorResult<FeedBatch>) => void; reject: (e: unknown) => void } | null = null;
  private session: Session | null = null;
  private subscription: number | null = null;
  /** Where to resume: the cursor of the last batch received (or the subscription's start). */
  private cursor: string | undefined;
  private failure: KeelError | null = null;
  private closed = false;
  private attempts = 0;
  private paused = false;

  constructor(options: FeedOptions) {
    this.options = options;
    this.buffer_max = options.buffer_batches ?? 16;
    this.cursor = options.from;
    void this.connect();
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<FeedBatch> {
    return this;
  }

  next(): Promise<IteratorResult<FeedBatch>> {
    const batch = this.queue.shift();
    if (batch !== undefined) {
      if (this.paused && this.queue.length < this.buffer_max / 2) {
        this.paused = false;
        this.session?.resumeReading();
      }
      return Promise.resolve({ value: batch, done: false });
    }
    if (this.failure !== null) return Promise.reject(this.failure);
    if (this.closed) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  /** Ends the subscription and its connection; a pending `next()` resolves done. */
  return(): Promise<IteratorResult<FeedBatch>> {
    this.close();
    return Promise.resolve({ value: undefined, done: true });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.session?.close();
    this.session = null;
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.resolve({ value: undefined, done: true });
  }

  /** Index into [url, ...alternates] of the center to subscribe at next. */
  private url_index = 0;

  private async connect(): Promise<void> {
    const urls = [this.options.url, ...(this.options.alternates ?? [])];
    const session = await Session.open({
      url: urls[this.url_index % urls.length],
      token: this.options.token,
      client_name: this.options.client_name,
      timeout_ms: this.options.timeout_ms ?? 30_000,
      heartbeat_ms: 10_000,
    });
    if (this.closed) {
      if (session instanceof Session) session.close();
      return;
    }
    if (session instanceof KeelError) {
      if (session.code === 'unauthorized') this.fail(session);
      else this.retry(session);
      return;
    }
    this.session = session;
    this.paused = false;
    session.attach({
      reply: (id, reply) => this.onReply(id, reply),
      push: (message) => this.onPush(message),
      end: (end) => this.onEnd(session, end),
    });
    const request: WireMap = { id: 1, op: 'subscribe' };
    if (this.cursor !== undefined) request.from = this.cursor;
    if (this.options.ledgers !== undefined) request.ledgers = this.options.ledgers;
    session.send(encodeFrame(request));
  }

  private onReply(id: number, reply: Fields): void {
    if (id !== 1) return;
    if (reply.error !== undefined) {
      const error = serverError(reply.error, reply.message, reply.field, reply.oldest);
      if (FINAL.has(error.code)) this.fail(error);
      else this.retry(error);
      return;
    }
    this.attempts = 0;
    this.subscription = Number(reply.subscription);
    // Keel's reply names where the subscription starts, so a drop before the first push resumes
    // there (and a `latest` subscription does not skip what commits meanwhile).
    if (typeof reply.cursor === 'string') this.cursor = reply.cursor;
  }

  private onPush(message: Fields): void {
    if (Number(message.subscription) !== this.subscription) return;
    if (message.push === 'lagging') {
      // Too slow for the server's buffer: start over from where the last push left off.
      if (typeof message.cursor === 'string') this.cursor = message.cursor;
      this.session?.close();
      return;
    }
    if (message.push !== 'events' || typeof message.cursor !== 'string') return;
    const transfers = parseTransfers(message);
    if (transfers instanceof KeelError) {
      this.fail(transfers);
      return;
    }
    this.cursor = message.cursor;
    const batch: FeedBatch = { cursor: message.cursor, transfers };
    const waiter = this.waiter;
    if (waiter !== null) {
      this.waiter = null;
      waiter.resolve({ value: batch, done: false });
      return;
    }
    this.queue.push(batch);
    if (!this.paused && this.queue.length >= this.buffer_max) {
      this.paused = true;
      this.session?.pauseReading();
    }
  }

  private onEnd(session: Session, end: SessionEnd): void {
    if (this.session !== session) return;
    this.session = null;
    this.subscription = null;
    if (this.closed) return;
    if (end.error.code === 'unauthorized') this.fail(end.error);
    else this.retry(end.error);
  }

  private retry(error: KeelError): void {
    if (this.closed) return;
    if (this.options.reconnect === false) {
      this.fail(error);
      return;
    }
    const backoff = backoffOf(this.options.reconnect);
    this.attempts++;
    this.url_index++;
    if (this.attempts > backoff.max_attempts) {
      this.fail(new KeelError(error.code, `gave up resubscribing after ${this.attempts - 1} attempts: ${error.message}`));
      return;
    }
    setTimeout(() => void this.connect(), delayOf(backoff, this.attempts)).unref();
  }

  private fail(error: KeelError): void {
    if (this.failure !== null || this.closed) return;
    this.failure = error;
    this.session?.close();
    this.session = null;
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.reject(error);
  }
}

/** Subscribes to the change feed; iterate it with `for await`, stop it with `close()`. */
export function subscribe(options: FeedOptions): FeedSubscription {
  return new FeedSubscription(options);
}
