// The requester's streams kept between runs, with stand-in streams: the real ones are tested end to end
// in remote-run.test.ts (one stream for runs in a row, a dropped one not reused, closed once unused).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Stream } from '@libp2p/interface';
import type { JsonFrames } from '../../src/mesh/frames.ts';
import { KeptStreams } from '../../src/mesh/kept-streams.ts';

/** A stream as the pool sees it: its four statuses, and what was done to it. */
function stream(name: string) {
  const s = {
    name,
    status: 'open',
    readStatus: 'readable',
    writeStatus: 'writable',
    remoteWriteStatus: 'writable',
    closed: false,
    aborted: false,
    close: async () => void (s.closed = true),
    abort: () => void (s.aborted = true),
  };
  return s;
}
const framesOf = (s: ReturnType<typeof stream>) => ({ stream: s as unknown as Stream }) as JsonFrames<Stream>;
const nameOf = (f: JsonFrames<Stream> | undefined) => (f?.stream as unknown as { name: string } | undefined)?.name;

describe('streams kept between runs', () => {
  it('hands out the most recently kept stream to the same node, and none to another', () => {
    const pool = new KeptStreams(10_000);
    const [a, b] = [stream('a'), stream('b')];
    pool.keep('n1', framesOf(a));
    pool.keep('n1', framesOf(b));
    assert.equal(pool.take('n2'), undefined);
    assert.equal(nameOf(pool.take('n1')), 'b');
    assert.equal(nameOf(pool.take('n1')), 'a');
    assert.equal(pool.take('n1'), undefined);
    assert.equal(pool.size, 0);
    pool.closeAll();
  });

  it('never hands out a stream the other node closed or reset while it was kept, and aborts it', () => {
    const pool = new KeptStreams(10_000);
    const [halfClosed, reset, good] = [stream('half-closed'), stream('reset'), stream('good')];
    pool.keep('n1', framesOf(good));
    pool.keep('n1', framesOf(halfClosed));
    pool.keep('n1', framesOf(reset));
    halfClosed.remoteWriteStatus = 'closed';
    reset.status = 'reset';
    assert.equal(nameOf(pool.take('n1')), 'good');
    assert.ok(halfClosed.aborted && reset.aborted, 'the dead ones were aborted on the way');
    pool.closeAll();
  });

  it('keeps at most 8 per node and closes the rest; keeps none with keepMs 0 or once closed', () => {
    const pool = new KeptStreams(10_000);
    const size = () => pool.size;
    const streams = Array.from({ length: 10 }, (_, i) => stream(`s${i}`));
    for (const s of streams) pool.keep('n1', framesOf(s));
    assert.equal(size(), 8);
    assert.deepEqual(streams.filter((s) => s.closed).map((s) => s.name), ['s8', 's9']);
    const none = new KeptStreams(0);
    const s = stream('x');
    none.keep('n1', framesOf(s));
    assert.equal(none.size, 0);
    assert.ok(s.closed, 'closed at once');
    pool.closeAll();
    assert.ok(streams.every((t) => t.closed), 'closeAll closes every kept stream');
    const late = stream('late');
    pool.keep('n1', framesOf(late));
    assert.ok(late.closed && size() === 0, 'a closed pool keeps nothing');
  });

  it('closes a stream unused for keepMs', async () => {
    const pool = new KeptStreams(30);
    const s = stream('idle');
    pool.keep('n1', framesOf(s));
    await new Promise((r) => setTimeout(r, 80));
    assert.ok(s.closed, 'closed after keepMs');
    assert.equal(pool.size, 0);
    assert.equal(pool.take('n1'), undefined);
  });
});
