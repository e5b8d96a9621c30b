// What vmesh reads of an ELF file: the header of a 64-bit little-endian x86 ELF and its program headers
// (the System V ABI's layout; offsets in the ELF-64 header and program header tables).

export const ET_EXEC = 2;
export const ET_DYN = 3;
export const PT_LOAD = 1;
export const PT_INTERP = 3;
export const PT_NOTE = 4;
export const PT_DYNAMIC = 2;
export const SHT_DYNAMIC = 6;
export const DT_NEEDED = 1;
export const DT_AUDIT = 0x6ffffefc;
export const DT_DEPAUDIT = 0x6ffffefb;

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
  shoff: number;
  shentsize: number;
  shnum: number;
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
  const header = {
    type: h.readUInt16LE(16),
    phoff: Number(h.readBigUInt64LE(32)),
    phentsize: h.readUInt16LE(54),
    phnum: h.readUInt16LE(56),
    shoff: Number(h.readBigUInt64LE(40)),
    shentsize: h.readUInt16LE(58),
    shnum: h.readUInt16LE(60),
  };
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

/** Where a region of a file lies: its offset and size in bytes. */
export interface FileRegion {
  offset: number;
  size: number;
}

/**
 * The dynamic tags (d_tag of each 16-byte entry, up to DT_NULL) of every dynamic table in an ELF held in
 * memory: the PT_DYNAMIC segment's, and every SHT_DYNAMIC section's (tools that read section headers, such
 * as Go's debug/elf, find DT_NEEDED there). A table that runs past the file is a string: why it is refused.
 */
export function dynamicTags(header: ElfHeader, file: Uint8Array): number[] | string {
  const f = Buffer.from(file.buffer, file.byteOffset, file.byteLength);
  const tables: FileRegion[] = [];
  const phEnd = header.phoff + programHeaderBytes(header);
  if (phEnd <= f.byteLength) {
    for (const h of programHeaders(header, f.subarray(header.phoff, phEnd))) if (h.type === PT_DYNAMIC) tables.push({ offset: h.offset, size: h.fileSize });
  }
  if (header.shnum > 0) {
    const shEnd = header.shoff + header.shentsize * header.shnum;
    if (header.shentsize < 64 || shEnd > f.byteLength) return 'its section headers are cut off';
    for (let i = header.shoff; i < shEnd; i += header.shentsize) {
      if (f.readUInt32LE(i + 4) === SHT_DYNAMIC) tables.push({ offset: Number(f.readBigUInt64LE(i + 24)), size: Number(f.readBigUInt64LE(i + 32)) });
    }
  }
  const tags: number[] = [];
  for (const { offset, size } of tables) {
    if (offset + size > f.byteLength) return 'its dynamic table runs past the end of the file';
    for (let at = offset; at + 16 <= offset + size; at += 16) {
      const tag = Number(f.readBigInt64LE(at));
      if (tag === 0) break;
      tags.push(tag);
    }
  }
  return tags;
}
