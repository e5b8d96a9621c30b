import type { FastifyInstance } from 'fastify';
import type { VmeshNode } from '../../node/node.ts';

/** Unauthenticated operational endpoints: health and Prometheus metrics (bind the API to loopback). */
export function opsRoutes(app: FastifyInstance, node: VmeshNode): void {
  app.get('/healthz', { schema: { summary: 'Liveness: 200 while the node takes work', tags: ['ops'] } }, async () => ({
    status: 'ok',
    node: node.id,
  }));

  app.get('/metrics', { schema: { summary: 'Prometheus metrics', tags: ['ops'] } }, async (_req, reply) => {
    node.refreshGauges();
    void reply.header('content-type', node.metrics.registry.contentType);
    return node.metrics.registry.metrics();
  });
}
