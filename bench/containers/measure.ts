import { performance } from 'node:perf_hooks';
import { cgroupVersion } from '../../src/drivers/oci/cgroups.ts';
import type { OciRuntime } from '../../src/drivers/oci/runtime.ts';
import { Samples, type PhaseResult } from '../lib/load.ts';
import { loadAverage } from '../lib/proc.ts';
import { NODE_CGROUP_PARENT, type ContainersResults, type NodeTimings, type Settings } from './common.ts';
import { createFixture } from './fixture.ts';
import { cgroupDirs, containerProcesses, removeCgroup } from './oci.ts';
import { openBare, type BareRuntime } from './runc.ts';
import { openVmesh, type VmeshNodeWay } from './vmesh.ts';

/**
 * Both ways in one run: the first vmesh run (which unpacks the image) alone, then warm-up runs of each,
 * then the measured runs, alternating bare and vmesh so that a shared machine's drift hits both alike.
 */
export async function measureContainers(settings: Settings, runtime: OciRuntime, log: (line: string) => void): Promise<ContainersResults> {
  log('containers: building the busybox root file system and its OCI image');
  const loadBefore = loadAverage();
  const parentExisted = cgroupDirs(NODE_CGROUP_PARENT).length > 0;
  const fixture = await createFixture();
  let bare: BareRuntime | undefined;
  let vmesh: VmeshNodeWay | undefined;
  try {
    bare = await openBare(fixture, runtime);
    log(`containers: starting a node (${runtime.name} for both ways)`);
    vmesh = await openVmesh(fixture, settings.workers, runtime.command);
    log(`  node pid ${vmesh.node.pid} at ${vmesh.node.url}, oci driver on ${vmesh.runtime}`);

    const t0 = performance.now();
    const first = await vmesh.submit();
    const firstResult = { wallMs: performance.now() - t0, node: first.result.timings };
    const afterFirst = vmesh.fds();
    await bare.once(); // fails the benchmark at once, with the runtime's own words, if the bundle does not run

    const otherContainersBefore = containerProcesses(NODE_CGROUP_PARENT);
    if (otherContainersBefore > 0) log(`  WARNING ${otherContainersBefore} processes of other containers are running under /${NODE_CGROUP_PARENT}`);
    log(`containers: ${settings.warmupRuns} warm-up and ${settings.runs} measured runs of each way, alternating`);
    const measured = await alternate(bare, vmesh, settings, log);

    const load = { loadBefore, loadAfter: loadAverage(), otherContainersBefore, otherContainersAfter: containerProcesses(NODE_CGROUP_PARENT) };
    return {
      settings,
      image: fixture.image,
      cgroups: cgroupVersion(),
      load,
      runc: { runtime: runtime.name, version: runtime.version, userNamespace: bare.userNamespace, phase: measured.bare, leftovers: await bare.leftovers() },
      vmesh: {
        code: vmesh.node.code,
        startupMs: vmesh.node.startupMs,
        runtime: vmesh.runtime,
        first: firstResult,
        phase: measured.vmesh,
        node: measured.node,
        wallMs: measured.wallMs,
        fds: { afterFirst, afterRuns: vmesh.fds() },
        leftovers: await vmesh.leftovers(),
      },
    };
  } finally {
    await vmesh?.close();
    await bare?.close();
    fixture.remove();
    // Left as found: a parent cgroup this run created goes (if nothing else has come to live in it).
    if (!parentExisted) removeCgroup(NODE_CGROUP_PARENT);
  }
}

interface Alternated {
  bare: PhaseResult;
  vmesh: PhaseResult;
  /** Of each vmesh run that succeeded: the node's timings and the client's wall time. */
  node: NodeTimings[];
  wallMs: number[];
}

/** The warm-up runs (unmeasured), then the measured runs: one bare, one vmesh, and again. */
async function alternate(bare: BareRuntime, vmesh: VmeshNodeWay, settings: Settings, log: (line: string) => void): Promise<Alternated> {
  const warmup = new Samples();
  for (let i = 0; i < settings.warmupRuns; i++) {
    await warmup.time(() => bare.once());
    await warmup.time(async () => void (await vmesh.submit()));
  }
  const warm = warmup.result(1);
  if (warm.failed > 0) log(`  WARNING ${warm.failed} of the warm-up runs failed; first: ${warm.firstFailure ?? 'n/a'}`);

  const bareSamples = new Samples();
  const vmeshSamples = new Samples();
  const node: NodeTimings[] = [];
  const wallMs: number[] = [];
  for (let i = 0; i < settings.runs; i++) {
    await bareSamples.time(() => bare.once());
    await vmeshSamples.time(async () => {
      const start = performance.now();
      const run = await vmesh.submit();
      wallMs.push(performance.now() - start);
      node.push(run.result.timings);
    });
  }
  return { bare: bareSamples.result(1), vmesh: vmeshSamples.result(1), node, wallMs };
}
