import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { run } from '../src/util/exec.ts';
import { Hosts } from '../test/hosts/harness.ts';
import { ms } from './lib/format.ts';
import { hostBusySeconds } from './lib/proc.ts';
import { summarize } from './lib/stats.ts';

const MiB = 2 ** 20;
const TCP_PORT = 7499;

export interface BlobTransferResult {
  sizeMiB: number;
  /** Seconds per transfer. */
  tcp: number[];
  vmesh: number[];
  /** CPU the whole host spent per transfer, in core-seconds (every process and the kernel). */
  tcpCpu: number[];
  vmeshCpu: number[];
  /** The link's speed, when it had one (a token bucket on A's side); the namespace link is unlimited otherwise. */
  rateMbit?: number;
  /** How many of B's fetches (the warm-up included) came over A's blob lane, and how many over the mesh stream. */
  via: { lane: number; stream: number };
}

/** B's count of blobs fetched from a peer, by the way they came (its Prometheus metrics). */
async function fetchesOf(home: string, address: string): Promise<{ lane: number; stream: number }> {
  const token = readFileSync(`${home}/token`, 'utf8').trim();
  const text = await (await fetch(`http://${address}:7420/metrics`, { headers: { authorization: `Bearer ${token}` } })).text();
  const count = (via: string) => Number(new RegExp(`^vmesh_blob_fetches_total\\{via="${via}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
  return { lane: count('lane'), stream: count('stream') };
}

/**
 * A plain TCP copy: a sender in host A's namespace that writes `file` to every connection, and a
 * receiver in B's that, on each line it reads, connects, writes what comes to a file, and prints how
 * many milliseconds that took. Both start before the first copy, so no process start is timed.
 */
const SENDER = `
const net = require('node:net'), fs = require('node:fs');
net.createServer((s) => fs.createReadStream(process.argv[1]).pipe(s)).listen(${TCP_PORT}, process.argv[2], () => console.log('ready'));`;
const RECEIVER = `
const net = require('node:net'), fs = require('node:fs'), rl = require('node:readline').createInterface({ input: process.stdin });
rl.on('line', () => {
  const t = performance.now(), out = fs.createWriteStream(process.argv[2]);
  const s = net.connect(${TCP_PORT}, process.argv[1]);
  s.pipe(out).on('finish', () => console.log(String(performance.now() - t)));
});
console.log('ready');`;

function lines(child: ChildProcess): () => Promise<string> {
  const queue: string[] = [];
  const waiting: Array<(l: string) => void> = [];
  createInterface({ input: child.stdout! }).on('line', (l) => (waiting.shift() ?? ((x: string) => queue.push(x)))(l));
  return () => (queue.length > 0 ? Promise.resolve(queue.shift()!) : new Promise((resolve) => waiting.push(resolve)));
}

/**
 * One blob of `sizeMiB` held by host A, fetched by host B over `/vmesh/blob/2` (B's `GET /v1/blobs/:hash`
 * answers once the blob is verified and in B's store), against a plain TCP copy of the same file from A's
 * namespace to B's, alternating; B's copy is deleted before each fetch.
 */
export async function blobTransfer(sizeMiB: number, reps: number, log: (l: string) => void, rateMbit?: number): Promise<BlobTransferResult> {
  const net = await Hosts.create({ tag: 'bnbl', subnet: '10.233.0', count: 2, config: { logLevel: 'warn' } });
  const children: ChildProcess[] = [];
  try {
    const a = await net.start(0);
    const b = await net.start(1, [a.meshAddress]);
    // A link of a given speed: everything A sends leaves through a token bucket of that rate.
    if (rateMbit !== undefined) await run('ip', ['netns', 'exec', a.netns, 'tc', 'qdisc', 'replace', 'dev', 'eth0', 'root', 'tbf', 'rate', `${rateMbit}mbit`, 'burst', '1mb', 'latency', '100ms']);
    for (let i = 0; i < 100 && (await b.client.nodes()).nodes.length < 2; i++) await new Promise((r) => setTimeout(r, 100));
    const bytes = randomBytes(sizeMiB * MiB);
    const { blob } = await a.client.putBlob(bytes);
    const file = `${a.home}/bench-blob.bin`;
    writeFileSync(file, bytes);

    const sender = spawn('ip', ['netns', 'exec', a.netns, process.execPath, '-e', SENDER, file, a.address], { stdio: ['ignore', 'pipe', 'inherit'] });
    const receiver = spawn('ip', ['netns', 'exec', b.netns, process.execPath, '-e', RECEIVER, a.address, `${b.home}/bench-copy.bin`], { stdio: ['pipe', 'pipe', 'inherit'] });
    children.push(sender, receiver);
    const [fromSender, fromReceiver] = [lines(sender), lines(receiver)];
    await fromSender();
    await fromReceiver();

    const result: BlobTransferResult = { sizeMiB, tcp: [], vmesh: [], tcpCpu: [], vmeshCpu: [], via: { lane: 0, stream: 0 }, ...(rateMbit === undefined ? {} : { rateMbit }) };
    for (let i = 0; i < reps + 1; i++) {
      let busy = hostBusySeconds();
      receiver.stdin!.write('go\n');
      const tcpMs = Number(await fromReceiver());
      const tcpCpu = hostBusySeconds() - busy;
      await b.client.deleteBlob(blob).catch(() => undefined);
      busy = hostBusySeconds();
      const t = performance.now();
      const got = await b.client.getBlob(blob);
      const vmeshMs = performance.now() - t;
      const vmeshCpu = hostBusySeconds() - busy;
      await got.body.cancel();
      if (got.from !== a.id) throw new Error(`B had the blob from ${got.from ?? 'itself'}, not from A`);
      if (i === 0) continue; // warm-up: connections, the first DHT-free dial
      result.tcp.push(tcpMs / 1000);
      result.vmesh.push(vmeshMs / 1000);
      result.tcpCpu.push(tcpCpu);
      result.vmeshCpu.push(vmeshCpu);
    }
    result.via = await fetchesOf(b.home, b.address);
    const [tcp, vm] = [summarize(result.tcp).p50, summarize(result.vmesh).p50];
    const [tcpCpu, vmCpu] = [summarize(result.tcpCpu).p50, summarize(result.vmeshCpu).p50];
    log(
      `mesh: ${sizeMiB} MiB blob A → B${rateMbit === undefined ? '' : ` on a ${rateMbit} Mbit/s link`}: plain TCP p50 ${ms(tcp * 1000)} (${(sizeMiB / tcp).toFixed(0)} MiB/s, ${tcpCpu.toFixed(2)} core-s), ` +
        `vmesh p50 ${ms(vm * 1000)} (${(sizeMiB / vm).toFixed(0)} MiB/s, ${vmCpu.toFixed(2)} core-s; ${result.via.lane} over the lane, ${result.via.stream} over the mesh stream)`,
    );
    return result;
  } finally {
    for (const c of children) c.kill('SIGKILL');
    await net.remove();
  }
}
