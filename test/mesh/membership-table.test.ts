import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { claimOf, MAX_ADVERT_BYTES, sealAdvert } from '../../src/mesh/adverts.ts';
import { Membership } from '../../src/mesh/membership.ts';
import { ADVERT_FORMAT, type NodeAdvert } from '../../src/spec/index.ts';

const TTL = 1000;

function advert(node: string, seq: number): NodeAdvert {
  const r = { vcpus: 1, memoryMiB: 1, diskMiB: 1, egressMbps: 1, ingressMbps: 1 };
  return { format: ADVERT_FORMAT, node, seq, issuedAt: new Date(0).toISOString(), addresses: [], labels: {}, version: '0', drivers: [], capacity: r, free: r, runs: { queued: 0, active: 0 } };
}

/** A table on a clock the test moves. */
function table() {
  const clock = { now: 10_000 };
  const m = new Membership(TTL, () => clock.now);
  const seal = (a: NodeAdvert) => new TextEncoder().encode(`sealed ${a.node} ${a.seq}`);
  const take = (node: string, seq: number, ageMs?: number) => m.accept(advert(node, seq), seal(advert(node, seq)), ageMs);
  return { clock, m, take };
}

describe('membership table', () => {
  it('takes a newer advert, ignores one no newer than the one held', () => {
    const { m, take } = table();
    assert.equal(take('a', 5), 'joined');
    assert.equal(take('a', 5), 'stale', 'the same seq again');
    assert.equal(take('a', 4), 'stale', 'an older one');
    assert.equal(take('a', 6), 'updated');
    assert.equal(m.get('a')?.advert.seq, 6);
    assert.equal(new TextDecoder().decode(m.get('a')!.sealed), 'sealed a 6', 'the sealed bytes of the newest advert are kept to hand on');
  });

  it('keeps a departed member out against a replay of its old adverts, and lets it back with a new one', () => {
    const { clock, m, take } = table();
    take('a', 5);
    clock.now += TTL + 1;
    assert.deepEqual(m.expire(), ['a']);
    assert.equal(take('a', 5), 'stale', 'its last advert, sent again');
    assert.equal(take('a', 3), 'stale', 'an older one');
    assert.equal(m.size, 0);
    assert.equal(m.isNews('a', 5), false, 'news is only what would be taken');
    assert.equal(m.isNews('a', 6), true);
    assert.equal(take('a', 7), 'joined', 'a restarted node advertises a higher seq (it is a clock)');
  });

  it('forgets departed members after ten TTLs', () => {
    const { clock, m, take } = table();
    take('a', 5);
    clock.now += TTL + 1;
    m.expire();
    clock.now += 10 * TTL + 1;
    m.expire();
    assert.equal(take('a', 5), 'joined');
  });

  it('dates a handed-on advert by the age it came with, and refuses one past the TTL', () => {
    const { clock, m, take } = table();
    assert.equal(take('a', 1, 800), 'joined');
    assert.equal(m.get('a')!.lastAdvertAt, clock.now - 800);
    assert.equal(take('b', 1, TTL), 'stale', 'an advert as old as the TTL is no news of a live node');
    clock.now += 201;
    assert.deepEqual(m.expire(), ['a'], 'gone one TTL after it was sent, not after it was handed on');
    take('c', 1);
    take('c', 2, 900);
    assert.equal(m.get('c')!.lastAdvertAt, clock.now, 'a newer advert handed on late does not make the member look older');
  });

  it('reads the node and seq an advert claims, and nothing from bytes that are not one', async () => {
    const key = await generateKeyPair('Ed25519');
    const sealed = await sealAdvert(key, advert('n1', 42));
    assert.deepEqual(claimOf(sealed), { node: 'n1', seq: 42 });
    for (const bad of ['not json', '{"payload": 3}', '{"payload": "{\\"node\\": 1, \\"seq\\": 2}"}', 'null']) {
      assert.equal(claimOf(new TextEncoder().encode(bad)), undefined, bad);
    }
    assert.equal(claimOf(new Uint8Array(MAX_ADVERT_BYTES + 1)), undefined, 'too big to read');
  });

  it('hands on every advert it holds, with its age', () => {
    const { clock, m, take } = table();
    take('a', 1);
    clock.now += 300;
    take('b', 1, 100);
    const held = m.held().map((h) => [new TextDecoder().decode(h.sealed), h.ageMs]);
    assert.deepEqual(held, [['sealed a 1', 300], ['sealed b 1', 100]]);
  });
});
