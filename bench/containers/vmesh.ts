import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { defaultRootsDir } from '../../src/drivers/oci/user-namespace.ts';
import { WrongResultError } from '../lib/load.ts';
import { openFds } from '../lib/proc.ts';
import { startNode, type NodeProcess } from '../lib/vmesh-node.ts';
import { COMMAND, DISK_MIB, EXPECTED_STDOUT, NODE_CGROUP_PARENT, NODE_CONTAINER_PREFIX, type Leftovers, type NodeTimings } from './common.ts';
import { IMAGE_NAME, type Fixture } from './fixture.ts';
import { cgroupDirs, listContainers, removeContainers } from './oci.ts';

/** The run as POST /v1/runs returns it; only the fields checked or reported. */
export interface RunBody {
  id?: string;
  state?: string;
  reason?: string;
  result?: { exitCode?: number | null; stdout?: { text?: string }; stderr?: { text?: string }; timings?: NodeTimings };
}

/** A vmesh node in a child process with the busybox image under its file root. */
export interface VmeshNodeWay {
  readonly node: NodeProcess;
  /** The OCI runtime and version its oci driver found. */
  readonly runtime: string;
  /** One POST /v1/runs of the container, waiting for the result; throws unless it succeeded with the expected output. */
  submit(): Promise<RunBody & { result: { timings: NodeTimings } }>;
  fds(): number;
  /** What the runs left behind: containers in the node's runtime state, their cgroups, sandbox directories. */
  leftovers(): Promise<Leftovers>;
  close(): Promise<void>;
}

/**
 * Starts `vmesh up` on the fixture's home (its config.json serves the image's file root) and checks that
 * its oci driver is available. `runtimeCommand` is used only to list and remove what the node leaves.
 */
export async function openVmesh(fixture: Fixture, workers: number, runtimeCommand: string): Promise<VmeshNodeWay> {
  const node = await startNode({ home: fixture.home, workers });
  // Where the node keeps its runtime state (src/node/node.ts): listed to count leftovers, cleared once it has stopped.
  const stateDir = path.join(fixture.home, 'oci-state');
  const runIds: string[] = [];
  try {
    const runtime = await ociRuntime(node);
    const body = JSON.stringify({ kind: 'container', source: { file: IMAGE_NAME }, command: COMMAND, resources: { diskMiB: DISK_MIB } });
    const headers = { authorization: `Bearer ${node.token}`, 'content-type': 'application/json' };
    return {
      node,
      runtime,
      async submit() {
        const res = await fetch(`${node.url}/v1/runs?wait=true`, { method: 'POST', headers, body });
        const text = await res.text();
        if (!res.ok) throw new WrongResultError(`HTTP ${res.status}: ${text.slice(0, 500)}`);
        const run = JSON.parse(text) as RunBody;
        if (run.id !== undefined) runIds.push(run.id);
        const stdout = run.result?.stdout?.text;
        if (run.state !== 'succeeded' || stdout !== EXPECTED_STDOUT || run.result?.timings === undefined) {
          const stderr = run.result?.stderr?.text ?? '';
          throw new WrongResultError(`state ${run.state}${run.reason ? ` (${run.reason})` : ''}, stdout ${JSON.stringify(stdout)}, stderr ${JSON.stringify(stderr.slice(0, 500))}`);
        }
        return run as RunBody & { result: { timings: NodeTimings } };
      },
      fds: () => openFds(node.pid),
      async leftovers() {
        const sandboxes = path.join(fixture.home, 'sandboxes');
        // Bundles are made in the driver's tmpfs (src/drivers/oci/bundle-area.ts), input files under sandboxes/.
        const bundles = `${defaultRootsDir(sandboxes)}.bundles`;
        const entries = (dir: string) => (existsSync(dir) ? readdirSync(dir).length : 0);
        return {
          containers: (await listContainers(runtimeCommand, stateDir)).length,
          cgroups: runIds.flatMap((id) => cgroupDirs(`${NODE_CGROUP_PARENT}/${NODE_CONTAINER_PREFIX}${id}`)).length,
          directories: entries(sandboxes) + entries(bundles),
        };
      },
      close: () => stop(node, runtimeCommand, stateDir),
    };
  } catch (err) {
    await stop(node, runtimeCommand, stateDir);
    throw err;
  }
}

/** Stops the node, then removes any container it left in its runtime state (none, when it drained). */
async function stop(node: NodeProcess, runtimeCommand: string, stateDir: string): Promise<void> {
  await node.stop();
  await removeContainers(runtimeCommand, stateDir);
}

interface DriverStatus {
  name: string;
  probe: { available: boolean; version?: string; reason?: string; details?: Record<string, string> };
}

/** The node's oci driver must be available: "<runtime> <version>" as it reports them. */
async function ociRuntime(node: NodeProcess): Promise<string> {
  const res = await fetch(`${node.url}/v1/drivers`, { headers: { authorization: `Bearer ${node.token}` } });
  const { drivers } = (await res.json()) as { drivers: DriverStatus[] };
  const oci = drivers.find((d) => d.name === 'oci');
  if (oci?.probe.available !== true) throw new Error(`the node's oci driver is not available: ${oci?.probe.reason ?? 'no such driver'}`);
  return `${oci.probe.details?.runtime ?? '?'} (${oci.probe.version ?? 'unknown version'}); user namespace: ${oci.probe.details?.userNamespace ?? 'none'}`;
}
