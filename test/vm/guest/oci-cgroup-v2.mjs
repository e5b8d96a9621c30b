// Runs inside a QEMU guest booted by test/vm/oci-cgroup-v2.test.ts: the host's root file system read-only
// over 9p, /sys/fs/cgroup a pure cgroup v2 hierarchy, and nothing of cgroup v1 mounted. It drives vmesh's
// OCI driver (the compiled one in dist/: tsx would take minutes under TCG) through the node's own
// lifecycle, and prints one `@case <json>` line per case for the test on the host to judge.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { BlobStore } from '../../../dist/blobs/blob-store.js';
import { CappedStream } from '../../../dist/drivers/capture.js';
import { runInSandbox } from '../../../dist/drivers/lifecycle.js';
import { OciDriver } from '../../../dist/drivers/oci/driver.js';
import { blobSink } from '../../../dist/outputs/sink.js';

const [rootfs, work] = process.argv.slice(2);
const say = (name, value) => console.log(`@case ${JSON.stringify({ name, ...value })}`);
const outputs = blobSink(new BlobStore(path.join(work, 'outputs')), { maxBytes: 2 ** 20, inlineBytes: 2 ** 20 });
const PARENT = '/vmesh-v2test';
const driver = new OciDriver({ sandboxRoot: path.join(work, 'sandboxes'), stateDir: path.join(work, 'state'), cgroupParent: PARENT });

let seq = 0;
async function run(script, resources = {}, onRunning = undefined) {
  const streams = { stdout: new CappedStream(2 ** 20), stderr: new CappedStream(2 ** 20) };
  const request = {
    runId: `v2case${++seq}`,
    workload: { kind: 'container', source: { file: 'busybox' }, command: ['sh', '-c', script] },
    code: new Uint8Array(0),
    sourceDir: rootfs,
    resources: { vcpus: 1, memoryMiB: 64, diskMiB: 16, timeoutMs: 120_000, network: { egressMbps: 0, ingressMbps: 0 }, ...resources },
    outputCapBytes: 2 ** 20,
    outputs,
  };
  await driver.validate(request);
  const started = performance.now();
  const io = { write: (s, chunk) => void streams[s].append(chunk), total: (s, n) => streams[s].noteTotal(n) };
  const exit = await runInSandbox(driver, request, io, undefined, onRunning === undefined ? {} : { onRunning: () => onRunning(request.runId) });
  return { exit, wallMs: performance.now() - started, stdout: streams.stdout.toJSON().text, stderr: streams.stderr.toJSON().text };
}

try {
  const probe = await driver.probe();
  say('probe', { available: probe.available, reason: probe.reason, details: probe.details, version: probe.version });
  if (probe.available) {
    const hello = await run('echo hello from crun; cat /proc/self/cgroup');
    say('hello', { exitCode: hello.exit.exitCode, outcome: hello.exit.outcome, stdout: hello.stdout, stderr: hello.stderr });
    // The limits as the kernel holds them, read from the container's cgroup while it runs.
    let limits;
    const files = ['memory.max', 'memory.swap.max', 'pids.max', 'cpu.max'];
    const read = async (runId) => {
      const dir = `/sys/fs/cgroup${PARENT}/vmesh-${runId}/container`;
      // The cgroup appears with no limits ('max') before the runtime writes them: wait for the memory limit.
      const memoryMax = () => (existsSync(path.join(dir, 'memory.max')) ? readFileSync(path.join(dir, 'memory.max'), 'utf8').trim() : 'max');
      for (let i = 0; i < 100 && memoryMax() === 'max'; i++) await new Promise((r) => setTimeout(r, 50));
      limits = Object.fromEntries(files.map((f) => [f, existsSync(path.join(dir, f)) ? readFileSync(path.join(dir, f), 'utf8').trim() : null]));
    };
    let reading;
    const held = await run('sleep 3', { vcpus: 0.5, memoryMiB: 48 }, (runId) => (reading = read(runId)));
    await reading;
    say('limits', { exitCode: held.exit.exitCode, limits });
    const bomb = await run('a=xxxxxxxxxxxxxxxx; while :; do a=$a$a; done', { memoryMiB: 32 });
    say('memory', { outcome: bomb.exit.outcome, reason: bomb.exit.reason, usage: bomb.exit.usage });
    const forks = await run('for i in $(seq 1 400); do sleep 30 & done; echo unreachable');
    say('pids', { outcome: forks.exit.outcome, exitCode: forks.exit.exitCode, stdout: forks.stdout, stderr: forks.stderr.slice(0, 400) });
    const spin = await run('i=0; while [ $i -lt 40000 ]; do i=$((i+1)); done', { vcpus: 0.25 });
    say('cpu', { exitCode: spin.exit.exitCode, cpuMs: spin.exit.usage.cpuMs, wallMs: spin.wallMs });
  }
} catch (err) {
  say('error', { message: err.stack ?? String(err) });
} finally {
  await driver.close().catch((err) => say('error', { message: `close: ${err.message}` }));
  const left = (() => {
    try {
      return readdirSync('/sys/fs/cgroup/vmesh-v2test');
    } catch {
      return [];
    }
  })().filter((e) => e.startsWith('vmesh-'));
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(work)).length;
  say('left', { cgroups: left, mounts });
}
