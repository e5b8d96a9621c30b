// 20 microVM runs — exits, timeouts and cancels, some with sandbox networks — leave the host as they found it.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { SandboxRequest } from '../../src/drivers/driver.ts';
import { runInSandbox } from '../../src/drivers/lifecycle.ts';
import { QemuDriver } from '../../src/drivers/qemu/driver.ts';
import { leakTestNetworks } from '../helpers/leak-networks.ts';
import { testOutputs } from '../helpers/outputs.ts';
import { hasCommand, skipUnless } from '../helpers/require.ts';
import { BUSYBOX } from '../helpers/rootfs.ts';
import { tempDir } from '../helpers/tmp.ts';

const skip =
  skipUnless('qemu', hasCommand('qemu-system-x86_64'), 'apt-get install qemu-system-x86') ||
  skipUnless('busybox', existsSync(BUSYBOX), 'apt-get install busybox-static') ||
  skipUnless('apt', hasCommand('apt-get', ['--version']) && hasCommand('dpkg-deb', ['--version']), 'a Debian host with apt-get and dpkg-deb (the guest kernel is fetched with apt-get download)');
const withNetworks = process.getuid?.() === 0 && hasCommand('nft', ['--version']) && hasCommand('ip', ['-V']);

function readSafe(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

describe('microVMs leave nothing behind', { skip }, () => {
  it('after 20 runs, 4 at a time, with timeouts, cancels and networks: same processes, sockets, namespaces, interfaces and files', async () => {
    const root = tempDir('vmesh-qemu-leak-');
    const sandboxes = path.join(root.dir, 'sandboxes');
    const { networks, counts, close } = leakTestNetworks(root.dir, '10.221.0.0/24', 'vqleak');
    const driver = new QemuDriver({ sandboxRoot: sandboxes, ...(withNetworks ? { networks } : {}) });
    assert.equal((await driver.probe()).available, true);
    const snapshot = () => ({
      qemus: readdirSync('/proc').filter((p) => /^\d+$/.test(p) && readSafe(`/proc/${p}/cmdline`).includes(sandboxes)).length,
      children: execFileSync('ps', ['-o', 'pid=', '--ppid', String(process.pid)], { encoding: 'utf8' }).trim().split('\n').filter(Boolean).length,
      fds: readdirSync('/proc/self/fd').length,
      ...counts(),
      sandboxes: existsSync(sandboxes) ? readdirSync(sandboxes).length : 0,
    });
    let seq = 0;
    const { sink } = testOutputs();
    /** kind 0: runs to its end (with an output); 1: killed at its timeout; 2: cancelled. */
    const once = async (kind: number) => {
      const controller = new AbortController();
      if (kind === 2) setTimeout(() => controller.abort(), 1500);
      const request: SandboxRequest = {
        runId: `qleak${++seq}`,
        workload: {
          kind: 'microvm',
          source: { guest: 'default' },
          command: ['sh', '-c', kind === 0 ? 'echo ok > /out/r' : 'sleep 600'],
          ...(kind === 0 ? { outputs: ['r'] } : {}),
          ...(withNetworks && seq % 2 === 0 ? { network: { egress: 'internet' as const } } : {}),
        },
        code: new Uint8Array(0),
        resources: { vcpus: 1, memoryMiB: 96, diskMiB: 4, timeoutMs: kind === 1 ? 2500 : 180_000, network: { egressMbps: 0, ingressMbps: 5 } },
        outputCapBytes: 4096,
        outputs: sink,
      };
      const exit = await runInSandbox(driver, request, { write() {}, total() {} }, controller.signal).catch((err: unknown) => err);
      return exit;
    };
    try {
      const before = snapshot();
      const outcomes: string[] = [];
      for (let batch = 0; batch < 5; batch++) {
        const exits = await Promise.all([0, 1, 2, batch % 3].map(once));
        outcomes.push(...exits.map((e) => (e instanceof Error ? e.name : (e as { outcome: string }).outcome)));
      }
      assert.equal(outcomes.length, 20);
      assert.ok(outcomes.includes('exited') && outcomes.includes('timeout') && outcomes.includes('cancelled'), outcomes.join(' '));
      assert.deepEqual(snapshot(), before);
      assert.equal(driver.liveSandboxes(), 0);
    } finally {
      await driver.close();
      await close();
      root.remove();
    }
  });
});
