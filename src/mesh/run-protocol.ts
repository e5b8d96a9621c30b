import Type, { type Static } from 'typebox';
import { isVmeshError, Run, RunStateSchema, Workload } from '../spec/index.ts';
import { frameChecker } from './frames.ts';

/**
 * `/vmesh/run/2`: one run at a time per stream, and a stream carries one run after another. The requester
 * sends `run` (and maybe `cancel`); the executing node answers `accepted` or `refused`, then the run's
 * states and logs, then `end`. After `end` the stream is between runs: the requester may send the next
 * `run` on it, or close it. (Version 1 closed the stream after each run; opening a stream — multistream
 * select, the peer store's protocol record on both sides — was a third of a remote run's overhead.)
 */
export const RUN_PROTOCOL = '/vmesh/run/2';
/** Requests carry inline data up to 256 KiB (larger goes by blob); log chunks are split to fit. */
export const MAX_FRAME = 2 * 2 ** 20;
export const LOG_PIECE = 512 * 1024;
/** Runs a peer may ask this node for, per second. */
export const RUNS_PER_SECOND = 200;

/** After a cancel, how long the executing node has to report the end before contact counts as lost. */
export const CANCEL_GRACE_MS = 15_000;
/**
 * The executing node closes a stream that has waited this long for its first or next run; requesters
 * keep theirs at most half as long (`mesh.keepRunStreamsMs`, up to 30 s).
 */
export const SERVER_IDLE_MS = 60_000;

const RUN_ID = '^r[0-9a-z]{9}[0-9a-f]{12}$';
const ErrorShape = Type.Object(
  { code: Type.String({ maxLength: 64 }), message: Type.String({ maxLength: 8192 }), status: Type.Integer({ minimum: 400, maximum: 599 }), field: Type.Optional(Type.String({ maxLength: 256 })) },
  { additionalProperties: false },
);

export const ClientFrame = Type.Union([
  Type.Object(
    {
      type: Type.Literal('run'),
      id: Type.String({ pattern: RUN_ID }),
      workload: Workload,
      /** Placed by the requester: refuse (no_room) rather than queue when the run does not fit now. */
      mustFitNow: Type.Optional(Type.Boolean()),
      /** Send a `beat` this often while the run lives, so that the requester can tell a silent node from a quiet run. */
      heartbeatMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 600_000 })),
    },
    { additionalProperties: false },
  ),
  Type.Object({ type: Type.Literal('cancel'), reason: Type.String({ maxLength: 1024 }) }, { additionalProperties: false }),
]);
export const ServerFrame = Type.Union([
  Type.Object({ type: Type.Literal('accepted'), run: Run }, { additionalProperties: false }),
  Type.Object({ type: Type.Literal('refused'), error: ErrorShape }, { additionalProperties: false }),
  Type.Object(
    {
      type: Type.Literal('state'),
      state: RunStateSchema,
      reason: Type.Optional(Type.String({ maxLength: 8192 })),
      driver: Type.Optional(Type.String({ maxLength: 64 })),
      startedAt: Type.Optional(Type.String({ maxLength: 40 })),
    },
    { additionalProperties: false },
  ),
  Type.Object(
    { type: Type.Literal('log'), stream: Type.Union([Type.Literal('stdout'), Type.Literal('stderr')]), data: Type.String({ maxLength: Math.ceil(LOG_PIECE / 3) * 4 }), ts: Type.String({ maxLength: 40 }) },
    { additionalProperties: false },
  ),
  Type.Object({ type: Type.Literal('end'), run: Run }, { additionalProperties: false }),
  Type.Object({ type: Type.Literal('beat'), queuePosition: Type.Optional(Type.Integer({ minimum: 1 })) }, { additionalProperties: false }),
]);
export const readClient = frameChecker(ClientFrame, 'frame');
export const readServer = frameChecker(ServerFrame, 'frame');
export type ServerFrame = Static<typeof ServerFrame>;
export type ClientFrame = Static<typeof ClientFrame>;

export type ErrorShape = Static<typeof ErrorShape>;

/** A typed error as a `refused` frame carries it (anything else is `internal`). */
export function errorShape(err: unknown): ErrorShape {
  if (isVmeshError(err)) return { code: err.code, message: err.message.slice(0, 8192), status: err.status, ...(err.field === undefined ? {} : { field: err.field }) };
  return { code: 'internal', message: (err as Error).message.slice(0, 8192), status: 500 };
}
