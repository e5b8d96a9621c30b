import { TopicValidatorResult, type Message } from '@libp2p/gossipsub';
import type { PeerId } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { multiaddr } from '@multiformats/multiaddr';
import type { Logger } from 'pino';
import type { MeshConfig } from '../node/config.ts';
import { ADVERT_FORMAT, type NodeAdvert, type NodeDescription } from '../spec/index.ts';
import type { BlobStore } from '../blobs/blob-store.ts';
import type { VmeshNode } from '../node/node.ts';
import { BlobPool } from './blob-pool.ts';
import { RemoteRuns } from './run-client.ts';
import { serveRuns } from './run-server.ts';
import { ADVERT_TOPIC, changedEnough, claimOf, openAdvert, sealAdvert } from './adverts.ts';
import { createMeshHost, type MeshHost } from './host.ts';
import type { NodeIdentity } from './identity.ts';
import { KEEP_TIMEOUT_MS, serveKeeps } from './keep-protocol.ts';
import { askMembers, serveMembers } from './member-sync.ts';
import { Membership, type HeldAdvert } from './membership.ts';
import { PeerGuard } from './peer-guard.ts';
import { Proximity, type RttEstimate } from './proximity.ts';
import { openReport, REPORT_TOPIC, type ReportBook } from '../trust/reports.ts';

export type { NodeDescription } from '../spec/index.ts';

export interface MeshOptions {
  identity: NodeIdentity;
  config: MeshConfig;
  logger: Logger;
  describe(): NodeDescription;
  /** The node's blob store, shared with the mesh through the blob pool. */
  blobs: BlobStore;
  /** The largest blob this node fetches from a peer. */
  maxBlobBytes: number;
  /** Told of each blob fetched from a peer, and which way its bytes came. */
  onBlobFetched?: (via: 'lane' | 'stream') => void;
}

/** One node of the mesh as this node sees it. */
export interface MeshNode {
  id: string;
  self: boolean;
  /** Whether this node holds a connection to it now. */
  connected: boolean;
  advert: NodeAdvert;
  /** Age of its newest advert, by this node's clock. */
  advertAgeMs: number;
  rtt?: RttEstimate;
}

/** How soon a node that finds itself without a peer dials its join list again (doubling while that fails). */
const REJOIN_FIRST_MS = 1000;
/** Least time between two adverts sent early because something changed. */
const MIN_NUDGE_GAP_MS = 500;
/** How long the changes of a moment are gathered before deciding whether they are worth an early advert. */
const CHANGE_CHECK_MS = 50;
/**
 * Members pinged each `pingIntervalMs`, those measured longest ago first. Pinging every member each round
 * made an idle node's CPU grow with the mesh: 49 ms a second in a 20-node mesh, 35 with this cap (2026-12-02).
 */
const PINGS_PER_ROUND = 8;
/**
 * Members a node keeps a connection to, at the least, among those that take adverts: gossipsub's lowest
 * mesh degree (Dlo). A node whose only peer was its join peer lost every member once that peer pruned
 * it from a full gossip mesh (seen with 50 nodes joining through one).
 */
const MIN_ADVERT_PEERS = 4;

/**
 * This node's place in the mesh: a libp2p host, its signed adverts on the gossip topic, the membership
 * table built from everyone else's, and round-trip times to each member. Requests and blobs travel on
 * protocols of their own, which register on `host`.
 */
export class Mesh {
  readonly membership: Membership;
  readonly proximity = new Proximity();
  readonly guard: PeerGuard;
  readonly blobs: BlobPool;
  private last: NodeAdvert | undefined;
  private lastSentAt = 0;
  private nudgeTimer: NodeJS.Timeout | undefined;
  private checkTimer: NodeJS.Timeout | undefined;
  private rejoinTimer: NodeJS.Timeout | undefined;
  private readonly timers: NodeJS.Timeout[] = [];
  private stopped = false;
  /** When this node last took the adverts a peer holds (`/vmesh/members/1`), and whether it is asking now. */
  private askedAt = Number.NEGATIVE_INFINITY;
  private asking = false;
  /** This node's last advert as sealed, and whether it reached no peer when it was sent. */
  private sealed: Uint8Array | undefined;
  private unheard = true;
  /** Where reputation reports from other nodes go, once a node is served. */
  private reportBook: ReportBook | undefined;
  private runs: RemoteRuns | undefined;

  private constructor(
    readonly host: MeshHost,
    private readonly o: MeshOptions,
    guard: PeerGuard,
  ) {
    this.guard = guard;
    const lane = o.config.blobLane ? { port: o.config.blobLanePort, listen: o.config.listen } : undefined;
    this.blobs = new BlobPool(host, guard, o.blobs, o.logger, {
      maxBytes: o.maxBlobBytes,
      ...(lane === undefined ? {} : { lane }),
      ...(o.onBlobFetched === undefined ? {} : { onFetched: o.onBlobFetched }),
    });
    this.membership = new Membership(o.config.peerTtlMs);
    this.membership.on('join', (m) => {
      o.logger.info({ peer: m.id, addresses: m.advert.addresses }, 'node joined the mesh');
      // The first peer after being alone: the blobs held so far could not be announced to anybody.
      if (this.membership.size === 1) void this.announceHeld();
    });
    this.membership.on('leave', ({ id, reason }) => {
      this.proximity.forget(id);
      o.logger.info({ peer: id, reason }, 'node left the mesh');
    });
  }

  static async start(o: MeshOptions): Promise<Mesh> {
    const guard = new PeerGuard({ banMs: o.config.banMs }, o.logger);
    const host = await createMeshHost(o.identity.privateKey, o.config, guard.gater());
    const mesh = new Mesh(host, o, guard);
    guard.onBan((peer) => void host.hangUp(peerIdFromString(peer)).catch(() => {}));
    try {
      await mesh.join();
    } catch (err) {
      await mesh.blobs.stop();
      await host.stop();
      throw err;
    }
    return mesh;
  }

  get id(): string {
    return this.o.identity.id;
  }

  /** The addresses other nodes can reach this one on, each ending in /p2p/<id>. */
  addresses(): string[] {
    return this.host.getMultiaddrs().map((a) => a.toString());
  }

  private async announceHeld(): Promise<void> {
    for (const hash of await this.o.blobs.list()) this.blobs.announce(hash);
  }

  private async join(): Promise<void> {
    await this.blobs.start();
    await serveKeeps(this.host, this.blobs, this.guard, this.o.logger, {
      isMember: (id) => this.membership.get(id) !== undefined,
      maxBytes: this.o.maxBlobBytes,
      timeoutMs: KEEP_TIMEOUT_MS,
      keepForMs: this.o.config.keepCopiesForMs,
    });
    const pubsub = this.host.services.pubsub;
    pubsub.topicValidators.set(ADVERT_TOPIC, (from, msg) => this.takeAdvert(from, msg));
    pubsub.subscribe(ADVERT_TOPIC);
    pubsub.topicValidators.set(REPORT_TOPIC, (from, msg) => this.takeReport(from, msg));
    pubsub.subscribe(REPORT_TOPIC);
    await serveMembers(this.host, () => this.handedOn(), this.o.logger);
    this.host.addEventListener('peer:connect', (e) => void this.askMembers(e.detail));
    // A new subscriber hears this node soon rather than at the next tick while this node is new to the mesh
    // (its first advert interval), or when its last advert reached nobody. Other nodes' adverts come to a
    // node that joins through /vmesh/members/1; telling every new subscriber, as every node did until
    // session 18, made a forming mesh of 30 nodes check 1300 adverts a second for as long as it formed.
    const startedAt = performance.now();
    pubsub.addEventListener('subscription-change', (e) => {
      const young = performance.now() - startedAt < this.o.config.advertIntervalMs;
      if ((young || this.unheard) && e.detail.subscriptions.some((s) => s.topic === ADVERT_TOPIC && s.subscribe)) this.nudge(true);
    });
    const every = (ms: number, fn: () => void) => {
      const t = setInterval(fn, ms);
      t.unref();
      this.timers.push(t);
    };
    every(this.o.config.advertIntervalMs, () => void this.publish().catch((err: Error) => this.o.logger.warn({ err }, 'advert not sent')));
    every(Math.max(100, Math.min(1000, this.o.config.peerTtlMs / 4)), () => this.membership.expire());
    every(this.o.config.pingIntervalMs, () => {
      void this.pingAll();
      void this.keepConnected();
    });
    if (this.o.config.join.length > 0) this.scheduleRejoin(REJOIN_FIRST_MS);
    await this.publish();
    // The join peers may have connected while the host started, before anyone listened.
    const first = this.host.getPeers()[0];
    if (first !== undefined) void this.askMembers(first);
  }

  /**
   * Takes every advert `peer` holds, so that a node that joins (or comes back from a cut link) knows the
   * mesh at once rather than as each member's next regular advert arrives. At most once per advert
   * interval: between asks, the gossip topic keeps the table current.
   */
  private async askMembers(peer: PeerId): Promise<void> {
    if (this.stopped || this.asking || performance.now() - this.askedAt < this.o.config.advertIntervalMs) return;
    this.asking = true;
    try {
      const taken = await askMembers(this.host, this.guard, this.membership, this.id, peer);
      this.askedAt = performance.now();
      // A node that joined knows its join peer alone: a few more peers now put it in the gossip mesh.
      void this.keepConnected();
      this.o.logger.debug({ peer: peer.toString(), ...taken }, 'took the adverts a peer holds');
    } catch (err) {
      // Not a vmesh node, gone, or busy: the next new connection, or the gossip topic, does it.
      this.o.logger.debug({ err, peer: peer.toString() }, 'could not take the adverts a peer holds');
    } finally {
      this.asking = false;
    }
  }

  private async takeAdvert(from: PeerId, msg: Message): Promise<TopicValidatorResult> {
    const source = from.toString();
    try {
      // Most adverts a node hears are news; one that is not is dropped before its signature is checked.
      const claim = claimOf(msg.data);
      if (claim !== undefined && !this.membership.isNews(claim.node, claim.seq)) return TopicValidatorResult.Ignore;
      const advert = await openAdvert(msg.data);
      if (advert.node === this.id) return TopicValidatorResult.Ignore;
      return this.membership.accept(advert, msg.data) === 'stale' ? TopicValidatorResult.Ignore : TopicValidatorResult.Accept;
    } catch (err) {
      this.guard.offence(source, `bad advert: ${(err as Error).message}`);
      return TopicValidatorResult.Reject;
    }
  }

  /** A reputation report: from a member, signed by it, newer than the one held. */
  private async takeReport(from: PeerId, msg: Message): Promise<TopicValidatorResult> {
    try {
      const report = await openReport(msg.data);
      if (report.node === this.id || this.reportBook === undefined || this.membership.get(report.node) === undefined) return TopicValidatorResult.Ignore;
      return this.reportBook.accept(report) ? TopicValidatorResult.Accept : TopicValidatorResult.Ignore;
    } catch (err) {
      this.guard.offence(from.toString(), `bad reputation report: ${(err as Error).message}`);
      return TopicValidatorResult.Reject;
    }
  }

  /** Takes runs from other nodes for `node`, and lets `node` send runs to them (`placement.node`). */
  async serve(node: VmeshNode): Promise<void> {
    this.reportBook = node.reports;
    this.membership.on('leave', ({ id }) => node.reports.forget(id));
    let seq = Date.now();
    const report = setInterval(() => {
      if (this.stopped || this.membership.size === 0) return;
      const bytes = new TextEncoder().encode(JSON.stringify(node.signReport(seq++)));
      void this.host.services.pubsub.publish(REPORT_TOPIC, bytes).catch((err: Error) => this.o.logger.debug({ err }, 'reputation report not sent'));
    }, node.config.trust.reportIntervalMs);
    report.unref();
    this.timers.push(report);
    await serveRuns(this.host, node, this.blobs, this.guard, this.o.logger, this.o.config.stateBatchMs);
    // The other members as placement sees them (without making this node's own advert, as nodes() does).
    const members = () => {
      const connected = new Set(this.host.getPeers().map((p) => p.toString()));
      return this.membership
        .list()
        .filter((m) => !this.guard.isBanned(m.id))
        .map((m) => {
          const rtt = this.proximity.get(m.id);
          return { advert: m.advert, connected: connected.has(m.id), ...(rtt === undefined ? {} : { rttMs: rtt.minMs }) };
        });
    };
    this.runs = new RemoteRuns(this.host, this.blobs, this.guard, {
      known: (id) => this.membership.get(id) !== undefined,
      keepers: () => this.keepers(),
      members,
      memberCount: () => this.membership.size,
      rttOf: (id) => this.proximity.get(id)?.minMs,
      keepStreamsMs: this.o.config.keepRunStreamsMs,
    });
    node.attachRemote(this.runs);
  }

  /** The members this node is connected to and does not refuse, nearest first (unmeasured ones last). */
  keepers(): PeerId[] {
    const connected = new Map(this.host.getPeers().map((p) => [p.toString(), p]));
    const distance = (id: string) => this.proximity.get(id)?.minMs ?? Number.POSITIVE_INFINITY;
    return this.membership
      .list()
      .filter((m) => connected.has(m.id) && !this.guard.isBanned(m.id))
      .sort((a, b) => distance(a.id) - distance(b.id) || a.id.localeCompare(b.id))
      .map((m) => connected.get(m.id)!);
  }

  /** Makes the current advert. */
  advert(): NodeAdvert {
    const now = Date.now();
    const seq = Math.max(now, (this.last?.seq ?? 0) + 1);
    const advert: NodeAdvert = {
      format: ADVERT_FORMAT,
      node: this.id,
      seq,
      issuedAt: new Date(now).toISOString(),
      addresses: this.addresses().slice(0, 16),
      labels: this.o.config.labels,
      ...this.o.describe(),
    };
    if (this.o.config.location !== undefined) advert.location = this.o.config.location;
    return advert;
  }

  /** Signs and publishes a fresh advert. */
  async publish(): Promise<void> {
    if (this.stopped) return;
    const advert = this.advert();
    this.last = advert;
    this.lastSentAt = Date.now();
    const sealed = await sealAdvert(this.o.identity.privateKey, advert);
    this.sealed = sealed;
    const { recipients } = await this.host.services.pubsub.publish(ADVERT_TOPIC, sealed);
    this.unheard = recipients.length === 0;
  }

  /** What a node that joins is handed (`/vmesh/members/1`): this node's last advert and every one it holds. */
  private handedOn(): HeldAdvert[] {
    const own = this.sealed === undefined ? [] : [{ sealed: this.sealed, ageMs: Date.now() - this.lastSentAt }];
    return [...own, ...this.membership.held()];
  }

  /**
   * Something about this node changed (a run started or ended): publish early when the change is big
   * enough (`always`: in any case), at most once per 500 ms. Whether it is big enough is decided once per
   * CHANGE_CHECK_MS for all the changes in it (a run changes state five times in a few ms), and off the
   * run's path.
   */
  nudge(always = false): void {
    if (this.stopped || this.nudgeTimer !== undefined) return;
    if (always) return this.publishSoon(200);
    if (this.checkTimer !== undefined) return;
    this.checkTimer = setTimeout(() => {
      this.checkTimer = undefined;
      // What a run changes is what describe() says (free resources, runs): compared against the last advert
      // with its addresses kept, since listing this node's addresses costs more than the rest (1.5 ms a run).
      if (this.last === undefined || changedEnough(this.last, { ...this.last, ...this.o.describe() })) this.publishSoon(0);
    }, CHANGE_CHECK_MS);
    this.checkTimer.unref();
  }

  private publishSoon(atLeastMs: number): void {
    if (this.stopped || this.nudgeTimer !== undefined) return;
    const wait = Math.max(atLeastMs, this.lastSentAt + MIN_NUDGE_GAP_MS - Date.now());
    this.nudgeTimer = setTimeout(() => {
      this.nudgeTimer = undefined;
      void this.publish().catch((err: Error) => this.o.logger.warn({ err }, 'advert not sent'));
    }, wait);
    this.nudgeTimer.unref();
  }

  /**
   * libp2p's bootstrap dials the join list once, at start. A node alone (its join peers were down, its link
   * was cut, or its first dial timed out in a busy moment) dials them again: REJOIN_FIRST_MS after it found
   * itself alone, then twice as long after each failure, up to the advert interval.
   */
  private scheduleRejoin(ms: number): void {
    if (this.stopped) return;
    this.rejoinTimer = setTimeout(() => {
      void this.rejoin()
        .catch(() => true)
        .then((alone) => this.scheduleRejoin(alone ? Math.min(2 * ms, Math.max(REJOIN_FIRST_MS, this.o.config.advertIntervalMs)) : REJOIN_FIRST_MS));
    }, ms);
    this.rejoinTimer.unref();
  }

  /** Dials the join list when this node has no peer; whether it is still alone afterwards. */
  private async rejoin(): Promise<boolean> {
    if (this.stopped || this.host.getPeers().length > 0) return false;
    for (const address of this.o.config.join) {
      try {
        await this.host.dial(multiaddr(address), { signal: AbortSignal.timeout(5000) });
        this.o.logger.info({ address }, 'rejoined the mesh');
        return false;
      } catch (err) {
        this.o.logger.debug({ err, address }, 'join peer not reachable');
      }
    }
    return true;
  }

  /** Dials members, chosen at random, while fewer than MIN_ADVERT_PEERS connected peers take adverts. */
  private async keepConnected(): Promise<void> {
    if (this.stopped) return;
    const wanted = Math.min(MIN_ADVERT_PEERS, this.membership.size) - this.host.services.pubsub.getSubscribers(ADVERT_TOPIC).length;
    if (wanted <= 0) return;
    const connected = new Set(this.host.getPeers().map((p) => p.toString()));
    // Only the addresses a member gives for itself: its advert cannot send this node to dial someone else.
    const reachable = this.membership
      .list()
      .filter((m) => !connected.has(m.id) && !this.guard.isBanned(m.id))
      .map((m) => ({ id: m.id, addresses: m.advert.addresses.filter((a) => a.endsWith(`/p2p/${m.id}`)) }))
      .filter((m) => m.addresses.length > 0);
    const chosen = reachable
      .map((m) => ({ m, order: Math.random() }))
      .sort((x, y) => x.order - y.order)
      .slice(0, wanted)
      .map(({ m }) => m);
    await Promise.all(
      chosen.map(async (m) => {
        try {
          await this.host.dial(m.addresses.map((a) => multiaddr(a)), { signal: AbortSignal.timeout(5000) });
        } catch (err) {
          this.o.logger.debug({ err, peer: m.id }, 'member not reachable');
        }
      }),
    );
  }

  /** Measures the round trip to the PINGS_PER_ROUND members connected now that were measured longest ago. */
  private async pingAll(): Promise<void> {
    const timeout = Math.min(this.o.config.pingIntervalMs, 5000);
    const peers = new Map(this.host.getPeers().map((p) => [p.toString(), p]));
    // Only vmesh nodes that advertise.
    const members = [...peers.keys()].filter((id) => this.membership.get(id) !== undefined);
    await Promise.all(
      this.proximity.stalest(members, PINGS_PER_ROUND).map(async (id) => {
        const peer = peers.get(id)!;
        try {
          const ms = await this.host.services.ping.ping(peer, { signal: AbortSignal.timeout(timeout) });
          this.proximity.record(id, ms);
        } catch {
          // unreachable now: the membership TTL decides whether it has left
        }
      }),
    );
  }

  /** The mesh as this node sees it, itself first. */
  nodes(): MeshNode[] {
    const now = Date.now();
    const connected = new Set(this.host.getPeers().map((p) => p.toString()));
    const self: MeshNode = { id: this.id, self: true, connected: true, advert: this.advert(), advertAgeMs: 0 };
    const others = this.membership.list().map((m) => {
      const node: MeshNode = { id: m.id, self: false, connected: connected.has(m.id), advert: m.advert, advertAgeMs: now - m.lastAdvertAt };
      const rtt = this.proximity.get(m.id);
      if (rtt !== undefined) node.rtt = rtt;
      return node;
    });
    return [self, ...others.sort((a, b) => a.id.localeCompare(b.id))];
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    clearTimeout(this.nudgeTimer);
    clearTimeout(this.checkTimer);
    clearTimeout(this.rejoinTimer);
    this.runs?.close();
    await this.blobs.stop();
    await this.host.stop();
  }
}
