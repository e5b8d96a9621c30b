import Type from 'typebox';
import { IsolationLevel, Run, RunStateSchema } from '../spec/index.ts';

export const ErrorBody = Type.Object(
  { error: Type.Object({ code: Type.String(), message: Type.String(), field: Type.Optional(Type.String()) }) },
  { $id: 'Error' },
);

const CapacitySchema = Type.Object({
  vcpus: Type.Number(),
  memoryMiB: Type.Number(),
  diskMiB: Type.Number(),
  egressMbps: Type.Number(),
  ingressMbps: Type.Number(),
});

export const DriverStatusSchema = Type.Object({
  name: Type.String(),
  kinds: Type.Array(Type.String()),
  isolation: IsolationLevel,
  probe: Type.Object({
    available: Type.Boolean(),
    version: Type.Optional(Type.String()),
    reason: Type.Optional(Type.String()),
    details: Type.Optional(Type.Record(Type.String(), Type.String())),
  }),
});

export const DriverChoiceSchema = Type.Object({
  kind: Type.String(),
  driver: Type.Optional(Type.String({ description: 'the driver a run of this kind goes to when it names none; absent when no driver for it is available' })),
  passedOver: Type.Array(Type.Object({ driver: Type.String(), reason: Type.String() }), { description: 'drivers before it in preference order, and why each was not chosen' }),
});

export const NodeInfoSchema = Type.Object({
  id: Type.String(),
  version: Type.String(),
  startedAt: Type.String(),
  capacity: CapacitySchema,
  free: CapacitySchema,
  reserved: CapacitySchema,
  runs: Type.Object({ queued: Type.Integer(), active: Type.Integer() }),
  drivers: Type.Array(DriverStatusSchema),
  network: Type.Object({ available: Type.Boolean(), range: Type.String(), reason: Type.Optional(Type.String()) }),
});

export const RunIdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_-]+$' }) });

export const SubmitQuery = Type.Object({
  wait: Type.Optional(Type.Boolean({ default: true, description: 'wait for the result (default) or return at once' })),
  explain: Type.Optional(Type.Boolean({ description: "keep placement's whole explanation in the run's `placement.explanation`" })),
});

export const ListQuery = Type.Object({
  state: Type.Optional(RunStateSchema),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
  before: Type.Optional(Type.String({ maxLength: 64, description: 'page: runs created before this run id' })),
});

export const LogsQuery = Type.Object({
  follow: Type.Optional(Type.Boolean({ description: 'keep the stream open until the run ends (default true)' })),
});

export { Run };
export const RunList = Type.Object({ runs: Type.Array(Run) });

export const SnapshotInfoSchema = Type.Object(
  {
    snapshot: Type.String({ description: 'the snapshot id: the hash of its index blob; restore with source { snapshot }' }),
    run: Run,
    bytes: Type.Integer({ description: 'bytes of all its files' }),
    files: Type.Record(Type.String(), Type.String(), { description: 'file name → blob hash' }),
  },
  { $id: 'SnapshotInfo' },
);
