// A command run inside the default vmesh guest, whatever VMM boots it: what it needs, and the per-run archive that carries it.
import { promises as fs } from 'node:fs';
import { runArchive, type GuestFinish, type RunInputs } from '../../guest/agent.ts';
import type { SandboxNetwork } from '../../net/sandbox-network.ts';
import { InvalidInputError, InvalidSourceError, outputPaths } from '../../spec/index.ts';
import type { SandboxRequest } from '../driver.ts';

/** A guest needs this much memory to boot the Debian kernel and the agent (64 MiB died in early boot). */
export const MIN_GUEST_MEMORY_MIB = 96;

/**
 * Checks a request for the default guest: its source, a command, memory to boot, and room in that memory
 * for the input files, which ride in the initramfs beside the kernel and the program.
 */
export function validateGuestRun(request: SandboxRequest): void {
  const w = request.workload;
  if (!('guest' in w.source)) {
    throw new InvalidSourceError(
      'source: a microvm runs in the default guest (source { "guest": "default" } with a command), from its own kernel (source { "kernel", "initrd" }) or from a snapshot (source { "snapshot" })',
      { field: 'source' },
    );
  }
  if ([...(w.command ?? []), ...(w.args ?? [])].length === 0) {
    throw new InvalidInputError('command: a microvm in the default guest needs a command (e.g. ["sh", "-c", "echo hi"])', { field: 'command' });
  }
  const memoryMiB = request.resources.memoryMiB;
  if (memoryMiB < MIN_GUEST_MEMORY_MIB) {
    throw new InvalidInputError(`resources.memoryMiB: a microvm needs at least ${MIN_GUEST_MEMORY_MIB} MiB to boot its kernel`, { field: 'resources.memoryMiB' });
  }
  const inputBytes = (request.inputs ?? []).reduce((sum, input) => sum + input.bytes, 0);
  if (inputBytes > ((memoryMiB - MIN_GUEST_MEMORY_MIB) / 2) * 2 ** 20) {
    throw new InvalidInputError(
      `inputs: ${(inputBytes / 2 ** 20).toFixed(1)} MiB of input files do not fit in a ${memoryMiB} MiB microvm (they travel in its memory; allow twice their size above ${MIN_GUEST_MEMORY_MIB} MiB)`,
      { field: 'inputs' },
    );
  }
}

/**
 * The run's archive for the agent: command, environment, stdin, working directory, declared outputs, the
 * modules to load, the input files, and the guest's address when it has a network (with the gateway and
 * name servers when it may send beyond its link).
 */
export async function guestRunArchive(request: SandboxRequest, modules: readonly string[], network: SandboxNetwork | undefined, finish: GuestFinish = 'reboot'): Promise<Buffer> {
  const w = request.workload;
  const mayLeave = (w.network?.egress ?? 'none') !== 'none';
  return runArchive({
    args: [...(w.command ?? []), ...(w.args ?? [])],
    env: w.env ?? {},
    workdir: w.workdir ?? '/',
    ...(w.stdin === undefined ? {} : { stdin: w.stdin }),
    outputs: outputPaths(w),
    modules,
    finish,
    files: await Promise.all((request.inputs ?? []).map(async (input) => ({ path: input.path, data: input.data ?? (await fs.readFile(input.file!)) }))),
    ...(network === undefined ? {} : { network: guestNetwork(network, mayLeave) }),
  });
}

/** What the agent sets up in the guest: its address, and the way out and name servers when it may leave its link. */
function guestNetwork({ link, nameservers }: SandboxNetwork, mayLeave: boolean): NonNullable<RunInputs['network']> {
  return { address: link.sandboxAddress, prefixLength: link.prefixLength, ...(mayLeave ? { gateway: link.hostAddress, nameservers } : {}) };
}
