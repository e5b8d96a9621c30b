// The Nanos driver end to end: a static C program built into a Nanos image and run under QEMU. Two ways:
// - with ops itself (0.1.46 and a kernel from `ops update`), wherever ops is on the PATH;
// - on a Nanos kernel built from source, with test/fixtures/stand-in-ops.mjs building the image with
//   Nanos's own mkfs in ops's place: set VMESH_NANOS_TOOLS to the tree's output directory (after
//   `make kernel tools` in github.com/nanovms/nanos).
// Neither ops nor a Nanos tree comes from a Debian package, so `VMESH_REQUIRE=all` requires neither
// (test/helpers/require.ts, OUTSIDE_ALL); name them to require them: `VMESH_REQUIRE=all,ops`.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { SandboxIO, SandboxRequest } from '../../src/drivers/driver.ts';
import { runInSandbox } from '../../src/drivers/lifecycle.ts';
import { NanosDriver } from '../../src/drivers/nanos/driver.ts';
import type { ResolvedResources, Workload } from '../../src/spec/index.ts';
import { startTestNode } from '../helpers/node.ts';
import { hasCommand, skipUnless } from '../helpers/require.ts';
import { createWorld } from '../helpers/world.ts';
import { testOutputs } from '../helpers/outputs.ts';
import { tempDir } from '../helpers/tmp.ts';

const STAND_IN_OPS = fileURLToPath(new URL('../fixtures/stand-in-ops.mjs', import.meta.url));
const tools = process.env.VMESH_NANOS_TOOLS;

/** One program, four ways to end, by its first argument. */
const PROGRAM = `
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
/* Connects to ip:port (giving up after 3 s) and prints what the server answers (the world's servers answer with the caller's address). */
static int connect_to(const char *ip, int port) {
  struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(port) };
  inet_pton(AF_INET, ip, &to.sin_addr);
  int s = socket(AF_INET, SOCK_STREAM, 0);
  fcntl(s, F_SETFL, O_NONBLOCK);
  struct pollfd p = { .fd = s, .events = POLLOUT };
  int err = 0;
  socklen_t len = sizeof err;
  if (connect(s, (struct sockaddr *)&to, sizeof to) != 0 && (errno != EINPROGRESS || poll(&p, 1, 3000) != 1 || getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0)) {
    puts("unreachable");
    return 3;
  }
  fcntl(s, F_SETFL, 0);
  char answer[128] = {0};
  read(s, answer, sizeof answer - 1);
  printf("the world says: %s\\n", answer);
  return 0;
}
int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "hello";
  if (!strcmp(mode, "connect") && argc > 3) return connect_to(argv[2], atoi(argv[3]));
  if (!strcmp(mode, "spin")) for (;;) {}
  if (!strcmp(mode, "count")) for (int i = 0;; i++) { printf("tick %d\\n", i); fflush(stdout); usleep(100000); }
  if (!strcmp(mode, "crash")) { *(volatile int *)0 = 1; }
  if (!strcmp(mode, "exit0")) { puts("fine"); return 0; }
  if (!strcmp(mode, "write")) {
    FILE *f = fopen("/out/result.txt", "w");
    if (!f) { puts("no /out"); return 5; }
    fputs("made in nanos\\n", f);
    fclose(f);
    mkdir("/out/sub", 0755);
    f = fopen("/out/sub/deep.txt", "w");
    fputs("deeper\\n", f);
    fclose(f);
    symlink("/etc/passwd", "/out/escape");
    return 0;
  }
  printf("hello from nanos, argv[2]=%s, GREETING=%s\\n", argc > 2 ? argv[2] : "-", getenv("GREETING"));
  FILE *in = fopen("/in/data/note.txt", "r");
  char line[64] = "no input";
  if (in) { fgets(line, sizeof line, in); fclose(in); }
  printf("input: %s\\n", line);
  fprintf(stderr, "to stderr\\n");
  return 7;
}
`;

const resources: ResolvedResources = { vcpus: 1, memoryMiB: 64, diskMiB: 16, timeoutMs: 60_000, network: { egressMbps: 0, ingressMbps: 0 } };

const networkSkip = () =>
  skipUnless('root', process.getuid?.() === 0, 'run the tests as root (sandbox networks need it)') ||
  skipUnless('iproute2', hasCommand('ip', ['-V']), 'apt-get install iproute2') ||
  skipUnless('nftables', hasCommand('nft', ['--version']), 'apt-get install nftables');

function suite(name: string, skip: false | string, driverFor: (sandboxRoot: string) => NanosDriver, env: Record<string, string> = {}, ops?: string) {
  describe(name, { skip }, () => {
    const tmp = tempDir('vmesh-nanos-vm-');
    const sandboxRoot = path.join(tmp.dir, 'sandboxes');
    const saved: Record<string, string | undefined> = {};
    let driver: NanosDriver;
    let program: Uint8Array;
    let seq = 0;

    before(async () => {
      for (const [k, v] of Object.entries(env)) [saved[k], process.env[k]] = [process.env[k], v];
      writeFileSync(path.join(tmp.dir, 'p.c'), PROGRAM);
      execFileSync('cc', ['-static', '-O1', '-o', path.join(tmp.dir, 'p'), path.join(tmp.dir, 'p.c')]);
      program = new Uint8Array(readFileSync(path.join(tmp.dir, 'p')));
      driver = driverFor(sandboxRoot);
      const probe = await driver.probe();
      assert.ok(probe.available, `the driver is available: ${probe.reason}`);
    });
    after(async () => {
      await driver?.close();
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
      tmp.remove();
    });

    async function run(workload: Partial<Workload>, extra: Partial<SandboxRequest> = {}) {
      let stdout = '';
      const io: SandboxIO = { write: (_s, chunk) => void (stdout += Buffer.from(chunk).toString()), total: () => {} };
      const request: SandboxRequest = {
        runId: `nanosvm${++seq}`,
        workload: { kind: 'unikernel', source: { inline: '' }, ...workload } as Workload,
        code: program,
        resources,
        outputCapBytes: 1 << 20,
        outputs: testOutputs().sink,
        ...extra,
      };
      await driver.validate(request);
      const exit = await runInSandbox(driver, request, io);
      return { exit, stdout };
    }

    it('runs the program with its args, env and input files; its console is stdout; its exit code comes back', async () => {
      const { exit, stdout } = await run(
        { args: ['hello', 'second arg'], env: { GREETING: 'hi there' } },
        { inputs: [{ path: 'data/note.txt', bytes: 11, data: new TextEncoder().encode('from vmesh\n') }] },
      );
      assert.deepEqual([exit.outcome, exit.exitCode], ['exited', 7], stdout);
      assert.match(stdout, /hello from nanos, argv\[2\]=second arg, GREETING=hi there/);
      assert.match(stdout, /input: from vmesh/);
      assert.match(stdout, /to stderr/, 'stderr shares the console');
    });

    it('returns the files the program wrote under /out, and nothing a symlink points at', async () => {
      const { exit, stdout } = await run({ args: ['write'], outputs: ['result.txt', 'sub', 'escape', 'missing.txt'] });
      assert.deepEqual([exit.outcome, exit.exitCode], ['exited', 0], stdout);
      const files = Object.fromEntries(exit.outputs.files.map((f) => [f.path, Buffer.from(f.contentBase64 ?? '', 'base64').toString()]));
      assert.deepEqual(files, { 'result.txt': 'made in nanos\n', 'sub/deep.txt': 'deeper\n' });
      assert.deepEqual(exit.outputs.skipped.map((s) => s.path).sort(), ['escape', 'missing.txt'], JSON.stringify(exit.outputs.skipped));
    });

    it('tells exit 0 from a crash', async () => {
      const ok = await run({ args: ['exit0'] });
      assert.deepEqual([ok.exit.outcome, ok.exit.exitCode], ['exited', 0], ok.stdout);
      const crash = await run({ args: ['crash'] });
      assert.equal(crash.exit.outcome, 'crashed', crash.stdout);
      assert.match(crash.exit.reason ?? '', /killed by signal 11/);
    });

    it('runs as a node\'s unikernel run: the program given inline, the run succeeded or failed by its code', async () => {
      const { node, remove } = await startTestNode({ fileRoots: [], ...(ops === undefined ? {} : { drivers: { nanos: { ops } } }) });
      try {
        const submit = async (args: string[]) =>
          node.waitFor((await node.submit({ kind: 'unikernel', source: { inline: Buffer.from(program).toString('base64'), encoding: 'base64' }, args, resources: { memoryMiB: 64 } })).id);
        const ok = await submit(['exit0']);
        assert.equal(ok.state, 'succeeded', ok.reason);
        assert.equal(ok.driver, 'nanos');
        assert.match(ok.result?.stdout.text ?? '', /fine/);
        const failed = await submit(['hello']);
        assert.deepEqual([failed.state, failed.result?.exitCode], ['failed', 7], failed.reason);
        // The run's own Nanos options reach the kernel: exit 7 is what this program is expected to do.
        const expected = await node.waitFor(
          (await node.submit({ kind: 'unikernel', source: { inline: Buffer.from(program).toString('base64'), encoding: 'base64' }, args: ['hello'], unikernel: { manifest: { expected_exit_code: '7' } }, resources: { memoryMiB: 64 } })).id,
        );
        assert.deepEqual([expected.state, expected.result?.exitCode], ['succeeded', 0], expected.reason);
        await assert.rejects(node.submit({ kind: 'unikernel', source: { inline: 'x' }, unikernel: { manifest: { 'Bad-Key': 'x' } } }), (err: Error & { field?: string }) => err.field?.startsWith('unikernel.manifest') === true);
      } finally {
        await remove();
      }
    });

    it('reaches what its egress allows on a sandbox network, and nothing else', { skip: skip || networkSkip() }, async () => {
      const world = await createWorld('vmtest-nk-world', { host: '10.224.0.1', address: '10.224.0.2' }, [7311, 7312]);
      const { node, remove } = await startTestNode({ fileRoots: [], network: { range: '10.225.0.0/24' }, ...(ops === undefined ? {} : { drivers: { nanos: { ops } } }) });
      try {
        const connect = async (port: number) => {
          const network = { egress: [{ cidr: `${world.address}/32`, ports: [7312] }] };
          const args = ['connect', world.address, String(port)];
          return node.waitFor((await node.submit({ kind: 'unikernel', source: { inline: Buffer.from(program).toString('base64'), encoding: 'base64' }, args, network, resources: { memoryMiB: 64, timeoutMs: 30_000 } })).id);
        };
        const allowed = await connect(7312);
        assert.equal(allowed.state, 'succeeded', `${allowed.reason} ${allowed.result?.stdout.text}`);
        assert.match(allowed.result!.stdout.text, new RegExp(`the world says: ${world.host.replace(/\./g, '\\.')}`), 'reached the allowed port, behind the host address');
        const refused = await connect(7311);
        assert.deepEqual([refused.state, refused.result?.exitCode], ['failed', 3], refused.result?.stdout.text);
        assert.match(refused.result!.stdout.text, /unreachable/);
      } finally {
        await remove();
        await world.remove();
      }
    });

    it('pauses a running unikernel (its output stops) and resumes it (it goes on counting)', async () => {
      let stdout = '';
      const request: SandboxRequest = {
        runId: `nanosvm${++seq}`,
        workload: { kind: 'unikernel', source: { inline: '' }, args: ['count'] } as Workload,
        code: program,
        resources,
        outputCapBytes: 1 << 20,
        outputs: testOutputs().sink,
      };
      const ticks = () => [...stdout.matchAll(/tick (\d+)/g)].map((m) => Number(m[1]));
      const until = async (ok: () => boolean, what: string) => {
        for (const deadline = Date.now() + 30_000; !ok(); await new Promise((r) => setTimeout(r, 50))) if (Date.now() > deadline) assert.fail(`${what}; the console said: ${stdout.slice(-300)}`);
      };
      const prepared = await driver.prepare(request);
      try {
        const sandbox = await driver.start(prepared, { write: (_s, chunk) => void (stdout += Buffer.from(chunk).toString()), total: () => {} });
        await until(() => ticks().length >= 3, 'the program counts');
        await driver.pause!(sandbox);
        await new Promise((r) => setTimeout(r, 300)); // a tick already on its way out
        const atPause = ticks().length;
        await new Promise((r) => setTimeout(r, 1500));
        assert.equal(ticks().length, atPause, 'no tick while paused (15 would have come)');
        await driver.resume!(sandbox);
        await until(() => ticks().length >= atPause + 3, 'the program counts on after resume');
        assert.deepEqual(ticks(), ticks().map((_, i) => i), 'it went on from where it stopped');
        await driver.stop(sandbox, 'cancelled');
        assert.equal((await driver.wait(sandbox)).outcome, 'cancelled');
      } finally {
        await driver.cleanup(prepared);
      }
      assert.equal(driver.liveSandboxes(), 0);
    });

    it('stops a program that never ends at its timeout, and leaves nothing behind', async () => {
      const { exit } = await run({ args: ['spin'] }, { resources: { ...resources, timeoutMs: 4000 } });
      assert.equal(exit.outcome, 'timeout');
      assert.equal(driver.liveSandboxes(), 0);
      assert.deepEqual(existsSync(sandboxRoot) ? readdirSync(sandboxRoot) : [], [], 'no sandbox directory left');
      const images = path.join(process.env.OPS_HOME ?? os.homedir(), '.ops', 'images');
      assert.deepEqual(existsSync(images) ? readdirSync(images).filter((n) => n.startsWith('vmesh-')) : [], [], 'no image left in ops\'s directory');
    });
  });
}

const cc = () => skipUnless('cc', hasCommand('cc'), 'apt-get install gcc libc6-dev (the test builds a static C program)');

suite('nanos driver with ops', skipUnless('ops', hasCommand('ops', ['version']), 'ops 0.1.46 on PATH (https://ops.city), then `ops update` for a Nanos kernel') || cc(), (sandboxRoot) => new NanosDriver({ sandboxRoot }));

const home = tempDir('vmesh-nanos-opshome-');
process.on('exit', () => home.remove());
suite(
  'nanos driver on a Nanos kernel built from source (stand-in ops on Nanos\'s mkfs)',
  skipUnless('nanos-tools', tools !== undefined && existsSync(path.join(tools, 'tools/bin/mkfs')), 'VMESH_NANOS_TOOLS=<nanos>/output of a github.com/nanovms/nanos tree built with `make kernel tools`') || cc(),
  (sandboxRoot) => new NanosDriver({ sandboxRoot, ops: STAND_IN_OPS }),
  { OPS_HOME: home.dir },
  STAND_IN_OPS,
);
