import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { hostNameservers, resolvConf } from '../../src/net/nameservers.ts';
import { tempDir } from '../helpers/tmp.ts';

describe('name servers for sandboxes', () => {
  const dir = tempDir('vmesh-resolv-');
  after(() => dir.remove());
  const from = (text: string) => {
    const file = path.join(dir.dir, 'resolv.conf');
    writeFileSync(file, text);
    return hostNameservers(file);
  };

  it('takes the host\'s IPv4 name servers a sandbox can reach, at most three, each once', () => {
    assert.deepEqual(from('# comment\nsearch example\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver ::1\nnameserver 2001:db8::1\nnameserver 10.0.0.2\n  nameserver 192.0.2.1 # second\nnameserver 192.0.2.2\nnameserver 192.0.2.3\n'), [
      '10.0.0.2',
      '192.0.2.1',
      '192.0.2.2',
    ]);
  });

  it('gives none where the host has only loopback ones (systemd-resolved), or no resolv.conf', () => {
    assert.deepEqual(from('nameserver 127.0.0.53\noptions edns0\n'), []);
    assert.deepEqual(hostNameservers(path.join(dir.dir, 'missing')), []);
  });

  it('writes one nameserver line each', () => {
    assert.match(resolvConf(['10.0.0.2', '192.0.2.1']), /\nnameserver 10\.0\.0\.2\nnameserver 192\.0\.2\.1\n$/);
  });
});
