import { AbortedError, throwIfAborted } from '../spec/index.ts';
import type { Driver, RunningSandbox, SandboxExit, SandboxIO, SandboxRequest } from './driver.ts';

export interface LifecycleHooks {
  /** Called once the sandbox has started, just before waiting on it, with the driver's handle on it. */
  onRunning?(sandbox: RunningSandbox): void;
  /** Called with the outcome as soon as the sandbox has ended, before its cleanup runs. */
  onExit?(exit: SandboxExit): void;
}

/**
 * The one path every run takes through a driver: prepare → start → wait, stopped at the timeout or on
 * abort, and cleaned up on every exit path. An abort before the sandbox starts throws AbortedError;
 * an abort after it started ends the sandbox and resolves with outcome `cancelled`.
 */
export async function runInSandbox(
  driver: Driver,
  request: SandboxRequest,
  io: SandboxIO,
  signal?: AbortSignal,
  hooks: LifecycleHooks = {},
): Promise<SandboxExit> {
  throwIfAborted(signal);
  const prepared = await driver.prepare(request, signal);
  try {
    throwIfAborted(signal);
    const sandbox = await driver.start(prepared, io, signal);
    const stop = (reason: 'timeout' | 'cancelled') => {
      driver.stop(sandbox, reason).catch(() => {
        /* stop is best effort; wait() reports how the sandbox really ended */
      });
    };
    const timer = setTimeout(() => stop('timeout'), request.resources.timeoutMs);
    const onAbort = () => stop('cancelled');
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      if (signal?.aborted) stop('cancelled');
      hooks.onRunning?.(sandbox);
      const exit = await driver.wait(sandbox);
      if (hooks.onExit !== undefined) {
        hooks.onExit(exit);
        // Let whoever waits on the result (an HTTP response) go out before the cleanup takes the thread.
        await new Promise((resolve) => setImmediate(resolve));
      }
      return exit;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
  } catch (err) {
    if (signal?.aborted && !(err instanceof AbortedError)) throw new AbortedError();
    throw err;
  } finally {
    await driver.cleanup(prepared);
  }
}
