import { createReadStream, promises as fs } from 'node:fs';
import type { PeerId, Stream } from '@libp2p/interface';
import { RateLimiter } from '@libp2p/utils';
import type { Logger } from 'pino';
import Type from 'typebox';
import { BlobMismatchError, type BlobStore } from '../blobs/blob-store.ts';
import { SHA256_PATTERN, VmeshError } from '../spec/index.ts';
import { frameChecker, JsonFrames, ProtocolError } from './frames.ts';
import type { MeshHost } from './host.ts';
import type { PeerGuard } from './peer-guard.ts';

export const BLOB_PROTOCOL = '/vmesh/blob/1';
const MAX_FRAME = 1024;
/** Blob bytes travel in frames of at most this size. */
const CHUNK = 256 * 1024;
/** A peer gets at most this many blob requests per second from a node. */
const REQUESTS_PER_SECOND = 64;

const BlobRequest = Type.Object({ hash: Type.String({ pattern: SHA256_PATTERN }) }, { additionalProperties: false });
const BlobHeader = Type.Union([
  Type.Object({ ok: Type.Literal(true), size: Type.Integer({ minimum: 0 }) }, { additionalProperties: false }),
  Type.Object({ ok: Type.Literal(false), code: Type.String({ maxLength: 64 }), message: Type.String({ maxLength: 512 }) }, { additionalProperties: false }),
]);
const readRequest = frameChecker(BlobRequest, 'request');
const readHeader = frameChecker(BlobHeader, 'header');

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

/** Answers `/vmesh/blob/1`: one request frame naming a hash, one header frame, then the bytes, raw. */
export async function serveBlobs(host: MeshHost, blobs: BlobStore, guard: PeerGuard, logger: Logger): Promise<void> {
  const limiter = new RateLimiter({ points: REQUESTS_PER_SECOND, duration: 1 });
  await host.handle(
    BLOB_PROTOCOL,
    async (stream, connection) => {
      const peer = connection.remotePeer.toString();
      const frames = new JsonFrames(stream, MAX_FRAME, CHUNK);
      try {
        const { hash } = await frames.read(readRequest, AbortSignal.timeout(10_000));
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
        await frames.write({ ok: true, size });
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
  signal?: AbortSignal;
  onProgress?: (bytes: number, total: number) => void;
}

/**
 * Fetches one blob from one peer into the store. The bytes are hashed as they arrive and kept only if
 * they are the blob asked for; a peer that sends anything else is banned.
 */
export async function fetchBlob(host: MeshHost, guard: PeerGuard, peer: PeerId, hash: string, blobs: BlobStore, o: FetchOptions): Promise<number> {
  const signal = o.signal;
  const stream: Stream = await host.dialProtocol(peer, BLOB_PROTOCOL, signal === undefined ? {} : { signal });
  try {
    const frames = new JsonFrames(stream, MAX_FRAME, CHUNK);
    await frames.write({ hash }, signal);
    await stream.close(signal === undefined ? {} : { signal }); // ends our side only: the answer still comes
    const header = await frames.read(readHeader, signal);
    if (!header.ok) throw new BlobUnavailableError(`${peer.toString()}: ${header.message}`, { field: 'blob' });
    if (header.size > o.maxBytes) throw new BlobUnavailableError(`${hash} is ${header.size} bytes, more than the ${o.maxBytes} this node takes`, { field: 'blob' });
    const chunks = (async function* () {
      for (let received = 0; received < header.size; ) {
        const bytes = await frames.readChunk(signal);
        received += bytes.byteLength;
        yield bytes;
      }
    })();
    const received = await blobs.receive(chunks, {
      maxBytes: o.maxBytes,
      size: header.size,
      expect: hash,
      ...(signal === undefined ? {} : { signal }),
      ...(o.onProgress === undefined ? {} : { onProgress: (bytes: number) => o.onProgress!(bytes, header.size) }),
    });
    return received.bytes;
  } catch (err) {
    stream.abort(err as Error);
    // Bytes that are not what was announced or asked for: the peer broke the protocol.
    const broken = err instanceof ProtocolError || err instanceof BlobMismatchError ? err.message : undefined;
    if (broken !== undefined) {
      guard.offence(peer.toString(), `${BLOB_PROTOCOL}: ${broken}`);
      throw new BlobCorruptError(`${peer.toString()} sent bytes that are not ${hash} (${broken}); nothing was kept`, { field: 'blob' });
    }
    throw err;
  }
}
