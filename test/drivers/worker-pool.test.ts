import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WorkerPool } from '../../src/drivers/worker/pool.ts';
import { AbortedError } from '../../src/spec/index.ts';

const ENTRY = new URL('../../src/drivers/wasm/worker.ts', import.meta.url);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('worker pool', () => {
  it('boots workers on demand, reuses a released one, and ends idle ones after the timeout', async () => {
    const pool = new WorkerPool({ entry: ENTRY, size: 2, idleTimeoutMs: 200 });
    try {
      assert.equal(pool.threads, 0, 'nothing booted before the first run');
      const a = await pool.acquire();
      pool.release(a);
      const b = await pool.acquire();
      assert.equal(b, a, 'the idle worker is reused');
      pool.release(b);
      assert.equal(pool.threads, 1);
      await sleep(500);
      assert.equal(pool.threads, 0, 'the idle worker was ended');
    } finally {
      await pool.close();
    }
  });

  it('keeps `idle` workers however long they sit', async () => {
    const pool = new WorkerPool({ entry: ENTRY, size: 2, idle: 1, idleTimeoutMs: 100 });
    try {
      const w = await pool.acquire();
      pool.release(w);
      await sleep(300);
      assert.equal(pool.threads, 1);
    } finally {
      await pool.close();
    }
  });

  it('makes runs beyond its size wait, and an aborted wait leaves the queue', async () => {
    const pool = new WorkerPool({ entry: ENTRY, size: 1 });
    try {
      const held = await pool.acquire();
      const controller = new AbortController();
      const waiting = pool.acquire(controller.signal);
      controller.abort();
      await assert.rejects(waiting, AbortedError);
      const next = pool.acquire();
      await pool.discard(held); // a killed worker is replaced for the next waiter
      const fresh = await next;
      assert.notEqual(fresh, held);
      pool.release(fresh);
      assert.equal(pool.busy, 0);
    } finally {
      await pool.close();
    }
  });
});
