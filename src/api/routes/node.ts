import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import type { VmeshNode } from '../../node/node.ts';
import { DriverChoiceSchema, DriverStatusSchema, ErrorBody, NodeInfoSchema } from '../schemas.ts';

export function nodeRoutes(app: FastifyInstance, node: VmeshNode): void {
  const api = app.withTypeProvider<TypeBoxTypeProvider>();

  api.get(
    '/v1/node',
    {
      schema: {
        summary: 'This node: id, capacity, free resources, drivers',
        tags: ['node'],
        response: { 200: NodeInfoSchema, 401: ErrorBody },
      },
    },
    async () => node.info(),
  );

  api.get(
    '/v1/drivers',
    {
      schema: {
        summary: 'The drivers of this node in preference order, whether each can run here and why not, and which one each kind of workload goes to',
        tags: ['node'],
        response: { 200: Type.Object({ drivers: Type.Array(DriverStatusSchema), choices: Type.Array(DriverChoiceSchema) }), 401: ErrorBody },
      },
    },
    async () => ({ drivers: node.registry.list(), choices: node.registry.choices() }),
  );
}
