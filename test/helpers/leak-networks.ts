import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { AddressPool } from '../../src/net/address-pool.ts';
import { Firewall } from '../../src/net/firewall.ts';
import { NetworkManager } from '../../src/net/sandbox-network.ts';
import { Store } from '../../src/store/store.ts';

/**
 * Sandbox networking of a leak test's own (its address range, interface prefix, firewall table and
 * namespace prefix, all named by `tag`), and counts of what it holds on the host right now.
 */
export function leakTestNetworks(dir: string, range: string, tag: string) {
  const store = new Store(path.join(dir, 'leases.db'));
  const firewall = new Firewall(range, tag, `vmesh_${tag}`);
  const networks = new NetworkManager(new AddressPool(range, store), firewall, `vmesh-${tag}-`);
  return {
    networks,
    /** Interfaces with the tag's prefix, sandbox namespaces, address leases. */
    counts: () => ({
      interfaces: execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' }).split('\n').filter((l) => l.includes(` ${tag}`)).length,
      namespaces: existsSync('/run/netns') ? readdirSync('/run/netns').filter((n) => n.startsWith(`vmesh-${tag}-`)).length : 0,
      leases: store.leasedSubnets().size,
    }),
    async close(): Promise<void> {
      await firewall.remove();
      store.close();
    },
  };
}
