import { promises as fs } from 'node:fs';
import path from 'node:path';

/**
 * Kernel modules the guest agent loads, in an order that satisfies their dependencies. The Debian kernel
 * builds virtio and its devices as modules. Both transports are there: QEMU's `-M microvm` describes its
 * virtio-mmio devices through ACPI (virtio_mmio reads them once loaded); Cloud Hypervisor puts its
 * devices on PCI (virtio_pci and the two helpers it depends on, named here so that they are extracted). Each finds nothing to drive on the other's machine, which is harmless.
 */
export const GUEST_MODULES = ['virtio', 'virtio_ring', 'virtio_mmio', 'virtio_pci_legacy_dev', 'virtio_pci_modern_dev', 'virtio_pci', 'virtio_blk', 'failover', 'net_failover', 'virtio_net', 'virtio_console'] as const;

/**
 * Modules kept beside the guest's own for guests that do more than run the agent (the agent loads none of
 * them): a host directory mounted over virtio-9p, and overlayfs inside the guest. The tests boot such a
 * guest to prove the container driver on a kernel unlike the host's (pure cgroup v2, with crun).
 */
export const EXTRA_MODULES = ['9pnet_virtio', '9p', 'overlay'] as const;
/** What EXTRA_MODULES depend on beyond GUEST_MODULES, named so that the kernel's extraction keeps them. */
export const EXTRA_MODULE_DEPENDENCIES = ['9pnet', 'netfs', 'fscache'] as const;

/** The `depends=` list of a module file, read from its .modinfo strings (no depmod needed). */
export function moduleDepends(ko: Uint8Array): string[] {
  const text = Buffer.from(ko.buffer, ko.byteOffset, ko.byteLength).toString('latin1');
  const m = /\0depends=([A-Za-z0-9_,-]*)\0/.exec(text);
  return m === null || m[1] === '' ? [] : m[1]!.split(',');
}

/**
 * Orders the modules found in `dir` (`<name>.ko`) so that each comes after what it depends on; throws if a
 * dependency is missing, naming it.
 */
export async function loadOrder(dir: string, wanted: readonly string[]): Promise<string[]> {
  const order: string[] = [];
  const visiting = new Set<string>();
  const visit = async (name: string, by?: string): Promise<void> => {
    const canonical = name.replace(/-/g, '_');
    if (order.includes(canonical) || visiting.has(canonical)) return;
    visiting.add(canonical);
    const bytes = await fs.readFile(path.join(dir, `${canonical}.ko`)).catch(() => undefined);
    if (bytes === undefined) throw new Error(`guest kernel: module ${canonical}${by ? ` (needed by ${by})` : ''} is missing`);
    for (const dep of moduleDepends(bytes)) await visit(dep, canonical);
    order.push(canonical);
  };
  for (const name of wanted) await visit(name);
  return order;
}
