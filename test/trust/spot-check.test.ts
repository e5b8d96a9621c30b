import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { spotCheckRate } from '../../src/trust/spot-check.ts';

describe('spot-check rate', () => {
  it('always for new nodes, then less as trust grows, never below 5%, never for this node itself', () => {
    assert.equal(spotCheckRate(undefined), 0);
    assert.equal(spotCheckRate({ score: 0.5, good: 0, bad: 0 }), 1);
    assert.equal(spotCheckRate({ score: 0.75, good: 2, bad: 0 }), 1, 'two outcomes are not enough to judge');
    const some = spotCheckRate({ score: 0.8, good: 3, bad: 0 });
    const many = spotCheckRate({ score: 0.97, good: 60, bad: 0 });
    assert.ok(Math.abs(some - 0.2) < 1e-9, 'Math.abs(some - 0.2) < 1e-9');
    assert.equal(many, 0.05);
    assert.ok(spotCheckRate({ score: 0.3, good: 1, bad: 5 }) > some, 'a low reputation is checked more');
  });
});
