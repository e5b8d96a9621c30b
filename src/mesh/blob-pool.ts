import type { PeerId } from '@libp2p/interface';
import { multiaddr } from '@multiformats/multiaddr';
import { CID } from 'multiformats/cid';
import * as Digest from 'multiformats/hashes/digest';
import type { Logger } from 'pino';
import { BlobStoreFullError, type BlobStore } from '../blobs/blob-store.ts';
import type { CopiesPlaced } from '../node/remote.ts';
import { isVmeshError } from '../spec/index.ts';
import { BlobUnavailableError, fetchBlob, serveBlobs } from './blob-exchange.ts';
import { BlobLane, laneAddresses } from './blob-lane.ts';
import type { MeshHost } from './host.ts';
import { askToKeep } from './keep-protocol.ts';
import type { PeerGuard } from './peer-guard.ts';

const RAW_CODEC = 0x55;
/** A peer whose lane could not be reached is asked for its lane again after this long. */
const LANE_RETRY_MS = 10 * 60_000;
const MAX_REMEMBERED_LANES = 1024;
const SHA2_256 = 0x12;

/** The CID of a blob: CIDv1, raw codec, its sha256 as the multihash. */
export function blobCid(hash: string): CID {
  const hex = /^sha256:([0-9a-f]{64})$/.exec(hash)?.[1];
  if (hex === undefined) throw new Error(`not a sha256 blob hash: ${hash}`);
  return CID.createV1(RAW_CODEC, Digest.create(SHA2_256, Buffer.from(hex, 'hex')));
}

export interface BlobPoolOptions {
  /** The largest blob this node fetches from a peer. */
  maxBytes: number;
  /** The blob lane's port (0: any free one), on each address `listen` names; undefined: no lane. */
  lane?: { port: number; listen: string[] };
  /** Told of each blob fetched from a peer, and which way its bytes came. */
  onFetched?: (via: 'lane' | 'stream') => void;
}

export interface PoolFetchOptions {
  /** Peers likely to hold it (the node that asked for a run, say), tried before the DHT is asked. */
  hints?: PeerId[];
  /** false: ask only the hinted peers, not the providers the DHT names. */
  lookup?: boolean;
  signal?: AbortSignal;
  onProgress?: (bytes: number, total: number) => void;
}

/**
 * The mesh's shared blob pool: every node serves the blobs it holds, announces each one in the DHT as a
 * provider record, and fetches what it lacks from a provider, verifying the bytes as they come.
 */
export class BlobPool {
  /** Blobs waiting to be announced, oldest first; one DHT query at a time works through them. */
  private readonly pending = new Set<string>();
  private announcing = false;
  private lane: BlobLane | undefined;
  /** Peers whose lane could not be reached, until when: their blobs come over the mesh stream meanwhile, without a wait for the lane. */
  private readonly laneUnreachable = new Map<string, number>();

  constructor(
    private readonly host: MeshHost,
    private readonly guard: PeerGuard,
    readonly blobs: BlobStore,
    private readonly logger: Logger,
    private readonly o: BlobPoolOptions,
  ) {}

  async start(): Promise<void> {
    if (this.o.lane !== undefined) {
      // Without its lane a node still sends and takes every blob, over the mesh connection.
      this.lane = await BlobLane.open(laneAddresses(this.o.lane.listen.map((a) => multiaddr(a))), this.o.lane.port, this.logger).catch((err: Error) => {
        this.logger.warn({ err, port: this.o.lane!.port }, 'blob lane not opened: blobs go over the mesh connection');
        return undefined;
      });
    }
    await serveBlobs(this.host, this.blobs, this.guard, this.logger, this.lane);
    this.blobs.onAdded((hash) => this.announce(hash));
    this.blobs.onRemoved((hash) => this.pending.delete(hash));
  }

  /** The blob lane's port, when this node runs one. */
  get lanePort(): number | undefined {
    return this.lane?.port;
  }

  async stop(): Promise<void> {
    await this.lane?.close();
  }

  /**
   * Tells the DHT that this node holds `hash`, in the background and one blob at a time: a node that
   * gains a blob per run, or joins holding thousands, does not start a DHT query for each at once. A
   * mesh of one has nobody to tell (the blobs it holds are announced when its first peer comes).
   */
  announce(hash: string): void {
    if (this.host.getPeers().length === 0) return;
    this.pending.add(hash);
    if (!this.announcing) void this.drainAnnouncements();
  }

  private async drainAnnouncements(): Promise<void> {
    this.announcing = true;
    try {
      for (const hash of this.pending) {
        this.pending.delete(hash);
        if (this.host.status !== 'started') return;
        await this.host.contentRouting
          .provide(blobCid(hash), { signal: AbortSignal.timeout(30_000) })
          .catch((err: Error) => this.logger.debug({ err, hash }, 'provider record not placed'));
      }
    } finally {
      this.announcing = false;
    }
  }

  /** Makes sure the store holds `hash`, fetching it from the mesh if not; returns the peer it came from. */
  async fetch(hash: string, o: PoolFetchOptions = {}): Promise<string | undefined> {
    if (await this.blobs.has(hash)) return undefined;
    const tried: string[] = [];
    const attempt = async (peer: PeerId): Promise<boolean> => {
      const id = peer.toString();
      if (id === this.host.peerId.toString() || tried.includes(id) || this.guard.isBanned(id)) return false;
      tried.push(id);
      try {
        const { via, laneUnreachable } = await fetchBlob(this.host, this.guard, peer, hash, this.blobs, {
          maxBytes: this.o.maxBytes,
          lane: this.o.lane !== undefined && (this.laneUnreachable.get(id) ?? 0) < Date.now(),
          logger: this.logger,
          ...(o.signal === undefined ? {} : { signal: o.signal }),
          ...(o.onProgress === undefined ? {} : { onProgress: o.onProgress }),
        });
        this.o.onFetched?.(via);
        if (laneUnreachable) this.noteLaneUnreachable(id);
        return true;
      } catch (err) {
        // Another peer would not help: the caller gave up, or this node has no room for the blob.
        if (o.signal?.aborted || err instanceof BlobStoreFullError) throw err;
        this.logger.debug({ err, peer: id, hash }, 'blob not fetched from this peer');
        if (isVmeshError(err) && err.code === 'blob_corrupt') this.logger.warn({ peer: id, hash, reason: err.message }, 'a peer sent a corrupt blob');
        return false;
      }
    };
    for (const peer of o.hints ?? []) if (await attempt(peer)) return peer.toString();
    if (o.lookup === false) throw new BlobUnavailableError(`${tried.length > 0 ? tried.join(', ') : 'no peer'} could provide ${hash}`, { field: 'blob' });
    // A node alone has nobody to ask: the DHT would only wait out its timeout.
    if (this.host.getPeers().length === 0) throw new BlobUnavailableError(`no node of the mesh could provide ${hash} (this node is connected to none)`, { field: 'blob' });
    const lookup = AbortSignal.any([AbortSignal.timeout(30_000), ...(o.signal === undefined ? [] : [o.signal])]);
    try {
      for await (const provider of this.host.contentRouting.findProviders(blobCid(hash), { signal: lookup })) {
        if (await attempt(provider.id)) return provider.id.toString();
      }
    } catch (err) {
      if (o.signal?.aborted) throw err;
      this.logger.debug({ err, hash }, 'provider lookup ended');
    }
    throw new BlobUnavailableError(`no node of the mesh could provide ${hash}${tried.length > 0 ? ` (asked ${tried.join(', ')})` : ' (no provider found)'}`, { field: 'blob' });
  }

  private noteLaneUnreachable(peer: string): void {
    if (this.laneUnreachable.size >= MAX_REMEMBERED_LANES) this.laneUnreachable.delete(this.laneUnreachable.keys().next().value!);
    this.laneUnreachable.set(peer, Date.now() + LANE_RETRY_MS);
  }

  /**
   * Places `copies` more copies of a blob this node holds on other nodes: `candidates` are asked in
   * order, `copies` at a time, each fetching the blob from here (`/vmesh/keep/1`), until enough have one
   * or none is left. The blob is held here meanwhile, so that eviction cannot take it mid-transfer.
   */
  async keepCopies(hash: string, copies: number, candidates: PeerId[], signal?: AbortSignal): Promise<CopiesPlaced> {
    const size = await this.blobs.sizeOf(hash);
    if (size === undefined) throw new BlobUnavailableError(`this node does not hold ${hash}`, { field: 'blob' });
    const release = await this.blobs.hold([hash]);
    const placed: CopiesPlaced = { nodes: [], refused: [] };
    const queue = [...candidates];
    let asking = 0;
    // Never more asks under way than copies still missing: none is placed twice over.
    const worker = async () => {
      while (placed.nodes.length + asking < copies && queue.length > 0 && signal?.aborted !== true) {
        const peer = queue.shift()!;
        asking++;
        try {
          await askToKeep(this.host, this.guard, peer, hash, size, signal);
          placed.nodes.push(peer.toString());
        } catch (err) {
          placed.refused.push({ node: peer.toString(), reason: (err as Error).message });
        } finally {
          asking--;
        }
      }
    };
    try {
      await Promise.all(Array.from({ length: Math.min(copies, queue.length) }, worker));
    } finally {
      release();
    }
    return placed;
  }
}
