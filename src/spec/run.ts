import Type, { type Static } from 'typebox';
import { EnvelopeSchema, RunAttempt, RunPlacement, RunVerification } from './placement.ts';

/**
 * The life of a run:
 *   queued → placed → starting → running → succeeded | failed | timeout | oom | cancelled | lost
 * Any live state may also end early (cancelled while queued, failed while starting, lost after a crash).
 * A running run may be paused (its sandbox frozen, its resources still held) and resumed; the timeout
 * counts paused time too.
 */
export const RUN_STATES = [
  'queued',
  'placed',
  'starting',
  'running',
  'paused',
  'succeeded',
  'failed',
  'timeout',
  'oom',
  'cancelled',
  'lost',
] as const;
export type RunState = (typeof RUN_STATES)[number];

export const TERMINAL_STATES = ['succeeded', 'failed', 'timeout', 'oom', 'cancelled', 'lost'] as const;
export type TerminalState = (typeof TERMINAL_STATES)[number];
export type LiveState = Exclude<RunState, TerminalState>;

const NEXT: Record<RunState, readonly RunState[]> = {
  queued: ['placed', 'failed', 'cancelled', 'lost'],
  placed: ['starting', 'failed', 'cancelled', 'lost'],
  starting: ['running', 'failed', 'timeout', 'oom', 'cancelled', 'lost'],
  running: ['paused', 'succeeded', 'failed', 'timeout', 'oom', 'cancelled', 'lost'],
  paused: ['running', 'succeeded', 'failed', 'timeout', 'oom', 'cancelled', 'lost'],
  succeeded: [],
  failed: [],
  timeout: [],
  oom: [],
  cancelled: [],
  lost: [],
};

export function isTerminal(state: RunState): state is TerminalState {
  return (TERMINAL_STATES as readonly RunState[]).includes(state);
}

export function canTransition(from: RunState, to: RunState): boolean {
  return NEXT[from].includes(to);
}

export const RunStateSchema = Type.Union([
  Type.Literal('queued'),
  Type.Literal('placed'),
  Type.Literal('starting'),
  Type.Literal('running'),
  Type.Literal('paused'),
  Type.Literal('succeeded'),
  Type.Literal('failed'),
  Type.Literal('timeout'),
  Type.Literal('oom'),
  Type.Literal('cancelled'),
  Type.Literal('lost'),
]);

export const CapturedStream = Type.Object({
  text: Type.String({ description: 'utf8 text (invalid sequences replaced)' }),
  bytes: Type.Integer({ description: 'bytes the workload wrote, including any cut off' }),
  truncated: Type.Boolean({ description: 'true when the cap cut the stream' }),
});
export type CapturedStream = Static<typeof CapturedStream>;

export const OutputFile = Type.Object({
  path: Type.String(),
  bytes: Type.Integer(),
  sha256: Type.String(),
  contentBase64: Type.Optional(Type.String({ description: 'absent when the file is over the inline cap' })),
});
export type OutputFile = Static<typeof OutputFile>;

export const SkippedOutput = Type.Object({
  path: Type.String(),
  reason: Type.String({ description: 'why it is not in the archive: a symlink, not a regular file, missing, over the cap' }),
});
export type SkippedOutput = Static<typeof SkippedOutput>;

export const OutputsArchive = Type.Object({
  blob: Type.String({ description: '`sha256:<hex>` of the tar; fetch it with GET /v1/runs/{id}/outputs' }),
  bytes: Type.Integer(),
  entries: Type.Integer({ description: 'files and directories in the tar' }),
  truncated: Type.Boolean({ description: 'true when the size or entry cap left files out (they are listed in `outputsSkipped`)' }),
  copies: Type.Optional(
    Type.Object(
      {
        wanted: Type.Integer({ description: '`outputs.replicas`' }),
        nodes: Type.Array(Type.String(), { description: 'the nodes that had the archive when the run ended, the executing node first' }),
        missing: Type.Optional(Type.String({ description: 'why fewer nodes than wanted have it' })),
      },
      { description: 'present when `outputs.replicas` asked for more than one copy' },
    ),
  ),
});
export type OutputsArchive = Static<typeof OutputsArchive>;

export const Timings = Type.Object({
  queuedMs: Type.Number({ description: 'submitted → placed' }),
  startMs: Type.Number({ description: 'placed → running (prepare + start)' }),
  runMs: Type.Number({ description: 'running → ended' }),
  totalMs: Type.Number({ description: 'submitted → ended' }),
});
export type Timings = Static<typeof Timings>;

export const Usage = Type.Object({
  cpuMs: Type.Optional(Type.Number({ description: 'CPU time the sandbox used, where the driver can tell' })),
  memoryPeakBytes: Type.Optional(Type.Integer({ description: 'peak memory of the sandbox, where known' })),
  diskBytes: Type.Optional(Type.Integer({ description: 'scratch bytes written' })),
});
export type Usage = Static<typeof Usage>;

export const RunResult = Type.Object({
  exitCode: Type.Union([Type.Integer(), Type.Null()], { description: 'null when the workload did not exit' }),
  stdout: CapturedStream,
  stderr: CapturedStream,
  output: Type.Optional(Type.Unknown({ description: 'the JSON value a js function returned' })),
  outputs: Type.Array(OutputFile, { description: 'every file in the outputs archive; small ones inline' }),
  outputsArchive: Type.Optional(OutputsArchive),
  outputsSkipped: Type.Optional(Type.Array(SkippedOutput)),
  timings: Timings,
  usage: Usage,
});
export type RunResult = Static<typeof RunResult>;

export const ReservedResources = Type.Object({
  vcpus: Type.Number(),
  memoryMiB: Type.Number(),
  diskMiB: Type.Number(),
  timeoutMs: Type.Number(),
  network: Type.Object({ egressMbps: Type.Number(), ingressMbps: Type.Number() }),
  disk: Type.Optional(Type.Object({ bps: Type.Optional(Type.Number()), iops: Type.Optional(Type.Number()) })),
});

export const Run = Type.Object({
  id: Type.String(),
  state: RunStateSchema,
  reason: Type.Optional(Type.String({ description: 'why the run is in this state (errors, kills)' })),
  kind: Type.String(),
  name: Type.Optional(Type.String()),
  driver: Type.Optional(Type.String()),
  nodeId: Type.String(),
  resources: ReservedResources,
  createdAt: Type.String({ format: 'date-time' }),
  updatedAt: Type.String({ format: 'date-time' }),
  startedAt: Type.Optional(Type.String({ format: 'date-time' })),
  endedAt: Type.Optional(Type.String({ format: 'date-time' })),
  queuePosition: Type.Optional(Type.Integer({ description: 'present while queued' })),
  network: Type.Optional(
    Type.Object({
      address: Type.String({ description: "the sandbox's address on its link" }),
      ports: Type.Array(Type.Object({ guest: Type.Integer(), host: Type.Integer(), protocol: Type.String() }), {
        description: "published ports: reach guest on the node's addresses at host",
      }),
    }),
  ),
  result: Type.Optional(RunResult),
  placement: Type.Optional(RunPlacement),
  verification: Type.Optional(RunVerification),
  attempts: Type.Optional(Type.Array(RunAttempt, { description: 'present when the run was placed again after losing a node: every node it went to, in order' })),
  receipt: Type.Optional(
    Type.Object(EnvelopeSchema.properties, {
      additionalProperties: false,
      description: 'the receipt the executing node signed when the run ended (domain vmesh-receipt/1); `vmesh receipt verify` checks it',
    }),
  ),
});
export type Run = Static<typeof Run>;
