import { readFileSync } from 'node:fs';
import wabtInit from 'wabt';

const FIXTURES = new URL('../fixtures/wat/', import.meta.url);
let wabt: Awaited<ReturnType<typeof wabtInit>> | undefined;

/** Compiles WebAssembly text to a binary module with wabt. */
export async function wat(source: string, name = 'inline.wat'): Promise<Uint8Array> {
  wabt ??= await wabtInit();
  const mod = wabt.parseWat(name, source);
  try {
    return Uint8Array.from(mod.toBinary({}).buffer);
  } finally {
    mod.destroy();
  }
}

/** Compiles test/fixtures/wat/<name>.wat. */
export async function watFixture(name: string): Promise<Uint8Array> {
  return wat(readFileSync(new URL(`${name}.wat`, FIXTURES), 'utf8'), `${name}.wat`);
}
