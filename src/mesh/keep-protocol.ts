import type { PeerId, Stream } from '@libp2p/interface';
import { RateLimiter } from '@libp2p/utils';
import type { Logger } from 'pino';
import Type from 'typebox';
import { isVmeshError, SHA256_PATTERN } from '../spec/index.ts';
import type { BlobPool } from './blob-pool.ts';
import { frameChecker, JsonFrames, ProtocolError } from './frames.ts';
import type { MeshHost } from './host.ts';
import type { PeerGuard } from './peer-guard.ts';

/**
 * `/vmesh/keep/1`: one node asks another to keep a copy of a blob it holds (a run's outputs archive, so
 * that it outlives the node that made it). The asked node fetches the blob from the asker alone, over
 * `/vmesh/blob/2`, verifying it as it comes, pins it against eviction for `mesh.keepCopiesForMs` (kept
 * copies take at most half a store), and answers once the copy is in its store.
 */
export const KEEP_PROTOCOL = '/vmesh/keep/1';
const MAX_FRAME = 1024;
/** How long a node gives one copy to arrive from the asker. */
export const KEEP_TIMEOUT_MS = 10 * 60_000;
/** Copies a node asks of one peer per second. */
const KEEPS_PER_SECOND = 16;
/** Copies being fetched for other nodes at once; more are refused (the asker tries another node). */
const MAX_CONCURRENT = 8;

const KeepRequest = Type.Object({ hash: Type.String({ pattern: SHA256_PATTERN }), size: Type.Integer({ minimum: 0 }) }, { additionalProperties: false });
const KeepAnswer = Type.Union([
  Type.Object({ ok: Type.Literal(true) }, { additionalProperties: false }),
  Type.Object({ ok: Type.Literal(false), code: Type.String({ maxLength: 64 }), message: Type.String({ maxLength: 1024 }) }, { additionalProperties: false }),
]);
const readRequest = frameChecker(KeepRequest, 'request');
const readAnswer = frameChecker(KeepAnswer, 'answer');

export interface KeepServerOptions {
  /** Only members of the mesh (nodes with a verified advert) may ask. */
  isMember(peer: string): boolean;
  /** The largest blob this node takes. */
  maxBytes: number;
  /** How long one copy may take to arrive. */
  timeoutMs: number;
  /** How long a kept copy is pinned against eviction. */
  keepForMs: number;
}

/** Answers `/vmesh/keep/1`: checks the asker and the size, fetches the blob from the asker, answers. */
export async function serveKeeps(host: MeshHost, pool: BlobPool, guard: PeerGuard, logger: Logger, o: KeepServerOptions): Promise<void> {
  const limiter = new RateLimiter({ points: KEEPS_PER_SECOND, duration: 1 });
  let fetching = 0;
  await host.handle(
    KEEP_PROTOCOL,
    async (stream, connection) => {
      const peer = connection.remotePeer;
      const frames = new JsonFrames(stream, MAX_FRAME);
      const refuse = async (code: string, message: string) => {
        await frames.write({ ok: false, code, message });
        await stream.close();
      };
      try {
        const { hash, size } = await frames.read(readRequest, AbortSignal.timeout(10_000));
        if (!o.isMember(peer.toString())) return await refuse('not_a_member', 'this node keeps copies only for nodes whose adverts it holds');
        try {
          limiter.consume(peer.toString());
        } catch {
          return await refuse('rate_limited', `more than ${KEEPS_PER_SECOND} copies a second asked`);
        }
        if (size > o.maxBytes) return await refuse('blob_too_large', `${size} bytes is more than the ${o.maxBytes} this node takes (limits.blobBytes)`);
        if (fetching >= MAX_CONCURRENT) return await refuse('busy', `this node is fetching ${MAX_CONCURRENT} copies already`);
        fetching++;
        try {
          // A kept copy is pinned, so it must fit in what this node gives to copies for others.
          if (!(await pool.blobs.has(hash))) await pool.blobs.assertPinRoom(size);
          // From the asker only, never through the DHT: a request cannot make this node fetch from elsewhere.
          await pool.fetch(hash, { hints: [peer], lookup: false, signal: AbortSignal.timeout(o.timeoutMs) });
          // Safe from eviction for a while: a copy kept for another node is not this node's cache to drop.
          await pool.blobs.pin(hash, o.keepForMs);
        } catch (err) {
          return await refuse(isVmeshError(err) ? err.code : 'failed', (err as Error).message.slice(0, 1024));
        } finally {
          fetching--;
        }
        await frames.write({ ok: true });
        await stream.close();
      } catch (err) {
        if (err instanceof ProtocolError) guard.offence(peer.toString(), `${KEEP_PROTOCOL}: ${err.message}`);
        else logger.debug({ err, peer: peer.toString() }, 'keep request ended early');
        stream.abort(err as Error);
      }
    },
    { maxInboundStreams: 32 },
  );
}

/** Asks `peer` to keep a copy of a blob this node holds; resolves once it has it, throws why not otherwise. */
export async function askToKeep(host: MeshHost, guard: PeerGuard, peer: PeerId, hash: string, size: number, signal?: AbortSignal): Promise<void> {
  const stream: Stream = await host.dialProtocol(peer, KEEP_PROTOCOL, signal === undefined ? {} : { signal });
  const frames = new JsonFrames(stream, MAX_FRAME);
  try {
    await frames.write({ hash, size }, signal);
    const answer = await frames.read(readAnswer, signal);
    await stream.close().catch(() => undefined);
    if (!answer.ok) throw new Error(`${answer.code}: ${answer.message}`);
  } catch (err) {
    if (err instanceof ProtocolError) guard.offence(peer.toString(), `${KEEP_PROTOCOL}: ${err.message}`);
    stream.abort(err as Error);
    throw err;
  }
}
