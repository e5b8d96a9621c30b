// Imported first by bench/run.ts, for its side effect: node:wasi warns that it is experimental when it
// is loaded, and ES modules load every static import before the importer's own code runs.
const emitWarning = process.emitWarning.bind(process) as (...args: unknown[]) => void;

process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
  if (String(warning).includes('WASI is an experimental feature')) return;
  emitWarning(warning, ...rest);
}) as typeof process.emitWarning;
