// Runs inside a worker thread of the wasm driver's pool: one WASI module per task.
import { closeSync, openSync } from 'node:fs';
import { WASI } from 'node:wasi';
import { serve, WorkerStreams, type WorkerResult } from '../worker/protocol.ts';

export interface WasmTask {
  module: WebAssembly.Module;
  entry: string;
  args: string[];
  env: Record<string, string>;
  stdin: string;
  scratch: string;
  outputCapBytes: number;
  memoryCapBytes: number;
  diskCapBytes: number;
}

const ERRNO_SUCCESS = 0;
const ERRNO_NOSPC = 51;
const ERRNO_NOTSUP = 58;
type WasiFn = (...args: number[]) => number;

serve<WasmTask>(async (task) => {
  const streams = new WorkerStreams(task.outputCapBytes);
  // WASI's own stdio point at /dev/null: the guest's bytes reach us through the fd_write/fd_read below,
  // and nothing it does with fds 0-2 (close, seek) can touch the node's own stdio.
  const devnull = [openSync('/dev/null', 'r'), openSync('/dev/null', 'w'), openSync('/dev/null', 'w')] as const;
  const stdin = Buffer.from(task.stdin, 'utf8');
  let stdinPos = 0;
  let diskBytes = 0;
  let memory: WebAssembly.Memory | undefined;
  let closeGuestFds = () => {};
  try {
    const wasi = new WASI({
      version: 'preview1',
      args: task.args,
      env: task.env,
      preopens: { '/': task.scratch },
      stdin: devnull[0],
      stdout: devnull[1],
      stderr: devnull[2],
      returnOnExit: true,
    });
    const imports = wasi.getImportObject() as { wasi_snapshot_preview1: Record<string, WasiFn> };
    const sys = imports.wasi_snapshot_preview1;
    const original = { ...sys };
    // Node's WASI functions are native; V8 builds a fresh wrapper for each native import at every
    // instantiation (~0.3 ms here). Plain JS closures around them instantiate about 8x faster.
    for (const [name, fn] of Object.entries(original)) sys[name] = (...args: number[]) => fn(...args);
    const iovecs = (iovs: number, count: number): Array<[number, number]> => {
      const view = new DataView(memory!.buffer);
      const out: Array<[number, number]> = [];
      for (let i = 0; i < count; i++) out.push([view.getUint32(iovs + i * 8, true), view.getUint32(iovs + i * 8 + 4, true)]);
      return out;
    };
    const guarded = (name: 'fd_write' | 'fd_pwrite') => (fd: number, iovs: number, count: number, ...rest: number[]) => {
      if (name === 'fd_write' && (fd === 1 || fd === 2)) {
        // One fd_write is one chunk, however many buffers it gathers.
        const parts = iovecs(iovs, count).map(([ptr, len]) => new Uint8Array(memory!.buffer, ptr, len));
        const chunk = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
        streams.write(fd === 1 ? 'stdout' : 'stderr', chunk);
        new DataView(memory!.buffer).setUint32(rest[0]!, chunk.byteLength, true);
        return ERRNO_SUCCESS;
      }
      const bytes = iovecs(iovs, count).reduce((n, [, len]) => n + len, 0);
      if (diskBytes + bytes > task.diskCapBytes) return ERRNO_NOSPC;
      diskBytes += bytes;
      return original[name]!(fd, iovs, count, ...rest);
    };
    // Node's WASI closes the descriptors of a finished instance only when it is garbage-collected: the
    // preopen (fd 3) and whatever the guest left open would pile up, one or more per run. Track the
    // highest descriptor the guest was given and close them all when it ends.
    let highestFd = 3;
    const PATH_OPEN_FD_OUT = 8;
    sys.path_open = (...args: number[]) => {
      const errno = original.path_open!(...args);
      if (errno === ERRNO_SUCCESS) highestFd = Math.max(highestFd, new DataView(memory!.buffer).getUint32(args[PATH_OPEN_FD_OUT]!, true));
      return errno;
    };
    closeGuestFds = () => {
      for (let fd = 3; fd <= highestFd; fd++) original.fd_close!(fd);
    };
    // node:wasi resolves a relative symlink without checking that its target stays inside the preopen:
    // a guest that could make `link -> ../../etc` would read the host through it. The scratch directory
    // starts empty, so refusing to create symlinks leaves none to follow.
    sys.path_symlink = () => ERRNO_NOTSUP;
    sys.fd_write = guarded('fd_write');
    sys.fd_pwrite = guarded('fd_pwrite');
    sys.fd_read = (fd: number, iovs: number, count: number, nread: number) => {
      if (fd !== 0) return original.fd_read!(fd, iovs, count, nread);
      let total = 0;
      for (const [ptr, len] of iovecs(iovs, count)) {
        const n = Math.min(len, stdin.byteLength - stdinPos);
        new Uint8Array(memory!.buffer, ptr, n).set(stdin.subarray(stdinPos, stdinPos + n));
        stdinPos += n;
        total += n;
        if (n < len) break;
      }
      new DataView(memory!.buffer).setUint32(nread, total, true);
      return ERRNO_SUCCESS;
    };

    const instance = new WebAssembly.Instance(task.module, imports as WebAssembly.Imports);
    memory = instance.exports.memory as WebAssembly.Memory;
    const result: WorkerResult = { outcome: 'exited', exitCode: 0 };
    try {
      if (task.entry === '_start') {
        result.exitCode = wasi.start(instance);
      } else {
        if (typeof instance.exports._initialize === 'function') wasi.initialize(instance);
        const value = (instance.exports[task.entry] as () => unknown)();
        if (typeof value === 'number' || typeof value === 'bigint') result.output = Number(value);
      }
    } catch (err) {
      result.outcome = 'crashed';
      result.exitCode = null;
      result.reason = `the module trapped: ${(err as Error).message}`;
    }
    result.memoryPeakBytes = memory.buffer.byteLength;
    result.diskBytes = diskBytes;
    result.streamBytes = { ...streams.totals };
    return result;
  } finally {
    closeGuestFds();
    for (const fd of devnull) {
      try {
        closeSync(fd);
      } catch {
        /* the guest may have closed it through WASI already */
      }
    }
  }
});
