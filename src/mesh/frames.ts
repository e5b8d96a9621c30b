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
 * JSON messages over a libp2p stream, each length-prefixed and capped in size; every message read is
 * checked against the schema the reader expects, so that nothing a peer sends reaches the node unchecked.
 */
export class JsonFrames<S extends MessageStream = Stream> {
  private readonly lp: LengthPrefixedStream<S>;

  /**
   * `maxBytes` caps each JSON message; `maxChunkBytes` each raw chunk (`readChunk`), for protocols that
   * carry bytes after their messages.
   */
  constructor(
    readonly stream: S,
    private readonly maxBytes: number,
    private readonly maxChunkBytes = 0,
  ) {
    this.lp = lpStream(stream, { maxDataLength: Math.max(maxBytes, maxChunkBytes) });
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
    if (bytes.byteLength > cap) throw new ProtocolError(`a frame of ${bytes.byteLength} bytes where at most ${cap} belong`);
    return bytes;
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
