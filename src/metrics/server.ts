// GET /metrics in Prometheus text format on its own port: the main thread's registry plus every
// shard worker's, gathered as JSON over the worker channel and merged with prom-client's
// aggregator (series stay apart by their `shard` label).

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { AggregatorRegistry, type Registry } from 'prom-client';
import type { MetricsJson } from './shard.ts';

export interface MetricsServerOptions {
  host: string;
  port: number;
  main: Registry;
  workers: () => Promise<MetricsJson[]>;
  /** An error of the listening server (the engine logs it and serves on). */
  on_error?: (error: Error) => void;
}

export interface MetricsServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

export async function render(main: Registry, workers: () => Promise<MetricsJson[]>): Promise<{ type: string; text: string }> {
  const [own, shards] = await Promise.all([main.getMetricsAsJSON() as Promise<MetricsJson>, workers()]);
  const aggregated = AggregatorRegistry.aggregate([own, ...shards]);
  return { type: main.contentType, text: await aggregated.metrics() };
}

export async function startMetricsServer(options: MetricsServerOptions): Promise<MetricsServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '').split('?', 1)[0];
    if (req.method !== 'GET' || path !== '/metrics') {
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end('Keel serves Prometheus metrics at GET /metrics\n');
      return;
    }
    render(options.main, options.workers).then(
      ({ type, text }) => {
        res.writeHead(200, { 'Content-Type': type });
        res.end(text);
      },
      (error: unknown) => {
        res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' });
        res.end(`metrics collection failed: ${error instanceof Error ? error.message : String(error)}\n`);
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  // Listening, an accept can still fail (ENFILE, ENOBUFS): unheard, that 'error' would stop the
  // engine over its metrics. The scrape fails instead, and the alert on absent metrics fires.
  server.on('error', (error) => options.on_error?.(error));
  const port = (server.address() as AddressInfo).port;
  const host = options.host.includes(':') ? `[${options.host}]` : options.host;
  return {
    url: `http://${host}:${port}/metrics`,
    port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
