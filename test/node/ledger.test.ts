import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Ledger, type Capacity } from '../../src/node/ledger.ts';
import { CapacityExceededError, type ResolvedResources } from '../../src/spec/index.ts';

const CAP: Capacity = { vcpus: 2, memoryMiB: 1024, diskMiB: 4096, egressMbps: 100, ingressMbps: 100 };
const res = (vcpus: number, memoryMiB: number, diskMiB = 0, egressMbps = 0): ResolvedResources => ({
  vcpus,
  memoryMiB,
  diskMiB,
  timeoutMs: 1000,
  network: { egressMbps, ingressMbps: 0 },
});

describe('ledger', () => {
  it('admits until a resource runs out, then refuses, then admits again after a release', () => {
    const ledger = new Ledger(CAP);
    assert.equal(ledger.tryReserve('a', res(1, 512)), true);
    assert.equal(ledger.tryReserve('b', res(1, 512)), true);
    assert.equal(ledger.tryReserve('c', res(0.1, 1)), false);
    assert.deepEqual(ledger.free(), { vcpus: 0, memoryMiB: 0, diskMiB: 4096, egressMbps: 100, ingressMbps: 100 });
    ledger.release('a');
    assert.equal(ledger.tryReserve('c', res(0.1, 1)), true);
  });

  it('adds fractional vcpus exactly (ten times 0.1 fills one vcpu)', () => {
    const ledger = new Ledger({ ...CAP, vcpus: 1 });
    for (let i = 0; i < 10; i++) assert.equal(ledger.tryReserve(`r${i}`, res(0.1, 1)), true, `reservation ${i}`);
    assert.equal(ledger.tryReserve('one-more', res(0.1, 1)), false);
    assert.equal(ledger.free().vcpus, 0);
  });

  it('admits bandwidth against the declared link like any other resource', () => {
    const ledger = new Ledger(CAP);
    assert.equal(ledger.tryReserve('a', res(0.1, 1, 0, 60)), true);
    assert.equal(ledger.tryReserve('b', res(0.1, 1, 0, 60)), false);
  });

  it('names the field when a request can never fit', () => {
    const ledger = new Ledger(CAP);
    assert.throws(
      () => ledger.checkFits(res(1, 4096)),
      (err: unknown) => err instanceof CapacityExceededError && err.field === 'resources.memoryMiB' && /1024/.test(err.message),
    );
  });

  it('releases idempotently and refuses a second reservation for the same run', () => {
    const ledger = new Ledger(CAP);
    ledger.tryReserve('a', res(1, 1));
    assert.throws(() => ledger.tryReserve('a', res(1, 1)));
    ledger.release('a');
    ledger.release('a');
    assert.deepEqual(ledger.free(), CAP);
  });

  it('never hands out more than its capacity, and is whole again once everything is released', () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('reserve' as const), id: fc.integer({ min: 0, max: 20 }), vcpus: fc.integer({ min: 1, max: 300 }).map((n) => n / 100), mem: fc.integer({ min: 1, max: 600 }) }),
      fc.record({ kind: fc.constant('release' as const), id: fc.integer({ min: 0, max: 20 }) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
        const ledger = new Ledger(CAP);
        for (const o of ops) {
          if (o.kind === 'release') ledger.release(`r${o.id}`);
          else if (!ledger.holds(`r${o.id}`)) ledger.tryReserve(`r${o.id}`, res(o.vcpus, o.mem));
          const used = ledger.reserved();
          assert.ok(used.vcpus <= CAP.vcpus + 1e-9 && used.memoryMiB <= CAP.memoryMiB, 'used.vcpus <= CAP.vcpus + 1e-9 && used.memoryMiB <= CAP.memoryMiB');
        }
        for (let i = 0; i <= 20; i++) ledger.release(`r${i}`);
        assert.deepEqual(ledger.free(), CAP);
      }),
    );
  });
});
