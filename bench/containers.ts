import { existsSync } from 'node:fs';
import os from 'node:os';
import { cgroupVersion } from '../src/drivers/oci/cgroups.ts';
import { findRuntime, type OciRuntime } from '../src/drivers/oci/runtime.ts';
import { BUSYBOX } from '../test/helpers/rootfs.ts';
import type { Benchmark, BenchReport } from './lib/benchmark.ts';
import { envNumber } from './lib/env.ts';
import type { Settings } from './containers/common.ts';
import { measureContainers } from './containers/measure.ts';
import { renderMarkdown, renderText } from './containers/report.ts';

/** `sh -c 'echo hello'` in a busybox container: the OCI runtime on a prepared bundle, and POST /v1/runs of a node. */
export const containersBenchmark: Benchmark = {
  name: 'containers',
  async unavailable() {
    if (process.platform !== 'linux') return 'containers need Linux';
    if (process.getuid?.() !== 0) return 'containers need root: run the benchmark as root';
    if (!existsSync(BUSYBOX)) return `no ${BUSYBOX} to build the root file system from (apt-get install busybox-static)`;
    const runtime = await findRuntime(cgroupVersion());
    return 'missing' in runtime ? runtime.missing : undefined;
  },
  async run(log): Promise<BenchReport> {
    const settings = settingsFromEnv();
    const results = await measureContainers(settings, await runtime(), log);
    return { heading: 'Containers: vmesh run vs runc run (issue 3)', text: renderText(results), markdown: renderMarkdown(results) };
  },
};

/** The runtime the node's oci driver picks, by the same rule (crun on cgroup v2 when installed, runc otherwise). */
async function runtime(): Promise<OciRuntime> {
  const found = await findRuntime(cgroupVersion());
  if ('missing' in found) throw new Error(found.missing);
  return found;
}

function settingsFromEnv(): Settings {
  return {
    runs: envNumber('BENCH_CONTAINER_RUNS', 40, { min: 1, integer: true }),
    warmupRuns: envNumber('BENCH_CONTAINER_WARMUP', 5, { integer: true }),
    workers: envNumber('BENCH_WORKERS', 2, { min: 1, integer: true }),
    cores: os.availableParallelism(),
  };
}
