import { createHash } from 'node:crypto';

/**
 * A short, stable tag of an id (hex of its sha256): scopes host-global names — network namespaces,
 * interfaces, firewall tables, cgroups — to one node, so that nodes sharing a host never touch each
 * other's.
 */
export function shortTag(id: string, length = 4): string {
  return createHash('sha256').update(id).digest('hex').slice(0, length);
}
