import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { resolveResources } from '../../src/node/config.ts';
import { DEFAULT_POLICY, explain, PlacementView, placementRequest, requestPolicy, seedOf, type Candidate } from '../../src/placement/index.ts';
import type { Workload } from '../../src/spec/index.ts';
import { candidate, DRIVERS, fn, vm, type NodeShape } from './fixtures.ts';

function place(nodes: NodeShape[], workload: Workload, seed = 'r1') {
  const candidates = nodes.map(candidate);
  const request = placementRequest(workload, resolveResources(workload), seedOf(seed));
  const policy = requestPolicy(DEFAULT_POLICY, workload.placement);
  return explain(candidates, request, policy);
}

describe('placement', () => {
  it('with resources equal, chooses the node with the lowest round trip', () => {
    const nodes = [
      { id: 'far', rttMs: 80 },
      { id: 'near', rttMs: 2 },
      { id: 'mid', rttMs: 20 },
    ];
    for (const seed of ['a', 'b', 'c', 'd', 'e']) assert.equal(place(nodes, fn(), seed).chosen, 'near');
  });

  it('never gives a microVM to a node without a vm driver, and names the filter', () => {
    const e = place([{ id: 'containers', rttMs: 1, drivers: ['oci', 'wasm'] }, { id: 'vms', rttMs: 50, drivers: ['qemu'] }], vm());
    assert.equal(e.chosen, 'vms');
    const rejected = e.candidates.find((c) => c.node === 'containers')!;
    assert.equal(rejected.eligible, false);
    const driver = rejected.filters.find((f) => f.filter === 'driver')!;
    assert.equal(driver.pass, false);
    assert.match(driver.reason!, /no available driver runs a microvm; it has oci \(container, container\), wasm/);
  });

  it('isolation: vm excludes container-only nodes even for a container workload', () => {
    const work = { kind: 'container', source: { file: 'x' }, isolation: 'vm' } as const satisfies Workload;
    const e = place([{ id: 'c', drivers: ['oci'] }], work);
    assert.equal(e.chosen, null);
    assert.match(e.summary, /no node fits this container run: of 1 node, 1 has no available driver for a container with vm isolation/);
  });

  it('skips a full node, and says what would fit when nothing does', () => {
    const work = fn({ resources: { memoryMiB: 8192 } });
    const e = place(
      [
        { id: 'full', rttMs: 1, free: { memoryMiB: 1024 } },
        { id: 'roomy', rttMs: 60, free: { memoryMiB: 12_000 } },
      ],
      work,
    );
    assert.equal(e.chosen, 'roomy');
    assert.match(e.candidates.find((c) => c.node === 'full')!.filters.find((f) => f.filter === 'free')!.reason!, /1024 MiB memory free, 8192 asked/);
    const none = place(
      [
        { id: 'qemu-a', drivers: ['qemu'], free: { memoryMiB: 6144 } },
        { id: 'qemu-b', drivers: ['qemu'], free: { memoryMiB: 2048 } },
        { id: 'fn-only', drivers: ['wasm'] },
      ],
      vm({ resources: { memoryMiB: 8192 } }),
    );
    assert.equal(none.chosen, null);
    assert.equal(
      none.summary,
      'no node fits this microvm run: of 3 nodes, 2 have the driver but not 8192 MiB memory free; the most is 6144 MiB memory on qemu-a; 1 has no available driver for a microvm',
    );
  });

  it('explain lists every candidate with every filter verdict, and every score term of the eligible', () => {
    const e = place(
      [
        { id: 'a', rttMs: 5, labels: { gpu: 'a100' }, location: { region: 'eu' } },
        { id: 'b', rttMs: 5, labels: { gpu: 'none' }, location: { region: 'eu' } },
        { id: 'c', rttMs: 5, labels: { gpu: 'a100' }, location: { region: 'us' } },
        { id: 'd', rttMs: 5, labels: { gpu: 'a100' }, location: { region: 'eu' }, reputation: 0.1 },
        { id: 'e', rttMs: 300, labels: { gpu: 'a100' }, location: { region: 'eu' } },
      ],
      fn({ placement: { labels: { gpu: 'a100' }, regions: ['eu'], maxRttMs: 100 } }),
    );
    assert.equal(e.chosen, 'a');
    assert.equal(e.candidates.length, 5);
    for (const c of e.candidates) assert.equal(c.filters.length, 8, 'every filter has a verdict');
    const why = Object.fromEntries(e.candidates.filter((c) => !c.eligible).map((c) => [c.node, c.filters.find((f) => !f.pass)!]));
    assert.equal(why.b!.filter, 'labels');
    assert.match(why.b!.reason!, /label gpu=a100 asked, it has gpu=none/);
    assert.equal(why.c!.filter, 'region');
    assert.equal(why.d!.filter, 'reputation');
    assert.equal(why.e!.filter, 'rtt');
    const a = e.candidates[0]!;
    assert.equal(a.rank, 1);
    assert.deepEqual(Object.keys(a.terms!).sort(), ['jitter', 'load', 'proximity', 'reputation', 'resources']);
    assert.match(e.summary, /^1 node of 5 fit; 1 lacks the labels gpu=a100; 1 is outside the regions asked; 1 is below the least reputation; 1 is further than 100 ms$/);
  });

  it('binpack fills the fuller node, spread the emptier', () => {
    const nodes = [
      { id: 'busy', rttMs: 1, free: { vcpus: 2, memoryMiB: 4096 } },
      { id: 'idle', rttMs: 1 },
    ];
    assert.equal(place(nodes, fn({ placement: { strategy: 'binpack', weights: { proximity: 0, reputation: 0, load: 0 } } })).chosen, 'busy');
    assert.equal(place(nodes, fn({ placement: { strategy: 'spread', weights: { proximity: 0, reputation: 0, load: 0 } } })).chosen, 'idle');
  });

  it('prefers the nearer node by declared location before any round trip is measured', () => {
    const candidates = [
      candidate({ id: 'sydney', location: { latitude: -33.87, longitude: 151.21 } }),
      candidate({ id: 'paris', location: { latitude: 48.86, longitude: 2.35 } }),
      candidate({ id: 'nowhere' }),
    ];
    const request = placementRequest(fn(), resolveResources(fn()), 1, { latitude: 53.35, longitude: -6.26 }); // Dublin
    const e = explain(candidates, request, DEFAULT_POLICY);
    assert.equal(e.chosen, 'paris');
    const paris = e.candidates.find((c) => c.node === 'paris')!;
    assert.equal(paris.rtt.source, 'distance');
    assert.ok(paris.rtt.ms! > 7 && paris.rtt.ms! < 8.5, `Dublin-Paris ~780 km is ~7.8 ms, got ${paris.rtt.ms}`);
  });

  it('the tie-break spreads requests over nodes that are otherwise equal', () => {
    const nodes = Array.from({ length: 4 }, (_, i) => ({ id: `n${i}`, rttMs: 3 }));
    const chosen = new Set(Array.from({ length: 64 }, (_, i) => place(nodes, fn(), `run-${i}`).chosen));
    assert.equal(chosen.size, 4, `64 requests went to ${[...chosen].join(', ')}`);
  });

  it('the columnar view ranks exactly as the brute-force explain, on random meshes and requests', () => {
    const driverNames = Object.keys(DRIVERS);
    const node = fc.record({
      drivers: fc.subarray(driverNames),
      cap: fc.record({ vcpus: fc.integer({ min: 1, max: 64 }), memoryMiB: fc.integer({ min: 256, max: 65_536 }) }),
      usedShare: fc.double({ min: 0, max: 1, noNaN: true }),
      active: fc.nat(20),
      queued: fc.nat(5),
      rttMs: fc.option(fc.double({ min: 0.1, max: 300, noNaN: true }), { nil: undefined }),
      reputation: fc.double({ min: 0, max: 1, noNaN: true }),
      region: fc.constantFrom('eu', 'us', 'ap', undefined),
      gpu: fc.boolean(),
      lat: fc.option(fc.double({ min: -90, max: 90, noNaN: true }), { nil: undefined }),
    });
    const request = fc.record({
      kind: fc.constantFrom('function', 'container', 'microvm'),
      isolation: fc.constantFrom(undefined, 'language', 'container', 'vm'),
      vcpus: fc.double({ min: 0.1, max: 16, noNaN: true }),
      memoryMiB: fc.integer({ min: 16, max: 16_384 }),
      strategy: fc.constantFrom('binpack', 'spread'),
      regions: fc.constantFrom(undefined, ['eu'], ['us', 'ap']),
      gpu: fc.boolean(),
      maxRttMs: fc.option(fc.double({ min: 1, max: 200, noNaN: true }), { nil: undefined }),
      seed: fc.nat(),
      k: fc.integer({ min: 1, max: 5 }),
      excludeFirst: fc.boolean(),
    });
    fc.assert(
      fc.property(fc.array(node, { minLength: 0, maxLength: 40 }), request, (shapes, q) => {
        const candidates: Candidate[] = shapes.map((s, i) =>
          candidate({
            id: `node-${i}`,
            self: i === 0,
            drivers: s.drivers,
            capacity: s.cap,
            free: { vcpus: s.cap.vcpus * (1 - s.usedShare), memoryMiB: Math.floor(s.cap.memoryMiB * (1 - s.usedShare)) },
            runs: { active: s.active, queued: s.queued },
            ...(s.rttMs === undefined ? {} : { rttMs: s.rttMs }),
            reputation: s.reputation,
            labels: s.gpu ? { gpu: 'yes' } : {},
            location: { ...(s.region === undefined ? {} : { region: s.region }), ...(s.lat === undefined ? {} : { latitude: s.lat, longitude: 10 }) },
          }),
        );
        const workload = {
          kind: q.kind,
          source: { inline: '' },
          resources: { vcpus: q.vcpus, memoryMiB: q.memoryMiB },
          ...(q.isolation === undefined ? {} : { isolation: q.isolation }),
          placement: {
            strategy: q.strategy,
            ...(q.regions === undefined ? {} : { regions: q.regions }),
            ...(q.gpu ? { labels: { gpu: 'yes' } } : {}),
            ...(q.maxRttMs === undefined ? {} : { maxRttMs: q.maxRttMs }),
          },
        } as Workload;
        const r = placementRequest(workload, resolveResources(workload), q.seed, { latitude: 50, longitude: 0 });
        if (q.excludeFirst && candidates.length > 1) r.exclude.set('node-1', 'tried');
        const p = requestPolicy(DEFAULT_POLICY, workload.placement);
        const view = new PlacementView(2);
        for (const c of candidates) view.upsert(c);
        const fast = view.rank(r, p, q.k);
        const reference = explain(candidates, r, p).candidates.filter((c) => c.eligible).slice(0, q.k);
        assert.deepEqual(
          fast.map((x) => [x.id, x.score]),
          reference.map((c) => [c.node, c.score]),
        );
      }),
      { numRuns: 300 },
    );
  });

  it('the view follows upserts and removals', () => {
    const view = new PlacementView(1);
    for (const id of ['a', 'b', 'c']) view.upsert(candidate({ id, rttMs: id === 'b' ? 1 : 50 }));
    const r = placementRequest(fn(), resolveResources(fn()), 7);
    assert.equal(view.rank(r, DEFAULT_POLICY, 1)[0]!.id, 'b');
    view.remove('b');
    assert.equal(view.size, 2);
    assert.deepEqual(view.rank(r, DEFAULT_POLICY, 5).map((x) => x.id).sort(), ['a', 'c']);
    view.upsert(candidate({ id: 'a', rttMs: 50, free: { memoryMiB: 0 } }));
    assert.deepEqual(view.rank(r, DEFAULT_POLICY, 5).map((x) => x.id), ['c']);
    view.replaceAll([candidate({ id: 'z' })]);
    assert.deepEqual(view.list().map((c) => c.id), ['z']);
  });
});
