import { InvalidSourceError, type Workload } from '../../spec/index.ts';
import type { DriverProbe, SandboxRequest } from '../driver.ts';
import { isWasm } from '../wasm/module-limits.ts';
import { WorkerSandboxDriver, type WorkerDriverOptions, type WorkerPrepared } from '../worker/driver-base.ts';
import type { WorkerResult } from '../worker/protocol.ts';
import type { QuickJsTask } from './worker.ts';

const ENTRY = new URL('./worker' + (import.meta.url.endsWith('.ts') ? '.ts' : '.js'), import.meta.url);
/** Sources above this are refused before they reach the interpreter. */
const MAX_SOURCE_BYTES = 8 * 1024 * 1024;

interface QuickJsPrepared extends WorkerPrepared {
  readonly source: string;
}

/**
 * JavaScript functions in QuickJS (compiled to wasm) inside a pooled worker thread. The module's
 * default export takes the JSON input and returns JSON. The interpreter has no file system, no network
 * and no host objects but a `console`; memory is capped by QuickJS's allocator and time by an interrupt
 * at the deadline, with termination of the thread as the backstop.
 */
export class QuickJsDriver extends WorkerSandboxDriver<QuickJsPrepared, QuickJsTask> {
  readonly name = 'quickjs';
  readonly kinds = ['function'] as const;
  readonly isolation = 'language' as const;

  constructor(options: WorkerDriverOptions = {}) {
    super(ENTRY, options, { maxOldGenerationSizeMb: 96, maxYoungGenerationSizeMb: 16 });
  }

  accepts(workload: Workload, code: Uint8Array): boolean {
    if (workload.kind !== 'function') return false;
    return workload.runtime === 'js' || (workload.runtime === undefined && !isWasm(code));
  }

  async probe(): Promise<DriverProbe> {
    try {
      const pkg = (await import('quickjs-emscripten/package.json', { with: { type: 'json' } })).default as { version: string };
      return { available: true, version: `quickjs-emscripten ${pkg.version}` };
    } catch (err) {
      return { available: false, reason: `quickjs-emscripten is not installed (npm install quickjs-emscripten): ${(err as Error).message}` };
    }
  }

  async validate(request: SandboxRequest): Promise<void> {
    this.decode(request);
  }

  protected async stage(request: SandboxRequest, scratch: string): Promise<QuickJsPrepared> {
    return { request, scratch, source: this.decode(request) };
  }

  private decode(request: SandboxRequest): string {
    if (request.code.byteLength > MAX_SOURCE_BYTES) {
      throw new InvalidSourceError(`source: a js function may be at most ${MAX_SOURCE_BYTES} bytes`, { field: 'source' });
    }
    if (isWasm(request.code)) {
      throw new InvalidSourceError('source is a WebAssembly module, not JavaScript (use runtime "wasm")', { field: 'source' });
    }
    let source: string;
    try {
      source = new TextDecoder('utf-8', { fatal: true }).decode(request.code);
    } catch {
      throw new InvalidSourceError('source: a js function must be utf8 text', { field: 'source' });
    }
    return source;
  }

  protected task(p: QuickJsPrepared): QuickJsTask {
    const w = p.request.workload;
    return {
      source: p.source,
      entry: w.entry ?? 'default',
      inputJson: w.input === undefined ? 'null' : JSON.stringify(w.input),
      memoryLimitBytes: p.request.resources.memoryMiB * 2 ** 20,
      deadline: Date.now() + p.request.resources.timeoutMs,
      outputCapBytes: p.request.outputCapBytes,
    };
  }

  protected verdict(p: QuickJsPrepared, r: WorkerResult) {
    const out: { outcome: WorkerResult['outcome']; exitCode: number | null; reason?: string; output?: unknown } = {
      outcome: r.outcome,
      exitCode: r.exitCode,
    };
    if (r.outcome === 'oom') out.reason = `memory limit of ${p.request.resources.memoryMiB} MiB reached`;
    else if (r.outcome === 'timeout') out.reason = `interrupted at the ${p.request.resources.timeoutMs} ms timeout`;
    else if (r.reason !== undefined) out.reason = r.reason;
    if (r.output !== undefined) out.output = r.output;
    return out;
  }
}
