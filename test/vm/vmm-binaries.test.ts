// The Firecracker and Cloud Hypervisor drivers against the real binaries: the driver compliance suite in
// the default guest. They run only where the binary, a usable /dev/kvm and (for Firecracker) an
// uncompressed guest kernel are present; elsewhere they skip saying what is missing. `VMESH_REQUIRE=all`
// does not require them (test/helpers/require.ts, OUTSIDE_ALL): name them, e.g.
// `VMESH_REQUIRE=all,firecracker,cloud-hypervisor VMESH_FIRECRACKER_KERNEL=/srv/vmlinux npm test`.
import { accessSync, constants, existsSync } from 'node:fs';
import { CloudHypervisorDriver } from '../../src/drivers/cloud-hypervisor/driver.ts';
import { FirecrackerDriver } from '../../src/drivers/firecracker/driver.ts';
import { driverCompliance } from '../drivers/compliance.ts';
import { guestFixtures } from '../drivers/guest-cases.ts';
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

const options = { memoryBombMiB: 128, resources: { memoryMiB: 128, vcpus: 1, timeoutMs: 60_000 } };
const guest = () => skipUnless('busybox', existsSync(BUSYBOX), 'apt-get install busybox-static');
const kvm = () => skipUnless('kvm', usableKvm(), 'a host whose /dev/kvm is usable (bare metal, or a VM with nested virtualization)');

const kernel = process.env.VMESH_FIRECRACKER_KERNEL;
driverCompliance('firecracker (real binary)', (sandboxRoot) => new FirecrackerDriver({ sandboxRoot, ...(kernel ? { kernel } : {}) }), guestFixtures, {
  ...options,
  skip:
    skipUnless('firecracker', hasCommand('firecracker') && kernel !== undefined, 'firecracker v1.16.1 on PATH (github.com/firecracker-microvm/firecracker/releases) and VMESH_FIRECRACKER_KERNEL set to an uncompressed vmlinux built with its recommended guest config') ||
    kvm() ||
    guest(),
});

// Under the real jailer too (the release archive's jailer beside firecracker), as a user no account holds.
const jailer = { uid: Number(process.env.VMESH_JAILER_UID ?? 64123), gid: Number(process.env.VMESH_JAILER_UID ?? 64123) };
driverCompliance('firecracker under its jailer (real binaries)', (sandboxRoot) => new FirecrackerDriver({ sandboxRoot, jailer, ...(kernel ? { kernel } : {}) }), guestFixtures, {
  ...options,
  skip:
    skipUnless('firecracker', hasCommand('firecracker') && kernel !== undefined, 'firecracker v1.16.1 on PATH (github.com/firecracker-microvm/firecracker/releases) and VMESH_FIRECRACKER_KERNEL set to an uncompressed vmlinux built with its recommended guest config') ||
    skipUnless('jailer', hasCommand('jailer'), 'jailer v1.16.1 on PATH, from the same Firecracker release archive') ||
    skipUnless('root', process.getuid?.() === 0, 'run the tests as root (the jailer is started as root)') ||
    kvm() ||
    guest(),
});

driverCompliance('cloud-hypervisor (real binary)', (sandboxRoot) => new CloudHypervisorDriver({ sandboxRoot }), guestFixtures, {
  ...options,
  skip: skipUnless('cloud-hypervisor', hasCommand('cloud-hypervisor'), 'cloud-hypervisor v53.0 on PATH (github.com/cloud-hypervisor/cloud-hypervisor/releases)') || kvm() || guest(),
});
