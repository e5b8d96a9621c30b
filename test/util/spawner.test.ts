import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { shellQuote, Spawner, type SpawnedProgram } from '../../src/util/spawner.ts';
import { BUSYBOX } from '../helpers/rootfs.ts';
import { tempDir } from '../helpers/tmp.ts';

const root = tempDir('vmesh-spawner-');
after(() => root.remove());
let dirs = 0;
const freshDir = () => {
  const dir = path.join(root.dir, `run${++dirs}`);
  mkdirSync(dir);
  return dir;
};

async function collect(p: SpawnedProgram): Promise<{ out: string; err: string; code: number | null }> {
  let out = '';
  let err = '';
  p.stdout.on('data', (d: Buffer) => (out += d.toString()));
  p.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const code = await p.exited;
  return { out, err, code };
}

for (const [name, shell] of [
  ['/bin/sh', ['/bin/sh']],
  ['a static busybox sh', [BUSYBOX, 'sh']],
] as const) {
  describe(`the spawner through ${name}`, { skip: existsSync(shell[0]) ? false : `no ${shell[0]} (apt-get install busybox-static)` }, () => {
    const spool = path.join(root.dir, `spool-${dirs}-${shell.length}`);
    const spawner = new Spawner(spool, [...shell] as [string, ...string[]]);
    after(() => spawner.close());

    it('runs a program with its arguments as given, its input, its output on two streams and its exit status', async () => {
      const tricky = ["it's", '$HOME', '`id`', 'two\nlines', '"quoted"', '\\', ''];
      const p = await spawner.run(freshDir(), ['/bin/sh', '-c', 'for a in "$@"; do printf "[%s]" "$a"; done; echo; cat; echo to stderr >&2; exit 7', 'sh', ...tricky], Buffer.from('from stdin\n'));
      assert.deepEqual(await collect(p), { out: `${tricky.map((a) => `[${a}]`).join('')}\nfrom stdin\n`, err: 'to stderr\n', code: 7 });
      assert.equal(p.ended, true);
    });

    it('gives a program without input an empty one, and says 127 with the shell\'s words for one that does not exist', async () => {
      assert.deepEqual(await collect(await spawner.run(freshDir(), ['/bin/cat'])), { out: '', err: '', code: 0 });
      const missing = await collect(await spawner.run(freshDir(), ['/nonexistent/program']));
      assert.equal(missing.code, 127);
      assert.match(missing.err, /nonexistent\/program/);
    });

    it('keeps programs that run at once apart', async () => {
      const runs = await Promise.all(Array.from({ length: 10 }, async (_, i) => collect(await spawner.run(freshDir(), ['/bin/sh', '-c', `sleep 0.${i % 3}; echo run ${i}; exit ${i}`]))));
      assert.deepEqual(
        runs.map((r) => [r.out, r.code]),
        runs.map((_, i) => [`run ${i}\n`, i]),
      );
    });

    it('reports a program killed by a signal as 128 + the signal, as sh does', async () => {
      const r = await collect(await spawner.run(freshDir(), ['/bin/sh', '-c', 'kill -KILL $$']));
      assert.equal(r.code, 137);
    });

    it('starts a new shell when its shell dies, while what the old one started still reports its end', async () => {
      const p = await spawner.run(freshDir(), ['/bin/sh', '-c', 'echo $PPID; sleep 0.5; echo late']);
      const late = collect(p);
      const waiter = Number((await new Promise<Buffer>((resolve) => p.stdout.once('data', resolve))).toString().split('\n')[0]);
      // The program's parent is the waiter the spawner forked for it; the waiter's parent is the spawner's shell.
      const spawnerPid = Number((await import('node:fs')).readFileSync(`/proc/${waiter}/stat`, 'utf8').split(') ')[1]!.split(' ')[1]);
      process.kill(spawnerPid, 'SIGKILL');
      // A program handed over before the node saw the shell die is refused (it never runs twice); the next gets a new shell.
      const again = () => spawner.run(freshDir(), ['/bin/echo', 'again']);
      const next = await again().catch((err: Error) => (err.name === 'SpawnerGoneError' ? again() : Promise.reject(err)));
      assert.deepEqual(await collect(next), { out: 'again\n', err: '', code: 0 });
      assert.deepEqual(await late, { out: `${waiter}\nlate\n`, err: '', code: 0 }, 'its waiter outlived the shell');
    });

    it('leaves no FIFO behind once its programs ended and it closed', async () => {
      await collect(await spawner.run(freshDir(), ['/bin/true']));
      // The shell of now (an earlier one's directory goes once its last program has reported).
      const current = readdirSync(spool).sort((a, b) => Number(a) - Number(b)).at(-1)!;
      const waiting = readdirSync(path.join(spool, current));
      // The shell makes the next program's pair once it has started the last one: maybe not yet.
      assert.ok(waiting.length <= 2 && waiting.every((f) => /^\d+\.(out|err)$/.test(f)), `at most the next program's pair of FIFOs waits: ${waiting.join(', ')}`);
      await spawner.close();
      assert.equal(existsSync(spool), false);
    });
  });
}

describe('shellQuote', () => {
  it('quotes so that sh reads back exactly the string', () => {
    assert.equal(shellQuote("it's"), `'it'\\''s'`);
    assert.equal(shellQuote(''), "''");
  });
});
