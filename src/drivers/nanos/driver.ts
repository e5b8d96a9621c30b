import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { NO_OUTPUTS, packOutputs, type CollectedOutputs } from '../../outputs/pack.ts';
import { InvalidInputError, outputPaths, UnsupportedError, type WorkloadKind } from '../../spec/index.ts';
import { run } from '../../util/exec.ts';
import type { Driver, DriverProbe, PreparedSandbox, RunningSandbox, SandboxExit, SandboxIO, SandboxRequest } from '../driver.ts';
import { GuestVmDriver, type GuestVmOptions, type VmProcess, type VmSandbox } from '../guest-vm/vm-driver.ts';
import { stoppedExit } from '../guest-vm/session.ts';
import { placeInputs } from '../inputs.ts';
import { SANDBOX_TAP } from '../../net/sandbox-network.ts';
import { wantsNetwork } from '../sandbox-network.ts';
import { killLeftoverVms } from '../vmm/leftovers.ts';
import { unikernelArgs, unikernelExit } from './command-line.ts';
import { buildImage, copyOut, opsHome, opsVersions } from './ops.ts';
import { opsConfig, PROGRAM, RESERVED_MANIFEST_KEYS } from './ops-config.ts';
import { checkProgram } from './program.ts';
import { closeQmp, QMP_SOCKET, qmpOf, type QmpClient } from '../qemu/qmp.ts';

export interface NanosDriverOptions extends GuestVmOptions {
  /** The ops binary (default `ops` on the PATH). */
  ops?: string;
  qemu?: string;
  /** The accelerator QEMU runs the unikernel with: the QEMU driver's, which probed whether KVM boots here (default tcg). */
  accel?: () => 'kvm' | 'tcg';
}

/** The least memory a unikernel is given: Nanos and its page tables, and the program. */
export const MIN_UNIKERNEL_MEMORY_MIB = 64;
/** How long copying a run's outputs out of its image may take. */
const COPY_OUT_TIMEOUT_MS = 120_000;
/**
 * Names of the images a node builds in ops's image directory, which every node on the host shares: each
 * is moved out at once (a crash can leave one), and `recover` removes this node's only.
 */
function imagePrefix(sandboxRoot: string): string {
  return `vmesh-${createHash('sha256').update(sandboxRoot).digest('hex').slice(0, 8)}-`;
}

interface NanosPrepared extends VmSandbox {
  readonly image: string;
  readonly vcpus: number;
  readonly memoryMiB: number;
}

interface NanosRunning extends VmProcess {
  readonly prepared: NanosPrepared;
  consoleTail: string;
  qmp?: Promise<QmpClient>;
}

/**
 * Nanos unikernels (kind `unikernel`): the run's program, a 64-bit x86 Linux ELF, built into a Nanos
 * image by ops (`ops build`, with its args, env and input files in the config), then started by vmesh
 * with QEMU, as ops would start it, but under vmesh's own timeout, cleanup and accelerator choice. The
 * console is the run's stdout (Nanos merges the program's stdout and stderr on it); the program's exit
 * code comes back through QEMU's isa-debug-exit port. Pause and resume stop and continue the unikernel's
 * vCPUs through QMP; a unikernel is not captured into a snapshot yet.
 */
export class NanosDriver extends GuestVmDriver<NanosPrepared, NanosRunning> implements Driver {
  readonly name = 'nanos';
  override readonly kinds: readonly WorkloadKind[] = ['unikernel'];
  private readonly ops: string;
  private readonly qemu: string;
  private version = '';

  constructor(private readonly options: NanosDriverOptions = {}) {
    super(options);
    this.ops = options.ops ?? 'ops';
    this.qemu = options.qemu ?? 'qemu-system-x86_64';
  }

  async probe(signal?: AbortSignal): Promise<DriverProbe> {
    if (process.platform !== 'linux') return { available: false, reason: 'unikernels need Linux' };
    const opts = { timeoutMs: 10_000, ...(signal === undefined ? {} : { signal }) };
    try {
      await run(this.qemu, ['--version'], opts);
    } catch {
      return { available: false, reason: `${this.qemu} not found (apt-get install qemu-system-x86)` };
    }
    let versions;
    try {
      versions = await opsVersions(this.ops, signal);
    } catch {
      return { available: false, reason: `${this.ops} not found: install ops (https://ops.city), then run \`ops update\` once for a Nanos kernel` };
    }
    if (versions.nanos === undefined) return { available: false, reason: `ops ${versions.ops} holds no Nanos kernel: run \`ops update\` once (it downloads one into ${opsHome()})` };
    this.version = `ops ${versions.ops}, nanos ${versions.nanos}`;
    return { available: true, version: this.version, details: { accel: this.accel() } };
  }

  private accel(): 'kvm' | 'tcg' {
    return this.options.accel?.() ?? 'tcg';
  }

  /** A program and what it is run with; nothing that needs a shell or an agent inside the guest. */
  async validate(request: SandboxRequest): Promise<void> {
    const w = request.workload;
    if (request.restoreFrom !== undefined) throw new UnsupportedError('source: a unikernel cannot be restored from a snapshot yet', { field: 'source' });
    if (request.kernel !== undefined || request.code.byteLength === 0) {
      throw new InvalidInputError('source: a unikernel runs a program: give its ELF as source (inline base64, file or blob)', { field: 'source' });
    }
    const unsupported: Array<[string, unknown, string]> = [
      ['command', w.command, 'give the program as source and its arguments as args'],
      ['stdin', w.stdin, 'a unikernel has no stdin'],
      ['workdir', w.workdir, 'the program runs in /'],
    ];
    for (const [field, given, why] of unsupported) {
      if (given !== undefined) throw new InvalidInputError(`${field}: not for a unikernel (${why})`, { field });
    }
    wantsNetwork(request, this.options.networks);
    for (const key of Object.keys(w.unikernel?.manifest ?? {})) {
      if (RESERVED_MANIFEST_KEYS.has(key)) throw new InvalidInputError(`unikernel.manifest.${key}: set by vmesh itself (${[...RESERVED_MANIFEST_KEYS].join(', ')} are)`, { field: `unikernel.manifest.${key}` });
    }
    if (request.resources.memoryMiB < MIN_UNIKERNEL_MEMORY_MIB) {
      throw new InvalidInputError(`resources.memoryMiB: a unikernel needs at least ${MIN_UNIKERNEL_MEMORY_MIB} MiB`, { field: 'resources.memoryMiB' });
    }
    checkProgram(request.code);
  }

  /** Stages the program and its inputs, has ops build the image, and keeps only the image. */
  async prepare(request: SandboxRequest, signal?: AbortSignal): Promise<NanosPrepared> {
    await this.validate(request);
    const describe = (dir: string) => ({
      image: path.join(dir, 'image.raw'),
      vcpus: request.resources.vcpus,
      memoryMiB: request.resources.memoryMiB,
      outputs: outputPaths(request.workload),
    });
    return this.stage(request, describe, async (p) => {
      await this.attachNetwork(p, signal);
      const build = path.join(p.dir, 'build');
      await fs.mkdir(build);
      await fs.writeFile(path.join(build, PROGRAM), request.code, { mode: 0o755 });
      if (request.inputs !== undefined) await placeInputs(path.join(build, 'in'), request.inputs);
      if (outputPaths(request.workload).length > 0) await fs.mkdir(path.join(build, 'out'));
      await fs.writeFile(path.join(build, 'config.json'), JSON.stringify(opsConfig(request, p.network)));
      const name = `${imagePrefix(this.sandboxRoot)}${request.runId}-${randomBytes(4).toString('hex')}`;
      await buildImage(this.ops, build, PROGRAM, name, p.image, signal);
      await fs.rm(build, { recursive: true, force: true });
    });
  }

  async start(prepared: PreparedSandbox, io: SandboxIO): Promise<NanosRunning> {
    const p = prepared as NanosPrepared;
    const args = unikernelArgs({
      accel: this.accel(),
      vcpus: p.vcpus,
      memoryMiB: p.memoryMiB,
      image: p.image,
      qmpSocket: path.join(p.dir, QMP_SOCKET),
      pidFile: path.join(p.dir, 'qemu.pid'),
      ...(p.request.resources.disk === undefined ? {} : { disk: p.request.resources.disk }),
      ...(p.network === undefined ? {} : { tap: SANDBOX_TAP }),
    });
    const onStdout = (chunk: Buffer) => {
      io.write('stdout', chunk);
      running.consoleTail = (running.consoleTail + chunk.toString('latin1')).slice(-4096);
    };
    const running: NanosRunning = Object.assign(this.spawnVm(p, this.qemu, args, io, { onStdout }), { prepared: p, consoleTail: '' });
    this.running.add(running);
    return running;
  }

  /** Stops the unikernel's vCPUs (its clock with them); `resume` goes on. */
  async pause(sandbox: RunningSandbox): Promise<void> {
    await (await this.qmp(sandbox as NanosRunning)).execute('stop');
  }

  async resume(sandbox: RunningSandbox): Promise<void> {
    await (await this.qmp(sandbox as NanosRunning)).execute('cont');
  }

  private qmp(r: NanosRunning): Promise<QmpClient> {
    return qmpOf(r, path.join(r.prepared.dir, QMP_SOCKET));
  }

  protected override releaseVm(r: NanosRunning): void {
    closeQmp(r);
  }

  async wait(sandbox: RunningSandbox): Promise<SandboxExit> {
    const r = sandbox as NanosRunning;
    try {
      const status = await r.exited;
      const base = { outputs: NO_OUTPUTS, usage: {} };
      const exit = stoppedExit(r.stopReason, r.prepared.request, base) ?? unikernelExit(status, r.errors, r.consoleTail, base);
      // Nanos syncs its filesystem when the program exits, not when it is killed or faults.
      return exit.outcome === 'exited' ? { ...exit, outputs: await this.outputsOf(r.prepared) } : exit;
    } finally {
      this.running.delete(r);
    }
  }

  /** The declared outputs, from the image's /out once the unikernel has ended (copied out by ops). */
  private async outputsOf(p: NanosPrepared): Promise<CollectedOutputs> {
    if (p.outputs.length === 0) return NO_OUTPUTS;
    try {
      const name = `${imagePrefix(this.sandboxRoot)}${path.basename(p.dir)}-out`;
      const out = await copyOut(this.ops, p.image, name, path.join(p.dir, 'copied'), AbortSignal.timeout(COPY_OUT_TIMEOUT_MS));
      return await packOutputs(out, p.outputs, p.request.outputs);
    } catch (err) {
      return { files: [], skipped: p.outputs.map((o) => ({ path: o, reason: `not copied out of the image: ${(err as Error).message}` })) };
    }
  }

  /** Kills the QEMU processes a previous node left, and removes their directories and any image ops built for them. */
  async recover(): Promise<number> {
    const images = path.join(opsHome(), 'images');
    const names = await fs.readdir(images).catch(() => [] as string[]);
    const mine = imagePrefix(this.sandboxRoot);
    await Promise.all(names.filter((n) => n.startsWith(mine)).map((n) => fs.rm(path.join(images, n), { force: true })));
    return killLeftoverVms({ sandboxRoot: this.sandboxRoot, prefix: 'nanos-', pidFile: 'qemu.pid', binary: 'qemu-system' });
  }
}
