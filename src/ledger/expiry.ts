// A binary min-heap of pending-transfer deadlines. Entries are never removed early: a transfer
// posted or voided before its deadline is skipped when its entry surfaces (lazy deletion), which
// keeps post and void O(1).

export interface ExpiryEntry {
  expires_at: bigint;
  id: bigint;
}

export class ExpiryQueue {
  private readonly heap: ExpiryEntry[] = [];

  get size(): number {
    return this.heap.length;
  }

  push(expires_at: bigint, id: bigint): void {
    const heap = this.heap;
    heap.push({ expires_at, id });
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >>> 1;
      if (!before(heap[i], heap[parent])) break;
      [heap[i], heap[parent]] = [heap[parent], heap[i]];
      i = parent;
    }
  }

  /** Visits every entry due at or before `limit` (in heap order), pruning later subtrees. */
  collectUpTo(limit: bigint, visit: (entry: ExpiryEntry) => void): void {
    const heap = this.heap;
    const stack: number[] = heap.length > 0 ? [0] : [];
    while (stack.length > 0) {
      const i = stack.pop()!;
      if (heap[i].expires_at > limit) continue;
      visit(heap[i]);
      if (2 * i + 1 < heap.length) stack.push(2 * i + 1);
      if (2 * i + 2 < heap.length) stack.push(2 * i + 2);
    }
  }

  peek(): ExpiryEntry | undefined {
    return this.heap[0];
  }

  pop(): ExpiryEntry | undefined {
    const heap = this.heap;
    if (heap.length === 0) return undefined;
    const top = heap[0];
    const last = heap.pop()!;
    if (heap.length > 0) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        const right = left + 1;
        let smallest = i;
        if (left < heap.length && before(heap[left], heap[smallest])) smallest = left;
        if (right < heap.length && before(heap[right], heap[smallest])) smallest = right;
        if (smallest === i) break;
        [heap[i], heap[smallest]] = [heap[smallest], heap[i]];
        i = smallest;
      }
    }
    return top;
  }
}

/** Deadline first, then id, so that expiry order is total and replays identically. */
function before(a: ExpiryEntry, b: ExpiryEntry): boolean {
  return a.expires_at < b.expires_at || (a.expires_at === b.expires_at && a.id < b.id);
}
