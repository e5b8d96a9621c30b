import type { Command } from 'commander';
import type { RunState } from '../../spec/index.ts';
import { withClient } from '../connect.ts';
import { age, duration, printJson, table } from '../format.ts';
import { parseInteger } from '../parse.ts';

/** `vmesh ps`, `vmesh node`, `vmesh drivers`: read-only views of the node. */
export function inspectCommands(program: Command): void {
  program
    .command('ps')
    .description('list runs, newest first')
    .option('--state <state>', 'only runs in this state')
    .option('--limit <n>', 'at most this many', parseInteger, 20)
    .action((opts: { state?: RunState; limit: number }, cmd: Command) =>
      withClient(cmd, async (client, global) => {
        const q: { limit: number; state?: RunState } = { limit: opts.limit };
        if (opts.state !== undefined) q.state = opts.state;
        const runs = await client.listRuns(q);
        if (global.json) return printJson(runs);
        const rows = [['ID', 'STATE', 'DRIVER', 'NAME', 'AGE', 'TIME']];
        for (const r of runs) {
          rows.push([r.id, r.state, r.driver ?? '-', r.name ?? r.kind, age(r.createdAt), duration(r.result?.timings.totalMs)]);
        }
        process.stdout.write(`${table(rows)}\n`);
      }),
    );

  program
    .command('node')
    .description("this node's identity, capacity, free resources and drivers")
    .action((_opts: object, cmd: Command) =>
      withClient(cmd, async (client, global) => {
        const n = await client.node();
        if (global.json) return printJson(n);
        const line = (c: typeof n.capacity) => `${c.vcpus} vcpus, ${c.memoryMiB} MiB memory, ${c.diskMiB} MiB disk, ${c.egressMbps}/${c.ingressMbps} Mbit/s out/in`;
        process.stdout.write(
          [
            `node      ${n.id} (vmesh ${n.version}, up since ${n.startedAt})`,
            `capacity  ${line(n.capacity)}`,
            `free      ${line(n.free)}`,
            `runs      ${n.runs.active} active, ${n.runs.queued} queued`,
            `drivers   ${n.drivers.map((d) => `${d.name}${d.probe.available ? '' : ' (unavailable)'}`).join(', ')}`,
            `network   ${n.network.available ? `sandbox networks from ${n.network.range}` : `none for sandboxes: ${n.network.reason ?? 'unavailable'}`}`,
          ].join('\n') + '\n',
        );
      }),
    );

  program
    .command('nodes')
    .description('the mesh as this node sees it: each node, its drivers, free resources, location and round-trip time')
    .option('--addresses', 'also print every address of each node (what `vmesh up --join` takes)')
    .action((opts: { addresses?: boolean }, cmd: Command) =>
      withClient(cmd, async (client, global) => {
        const view = await client.nodes();
        if (global.json) return printJson(view);
        const rows = [['NODE', 'DRIVERS', 'FREE VCPUS', 'FREE MEMORY', 'RUNS', 'REGION', 'RTT', 'REPUTATION', 'SEEN']];
        for (const n of view.nodes) {
          const a = n.advert;
          rows.push([
            `${n.id}${n.self ? ' (this node)' : ''}`,
            a.drivers.filter((d) => d.available).map((d) => d.name).join(',') || '-',
            `${round(a.free.vcpus)}/${round(a.capacity.vcpus)}`,
            `${a.free.memoryMiB}/${a.capacity.memoryMiB} MiB`,
            `${a.runs.active}+${a.runs.queued}`,
            a.location?.region ?? '-',
            n.self ? '-' : n.rtt === undefined ? '?' : `${n.rtt.minMs.toFixed(1)} ms`,
            n.self ? '-' : `${n.reputation.score.toFixed(2)}${Object.keys(n.reputation.counts).length === 0 ? '' : ` (${Object.entries(n.reputation.counts).map(([k, v]) => `${v} ${k}`).join(', ')})`}`,
            n.self ? 'now' : `${(n.advertAgeMs / 1000).toFixed(1)} s ago`,
          ]);
        }
        process.stdout.write(`${table(rows)}\n`);
        if (!view.mesh.enabled) process.stdout.write('this node keeps out of any mesh (started with --no-mesh)\n');
        else if (opts.addresses) {
          for (const n of view.nodes) for (const addr of n.advert.addresses) process.stdout.write(`${addr}\n`);
        } else process.stdout.write(`join this node with: vmesh up --join ${view.mesh.addresses[0] ?? '<address>'}\n`);
        if (view.banned.length > 0) process.stdout.write(`refused peers: ${view.banned.map((b) => `${b.peer} (${b.reason})`).join('; ')}\n`);
      }),
    );

  program
    .command('drivers')
    .description('the drivers of this node in preference order, whether each can run here and why not, and which one each kind goes to')
    .action((_opts: object, cmd: Command) =>
      withClient(cmd, async (client, global) => {
        const { drivers, choices } = await client.driverReport();
        if (global.json) return printJson({ drivers, choices });
        const rows = [['DRIVER', 'KINDS', 'ISOLATION', 'AVAILABLE', 'VERSION / WHY NOT']];
        for (const d of drivers) {
          const details = Object.entries(d.probe.details ?? {}).map(([k, v]) => `${k} ${v}`).join(', ');
          const about = (d.probe.available ? d.probe.version : d.probe.reason) ?? '';
          rows.push([d.name, d.kinds.join(','), d.isolation, d.probe.available ? 'yes' : 'no', details ? `${about} (${details})` : about]);
        }
        const lines = choices.map((c) => {
          const skipped = c.passedOver.map((p) => `${p.driver} ${p.reason}`).join('; ');
          return `${c.kind} runs go to ${c.driver ?? 'no driver (none is available)'}${skipped ? `, passing over ${skipped}` : ''}`;
        });
        process.stdout.write(`${table(rows)}\n\n${lines.join('\n')}\n`);
      }),
    );
}

function round(n: number): string {
  return String(Math.round(n * 100) / 100);
}
