import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runArchive } from '../../guest/agent.ts';
import { ConsoleParser } from '../../guest/console.ts';
import type { GuestImage } from '../../guest/image.ts';
import { microVmArgs } from './command-line.ts';
import { QMP_SOCKET } from './qmp.ts';

/** Whether the default guest boots under KVM on this host, as a boot probe found it. */
export interface KvmVerdict {
  /** The host it holds for (kernel, QEMU, CPU): another asks again. */
  key: string;
  boots: boolean;
  /** What the probe saw, for `vmesh drivers`. */
  reason: string;
  at: string;
}

/** What identifies the host for a verdict: a new kernel, QEMU version or CPU model probes again. */
export async function kvmHostKey(qemuVersion: string): Promise<string> {
  const cpuinfo = await fs.readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  const cpu = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? 'unknown CPU';
  return `linux ${os.release()}; qemu ${qemuVersion}; ${cpu}`;
}

export async function readKvmVerdict(file: string, key: string): Promise<KvmVerdict | undefined> {
  try {
    const verdict = JSON.parse(await fs.readFile(file, 'utf8')) as KvmVerdict;
    return verdict.key === key && typeof verdict.boots === 'boolean' ? verdict : undefined;
  } catch {
    return undefined;
  }
}

export async function writeKvmVerdict(file: string, verdict: KvmVerdict): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  await fs.writeFile(tmp, JSON.stringify(verdict));
  await fs.rename(tmp, file);
}

export interface KvmProbeOptions {
  binary: string;
  image: GuestImage;
  /** A scratch directory (created, then removed). */
  dir: string;
  /** How long the guest may take to report (a guest that boots under KVM does it in well under a second). */
  timeoutMs: number;
  signal?: AbortSignal;
}

/**
 * Boots the default guest once under KVM with the agent running `true`, and says whether it reported
 * its exit in time. Where /dev/kvm exists but KVM is nested badly (these machines), QEMU starts and the
 * guest hangs in early boot: only a real boot tells the two apart.
 */
export async function probeKvmBoot(o: KvmProbeOptions): Promise<{ boots: boolean; reason: string }> {
  await fs.mkdir(o.dir, { recursive: true, mode: 0o700 });
  try {
    const initrd = path.join(o.dir, 'initrd.cpio');
    await fs.copyFile(o.image.initrd, initrd);
    await fs.appendFile(initrd, runArchive({ args: ['true'], env: {}, workdir: '/', outputs: [], modules: o.image.modules }));
    const args = microVmArgs({ accel: 'kvm', vcpus: 1, memoryMiB: 128, kernel: o.image.kernel, initrd, qmpSocket: path.join(o.dir, QMP_SOCKET), pidFile: path.join(o.dir, 'qemu.pid') });
    const started = performance.now();
    const child = spawn(o.binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let exitCode: number | undefined;
    let errors = '';
    const console = new ConsoleParser((e) => {
      if (e.type === 'exit') exitCode = e.code;
    });
    child.stdout.on('data', (chunk: Buffer) => console.feed(chunk));
    child.stderr.on('data', (chunk: Buffer) => {
      if (errors.length < 2048) errors += chunk.toString();
    });
    const ended = new Promise<void>((resolve) => {
      child.once('error', (err) => {
        errors += err.message;
        resolve();
      });
      child.once('close', () => resolve());
    });
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      ended.then(() => 'ended' as const),
      new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), o.timeoutMs))),
      ...(o.signal === undefined ? [] : [new Promise<'aborted'>((resolve) => o.signal!.addEventListener('abort', () => resolve('aborted'), { once: true }))]),
    ]);
    clearTimeout(timer);
    if (outcome !== 'ended') {
      child.kill('SIGKILL');
      await ended;
    }
    const ms = Math.round(performance.now() - started);
    if (exitCode === 0) return { boots: true, reason: `a guest booted under KVM and reported in ${ms} ms` };
    if (outcome === 'timeout') return { boots: false, reason: `a guest under KVM did not report within ${o.timeoutMs} ms (nested KVM that hangs the guest?)` };
    if (outcome === 'aborted') throw new Error('the KVM boot probe was aborted');
    const said = errors.trim().split('\n')[0] ?? '';
    return { boots: false, reason: `QEMU could not boot a guest under KVM${said ? `: ${said}` : ''}` };
  } finally {
    await fs.rm(o.dir, { recursive: true, force: true });
  }
}
