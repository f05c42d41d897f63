// The gateway: an HTTP(S) server whose only resource is the WebSocket endpoint (`/v1`), the count of
// its connections, the token file's watch, and an orderly shutdown.
//
// Lifecycle: startGateway() listens and resolves once bound -> sessions run -> close(): stop
// accepting (new upgrades get 503), answer new requests `unavailable`, wait for in-flight requests
// (each bounded by its deadline), close every connection with 1001, stop listening. The engine is the
// caller's to close afterwards.

import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import { createLogger, type Logger } from './log.ts';
import type { LedgerEngine } from './ops.ts';
import { CloseCode } from './protocol.ts';
import { Session, type GatewayObserver, type InFlight, type SessionContext, type SessionLimits } from './session.ts';
import { Deadlines } from '../client/deadlines.ts';

/** How late past `request_timeout_ms` a request may be answered `timeout`. */
const REQUEST_DEADLINE_SLOT_MS = 10;

export type { GatewayObserver } from './session.ts';
import type { TokenStore } from './tokens.ts';

const MiB = 1024 * 1024;

export interface GatewayOptions {
  engine: LedgerEngine;
  tokens: TokenStore;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 7070; 0 picks a free port (see `address.port`). */
  port?: number;
  /** Default '/v1'. */
  path?: string;
  /** Largest inbound frame (ws maxPayload; past it: close 1009). Default 4 MiB. */
  frame_bytes_max?: number;
  /** Requests in flight per connection before `too_many_inflight`; reported by hello. Default 64. */
  inflight_per_connection?: number;
  /** Open connections before new upgrades are refused with HTTP 503. Default 1024. */
  connections_max?: number;
  /** Per-request deadline; past it the reply is `timeout` and the late result is dropped. Default 10 s. */
  request_timeout_ms?: number;
  /** Time to send hello after connecting; past it: close 1008. Default: request_timeout_ms. */
  hello_timeout_ms?: number;
  /** Reading from a connection pauses while its unsent replies exceed this. Default 8 MiB. */
  send_high_water_bytes?: number;
  /** Unsent replies of one connection past which it is closed with 1008. Default 16 x high water. */
  send_buffer_max_bytes?: number;
  /** A connection whose reading stays paused this long (its client does not read) is closed with 1008. Default 30 s. */
  send_stall_ms?: number;
  /** Time a peer gets to complete a closing handshake before the socket is destroyed. Default 2 s. */
  close_grace_ms?: number;
  /** Ping every connection this often; one that answers nothing for a whole interval is dropped. 0: never. Default 30 s. */
  ping_interval_ms?: number;
  /** Serve wss:// with this certificate and key (PEM). */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** The center's name, reported by hello. Default 'local'. */
  center?: string;
  /** Default: pino on stderr at KEEL_LOG_LEVEL (default warn). */
  logger?: Logger;
  /** Told of every request's outcome and every refused connection (metrics). */
  observer?: GatewayObserver;
}

export interface GatewayAddress {
  host: string;
  port: number;
  /** e.g. ws://127.0.0.1:7070/v1 */
  url: string;
}

export interface Gateway {
  readonly address: GatewayAddress;
  /** Open WebSocket connections (including ones still in their handshake). */
  readonly connections: number;
  /** Requests in flight across all connections. */
  readonly inflight: number;
  /** Stops accepting, answers in-flight requests, closes every connection with 1001. Idempotent. */
  close(): Promise<void>;
}

function positiveInt(name: string, value: number, min = 1): number {
  if (!Number.isInteger(value) || value < min) throw new RangeError(`${name} must be an integer >= ${min}; got ${value}`);
  return value;
}

function reject(socket: Duplex, status: number, text: string, message: string): void {
  const body = `${message}\n`;
  socket.end(
    `HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\n${status === 503 ? 'Retry-After: 1\r\n' : ''}\r\n${body}`,
  );
  setTimeout(() => socket.destroy(), 1000).unref();
}

export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  const host = options.host ?? '127.0.0.1';
  const port = options.port ?? 7070;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError(`port must be 0..65535; got ${port}`);
  const path = options.path ?? '/v1';
  const request_timeout_ms = positiveInt('request_timeout_ms', options.request_timeout_ms ?? 10_000);
  const send_high_water_bytes = positiveInt('send_high_water_bytes', options.send_high_water_bytes ?? 8 * MiB);
  const limits: SessionLimits = {
    frame_bytes_max: positiveInt('frame_bytes_max', options.frame_bytes_max ?? 4 * MiB, 64),
    inflight_per_connection: positiveInt('inflight_per_connection', options.inflight_per_connection ?? 64),
    request_timeout_ms,
    hello_timeout_ms: positiveInt('hello_timeout_ms', options.hello_timeout_ms ?? request_timeout_ms),
    send_high_water_bytes,
    send_buffer_max_bytes: positiveInt('send_buffer_max_bytes', options.send_buffer_max_bytes ?? 16 * send_high_water_bytes),
    send_stall_ms: positiveInt('send_stall_ms', options.send_stall_ms ?? 30_000),
    close_grace_ms: positiveInt('close_grace_ms', options.close_grace_ms ?? 2_000),
  };
  if (limits.send_buffer_max_bytes < send_high_water_bytes) throw new RangeError('send_buffer_max_bytes must be >= send_high_water_bytes');
  const ping_interval_ms = options.ping_interval_ms ?? 30_000;
  if (!Number.isInteger(ping_interval_ms) || ping_interval_ms < 0) throw new RangeError(`ping_interval_ms must be an integer >= 0; got ${ping_interval_ms}`);
  const connections_max = positiveInt('connections_max', options.connections_max ?? 1024);
  const logger = options.logger ?? createLogger();
  const tokens = options.tokens;

  const sessions = new Set<Session>();
  let sockets = 0;
  let draining = false;

  const ctx: SessionContext = {
    engine: options.engine,
    tokens,
    logger,
    limits,
    center: options.center ?? 'local',
    draining: () => draining,
    closed: (session) => sessions.delete(session),
    deadlines: new Deadlines<InFlight>(REQUEST_DEADLINE_SLOT_MS, (entry) => entry.session.timedOut(entry)),
    ...(options.observer === undefined ? {} : { observer: options.observer }),
  };
  const refused = (reason: string): void => options.observer?.rejected(reason);

  const scheme = options.tls === undefined ? 'ws' : 'wss';
  const onRequest = (_req: IncomingMessage, res: ServerResponse): void => {
    res.writeHead(426, { 'Content-Type': 'text/plain; charset=utf-8', Upgrade: 'websocket', Connection: 'close' });
    res.end(`Keel speaks WebSocket only: connect to ${scheme}://HOST:PORT${path} (PROTOCOL.md)\n`);
  };
  const server: Server =
    options.tls === undefined
      ? createHttpServer(onRequest)
      : createHttpsServer({ cert: options.tls.cert, key: options.tls.key }, onRequest);

  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: limits.frame_bytes_max,
    perMessageDeflate: false,
    clientTracking: false,
  });

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', (error) => logger.debug({ err: error.message }, 'upgrade socket error'));
    const pathname = (req.url ?? '').split('?', 1)[0];
    if (draining) {
      refused('draining');
      return reject(socket, 503, 'Service Unavailable', 'Keel is shutting down; retry on another server or later');
    }
    if (pathname !== path) {
      refused('bad_path');
      return reject(socket, 404, 'Not Found', `no WebSocket endpoint at ${pathname}; use ${path}`);
    }
    if (sockets >= connections_max) {
      refused('connections_max');
      logger.warn({ connections_max }, 'connection refused: connections_max reached');
      return reject(socket, 503, 'Service Unavailable', `too many connections (limit ${connections_max}); retry later`);
    }
    sockets++;
    socket.once('close', () => sockets--);
    const remote = `${(socket as Socket).remoteAddress ?? '?'}:${(socket as Socket).remotePort ?? '?'}`;
    wss.handleUpgrade(req, socket, head, (ws) => {
      if (draining) {
        // No Session listens on this socket: a bad frame during the close must not go unheard.
        ws.on('error', () => ws.terminate());
        ws.close(CloseCode.going_away, 'server shutting down');
        return;
      }
      sessions.add(new Session(ws, ctx, remote));
    });
  });
  server.on('clientError', (error, socket) => {
    logger.debug({ err: error.message }, 'HTTP client error');
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    else socket.destroy();
  });

  await new Promise<void>((resolve, rejectListen) => {
    const onError = (error: Error): void => rejectListen(error);
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  server.on('error', (error) => logger.error({ err: error.message }, 'server error'));

  const bound = server.address() as AddressInfo;
  const url_host = bound.family === 'IPv6' ? `[${bound.address}]` : bound.address;
  const address: GatewayAddress = { host: bound.address, port: bound.port, url: `${scheme}://${url_host}:${bound.port}${path}` };

  const stopWatching = tokens.watch(
    () => {
      logger.info({ path: tokens.path }, 'tokens reloaded');
      for (const session of sessions) session.refreshPrincipal();
    },
    (failure) => logger.error({ error: failure.error }, `tokens not reloaded, previous tokens stay in force: ${failure.message}`),
  );

  const pinger =
    ping_interval_ms === 0
      ? null
      : setInterval(() => {
          for (const session of sessions) session.heartbeat();
        }, ping_interval_ms);
  pinger?.unref();

  let closing: Promise<void> | null = null;
  const close = async (): Promise<void> => {
    draining = true;
    stopWatching();
    if (pinger !== null) clearInterval(pinger);
    const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
    // In-flight requests end by their deadline; the extra second covers the reply's way out.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all([...sessions].map((s) => s.idle())),
      new Promise<void>((resolve) => (timer = setTimeout(resolve, request_timeout_ms + 1000))),
    ]);
    clearTimeout(timer);
    const all = [...sessions];
    for (const session of all) session.close(CloseCode.going_away, 'server shutting down');
    await Promise.all(all.map((s) => s.whenClosed()));
    server.closeAllConnections();
    ctx.deadlines.clear();
    await stopped;
    logger.info('gateway closed');
  };

  logger.info({ url: address.url, connections_max, ...limits }, 'gateway listening');
  return {
    address,
    get connections() {
      return sockets;
    },
    get inflight() {
      let n = 0;
      for (const s of sessions) n += s.inflight_count;
      return n;
    },
    close: () => (closing ??= close()),
  };
}
