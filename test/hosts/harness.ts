import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { VmeshClient } from '../../src/sdk/client.ts';
import { hasCommand, skipUnless } from '../helpers/require.ts';

const exec = promisify(execFile);
const BIN = fileURLToPath(new URL('../../bin/vmesh.js', import.meta.url));
const API_PORT = 7420;
const MESH_PORT = 7421;
const DELAY_LINK = fileURLToPath(new URL('./delay-link.py', import.meta.url));

/** The skip reason for multi-host tests on this machine (false when they can run). */
export function hostsSkip(): false | string {
  return (
    skipUnless('root', process.getuid?.() === 0, 'run the tests as root (network namespaces need it)') ||
    skipUnless('iproute2', hasCommand('ip', ['-V']), 'apt-get install iproute2') ||
    skipUnless('python3', hasCommand('python3'), 'apt-get install python3 (the delay link of the multi-host tests)') ||
    skipUnless('netns', canMakeNamespaces(), 'this kernel or container does not allow `ip netns add` (run on a host or a privileged VM)')
  );
}

function canMakeNamespaces(): boolean {
  const name = `vmh-probe-${process.pid}`;
  try {
    return hasCommand('ip', ['netns', 'add', name]);
  } finally {
    hasCommand('ip', ['netns', 'del', name]);
  }
}

export interface Host {
  index: number;
  netns: string;
  address: string;
  home: string;
  /** The node's id, once it has started. */
  id: string;
  client: VmeshClient;
  /** The node's mesh address, with its id. */
  meshAddress: string;
  process: ChildProcess | undefined;
  /** The userspace delay link of a delayable host. */
  delayLink?: ChildProcess;
}

export interface HostsOptions {
  /** Up to 4 characters naming this test's namespaces and interfaces. */
  tag: string;
  /** The first three octets of the hosts' /24, e.g. "10.230.0". */
  subnet: string;
  count: number;
  /** config.json of every node (mesh timings and the like). */
  config?: Record<string, unknown>;
  /** Hosts whose sending can be delayed (`delay`): their traffic passes a userspace delay link. */
  delayable?: number[];
}

/**
 * N machines on one: a network namespace per host, each with its own address on a bridge that lives
 * in a switch namespace of its own, and a real `vmesh up` process in each with its own $VMESH_HOME.
 * The test process reaches every node's API through one veth into the switch. Links can be cut and
 * delayed per host (tc netem) to stand in for geography. `remove` takes everything away, whatever state
 * the test left it in; so does a new `create` with the same tag.
 */
export class Hosts {
  readonly hosts: Host[] = [];
  private readonly root: string;

  private constructor(private readonly o: HostsOptions) {
    this.root = path.join(os.tmpdir(), `vmesh-hosts-${o.tag}`);
  }

  private get switchNs(): string {
    return `vmh-${this.o.tag}-sw`;
  }

  static async create(o: HostsOptions): Promise<Hosts> {
    const net = new Hosts(o);
    await net.remove();
    try {
      await net.build();
    } catch (err) {
      await net.remove();
      throw err;
    }
    return net;
  }

  private async build(): Promise<void> {
    const { tag, subnet, count } = this.o;
    const ip = (...args: string[]) => exec('ip', args);
    const sw = this.switchNs;
    await ip('netns', 'add', sw);
    await ip('-n', sw, 'link', 'add', 'br0', 'type', 'bridge');
    await ip('-n', sw, 'link', 'set', 'br0', 'up');
    // The test process's own leg on the bridge.
    const rootIf = `vh${tag}r`;
    await ip('link', 'add', rootIf, 'type', 'veth', 'peer', 'name', 'up0', 'netns', sw);
    await ip('addr', 'add', `${subnet}.254/24`, 'dev', rootIf);
    await ip('link', 'set', rootIf, 'up');
    await ip('-n', sw, 'link', 'set', 'up0', 'master', 'br0', 'up');
    mkdirSync(this.root, { recursive: true });
    for (let i = 0; i < count; i++) {
      const ns = `vmh-${tag}-${i}`;
      const address = `${subnet}.${i + 1}`;
      await ip('netns', 'add', ns);
      await ip('-n', ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', `p${i}`, 'netns', sw);
      const delayLink = this.o.delayable?.includes(i) ? await this.delayLink(ns) : undefined;
      await ip('-n', ns, 'addr', 'add', `${address}/24`, 'dev', delayLink === undefined ? 'eth0' : 'dl0');
      await ip('-n', ns, 'link', 'set', 'eth0', 'up');
      await ip('-n', ns, 'link', 'set', 'lo', 'up');
      await ip('-n', sw, 'link', 'set', `p${i}`, 'master', 'br0', 'up');
      const home = path.join(this.root, `host${i}`);
      mkdirSync(home, { recursive: true, mode: 0o700 });
      writeFileSync(path.join(home, 'config.json'), JSON.stringify({ logLevel: 'info', workers: 1, ...this.o.config }));
      const host: Host = { index: i, netns: ns, address, home, id: '', meshAddress: '', client: new VmeshClient({ url: `http://${address}:${API_PORT}`, token: '' }), process: undefined };
      if (delayLink !== undefined) host.delayLink = delayLink;
      this.hosts.push(host);
    }
  }

  /**
   * This kernel may lack sch_netem, so delay is made in userspace: the host's address sits on a tap
   * (dl0) whose frames a small process copies to a second tap (dl1), bridged with the host's veth,
   * holding what the host sends for the current delay.
   */
  private async delayLink(ns: string): Promise<ChildProcess> {
    const ip = (...args: string[]) => exec('ip', ['-n', ns, ...args]);
    const link = spawn('ip', ['netns', 'exec', ns, 'python3', DELAY_LINK, 'dl0', 'dl1', '0'], { stdio: ['pipe', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      link.once('exit', (code) => reject(new Error(`the delay link exited with ${code}`)));
      link.stdout!.once('data', () => resolve());
    });
    // dl0 first: a frame bound for it while it is down would only be lost, not kill the link.
    await ip('link', 'set', 'dl0', 'up');
    await ip('link', 'add', 'b0', 'type', 'bridge');
    await ip('link', 'set', 'eth0', 'master', 'b0');
    await ip('link', 'set', 'dl1', 'master', 'b0', 'up');
    await ip('link', 'set', 'b0', 'up');
    return link;
  }

  /** Starts (or restarts) the node of host `i`, joining through `join` (mesh addresses), with `extra` flags for `vmesh up`; resolves once its API answers. */
  async start(i: number, join: string[] = [], extra: string[] = []): Promise<Host> {
    const h = this.hosts[i]!;
    // VMESH_HOSTS_NODE_ARGS: Node.js flags for every node process, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof` to profile them.
    const nodeArgs = (process.env.VMESH_HOSTS_NODE_ARGS ?? '').split(' ').filter(Boolean);
    const args = ['netns', 'exec', h.netns, process.execPath, ...nodeArgs, BIN, '--home', h.home, 'up', '--host', h.address, '--port', String(API_PORT), ...extra];
    args.push('--listen', `/ip4/${h.address}/tcp/${MESH_PORT}`);
    for (const j of join) args.push('--join', j);
    const log = openSync(path.join(h.home, 'node.log'), 'a');
    h.process = spawn('ip', args, { stdio: ['ignore', log, log] });
    const deadline = Date.now() + 30_000;
    for (;;) {
      const info = readInfo(h.home);
      if (info !== undefined && info.pid !== undefined && !ended(h.process)) {
        const token = readFileSync(path.join(h.home, 'token'), 'utf8').trim();
        const client = new VmeshClient({ url: info.url, token });
        try {
          const node = await client.node(AbortSignal.timeout(5000));
          await h.client.close();
          Object.assign(h, { client, id: node.id, meshAddress: `/ip4/${h.address}/tcp/${MESH_PORT}/p2p/${node.id}` });
          return h;
        } catch {
          await client.close();
        }
      }
      if (ended(h.process)) throw new Error(`the node of host ${i} exited (${h.process.exitCode ?? h.process.signalCode}); see ${path.join(h.home, 'node.log')}`);
      if (Date.now() > deadline) throw new Error(`the node of host ${i} did not answer within 30 s; see ${path.join(h.home, 'node.log')}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Stops host `i`'s node the way `vmesh down` does (SIGTERM: it shuts down in order) and waits for its process to end. */
  async stop(i: number): Promise<void> {
    const h = this.hosts[i]!;
    const pid = readInfo(h.home)?.pid ?? h.process?.pid;
    if (pid !== undefined) process.kill(pid, 'SIGTERM');
    if (h.process !== undefined) await whenEnded(h.process);
  }

  /** Kills host `i`'s node at once (SIGKILL): no goodbye to its peers. */
  async kill(i: number): Promise<void> {
    const h = this.hosts[i]!;
    const info = readInfo(h.home);
    if (info?.pid !== undefined) process.kill(info.pid, 'SIGKILL');
    if (h.process !== undefined) await whenEnded(h.process);
    rmSync(path.join(h.home, 'node.json'), { force: true });
  }

  /** Delays everything host `i` sends by `ms` (the host must be one of `delayable`). */
  async delay(i: number, ms: number): Promise<void> {
    const link = this.hosts[i]!.delayLink;
    if (link === undefined) throw new Error(`host ${i} was not made delayable`);
    link.stdin!.write(`${ms}\n`);
  }

  /** Takes host `i`'s link down, or up again. */
  async link(i: number, up: boolean): Promise<void> {
    await exec('ip', ['-n', this.switchNs, 'link', 'set', `p${i}`, up ? 'up' : 'down']);
  }

  async remove(): Promise<void> {
    for (const h of this.hosts) {
      // A node may be mid-start (no node.json yet): its process is killed whether or not it wrote one.
      for (const pid of [readInfo(h.home)?.pid, h.process?.pid]) {
        try {
          if (pid !== undefined) process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      if (h.process !== undefined) await whenEnded(h.process);
      h.delayLink?.kill('SIGKILL');
      await h.client.close();
    }
    // Deleting a namespace takes its end of every veth, and with it the other end.
    const names = existsSync('/run/netns') ? (await exec('ip', ['netns', 'list'])).stdout.split('\n').map((l) => l.split(' ')[0]!) : [];
    for (const n of names.filter((n) => n.startsWith(`vmh-${this.o.tag}-`))) await exec('ip', ['netns', 'del', n]).catch(() => {});
    await exec('ip', ['link', 'del', `vh${this.o.tag}r`]).catch(() => {});
    rmSync(this.root, { recursive: true, force: true });
  }
}

function ended(p: ChildProcess): boolean {
  return p.exitCode !== null || p.signalCode !== null;
}

/** Resolves once `p` has ended, or after 10 s whatever it does (a cleanup must not hang a test run). */
async function whenEnded(p: ChildProcess): Promise<void> {
  if (ended(p)) return;
  await new Promise((resolve) => {
    p.once('exit', resolve);
    setTimeout(resolve, 10_000).unref();
  });
}

function readInfo(home: string): { pid?: number; url: string } | undefined {
  try {
    return JSON.parse(readFileSync(path.join(home, 'node.json'), 'utf8')) as { pid?: number; url: string };
  } catch {
    return undefined;
  }
}
