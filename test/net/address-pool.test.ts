import assert from 'node:assert/strict';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { AddressPool, AddressPoolExhaustedError } from '../../src/net/address-pool.ts';
import { Store } from '../../src/store/store.ts';
import { tempDir } from '../helpers/tmp.ts';

describe('address pool', () => {
  const tmp = tempDir();
  after(() => tmp.remove());

  it('hands out distinct /30 links, host first and sandbox second, and reuses released ones', () => {
    const store = new Store(path.join(tmp.dir, 'a.db'));
    const pool = new AddressPool('10.89.0.0/28', store);
    const links = ['a', 'b', 'c', 'd'].map((o) => pool.lease(o));
    assert.deepEqual(links.map((l) => [l.subnet, l.hostAddress, l.sandboxAddress]), [
      ['10.89.0.0/30', '10.89.0.1', '10.89.0.2'],
      ['10.89.0.4/30', '10.89.0.5', '10.89.0.6'],
      ['10.89.0.8/30', '10.89.0.9', '10.89.0.10'],
      ['10.89.0.12/30', '10.89.0.13', '10.89.0.14'],
    ]);
    assert.throws(() => pool.lease('e'), AddressPoolExhaustedError);
    pool.release('b');
    assert.equal(pool.lease('e').subnet, '10.89.0.4/30');
    store.close();
  });

  it('keeps its leases in the store, so a restarted node does not hand them out twice', () => {
    const file = path.join(tmp.dir, 'b.db');
    const first = new Store(file);
    new AddressPool('10.90.0.0/16', first).lease('run1');
    first.close();
    const second = new Store(file);
    const link = new AddressPool('10.90.0.0/16', second).lease('run2');
    assert.equal(link.subnet, '10.90.0.4/30');
    second.close();
  });

  it('refuses a range that is not an IPv4 CIDR it can split', () => {
    const store = new Store(path.join(tmp.dir, 'c.db'));
    for (const bad of ['10.0.0.0', '10.0.0.0/31', '300.1.1.1/16', 'fd00::/64']) assert.throws(() => new AddressPool(bad, store), /not an IPv4 CIDR/);
    store.close();
  });
});
