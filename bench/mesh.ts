import os from 'node:os';
import type { Workload } from '../src/spec/index.ts';
import { Hosts, hostsSkip } from '../test/hosts/harness.ts';
import { blobTransfer, type BlobTransferResult } from './mesh-blobs.ts';
import { readCpu } from './lib/proc.ts';
import { inProcessConvergence, processConvergence, type InProcessConvergence, type ProcessConvergence } from './mesh-converge.ts';
import type { Benchmark, BenchReport, Target } from './lib/benchmark.ts';
import { envList, envNumber } from './lib/env.ts';
import { mib, ms, tableMarkdown, tableText, type Table } from './lib/format.ts';
import { summarize } from './lib/stats.ts';

/** The goals of issue 5. */
const TARGETS = { remoteOverheadMs: 5, convergeMs: 5000, blobOfTcp: 0.8 } as const;
const TRIVIAL: Workload = { kind: 'function', source: { inline: 'export default () => 1' } };

/**
 * The mesh: a trivial run sent A → B → A against the same run submitted on B, on two namespace hosts;
 * and how fast the adverts of N in-process nodes on loopback reach every node, with memory and CPU per node.
 */
export const meshBenchmark: Benchmark = {
  name: 'mesh',
  async unavailable() {
    try {
      const skip = hostsSkip();
      return skip === false ? undefined : skip;
    } catch (err) {
      return (err as Error).message;
    }
  },
  async run(log): Promise<BenchReport> {
    const runs = envNumber('BENCH_MESH_RUNS', 200, { min: 1, integer: true });
    const sizes = envList('BENCH_MESH_NODES', [10, 20, 30, 50], { min: 2 });
    const blobMiB = envNumber('BENCH_MESH_BLOB_MIB', 256, { min: 1, integer: true });
    const blobReps = envNumber('BENCH_MESH_BLOB_RUNS', 5, { min: 1, integer: true });
    const remote = await remoteOverhead(runs, log);
    const blobs = await blobTransfer(blobMiB, blobReps, log);
    const rateMbit = envNumber('BENCH_MESH_BLOB_MBIT', 1000, { min: 0, integer: true });
    const linked = rateMbit > 0 ? await blobTransfer(blobMiB, blobReps, log, rateMbit) : undefined;
    // Ten fit on two cores: an idle node process takes 34-38 ms of CPU a second in a 10-node mesh (2026-12-02).
    const processes = envNumber('BENCH_MESH_PROCESSES', 10, { min: 0, integer: true });
    // In-process nodes spread over one thread per core, as nodes on machines of their own would use theirs.
    const threads = envNumber('BENCH_MESH_THREADS', os.cpus().length, { min: 1, integer: true });
    const converge: InProcessConvergence[] = [];
    for (const count of sizes) converge.push(await inProcessConvergence(count, threads, log));
    const real = processes >= 2 ? await processConvergence(processes, log) : undefined;
    return report(runs, remote, [blobs, ...(linked === undefined ? [] : [linked])], converge, real);
  },
};

interface RemoteResult {
  local: number[];
  remote: number[];
  /** CPU per run of [A, B], in ms: runs submitted on B and run there, then runs sent A → B → A. */
  cpu: { runs: number; local: [number, number]; remote: [number, number] };
}

async function remoteOverhead(runs: number, log: (l: string) => void): Promise<RemoteResult> {
  const net = await Hosts.create({ tag: 'bnch', subnet: '10.232.0', count: 2, config: { logLevel: 'warn', mesh: { advertIntervalMs: 1000 } } });
  try {
    const a = await net.start(0);
    const b = await net.start(1, [a.meshAddress]);
    for (let i = 0; i < 100 && (await a.client.nodes()).nodes.length < 2; i++) await new Promise((r) => setTimeout(r, 100));
    const toB: Workload = { ...TRIVIAL, placement: { node: b.id } };
    for (let i = 0; i < 20; i++) {
      await b.client.run(TRIVIAL);
      await a.client.run(toB);
    }
    const result: RemoteResult = { local: [], remote: [], cpu: { runs: 0, local: [0, 0], remote: [0, 0] } };
    for (let i = 0; i < runs; i++) {
      // Alternating, so that the drift of a shared machine hits both ways alike.
      let t = performance.now();
      const l = await b.client.run(TRIVIAL);
      result.local.push(performance.now() - t);
      t = performance.now();
      const r = await a.client.run(toB);
      result.remote.push(performance.now() - t);
      if (l.state !== 'succeeded' || r.state !== 'succeeded') throw new Error(`run failed: ${l.reason ?? r.reason}`);
    }
    log(`mesh: ${runs} runs each: local on B p50 ${ms(summarize(result.local).p50)}, A → B → A p50 ${ms(summarize(result.remote).p50)}`);
    // What each way costs the two nodes in CPU (all threads): one way after the other, not alternating.
    const pids = [a.process?.pid ?? 0, b.process?.pid ?? 0];
    const cpuRuns = Math.max(100, Math.ceil(runs / 2));
    const perRun = async (run: () => Promise<unknown>): Promise<[number, number]> => {
      const before = pids.map((p) => readCpu(p).totalMs);
      for (let i = 0; i < cpuRuns; i++) await run();
      const [ca, cb] = pids.map((p, i) => (readCpu(p).totalMs - before[i]!) / cpuRuns);
      return [ca!, cb!];
    };
    result.cpu = { runs: cpuRuns, local: await perRun(() => b.client.run(TRIVIAL)), remote: await perRun(() => a.client.run(toB)) };
    log(`mesh: CPU per run: local on B ${result.cpu.local[1].toFixed(2)} ms of B's; A → B → A ${result.cpu.remote[0].toFixed(2)} ms of A's and ${result.cpu.remote[1].toFixed(2)} ms of B's`);
    return result;
  } finally {
    await net.remove();
  }
}

/** One blob's transfers, A → B, both ways, with the whole host's CPU for each. */
function blobTable(t: BlobTransferResult): Table {
  const [tcp, vmesh] = [summarize(t.tcp), summarize(t.vmesh)];
  const throughput = (seconds: number) => `${(t.sizeMiB / seconds).toFixed(0)} MiB/s`;
  const cpu = (samples: number[]) => `${summarize(samples).p50.toFixed(2)} core-s`;
  const link = t.rateMbit === undefined ? 'the namespace link, unlimited' : `a ${t.rateMbit} Mbit/s link (token bucket on A's side)`;
  return {
    title: `A ${t.sizeMiB} MiB blob from host A to host B over ${link} (two namespace hosts; p50 of ${t.tcp.length}, alternating)`,
    header: ['way', 'p50', 'throughput (p50)', 'best', 'CPU of the whole host (p50)'],
    rows: [
      ['plain TCP copy, A\'s namespace to a file in B\'s (node:net, no hashing)', ms(tcp.p50 * 1000), throughput(tcp.p50), throughput(tcp.min), cpu(t.tcpCpu)],
      [
        `vmesh: B fetches it from A (/vmesh/blob/2; the bytes over A's blob lane, TLS-PSK with AES-128-GCM; sha256 while they come, into B's store; ${t.via.lane} of ${t.via.lane + t.via.stream} fetches came over the lane)`,
        ms(vmesh.p50 * 1000),
        throughput(vmesh.p50),
        throughput(vmesh.min),
        cpu(t.vmeshCpu),
      ],
      ['vmesh / plain TCP throughput', `${((tcp.p50 / vmesh.p50) * 100).toFixed(0)}%`, '', '', ''],
    ],
  };
}

function report(runs: number, r: RemoteResult, transfers: BlobTransferResult[], converge: InProcessConvergence[], real: ProcessConvergence | undefined): BenchReport {
  const local = summarize(r.local);
  const remote = summarize(r.remote);
  const overhead = remote.p50 - local.p50;
  const share = (t: BlobTransferResult) => summarize(t.tcp).p50 / summarize(t.vmesh).p50;
  const blobShare = share(transfers[0]!);
  const tables: Table[] = [
    {
      title: `A trivial function, A → B → A vs local on B (two namespace hosts; ${runs} runs each, client in the root namespace)`,
      header: ['way', 'p50', 'p99'],
      rows: [
        ['submitted on B, runs on B', ms(local.p50), ms(local.p99)],
        ['submitted on A with placement.node = B', ms(remote.p50), ms(remote.p99)],
        ['overhead (p50 difference)', ms(overhead), ''],
      ],
    },
    {
      title: `CPU per run of each node (all threads, from /proc/<pid>/stat), ${r.cpu.runs} runs one way, then ${r.cpu.runs} the other`,
      header: ['way', 'A', 'B'],
      rows: [
        ['submitted on B, runs on B', ms(r.cpu.local[0]), ms(r.cpu.local[1])],
        ['submitted on A with placement.node = B', ms(r.cpu.remote[0]), ms(r.cpu.remote[1])],
      ],
    },
    ...transfers.map(blobTable),
    {
      title: `Adverts of N nodes in one process on loopback (each its own libp2p host, default timers, spread over ${converge[0]?.threads ?? 1} worker thread(s)), all started one after another, each joining through the first`,
      header: [
        'nodes',
        'all started in',
        'cold start: until every node holds every advert, after the last was up',
        'members seen per node',
        'then every node advertises anew at once: all held by all (slowest of 3)',
        'then one more joins: it holds all, all hold it',
        'JS heap and buffers per node',
        'CPU per node, mesh formed',
      ],
      rows: converge.map((c) => [String(c.count), ms(c.upMs), ms(c.formedMs), c.seen, `${ms(c.updateMs)}${c.pairs < c.count * (c.count - 1) ? ` (${c.pairs} of ${c.count * (c.count - 1)} pairs known)` : ''}`, ms(c.joinMs), mib(c.heapPerNodeMiB), `${c.cpuMsPerNodeSecond.toFixed(1)} ms/s`]),
    },
  ];
  if (real !== undefined) {
    tables.push({
      title: `Adverts of ${real.count} node processes, one per namespace host (a real \`vmesh up\` each, default timers, five started at a time, each joining through the first)`,
      header: ['nodes', 'all started in', 'until every node lists every other, after the last was up', 'members seen per node', 'RSS per node', 'CPU per node, idle'],
      rows: [[String(real.count), ms(real.startMs), ms(real.formedMs), real.seen, mib(real.rssPerNodeMiB), `${real.cpuMsPerNodeSecond.toFixed(1)} ms/s`]],
    });
  }
  // Node processes are what a mesh is made of; the in-process figure stands in where fewer of them ran.
  const inProcess = converge.at(-1)!;
  const largest = real !== undefined && real.count >= inProcess.count ? real : inProcess;
  const targets: Target[] = [
    { goal: `remote-run overhead p50 <= ${TARGETS.remoteOverheadMs} ms`, measured: ms(overhead), pass: overhead <= TARGETS.remoteOverheadMs },
    {
      goal: `blob transfer >= ${TARGETS.blobOfTcp * 100}% of a plain TCP copy`,
      measured: transfers.map((t) => `${(share(t) * 100).toFixed(0)}% ${t.rateMbit === undefined ? 'unlimited link' : `at ${t.rateMbit} Mbit/s`}`).join(', '),
      pass: blobShare >= TARGETS.blobOfTcp,
    },
    {
      goal: `${inProcess.count} nodes' adverts converge on every node <= ${TARGETS.convergeMs} ms`,
      measured: `every node's new advert on every node: ${ms(inProcess.updateMs)}; a node joining: ${ms(inProcess.joinMs)}; from a cold start of all ${largest.count}: ${ms(largest.formedMs)}`,
      pass: inProcess.pairs === inProcess.count * (inProcess.count - 1) && Math.max(inProcess.updateMs, inProcess.joinMs) <= TARGETS.convergeMs,
    },
  ];
  const targetTable: Table = { title: 'Targets (issue 5)', header: ['target', 'measured', 'result'], rows: targets.map((t) => [t.goal, t.measured, t.pass ? 'met' : 'MISS']) };
  const all = [...tables, targetTable];
  const note =
    'In-process nodes are spread over one worker thread per core (BENCH_MESH_THREADS), as nodes with machines of their own would use ' +
    'theirs; 50 of them on these 2 cores spend most of both, so their figures are a limit of this host as much as of the mesh. A node ' +
    'that joins takes the adverts its join peer holds over /vmesh/members/1 (session 18), so it holds every member within about a ' +
    'second of joining; what takes longer is its own advert reaching every other node through gossip. The cold start (every node ' +
    'new at once, each finding the others through the DHT) is shown, not a target: it is the case a running mesh never meets again. ' +
    'Node processes need more than in-process nodes: an idle one took 34 ms of CPU a second in a 10-process mesh; 30 processes ' +
    'started in 85 s and listed each other 13.8 s after the last was up (session 17), so 50 would need more than these 2 cores. These figures move with the host\'s load: in a run half an hour earlier on the same host (2026-12-03 02:55: an idle node process took 74 ms of CPU a second in it, and 60–63 ms in an A/B run soon after, with the code of 2026-12-02 and with this one alike), the remote-run overhead was 6.55 ms, the 50 in-process nodes took 44 s to start and did not all find each other within 60 s (members seen per node: min 0, median 38), and the 20- and 30-node meshes re-advertised in 2.2 and 1.8 s. A run after this one, with a run\'s state changes batched (session 19, about 0.5 ms less overhead in six A/B pairs), came in a busier hour (the same trivial run local took 8.78 ms p50, not 6.09): overhead 5.79 ms, 50 nodes re-advertising in 4.7 s, a join in 4.9 s, blob 28% and 103%.' +
    ' The blob transfer on the unlimited namespace link is bound by this host\'s CPU: both ends share its 2 cores, and a 256 MiB fetch took 2.0–2.5 core-seconds of the whole host against 0.8–0.95 for the plain copy (the kernel\'s share of moving the bytes is in both). ChaCha20-Poly1305 on both ends (noise) and sha256 take about 0.6 core-s of that; GC on the receiving node (about 0.35 s, 10–15 full collections a fetch, each started by external memory pressure as every socket read and decrypted message is a new buffer), yamux and framing the rest. Where the link, not the CPU, is the limit, the two are near even: 97% at 1000 Mbit/s, 90% at 2000 Mbit/s (2026-12-02). Tried and dropped (session 17), as none moved the p50 beyond the noise of these runs: hashing and writing on a worker thread (the receiving node\'s main thread took 20% less CPU, the host stayed saturated), handing each chunk on as the pieces it arrived in instead of joining them (the receiver\'s GC time 1.5 → 1.1 s over five fetches), one writev per MiB instead of a write stream, yamux windows of 1 to 16 MiB, larger semi-spaces. The remote-run overhead was 8.2–9.9 ms until /vmesh/run/2 (2026-12-02, session 16): timestamps on both nodes over 300 runs put 2.7 ms of it in opening the run\'s stream (multistream select, and the peer store recording the protocol on both nodes), which a stream kept between runs removes; then 0.45 ms in the requester\'s bookkeeping after the run (reading the run back from SQLite, listing every member for one RTT), 0.3 ms in the executing node reading the run back to send its end, 0.15 ms a node in deciding on an early advert at each of a run\'s five state changes, and 0.1 ms in parsing the signer\'s peer id for each receipt check. CPU per run went with it: A → B → A, 9.5 ms of A\'s and 9.1 ms of B\'s before, 6.6 and 6.4 ms after, against 5.7 ms for the same run local on B. What remains of the overhead is the request and the end crossing noise and yamux (yamux answers every data frame with a window update), the checks on both sides, and SQLite commits on both nodes.';
  return {
    heading: 'Mesh: remote runs and advert convergence (issue 5)',
    text: [...all.map(tableText), note].join('\n\n'),
    markdown: [
      ...all.map(tableMarkdown),
      note,
      'Reproduce: `BENCH_ONLY=mesh npm run bench` as root (`BENCH_MESH_RUNS`, default 200; `BENCH_MESH_BLOB_MIB`, default 256; `BENCH_MESH_BLOB_RUNS`, default 5; `BENCH_MESH_NODES`, default 10,20,30,50; `BENCH_MESH_THREADS`, default the number of cores; `BENCH_MESH_PROCESSES`, default 10, 0 to skip).',
    ].join('\n\n'),
  };
}
