import type { CappedStream } from '../drivers/capture.ts';
import type { SandboxExit, StreamName } from '../drivers/driver.ts';
import type { RunResult, TerminalState } from '../spec/index.ts';

/** performance.now() readings of a run's steps; a step it never reached counts as its end. */
export interface RunClock {
  submitted: number;
  placed?: number;
  running?: number;
  ended: number;
}

/** What a run that ran here returns: its exit, its captured streams, its outputs and its timings. */
export function runResult(clock: RunClock, exit: SandboxExit | undefined, captured: Record<StreamName, CappedStream>): RunResult {
  const placed = clock.placed ?? clock.ended;
  const running = clock.running ?? clock.ended;
  const ms = (a: number, b: number) => Math.round((b - a) * 1000) / 1000;
  const result: RunResult = {
    exitCode: exit?.exitCode ?? null,
    stdout: captured.stdout.toJSON(),
    stderr: captured.stderr.toJSON(),
    outputs: exit?.outputs.files ?? [],
    timings: {
      queuedMs: ms(clock.submitted, placed),
      startMs: ms(placed, running),
      runMs: ms(running, clock.ended),
      totalMs: ms(clock.submitted, clock.ended),
    },
    usage: exit?.usage ?? {},
  };
  if (exit?.output !== undefined) result.output = exit.output;
  if (exit?.outputs.archive !== undefined) result.outputsArchive = exit.outputs.archive;
  if (exit !== undefined && exit.outputs.skipped.length > 0) result.outputsSkipped = exit.outputs.skipped;
  return result;
}

/** TEST ONLY (config testing.corruptResults): the result a dishonest node would sign. */
export function corrupted(result: RunResult): RunResult {
  const lie = { ...result, stdout: { ...result.stdout, text: `${result.stdout.text}(a dishonest node was here)\n` } };
  if (result.output !== undefined) lie.output = { dishonest: result.output };
  return lie;
}

export function terminalOf(exit: SandboxExit): [TerminalState, string | undefined] {
  switch (exit.outcome) {
    case 'exited':
      return exit.exitCode === 0 ? ['succeeded', undefined] : ['failed', exit.reason ?? `exited with code ${exit.exitCode}`];
    case 'timeout':
      return ['timeout', exit.reason];
    case 'oom':
      return ['oom', exit.reason];
    case 'cancelled':
      return ['cancelled', exit.reason];
    case 'crashed':
      return ['failed', exit.reason ?? 'the sandbox crashed'];
  }
}

export function abortReason(signal: AbortSignal): string {
  const r: unknown = signal.reason;
  return r instanceof Error ? r.message : 'cancelled';
}
