import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import Type from 'typebox';
import { describeNode } from '../../daemon/describe.ts';
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
});

const NodesResponse = Type.Object({
  self: Type.String(),
  mesh: Type.Object({ enabled: Type.Boolean(), addresses: Type.Array(Type.String()) }),
  nodes: Type.Array(MeshNodeSchema),
  banned: Type.Array(Type.Object({ peer: Type.String(), reason: Type.String(), at: Type.String() })),
});

export function meshRoutes(app: FastifyInstance, node: VmeshNode, mesh: Mesh | undefined): void {
  const api = app.withTypeProvider<TypeBoxTypeProvider>();
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
        const self: MeshNode = { id: node.id, self: true, connected: true, advertAgeMs: 0, advert: soloAdvert(node) };
        return { self: node.id, mesh: { enabled: false, addresses: [] }, nodes: [self], banned: [] };
      }
      return { self: node.id, mesh: { enabled: true, addresses: mesh.addresses() }, nodes: mesh.nodes(), banned: mesh.guard.list() };
    },
  );
}

/** The advert a node outside any mesh would send: what it has, unsigned and unsent. */
function soloAdvert(node: VmeshNode): NodeAdvert {
  const now = Date.now();
  return { format: 'vmesh-advert/1', node: node.id, seq: now, issuedAt: new Date(now).toISOString(), addresses: [], labels: node.config.mesh.labels, ...describeNode(node) };
}
