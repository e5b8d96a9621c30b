import { performance } from 'node:perf_hooks';
import { summarize, type Summary } from './stats.ts';

/** One measured phase: how fast, how many, and how many went wrong. */
export interface PhaseResult {
  concurrency: number;
  /** Latency of the successful operations, in milliseconds. */
  latency: Summary;
  runsPerSecond: number;
  ok: number;
  failed: number;
  /** What went wrong, counted by kind (e.g. "HTTP 500", "bad body"). */
  failures: Record<string, number>;
  firstFailure?: string;
}

export interface LoopOptions {
  concurrency: number;
  durationMs: number;
}

/**
 * Runs `op` in `concurrency` closed loops (each starts its next operation when the last one ends) until
 * `durationMs` has passed. An operation that throws counts as a failure and is left out of the latencies.
 */
export async function closedLoop(op: () => Promise<void>, { concurrency, durationMs }: LoopOptions): Promise<PhaseResult> {
  const latencies: number[] = [];
  const failures: Record<string, number> = {};
  let firstFailure: string | undefined;
  const started = performance.now();
  const deadline = started + durationMs;

  const loop = async () => {
    while (performance.now() < deadline) {
      const t0 = performance.now();
      try {
        await op();
        latencies.push(performance.now() - t0);
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        const kind = err instanceof Error ? err.name : 'thrown';
        failures[kind] = (failures[kind] ?? 0) + 1;
        firstFailure ??= message;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, loop));

  const elapsedS = (performance.now() - started) / 1000;
  const failed = Object.values(failures).reduce((n, c) => n + c, 0);
  const result: PhaseResult = {
    concurrency,
    latency: summarize(latencies),
    runsPerSecond: latencies.length / elapsedS,
    ok: latencies.length,
    failed,
    failures,
  };
  if (firstFailure !== undefined) result.firstFailure = firstFailure;
  return result;
}
