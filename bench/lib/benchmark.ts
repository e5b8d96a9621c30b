/** What every benchmark under bench/ provides to bench/run.ts. */
export interface Benchmark {
  /** Short name, used by BENCH_ONLY to pick benchmarks. */
  readonly name: string;
  /** Why it cannot run on this machine (a missing tool, not root), or undefined when it can. */
  unavailable?(): Promise<string | undefined>;
  run(log: (line: string) => void): Promise<BenchReport>;
}

export interface BenchReport {
  /** The level-2 heading of its section in docs/benchmarks.md (without the `## `). */
  heading: string;
  /** The result for the terminal. */
  text: string;
  /** The section body for docs/benchmarks.md; run.ts adds the heading and the machine description. */
  markdown: string;
}

/** A pass/fail goal a benchmark reports against; a miss is reported, never fatal. */
export interface Target {
  goal: string;
  measured: string;
  pass: boolean;
}
