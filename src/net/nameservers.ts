import { readFileSync } from 'node:fs';

/** At most this many `nameserver` lines count (glibc's MAXNS). */
export const MAX_NAMESERVERS = 3;

/**
 * The host's name servers that a sandbox can reach: the IPv4 `nameserver` lines of `resolvConf`,
 * without loopback ones (127.0.0.0/8, such as systemd-resolved's 127.0.0.53), since a sandbox never
 * reaches the host's loopback. Sandbox links are IPv4 only, so IPv6 servers are left out too.
 */
export function hostNameservers(resolvConf = '/etc/resolv.conf'): string[] {
  let text: string;
  try {
    text = readFileSync(resolvConf, 'utf8');
  } catch {
    return [];
  }
  const found: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\d{1,3}(?:\.\d{1,3}){3})\s*(?:#.*)?$/.exec(line);
    if (m === null || m[1]!.startsWith('127.') || m[1] === '0.0.0.0') continue;
    if (!found.includes(m[1]!)) found.push(m[1]!);
  }
  return found.slice(0, MAX_NAMESERVERS);
}

/** The resolv.conf a sandbox gets: one `nameserver` line each. */
export function resolvConf(nameservers: readonly string[]): string {
  return `# written by vmesh for this sandbox (network.dns, or the host's own name servers)\n${nameservers.map((n) => `nameserver ${n}\n`).join('')}`;
}
