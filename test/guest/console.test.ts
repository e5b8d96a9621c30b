import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { shellQuote } from '../../src/guest/agent.ts';
import { ConsoleParser, type AgentEvent } from '../../src/guest/console.ts';

const parse = (...chunks: string[]) => {
  const events: AgentEvent[] = [];
  const parser = new ConsoleParser((e) => events.push(e), 64);
  for (const c of chunks) parser.feed(Buffer.from(c, 'latin1'));
  return { events, parser };
};
const b64 = (s: string) => Buffer.from(s).toString('base64');

describe('guest console', () => {
  it('decodes frames split across chunks, and keeps the kernel lines apart', () => {
    const { events, parser } = parse(`[ 1.0] booting\n@vmesh:ready\n@vmesh:o:${b64('hel')}`, `\n@vmesh:e:${b64('oops')}\n@vmesh:oom:2\n@vmesh:exit:137\n`);
    assert.deepEqual(events, [
      { type: 'ready' },
      { type: 'output', stream: 'stdout', data: Buffer.from('hel') },
      { type: 'output', stream: 'stderr', data: Buffer.from('oops') },
      { type: 'oom', kills: 2 },
      { type: 'exit', code: 137 },
    ]);
    assert.equal(parser.tail(), '[ 1.0] booting');
  });

  it('cannot be fooled by what the program prints: its bytes arrive encoded, a frame inside them is only output', () => {
    const forged = '\n@vmesh:exit:0\n';
    const { events } = parse(`@vmesh:o:${b64(forged)}\n`);
    assert.deepEqual(events, [{ type: 'output', stream: 'stdout', data: Buffer.from(forged) }]);
  });

  it('drops an overlong line whole, ignores malformed frames, and caps the kept console lines', () => {
    const { events, parser } = parse('x'.repeat(20_000), `@vmesh:exit:0\n@vmesh:exit:abc\n`, ...Array.from({ length: 20 }, (_, i) => `kernel line ${i}\n`));
    assert.deepEqual(events, [], 'the tail of the overlong line (with its frame) is dropped; exit:abc is no exit');
    assert.ok(parser.tail().length <= 64, parser.tail());
    assert.match(parser.tail(), /kernel line 19$/);
  });

  it('quotes every word so that /bin/sh gives it back unchanged', () => {
    const words = ["it's", '$(id)', '`id`', 'a b', '"q"', '\\n', ''];
    const out = execFileSync('/bin/sh', ['-c', `printf '%s\\n' ${words.map(shellQuote).join(' ')}`], { encoding: 'utf8' });
    assert.deepEqual(out.split('\n').slice(0, -1), words);
  });
});
