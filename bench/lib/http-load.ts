import autocannon from 'autocannon';
import type { PhaseResult } from './load.ts';
import { summarize } from './stats.ts';

export interface HttpLoadOptions {
  url: string;
  method: 'GET' | 'POST';
  headers: Record<string, string>;
  body?: string;
  connections: number;
  durationMs: number;
  /** Why a 2xx response body is wrong, or undefined when it is right. */
  check(body: string): string | undefined;
}

/**
 * Loads an HTTP endpoint with autocannon for a while. Every response is checked: only 2xx responses
 * whose body passes `check` count as successes (and in the latencies); the rest are failures by kind.
 */
export async function httpLoad(options: HttpLoadOptions): Promise<PhaseResult> {
  const { check, durationMs, ...target } = options;
  const latencies: number[] = [];
  const failures: Record<string, number> = {};
  let firstFailure: string | undefined;
  const fail = (kind: string, detail: string) => {
    failures[kind] = (failures[kind] ?? 0) + 1;
    firstFailure ??= `${kind}: ${detail}`;
  };
  // autocannon emits 'response' and then, synchronously on the same connection, calls verifyBody with
  // that response's body: the last response seen is the one being verified. Latencies come from the
  // event because autocannon's own histogram keeps whole milliseconds only, too coarse here.
  let last = { status: 0, ms: 0 };
  const verifyBody = (raw: string | Buffer | undefined): boolean => {
    const text = String(raw ?? '');
    if (last.status < 200 || last.status >= 300) {
      fail(`HTTP ${last.status}`, text.slice(0, 500));
      return false;
    }
    const problem = check(text);
    if (problem !== undefined) {
      fail('wrong result', problem);
      return false;
    }
    latencies.push(last.ms);
    return true;
  };

  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon({ ...target, duration: durationMs / 1000, verifyBody }, (err: unknown, res: autocannon.Result) =>
      err ? reject(err) : resolve(res),
    );
    instance.on('response', (_client, status, _bytes, ms) => {
      last = { status, ms };
    });
    instance.on('reqError', (err: Error) => {
      firstFailure ??= `request error: ${err.message}`;
    });
  });

  // Requests that got no response at all: autocannon counts timeouts among its errors.
  if (result.timeouts > 0) failures.timeout = result.timeouts;
  if (result.errors > result.timeouts) failures['connection error'] = result.errors - result.timeouts;
  const phase: PhaseResult = {
    concurrency: options.connections,
    latency: summarize(latencies),
    runsPerSecond: latencies.length / result.duration,
    ok: latencies.length,
    failed: Object.values(failures).reduce((n, c) => n + c, 0),
    failures,
  };
  if (firstFailure !== undefined) phase.firstFailure = firstFailure;
  return phase;
}
