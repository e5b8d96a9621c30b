// What every VMM that boots the default vmesh guest shares once the guest runs: the agent's console,
// the run's ending read from it, and the outputs tar read back from the guest's disk.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { ConsoleParser } from '../../guest/console.ts';
import { packOutputs, type CollectedOutputs } from '../../outputs/pack.ts';
import type { SandboxExit, SandboxIO, SandboxRequest, StopReason } from '../driver.ts';
import { applyLayer } from '../oci/image/unpack.ts';

/** What the agent has reported so far over the serial console. */
export interface GuestSession {
  readonly console: ConsoleParser;
  exitCode?: number;
  /** Processes the guest kernel's OOM killer ended during the run. */
  oomKills: number;
  outputsWritten: boolean;
}

/** A session whose program output goes to `io` as the frames arrive. */
export function guestSession(io: SandboxIO): GuestSession {
  const session: GuestSession = {
    oomKills: 0,
    outputsWritten: false,
    console: new ConsoleParser((e) => {
      if (e.type === 'output') io.write(e.stream, e.data);
      else if (e.type === 'exit') session.exitCode = e.code;
      else if (e.type === 'outputs') session.outputsWritten = true;
      else if (e.type === 'oom') session.oomKills += e.kills;
    }),
  };
  return session;
}

type ExitBase = Pick<SandboxExit, 'outputs' | 'usage'>;

/** The ending of a VM that the node stopped (timeout or cancel), or undefined when it ended by itself. */
export function stoppedExit(stopReason: StopReason | undefined, request: SandboxRequest, base: ExitBase): SandboxExit | undefined {
  if (stopReason === 'timeout') return { ...base, outcome: 'timeout', exitCode: null, reason: `the microVM was stopped after the ${request.resources.timeoutMs} ms timeout` };
  if (stopReason === 'cancelled') return { ...base, outcome: 'cancelled', exitCode: null, reason: 'cancelled' };
  return undefined;
}

/**
 * The ending of a default-guest run that ended by itself, as its agent reported it: `crashed` when the
 * guest never reported an exit code (with what the VMM or the guest kernel last said), `oom` when the
 * guest kernel killed a process for memory, else the program's exit.
 */
export function agentExit(session: GuestSession, request: SandboxRequest, vmm: { name: string; errors: string }, base: ExitBase): SandboxExit {
  if (session.exitCode === undefined) {
    const said = vmm.errors.trim() ? `${vmm.name}: ${vmm.errors.trim()}` : session.console.tail().split('\n').slice(-5).join(' | ');
    return { ...base, outcome: 'crashed', exitCode: null, reason: `the guest ended without reporting an exit code${said ? `: ${said}` : ''}` };
  }
  if (session.oomKills > 0) {
    const n = session.oomKills;
    return { ...base, outcome: 'oom', exitCode: session.exitCode, reason: `the guest ran out of its ${request.resources.memoryMiB} MiB (its kernel killed ${n} process${n === 1 ? '' : 'es'})` };
  }
  return { ...base, outcome: 'exited', exitCode: session.exitCode };
}

/**
 * The guest's outputs tar, read from its raw disk into `<dir>/outputs` (with the same checks as an image
 * layer: no escapes, within diskMiB), then packed like any sandbox's outputs.
 */
export async function collectGuestOutputs(request: SandboxRequest, dir: string, disk: string, outputs: readonly string[]): Promise<CollectedOutputs> {
  const scratch = path.join(dir, 'outputs');
  await fs.mkdir(scratch);
  const budget = { usedBytes: 0, maxBytes: Math.max(1, request.resources.diskMiB) * 2 ** 20 };
  try {
    await applyLayer(scratch, disk, 'none', budget, 'the outputs disk');
  } catch (err) {
    return { files: [], skipped: outputs.map((o) => ({ path: o, reason: `the guest's outputs tar was refused: ${(err as Error).message}` })) };
  }
  return packOutputs(scratch, [...outputs], request.outputs);
}

/** A sparse raw disk of `diskMiB` for the agent's outputs tar: it takes only what the guest writes. */
export async function createOutputsDisk(file: string, request: SandboxRequest): Promise<void> {
  const disk = await fs.open(file, 'w', 0o600);
  try {
    await disk.truncate(Math.max(1, request.resources.diskMiB) * 2 ** 20);
  } finally {
    await disk.close();
  }
}
