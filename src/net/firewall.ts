import { writeFileSync } from 'node:fs';
import { run } from '../util/exec.ts';

/** Where a sandbox may send traffic: nowhere, anywhere but other sandboxes, or exactly these. */
export type EgressPolicy = 'none' | 'internet' | EgressRule[];

/** A published port: `host` on the node's addresses leads to `guest` at the sandbox's address. */
export interface PortMapping {
  protocol: 'tcp' | 'udp';
  host: number;
  guest: number;
  sandboxAddress: string;
}

export interface EgressRule {
  /** IPv4 CIDR, e.g. `203.0.113.0/24` or `198.51.100.7/32`. */
  cidr: string;
  /** TCP/UDP destination ports; all ports when absent. */
  ports?: number[];
  protocol?: 'tcp' | 'udp';
}

const TABLE = 'vmesh';
const CIDR = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/;

export function isIpv4Cidr(text: string): boolean {
  const m = CIDR.exec(text);
  return m !== null && m.slice(1, 5).every((o) => Number(o) <= 255) && Number(m[5]) <= 32;
}

/**
 * The node's nftables table (`inet vmesh`). Sandbox links are the host interfaces named `<prefix>*`:
 * - nothing from a sandbox reaches the host itself (input), whatever address the host listens on;
 * - nothing from a sandbox is forwarded unless its own egress chain accepts it, and nothing reaches a
 *   sandbox but the replies to what it sent (forward);
 * - what a sandbox sends out is masqueraded behind the host's address (postrouting).
 * Each sandbox's policy is a chain of its own, reached through a verdict map keyed by its interface.
 */
export class Firewall {
  private ready: Promise<void> | undefined;

  constructor(
    /** The pool every sandbox address comes from (never a destination of `internet`). */
    readonly sandboxRange: string,
    /** Host ends of this node's sandbox links are named `<prefix><hash>`; at most 10 characters. */
    readonly interfacePrefix = 'vh',
    readonly table = TABLE,
  ) {
    if (!/^[a-z][a-z0-9]{0,9}$/.test(interfacePrefix)) throw new Error(`interface prefix ${JSON.stringify(interfacePrefix)} must be 1-10 lowercase letters and digits`);
    if (!/^[a-z][a-z0-9_]{0,30}$/.test(table)) throw new Error(`nftables table name ${JSON.stringify(table)} is not a plain identifier`);
  }

  /** Creates (or re-creates) the table and turns on IPv4 forwarding. Idempotent. */
  init(): Promise<void> {
    this.ready ??= (async () => {
      await run('nft', ['delete', 'table', 'inet', this.table]).catch(() => {});
      const p = `"${this.interfacePrefix}*"`;
      await nftScript(`
table inet ${this.table} {
  map egress {
    type ifname : verdict
  }
  map ports {
    type inet_proto . inet_service : ipv4_addr . inet_service
  }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    dnat ip to meta l4proto . th dport map @ports
  }
  chain output {
    type nat hook output priority -100; policy accept;
    ip daddr != 127.0.0.0/8 fib daddr type local dnat ip to meta l4proto . th dport map @ports
  }
  chain input {
    type filter hook input priority filter; policy accept;
    iifname ${p} ct state established,related accept
    iifname ${p} drop
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname ${p} ct state established,related accept
    oifname ${p} ct state established,related accept
    oifname ${p} ct status dnat accept
    oifname ${p} drop
    iifname ${p} iifname vmap @egress
    iifname ${p} drop
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr ${this.sandboxRange} oifname != ${p} masquerade
    oifname ${p} ct status dnat masquerade
  }
}
`);
      writeFileSync('/proc/sys/net/ipv4/ip_forward', '1');
    })();
    return this.ready;
  }

  /** Installs a sandbox's egress policy on its host interface. */
  async allow(hostInterface: string, policy: EgressPolicy): Promise<void> {
    await this.init();
    const chain = chainOf(hostInterface);
    const rules = egressRules(policy, this.sandboxRange).map((r) => `  ${r}`).join('\n');
    await nftScript(`
add chain inet ${this.table} ${chain}
flush chain inet ${this.table} ${chain}
table inet ${this.table} {
  chain ${chain} {
${rules}
  }
}
add element inet ${this.table} egress { "${hostInterface}" : jump ${chain} }
`);
  }

  /** Publishes ports: new connections to `host` on the node's addresses are sent on to the sandbox. */
  async publish(mappings: readonly PortMapping[]): Promise<void> {
    if (mappings.length === 0) return;
    await this.init();
    await run('nft', ['add', 'element', 'inet', this.table, 'ports', `{ ${mappings.map(portElement).join(', ')} }`]);
  }

  async unpublish(mappings: readonly PortMapping[]): Promise<void> {
    if (mappings.length === 0) return;
    const keys = mappings.map((m) => `${m.protocol} . ${m.host}`).join(', ');
    await run('nft', ['delete', 'element', 'inet', this.table, 'ports', `{ ${keys} }`]).catch(() => {});
  }

  /** Removes a sandbox's policy. Idempotent. */
  async revoke(hostInterface: string): Promise<void> {
    const chain = chainOf(hostInterface);
    await run('nft', ['delete', 'element', 'inet', this.table, 'egress', `{ "${hostInterface}" }`]).catch(() => {});
    await run('nft', ['delete', 'chain', 'inet', this.table, chain]).catch(() => {});
  }

  /** Removes the whole table (and so every sandbox's policy). */
  async remove(): Promise<void> {
    await run('nft', ['delete', 'table', 'inet', this.table]).catch(() => {});
    this.ready = undefined;
  }
}

function portElement(m: PortMapping): string {
  for (const port of [m.host, m.guest]) if (!Number.isInteger(port) || port < 1 || port > 65_535) throw new Error(`port ${port} is out of range`);
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(m.sandboxAddress)) throw new Error(`${JSON.stringify(m.sandboxAddress)} is not an IPv4 address`);
  return `${m.protocol} . ${m.host} : ${m.sandboxAddress} . ${m.guest}`;
}

function chainOf(hostInterface: string): string {
  return `egress_${hostInterface.replace(/[^A-Za-z0-9_]/g, '_')}`;
}

/** The accept rules of one sandbox's egress chain (what is not accepted falls through to the drop). */
export function egressRules(policy: EgressPolicy, sandboxRange: string): string[] {
  if (policy === 'none') return [];
  if (policy === 'internet') return [`ip daddr != ${sandboxRange} accept`];
  return policy.map((rule) => {
    if (!isIpv4Cidr(rule.cidr)) throw new Error(`egress rule cidr ${JSON.stringify(rule.cidr)} is not an IPv4 CIDR`);
    const ports = rule.ports?.length ? ` ${rule.protocol ?? 'tcp'} dport { ${rule.ports.join(', ')} }` : rule.protocol ? ` meta l4proto ${rule.protocol}` : '';
    return `ip daddr ${rule.cidr}${ports} ip daddr != ${sandboxRange} accept`;
  });
}

/** Applies an nft script atomically (`nft -f -`). */
async function nftScript(script: string): Promise<void> {
  const { spawn } = await import('node:child_process');
  await new Promise<void>((resolve, reject) => {
    const child = spawn('nft', ['-f', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`nft -f failed (exit ${code}): ${stderr.trim()}\n${script}`))));
    child.stdin.end(script);
  });
}
