// MicroVMs on sandbox networks: a real guest behind a tap bridged into its namespace, through a real node.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { VmeshNode } from '../../src/node/node.ts';
import { shortTag } from '../../src/util/names.ts';
import { startTestNode } from '../helpers/node.ts';
import { hasCommand, skipUnless } from '../helpers/require.ts';
import { BUSYBOX } from '../helpers/rootfs.ts';
import { createWorld, type World } from '../helpers/world.ts';

const skip =
  skipUnless('root', process.getuid?.() === 0, 'run the tests as root (sandbox networks need it)') ||
  skipUnless('qemu', hasCommand('qemu-system-x86_64'), 'apt-get install qemu-system-x86') ||
  skipUnless('busybox', existsSync(BUSYBOX), 'apt-get install busybox-static') ||
  skipUnless('iproute2', hasCommand('ip', ['-V']), 'apt-get install iproute2') ||
  skipUnless('nftables', hasCommand('nft', ['--version']), 'apt-get install nftables') ||
  skipUnless('apt', hasCommand('apt-get', ['--version']) && hasCommand('dpkg-deb', ['--version']), 'a Debian host with apt-get and dpkg-deb (the guest kernel is fetched with apt-get download)');

const SINK_PORT = 7303;
const CHANNEL_MBPS = 8;

describe('microVM networks', { skip }, () => {
  let world: World;
  let node: VmeshNode;
  let remove: () => Promise<void>;
  let home: string;
  let sink: ReturnType<typeof spawn> | undefined;
  /** What the sink in the world measured: bytes of each connection and ms from its first byte to its end. */
  const received: Array<{ bytes: number; ms: number }> = [];

  before(async () => {
    world = await createWorld('vmtest-vm-world', { host: '10.222.0.1', address: '10.222.0.2' }, [7301, 7302], { dnsAnswer: '10.9.8.7' });
    const script = `require('net').createServer((s) => { let n = 0, t0 = 0; s.on('data', (d) => { if (!t0) t0 = performance.now(); n += d.length; }); s.on('end', () => { console.log(JSON.stringify({ bytes: n, ms: performance.now() - t0 })); s.end(); }); }).listen(${SINK_PORT}, '${world.address}');`;
    sink = spawn('ip', ['netns', 'exec', world.netns, process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    sink.stdout!.on('data', (d: Buffer) => d.toString().trim().split('\n').forEach((l) => received.push(JSON.parse(l))));
    ({ node, remove, home } = await startTestNode({ fileRoots: ['images'], network: { range: '10.223.0.0/24', dns: [world.address] }, capacity: { vcpus: 2, memoryMiB: 1024 } }));
  });
  after(async () => {
    sink?.kill();
    await remove();
    await world.remove();
  });

  const guest = async (script: string, network: object, resources: object = {}) => {
    const run = await node.waitFor((await node.submit({ kind: 'microvm', source: { guest: 'default' }, command: ['sh', '-c', script], network, resources: { memoryMiB: 128, vcpus: 1, timeoutMs: 180_000, ...resources } })).id);
    await node.settled(run.id);
    assert.equal(run.state, 'succeeded', `${run.reason} ${run.result?.stderr.text}`);
    return run.result!.stdout.text.trim();
  };
  const probe = (port: number) => `nc -w 3 ${world.address} ${port} </dev/null || echo unreachable`;

  it('gives a guest exactly the egress it asks for', async () => {
    assert.equal(await guest(probe(7302), { egress: [{ cidr: `${world.address}/32`, ports: [7302] }] }), world.host, 'reached the allowed port, behind the host address');
    assert.equal(await guest(`${probe(7301)}; ip -4 -o addr show eth0 | grep -c inet`, { egress: [{ cidr: `${world.address}/32`, ports: [7302] }] }), 'unreachable\n1');
  });

  it("resolves names through the node's name servers (network.dns) when it has egress", async () => {
    const script = 'grep -v "^#" /etc/resolv.conf; nslookup vmesh.example 2>&1 | grep -A1 "^Name:" | tail -1';
    assert.equal(await guest(script, { egress: 'internet' }), `nameserver ${world.address}\nAddress: 10.9.8.7`);
  });

  it('gives a guest with its own kernel its address, way out and name servers as kernel arguments, for its own init', async () => {
    const { debianKernel } = await import('../../src/guest/kernel.ts');
    const { defaultGuestCache } = await import('../../src/guest/image.ts');
    const { cpioArchive } = await import('../../src/guest/cpio.ts');
    const kernel = await debianKernel(defaultGuestCache());
    const modules = kernel.modules.filter((m) => ['virtio', 'virtio_ring', 'virtio_mmio', 'failover', 'net_failover', 'virtio_net'].includes(m));
    const bb = '/bin/busybox';
    const script = [
      `${bb} mkdir -p /proc /dev && ${bb} mount -t proc proc /proc && ${bb} mount -t devtmpfs devtmpfs /dev`,
      `for m in ${modules.join(' ')}; do ${bb} insmod /lib/modules/$m.ko; done`,
      `for w in $(${bb} cat /proc/cmdline); do case "$w" in vmesh.*) echo "arg $w";; esac; done`,
      `for w in $(${bb} cat /proc/cmdline); do case "$w" in vmesh.address=*) a=\${w#*=};; vmesh.gateway=*) g=\${w#*=};; esac; done`,
      `${bb} ip link set eth0 up && ${bb} ip addr add "$a" dev eth0 && ${bb} ip route add default via "$g"`,
      `echo "seen as $(${bb} nc -w 3 ${world.address} 7302 </dev/null || echo unreachable)"`,
      `${bb} reboot -f`,
    ].join('\n');
    const images = path.join(home, 'images');
    mkdirSync(images, { recursive: true });
    copyFileSync(kernel.vmlinux ?? kernel.vmlinuz, path.join(images, 'vmlinuz'));
    const entries = [
      { type: 'dir' as const, name: 'bin' },
      { type: 'file' as const, name: 'bin/busybox', data: readFileSync(BUSYBOX), mode: 0o755 },
      { type: 'dir' as const, name: 'lib' },
      { type: 'dir' as const, name: 'lib/modules' },
      ...modules.map((m) => ({ type: 'file' as const, name: `lib/modules/${m}.ko`, data: readFileSync(path.join(kernel.modulesDir, `${m}.ko`)) })),
      { type: 'file' as const, name: 'init', data: `#!/bin/busybox sh\n${script}\n`, mode: 0o755 },
    ];
    writeFileSync(path.join(images, 'net.cpio'), cpioArchive(entries));
    const network = { egress: [{ cidr: `${world.address}/32`, ports: [7302] }] };
    const run = await node.waitFor((await node.submit({ kind: 'microvm', source: { kernel: 'vmlinuz', initrd: 'net.cpio' }, network, resources: { memoryMiB: 128, vcpus: 1, timeoutMs: 180_000 } })).id);
    await node.settled(run.id);
    assert.equal(run.state, 'succeeded', `${run.reason} ${run.result?.stdout.text.slice(-2000)}`);
    const lines = run.result!.stdout.text.split(/\r?\n/);
    const args = lines.filter((l) => l.startsWith('arg ')).map((l) => l.slice(4));
    assert.equal(args.length, 3, args.join(' '));
    assert.match(args[0]!, /^vmesh\.address=10\.223\.0\.\d+\/30$/);
    assert.match(args[1]!, /^vmesh\.gateway=10\.223\.0\.\d+$/);
    assert.equal(args[2], `vmesh.nameservers=${world.address}`);
    assert.ok(lines.includes(`seen as ${world.host}`), `reached the world behind the host address: ${lines.filter((l) => l.startsWith('seen')).join(' ')}`);
  });

  it(`holds what a guest sends to its ${CHANNEL_MBPS} Mbit/s channel (a timed transfer, within 15%)`, async (t) => {
    const bytes = 3 * 2 ** 20;
    received.length = 0;
    const out = await guest(`dd if=/dev/zero bs=65536 count=${bytes / 65536} 2>/dev/null | nc -w 5 ${world.address} ${SINK_PORT}; echo sent`, { egress: [{ cidr: `${world.address}/32`, ports: [SINK_PORT] }] }, { network: { egressMbps: CHANNEL_MBPS } });
    assert.equal(out, 'sent');
    const got = received.at(-1);
    assert.ok(got !== undefined, 'the sink saw the transfer');
    assert.equal(got.bytes, bytes);
    const mbps = (got.bytes * 8) / 1e6 / (got.ms / 1000);
    t.diagnostic(`${got.bytes} bytes in ${got.ms.toFixed(0)} ms: ${mbps.toFixed(2)} Mbit/s`);
    assert.ok(Math.abs(mbps - CHANNEL_MBPS) <= 0.15 * CHANNEL_MBPS, `the guest sent at ${mbps.toFixed(2)} Mbit/s through a ${CHANNEL_MBPS} Mbit/s channel`);
  });

  it('leaves no namespace, tap or QEMU behind', () => {
    const prefix = `vmesh-${shortTag(node.id)}-`;
    assert.deepEqual(readdirSync('/run/netns').filter((n) => n.startsWith(prefix)), []);
    assert.deepEqual(readdirSync(`${node.config.home}/sandboxes`), [], 'no sandbox directory left');
  });
});
