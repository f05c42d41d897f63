// Small shared test helpers: deterministic randomness and order checks.

/** Deterministic randomness (mulberry32): print the seed so a failure can be replayed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The fewest runs, each in `truth`'s order, that `seen` splits into: its longest decreasing
 * subsequence of positions in `truth` (Dilworth). Transfers in commit order per shard over S shards
 * make at most S runs; over one shard, one run means exactly `truth`'s order.
 */
export function orderedRuns(seen: readonly bigint[], truth: readonly bigint[]): number {
  const position = new Map(truth.map((id, i) => [id, i]));
  const tails: number[] = []; // tails[k]: the largest last position of a decreasing run of length k + 1
  for (const id of seen) {
    const p = position.get(id) ?? -1;
    let lo = 0;
    let hi = tails.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (tails[mid] > p) lo = mid + 1;
      else hi = mid;
    }
    tails[lo] = p;
  }
  return tails.length;
}
