import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Proximity } from '../../src/mesh/proximity.ts';

describe('proximity', () => {
  it('smooths samples with an EWMA and keeps the floor of the last ten, which one slow sample cannot raise', () => {
    const p = new Proximity(0.25, 10, () => 1000);
    assert.deepEqual(p.record('a', 4), { rttMs: 4, minMs: 4, lastMs: 4, samples: 1, measuredAt: 1000 });
    const spike = p.record('a', 44);
    assert.equal(spike.rttMs, 14, 'a quarter of the way to the new sample');
    assert.equal(spike.minMs, 4, 'the floor stays');
    for (let i = 0; i < 9; i++) p.record('a', 80);
    assert.equal(p.get('a')!.minMs, 44, 'the 4 ms sample has left the window of ten');
    p.record('a', 80);
    assert.equal(p.get('a')!.minMs, 80);
    assert.equal(p.get('a')!.samples, 12);
    p.forget('a');
    assert.equal(p.get('a'), undefined);
  });

  it('picks the peers to measure next: never measured first, then those measured longest ago, at most n', () => {
    let now = 1000;
    const p = new Proximity(0.25, 10, () => now);
    for (const peer of ['a', 'b', 'c']) {
      p.record(peer, 1);
      now += 10;
    }
    assert.deepEqual(p.stalest(['c', 'b', 'new', 'a'], 2), ['new', 'a']);
    p.record('a', 1);
    assert.deepEqual(p.stalest(['a', 'b', 'c'], 2), ['b', 'c'], 'a was just measured: its turn comes last');
    assert.deepEqual(p.stalest(['a', 'b', 'c'], 8), ['b', 'c', 'a'], 'fewer peers than n: all of them');
    assert.deepEqual(p.stalest(['a', 'x', 'b', 'y'], 3), ['x', 'y', 'b'], 'two never measured: both first, in the order given');
  });
});
