import Type, { type Static } from 'typebox';
import { IsolationLevel, WorkloadKind } from './workload.ts';

/** Amounts of each resource a node has, or has free. */
export const ResourceAmounts = Type.Object(
  {
    vcpus: Type.Number({ minimum: 0 }),
    memoryMiB: Type.Number({ minimum: 0 }),
    diskMiB: Type.Number({ minimum: 0 }),
    egressMbps: Type.Number({ minimum: 0 }),
    ingressMbps: Type.Number({ minimum: 0 }),
  },
  { additionalProperties: false },
);

export const NodeLocation = Type.Object(
  {
    region: Type.Optional(Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$' })),
    latitude: Type.Optional(Type.Number({ minimum: -90, maximum: 90 })),
    longitude: Type.Optional(Type.Number({ minimum: -180, maximum: 180 })),
  },
  { additionalProperties: false, description: 'where the node says it is: a region name and coordinates (declared, not measured)' },
);
export type NodeLocation = Static<typeof NodeLocation>;

export const LABEL_KEY_PATTERN = '^[a-z0-9]([a-z0-9._/-]{0,62}[a-z0-9])?$';
export const NodeLabels = Type.Record(Type.String({ pattern: LABEL_KEY_PATTERN }), Type.String({ maxLength: 128 }), {
  maxProperties: 32,
  description: 'free-form key=value facts about the node that requests can select on',
});

export const ADVERT_FORMAT = 'vmesh-advert/1';

/**
 * What a node tells the mesh about itself, signed with its key. `seq` grows with every advert a node
 * issues, so that an old advert arriving late never overwrites a newer one.
 */
export const NodeAdvert = Type.Object(
  {
    format: Type.Literal(ADVERT_FORMAT),
    node: Type.String({ minLength: 1, maxLength: 128 }),
    seq: Type.Integer({ minimum: 0 }),
    issuedAt: Type.String({ maxLength: 40 }),
    version: Type.String({ maxLength: 64 }),
    addresses: Type.Array(Type.String({ maxLength: 256 }), { maxItems: 16 }),
    drivers: Type.Array(
      Type.Object(
        {
          name: Type.String({ maxLength: 64 }),
          kinds: Type.Array(WorkloadKind, { maxItems: 8 }),
          isolation: IsolationLevel,
          available: Type.Boolean(),
          version: Type.Optional(Type.String({ maxLength: 128 })),
        },
        { additionalProperties: false },
      ),
      { maxItems: 32 },
    ),
    capacity: ResourceAmounts,
    free: ResourceAmounts,
    runs: Type.Object({ queued: Type.Integer({ minimum: 0 }), active: Type.Integer({ minimum: 0 }) }, { additionalProperties: false }),
    labels: NodeLabels,
    location: Type.Optional(NodeLocation),
  },
  { additionalProperties: false },
);
export type NodeAdvert = Static<typeof NodeAdvert>;

/** What a node says about itself in each advert, read when the advert is made. */
export type NodeDescription = Pick<NodeAdvert, 'version' | 'drivers' | 'capacity' | 'free' | 'runs'>;
