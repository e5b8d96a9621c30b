import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { SandboxRequest } from '../../src/drivers/driver.ts';
import { guestRunArchive } from '../../src/drivers/guest-vm/default-guest.ts';
import type { SandboxNetwork } from '../../src/net/sandbox-network.ts';
import type { Workload } from '../../src/spec/index.ts';

const network = (nameservers: string[]): SandboxNetwork =>
  ({
    link: { subnet: '10.230.0.0/30', hostAddress: '10.230.0.1', sandboxAddress: '10.230.0.2', prefixLength: 30 },
    nameservers,
  }) as SandboxNetwork;

/** The names and file bodies of a newc cpio archive (what the guest kernel unpacks over its image). */
function unpack(archive: Buffer): Map<string, string> {
  const files = new Map<string, string>();
  const pad = (n: number) => (n + 3) & ~3;
  for (let at = 0; at < archive.length; ) {
    const field = (i: number) => parseInt(archive.subarray(at + 6 + i * 8, at + 14 + i * 8).toString(), 16);
    const [size, nameSize] = [field(6), field(11)];
    const name = archive.subarray(at + 110, at + 110 + nameSize - 1).toString();
    const start = pad(at + 110 + nameSize);
    if (name === 'TRAILER!!!') break;
    files.set(name, archive.subarray(start, start + size).toString());
    at = pad(start + size);
  }
  return files;
}

const archiveFor = async (egress: Workload['network'], net: SandboxNetwork | undefined) => {
  const workload: Workload = { kind: 'microvm', source: { guest: 'default' }, command: ['true'], ...(egress === undefined ? {} : { network: egress }) };
  return unpack(await guestRunArchive({ workload } as SandboxRequest, [], net));
};

describe("a microVM run's archive", () => {
  it("gives a guest with egress the node's name servers as /etc/resolv.conf, and one without none", async () => {
    const out = await archiveFor({ egress: 'internet' }, network(['10.0.0.53', '10.0.1.53']));
    assert.match(out.get('etc/resolv.conf') ?? '', /^#.*\nnameserver 10\.0\.0\.53\nnameserver 10\.0\.1\.53\n$/);
    assert.match(out.get('vmesh/net') ?? '', /ip route add default via 10\.230\.0\.1/);
    const allowlist = await archiveFor({ egress: [{ cidr: '10.0.0.53/32', ports: [53] }] }, network(['10.0.0.53']));
    assert.match(allowlist.get('etc/resolv.conf') ?? '', /nameserver 10\.0\.0\.53\n$/, 'an allowlist may leave the link too');
    const none = await archiveFor({ egress: 'none' }, network(['10.0.0.53']));
    assert.equal(none.has('etc/resolv.conf'), false, 'no way out: no name servers');
    assert.doesNotMatch(none.get('vmesh/net') ?? '', /default via/);
    assert.equal((await archiveFor(undefined, undefined)).has('etc/resolv.conf'), false, 'no network at all');
  });
});
