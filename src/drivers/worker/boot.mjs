// Entry of every sandbox worker thread. Under tsx (tests, `vmesh` from a checkout) the worker's own
// module is TypeScript, and Node 20 does not carry the loader into worker threads: register it here.
import { workerData } from 'node:worker_threads';

// node:wasi announces itself as experimental in every thread that loads it; the node logs its drivers.
const emitWarning = process.emitWarning.bind(process);
process.emitWarning = (warning, ...rest) => {
  if (String(warning).includes('WASI is an experimental feature')) return;
  emitWarning(warning, ...rest);
};

if (workerData.entry.endsWith('.ts')) {
  const { register } = await import('tsx/esm/api');
  register();
}
await import(workerData.entry);
