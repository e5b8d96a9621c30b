/** node:wasi warns that it is experimental once per thread; the bare baseline loads it on the main one. */
export function quietWasiWarning(): void {
  const emitWarning = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    if (String(warning).includes('WASI is an experimental feature')) return;
    emitWarning(warning, ...rest);
  }) as typeof process.emitWarning;
}
