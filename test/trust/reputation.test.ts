import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import path from 'node:path';
import { Store } from '../../src/store/store.ts';
import { latencyOutcome, Reputation } from '../../src/trust/reputation.ts';
import { tempDir } from '../helpers/tmp.ts';

describe('reputation', () => {
  it('starts neutral, rises with successes, falls hard on a mismatch, decays by half-life, and survives a reopen', (t) => {
    const tmp = tempDir('vmesh-rep-');
    t.after(() => tmp.remove());
    let now = 1_000_000;
    const file = path.join(tmp.dir, 'vmesh.db');
    let store = new Store(file);
    const rep = new Reputation(store, 60_000, () => now);
    assert.equal(rep.score('p'), 0.5);
    for (let i = 0; i < 8; i++) rep.record('p', 'succeeded');
    assert.equal(rep.score('p'), 0.9);
    rep.record('p', 'failed'); // the workload's own failure says nothing of the node
    assert.equal(rep.score('p'), 0.9);
    rep.record('p', 'mismatch');
    assert.ok(rep.score('p') < 0.35, `after a mismatch: ${rep.score('p')}`);
    // One half-life later both weights are halved: the score moves back towards 0.5.
    const before = rep.get('p');
    now += 60_000;
    const after = rep.get('p');
    assert.ok(Math.abs(after.good - before.good / 2) < 1e-9 && Math.abs(after.bad - before.bad / 2) < 1e-9, 'Math.abs(after.good - before.good / 2) < 1e-9 && Math.abs(after.bad - before.bad / 2) < 1e-9');
    assert.ok(after.score > before.score && after.score < 0.5, `${before.score} → ${after.score}`);
    assert.deepEqual(after.counts, { succeeded: 8, failed: 1, mismatch: 1 });
    store.close();
    store = new Store(file);
    t.after(() => store.close());
    const reopened = new Reputation(store, 60_000, () => now);
    assert.equal(reopened.get('p').score, after.score);
    assert.deepEqual(reopened.list().map((r) => r.peer), ['p']);
  });

  it('a node is slow when it answers far later than its round trip and its own run time explain', () => {
    assert.equal(latencyOutcome(40, 30, 2), undefined, '10 ms beyond its run on a 2 ms link');
    assert.equal(latencyOutcome(600, 30, 2), 'slow', 'half a second beyond its run on a 2 ms link');
    assert.equal(latencyOutcome(600, 30, 100), undefined, 'a far node may take that long');
    assert.equal(latencyOutcome(600, 30, undefined), undefined, 'never measured: no judgement');
  });
});
