import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, describe, it } from 'node:test';
import { AddressPool } from '../../src/net/address-pool.ts';
import { NetworkManager } from '../../src/net/sandbox-network.ts';
import { Store } from '../../src/store/store.ts';
import { hasCommand, skipUnless } from '../helpers/require.ts';
import { tempDir } from '../helpers/tmp.ts';

const exec = promisify(execFile);
const skip =
  skipUnless('root', process.getuid?.() === 0, 'run the tests as root (network namespaces need it)') ||
  skipUnless('iproute2', hasCommand('ip', ['-V']) && hasCommand('tc', ['-V']), 'apt-get install iproute2') ||
  skipUnless('iperf3', hasCommand('iperf3'), 'apt-get install iperf3');

/** iperf3 from inside the sandbox namespace to a server on the host end of its link; Mbit/s received. */
async function measure(netns: string, server: string, reverse: boolean): Promise<number> {
  const port = String(15201 + Math.floor(Math.random() * 1000));
  const srv = spawn('iperf3', ['-s', '-1', '-B', server, '-p', port], { stdio: 'ignore' });
  try {
    await new Promise((r) => setTimeout(r, 300));
    const { stdout } = await exec('ip', ['netns', 'exec', netns, 'iperf3', '-c', server, '-p', port, '-t', '3', '-O', '1', '-J', ...(reverse ? ['-R'] : [])], { timeout: 30_000 });
    return (JSON.parse(stdout) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second / 1e6;
  } finally {
    srv.kill();
  }
}

/** Whether a TCP connection from inside `netns` to a server of ours on `host` gets through. */
async function connects(netns: string, host: string): Promise<boolean> {
  const { createServer } = await import('node:net');
  const server = createServer((s) => s.end());
  await new Promise<void>((resolve) => server.listen(0, host === '127.0.0.1' ? '127.0.0.1' : host, resolve));
  const port = (server.address() as { port: number }).port;
  const probe = `require('net').connect(${port}, '${host}').on('connect', () => process.exit(0)).on('error', () => process.exit(1)); setTimeout(() => process.exit(2), 2000)`;
  try {
    await exec('ip', ['netns', 'exec', netns, process.execPath, '-e', probe]);
    return true;
  } catch {
    return false;
  } finally {
    server.close();
  }
}

describe('sandbox networks', { skip }, () => {
  const tmp = tempDir();
  const store = skip ? undefined : new Store(path.join(tmp.dir, 'net.db'));
  const nets = skip ? undefined : new NetworkManager(new AddressPool('10.213.0.0/24', store!), 'vmesh-test-');
  after(() => {
    store?.close();
    tmp.remove();
  });

  it('shapes what the sandbox sends and receives to its bandwidth channel (iperf3, within 15%)', async () => {
    const net = await nets!.create({ owner: 'bw1', egressMbps: 20, ingressMbps: 40 });
    try {
      const egress = await measure(net.netns, net.link.hostAddress, false);
      const ingress = await measure(net.netns, net.link.hostAddress, true);
      assert.ok(Math.abs(egress - 20) / 20 <= 0.15, `egress ${egress.toFixed(1)} Mbit/s for a 20 Mbit/s channel`);
      assert.ok(Math.abs(ingress - 40) / 40 <= 0.15, `ingress ${ingress.toFixed(1)} Mbit/s for a 40 Mbit/s channel`);
    } finally {
      await nets!.destroy(net);
    }
  });

  it('gives the sandbox its own namespace with only its link, and removes everything on destroy', async () => {
    const net = await nets!.create({ owner: 'plain1', egressMbps: 0, ingressMbps: 0 });
    const { stdout: inside } = await exec('ip', ['-n', net.netns, '-o', 'addr', 'show']);
    assert.match(inside, new RegExp(`eth0\\s+inet ${net.link.sandboxAddress.replace(/\./g, '\\.')}/30`));
    assert.equal(await connects(net.netns, net.link.hostAddress), true, 'the sandbox reaches its end of the link');
    assert.equal(await connects(net.netns, '127.0.0.1'), false, "the host's loopback is not the sandbox's");
    const { stdout: routes } = await exec('ip', ['-n', net.netns, 'route']);
    assert.doesNotMatch(routes, /default/, 'no default route: nothing beyond the link');
    await nets!.destroy(net);
    assert.equal(existsSync(net.netnsPath), false);
    await assert.rejects(exec('ip', ['link', 'show', net.hostInterface]));
    assert.equal(store!.leasedSubnets().size, 0);
  });

  it('recovers after a crash: every namespace with its prefix is removed', async () => {
    await nets!.create({ owner: 'left1', egressMbps: 0, ingressMbps: 0 });
    await nets!.create({ owner: 'left2', egressMbps: 5, ingressMbps: 0 });
    const fresh = new NetworkManager(new AddressPool('10.213.0.0/24', store!), 'vmesh-test-');
    assert.equal(await fresh.recover(), 2);
    assert.equal(existsSync('/run/netns/vmesh-test-left1'), false);
  });

  it('refuses a second network for the same run without touching the first', async () => {
    const net = await nets!.create({ owner: 'dup', egressMbps: 0, ingressMbps: 0 });
    await assert.rejects(nets!.create({ owner: 'dup', egressMbps: 0, ingressMbps: 0 }), /exists already/);
    assert.equal(await connects(net.netns, net.link.hostAddress), true, 'the first network still works');
    await nets!.destroy(net);
    assert.equal(store!.leasedSubnets().size, 0);
  });

  it('undoes a half-made network when a step fails', async () => {
    await assert.rejects(nets!.create({ owner: 'badrate', egressMbps: 1e9, ingressMbps: 0 }), /tc/);
    assert.equal(existsSync('/run/netns/vmesh-test-badrate'), false);
    assert.equal(store!.leasedSubnets().size, 0);
  });
});
