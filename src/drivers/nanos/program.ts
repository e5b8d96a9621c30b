// The program a unikernel runs: what is checked of it before ops sees it.
import { InvalidInputError } from '../../spec/index.ts';
import { ET_DYN, ET_EXEC, programHeaderBytes, programHeaders, PT_INTERP, x86ElfHeader } from '../../util/elf.ts';

/** The largest program a unikernel image takes. */
export const MAX_PROGRAM_BYTES = 256 * 2 ** 20;

/**
 * The one program loader a dynamically linked program may name. ops lists a dynamic program's libraries
 * by running its loader on the host (`LD_TRACE_LOADED_OBJECTS=1`): glibc's loader then only lists them,
 * but a program naming another loader would have that loader run on the host. So the rest are refused.
 */
export const GLIBC_LOADER = '/lib64/ld-linux-x86-64.so.2';

/** How the program is linked: on its own, or against the host's glibc (whose libraries ops copies into the image). */
export type Linkage = 'static' | 'glibc';

/** Checks that `code` is a program Nanos runs: a 64-bit x86 ELF executable, static or linked against glibc. */
export function checkProgram(code: Uint8Array): Linkage {
  const refuse = (why: string) => new InvalidInputError(`source: a unikernel runs a 64-bit x86 Linux ELF program; ${why}`, { field: 'source' });
  if (code.byteLength > MAX_PROGRAM_BYTES) throw refuse(`this one is ${code.byteLength} bytes, over the ${MAX_PROGRAM_BYTES}-byte limit`);
  const header = x86ElfHeader(code.subarray(0, 64));
  if (typeof header === 'string') throw refuse(header);
  if (header.type !== ET_EXEC && header.type !== ET_DYN) throw refuse(`this ELF is not an executable (e_type ${header.type}: an object file or a core dump)`);
  const tableEnd = header.phoff + programHeaderBytes(header);
  if (header.phnum === 0 || tableEnd > code.byteLength) throw refuse('its program headers are missing or cut off');
  const interp = programHeaders(header, code.subarray(header.phoff, tableEnd)).find((h) => h.type === PT_INTERP);
  if (interp === undefined) return 'static';
  if (interp.offset + interp.fileSize > code.byteLength || interp.fileSize > 4096) throw refuse('its program interpreter segment is cut off');
  const loader = Buffer.from(code.subarray(interp.offset, interp.offset + interp.fileSize)).toString('latin1').replace(/\0+$/, '');
  if (loader !== GLIBC_LOADER) throw refuse(`it names ${JSON.stringify(loader)} as its loader; link it statically, or against glibc (${GLIBC_LOADER})`);
  return 'glibc';
}
