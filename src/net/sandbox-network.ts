import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { run } from '../util/exec.ts';
import type { AddressPool, Link } from './address-pool.ts';
import type { EgressPolicy, Firewall, PortMapping } from './firewall.ts';
import { PortAllocator } from './ports.ts';

const NETNS_DIR = '/run/netns';
const SANDBOX_IF = 'eth0';
/** In a microVM's namespace: the bridge joining the veth end to the guest's tap. */
const BRIDGE_IF = 'br0';
/** In a microVM's namespace: the tap its VMM opens (QEMU's `-netdev tap`, Firecracker's and Cloud Hypervisor's NIC). */
export const SANDBOX_TAP = 'tap0';

export interface SandboxNetworkSpec {
  /** The run the network belongs to; names the namespace and owns the address lease. */
  owner: string;
  /** Bandwidth channel, Mbit/s; 0 leaves the direction unshaped. */
  egressMbps: number;
  ingressMbps: number;
  /** Where the sandbox may send traffic (default none: only its own link, and the host drops even that). */
  egress?: EgressPolicy;
  /** Ports to publish on the node's addresses; each gets a free host port. */
  ports?: ReadonlyArray<{ guest: number; protocol?: 'tcp' | 'udp' }>;
}

/** One sandbox's network: its own namespace, joined to the host by a veth pair with a /30 link. */
export interface SandboxNetwork {
  owner: string;
  netns: string;
  /** The namespace's path, for a runtime's `linux.namespaces[].path`. */
  netnsPath: string;
  /** The host end of the veth pair. */
  hostInterface: string;
  /** The sandbox end, inside the namespace. */
  sandboxInterface: string;
  link: Link;
  /** Published ports: `host` on the node's addresses reaches `guest` in the sandbox. */
  ports: PortMapping[];
  /** Name servers for the sandbox's resolv.conf: the node's, when it may send traffic beyond its link; else none. */
  nameservers: string[];
}

/**
 * Makes and removes sandbox networks with iproute2 and tc. The bandwidth channel is a token bucket on
 * each end of the pair: the sandbox end shapes what the sandbox sends (egress), the host end what it
 * receives (ingress).
 */
export class NetworkManager {
  private readonly hostPorts: PortAllocator;

  constructor(
    private readonly pool: AddressPool,
    private readonly firewall: Firewall,
    readonly prefix = 'vmesh-',
    hostPorts: { from: number; to: number } = { from: 30_000, to: 32_767 },
    /** What sandboxes with egress resolve names through (`network.dns`, by default the host's). */
    private readonly nameservers: readonly string[] = [],
  ) {
    this.hostPorts = new PortAllocator(hostPorts.from, hostPorts.to);
  }

  async create(spec: SandboxNetworkSpec, signal?: AbortSignal): Promise<SandboxNetwork> {
    const netns = `${this.prefix}${spec.owner}`;
    if (existsSync(`${NETNS_DIR}/${netns}`)) throw new Error(`a network for ${spec.owner} exists already (${netns})`);
    // Interface names are global on the host and at most 15 characters: the firewall's prefix, then a hash.
    const prefix = this.firewall.interfacePrefix;
    const tag = createHash('sha256').update(netns).digest('hex').slice(0, 15 - prefix.length);
    const link = this.pool.lease(spec.owner);
    const net: SandboxNetwork = {
      owner: spec.owner,
      netns,
      netnsPath: `${NETNS_DIR}/${netns}`,
      hostInterface: `${prefix}${tag}`,
      sandboxInterface: SANDBOX_IF,
      link,
      ports: [],
      nameservers: [],
    };
    const o = { signal };
    const egress = spec.egress ?? 'none';
    try {
      await this.firewall.init();
      await run('ip', ['netns', 'add', netns], o);
      await run('ip', ['link', 'add', net.hostInterface, 'type', 'veth', 'peer', 'name', SANDBOX_IF, 'netns', netns], o);
      await run('ip', ['addr', 'add', `${link.hostAddress}/${link.prefixLength}`, 'dev', net.hostInterface], o);
      await run('ip', ['link', 'set', net.hostInterface, 'up'], o);
      await run('ip', ['-n', netns, 'addr', 'add', `${link.sandboxAddress}/${link.prefixLength}`, 'dev', SANDBOX_IF], o);
      await run('ip', ['-n', netns, 'link', 'set', SANDBOX_IF, 'up'], o);
      await run('ip', ['-n', netns, 'link', 'set', 'lo', 'up'], o);
      if (spec.egressMbps > 0) await run('tc', ['-n', netns, 'qdisc', 'add', 'dev', SANDBOX_IF, 'root', ...tokenBucket(spec.egressMbps)], o);
      if (spec.ingressMbps > 0) await run('tc', ['qdisc', 'add', 'dev', net.hostInterface, 'root', ...tokenBucket(spec.ingressMbps)], o);
      if (egress !== 'none') {
        await this.firewall.allow(net.hostInterface, egress);
        await run('ip', ['-n', netns, 'route', 'add', 'default', 'via', link.hostAddress], o);
        net.nameservers = [...this.nameservers];
      }
      for (const p of spec.ports ?? []) {
        const protocol = p.protocol ?? 'tcp';
        net.ports.push({ protocol, guest: p.guest, host: await this.hostPorts.take(protocol), sandboxAddress: link.sandboxAddress });
      }
      await this.firewall.publish(net.ports);
      return net;
    } catch (err) {
      await this.destroy(net);
      throw err;
    }
  }

  /**
   * Turns a sandbox network into one a microVM can join: inside the namespace, the sandbox end of the veth
   * pair gives up its address and is bridged with a tap device, so that the guest behind the tap holds the
   * sandbox address itself. The bandwidth channel (the qdiscs on both veth ends) and the firewall (on the
   * host end) apply unchanged. The tap goes with the namespace. Returns the tap's name. A VMM that opens
   * the tap as another user than root (a jailed Firecracker) needs it made theirs: `owner`.
   */
  async bridgeTap(net: SandboxNetwork, signal?: AbortSignal, owner?: { uid: number; gid: number }): Promise<string> {
    const o = { signal };
    const ipn = (...args: string[]) => run('ip', ['-n', net.netns, ...args], o);
    await ipn('addr', 'flush', 'dev', SANDBOX_IF);
    await ipn('link', 'add', BRIDGE_IF, 'type', 'bridge');
    await ipn('link', 'set', SANDBOX_IF, 'master', BRIDGE_IF);
    await ipn('tuntap', 'add', 'dev', SANDBOX_TAP, 'mode', 'tap', ...(owner === undefined ? [] : ['user', String(owner.uid), 'group', String(owner.gid)]));
    await ipn('link', 'set', SANDBOX_TAP, 'master', BRIDGE_IF);
    await ipn('link', 'set', SANDBOX_TAP, 'up');
    await ipn('link', 'set', BRIDGE_IF, 'up');
    return SANDBOX_TAP;
  }

  /** Removes the namespace (which takes the veth pair with it) and frees the address. Idempotent. */
  async destroy(net: Pick<SandboxNetwork, 'owner' | 'netns' | 'hostInterface' | 'ports'>): Promise<void> {
    await this.firewall.unpublish(net.ports);
    for (const p of net.ports) this.hostPorts.give(p.host);
    await run('ip', ['netns', 'del', net.netns]).catch(() => {});
    await run('ip', ['link', 'del', net.hostInterface]).catch(() => {}); // when the namespace never got the peer
    await this.firewall.revoke(net.hostInterface);
    this.pool.release(net.owner);
  }

  /** Removes the firewall table when the node stops (its sandboxes are gone by then). */
  async close(): Promise<void> {
    await this.firewall.remove();
  }

  /**
   * Removes every sandbox namespace a previous process left, and frees every address lease: call it at
   * start, when none of them can be live.
   */
  async recover(): Promise<number> {
    let names: string[] = [];
    try {
      names = readdirSync(NETNS_DIR).filter((n) => n.startsWith(this.prefix));
    } catch {
      /* no namespaces at all */
    }
    for (const netns of names) await run('ip', ['netns', 'del', netns]).catch(() => {});
    await this.firewall.remove(); // re-made, empty, by the next create
    this.pool.releaseAll();
    return names.length;
  }
}

/**
 * tc arguments of a token bucket at `mbps`: a burst of 20 ms of traffic (at least 64 KiB), so that a busy
 * host's timer slack does not cost the channel its rate, and 50 ms of queue.
 */
export function tokenBucket(mbps: number): string[] {
  const bytesPerSecond = (mbps * 1e6) / 8;
  const burst = Math.max(64 * 1024, Math.ceil(bytesPerSecond / 50));
  return ['tbf', 'rate', `${Math.round(mbps * 1000)}kbit`, 'burst', String(burst), 'latency', '50ms'];
}
