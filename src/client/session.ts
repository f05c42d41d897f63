// One WebSocket connection and its `hello` (PROTOCOL.md sections 1 and 3). A Session exists only after
// a successful hello; it then delivers replies by request id and reports its end exactly once.

import WebSocket from 'ws';
import { decodeFrame, encodeFrame, type WireMap } from './codec.ts';
import { KeelError, serverError } from './errors.ts';
import { isFields, parseHello, type Fields, type HelloReply } from './replies.ts';

export interface SessionOptions {
  url: string;
  token: string;
  client_name: string | undefined;
  /** Bound on opening the socket plus the hello round trip. */
  timeout_ms: number;
  /** Interval of WebSocket pings; a ping unanswered by the next one ends the session. 0: none. */
  heartbeat_ms: number;
}

/** Why a session ended: `error.code` is `unauthorized`, `protocol_error` or `connection_closed`. */
export interface SessionEnd {
  /** WebSocket close code (1006 when the socket just dropped, 1002 for a local protocol error). */
  close_code: number;
  error: KeelError;
}

export interface SessionHandlers {
  reply(id: number, reply: Fields): void;
  end(end: SessionEnd): void;
  /** Server pushes (PROTOCOL.md section 5); dropped when absent. */
  push?(message: Fields): void;
}

/** The hello request's id: nothing else is in flight at that point. */
const HELLO_ID = 0;

/** Close codes of PROTOCOL.md section 1 that mean this client sent something the server rejected. */
const PROTOCOL_CLOSE_CODES: ReadonlySet<number> = new Set([1003, 1007, 1009]);
export const UNAUTHORIZED_CLOSE_CODE = 4401;
const CLOSE_GRACE_MS = 2000;

function endOf(close_code: number, reason: string): KeelError {
  const why = `connection closed (${close_code}${reason ? ` ${reason}` : ''})`;
  if (close_code === UNAUTHORIZED_CLOSE_CODE) return new KeelError('unauthorized', `${why}: unauthorized`);
  if (PROTOCOL_CLOSE_CODES.has(close_code)) return new KeelError('protocol_error', `${why}: the server rejected a frame`);
  return new KeelError('connection_closed', why);
}

export class Session {
  readonly hello: HelloReply;
  private readonly ws: WebSocket;
  private handlers: SessionHandlers | undefined;
  /** Messages that arrived between the hello reply and `attach`. */
  private early: Array<[number, Fields]> = [];
  private ended: SessionEnd | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private awaiting_pong = false;

  private constructor(ws: WebSocket, hello: HelloReply) {
    this.ws = ws;
    this.hello = hello;
  }

  /** Opens a socket and performs hello; errors are values: `unauthorized`, `connection_failed`, ... */
  static open(options: SessionOptions): Promise<Session | KeelError> {
    return new Promise((resolve) => {
      let session: Session | undefined;
      let settled = false;
      let socket_error = '';
      let hello_error: KeelError | undefined;
      let ws: WebSocket;
      try {
        ws = new WebSocket(options.url, { perMessageDeflate: false, handshakeTimeout: options.timeout_ms });
      } catch (e) {
        resolve(new KeelError('connection_failed', `cannot connect to ${options.url}: ${(e as Error).message}`));
        return;
      }
      const fail = (e: KeelError): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        ws.terminate();
        resolve(e);
      };
      const timer = setTimeout(() => {
        fail(hello_error ?? new KeelError('connection_failed', `no hello reply from ${options.url} within ${options.timeout_ms} ms`));
      }, options.timeout_ms);

      ws.on('open', () => {
        const hello: WireMap = { id: HELLO_ID, op: 'hello', token: options.token };
        if (options.client_name !== undefined) hello.client = options.client_name;
        ws.send(encodeFrame(hello));
      });
      ws.on('error', (err: Error) => {
        socket_error = err.message;
      });
      ws.on('message', (data: WebSocket.RawData, isBinary: boolean) => {
        const message = decodeMessage(data, isBinary);
        if (hello_error !== undefined) return;
        if (session !== undefined) {
          session.receive(message);
          return;
        }
        if (message instanceof KeelError) return fail(message);
        if (message.id !== HELLO_ID) {
          return fail(new KeelError('protocol_error', `expected the hello reply, got a message with id ${String(message.id)}`));
        }
        if (message.error !== undefined) {
          const error = serverError(message.error, message.message, message.field);
          if (error.code !== 'unauthorized') return fail(error);
          // The server closes with 4401 next: let it, so that the close is a clean one.
          hello_error = error;
          setTimeout(() => fail(error), CLOSE_GRACE_MS).unref();
          return;
        }
        const hello = parseHello(message);
        if (hello instanceof KeelError) return fail(hello);
        settled = true;
        clearTimeout(timer);
        session = new Session(ws, hello);
        session.startHeartbeat(options.heartbeat_ms);
        resolve(session);
      });
      ws.on('pong', () => {
        if (session !== undefined) session.awaiting_pong = false;
      });
      ws.on('close', (code: number, reason: Buffer) => {
        if (session !== undefined) return session.finish(code, reason.toString());
        if (hello_error !== undefined) return fail(hello_error);
        const e = endOf(code, reason.toString());
        if (e.code === 'unauthorized') return fail(e);
        fail(new KeelError('connection_failed', `cannot connect to ${options.url}: ${socket_error || e.message}`));
      });
    });
  }

  /** Starts delivering replies (including any that arrived before). */
  attach(handlers: SessionHandlers): void {
    this.handlers = handlers;
    const early = this.early;
    this.early = [];
    for (const [id, reply] of early) handlers.reply(id, reply);
    if (this.ended !== undefined) handlers.end(this.ended);
  }

  get open(): boolean {
    return this.ended === undefined && this.ws.readyState === WebSocket.OPEN;
  }

  /** Stops reading the socket (the server's sends back up and it paces its pushes). */
  pauseReading(): void {
    this.ws.pause();
  }

  resumeReading(): void {
    this.ws.resume();
  }

  send(bytes: Uint8Array): void {
    this.ws.send(bytes);
  }

  /** Holds writes until `uncork`, so that the frames of one pump leave in one write. */
  cork(): void {
    (this.ws as unknown as { _socket?: { cork(): void } })._socket?.cork();
  }

  uncork(): void {
    (this.ws as unknown as { _socket?: { uncork(): void } })._socket?.uncork();
  }

  /** Closes normally; `end` is reported once the socket has closed. */
  close(): void {
    this.ws.close(1000, 'client closing');
    // Do not wait for ws's 30 s closing handshake timeout on an unresponsive server.
    setTimeout(() => this.ws.terminate(), CLOSE_GRACE_MS).unref();
  }

  private startHeartbeat(interval_ms: number): void {
    if (interval_ms <= 0) return;
    this.heartbeat = setInterval(() => {
      if (this.awaiting_pong) {
        this.ws.terminate();
        return;
      }
      this.awaiting_pong = true;
      this.ws.ping();
    }, interval_ms);
    this.heartbeat.unref();
  }

  private receive(message: Fields | KeelError): void {
    if (this.ended !== undefined) return;
    if (message instanceof KeelError) {
      // The server broke the protocol: drop the connection (1002) and let the owner recover.
      this.ended = { close_code: 1002, error: message };
      this.ws.close(1002, 'protocol error');
      this.stop();
      this.handlers?.end(this.ended);
      return;
    }
    if (message.push !== undefined) {
      this.handlers?.push?.(message);
      return;
    }
    const id = message.id;
    if (typeof id !== 'number') return;
    if (this.handlers === undefined) this.early.push([id, message]);
    else this.handlers.reply(id, message);
  }

  private finish(code: number, reason: string): void {
    if (this.ended !== undefined) return;
    this.ended = { close_code: code, error: endOf(code, reason) };
    this.stop();
    this.handlers?.end(this.ended);
  }

  private stop(): void {
    if (this.heartbeat !== undefined) clearInterval(this.heartbeat);
    this.heartbeat = undefined;
  }
}

function decodeMessage(data: WebSocket.RawData, isBinary: boolean): Fields | KeelError {
  if (!isBinary) return new KeelError('protocol_error', 'the server sent a text frame');
  let value: unknown;
  try {
    const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
    value = decodeFrame(bytes);
  } catch (e) {
    return new KeelError('protocol_error', `undecodable frame from the server: ${(e as Error).message}`);
  }
  if (!isFields(value)) return new KeelError('protocol_error', 'a frame from the server is not a map');
  return value;
}
