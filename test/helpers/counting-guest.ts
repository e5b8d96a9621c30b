import assert from 'node:assert/strict';
import type { Driver, SandboxRequest } from '../../src/drivers/driver.ts';

/** A guest command that prints 1, 2, 3, … every 100 ms: what a snapshot must continue. */
export const COUNTING = 'i=0; while [ $i -lt 100000 ]; do i=$((i+1)); echo $i; sleep 0.1; done';

/** Starts `request` (a guest running COUNTING, or a snapshot of one) on `driver`, and gives ways to watch and end it. */
export async function startCounting(driver: Driver, request: SandboxRequest) {
  await driver.validate(request);
  const prepared = await driver.prepare(request);
  let text = '';
  const running = await driver.start(prepared, { write: (_s, d) => void (text += Buffer.from(d).toString()), total() {} });
  const numbers = () => text.split('\n').slice(0, -1).map(Number);
  const until = async (ok: (n: number[]) => boolean, what: string) => {
    for (const deadline = Date.now() + 90_000; !ok(numbers()); await new Promise((r) => setTimeout(r, 50))) {
      assert.ok(Date.now() < deadline, `waited 90 s for ${what}; saw ${JSON.stringify(text.slice(-200))}`);
    }
  };
  const end = async () => {
    await driver.stop(running, 'cancelled');
    const exit = await driver.wait(running);
    await driver.cleanup(prepared);
    return exit;
  };
  return { numbers, until, end, running };
}
