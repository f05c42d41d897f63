// Append-only arrays kept in timestamp order, and the range scans every query is built from.
// Timestamps only grow along a shard's log, so appending keeps each array sorted without a tree.

export interface Timestamped {
  timestamp: bigint;
}

/** Index of the first element with timestamp >= ts (array length when none). */
export function lowerBound(items: readonly Timestamped[], ts: bigint): number {
  let lo = 0;
  let hi = items.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (items[mid].timestamp < ts) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Index of the first element with timestamp > ts. */
export function upperBound(items: readonly Timestamped[], ts: bigint): number {
  let lo = 0;
  let hi = items.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (items[mid].timestamp <= ts) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The half-open index range of items within [min, max] inclusive; zero bounds are open. */
export function timestampRange(
  items: readonly Timestamped[],
  timestamp_min: bigint,
  timestamp_max: bigint,
): [number, number] {
  const start = timestamp_min === 0n ? 0 : lowerBound(items, timestamp_min);
  const end = timestamp_max === 0n ? items.length : upperBound(items, timestamp_max);
  return [start, Math.max(start, end)];
}

/** Appends to the array stored under key, creating it on first use. */
export function pushIndexed<K, V>(index: { get(key: K): V[] | undefined; set(key: K, list: V[]): unknown }, key: K, value: V): void {
  const list = index.get(key);
  if (list === undefined) index.set(key, [value]);
  else list.push(value);
}
