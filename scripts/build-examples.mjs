// Builds every examples/*.wat into examples/*.wasm with wabt (run by `npm install` and `npm run build`).
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const examples = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'examples');
let wabt;
try {
  wabt = await (await import('wabt')).default();
} catch {
  console.warn('build-examples: wabt is not installed (a dev dependency); skipping the .wat examples');
  process.exit(0);
}
for (const file of (await readdir(examples)).filter((f) => f.endsWith('.wat'))) {
  const source = await readFile(path.join(examples, file), 'utf8');
  const mod = wabt.parseWat(file, source);
  const { buffer } = mod.toBinary({});
  mod.destroy();
  await writeFile(path.join(examples, file.replace(/\.wat$/, '.wasm')), buffer);
  console.log(`built examples/${file.replace(/\.wat$/, '.wasm')} (${buffer.byteLength} bytes)`);
}
