// Coordination across active centers, through etcd: who leads each partition group, in which
// epoch, with which in-sync replicas. We never write our own consensus: every change is a
// compare-and-swap transaction in etcd, and leadership is a key attached to the leader center's
// lease, so it disappears when the center stops renewing (docs/replication.md).
//
// Per partition group `g`, under `/keel/<cluster>/group/<g>/`:
// - `state`: {epoch, leader, isr, min_isr} (JSON), changed only by CAS on its mod revision;
// - `leader`: the leader center's name, attached to its lease.
//
// Fencing: a leader must stop acknowledging before its lease can expire, even if it is paused or
// cut off and has not heard of its loss (NOTES.md: a SIGSTOPped leader learns it only after it
// resumes). etcd starts a lease's TTL again when it processes a keepalive, which is after we sent
// it; so after a keepalive sent at t succeeds, the lease lives at least until t + TTL. `mayLead()`
// is true only before t + TTL - margin, by this process's monotonic clock.

import { Etcd3, type Lease } from 'etcd3';
import { noop } from 'cockatiel';

export interface GroupState {
  epoch: number;
  leader: string;
  /** In-sync replicas (centers), the leader included. */
  isr: string[];
  /** Below this many in-sync replicas, writes are refused. */
  min_isr: number;
}

export interface CoordinatorOptions {
  endpoints: string[];
  cluster: string;
  /** This center's name. */
  center: string;
  /** The leader lease's TTL: at least 2 s (etcd's minimum for a 1 s election timeout). */
  lease_ttl_s: number;
  /** Stop leading this long before the lease could expire (clock drift, scheduling). */
  fence_margin_ms?: number;
  /** Monotonic milliseconds (tests may substitute). */
  now_ms?: () => number;
}

/** Where a live center serves, as it announced itself. */
export interface CenterInfo {
  gateway: string;
  replication: string;
  /** null when its metrics are off. */
  metrics: string | null;
}

export interface ClusterView {
  cluster: string;
  /** Partition group 0 (the whole engine in this release): null before any center started. */
  state: GroupState | null;
  /** The center whose live lease holds leadership, or null (none: a takeover is due). */
  live_leader: string | null;
  /** Centers alive now (their lease holds their announcement). */
  centers: Record<string, CenterInfo>;
}

/** Reads a cluster's coordination state without joining it (no lease): for `keel cluster status`. */
export async function inspectCluster(endpoints: string[], cluster: string): Promise<ClusterView> {
  const client = new Etcd3({ hosts: endpoints, dialTimeout: 2_000, faultHandling: { host: () => noop, global: noop }, defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + 3_000 }) });
  try {
    const root = `/keel/${cluster}/`;
    const state_text = await client.get(`${root}group/0/state`).string();
    const live_leader = await client.get(`${root}group/0/leader`).string();
    const announced = await client.getAll().prefix(`${root}center/`).strings();
    const centers: Record<string, CenterInfo> = {};
    for (const [key, value] of Object.entries(announced)) centers[key.slice(`${root}center/`.length)] = JSON.parse(value) as CenterInfo;
    return { cluster, state: state_text === null ? null : parseState(state_text), live_leader, centers };
  } finally {
    client.close();
  }
}

export type ChangeResult = { ok: true; state: GroupState } | { ok: false; reason: string; state: GroupState | null };
/** A takeover also says under which lease generation the leadership was taken (it ends with it). */
export type TakeOverResult = { ok: true; state: GroupState; generation: number } | { ok: false; reason: string; state: GroupState | null };

export class Coordinator {
  readonly center: string;
  private readonly client: Etcd3;
  private lease: Lease;
  private lease_id: string;
  private readonly prefix: string;
  private readonly root: string;
  private readonly ttl_ms: number;
  private readonly margin_ms: number;
  private readonly now_ms: () => number;
  /** Send times of keepalives not yet answered, oldest first. */
  private readonly fired: number[] = [];
  private serving_until_ms: number;
  private lost = false;
  private readonly ttl_s: number;
  private generation = 1;
  private renewing = false;
  private closed = false;
  private announced: CenterInfo | null = null;

  private constructor(options: CoordinatorOptions, client: Etcd3, lease: Lease, lease_id: string, granted_from_ms: number) {
    this.center = options.center;
    this.client = client;
    this.lease = lease;
    this.lease_id = lease_id;
    this.ttl_s = options.lease_ttl_s;
    this.prefix = `/keel/${options.cluster}/group/`;
    this.root = `/keel/${options.cluster}/`;
    this.ttl_ms = options.lease_ttl_s * 1000;
    this.margin_ms = options.fence_margin_ms ?? 500;
    this.now_ms = options.now_ms ?? (() => performance.now());
    this.serving_until_ms = granted_from_ms + this.ttl_ms - this.margin_ms;
    this.watchLease(lease, this.generation);
  }

  private watchLease(lease: Lease, generation: number): void {
    const current = (): boolean => generation === this.generation;
    lease.on('keepaliveFired', () => current() && this.fired.push(this.now_ms()));
    lease.on('keepaliveSucceeded', () => {
      if (!current()) return;
      const sent = this.fired.shift();
      if (sent !== undefined) this.serving_until_ms = Math.max(this.serving_until_ms, sent + this.ttl_ms - this.margin_ms);
    });
    lease.on('keepaliveFailed', () => current() && this.fired.shift());
    lease.on('lost', () => {
      if (!current()) return;
      this.lost = true;
      this.serving_until_ms = 0;
      // Whatever this lease held (leadership, the announcement) is gone with it. The center goes
      // on with a new lease: it may lead again, but only by a new takeover (a new generation).
      void this.renewLease();
    });
  }

  /** After a lost lease (frozen or cut off past its TTL): a new one, retried until it is granted. */
  private async renewLease(): Promise<void> {
    if (this.renewing || this.closed) return;
    this.renewing = true;
    try {
      while (!this.closed) {
        try {
          const before = this.now_ms();
          const lease = this.client.lease(this.ttl_s);
          const id = await lease.grant();
          if (this.closed) {
            lease.release();
            return;
          }
          this.generation++;
          this.lease.release();
          this.lease = lease;
          this.lease_id = id;
          this.fired.length = 0;
          this.lost = false;
          this.serving_until_ms = before + this.ttl_ms - this.margin_ms;
          this.watchLease(lease, this.generation);
          if (this.announced !== null) await this.announce(this.announced).catch(() => undefined);
          return;
        } catch {
          await new Promise((resolve) => setTimeout(resolve, 500));
        }
      }
    } finally {
      this.renewing = false;
    }
  }

  /**
   * Which lease this center holds: a leadership taken under one generation ends with it (a new
   * lease after a lost one is a new generation, and leads only after a new takeover).
   */
  get lease_generation(): number {
    return this.generation;
  }

  static async open(options: CoordinatorOptions): Promise<Coordinator> {
    if (!Number.isInteger(options.lease_ttl_s) || options.lease_ttl_s < 2) throw new RangeError('lease_ttl_s must be an integer of at least 2');
    if (!/^[a-z0-9][a-z0-9_-]{0,62}$/.test(options.center)) throw new RangeError(`center name ${JSON.stringify(options.center)}: use a-z, 0-9, _ and -`);
    // NOTES.md: the default circuit breaker refuses every call for 5 s after 3 failures. Fencing
    // has its own clock, so calls simply fail and the caller decides.
    const client = new Etcd3({
      hosts: options.endpoints,
      dialTimeout: 2_000,
      faultHandling: { host: () => noop, global: noop },
      defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + 2_000 }),
    });
    const now_ms = options.now_ms ?? (() => performance.now());
    const before_grant = now_ms();
    const lease = client.lease(options.lease_ttl_s);
    let lease_id: string;
    try {
      lease_id = await lease.grant();
    } catch (error) {
      lease.release();
      client.close();
      throw error;
    }
    return new Coordinator(options, client, lease, lease_id, before_grant);
  }

  /**
   * Whether this center may still act as a leader: its lease cannot have expired yet. Check it
   * right before every acknowledgement.
   */
  mayLead(generation?: number): boolean {
    if (generation !== undefined && generation !== this.generation) return false;
    return !this.lost && this.now_ms() < this.serving_until_ms;
  }

  /** Milliseconds of leadership left before this center must fence itself (0 when none). */
  get lead_left_ms(): number {
    return this.lost ? 0 : Math.max(0, this.serving_until_ms - this.now_ms());
  }

  async read(group: number): Promise<{ state: GroupState; revision: string } | null> {
    const response = await this.client.get(this.key(group, 'state')).exec();
    const kv = response.kvs[0];
    if (kv === undefined) return null;
    return { state: parseState(kv.value.toString()), revision: String(kv.mod_revision) };
  }

  /** The center holding the group's leader key (alive lease), or null. */
  async liveLeader(group: number): Promise<string | null> {
    return this.client.get(this.key(group, 'leader')).string();
  }

  /** Creates the group's state if it has none (first start of a cluster); epoch 0, no leader. */
  async initialize(group: number, isr: string[], min_isr: number): Promise<ChangeResult> {
    if (isr.length === 0 || min_isr < 1 || min_isr > isr.length) throw new RangeError('need 1 <= min_isr <= isr.length');
    const state: GroupState = { epoch: 0, leader: '', isr: [...isr].sort(), min_isr };
    const result = await this.client.if(this.key(group, 'state'), 'Create', '==', 0).then(this.client.put(this.key(group, 'state')).value(JSON.stringify(state))).commit();
    if (result.succeeded) return { ok: true, state };
    const current = await this.read(group);
    return { ok: false, reason: 'the group already exists', state: current?.state ?? null };
  }

  /**
   * Takes the group's leadership with epoch+1: only a member of the in-sync set may, and only
   * when no live lease holds the leader key (the old leader's lease expired, or it resigned).
   */
  async takeOver(group: number): Promise<TakeOverResult> {
    // The leadership is bound to the lease held when the takeover began. Should that lease be
    // replaced meanwhile, etcd refuses the old lease id, or the check after the commit does.
    const generation = this.generation;
    const lease_id = this.lease_id;
    const current = await this.read(group);
    if (current === null) return { ok: false, reason: 'the group does not exist', state: null };
    if (!current.state.isr.includes(this.center)) return { ok: false, reason: `${this.center} is not in the in-sync set`, state: current.state };
    if (!this.mayLead(generation)) return { ok: false, reason: 'this center cannot renew its lease (or it was replaced)', state: current.state };
    // The previous leader's lease ran out (or it resigned): it leaves the in-sync set with its
    // leadership, so that commit does not wait for it; it rejoins once it has caught up.
    const isr = current.state.isr.filter((member) => member === this.center || member !== current.state.leader);
    const next: GroupState = { ...current.state, epoch: current.state.epoch + 1, leader: this.center, isr };
    const result = await this.client
      .if(this.key(group, 'state'), 'Mod', '==', current.revision)
      .and(this.key(group, 'leader'), 'Create', '==', 0)
      .then(this.client.put(this.key(group, 'state')).value(JSON.stringify(next)), this.client.put(this.key(group, 'leader')).value(this.center).lease(lease_id))
      .commit();
    if (result.succeeded && generation === this.generation) return { ok: true, state: next, generation };
    // Taken under a lease that is gone: the leader key went (or goes) with it, and a new takeover
    // with the new lease raises the epoch again.
    if (result.succeeded) return { ok: false, reason: 'the lease was replaced during the takeover', state: next };
    const after = await this.read(group);
    return { ok: false, reason: 'another center leads, or the state changed', state: after?.state ?? null };
  }

  /**
   * The leader changes the in-sync set (a lagging replica out, a caught-up one back in), guarded
   * by its epoch: a deposed leader's change fails.
   */
  async setIsr(group: number, epoch: number, isr: string[]): Promise<ChangeResult> {
    const current = await this.read(group);
    if (current === null) return { ok: false, reason: 'the group does not exist', state: null };
    const state = current.state;
    if (state.epoch !== epoch || state.leader !== this.center) return { ok: false, reason: `epoch ${epoch} of ${this.center} is not the current one`, state };
    if (!isr.includes(this.center)) return { ok: false, reason: 'the leader stays in its in-sync set', state };
    if (!this.mayLead()) return { ok: false, reason: 'this center cannot renew its lease', state };
    const next: GroupState = { ...state, isr: [...new Set(isr)].sort() };
    const result = await this.client
      .if(this.key(group, 'state'), 'Mod', '==', current.revision)
      .and(this.key(group, 'leader'), 'Value', '==', this.center)
      .then(this.client.put(this.key(group, 'state')).value(JSON.stringify(next)))
      .commit();
    if (result.succeeded) return { ok: true, state: next };
    const after = await this.read(group);
    return { ok: false, reason: 'the state changed meanwhile', state: after?.state ?? null };
  }

  /**
   * Publishes where this center serves (gateway, replication, metrics) under its lease: the key
   * lives exactly as long as the center does, so operators see which centers are alive.
   */
  async announce(info: CenterInfo): Promise<void> {
    this.announced = info;
    await this.client.put(`${this.root}center/${this.center}`).value(JSON.stringify(info)).lease(this.lease_id).exec();
  }

  /** Calls `listener` with each new state of the group; returns a function that stops watching. */
  async watch(group: number, listener: (state: GroupState) => void): Promise<() => Promise<void>> {
    const watcher = await this.client.watch().key(this.key(group, 'state')).create();
    // A state that does not parse must not become an uncaught exception (etcd3 rethrows a
    // listener's error outside any promise): it is skipped, and the next put is read. A watch that
    // etcd cancels (after a compaction) ends: no error is thrown, and no change is heard after it.
    watcher.on('error', () => {});
    watcher.on('put', (kv) => {
      let state: GroupState;
      try {
        state = parseState(kv.value.toString());
      } catch {
        return;
      }
      listener(state);
    });
    return () => watcher.cancel();
  }

  /**
   * Gives up leadership of `group` now (deletes the leader key, if this center's own lease holds
   * it), so an in-sync center can take over without waiting for the lease to run out. A key held
   * by another lease (a previous life of this center) is left to expire.
   */
  async resign(group: number): Promise<boolean> {
    const result = await this.client
      .if(this.key(group, 'leader'), 'Lease', '==', this.lease_id)
      .then(this.client.delete().key(this.key(group, 'leader')))
      .commit();
    return result.succeeded;
  }

  /** Resigns every leadership (revokes the lease: followers may take over at once) and disconnects. */
  async close(): Promise<void> {
    this.closed = true;
    this.serving_until_ms = 0;
    try {
      await this.lease.revoke();
    } catch {
      // The lease expires on its own within its TTL.
    }
    this.client.close();
  }

  /** Disconnects without revoking: the lease expires within its TTL, as after a crash (tests). */
  abandon(): void {
    this.closed = true;
    this.serving_until_ms = 0;
    this.lease.release();
    this.client.close();
  }

  private key(group: number, leaf: 'state' | 'leader'): string {
    if (!Number.isInteger(group) || group < 0) throw new RangeError(`partition group ${group}`);
    return `${this.prefix}${group}/${leaf}`;
  }
}

function parseState(text: string): GroupState {
  const value = JSON.parse(text) as Partial<GroupState>;
  if (
    typeof value.epoch !== 'number' ||
    typeof value.leader !== 'string' ||
    !Array.isArray(value.isr) ||
    !value.isr.every((m) => typeof m === 'string') ||
    typeof value.min_isr !== 'number'
  ) {
    throw new Error(`malformed partition group state in etcd: ${text}`);
  }
  return { epoch: value.epoch, leader: value.leader, isr: value.isr, min_isr: value.min_isr };
}
