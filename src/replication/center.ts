// One center of a cluster (docs/replication.md): its engine either leads (serves writes, ships
// its log, acknowledges what every in-sync replica holds) or follows the leader named in etcd
// (appends and applies the leader's entries, serves reads). Every role change reopens the engine
// in its new role: recovery, roll-forward of cross-shard groups, the sequencer and the id filters
// then start from the log as it stands, exactly as after a restart.
//
// The whole engine is one partition group (group 0) in this first slice: leadership moves between
// centers as a whole.

import { createServer, type Server } from 'node:http';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { WebSocketServer, type WebSocket } from 'ws';
import { Engine, type EngineOptions } from '../shard/engine.ts';
import type { LogHeadWire, ShardResult } from '../shard/messages.ts';
import type { MetricsJson } from '../metrics/shard.ts';
import type { AccountFilter, QueryFilter } from '../ledger/types.ts';
import { LogOp, LogStore, decodeEntry, entryHeader } from '../storage/log.ts';
import { groupEntryHeader } from '../shard/group.ts';
import type { ClusterSnapshot } from '../metrics/cluster.ts';
import { ACCOUNT_INPUT_BYTES, TRANSFER_BYTES } from '../storage/codec.ts';
import { EVENTS_PER_REQUEST_MAX } from '../ledger/types.ts';
import { CheckpointStore } from '../storage/checkpoint.ts';
import { Coordinator, type GroupState } from './coordinator.ts';
import { ReplicaLeader } from './leader.ts';
import { ReplicaFollower } from './follower.ts';
import { FOLLOWER_FRAME_BYTES_MAX, REPLICATION_PATH, SNAPSHOT_PART_BYTES, decodeMessage, encodeMessage, type FollowerMessage } from './wire.ts';

export interface ClusterOptions {
  cluster: string;
  center: string;
  /** Every other center: name → replication address (host:port). */
  peers: Record<string, string>;
  etcd_endpoints: string[];
  /** Shared by the cluster's centers; a follower presents it to the leader. */
  secret: string;
  replication_host: string;
  replication_port: number;
  /** Writes are refused while fewer centers than this are in sync. */
  min_insync: number;
  lease_ttl_s: number;
  /** A follower behind this long leaves the in-sync set. */
  lag_max_ms?: number;
}

export interface CenterOptions {
  engine: Omit<EngineOptions, 'replication'>;
  cluster: ClusterOptions;
  on_event?: (event: string, fields: Record<string, unknown>) => void;
  /** An error of the replication server once listening (logged at error; the center serves on). */
  on_error?: (event: string, fields: Record<string, unknown>) => void;
  /** How long a start keeps trying to reach etcd before it gives up. Default 60 s. */
  join_timeout_ms?: number;
  /** The center cannot go on (storage failed, etcd state malformed): exit and restart it. */
  on_fatal: (message: string) => void;
}

const GROUP = 0;
/** Under a center's data directory: checkpoint copies being received, and being sent. */
const REBUILD_DIR = '.rebuild';
const SNAPSHOTS_DIR = '.snapshots';
const POLL_MS = 200;

export type CenterRole = 'leader' | 'follower' | 'changing';

export interface CenterStatus {
  center: string;
  role: CenterRole;
  epoch: number;
  leader: string;
  isr: string[];
  min_isr: number;
  commit: number[];
  /** Leader only: per follower, entries and seconds behind. */
  lag: Record<string, { entries: number | null; seconds: number }>;
}

export class Center {
  readonly options: CenterOptions;
  private readonly coordinator: Coordinator;
  private readonly server: Server;
  private readonly wss: WebSocketServer;
  private engine: Engine | null = null;
  private role: CenterRole = 'changing';
  private leader: ReplicaLeader | null = null;
  private follower: ReplicaFollower | null = null;
  private state: GroupState;
  /** The newest epoch seen (etcd or a leader's welcome). */
  private transition: Promise<void> = Promise.resolve();
  private poll: NodeJS.Timeout | null = null;
  private closed = false;
  private polling = false;
  private readonly committed_listeners = new Set<(shard: number) => void>();
  private engine_unlisten: (() => void) | null = null;
  /** The failure of the last engine closed, for `failed` once there is none. */
  private closed_engine_failure: string | null = null;
  readonly stats = { failovers: 0, truncations: 0, rebuilds: 0 };

  private constructor(options: CenterOptions, coordinator: Coordinator, server: Server, wss: WebSocketServer, state: GroupState) {
    this.options = options;
    this.coordinator = coordinator;
    this.server = server;
    this.wss = wss;
    this.state = state;
    wss.on('connection', (ws) => this.onConnection(ws));
  }

  /**
   * Joins the cluster: creates the group in etcd on a first start (every center in sync), opens
   * the replication port and the engine as a follower, then leads or follows as etcd says.
   */
  static async start(options: CenterOptions): Promise<Center> {
    const cluster = options.cluster;
    if (cluster.secret.length < 16) throw new RangeError('the cluster secret must be at least 16 characters (KEEL_CLUSTER_SECRET)');
    const members = [cluster.center, ...Object.keys(cluster.peers)];
    if (new Set(members).size !== members.length) throw new RangeError('a peer has this center\'s name, or two peers share one');
    if (!Number.isInteger(cluster.min_insync) || cluster.min_insync < 1 || cluster.min_insync > members.length) {
      throw new RangeError(`min in-sync must be between 1 and the number of centers (${members.length})`);
    }
    // etcd may be starting, or slow for a moment: a center keeps trying to join for a while.
    const deadline = performance.now() + (options.join_timeout_ms ?? 60_000);
    let coordinator: Coordinator;
    let state: GroupState;
    for (let attempt = 1; ; attempt++) {
      let opened: Coordinator | null = null;
      try {
        opened = await Coordinator.open({ endpoints: cluster.etcd_endpoints, cluster: cluster.cluster, center: cluster.center, lease_ttl_s: cluster.lease_ttl_s });
        const created = await opened.initialize(GROUP, members, cluster.min_insync);
        if (created.state === null) throw new Error('the cluster state in etcd could not be read');
        state = created.state;
        coordinator = opened;
        break;
      } catch (error) {
        opened?.abandon();
        if (performance.now() > deadline) throw new Error(`cannot join the cluster through etcd ${cluster.etcd_endpoints.join(',')}: ${(error as Error).message}`);
        options.on_event?.('waiting for etcd', { center: cluster.center, attempt, error: (error as Error).message });
        await new Promise((resolve) => setTimeout(resolve, Math.min(2_000, 100 * attempt)));
      }
    }
    if (!state.isr.every((m) => members.includes(m))) {
      coordinator.abandon();
      throw new Error(`etcd names centers ${state.isr.join(', ')} in sync, not all of them configured here (${members.join(', ')}); check --peers`);
    }
    const server = createServer((_, response) => response.writeHead(426).end('replication speaks WebSocket\n'));
    // What followers send is small (hello, acks, forwarded writes of one request): a small bound.
    const wss = new WebSocketServer({ server, path: REPLICATION_PATH, maxPayload: FOLLOWER_FRAME_BYTES_MAX });
    // ws re-emits the HTTP server's errors on itself: without a listener a port already in use
    // would crash the process instead of failing the start below with a reason. (The server's
    // own listeners below report them.)
    wss.on('error', () => {});
    await new Promise<void>((resolve, reject) => {
      const failed = (error: NodeJS.ErrnoException): void => {
        coordinator.abandon();
        const why = error.code === 'EADDRINUSE' ? 'the address is in use (another process, or another center, listens there)' : error.message;
        reject(new Error(`cannot listen for replication on ${cluster.replication_host}:${cluster.replication_port}: ${why}; free it or choose another --replication-port`));
      };
      server.once('error', failed);
      server.listen(cluster.replication_port, cluster.replication_host, () => {
        server.off('error', failed);
        // Also heard once ws stops forwarding the server's errors (wss.close() at shutdown).
        server.on('error', (error) => options.on_error?.('replication server error', { center: cluster.center, error: error.message }));
        resolve();
      });
    });
    const center = new Center(options, coordinator, server, wss, state);
    try {
      await center.openEngine('follower', 1);
      // (The data directory is locked now.) Leftovers of a crash: checkpoint copies being sent
      // or received; a rebuild starts over.
      rmSync(join(options.engine.data_dir, SNAPSHOTS_DIR), { recursive: true, force: true });
      rmSync(join(options.engine.data_dir, REBUILD_DIR), { recursive: true, force: true });
      center.role = 'follower';
      await center.check();
      center.poll = setInterval(() => void center.check(), POLL_MS);
      center.poll.unref();
    } catch (error) {
      await center.close();
      throw error;
    }
    return center;
  }

  /** Publishes this center's addresses in etcd for as long as it lives (keel cluster status). */
  announce(info: { gateway: string; metrics: string | null }): Promise<void> {
    return this.coordinator.announce({ ...info, replication: this.replication_address });
  }

  /** The replication address this center listens on (host:port). */
  get replication_address(): string {
    const address = this.server.address();
    return typeof address === 'object' && address !== null ? `${this.options.cluster.replication_host}:${address.port}` : '';
  }

  status(): CenterStatus {
    return {
      center: this.options.cluster.center,
      role: this.role,
      epoch: this.leader?.epoch ?? this.state.epoch,
      leader: this.state.leader,
      isr: this.leader !== null ? [...this.leader.isr].sort() : this.state.isr,
      min_isr: this.state.min_isr,
      commit: this.leader !== null ? [...this.leader.commits] : this.follower !== null ? [...this.follower.commit] : [],
      lag: this.leader?.lag() ?? {},
    };
  }

  /** What the cluster metrics report (src/metrics/cluster.ts). */
  metricsSnapshot(): ClusterSnapshot {
    const status = this.status();
    return {
      leading: status.role === 'leader',
      epoch: Math.max(status.epoch, this.state.epoch),
      isr_size: status.isr.length,
      min_isr: status.min_isr,
      commit: status.commit,
      lag: status.lag,
      takeovers: this.stats.failovers,
      truncations: this.stats.truncations,
      rebuilds: this.stats.rebuilds,
    };
  }

  private event(event: string, fields: Record<string, unknown> = {}): void {
    this.options.on_event?.(event, { center: this.options.cluster.center, ...fields });
  }

  // ---------------------------------------------------------------------------------------------
  // Roles

  /** Looks at etcd: takes over when no live leader holds the group, follows the one that does. */
  private async check(): Promise<void> {
    if (this.closed || this.polling) return;
    this.polling = true;
    try {
      await this.transition;
      if (this.closed) return;
      const read = await this.coordinator.read(GROUP);
      if (read === null) return this.options.on_fatal('the cluster state disappeared from etcd');
      this.state = read.state;
      if (this.role === 'leader') {
        if (read.state.leader !== this.options.cluster.center || read.state.epoch !== this.leader?.epoch) this.stepDown(`epoch ${read.state.epoch} is led by ${read.state.leader}`);
        return;
      }
      const live = await this.coordinator.liveLeader(GROUP);
      if (live === null) {
        if (!read.state.isr.includes(this.options.cluster.center)) return; // only an in-sync replica may lead
        const taken = await this.coordinator.takeOver(GROUP);
        if (taken.ok) {
          this.state = taken.state;
          this.lead_generation = taken.generation;
          await this.become('leader', taken.state.epoch);
        } else if (taken.reason !== this.last_refusal) {
          this.event('takeover refused', { reason: taken.reason });
        }
        this.last_refusal = taken.ok ? '' : taken.reason;
        return;
      }
      if (live === this.options.cluster.center) {
        // Not leading, yet the key names this center: give it up if this life's lease holds it
        // (a resign that failed); a previous life's lease is left to expire.
        await this.coordinator.resign(GROUP);
        return;
      }
      if (this.follower === null || this.follower.leader !== live) await this.follow(live);
    } catch (error) {
      this.event('etcd check failed', { error: (error as Error).message });
    } finally {
      this.polling = false;
    }
  }

  private async follow(leader: string): Promise<void> {
    const address = this.options.cluster.peers[leader];
    const engine = this.engine;
    if (address === undefined || engine === null || this.role !== 'follower') return;
    this.follower?.close();
    this.follower = null;
    // Hello says where the logs stand durably: the leader counts that much as held here.
    const heads = await engine.durableHeads();
    if (this.engine !== engine || this.role !== 'follower' || this.follower !== null || this.closed) return;
    const cluster = this.options.cluster;
    const follower: ReplicaFollower = new ReplicaFollower(
      {
        engine,
        leader_address: address,
        leader,
        cluster: cluster.cluster,
        secret: cluster.secret,
        center: cluster.center,
        epoch: this.state.epoch,
        on_truncate: (agree) => this.truncate(agree),
        staging_dir: join(this.options.engine.data_dir, REBUILD_DIR),
        on_rebuilt: (shards) => this.rebuilt(shards),
        on_end: (reason) => {
          if (this.follower === follower) this.follower = null;
          this.event('stopped following', { leader, reason });
          if (reason.startsWith('reopen:')) this.reopen('follower');
        },
        on_event: (event, fields) => this.event(event, fields),
      },
      heads,
    );
    this.follower = follower;
  }

  private become(role: 'leader' | 'follower', epoch: number): Promise<void> {
    this.transition = this.transition.then(async () => {
      if (this.closed) return;
      this.role = 'changing';
      this.follower?.close();
      this.follower = null;
      this.leader?.stop();
      this.leader = null;
      // A follower's engine is promoted in place (fast: no recovery); anything else reopens.
      const promotable = role === 'leader' && this.engine !== null && this.engine.follower && this.engine.failed === null;
      if (!promotable) await this.closeEngine();
      if (role === 'leader') {
        const started = performance.now();
        const leader = new ReplicaLeader({
          coordinator: this.coordinator,
          group: GROUP,
          state: this.state,
          generation: this.lead_generation,
          shard_count: this.options.engine.shards,
          lag_max_ms: this.options.cluster.lag_max_ms ?? 2_000,
          on_deposed: (reason) => this.stepDown(reason),
          on_event: (event, fields) => this.event(event, fields),
        });
        this.leader = leader;
        let in_place = promotable;
        let cut_entries = 0;
        if (promotable) {
          try {
            cut_entries = (await this.engine!.promote(epoch)).cut_entries;
          } catch (error) {
            in_place = false;
            this.event('promotion in place failed; reopening', { error: (error as Error).message });
            await this.closeEngine();
            await this.openEngine('leader', epoch);
          }
        } else {
          await this.openEngine('leader', epoch);
        }
        const engine = this.engine!;
        const groups = await Promise.all(Array.from({ length: this.shard_count }, (_, shard) => engine.groupPositions(shard, engine.committed(shard) + 1)));
        leader.attach(engine, groups);
        this.stats.failovers++;
        this.event('leading', { epoch, isr: this.state.isr, in_place, cut_entries, ready_ms: Math.round(performance.now() - started) });
      } else {
        await this.openEngine('follower', 1);
      }
      this.role = role;
    });
    return this.transition.catch((error: unknown) => this.options.on_fatal(`cannot become ${role}: ${(error as Error).message}`));
  }

  /**
   * Stops leading (also while the leadership is still being set up): no more commits, the leader
   * key is given up so an in-sync center can take over at once, and the engine reopens as a
   * follower.
   */
  private stepDown(reason: string): void {
    const leader = this.leader;
    if (leader === null || this.stepping_down) return;
    this.stepping_down = true;
    this.event('stepping down', { reason });
    leader.stop();
    void this.coordinator.resign(GROUP).catch(() => false);
    void this.become('follower', 1)
      .finally(() => {
        this.stepping_down = false;
      })
      .then(() => this.check());
  }

  private stepping_down = false;
  /** The lease generation the current leadership was taken under. */
  private lead_generation = 0;
  /** The last reason a takeover was refused (logged once per reason). */
  private last_refusal = '';

  private reopen(role: 'follower'): void {
    void this.become(role, 1).then(() => this.check());
  }

  /** Truncates every shard's log past where it agrees with the leader, then follows again. */
  private truncate(agree: number[]): void {
    this.offline('cannot truncate to the leader\'s log', async () => {
      for (let shard = 0; shard < agree.length; shard++) {
        const dir = join(this.options.engine.data_dir, `shard-${shard}`);
        const checkpoints = CheckpointStore.open(join(dir, 'state'));
        const meta = checkpoints.readMeta();
        await checkpoints.close();
        if (meta !== null && meta.position > agree[shard]) {
          throw new Error(`shard ${shard}'s checkpoint at ${meta.position} is past where its log agrees with the leader (${agree[shard]}); wipe this center's data directory (keep tokens.json) and restart it: it rebuilds from the leader's checkpoint`);
        }
        const log = LogStore.open({ path: join(dir, 'log') });
        const removed = await log.truncateFrom(agree[shard] + 1);
        await log.close();
        if (removed > 0) this.event('truncated a divergent log tail', { shard, from: agree[shard] + 1, entries: removed });
      }
      this.stats.truncations++;
    });
  }

  /**
   * Closes the engine, changes its files with `work`, and reopens it as a follower, in the
   * transition chain; a failure is fatal (`failing` says what could not be done).
   */
  private offline(failing: string, work: () => Promise<void>): void {
    this.transition = this.transition.then(async () => {
      this.role = 'changing';
      this.follower = null;
      await this.closeEngine();
      await work();
      await this.openEngine('follower', 1);
      this.role = 'follower';
    });
    void this.transition.then(
      () => this.check(),
      (error: unknown) => this.options.on_fatal(`${failing}: ${(error as Error).message}`),
    );
  }

  /**
   * Swaps in the leader's checkpoint copies staged for these shards (engine closed): each shard's
   * state becomes the copy and its log starts at the entry the copy summarises; the leader then
   * ships what follows. Everything else of the shard (its old log and state) is discarded.
   */
  private rebuilt(shards: Array<{ shard: number; entry: Uint8Array }>): void {
    this.offline('cannot rebuild from the leader\'s checkpoint', async () => {
      const staging = join(this.options.engine.data_dir, REBUILD_DIR);
      for (const { shard, entry } of shards) {
        // The new shard is built whole beside the old one (state, and a log seeded with the
        // entry the state summarises), then swapped in by renames. A crash between them leaves
        // no shard directory: the shard starts empty, a valid (out of sync) follower.
        const staged = join(staging, `shard-${shard}`);
        const parsed = decodeEntry(entry, undefined);
        const log = LogStore.open({ path: join(staged, 'log') });
        try {
          await log.seed(entry, parsed.op === LogOp.group ? groupEntryHeader(parsed.body).gid : 0);
        } finally {
          await log.close();
        }
        const dir = join(this.options.engine.data_dir, `shard-${shard}`);
        const old = join(staging, `shard-${shard}.old`);
        if (existsSync(dir)) renameSync(dir, old);
        renameSync(staged, dir);
        rmSync(old, { recursive: true, force: true });
        this.event('rebuilt a shard from the leader\'s checkpoint', { shard, position: parsed.position });
      }
      rmSync(staging, { recursive: true, force: true });
      this.stats.rebuilds++;
    });
  }

  /** A follower asked for shard `shard`'s checkpoint: copy it and stream it, then the entry it summarises. */
  private async sendSnapshot(ws: WebSocket, shard: number): Promise<void> {
    const engine = this.engine;
    const fail = (message: string): void => {
      if (ws.readyState === ws.OPEN) ws.send(encodeMessage({ t: 'snapshot_failed', shard, message }));
    };
    if (engine === null || this.role !== 'leader' || !Number.isInteger(shard) || shard < 0 || shard >= this.shard_count) return fail('not the leader, or no such shard');
    const root = join(this.options.engine.data_dir, SNAPSHOTS_DIR);
    mkdirSync(root, { recursive: true });
    const dir = mkdtempSync(join(root, `shard-${shard}-`));
    try {
      await engine.snapshot(shard, dir);
      const copy = CheckpointStore.open(dir);
      const meta = copy.readMeta();
      await copy.close();
      if (meta === null) throw new Error('this shard has no checkpoint yet');
      const [entry] = await engine.storedEntries(shard, meta.position, 1);
      if (entry === undefined || entryHeader(entry).position !== meta.position) throw new Error(`the log no longer holds entry ${meta.position}, which the checkpoint summarises`);
      const file = openSync(join(dir, 'data.mdb'), 'r');
      let offset = 0;
      try {
        const buffer = Buffer.allocUnsafe(SNAPSHOT_PART_BYTES);
        for (;;) {
          const read = readSync(file, buffer, 0, buffer.byteLength, offset);
          if (read === 0) break;
          if (ws.readyState !== ws.OPEN) return;
          ws.send(encodeMessage({ t: 'snapshot_part', shard, offset, bytes: buffer.subarray(0, read) }));
          offset += read;
          // Bounded: wait for the socket to drain before reading more.
          while (ws.bufferedAmount > 4 * SNAPSHOT_PART_BYTES && ws.readyState === ws.OPEN) await new Promise((resolve) => setTimeout(resolve, 10));
        }
      } finally {
        closeSync(file);
      }
      if (ws.readyState === ws.OPEN) ws.send(encodeMessage({ t: 'snapshot_done', shard, total: offset, entry }));
      this.event('sent a checkpoint copy', { shard, position: meta.position, bytes: offset });
    } catch (error) {
      fail((error as Error).message);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  private async openEngine(role: 'leader' | 'follower', epoch: number): Promise<void> {
    const engine = await Engine.start({
      ...this.options.engine,
      replication: {
        role,
        epoch,
        on_entries: (shard, first, entries) => this.leader?.onEntries(shard, first, entries),
        on_replica: (shard, outcome) => this.follower?.onReplica(shard, outcome),
      },
    });
    this.engine = engine;
    this.engine_unlisten = engine.onCommitted((shard) => {
      for (const listener of this.committed_listeners) listener(shard);
    });
  }

  private async closeEngine(): Promise<void> {
    const engine = this.engine;
    this.engine = null;
    this.engine_unlisten?.();
    this.engine_unlisten = null;
    if (engine !== null) {
      await engine.close();
      this.closed_engine_failure = engine.failed;
    }
  }

  /** Why this center's engine stopped serving, if it did (also while or after it closed). */
  get failed(): string | null {
    return this.engine !== null ? this.engine.failed : this.closed_engine_failure;
  }

  private onConnection(ws: WebSocket): void {
    let hello = false;
    let center = '';
    const timer = setTimeout(() => ws.terminate(), 5_000);
    ws.on('message', (data: Buffer) => {
      const message = decodeMessage<FollowerMessage>(data);
      if (message === null) return ws.close(1008, 'malformed');
      if (!hello) {
        clearTimeout(timer);
        if (message.t !== 'hello') return ws.close(1008, 'hello first');
        const cluster = this.options.cluster;
        if (message.cluster !== cluster.cluster || message.secret !== cluster.secret) {
          ws.send(encodeMessage({ t: 'refuse', code: 'unauthorized', message: 'wrong cluster name or secret' }));
          return ws.close(1008, 'unauthorized');
        }
        if (!(message.center in cluster.peers)) {
          ws.send(encodeMessage({ t: 'refuse', code: 'bad_request', message: `${message.center} is not a configured peer` }));
          return ws.close(1008, 'unknown center');
        }
        hello = true;
        center = message.center;
        if (this.leader === null || this.role !== 'leader') {
          ws.send(encodeMessage({ t: 'refuse', code: 'not_leader', message: `${cluster.center} does not lead; etcd names ${this.state.leader}` }));
          return ws.close(1008, 'not leader');
        }
        void this.leader.accept(ws, center, message.epoch, message.heads);
        return;
      }
      if (message.t === 'ack') this.leader?.onAck(center, message.shard, message.position);
      else if (message.t === 'forward') this.runForwarded(ws, message);
      else if (message.t === 'snapshot') void this.sendSnapshot(ws, message.shard);
    });
    ws.on('error', () => ws.terminate());
  }

  /** A follower's door handed over a write: run it as this door would, answer on the same socket. */
  private runForwarded(ws: WebSocket, message: Extract<FollowerMessage, { t: 'forward' }>): void {
    const record_bytes = message.op === 'create_accounts' ? ACCOUNT_INPUT_BYTES : message.op === 'create_transfers' ? TRANSFER_BYTES : 0;
    const valid =
      record_bytes > 0 &&
      Number.isInteger(message.count) &&
      message.count >= 1 &&
      message.count <= EVENTS_PER_REQUEST_MAX &&
      message.body instanceof Uint8Array &&
      message.body.byteLength === message.count * record_bytes;
    let result: Promise<ShardResult>;
    try {
      result = !valid
      ? Promise.resolve({ error: 'internal', message: 'malformed forwarded write' })
      : this.role !== 'leader'
        ? Promise.resolve({ error: 'unavailable', message: `center ${this.options.cluster.center} no longer leads; retry` })
        : this.write(message.op, message.count, message.body);
    } catch (error) {
      result = Promise.resolve({ error: 'internal', message: `the leader could not run the forwarded write: ${(error as Error).message}` });
    }
    void result.then((answer) => {
      // A leader that stepped down meanwhile answers what its engine answered (unavailable).
      if (ws.readyState === ws.OPEN) ws.send(encodeMessage({ t: 'forwarded', id: message.id, result: answer }));
    });
  }

  // ---------------------------------------------------------------------------------------------
  // What the gateway and the metrics see: the engine in its current role.

  get shard_count(): number {
    return this.options.engine.shards;
  }

  private notServing(): Promise<ShardResult> {
    return Promise.resolve({ error: 'unavailable', message: `center ${this.options.cluster.center} is changing role; retry` });
  }

  private write(op: 'create_accounts' | 'create_transfers', count: number, body: Uint8Array): Promise<ShardResult> {
    const engine = this.engine;
    if (engine === null || this.role === 'changing') return this.notServing();
    if (this.role !== 'leader' || this.leader === null) {
      // Any door: a follower hands the write to the leader over its replication connection.
      if (this.follower !== null) return this.follower.forward(op, count, body);
      const leader = this.state.leader === '' ? 'none yet' : this.state.leader;
      return Promise.resolve({ error: 'unavailable', message: `center ${this.options.cluster.center} is not connected to the leader (${leader}); retry` });
    }
    if (!this.leader.writable) {
      return Promise.resolve({ error: 'unavailable', message: `only ${this.leader.isr.size} center(s) in sync, fewer than ${this.leader.min_isr}: writes are refused until a follower catches up` });
    }
    return op === 'create_accounts' ? engine.createAccounts(count, body) : engine.createTransfers(count, body);
  }

  private read(call: (engine: Engine) => Promise<ShardResult>): Promise<ShardResult> {
    const engine = this.engine;
    if (engine === null || this.role === 'changing') return this.notServing();
    return call(engine);
  }

  createAccounts(count: number, body: Uint8Array): Promise<ShardResult> {
    return this.write('create_accounts', count, body);
  }

  createTransfers(count: number, body: Uint8Array): Promise<ShardResult> {
    return this.write('create_transfers', count, body);
  }

  lookupAccounts(ids: bigint[]): Promise<ShardResult> {
    return this.read((engine) => engine.lookupAccounts(ids));
  }

  lookupTransfers(ids: bigint[]): Promise<ShardResult> {
    return this.read((engine) => engine.lookupTransfers(ids));
  }

  getAccountTransfers(filter: AccountFilter): Promise<ShardResult> {
    return this.read((engine) => engine.getAccountTransfers(filter));
  }

  getAccountBalances(filter: AccountFilter): Promise<ShardResult> {
    return this.read((engine) => engine.getAccountBalances(filter));
  }

  queryAccounts(filter: QueryFilter): Promise<ShardResult> {
    return this.read((engine) => engine.queryAccounts(filter));
  }

  queryTransfers(filter: QueryFilter): Promise<ShardResult> {
    return this.read((engine) => engine.queryTransfers(filter));
  }

  feedRead(shard: number, from: number, limit: number, ledgers: number[] | null): Promise<ShardResult> {
    return this.read((engine) => engine.feedRead(shard, from, limit, ledgers));
  }

  async waitForFeed(positions: readonly number[], timeout_ms: number): Promise<void> {
    const deadline = performance.now() + timeout_ms;
    for (;;) {
      const engine = this.engine;
      if (engine !== null && this.role !== 'changing') {
        const heads = await Promise.all(positions.map((_, shard) => engine.feedRead(shard, Number.MAX_SAFE_INTEGER, 0, null)));
        if (heads.every((result, shard) => 'feed' in result && result.feed.head >= positions[shard])) return;
      }
      if (performance.now() >= deadline) return;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  onCommitted(listener: (shard: number) => void): () => void {
    this.committed_listeners.add(listener);
    return () => this.committed_listeners.delete(listener);
  }

  shardMetrics(timeout_ms = 2_000): Promise<MetricsJson[]> {
    return this.engine?.shardMetrics(timeout_ms) ?? Promise.resolve([]);
  }

  shardLoads(): Array<{ shard: number; events: number; requests: number }> {
    return this.engine?.shardLoads() ?? [];
  }

  /** Stops following or leading (the lease is revoked: a follower may take over at once) and closes the engine. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.poll !== null) clearInterval(this.poll);
    await this.transition.catch(() => undefined);
    this.follower?.close();
    this.leader?.stop();
    for (const client of this.wss.clients) client.terminate();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await this.closeEngine();
    await this.coordinator.close();
  }
}
