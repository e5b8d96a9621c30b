import assert from 'node:assert/strict';
import { existsSync, lstatSync, mkdirSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { OciDriver } from '../../src/drivers/oci/driver.ts';
import { DEFAULT_ID_MAP } from '../../src/drivers/oci/user-namespace.ts';
import type { Workload } from '../../src/spec/index.ts';
import { hasCommand, skipUnless, userNamespacesAllowed, USERNS_HINT } from '../helpers/require.ts';
import { BUSYBOX, busyboxRootfs } from '../helpers/rootfs.ts';
import { entriesOf, writeOciLayout, type Entry } from '../helpers/oci-image.ts';
import { tempDir } from '../helpers/tmp.ts';
import { runCase, type Case } from './compliance.ts';

const skip =
  skipUnless('root', process.getuid?.() === 0, 'run the tests as root (containers need it)') ||
  skipUnless('runc', hasCommand('runc'), 'apt-get install runc') ||
  skipUnless('busybox', existsSync(BUSYBOX), 'apt-get install busybox-static') ||
  skipUnless('userns', userNamespacesAllowed(), USERNS_HINT);

const HOST_ID = DEFAULT_ID_MAP.hostId;

describe('containers in user namespaces of their own', { skip }, () => {
  const root = tempDir('vmesh-userns-');
  const rootfs = path.join(root.dir, 'busybox');
  const layout = path.join(root.dir, 'layout');
  const images = path.join(root.dir, 'images');
  const drivers: OciDriver[] = [];
  const driver = (name: string, extra: Partial<ConstructorParameters<typeof OciDriver>[0]> = {}) => {
    const d = new OciDriver({ sandboxRoot: path.join(root.dir, name), stateDir: path.join(root.dir, `${name}-state`), imageRoot: images, ...extra });
    drivers.push(d);
    return d;
  };
  // An image with an application user's home (uid 1000) beside root's files.
  const appFiles: Entry[] = [
    { name: 'home/', type: 'directory' },
    { name: 'home/app/', type: 'directory', mode: 0o700, uid: 1000, gid: 1000 },
    { name: 'home/app/secret', content: 'the app\'s own\n', mode: 0o600, uid: 1000, gid: 1000 },
  ];
  before(async () => {
    busyboxRootfs(rootfs);
    await writeOciLayout(layout, [entriesOf(rootfs), appFiles], { Cmd: ['sh'] });
  });
  after(async () => {
    for (const d of drivers) await d.close();
    root.remove();
  });
  const sh = (script: string, source: 'image' | 'dir', extra: Partial<Workload> = {}): Case => ({
    workload: { kind: 'container', source: { file: source }, command: ['sh', '-c', script], ...extra },
    code: new Uint8Array(0),
    sourceDir: source === 'image' ? layout : rootfs,
  });

  let d: OciDriver;
  it('maps container root onto an unprivileged host id, and shifts the image\'s owners into the range', async () => {
    d = driver('default');
    const probe = await d.probe();
    assert.equal(probe.available, true, probe.reason);
    assert.equal(probe.details?.userNamespace, `container ids 0-65535 are host ids ${HOST_ID}-${HOST_ID + 65535}`);
    const script = 'cat /proc/self/uid_map /proc/self/gid_map; id -u; stat -c %u:%g /bin/busybox /home/app; cat /home/app/secret 2>&1; echo o > /out/o; stat -c %u /out/o';
    const { exit, stdout, stderr } = await runCase(d, sh(script, 'image', { outputs: ['o'] }), { resources: { diskMiB: 64 } });
    assert.equal(exit.exitCode, 0, stderr.text);
    const map = `0 ${HOST_ID} 65536`;
    assert.deepEqual(
      stdout.text.split('\n').map((l) => l.trim().replace(/\s+/g, ' ')),
      [map, map, '0', '0:0', '1000:1000', "cat: can't open '/home/app/secret': Permission denied", '0', ''],
      'root inside; the app user\'s home is the app user\'s, which root without CAP_DAC_OVERRIDE may not enter',
    );
    assert.equal(exit.outputs.files[0]?.path, 'o');
    // On the host, the cached image's files belong to the shifted ids.
    const [cached] = readdirSync(images).filter((n) => n.endsWith(`-ids-${HOST_ID}-65536`));
    assert.ok(cached !== undefined, `an image directory for the range among ${readdirSync(images).join(', ')}`);
    const owner = (p: string) => `${lstatSync(path.join(images, cached, 'rootfs', p)).uid}:${lstatSync(path.join(images, cached, 'rootfs', p)).gid}`;
    assert.equal(owner('bin/busybox'), `${HOST_ID}:${HOST_ID}`);
    assert.equal(owner('home/app/secret'), `${HOST_ID + 1000}:${HOST_ID + 1000}`);
    assert.equal(owner(''), `${HOST_ID}:${HOST_ID}`, 'the root directory, which no entry names');
  });

  it('shows a plain directory\'s host-owned files as nobody\'s: readable, not writable', async () => {
    const { exit, stdout, stderr } = await runCase(d, sh('stat -c %u:%g /etc /; /bin/busybox true && echo ran busybox; touch /etc/x 2>&1 || true; touch /x && echo made /x', 'dir'));
    assert.equal(exit.exitCode, 0, stderr.text);
    assert.equal(stdout.text, "65534:65534\n0:0\nran busybox\ntouch: /etc/x: Permission denied\nmade /x\n");
  });

  it('runs as host root (without capabilities) when switched off', async () => {
    const d = driver('off', { userNamespace: false });
    const probe = await d.probe();
    assert.match(String(probe.details?.userNamespace), /^none: switched off/);
    const { stdout } = await runCase(d, sh('cat /proc/self/uid_map', 'dir'));
    assert.equal(stdout.text.trim().replace(/\s+/g, ' '), '0 0 4294967295');
  });

  it('says why a host cannot give the range, falling back only when no range was asked for', async () => {
    const closed = path.join(root.dir, 'closed');
    mkdirSync(closed, { mode: 0o700 });
    const rootsDir = path.join(closed, 'roots');
    const asked = await driver('asked', { rootsDir, userNamespace: { hostId: 200_000, size: 65536 } }).probe();
    assert.equal(asked.available, false);
    assert.match(asked.reason!, new RegExp(`${closed} \\(mode 700, owner 0:0\\) does not let the containers' root \\(host id 200000\\) through`));
    const auto = await driver('auto', { rootsDir }).probe();
    assert.equal(auto.available, true, auto.reason);
    assert.match(String(auto.details?.userNamespace), /^none: .*does not let the containers' root/);
    const bad = await driver('bad', { userNamespace: { hostId: 0, size: 65536 } }).probe();
    assert.match(bad.reason!, /drivers\.oci\.userNamespace: hostId must be a whole number above 0/);
  });

  it('refuses an image whose files belong to ids outside the range, leaving nothing behind', async () => {
    const outside = path.join(root.dir, 'outside');
    await writeOciLayout(outside, [entriesOf(rootfs), [{ name: 'far', content: 'x', uid: 70_000 }]], { Cmd: ['sh'] });
    const before = readdirSync(images).sort();
    await assert.rejects(
      runCase(d, { ...sh('true', 'image'), sourceDir: outside }, { resources: { diskMiB: 64 } }),
      /entry "far": its owner 70000:0 is outside the 65536 ids a container has \(drivers\.oci\.userNamespace\.size\)/,
    );
    assert.deepEqual(readdirSync(images).sort(), before, 'no half-unpacked image');
    assert.equal(d.liveSandboxes(), 0);
  });
});

describe('drivers.oci.userNamespace in config.json', () => {
  it('takes a range or false, and names the field of a bad one', async () => {
    const { loadConfig } = await import('../../src/node/config.ts');
    const home = tempDir('vmesh-userns-config-');
    try {
      assert.deepEqual(loadConfig(home.dir).drivers.oci, {}, 'the default: decided by the driver');
      assert.deepEqual(loadConfig(home.dir, { drivers: { oci: { userNamespace: false } } }).drivers.oci, { userNamespace: false });
      const range = { hostId: 300_000, size: 65536 };
      assert.deepEqual(loadConfig(home.dir, { drivers: { oci: { userNamespace: range } } }).drivers.oci, { userNamespace: range });
      const { writeFileSync } = await import('node:fs');
      writeFileSync(path.join(home.dir, 'config.json'), JSON.stringify({ drivers: { oci: { userNamespace: { hostId: 0, size: 65536 } } } }));
      assert.throws(() => loadConfig(home.dir), /drivers\.oci\.userNamespace/);
    } finally {
      home.remove();
    }
  });
});
