// `vmesh image build`: the real build (apt-get download of Debian's kernel, busybox, the agent) into a
// cache of the test's own, with its progress, then the cached image found again.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { pvhProblem } from '../../src/guest/vmlinux.ts';
import { hasCommand, skipUnless } from '../helpers/require.ts';
import { BUSYBOX } from '../helpers/rootfs.ts';
import { tempDir } from '../helpers/tmp.ts';

const exec = promisify(execFile);
const BIN = path.join(import.meta.dirname, '..', '..', 'bin', 'vmesh.js');
const skip =
  skipUnless('busybox', existsSync(BUSYBOX), 'apt-get install busybox-static') ||
  skipUnless('apt', hasCommand('apt-get', ['--version']) && hasCommand('dpkg-deb', ['--version']), 'a Debian host with apt-get and dpkg-deb (the guest kernel is fetched with apt-get download)');

describe('vmesh image build', { skip }, () => {
  it('builds the guest image showing each step, finds it cached the next time, and refuses a cache that is a file', async () => {
    const cache = tempDir('vmesh-image-cli-');
    try {
      const first = await exec(process.execPath, [BIN, 'image', 'build', '--cache', cache.dir], { timeout: 300_000 });
      const steps = first.stderr.trim().split('\n');
      assert.match(steps[0]!, /^\[\d+\.\ds\] guest kernel: asking apt for linux-image-amd64$/);
      assert.ok(steps.some((l) => /guest kernel: downloading linux-image-\d/.test(l)), first.stderr);
      assert.match(steps.at(-1)!, /guest image: sha256:[0-9a-f]{12}… ready \(\d+\.\d MiB initramfs\)$/);
      const key = first.stdout.split('\n')[0]!;
      const again = JSON.parse((await exec(process.execPath, [BIN, 'image', 'build', '--cache', cache.dir, '--json'], { timeout: 60_000 })).stdout);
      assert.equal(again.key, key);
      assert.ok(again.seconds < 5, `the cached image took ${again.seconds} s to find`);
      assert.ok(existsSync(again.kernel) && existsSync(again.initrd), 'existsSync(again.kernel) && existsSync(again.initrd)');
      if (hasCommand('xz')) {
        // Debian's kernel is XZ-compressed; unpacked once, it boots without decompressing itself in the guest.
        assert.ok(steps.some((l) => /guest kernel: unpacked \(xz, \d+ MiB, \d+ MiB to load\)$/.test(l)), first.stderr);
        assert.equal(path.basename(again.vmlinux), 'vmlinux');
        assert.equal(await pvhProblem(again.vmlinux), undefined);
      }
      const file = path.join(cache.dir, 'a-file');
      writeFileSync(file, 'x');
      await assert.rejects(exec(process.execPath, [BIN, 'image', 'build', '--cache', file], { timeout: 60_000 }), (e: { code?: number; stderr?: string }) => e.code !== 0 && /vmesh: .*(ENOTDIR|not a directory)/.test(e.stderr ?? ''));
    } finally {
      cache.remove();
    }
  });
});
