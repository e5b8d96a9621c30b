import { sha256 } from '../../blobs/blob-store.ts';
import { InvalidSourceError, type Workload } from '../../spec/index.ts';
import type { DriverProbe, SandboxRequest } from '../driver.ts';
import { WorkerSandboxDriver, type WorkerDriverOptions, type WorkerPrepared } from '../worker/driver-base.ts';
import type { WorkerResult } from '../worker/protocol.ts';
import { isWasm, limitModuleMemory, WASM_PAGE } from './module-limits.ts';
import type { WasmTask } from './worker.ts';

const ENTRY = new URL('./worker' + (import.meta.url.endsWith('.ts') ? '.ts' : '.js'), import.meta.url);
const MODULE_CACHE_ENTRIES = 64;

interface WasmPrepared extends WorkerPrepared {
  readonly module: WebAssembly.Module;
  readonly memoryCapBytes: number;
}

/**
 * WASI preview1 modules run with node:wasi inside a pooled worker thread. Isolation: the module sees
 * only its own linear memory, a private scratch directory as its one preopen, and the stdio the node
 * gives it. Memory is capped by rewriting the module's memory maximum; time by terminating the thread.
 */
export class WasmDriver extends WorkerSandboxDriver<WasmPrepared, WasmTask> {
  readonly name = 'wasm';
  readonly kinds = ['function'] as const;
  readonly isolation = 'language' as const;
  /** Compiled modules by hash of the (memory-limited) bytes, most recently used last. */
  private readonly modules = new Map<string, WebAssembly.Module>();

  constructor(options: WorkerDriverOptions = {}) {
    // The worker's own JS heap stays small: guest memory lives outside it and is capped per module.
    super(ENTRY, options, { maxOldGenerationSizeMb: 96, maxYoungGenerationSizeMb: 16 });
  }

  accepts(workload: Workload, code: Uint8Array): boolean {
    if (workload.kind !== 'function') return false;
    return workload.runtime === 'wasm' || (workload.runtime === undefined && isWasm(code));
  }

  async probe(): Promise<DriverProbe> {
    const wasi = await import('node:wasi').catch(() => undefined);
    if (wasi === undefined) return { available: false, reason: 'node:wasi is missing from this Node.js build' };
    return { available: true, version: `node ${process.versions.node} wasi preview1, v8 ${process.versions.v8}` };
  }

  async validate(request: SandboxRequest): Promise<void> {
    await this.compile(request);
  }

  protected async stage(request: SandboxRequest, scratch: string): Promise<WasmPrepared> {
    const { module, memoryCapBytes } = await this.compile(request);
    return { request, scratch, module, memoryCapBytes };
  }

  /** Limits the module's memory to the request, compiles it (cached by hash) and checks its exports. */
  private async compile(request: SandboxRequest): Promise<{ module: WebAssembly.Module; memoryCapBytes: number }> {
    const maxPages = Math.floor((request.resources.memoryMiB * 2 ** 20) / WASM_PAGE);
    // The same code with the same limit compiles to the same module: key by the code's hash when known.
    const key = `${request.codeHash ?? sha256(request.code)}/${maxPages}`;
    let module = this.modules.get(key);
    if (module === undefined) {
      const limited = limitModuleMemory(request.code, maxPages);
      try {
        module = await WebAssembly.compile(limited);
      } catch (err) {
        throw new InvalidSourceError(`source is not a valid WebAssembly module: ${(err as Error).message}`, { field: 'source', cause: err });
      }
      this.remember(key, module);
    } else {
      this.modules.delete(key);
      this.modules.set(key, module);
    }
    const exports = WebAssembly.Module.exports(module).map((e) => e.name);
    const entry = request.workload.entry ?? '_start';
    if (!exports.includes(entry)) {
      throw new InvalidSourceError(`entry: the module has no export named ${JSON.stringify(entry)} (it exports ${exports.join(', ') || 'nothing'})`, { field: 'entry' });
    }
    if (!exports.includes('memory')) {
      throw new InvalidSourceError('source: a WASI module must export its memory as "memory"', { field: 'source' });
    }
    return { module, memoryCapBytes: maxPages * WASM_PAGE };
  }

  protected task(p: WasmPrepared): WasmTask {
    const w = p.request.workload;
    let stdin = w.stdin;
    if (stdin === undefined && w.input !== undefined) stdin = JSON.stringify(w.input);
    return {
      module: p.module,
      entry: w.entry ?? '_start',
      args: [w.name ?? 'main.wasm', ...(w.args ?? [])],
      env: w.env ?? {},
      stdin: stdin ?? '',
      scratch: p.scratch,
      outputCapBytes: p.request.outputCapBytes,
      memoryCapBytes: p.memoryCapBytes,
      diskCapBytes: p.request.resources.diskMiB * 2 ** 20,
    };
  }

  protected verdict(p: WasmPrepared, r: WorkerResult) {
    const failed = r.outcome === 'crashed' || (r.outcome === 'exited' && r.exitCode !== 0);
    // A failed memory.grow is invisible from outside the guest; what it leaves is a failure with the
    // memory near its cap (a grow asks for up to one eighth more at a time in common allocators).
    const headroom = Math.max(WASM_PAGE, p.memoryCapBytes / 8);
    const atCap = (r.memoryPeakBytes ?? 0) + headroom > p.memoryCapBytes;
    if (r.outcome === 'oom' || (failed && atCap)) {
      const why = `memory limit of ${p.request.resources.memoryMiB} MiB reached`;
      return { outcome: 'oom' as const, exitCode: r.exitCode, reason: r.reason ? `${why} (${r.reason})` : why };
    }
    const out: { outcome: WorkerResult['outcome'] | 'crashed'; exitCode: number | null; reason?: string; output?: unknown } = {
      outcome: r.outcome === 'crashed' ? 'crashed' : r.outcome,
      exitCode: r.exitCode,
    };
    if (r.reason !== undefined) out.reason = r.reason;
    if (r.output !== undefined) out.output = r.output;
    return out;
  }

  private remember(key: string, module: WebAssembly.Module): void {
    this.modules.set(key, module);
    if (this.modules.size > MODULE_CACHE_ENTRIES) {
      const oldest = this.modules.keys().next().value;
      if (oldest !== undefined) this.modules.delete(oldest);
    }
  }
}
