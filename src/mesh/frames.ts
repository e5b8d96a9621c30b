import type { MessageStream, Stream } from '@libp2p/interface';
import { lpStream, type LengthPrefixedStream } from '@libp2p/utils';
import type { TSchema, Static } from 'typebox';
import { Compile } from 'typebox/compile';
import { explainSchemaErrors, type SchemaError } from '../spec/index.ts';

/** A peer broke a protocol: a frame too big, not JSON, or not what the protocol expects at that point. */
export class ProtocolError extends Error {
  override name = 'ProtocolError';
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/**
 * libp2p's byte reader buffers whatever arrives and aborts the stream past a cap (4 MiB), with no
 * backpressure: a sender faster than the reader (a blob read from disk, written to a slower one) tripped
 * it. So the frames pause the stream once more than PAUSE_AT bytes wait unread (yamux then stops
 * granting window, and the sender stops after at most one window, 16 MiB) and resume it below RESUME_AT.
 * The caps leave room for that window on top of what waited.
 */
const PAUSE_AT = 1 << 20;
const RESUME_AT = 256 << 10;
const YAMUX_MAX_WINDOW = 16 << 20;
const BUFFER_CAP = PAUSE_AT + YAMUX_MAX_WINDOW + (4 << 20);

/** Bytes of the varint that prefixes a frame of `n` bytes. */
function prefixBytes(n: number): number {
  let bytes = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 0x80);
    bytes++;
  }
  return bytes;
}

/**
 * JSON messages over a libp2p stream, each length-prefixed and capped in size; every message read is
 * checked against the schema the reader expects, so that nothing a peer sends reaches the node unchecked.
 */
export class JsonFrames<S extends MessageStream = Stream> {
  private readonly lp: LengthPrefixedStream<S>;
  /** Bytes the stream delivered that no read has taken yet. */
  private unread = 0;
  private paused = false;

  /**
   * `maxBytes` caps each JSON message; `maxChunkBytes` each raw chunk (`readChunk`), for protocols that
   * carry bytes after their messages.
   */
  constructor(
    readonly stream: S,
    private readonly maxBytes: number,
    private readonly maxChunkBytes = 0,
  ) {
    this.lp = lpStream(stream, { maxDataLength: Math.max(maxBytes, maxChunkBytes), maxBufferSize: BUFFER_CAP });
    stream.maxReadBufferLength = Math.max(stream.maxReadBufferLength, BUFFER_CAP);
    stream.addEventListener('message', (e) => {
      this.unread += e.data.byteLength;
      if (!this.paused && this.unread > PAUSE_AT) this.flow(false);
    });
  }

  /** The next message, checked against `check`; throws ProtocolError for anything else, and at the end of the stream. */
  async read<T extends TSchema>(check: Checker<T>, signal?: AbortSignal): Promise<Static<T>> {
    const bytes = await this.frame(this.maxBytes, signal);
    let value: unknown;
    try {
      value = JSON.parse(decoder.decode(bytes.subarray()));
    } catch {
      throw new ProtocolError('a frame that is not JSON');
    }
    return check(value);
  }

  /** The next raw chunk (written with `writeChunk`). */
  async readChunk(signal?: AbortSignal): Promise<Uint8Array> {
    return (await this.frame(this.maxChunkBytes, signal)).subarray();
  }

  async writeChunk(bytes: Uint8Array, signal?: AbortSignal): Promise<void> {
    await this.lp.write(bytes, signal === undefined ? {} : { signal });
  }

  private async frame(cap: number, signal?: AbortSignal) {
    let bytes;
    try {
      bytes = await this.lp.read(signal === undefined ? {} : { signal });
    } catch (err) {
      const e = err as Error;
      if (e.name === 'InvalidDataLengthError' || e.name === 'InvalidDataLengthLengthError') throw new ProtocolError(`a frame over ${cap} bytes`);
      throw err;
    }
    this.unread -= prefixBytes(bytes.byteLength) + bytes.byteLength;
    if (this.paused && this.unread < RESUME_AT) this.flow(true);
    if (bytes.byteLength > cap) throw new ProtocolError(`a frame of ${bytes.byteLength} bytes where at most ${cap} belong`);
    return bytes;
  }

  /** Pauses or resumes the stream's reading; a stream that is closing for reading takes neither. */
  private flow(on: boolean): void {
    try {
      if (on) this.stream.resume();
      else this.stream.pause();
      this.paused = !on;
    } catch {
      // closing or closed: nothing more will come
    }
  }

  async write(value: unknown, signal?: AbortSignal): Promise<void> {
    const bytes = encoder.encode(JSON.stringify(value));
    if (bytes.byteLength > this.maxBytes) throw new Error(`frame of ${bytes.byteLength} bytes exceeds the ${this.maxBytes} allowed`);
    await this.lp.write(bytes, signal === undefined ? {} : { signal });
  }
}

export type Checker<T extends TSchema> = (value: unknown) => Static<T>;

/** A checker that throws ProtocolError naming the first bad field. */
export function frameChecker<T extends TSchema>(schema: T, name: string): Checker<T> {
  const compiled = Compile(schema);
  return (value: unknown) => {
    if (compiled.Check(value)) return value as Static<T>;
    const { message } = explainSchemaErrors([...compiled.Errors(value)] as SchemaError[], value, name);
    throw new ProtocolError(message);
  };
}
