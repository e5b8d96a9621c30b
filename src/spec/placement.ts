import Type, { type Static } from 'typebox';
import { PlacementStrategy } from './workload.ts';

export const PolicySchema = Type.Object({
  strategy: PlacementStrategy,
  weights: Type.Object({ resources: Type.Number(), proximity: Type.Number(), reputation: Type.Number(), load: Type.Number() }),
  minReputation: Type.Number(),
  jitter: Type.Number({ description: 'size of the per-request tie-break added to each score' }),
});

export const ScoreTermsSchema = Type.Object({
  resources: Type.Number({ description: 'resource fit, 0..1' }),
  proximity: Type.Number({ description: '1 / (1 + rtt / 20 ms)' }),
  reputation: Type.Number(),
  load: Type.Number({ description: '1 / (1 + (active + 2 queued) / vCPUs)' }),
  jitter: Type.Number({ description: 'the tie-break, 0..1, before scaling' }),
});
export type ScoreTerms = Static<typeof ScoreTermsSchema>;

export const FilterVerdict = Type.Object({
  filter: Type.String({ description: 'excluded, driver, labels, region, reputation, rtt, capacity or free' }),
  pass: Type.Boolean(),
  reason: Type.Optional(Type.String()),
});

export const CandidateVerdictSchema = Type.Object({
  node: Type.String(),
  self: Type.Boolean(),
  eligible: Type.Boolean(),
  filters: Type.Array(FilterVerdict),
  rtt: Type.Object({
    ms: Type.Union([Type.Number(), Type.Null()]),
    source: Type.Union([Type.Literal('self'), Type.Literal('measured'), Type.Literal('distance'), Type.Literal('unknown')]),
  }),
  reputation: Type.Number(),
  score: Type.Optional(Type.Number()),
  terms: Type.Optional(ScoreTermsSchema),
  rank: Type.Optional(Type.Integer({ description: '1 for the chosen node, then the order the others would be tried in' })),
});

export const PlacementExplanationSchema = Type.Object(
  {
    chosen: Type.Union([Type.String(), Type.Null()]),
    policy: PolicySchema,
    candidates: Type.Array(CandidateVerdictSchema, { description: 'eligible nodes by rank, then the rejected ones' }),
    summary: Type.String(),
  },
  { $id: 'PlacementExplanation' },
);

/** Where placement put a run, what it tried first, and (when asked) why. */
export const RunPlacement = Type.Object({
  node: Type.String({ description: 'the node the run went to' }),
  summary: Type.String({ description: 'how many nodes fit, and what excluded the others' }),
  tried: Type.Array(Type.Object({ node: Type.String(), reason: Type.String() }), { description: 'nodes asked before it, and why each did not take the run' }),
  queued: Type.Optional(Type.Boolean({ description: 'true when no node had the room free, so the run waits in the queue of one that has it in all' })),
  explanation: Type.Optional(PlacementExplanationSchema),
});
export type RunPlacement = Static<typeof RunPlacement>;

/** One node's go at a run: a run placed again after its node was lost has more than one. */
export const RunAttempt = Type.Object({
  node: Type.String(),
  startedAt: Type.String({ format: 'date-time' }),
  endedAt: Type.Optional(Type.String({ format: 'date-time' })),
  outcome: Type.Optional(Type.String({ description: 'lost, or the state the run ended in on that node' })),
  reason: Type.Optional(Type.String()),
});
export type RunAttempt = Static<typeof RunAttempt>;

/** How a run with `verify.replicas` was verified: every replica, and which result won. */
export const RunVerification = Type.Object({
  mode: Type.Union([Type.Literal('replicas'), Type.Literal('spot-check')]),
  /** For a spot check: the chance the chosen node had of being checked. */
  rate: Type.Optional(Type.Number({ description: 'spot-check: the chance the chosen node had of being checked (1 for a node with fewer than 3 outcomes seen)' })),
  replicas: Type.Integer({ description: 'how many nodes ran it in the end' }),
  verdict: Type.Union([Type.Literal('unanimous'), Type.Literal('majority'), Type.Literal('inconclusive')], {
    description: 'unanimous: every replica gave the same result; majority: more than half did (the others lost reputation); inconclusive: no result had more than half',
  }),
  resultHash: Type.Optional(Type.String({ description: "the winning result's hash (the receipts' resultHash)" })),
  runs: Type.Array(
    Type.Object({
      run: Type.String(),
      node: Type.String(),
      state: Type.String(),
      resultHash: Type.Optional(Type.String()),
      agreed: Type.Boolean({ description: 'whether its result is the winning one' }),
    }),
  ),
});
export type RunVerification = Static<typeof RunVerification>;

/** A signed statement: JSON bytes, the id of the node that signed them, and its ed25519 signature. */
export const EnvelopeSchema = Type.Object(
  {
    signer: Type.String({ description: 'the node id (a libp2p peer id, which holds its public key)' }),
    payload: Type.String({ description: 'the signed JSON, exactly as signed' }),
    signature: Type.String({ description: 'base64 ed25519 signature over "<domain>\\n<payload>"' }),
  },
  { additionalProperties: false },
);
