// keel_requests_total / keel_request_seconds are counted in plain arrays (src/metrics/requests.ts):
// their exposition must be exactly what prom-client's Counter and Histogram give for the same data.

import t from 'tap';
import { AggregatorRegistry, Counter, Histogram, Registry, type OpenMetricsContentType } from 'prom-client';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { RequestMetrics } from '../src/metrics/requests.ts';

const BUCKETS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 10];

function sorted(text: string): Array<{ name: string; metrics: string[] }> {
  return parsePrometheusTextFormat(text)
    .map((f) => ({ ...f, metrics: f.metrics.map((m) => JSON.stringify(m)).sort() }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

/** The gateway's two series, named as src/metrics/gateway.ts names them, in `registry`. */
function ourMetrics(registry: Registry): RequestMetrics {
  return new RequestMetrics({
    counter_name: 'keel_requests_total',
    counter_help: 'h1',
    histogram_name: 'keel_request_seconds',
    histogram_help: 'h2',
    buckets: BUCKETS,
    registers: [registry],
  });
}

t.test('same exposition as prom-client for the same requests, also through the aggregator', async (t) => {
  const reference = new Registry();
  const counter = new Counter({ name: 'keel_requests_total', help: 'h1', labelNames: ['op', 'outcome'], registers: [reference] });
  const histogram = new Histogram({ name: 'keel_request_seconds', help: 'h2', labelNames: ['op'], buckets: BUCKETS, registers: [reference] });
  const ours = new Registry();
  const metrics = ourMetrics(ours);
  // Edge values: on a bound (le is inclusive), below the first, above the last, zero.
  const samples: Array<[string, string, number]> = [
    ['create_transfers', 'ok', 0.001],
    ['create_transfers', 'ok', 0.0003],
    ['create_transfers', 'busy', 12],
    ['create_transfers', 'ok', 0],
    ['lookup_accounts', 'ok', 0.0049],
    ['lookup_accounts', 'forbidden', 10],
  ];
  for (let i = 0; i < 1000; i++) samples.push(['create_transfers', 'ok', (i % 97) / 1000]);
  for (const [op, outcome, seconds] of samples) {
    counter.inc({ op, outcome });
    histogram.observe({ op }, seconds);
    metrics.record(op, outcome, seconds);
  }
  t.same(sorted(await ours.metrics()), sorted(await reference.metrics()), 'text exposition');
  const merged = AggregatorRegistry.aggregate([await ours.getMetricsAsJSON(), await ours.getMetricsAsJSON()] as never);
  const merged_reference = AggregatorRegistry.aggregate([await reference.getMetricsAsJSON(), await reference.getMetricsAsJSON()] as never);
  t.same(sorted(await merged.metrics()), sorted(await merged_reference.metrics()), 'aggregated across threads');
});

t.test('reset empties both series, as prom-client does; counting goes on after it', async (t) => {
  const registry = new Registry();
  const metrics = ourMetrics(registry);
  metrics.record('create_transfers', 'ok', 0.003);
  registry.resetMetrics();
  t.same(sorted(await registry.metrics()).map((f) => f.metrics.length), [0, 0], 'no samples after reset');
  metrics.record('create_transfers', 'busy', 0.2);
  const text = await registry.metrics();
  t.match(text, /keel_requests_total\{op="create_transfers",outcome="busy"\} 1\n/);
  t.notMatch(text, /outcome="ok"/);
  t.match(text, /keel_request_seconds_count\{op="create_transfers"\} 1\n/);
});

t.test('refuses an OpenMetrics registry (it serves the Prometheus text format only)', async (t) => {
  const registry = new Registry<OpenMetricsContentType>();
  registry.setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
  t.throws(
    () =>
      new RequestMetrics({
        counter_name: 'a_total',
        counter_help: 'a',
        histogram_name: 'b',
        histogram_help: 'b',
        buckets: [1],
        registers: [registry as unknown as Registry],
      }),
    /Prometheus text format/,
  );
});

t.test('refuses buckets out of order', async (t) => {
  t.throws(
    () => new RequestMetrics({ counter_name: 'a', counter_help: 'a', histogram_name: 'b', histogram_help: 'b', buckets: [1, 0.5], registers: [] }),
    RangeError,
  );
});
