import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';

const exec = promisify(execFile);

/**
 * "The world": a network namespace standing in for the internet, joined to the host by a link of its
 * own, with TCP servers that answer with the address they see the caller at. Tests create one, point
 * sandboxes at it, and remove it.
 */
export interface World {
  netns: string;
  /** The host's end of the world's link: what masqueraded sandbox traffic comes from. */
  host: string;
  /** The world's own address, where its servers listen. */
  address: string;
  ports: [number, number];
  remove(): Promise<void>;
}

/**
 * A name server for the world (UDP 53 at its address): every A query is answered with `answer`, any
 * other type with no records. Enough for a resolver in a sandbox to show that its queries get there.
 */
const dnsServer = (address: string, answer: string) => `
const dns = require('dgram').createSocket('udp4');
dns.on('message', (m, from) => {
  let i = 12;
  while (m[i] !== 0) i += m[i] + 1;
  const qtype = m.readUInt16BE(i + 1), question = m.subarray(12, i + 5), head = Buffer.from(m.subarray(0, 12));
  head.writeUInt16BE(0x8180, 2); head.writeUInt16BE(1, 4); head.writeUInt16BE(qtype === 1 ? 1 : 0, 6); head.writeUInt32BE(0, 8);
  const record = qtype === 1 ? Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, ${answer.split('.').join(', ')}]) : Buffer.alloc(0);
  dns.send(Buffer.concat([head, question, record]), from.port, from.address);
}).bind(53, '${address}');`;

export async function createWorld(name: string, subnet: { host: string; address: string }, ports: [number, number], o: { dnsAnswer?: string } = {}): Promise<World> {
  const ip = (...args: string[]) => exec('ip', args);
  const hostIf = `vt${name}`.slice(0, 15);
  await exec('ip', ['netns', 'del', name]).catch(() => {});
  await ip('netns', 'add', name);
  let servers: ChildProcess | undefined;
  const remove = async () => {
    servers?.kill();
    await exec('ip', ['netns', 'del', name]).catch(() => {});
  };
  try {
    await ip('link', 'add', hostIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', name);
    await ip('addr', 'add', `${subnet.host}/30`, 'dev', hostIf);
    await ip('link', 'set', hostIf, 'up');
    await ip('-n', name, 'addr', 'add', `${subnet.address}/30`, 'dev', 'eth0');
    await ip('-n', name, 'link', 'set', 'eth0', 'up');
    await ip('-n', name, 'link', 'set', 'lo', 'up');
    let script = `for (const p of [${ports.join(', ')}]) require('net').createServer((s) => s.end(s.remoteAddress)).listen(p, '${subnet.address}');`;
    if (o.dnsAnswer !== undefined) script += dnsServer(subnet.address, o.dnsAnswer);
    servers = spawn('ip', ['netns', 'exec', name, process.execPath, '-e', script], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 500));
    return { netns: name, host: subnet.host, address: subnet.address, ports, remove };
  } catch (err) {
    await remove();
    throw err;
  }
}
