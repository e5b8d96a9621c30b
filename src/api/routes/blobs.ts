import { createReadStream, type ReadStream } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { PassThrough } from 'node:stream';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyInstance } from 'fastify';
import Type from 'typebox';
import { BlobUnavailableError } from '../../mesh/blob-exchange.ts';
import type { Mesh } from '../../mesh/mesh.ts';
import type { VmeshNode } from '../../node/node.ts';
import { SHA256_PATTERN } from '../../spec/index.ts';
import { ErrorBody } from '../schemas.ts';

const BlobParams = Type.Object({ hash: Type.String({ pattern: SHA256_PATTERN, description: 'sha256:<64 hex>' }) });
const Stored = Type.Object({
  blob: Type.String({ description: 'the hash the bytes are stored under' }),
  bytes: Type.Integer(),
  created: Type.Boolean({ description: 'false when the node held the blob already' }),
});
const Usage = Type.Object({
  bytes: Type.Integer(),
  blobs: Type.Integer(),
  maxBytes: Type.Number({ description: 'limits.blobStoreBytes' }),
  heldBytes: Type.Integer({ description: 'bytes held by live runs, which eviction never takes' }),
  pinnedBytes: Type.Integer({ description: 'bytes of copies kept for other nodes, which eviction does not take until their pins run out' }),
});
const BlobList = Type.Object({
  blobs: Type.Array(
    Type.Object({
      hash: Type.String(),
      bytes: Type.Integer(),
      held: Type.Boolean(),
      pinnedUntil: Type.Optional(Type.String({ description: 'a copy kept for another node: never evicted before this time' })),
    }),
    { description: 'most recently used first' },
  ),
  usage: Usage,
});
const errors = { 400: ErrorBody, 401: ErrorBody, 404: ErrorBody, 409: ErrorBody, 413: ErrorBody, 502: ErrorBody, 507: ErrorBody };
const OCTETS = 'application/octet-stream';

/** `/v1/blobs`: the node's content-addressed store, and through it the mesh's blob pool. */
export function blobRoutes(app: FastifyInstance, node: VmeshNode, mesh: Mesh | undefined): void {
  const api = app.withTypeProvider<TypeBoxTypeProvider>();
  const blobs = node.blobs;
  // Blob bodies are streamed into the store as they come, capped by limits.blobBytes (not requestBytes);
  // `app` is a scope of the blob routes alone, so no other route takes a body this way.
  app.addContentTypeParser(OCTETS, (_req, payload, done) => done(null, payload));

  api.post(
    '/v1/blobs',
    {
      schema: {
        summary: 'Store bytes as a blob; the answer names its sha256',
        description:
          `The body is the blob, sent as ${OCTETS} and streamed to disk while it is hashed. With \`expect\`, bytes that hash to anything else are refused. ` +
          'At most `limits.blobBytes`; the store evicts its least recently used blobs to make room, and refuses (507) when live runs hold too much of it.',
        tags: ['blobs'],
        consumes: [OCTETS],
        querystring: Type.Object({ expect: Type.Optional(Type.String({ pattern: SHA256_PATTERN })) }, { additionalProperties: false }),
        response: { 200: Stored, 201: Stored, ...errors },
      },
    },
    async (req, reply) => {
      const declared = req.headers['content-length'] === undefined ? undefined : Number(req.headers['content-length']);
      // The store reads a pipe from the request, not the request itself: refusing the bytes midway ends the
      // pipe, while the connection lives on to carry the answer (and is then closed, its body unread).
      const raw = req.body as IncomingMessage;
      const body = raw.pipe(new PassThrough());
      // A client that goes away midway ends the pipe too (pipe() passes on only the data).
      raw.once('close', () => raw.readableEnded || body.destroy(new Error('the client went away before sending the whole blob')));
      let stored;
      try {
        stored = await blobs.receive(body, {
          maxBytes: node.config.limits.blobBytes,
          ...(declared === undefined || !Number.isSafeInteger(declared) ? {} : { size: declared }),
          ...(req.query.expect === undefined ? {} : { expect: req.query.expect }),
        });
      } catch (err) {
        if (!req.raw.readableEnded) void reply.header('connection', 'close');
        throw err;
      }
      return reply.status(stored.created ? 201 : 200).send({ blob: stored.hash, bytes: stored.bytes, created: stored.created });
    },
  );

  api.get(
    '/v1/blobs',
    {
      schema: {
        summary: 'The blobs this node holds, most recently used first, and how full its store is',
        tags: ['blobs'],
        querystring: Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })) }, { additionalProperties: false }),
        response: { 200: BlobList, 401: ErrorBody },
      },
    },
    async (req) => {
      const entries = (await blobs.entries()).reverse();
      return { blobs: entries.slice(0, req.query.limit ?? 1000), usage: await blobs.usage() };
    },
  );

  api.head(
    '/v1/blobs/:hash',
    {
      schema: {
        summary: 'Whether this node holds a blob: 200 with its size in content-length, 404 otherwise (the mesh is not asked)',
        tags: ['blobs'],
        params: BlobParams,
        response: { 200: Type.Null(), 400: ErrorBody, 401: ErrorBody, 404: ErrorBody },
      },
    },
    // Not a use of the blob: the LRU order stays as it is, and no file is opened.
    async (req, reply) => {
      const bytes = await blobs.sizeOf(req.params.hash);
      if (bytes === undefined) throw new BlobUnavailableError(`this node does not hold ${req.params.hash}`, { field: 'hash' });
      return reply.header('content-type', OCTETS).header('content-length', bytes).header('etag', `"${req.params.hash}"`).send(null);
    },
  );

  api.get(
    '/v1/blobs/:hash',
    {
      exposeHeadRoute: false,
      schema: {
        summary: 'Download a blob; one this node lacks is fetched from the mesh first (unless `local=true`)',
        description: '`x-vmesh-from` names the node a fetched blob came from.',
        tags: ['blobs'],
        params: BlobParams,
        querystring: Type.Object({ local: Type.Optional(Type.Boolean()) }, { additionalProperties: false }),
        produces: [OCTETS],
        response: { 200: Type.Unsafe<ReadStream>({ type: 'string', format: 'binary' }), ...errors },
      },
    },
    async (req, reply) => {
      const { hash } = req.params;
      let from: string | undefined;
      if (!(await blobs.has(hash))) {
        if (req.query.local === true || mesh === undefined) {
          throw new BlobUnavailableError(`this node does not hold ${hash}${mesh === undefined ? ' (and is in no mesh to fetch it from)' : ''}`, { field: 'hash' });
        }
        const gone = new AbortController();
        const onClose = () => gone.abort(new Error('the client went away'));
        reply.raw.once('close', onClose);
        try {
          from = await mesh.blobs.fetch(hash, { signal: gone.signal });
        } finally {
          reply.raw.off('close', onClose);
        }
      }
      const file = await blobs.fileOf(hash);
      const bytes = await blobs.sizeOf(hash);
      if (file === undefined || bytes === undefined) throw new BlobUnavailableError(`this node no longer holds ${hash}`, { field: 'hash' });
      if (from !== undefined) void reply.header('x-vmesh-from', from);
      return reply.header('content-type', OCTETS).header('content-length', bytes).header('etag', `"${hash}"`).send(createReadStream(file));
    },
  );

  api.delete(
    '/v1/blobs/:hash',
    {
      schema: {
        summary: 'Delete a blob from this node (not from the mesh); refused while a live run holds it',
        tags: ['blobs'],
        params: BlobParams,
        response: { 204: Type.Null(), ...errors },
      },
    },
    async (req, reply) => {
      if (!(await blobs.remove(req.params.hash))) throw new BlobUnavailableError(`this node does not hold ${req.params.hash}`, { field: 'hash' });
      return reply.status(204).send(null);
    },
  );
}
