// Runs inside a worker thread of the quickjs driver's pool: one fresh QuickJS runtime per task.
import { getQuickJS, type QuickJSContext, type QuickJSHandle } from 'quickjs-emscripten';
import { serve, WorkerStreams, type WorkerResult } from '../worker/protocol.ts';

export interface QuickJsTask {
  source: string;
  entry: string;
  inputJson: string;
  memoryLimitBytes: number;
  /** Epoch milliseconds after which the interpreter is interrupted. */
  deadline: number;
  outputCapBytes: number;
}

const QuickJS = await getQuickJS();
const MAX_STACK_BYTES = 1024 * 1024;

serve<QuickJsTask>(async (task) => {
  const streams = new WorkerStreams(task.outputCapBytes);
  const runtime = QuickJS.newRuntime();
  runtime.setMemoryLimit(task.memoryLimitBytes);
  runtime.setMaxStackSize(MAX_STACK_BYTES);
  let interrupted = false;
  runtime.setInterruptHandler(() => (interrupted ||= Date.now() > task.deadline));
  const ctx = runtime.newContext();
  installConsole(ctx, streams);
  let result = run(ctx, task);
  if (interrupted) result = { outcome: 'timeout', exitCode: null };
  result.streamBytes = { ...streams.totals };
  // Freeing a runtime that ran out of memory or was interrupted mid-allocation can abort the whole wasm
  // module, and with it this thread: such a worker is retired (ended by the pool) instead of reused.
  if (result.outcome !== 'exited') return { ...result, retire: true };
  try {
    ctx.dispose();
    runtime.dispose();
    return result;
  } catch {
    return { ...result, retire: true };
  }
});

function run(ctx: QuickJSContext, task: QuickJsTask): WorkerResult {
  const mod = ctx.evalCode(task.source, 'function.js', { type: 'module' });
  if (mod.error) return failure(ctx, mod.error);
  let exports = mod.value;
  if (isPromise(ctx, exports)) {
    const settled = settle(ctx, exports);
    if ('error' in settled) return failure(ctx, settled.error);
    exports = settled.value;
  }
  const fn = ctx.getProp(exports, task.entry);
  exports.dispose();
  if (ctx.typeof(fn) !== 'function') {
    fn.dispose();
    return { outcome: 'exited', exitCode: 1, reason: `the module has no function export named ${JSON.stringify(task.entry)}` };
  }
  const input = ctx.unwrapResult(ctx.evalCode(`(${task.inputJson})`));
  const called = ctx.callFunction(fn, ctx.undefined, input);
  fn.dispose();
  input.dispose();
  if (called.error) return failure(ctx, called.error);
  let value = called.value;
  if (isPromise(ctx, value)) {
    const settled = settle(ctx, value);
    if ('error' in settled) return failure(ctx, settled.error);
    value = settled.value;
  }
  const json = ctx.getProp(ctx.global, 'JSON');
  const stringify = ctx.getProp(json, 'stringify');
  const text = ctx.callFunction(stringify, json, value);
  json.dispose();
  stringify.dispose();
  value.dispose();
  if (text.error) return failure(ctx, text.error);
  const out = ctx.typeof(text.value) === 'string' ? ctx.getString(text.value) : undefined;
  text.value.dispose();
  if (out !== undefined && out.length > task.outputCapBytes) {
    return { outcome: 'exited', exitCode: 1, reason: `the returned JSON is ${out.length} bytes, over the ${task.outputCapBytes}-byte output cap` };
  }
  const result: WorkerResult = { outcome: 'exited', exitCode: 0 };
  if (out !== undefined) result.output = JSON.parse(out) as unknown;
  return result;
}

function isPromise(ctx: QuickJSContext, h: QuickJSHandle): boolean {
  const state = ctx.getPromiseState(h);
  return !(state.type === 'fulfilled' && state.notAPromise === true);
}

/** Drives the QuickJS job queue until a promise settles (there is no event loop inside). */
function settle(ctx: QuickJSContext, promise: QuickJSHandle): { value: QuickJSHandle } | { error: QuickJSHandle } {
  for (let i = 0; i < 1_000_000; i++) {
    const state = ctx.getPromiseState(promise);
    if (state.type === 'fulfilled') {
      promise.dispose();
      return { value: state.value };
    }
    if (state.type === 'rejected') {
      promise.dispose();
      return { error: state.error };
    }
    const jobs = ctx.runtime.executePendingJobs();
    if (jobs.error) {
      promise.dispose();
      return { error: jobs.error };
    }
    if (jobs.value === 0 && ctx.getPromiseState(promise).type === 'pending') {
      promise.dispose();
      return { error: ctx.newError('the function awaited a promise that can never settle (no I/O exists here)') };
    }
  }
  promise.dispose();
  return { error: ctx.newError('promise did not settle') };
}

function failure(ctx: QuickJSContext, error: QuickJSHandle): WorkerResult {
  const dumped = ctx.dump(error) as { name?: string; message?: string; stack?: string } | string;
  error.dispose();
  const message = typeof dumped === 'object' && dumped !== null ? `${dumped.name ?? 'Error'}: ${dumped.message ?? ''}` : String(dumped);
  if (/out of memory/i.test(message)) return { outcome: 'oom', exitCode: null, reason: message };
  if (/interrupted/i.test(message)) return { outcome: 'timeout', exitCode: null, reason: message };
  const stack = typeof dumped === 'object' && dumped?.stack ? `\n${dumped.stack}` : '';
  return { outcome: 'exited', exitCode: 1, reason: `the function threw ${message}${stack}` };
}

function installConsole(ctx: QuickJSContext, streams: WorkerStreams): void {
  const console = ctx.newObject();
  const writer = (stream: 'stdout' | 'stderr') =>
    ctx.newFunction('log', (...args) => {
      const line = args.map((a) => (ctx.typeof(a) === 'string' ? ctx.getString(a) : JSON.stringify(ctx.dump(a)))).join(' ');
      streams.write(stream, Buffer.from(line + '\n', 'utf8'));
    });
  for (const [name, stream] of [['log', 'stdout'], ['info', 'stdout'], ['warn', 'stderr'], ['error', 'stderr']] as const) {
    const fn = writer(stream);
    ctx.setProp(console, name, fn);
    fn.dispose();
  }
  ctx.setProp(ctx.global, 'console', console);
  console.dispose();
}
