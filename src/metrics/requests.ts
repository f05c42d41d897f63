// The per-request series of the main thread (keel_requests_total, keel_request_seconds), counted in
// plain arrays and turned into prom-client's shape only when scraped. prom-client hashes the label
// set on every inc and observe; at tens of thousands of single-transfer requests a second that was
// about 4% of the gateway thread. The exposition is the same as a prom-client Counter and Histogram
// with the same names, labels and buckets (test/metrics.test.ts parses it).

import { Registry } from 'prom-client';

interface MetricValue {
  labels: Record<string, string | number>;
  value: number;
  metricName?: string;
}

interface MetricJson {
  name: string;
  help: string;
  type: 'counter' | 'histogram';
  values: MetricValue[];
  aggregator: 'sum';
}

/** What prom-client's Registry asks of a metric (`type` also picks OpenMetrics' counter naming). */
interface RegistryMetric {
  readonly name: string;
  readonly help: string;
  readonly type: 'counter' | 'histogram';
  readonly aggregator: 'sum';
  get(): Promise<MetricJson>;
  reset(): void;
}

class OpSeries {
  /** Non-cumulative counts per bucket; the last slot is +Inf. */
  readonly buckets: Float64Array;
  sum_seconds = 0;
  count = 0;
  /** Requests by outcome ('ok' or the error code). */
  readonly outcomes = new Map<string, number>();

  constructor(bucket_count: number) {
    this.buckets = new Float64Array(bucket_count + 1);
  }
}

export class RequestMetrics {
  private readonly ops = new Map<string, OpSeries>();

  constructor(
    private readonly options: {
      counter_name: string;
      counter_help: string;
      histogram_name: string;
      histogram_help: string;
      /** Upper bounds in seconds, ascending. */
      buckets: readonly number[];
      registers: Registry[];
    },
  ) {
    for (let i = 1; i < options.buckets.length; i++) {
      if (!(options.buckets[i] > options.buckets[i - 1])) throw new RangeError('buckets must be ascending');
    }
    const counter: RegistryMetric = {
      name: options.counter_name,
      help: options.counter_help,
      type: 'counter',
      aggregator: 'sum',
      get: async () => this.counterJson(),
      reset: () => {
        for (const series of this.ops.values()) series.outcomes.clear();
      },
    };
    const histogram: RegistryMetric = {
      name: options.histogram_name,
      help: options.histogram_help,
      type: 'histogram',
      aggregator: 'sum',
      get: async () => this.histogramJson(),
      reset: () => {
        for (const series of this.ops.values()) {
          series.buckets.fill(0);
          series.sum_seconds = 0;
          series.count = 0;
        }
      },
    };
    for (const registry of options.registers) {
      // OpenMetrics renames counters (prom-client drops `_total` from the name when it builds one
      // for such a registry); /metrics serves the Prometheus text format, and only that is matched.
      if ((registry.contentType as string) === Registry.OPENMETRICS_CONTENT_TYPE) {
        throw new Error('RequestMetrics serves the Prometheus text format only; this registry uses OpenMetrics');
      }
      // prom-client's Registry takes any object with a name, get() and reset().
      registry.registerMetric(counter as unknown as Parameters<Registry['registerMetric']>[0]);
      registry.registerMetric(histogram as unknown as Parameters<Registry['registerMetric']>[0]);
    }
  }

  /** One answered request: no allocation once an op and outcome have been seen. */
  record(op: string, outcome: string, seconds: number): void {
    let series = this.ops.get(op);
    if (series === undefined) {
      series = new OpSeries(this.options.buckets.length);
      this.ops.set(op, series);
    }
    series.outcomes.set(outcome, (series.outcomes.get(outcome) ?? 0) + 1);
    const bounds = this.options.buckets;
    let i = 0;
    while (i < bounds.length && seconds > bounds[i]) i++;
    series.buckets[i]++;
    series.sum_seconds += seconds;
    series.count++;
  }

  private counterJson(): MetricJson {
    const values: MetricValue[] = [];
    for (const [op, series] of this.ops) {
      for (const [outcome, count] of series.outcomes) values.push({ labels: { op, outcome }, value: count });
    }
    return { name: this.options.counter_name, help: this.options.counter_help, type: 'counter', values, aggregator: 'sum' };
  }

  private histogramJson(): MetricJson {
    const name = this.options.histogram_name;
    const values: MetricValue[] = [];
    for (const [op, series] of this.ops) {
      if (series.count === 0) continue; // reset since: prom-client shows no series either
      let cumulative = 0;
      this.options.buckets.forEach((le, i) => {
        cumulative += series.buckets[i];
        values.push({ labels: { le, op }, value: cumulative, metricName: `${name}_bucket` });
      });
      values.push({ labels: { le: '+Inf', op }, value: series.count, metricName: `${name}_bucket` });
      values.push({ labels: { op }, value: series.sum_seconds, metricName: `${name}_sum` });
      values.push({ labels: { op }, value: series.count, metricName: `${name}_count` });
    }
    return { name, help: this.options.histogram_help, type: 'histogram', values, aggregator: 'sum' };
  }
}
