// Builds vmesh for running without tsx: compiles src/ to dist/ (tsc), copies the files tsc does not
// (SQL migrations, the worker boot module), builds the examples, and stamps dist/ as fresh.
// Run by `npm install`/`npm ci` and by `npm test`; bin/vmesh.js falls back to src/ when dist/ is stale.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const src = path.join(root, 'src');
const dist = path.join(root, 'dist');

let tsc;
try {
  tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
} catch {
  console.warn('build: typescript is not installed; vmesh will run from src/ through tsx');
}
if (tsc !== undefined) {
  rmSync(dist, { recursive: true, force: true });
  execFileSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.build.json')], { stdio: 'inherit' });
  for (const rel of readdirSync(src, { recursive: true })) {
    if (!/\.(sql|mjs)$/.test(rel)) continue;
    mkdirSync(path.dirname(path.join(dist, rel)), { recursive: true });
    cpSync(path.join(src, rel), path.join(dist, rel));
  }
  writeFileSync(path.join(dist, '.stamp'), `${new Date().toISOString()}\n`);
  console.log('build: compiled src/ to dist/');
}

if (existsSync(path.join(root, 'scripts', 'build-examples.mjs'))) {
  execFileSync(process.execPath, [path.join(root, 'scripts', 'build-examples.mjs')], { stdio: 'inherit' });
}
