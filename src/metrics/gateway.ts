// Main-thread metrics: the gateway's traffic, the shard queues as the main thread sees them, and
// the process itself (event-loop lag, heap, GC) from prom-client's default collectors.

import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { RequestMetrics } from './requests.ts';
import type { GatewayObserver } from '../gateway/server.ts';

export interface MainSources {
  connections(): number;
  inflight(): number;
  shardLoads(): Array<{ shard: number; events: number; requests: number }>;
  /** Per shard: queued events past which requests are answered `busy`. */
  queue_events_max: number;
}

export class MainMetrics implements GatewayObserver {
  readonly registry = new Registry();
  private readonly requests: RequestMetrics;
  private readonly rejected_total: Counter<'reason'>;
  private sources: MainSources | null = null;

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'keel_process_' });
    this.requests = new RequestMetrics({
      counter_name: 'keel_requests_total',
      counter_help: 'Requests answered, by op and outcome (ok or the error code).',
      histogram_name: 'keel_request_seconds',
      histogram_help: 'Time from a request frame being read to its reply being queued, by op.',
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 10],
      registers,
    });
    this.rejected_total = new Counter({
      name: 'keel_connections_rejected_total',
      help: 'Connections refused or closed by the server, by reason.',
      labelNames: ['reason'],
      registers,
    });
    const self = this;
    new Gauge({
      name: 'keel_connections',
      help: 'Open WebSocket connections.',
      registers,
      collect(this: Gauge) {
        this.set(self.sources?.connections() ?? 0);
      },
    });
    new Gauge({
      name: 'keel_inflight_requests',
      help: 'Requests in flight across all connections.',
      registers,
      collect(this: Gauge) {
        this.set(self.sources?.inflight() ?? 0);
      },
    });
    new Gauge({
      name: 'keel_shard_queue_events',
      help: 'Events queued or in flight per shard, as the main thread counts them (busy past the limit).',
      labelNames: ['shard'],
      registers,
      collect(this: Gauge<'shard'>) {
        for (const load of self.sources?.shardLoads() ?? []) this.set({ shard: String(load.shard) }, load.events);
      },
    });
    new Gauge({
      name: 'keel_shard_queue_events_limit',
      help: 'Queued events per shard past which requests are answered busy.',
      registers,
      collect(this: Gauge) {
        this.set(self.sources?.queue_events_max ?? 0);
      },
    });
    new Gauge({
      name: 'keel_shard_queue_requests',
      help: 'Requests queued or in flight per shard.',
      labelNames: ['shard'],
      registers,
      collect(this: Gauge<'shard'>) {
        for (const load of self.sources?.shardLoads() ?? []) this.set({ shard: String(load.shard) }, load.requests);
      },
    });
  }

  /** Wires the live sources once the gateway and engine exist. */
  attach(sources: MainSources): void {
    this.sources = sources;
  }

  request(op: string, outcome: string, seconds: number): void {
    this.requests.record(op, outcome, seconds);
  }

  rejected(reason: string): void {
    this.rejected_total.inc({ reason });
  }
}
