import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import Type from 'typebox';
import type { Mesh, MeshNode } from '../../mesh/mesh.ts';
import type { VmeshNode } from '../../node/node.ts';
import { NodeAdvert } from '../../spec/index.ts';
import { ErrorBody } from '../schemas.ts';

const MeshNodeSchema = Type.Object({
  id: Type.String(),
  self: Type.Boolean(),
  connected: Type.Boolean(),
  advert: NodeAdvert,
  advertAgeMs: Type.Number(),
  rtt: Type.Optional(Type.Object({ rttMs: Type.Number(), minMs: Type.Number(), lastMs: Type.Number(), samples: Type.Integer(), measuredAt: Type.Number() })),
  reputation: Type.Object(
    {
      score: Type.Number({ description: '0..1: (good + 1) / (good + bad + 2); 0.5 for a node never seen at work, 1 for this node itself' }),
      local: Type.Number({ description: "the score from this node's own observations alone" }),
      good: Type.Number({ description: 'good evidence: own, plus weighted reports' }),
      bad: Type.Number(),
      counts: Type.Record(Type.String(), Type.Integer(), { description: 'outcomes this node observed of it, by kind' }),
      reports: Type.Object(
        { counted: Type.Integer(), good: Type.Number(), bad: Type.Number() },
        { description: 'signed reports of other nodes that counted (their reporters earned weight here), and the evidence they added' },
      ),
    },
    { description: 'what this node has seen of its work (time-decayed), combined with what trusted peers report' },
  ),
});

const NodesResponse = Type.Object({
  self: Type.String(),
  mesh: Type.Object({ enabled: Type.Boolean(), addresses: Type.Array(Type.String()) }),
  nodes: Type.Array(MeshNodeSchema),
  banned: Type.Array(Type.Object({ peer: Type.String(), reason: Type.String(), at: Type.String() })),
});

export function meshRoutes(app: FastifyInstance, node: VmeshNode, mesh: Mesh | undefined): void {
  const api = app.withTypeProvider<TypeBoxTypeProvider>();
  const withReputation = (n: MeshNode) => {
    if (n.self) return { ...n, reputation: { score: 1, local: 1, good: 0, bad: 0, counts: {}, reports: { counted: 0, good: 0, bad: 0 } } };
    const { score, local, good, bad, counts, reports } = node.peerReputation(n.id);
    return { ...n, reputation: { score, local, good, bad, counts, reports } };
  };
  api.get(
    '/v1/nodes',
    {
      schema: {
        summary: 'The mesh as this node sees it: every node with its advert (drivers, capacity, free resources, location) and measured round-trip time',
        tags: ['mesh'],
        response: { 200: NodesResponse, 401: ErrorBody },
      },
    },
    async () => {
      if (mesh === undefined) {
        const self: MeshNode = { id: node.id, self: true, connected: true, advertAgeMs: 0, advert: node.soloAdvert() };
        return { self: node.id, mesh: { enabled: false, addresses: [] }, nodes: [withReputation(self)], banned: [] };
      }
      return { self: node.id, mesh: { enabled: true, addresses: mesh.addresses() }, nodes: mesh.nodes().map(withReputation), banned: mesh.guard.list() };
    },
  );
}
