import { InvalidInputError, InvalidSourceError } from '../../spec/errors.ts';

const MAGIC = [0x00, 0x61, 0x73, 0x6d];
const SECTION_IMPORT = 2;
const SECTION_MEMORY = 5;
export const WASM_PAGE = 65_536;

export function isWasm(bytes: Uint8Array): boolean {
  return bytes.byteLength >= 8 && MAGIC.every((b, i) => bytes[i] === b);
}

class Reader {
  constructor(
    readonly bytes: Uint8Array,
    public pos = 0,
  ) {}
  byte(): number {
    const b = this.bytes[this.pos++];
    if (b === undefined) throw new InvalidSourceError('source is not a valid WebAssembly module: it ends early', { field: 'source' });
    return b;
  }
  u32(): number {
    let result = 0;
    let shift = 0;
    for (;;) {
      const b = this.byte();
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return result;
      shift += 7;
      if (shift > 35) throw new InvalidSourceError('source is not a valid WebAssembly module: bad LEB128', { field: 'source' });
    }
  }
  name(): string {
    const len = this.u32();
    const s = Buffer.from(this.bytes.subarray(this.pos, this.pos + len)).toString('utf8');
    this.pos += len;
    return s;
  }
}

function u32leb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n = Math.floor(n / 128);
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

/**
 * Enforces a memory limit on a WebAssembly module by rewriting the maximum of every memory it defines
 * to at most `maxPages`, so that `memory.grow` past the limit fails inside the guest. A module whose
 * minimum already exceeds the limit is refused before it runs; so is one that imports its memory
 * (the limit could not be enforced on it) or uses memory64.
 */
export function limitModuleMemory(bytes: Uint8Array, maxPages: number): Uint8Array<ArrayBuffer> {
  if (!isWasm(bytes)) {
    throw new InvalidSourceError('source is not a WebAssembly module (expected the \\0asm magic bytes)', { field: 'source' });
  }
  const r = new Reader(bytes, 8);
  const parts: Uint8Array[] = [bytes.subarray(0, 8)];
  while (r.pos < bytes.byteLength) {
    const start = r.pos;
    const id = r.byte();
    const size = r.u32();
    const bodyStart = r.pos;
    const bodyEnd = bodyStart + size;
    if (bodyEnd > bytes.byteLength) {
      throw new InvalidSourceError('source is not a valid WebAssembly module: a section runs past the end', { field: 'source' });
    }
    if (id === SECTION_IMPORT) checkImports(new Reader(bytes.subarray(bodyStart, bodyEnd)));
    if (id === SECTION_MEMORY) {
      const body = rewriteMemories(new Reader(bytes.subarray(bodyStart, bodyEnd)), maxPages);
      parts.push(Uint8Array.from([id, ...u32leb(body.length), ...body]));
    } else {
      parts.push(bytes.subarray(start, bodyEnd));
    }
    r.pos = bodyEnd;
  }
  return Buffer.concat(parts) as Uint8Array<ArrayBuffer>;
}

function checkImports(r: Reader): void {
  const count = r.u32();
  for (let i = 0; i < count; i++) {
    const mod = r.name();
    const field = r.name();
    const kind = r.byte();
    if (kind === 0x00) r.u32();
    else if (kind === 0x01) {
      r.byte();
      limits(r);
    } else if (kind === 0x02) {
      throw new InvalidSourceError(
        `source imports its memory (${mod}.${field}); vmesh runs WebAssembly modules that define their own memory`,
        { field: 'source' },
      );
    } else if (kind === 0x03) {
      r.byte();
      r.byte();
    } else if (kind === 0x04) {
      r.byte();
      r.u32();
    } else throw new InvalidSourceError(`source is not a valid WebAssembly module: unknown import kind ${kind}`, { field: 'source' });
  }
}

function limits(r: Reader): { flags: number; min: number; max?: number } {
  const flags = r.byte();
  const min = r.u32();
  return flags & 1 ? { flags, min, max: r.u32() } : { flags, min };
}

function rewriteMemories(r: Reader, maxPages: number): number[] {
  const count = r.u32();
  const out = [...u32leb(count)];
  for (let i = 0; i < count; i++) {
    const { flags, min, max } = limits(r);
    if (flags & 0x04) throw new InvalidSourceError('source uses memory64, which vmesh does not run yet', { field: 'source' });
    if (min > maxPages) {
      throw new InvalidInputError(
        `resources.memoryMiB: the module needs at least ${Math.ceil((min * WASM_PAGE) / 2 ** 20)} MiB of memory at start, more than the ${Math.floor((maxPages * WASM_PAGE) / 2 ** 20)} MiB requested`,
        { field: 'resources.memoryMiB' },
      );
    }
    const capped = Math.min(max ?? maxPages, maxPages);
    out.push(flags | 0x01, ...u32leb(min), ...u32leb(capped));
  }
  return out;
}
