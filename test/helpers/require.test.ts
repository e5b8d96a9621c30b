import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { hasCommand, skipUnless } from './require.ts';

describe('host tool requirements', () => {
  const saved = process.env.VMESH_REQUIRE;
  afterEach(() => {
    if (saved === undefined) delete process.env.VMESH_REQUIRE;
    else process.env.VMESH_REQUIRE = saved;
  });

  it('does not skip when the tool is present', () => {
    assert.equal(skipUnless('node', hasCommand(process.execPath), 'install Node.js'), false);
  });

  it('skips with the install hint when the tool is missing', () => {
    delete process.env.VMESH_REQUIRE;
    const reason = skipUnless('nope', hasCommand('vmesh-no-such-command'), 'apt-get install nope');
    assert.equal(reason, 'nope is missing: apt-get install nope');
  });

  it('fails instead when VMESH_REQUIRE names the tool', () => {
    process.env.VMESH_REQUIRE = 'runc,nope';
    assert.throws(() => skipUnless('nope', false, 'apt-get install nope'), /VMESH_REQUIRE names nope/);
    process.env.VMESH_REQUIRE = 'all';
    assert.throws(() => skipUnless('anything', false, 'hint'));
  });

  it('leaves the VMMs that need a real KVM out of `all` unless they are named', () => {
    process.env.VMESH_REQUIRE = 'all';
    assert.equal(skipUnless('firecracker', false, 'hint'), 'firecracker is missing: hint');
    process.env.VMESH_REQUIRE = 'all,firecracker';
    assert.throws(() => skipUnless('firecracker', false, 'hint'), /VMESH_REQUIRE names firecracker/);
  });
});
