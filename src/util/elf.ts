// What vmesh reads of an ELF file: the header of a 64-bit little-endian x86 ELF and its program headers
// (the System V ABI's layout; offsets in the ELF-64 header and program header tables).

export const ET_EXEC = 2;
export const ET_DYN = 3;
export const PT_LOAD = 1;
export const PT_INTERP = 3;
export const PT_NOTE = 4;

const EM_X86_64 = 62;
const HEADER_BYTES = 64;
const PROGRAM_HEADER_BYTES = 56;
/** More program headers than this is not a program anyone built. */
const MAX_PROGRAM_HEADERS = 256;

export interface ElfHeader {
  /** e_type: ET_EXEC, ET_DYN, ... */
  type: number;
  phoff: number;
  phentsize: number;
  phnum: number;
}

export interface ProgramHeader {
  type: number;
  offset: number;
  fileSize: number;
}

/** The header of a 64-bit little-endian x86 ELF, from its first 64 bytes; a string says why `head` is not one. */
export function x86ElfHeader(head: Uint8Array): ElfHeader | string {
  const h = Buffer.from(head.buffer, head.byteOffset, head.byteLength);
  if (h.byteLength < HEADER_BYTES || h.toString('latin1', 0, 4) !== '\x7fELF') return 'what it holds is not an ELF file';
  if (h[4] !== 2 || h[5] !== 1 || h.readUInt16LE(18) !== EM_X86_64) return 'what it holds is not a little-endian 64-bit x86 ELF';
  const header = { type: h.readUInt16LE(16), phoff: Number(h.readBigUInt64LE(32)), phentsize: h.readUInt16LE(54), phnum: h.readUInt16LE(56) };
  if (header.phentsize < PROGRAM_HEADER_BYTES || header.phnum > MAX_PROGRAM_HEADERS) return 'its ELF program headers are malformed';
  return header;
}

/** The bytes the program header table takes. */
export function programHeaderBytes(header: ElfHeader): number {
  return header.phentsize * header.phnum;
}

/** The program headers in `table` (read from `header.phoff`, `programHeaderBytes(header)` long). */
export function programHeaders(header: ElfHeader, table: Uint8Array): ProgramHeader[] {
  const t = Buffer.from(table.buffer, table.byteOffset, table.byteLength);
  const headers: ProgramHeader[] = [];
  for (let i = 0; i + PROGRAM_HEADER_BYTES <= t.byteLength; i += header.phentsize) {
    headers.push({ type: t.readUInt32LE(i), offset: Number(t.readBigUInt64LE(i + 8)), fileSize: Number(t.readBigUInt64LE(i + 32)) });
  }
  return headers;
}
