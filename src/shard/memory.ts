// A shard keeps its whole state in its worker's heap. Past the heap's limit V8 stops the worker
// (or leaves it hung), and a restart replays the same log into the same limit: the shard would
// fail again and again. So a shard watches how much of its old generation stays in use after each
// major garbage collection (what a collection cannot free is state), and once that passes a mark
// the engine refuses new writes to it with `busy` and the reason (queries, expiry and replication
// go on). It accepts writes again when live memory falls back under a lower mark (hysteresis).
//
// The mark leaves room for everything that can still arrive once it is crossed: the events the
// engine may already have queued for the shard (its queue bound), at a generous size each, plus
// garbage between collections and an id table's growth. With a small heap that room is most of it.

import { PerformanceObserver, constants, type PerformanceEntry } from 'node:perf_hooks';
import { getHeapSpaceStatistics, getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { resourceLimits } from 'node:worker_threads';

/** At most this share of the limit may be live before writes are refused. */
export const HEAP_FULL_FRACTION = 0.8;
/** Refused writes resume once live memory is this share of the limit below the full mark. */
export const HEAP_CLEAR_GAP_FRACTION = 0.1;
/** New state one queued event can add (measured ~340 bytes per transfer: bench/memory.ts), with margin. */
export const STATE_BYTES_PER_EVENT = 1024;
/** Garbage and an id table's growth between two collections, beyond the queue. */
const SLACK_BYTES = 16 * 2 ** 20;

/** The old-generation spaces: where state lives once it survives a collection. */
const OLD_SPACES = new Set(['old_space', 'code_space', 'large_object_space', 'code_large_object_space']);

export interface HeapState {
  /** Old generation in use right after the last major collection. */
  live_bytes: number;
  /** The worker's old-generation limit (`--shard-heap-mb`, `--max-old-space-size`, or V8's default). */
  limit_bytes: number;
  /** Live memory at or past this refuses writes. */
  full_bytes: number;
  /** Writes are refused. */
  full: boolean;
}

/** The full mark for a limit, leaving room for `queue_events` queued events. */
export function fullMark(limit_bytes: number, queue_events: number): number {
  if (!(limit_bytes > 0) || !(queue_events >= 0)) throw new RangeError('heap limit must be positive and the queue bound non-negative');
  return Math.min(limit_bytes * HEAP_FULL_FRACTION, limit_bytes - queue_events * STATE_BYTES_PER_EVENT - SLACK_BYTES);
}

/** The next `full` flag for a live size measured after a major collection. */
export function nextFull(full: boolean, live_bytes: number, full_bytes: number, limit_bytes: number): boolean {
  if (full) return live_bytes >= full_bytes - limit_bytes * HEAP_CLEAR_GAP_FRACTION;
  return live_bytes >= full_bytes;
}

/** Old-generation bytes in use now (state plus garbage not yet collected). */
function oldGenerationUsed(): number {
  let used = 0;
  for (const space of getHeapSpaceStatistics()) if (OLD_SPACES.has(space.space_name)) used += space.space_used_size;
  return used;
}

/**
 * The old generation's limit. `heap_size_limit` is the true limit whatever set it (including
 * `--max-old-space-size` in NODE_OPTIONS, which overrides a worker's resourceLimits) but adds the
 * young generation, which holds no state after a collection.
 */
function oldGenerationLimit(): number {
  const young_mb = resourceLimits.maxYoungGenerationSizeMb ?? 0;
  return getHeapStatistics().heap_size_limit - young_mb * 2 ** 20;
}

/** A full collection now, for the first measurement after recovery (replay leaves garbage). */
function collectNow(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

/**
 * Measures the worker's live heap now (after a full collection) and after every major collection
 * from then on; `changed` hears each flip of `full`. Returns the state it keeps current.
 */
export function watchHeap(queue_events: number, changed: (state: HeapState) => void): HeapState {
  const limit_bytes = oldGenerationLimit();
  collectNow();
  const live_bytes = oldGenerationUsed();
  const full_bytes = fullMark(limit_bytes, queue_events);
  const state: HeapState = { live_bytes, limit_bytes, full_bytes, full: nextFull(false, live_bytes, full_bytes, limit_bytes) };
  const observer = new PerformanceObserver((list) => {
    let major = false;
    for (const entry of list.getEntries()) {
      // Node's gc entries carry { kind } in `detail` (not in the DOM PerformanceEntry type).
      if ((entry as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) major = true;
    }
    if (!major) return;
    state.live_bytes = oldGenerationUsed();
    const full = nextFull(state.full, state.live_bytes, state.full_bytes, state.limit_bytes);
    if (full !== state.full) {
      state.full = full;
      changed(state);
    }
  });
  observer.observe({ entryTypes: ['gc'] });
  return state;
}
