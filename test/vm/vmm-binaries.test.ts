// The Firecracker and Cloud Hypervisor drivers against the real binaries: the driver compliance suite in
// the default guest. They run only where the binary, a usable /dev/kvm and (for Firecracker) an
// uncompressed guest kernel are present; elsewhere they skip saying what is missing. `VMESH_REQUIRE=all`
// does not require them (test/helpers/require.ts, OUTSIDE_ALL): name them, e.g.
// `VMESH_REQUIRE=all,firecracker,cloud-hypervisor VMESH_FIRECRACKER_KERNEL=/srv/vmlinux npm test`.
import { accessSync, constants, existsSync } from 'node:fs';
import { CloudHypervisorDriver } from '../../src/drivers/cloud-hypervisor/driver.ts';
import { FirecrackerDriver } from '../../src/drivers/firecracker/driver.ts';
import type { Workload } from '../../src/spec/index.ts';
import { driverCompliance, type Case } from '../drivers/compliance.ts';
import { hasCommand, skipUnless } from '../helpers/require.ts';
import { BUSYBOX } from '../helpers/rootfs.ts';

function usableKvm(): boolean {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

const vm = (script: string, extra: Partial<Workload> = {}): Case => ({
  workload: { kind: 'microvm', source: { guest: 'default' }, command: ['sh', '-c', script], ...extra },
  code: new Uint8Array(0),
});

const fixtures = async () => ({
  hello: { ...vm('echo hello from a microvm'), stdout: 'hello from a microvm\n' },
  stderr: { ...vm('echo oops >&2'), stderr: 'oops' },
  exitCode: { ...vm('exit 7'), exitCode: 7 },
  spin: vm('while :; do :; done'),
  memoryBomb: vm('a=xxxxxxxxxxxxxxxx; while :; do a=$a$a; done'),
  flood: vm('yes xxxxxxxxxxxxxxx | head -c 200000'),
  numbered: (n: number) => ({ ...vm(`echo vm ${n}`), stdout: `vm ${n}\n` }),
});
const options = { memoryBombMiB: 128, resources: { memoryMiB: 128, vcpus: 1, timeoutMs: 60_000 } };
const guest = () => skipUnless('busybox', existsSync(BUSYBOX), 'apt-get install busybox-static');
const kvm = () => skipUnless('kvm', usableKvm(), 'a host whose /dev/kvm is usable (bare metal, or a VM with nested virtualization)');

const kernel = process.env.VMESH_FIRECRACKER_KERNEL;
driverCompliance('firecracker (real binary)', (sandboxRoot) => new FirecrackerDriver({ sandboxRoot, ...(kernel ? { kernel } : {}) }), fixtures, {
  ...options,
  skip:
    skipUnless('firecracker', hasCommand('firecracker') && kernel !== undefined, 'firecracker v1.16.1 on PATH (github.com/firecracker-microvm/firecracker/releases) and VMESH_FIRECRACKER_KERNEL set to an uncompressed vmlinux built with its recommended guest config') ||
    kvm() ||
    guest(),
});

driverCompliance('cloud-hypervisor (real binary)', (sandboxRoot) => new CloudHypervisorDriver({ sandboxRoot }), fixtures, {
  ...options,
  skip: skipUnless('cloud-hypervisor', hasCommand('cloud-hypervisor'), 'cloud-hypervisor v53.0 on PATH (github.com/cloud-hypervisor/cloud-hypervisor/releases)') || kvm() || guest(),
});
