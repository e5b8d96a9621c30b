import type { Logger } from 'pino';
import { run } from '../util/exec.ts';
import { shortTag } from '../util/names.ts';
import { AddressPool, type LeaseStore } from './address-pool.ts';
import { Firewall } from './firewall.ts';
import { hostNameservers } from './nameservers.ts';
import { NetworkManager } from './sandbox-network.ts';

export const DEFAULT_SANDBOX_RANGE = '10.89.0.0/16';

export interface HostNetworking {
  networks?: NetworkManager;
  /** Why sandboxes get no network here, when they do not. */
  reason?: string;
}

/**
 * Sets up sandbox networking for one node, or says why it cannot (not root, no iproute2 or nftables).
 * Names are scoped by the node id, so that several nodes on one host (tests, development) never touch
 * each other's namespaces, interfaces or firewall table. Removes what a previous process left.
 */
export async function startHostNetworking(nodeId: string, range: string, leases: LeaseStore, logger: Logger, dns?: readonly string[]): Promise<HostNetworking> {
  if (process.platform !== 'linux' || process.getuid?.() !== 0) return { reason: 'sandbox networks need Linux and root' };
  for (const [tool, args, pkg] of [['ip', ['-V'], 'iproute2'], ['tc', ['-V'], 'iproute2'], ['nft', ['--version'], 'nftables']] as const) {
    try {
      await run(tool, args, { timeoutMs: 5000 });
    } catch {
      return { reason: `${tool} is missing: apt-get install ${pkg}` };
    }
  }
  const tag = shortTag(nodeId);
  const firewall = new Firewall(range, `v${tag}`, `vmesh_${tag}`);
  const nameservers = dns ?? hostNameservers();
  if (nameservers.length === 0) logger.info('sandboxes get no name servers: set network.dns (the host has none but loopback ones)');
  const networks = new NetworkManager(new AddressPool(range, leases), firewall, `vmesh-${tag}-`, undefined, nameservers);
  const left = await networks.recover();
  if (left > 0) logger.warn({ namespaces: left }, 'removed sandbox networks a previous process left');
  return { networks };
}
