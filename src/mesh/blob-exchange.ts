import { createReadStream, promises as fs } from 'node:fs';
import type { TLSSocket } from 'node:tls';
import type { Connection, PeerId } from '@libp2p/interface';
import { RateLimiter } from '@libp2p/utils';
import type { Logger } from 'pino';
import Type from 'typebox';
import { BlobMismatchError, BlobShortError, type BlobStore } from '../blobs/blob-store.ts';
import { SHA256_PATTERN, VmeshError } from '../spec/index.ts';
import { BlobLane, LaneTicket, openLane } from './blob-lane.ts';
import { frameChecker, JsonFrames, ProtocolError } from './frames.ts';
import type { MeshHost } from './host.ts';
import type { PeerGuard } from './peer-guard.ts';

export const BLOB_PROTOCOL = '/vmesh/blob/2';
const MAX_FRAME = 1024;
/** Blob bytes travel in frames of at most this size. */
const CHUNK = 256 * 1024;
/** A peer gets at most this many blob requests per second from a node. */
const REQUESTS_PER_SECOND = 64;

/** How long a node that offered its lane waits for the fetching node to say which way the bytes go. */
const CHOICE_TIMEOUT_MS = 15_000;

/** `lane`: the fetching node would take the bytes over the sender's blob lane (blob-lane.ts). */
const BlobRequest = Type.Object({ hash: Type.String({ pattern: SHA256_PATTERN }), lane: Type.Optional(Type.Boolean()) }, { additionalProperties: false });
const BlobHeader = Type.Union([
  Type.Object({ ok: Type.Literal(true), size: Type.Integer({ minimum: 0 }), lane: Type.Optional(LaneTicket) }, { additionalProperties: false }),
  Type.Object({ ok: Type.Literal(false), code: Type.String({ maxLength: 64 }), message: Type.String({ maxLength: 512 }) }, { additionalProperties: false }),
]);
/** After a lane was offered: whether the bytes went over it, or are wanted on this stream after all. */
const LaneChoice = Type.Object({ via: Type.Union([Type.Literal('lane'), Type.Literal('stream')]) }, { additionalProperties: false });
const readRequest = frameChecker(BlobRequest, 'request');
const readHeader = frameChecker(BlobHeader, 'header');
const readChoice = frameChecker(LaneChoice, 'choice');

/** The blob is not where it was looked for: not on that peer, or on no peer at all. */
export class BlobUnavailableError extends VmeshError {
  readonly code = 'blob_unavailable';
  readonly status = 404;
}

/** A peer sent bytes that are not the blob asked for; they were thrown away. */
export class BlobCorruptError extends VmeshError {
  readonly code = 'blob_corrupt';
  readonly status = 502;
}

/** The IP address of one end of a connection, when it runs over IP. */
function ipOf(address: Connection['remoteAddr']): string | undefined {
  return address.getComponents().find((c) => c.name === 'ip4' || c.name === 'ip6')?.value;
}

/**
 * Answers `/vmesh/blob/2`: one request frame naming a hash, one header frame, then the bytes. A fetching
 * node that asks for the lane gets a ticket to it in the header (when this node runs one) and says in a
 * last frame whether it took the bytes there; otherwise they follow on this stream, raw.
 */
export async function serveBlobs(host: MeshHost, blobs: BlobStore, guard: PeerGuard, logger: Logger, lane?: BlobLane): Promise<void> {
  const limiter = new RateLimiter({ points: REQUESTS_PER_SECOND, duration: 1 });
  await host.handle(
    BLOB_PROTOCOL,
    async (stream, connection) => {
      const peer = connection.remotePeer.toString();
      const frames = new JsonFrames(stream, MAX_FRAME, CHUNK);
      let ticket: LaneTicket | undefined;
      try {
        const request = await frames.read(readRequest, AbortSignal.timeout(10_000));
        const hash = request.hash;
        try {
          limiter.consume(peer);
        } catch {
          await frames.write({ ok: false, code: 'rate_limited', message: `more than ${REQUESTS_PER_SECOND} blob requests a second` });
          return void (await stream.close());
        }
        const file = await blobs.fileOf(hash);
        const size = file === undefined ? undefined : (await fs.stat(file).catch(() => undefined))?.size;
        if (file === undefined || size === undefined) {
          await frames.write({ ok: false, code: 'not_found', message: `this node does not hold ${hash}` });
          return void (await stream.close());
        }
        // Held while offered, so that eviction cannot take the file before the lane sends it.
        if (request.lane === true && lane !== undefined) ticket = lane.offer(file, size, await blobs.hold([hash]), peer);
        await frames.write({ ok: true, size, ...(ticket === undefined ? {} : { lane: ticket }) });
        if (ticket !== undefined) {
          const { via } = await frames.read(readChoice, AbortSignal.timeout(CHOICE_TIMEOUT_MS));
          // Taken up: the lane sends it. Not: it is withdrawn (an offer under way is not), and sent here.
          lane!.withdraw(ticket.id);
          if (via === 'lane') return void (await stream.close());
        }
        let sent = 0;
        // Exactly the announced bytes (`end` is inclusive), even if the file grew meanwhile.
        const chunks = size === 0 ? [] : createReadStream(file, { highWaterMark: CHUNK, end: size - 1 });
        for await (const chunk of chunks) {
          await frames.writeChunk(chunk as Buffer);
          sent += (chunk as Buffer).byteLength;
        }
        if (sent !== size) throw new Error(`${hash} changed while it was sent`);
        await stream.close();
      } catch (err) {
        if (ticket !== undefined) lane!.withdraw(ticket.id);
        if (err instanceof ProtocolError) guard.offence(peer, `${BLOB_PROTOCOL}: ${err.message}`);
        else logger.debug({ err, peer }, 'blob request ended early');
        stream.abort(err as Error);
      }
    },
    { maxInboundStreams: 64 },
  );
}

export interface FetchOptions {
  /** Refuse a blob larger than this. */
  maxBytes: number;
  /** Ask for the bytes over the sender's blob lane (it falls back to the mesh stream where none can be had). */
  lane?: boolean;
  signal?: AbortSignal;
  onProgress?: (bytes: number, total: number) => void;
  logger?: Logger;
}

export interface Fetched {
  bytes: number;
  /** Which way the bytes came: the sender's blob lane, or the mesh stream. */
  via: 'lane' | 'stream';
  /** The sender offered its lane and it could not be reached (a firewall, another address). */
  laneUnreachable: boolean;
}

/**
 * Fetches one blob from one peer into the store. The bytes are hashed as they arrive and kept only if
 * they are the blob asked for; a peer that sends anything else is banned.
 */
export async function fetchBlob(host: MeshHost, guard: PeerGuard, peer: PeerId, hash: string, blobs: BlobStore, o: FetchOptions): Promise<Fetched> {
  const signal = o.signal;
  const opts = signal === undefined ? {} : { signal };
  const connection = await host.dial(peer, opts);
  const stream = await connection.newStream(BLOB_PROTOCOL, opts);
  let via: Fetched['via'] = 'stream';
  let laneUnreachable = false;
  let socket: TLSSocket | undefined;
  try {
    const frames = new JsonFrames(stream, MAX_FRAME, CHUNK);
    await frames.write({ hash, ...(o.lane === true ? { lane: true } : {}) }, signal);
    const header = await frames.read(readHeader, signal);
    if (!header.ok) throw new BlobUnavailableError(`${peer.toString()}: ${header.message}`, { field: 'blob' });
    if (header.size > o.maxBytes) throw new BlobUnavailableError(`${hash} is ${header.size} bytes, more than the ${o.maxBytes} this node takes`, { field: 'blob' });
    if (header.lane !== undefined) {
      const ip = ipOf(connection.remoteAddr);
      socket = ip === undefined ? undefined : await openLane(ip, header.lane, signal).catch((err: Error) => void o.logger?.debug({ err, peer: peer.toString() }, 'blob lane not reached; the bytes come over the mesh stream'));
      if (socket !== undefined) via = 'lane';
      else laneUnreachable = !(signal?.aborted ?? false);
      await frames.write({ via }, signal);
    }
    await stream.close(opts); // ends our side only: the bytes still come, unless they take the lane
    const source: AsyncIterable<Uint8Array> = socket ?? (async function* () {
      for (let received = 0; received < header.size; ) {
        const bytes = await frames.readChunk(signal);
        received += bytes.byteLength;
        yield bytes;
      }
    })();
    const received = await blobs.receive(source, {
      maxBytes: o.maxBytes,
      size: header.size,
      expect: hash,
      ...(signal === undefined ? {} : { signal }),
      ...(o.onProgress === undefined ? {} : { onProgress: (bytes: number) => o.onProgress!(bytes, header.size) }),
    });
    return { bytes: received.bytes, via, laneUnreachable };
  } catch (err) {
    stream.abort(err as Error);
    socket?.destroy(); // a lane opened and not read to its end (receive destroys one it consumed)
    // A lane that ended before all the bytes came broke off, as a connection can; more than were
    // announced, or the wrong ones, is a broken promise.
    const brokenOff = via === 'lane' && err instanceof BlobShortError;
    // Bytes that are not what was announced or asked for: the peer broke the protocol.
    const broken = !brokenOff && (err instanceof ProtocolError || err instanceof BlobMismatchError) ? err.message : undefined;
    if (broken !== undefined) {
      guard.offence(peer.toString(), `${BLOB_PROTOCOL}: ${broken}`);
      throw new BlobCorruptError(`${peer.toString()} sent bytes that are not ${hash} (${broken}); nothing was kept`, { field: 'blob' });
    }
    throw err;
  }
}
