// A shard keeps its whole state in its worker's heap. Past the heap's limit V8 kills the worker,
// and a restart replays the same log into the same limit: the shard would fail again and again.
// So a shard watches how much of its heap stays live after each major garbage collection (what a
// collection cannot free is state), and once that passes a high-water mark the engine refuses
// new writes to it with a clear message (queries, expiry and replication go on). It accepts
// writes again when live memory falls back under a lower mark (hysteresis: no flapping).

import { PerformanceObserver, constants, type PerformanceEntry } from 'node:perf_hooks';
import { getHeapStatistics } from 'node:v8';
import { resourceLimits } from 'node:worker_threads';

/**
 * Live heap past this share of the limit: writes are refused. The rest is headroom for what is
 * already queued and for garbage between collections, and for an id table's growth, which holds
 * its old and new value pages at once for a moment (about 32 bytes per id, under a tenth of the
 * state's ~400). Id tables' keys live outside the V8 heap and do not count against its limit.
 */
export const HEAP_FULL_FRACTION = 0.8;
/** Refused writes resume once live heap is back under this share. */
export const HEAP_CLEAR_FRACTION = 0.7;

export interface HeapState {
  /** Heap in use right after the last major collection (0 before the first). */
  live_bytes: number;
  /** The worker's old-generation limit (V8's, or `--shard-heap-mb`): where state lives. */
  limit_bytes: number;
  /** Writes are refused. */
  full: boolean;
}

/** The next `full` flag for a live size measured after a major collection. */
export function nextFull(full: boolean, live_bytes: number, limit_bytes: number): boolean {
  if (!(limit_bytes > 0)) throw new RangeError('heap limit must be positive');
  if (full) return live_bytes >= limit_bytes * HEAP_CLEAR_FRACTION;
  return live_bytes >= limit_bytes * HEAP_FULL_FRACTION;
}

/**
 * Measures the worker's live heap after every major collection; `changed` hears each flip of
 * `full`. Returns the state object it keeps current (read by metrics).
 */
export function watchHeap(changed: (state: HeapState) => void): HeapState {
  const state: HeapState = { live_bytes: 0, limit_bytes: oldGenerationLimit(), full: false };
  const observer = new PerformanceObserver((list) => {
    let major = false;
    for (const entry of list.getEntries()) {
      // Node's gc entries carry { kind } in `detail` (not in the DOM PerformanceEntry type).
      if ((entry as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) major = true;
    }
    if (!major) return;
    const stats = getHeapStatistics();
    state.live_bytes = stats.used_heap_size;
    const full = nextFull(state.full, state.live_bytes, state.limit_bytes);
    if (full !== state.full) {
      state.full = full;
      changed(state);
    }
  });
  observer.observe({ entryTypes: ['gc'] });
  return state;
}

/**
 * The old generation's limit: a worker reports its own (`--shard-heap-mb`, or V8's default).
 * `heap_size_limit` adds the young generation, which holds no state after a collection, so it
 * would set the marks too high to act before the worker runs out of memory.
 */
function oldGenerationLimit(): number {
  const mb = resourceLimits.maxOldGenerationSizeMb;
  return mb !== undefined && mb > 0 ? mb * 2 ** 20 : getHeapStatistics().heap_size_limit;
}
