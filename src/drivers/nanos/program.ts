// The program a unikernel runs: what is checked of it before ops sees it.
import { InvalidInputError } from '../../spec/index.ts';
import { DT_AUDIT, DT_DEPAUDIT, DT_NEEDED, dynamicTags, ET_DYN, ET_EXEC, programHeaderBytes, programHeaders, PT_INTERP, x86ElfHeader } from '../../util/elf.ts';

/** The largest program a unikernel image takes. */
export const MAX_PROGRAM_BYTES = 256 * 2 ** 20;

/**
 * Checks that `code` is a program Nanos runs and that ops can build without running it: a 64-bit x86
 * ELF executable, statically linked. ops 0.1.46 lists a dynamic program's libraries (one with DT_NEEDED
 * in its section headers) by running the program itself on the host with `LD_TRACE_LOADED_OBJECTS=1`
 * (lepton/ldd_linux.go): a program that names libraries but no loader would simply run, and glibc's
 * loader runs audit libraries (DT_AUDIT) even then. So a program that names a loader or a library is
 * refused until ops runs in a sandbox of its own.
 */
export function checkProgram(code: Uint8Array): void {
  const refuse = (why: string) => new InvalidInputError(`source: a unikernel runs a statically linked 64-bit x86 Linux ELF program; ${why}`, { field: 'source' });
  if (code.byteLength > MAX_PROGRAM_BYTES) throw refuse(`this one is ${code.byteLength} bytes, over the ${MAX_PROGRAM_BYTES}-byte limit`);
  const header = x86ElfHeader(code.subarray(0, 64));
  if (typeof header === 'string') throw refuse(header);
  if (header.type !== ET_EXEC && header.type !== ET_DYN) throw refuse(`this ELF is not an executable (e_type ${header.type}: an object file or a core dump)`);
  const tableEnd = header.phoff + programHeaderBytes(header);
  if (header.phnum === 0 || tableEnd > code.byteLength) throw refuse('its program headers are missing or cut off');
  const interp = programHeaders(header, code.subarray(header.phoff, tableEnd)).find((h) => h.type === PT_INTERP);
  const linked = 'link it statically (ops would run a dynamically linked program on this host to list its libraries)';
  if (interp !== undefined) {
    const end = Math.min(code.byteLength, interp.offset + Math.min(interp.fileSize, 4096));
    const loader = Buffer.from(code.subarray(Math.min(interp.offset, end), end)).toString('latin1').replace(/\0+$/, '');
    throw refuse(`it is dynamically linked (its loader is ${JSON.stringify(loader)}); ${linked}`);
  }
  const tags = dynamicTags(header, code);
  if (typeof tags === 'string') throw refuse(tags);
  if (tags.some((t) => t === DT_NEEDED || t === DT_AUDIT || t === DT_DEPAUDIT)) throw refuse(`it names shared libraries to load; ${linked}`);
}
