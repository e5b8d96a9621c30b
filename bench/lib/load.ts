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

/** A failed check of an operation's result; its name is the failure kind counted in the report. */
export class WrongResultError extends Error {
  override readonly name = 'wrong result';
}

/**
 * What a measured phase records: the latency of every operation that succeeded, and the ones that
 * threw, counted by kind (the error's name) and left out of the latencies.
 */
export class Samples {
  private readonly latencies: number[] = [];
  private readonly failures: Record<string, number> = {};
  private firstFailure: string | undefined;
  /** Time spent in the operations, failed ones too. */
  private busyMs = 0;

  /** Runs `op` once and records how long it took, or how it failed. */
  async time(op: () => Promise<void>): Promise<void> {
    const t0 = performance.now();
    try {
      await op();
      this.latencies.push(performance.now() - t0);
    } catch (err) {
      const kind = err instanceof Error ? err.name : 'thrown';
      this.failures[kind] = (this.failures[kind] ?? 0) + 1;
      this.firstFailure ??= err instanceof Error ? err.message : String(err);
    } finally {
      this.busyMs += performance.now() - t0;
    }
  }

  /**
   * The phase so far. `elapsedMs`, its wall time, gives the rate; by default the time spent in the
   * operations, which is the wall time of one loop that did nothing else.
   */
  result(concurrency: number, elapsedMs = this.busyMs): PhaseResult {
    const result: PhaseResult = {
      concurrency,
      latency: summarize(this.latencies),
      runsPerSecond: this.latencies.length / (elapsedMs / 1000),
      ok: this.latencies.length,
      failed: Object.values(this.failures).reduce((n, c) => n + c, 0),
      failures: { ...this.failures },
    };
    if (this.firstFailure !== undefined) result.firstFailure = this.firstFailure;
    return result;
  }
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
  const samples = new Samples();
  const started = performance.now();
  const deadline = started + durationMs;
  const loop = async () => {
    while (performance.now() < deadline) await samples.time(op);
  };
  await Promise.all(Array.from({ length: concurrency }, loop));
  return samples.result(concurrency, performance.now() - started);
}

/** One WARNING line per phase that had failures, with their kinds and the first failure's text. */
export function failureWarnings(phases: ReadonlyArray<readonly [string, PhaseResult]>): string[] {
  return phases
    .filter(([, p]) => p.failed > 0)
    .map(([name, p]) => {
      const kinds = Object.entries(p.failures)
        .map(([kind, n]) => `${kind} x${n.toLocaleString('en-US')}`)
        .join(', ');
      return `WARNING ${name}: ${p.failed.toLocaleString('en-US')} failed (${kinds}); first: ${p.firstFailure ?? 'n/a'}`;
    });
}
