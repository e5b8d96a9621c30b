#!/usr/bin/env node
// The vmesh command. Runs the compiled dist/ when it is at least as new as every file in src/
// (`npm run build` makes it); otherwise runs src/ directly through the tsx loader.
import { readdirSync, statSync } from 'node:fs';

const root = new URL('../', import.meta.url);

function distIsFresh() {
  let built;
  try {
    built = statSync(new URL('dist/.stamp', root)).mtimeMs;
  } catch {
    return false;
  }
  const src = new URL('src/', root);
  return readdirSync(src, { recursive: true }).every((rel) => statSync(new URL(rel, src)).mtimeMs <= built);
}

if (process.env.VMESH_FROM_SOURCE !== '1' && distIsFresh()) {
  await import('../dist/cli/main.js');
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../src/cli/main.ts');
}
