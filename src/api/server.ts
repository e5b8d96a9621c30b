import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Mesh } from '../mesh/mesh.ts';
import type { VmeshNode } from '../node/node.ts';
import { VMESH_VERSION } from '../version.ts';
import { checkBearer } from './auth.ts';
import { errorHandler } from './errors.ts';
import { blobRoutes } from './routes/blobs.ts';
import { meshRoutes } from './routes/mesh.ts';
import { nodeRoutes } from './routes/node.ts';
import { opsRoutes } from './routes/ops.ts';
import { runRoutes } from './routes/runs.ts';
import { typeboxValidatorCompiler } from './validation.ts';

export interface ApiOptions {
  node: VmeshNode;
  /** The node's place in the mesh, when it has joined one. */
  mesh?: Mesh | undefined;
  token: string;
  logger?: Logger;
}

/** The node's HTTP API: /v1 (bearer token), /healthz, /metrics, /openapi.json and /docs. */
export async function buildApi({ node, mesh, token, logger }: ApiOptions): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: (logger ?? node.logger) as FastifyBaseLogger,
    bodyLimit: node.config.limits.requestBytes,
    logController: new LogController({ disableRequestLogging: true }),
    forceCloseConnections: true,
    ajv: { customOptions: { removeAdditional: false } },
  });
  app.setValidatorCompiler(typeboxValidatorCompiler);
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler((req, reply) => {
    void reply.status(404).send({ error: { code: 'not_found', message: `no route ${req.method} ${req.url}` } });
  });

  await app.register(swagger, {
    openapi: {
      info: { title: 'vmesh node API', version: VMESH_VERSION, description: 'Run workloads on a vmesh node.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  app.addHook('onRequest', async (req) => {
    if (req.url.startsWith('/v1/') || req.url === '/v1') checkBearer(req.headers.authorization, token);
  });

  opsRoutes(app, node);
  nodeRoutes(app, node);
  runRoutes(app, node);
  meshRoutes(app, node, mesh);
  // A scope of its own: the raw octet-stream parser blob uploads use reaches only these routes.
  await app.register(async (scope) => blobRoutes(scope, node, mesh));
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  return app;
}
