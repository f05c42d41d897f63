// The client's per-call deadlines (src/client/deadlines.ts): one timer for many calls, never early.

import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { Deadlines, type Expiring } from '../src/client/deadlines.ts';

interface Item extends Expiring {
  name: string;
  added_at: number;
  ms: number;
}

function item(name: string, ms: number): Item {
  return { name, deadline: undefined, added_at: performance.now(), ms };
}

t.test('expires each item no earlier than its timeout, at most a slot late, in deadline order', async (t) => {
  const expired: Array<{ name: string; early_ms: number; late_ms: number }> = [];
  const deadlines = new Deadlines<Item>(10, (it) => {
    const elapsed = performance.now() - it.added_at;
    expired.push({ name: it.name, early_ms: it.ms - elapsed, late_ms: elapsed - it.ms });
  });
  // Mixed timeouts, added out of deadline order (a later slot first, then earlier ones).
  const items = [item('c', 120), item('a', 30), item('b', 60), item('a2', 31), item('d', 5)];
  for (const it of items) deadlines.add(it, it.ms);
  await sleep(250);
  t.same(
    expired.map((e) => e.name),
    ['d', 'a', 'a2', 'b', 'c'],
    'in deadline order',
  );
  for (const e of expired) {
    t.ok(e.early_ms <= 0, `${e.name} not early (${e.early_ms.toFixed(2)} ms before its timeout)`);
    // A slot, plus generous scheduling slack on a loaded machine.
    t.ok(e.late_ms < 10 + 100, `${e.name} late by ${e.late_ms.toFixed(2)} ms`);
  }
  for (const it of items) t.equal(it.deadline, undefined, `${it.name} no longer kept`);
  deadlines.clear();
});

t.test('a removed item never expires; others in its slot still do', async (t) => {
  const expired: string[] = [];
  const deadlines = new Deadlines<Item>(10, (it) => expired.push(it.name));
  let kept = item('kept', 20);
  let answered = item('answered', 20);
  // Two adds a few microseconds apart can straddle a slot boundary: then try again.
  for (let attempt = 0; attempt < 20; attempt++) {
    kept = item('kept', 20);
    answered = item('answered', 20);
    deadlines.add(kept, 20);
    deadlines.add(answered, 20);
    if (kept.deadline === answered.deadline) break;
    Deadlines.remove(kept);
    Deadlines.remove(answered);
  }
  t.equal(kept.deadline, answered.deadline, 'same slot');
  Deadlines.remove(answered);
  Deadlines.remove(answered); // twice is harmless
  t.equal(answered.deadline, undefined);
  await sleep(80);
  t.same(expired, ['kept']);
  deadlines.clear();
});

t.test('an earlier deadline re-arms the timer; clear stops everything', async (t) => {
  const expired: string[] = [];
  const deadlines = new Deadlines<Item>(10, (it) => expired.push(it.name));
  deadlines.add(item('late', 10_000), 10_000);
  deadlines.add(item('soon', 15), 15);
  await sleep(60);
  t.same(expired, ['soon'], 'the later deadline did not hold the earlier one back');
  const never = item('never', 20);
  deadlines.add(never, 20);
  deadlines.clear();
  t.equal(never.deadline, undefined);
  await sleep(60);
  t.same(expired, ['soon'], 'nothing expires after clear');
});

t.test('rejects a slot of zero', async (t) => {
  t.throws(() => new Deadlines<Item>(0, () => undefined), RangeError);
});

t.test('a timeout past setTimeout\'s limit (2^31-1 ms) waits instead of spinning', async (t) => {
  const warnings: string[] = [];
  const onWarning = (w: Error): void => {
    warnings.push(w.name);
  };
  process.on('warning', onWarning);
  const expired: string[] = [];
  const deadlines = new Deadlines<Item>(10, (it) => expired.push(it.name));
  deadlines.add(item('far', 3e9), 3e9);
  deadlines.add(item('near', 20), 20);
  await sleep(100);
  process.off('warning', onWarning);
  t.same(expired, ['near']);
  t.same(warnings, [], 'no TimeoutOverflowWarning: the timer is capped, not set past the limit');
  deadlines.clear();
});

t.test('slots emptied by answers need no wake-up, and a slot emptied then reused still expires', async (t) => {
  const expired: string[] = [];
  const original = globalThis.setTimeout;
  let armed = 0;
  globalThis.setTimeout = ((...args: Parameters<typeof setTimeout>) => {
    armed++;
    return original(...args);
  }) as typeof setTimeout;
  const deadlines = new Deadlines<Item>(10, (it) => expired.push(it.name));
  try {
    const a = item('a', 20);
    const b = item('b', 40);
    deadlines.add(a, 20);
    deadlines.add(b, 40);
    deadlines.add(item('c', 150), 150);
    Deadlines.remove(a);
    Deadlines.remove(b);
    await sleep(100);
    // One timer for a's slot (which finds it empty and skips b's, also empty), one for c's.
    t.ok(armed <= 2, `armed ${armed} times for 3 slots, 2 of them emptied`);
    t.same(expired, []);
    await sleep(120);
    t.same(expired, ['c']);
    const again = item('again', 10);
    deadlines.add(again, 10);
    Deadlines.remove(again);
    const reused = item('reused', 10);
    deadlines.add(reused, 10);
    await sleep(60);
    t.same(expired, ['c', 'reused']);
  } finally {
    globalThis.setTimeout = original;
    deadlines.clear();
  }
});
