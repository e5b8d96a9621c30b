import { createReadStream, type ReadStream } from 'node:fs';
import type { ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import type { LogEvent, StateEvent } from '../../node/events.ts';
import type { VmeshNode } from '../../node/node.ts';
import { isTerminal, PlacementExplanationSchema, Workload, type RunState } from '../../spec/index.ts';
import type { StoredEvent } from '../../store/store.ts';
import { ErrorBody, ListQuery, LogsQuery, Run, RunIdParams, RunList, SnapshotInfoSchema, SubmitQuery } from '../schemas.ts';
import { SseStream } from '../sse.ts';

const errors = { 400: ErrorBody, 401: ErrorBody, 404: ErrorBody, 409: ErrorBody, 422: ErrorBody, 503: ErrorBody };

export function runRoutes(app: FastifyInstance, node: VmeshNode): void {
  const api = app.withTypeProvider<TypeBoxTypeProvider>();

  api.post(
    '/v1/runs',
    {
      schema: {
        summary: 'Submit a workload',
        description: 'Validates the workload, queues it, and by default waits for its result (`?wait=false` returns at once).',
        tags: ['runs'],
        body: Workload,
        querystring: SubmitQuery,
        response: { 200: Run, 202: Run, ...errors },
      },
    },
    async (req, reply) => {
      const run = await node.submitValid(req.body, { explain: req.query.explain === true }); // the route's schema is the Workload schema
      if (req.query.wait === false) return reply.status(202).send(run);
      const gone = new AbortController();
      const onClose = () => gone.abort(new Error('client went away'));
      req.raw.on('close', onClose);
      try {
        return await node.waitFor(run.id, gone.signal);
      } finally {
        req.raw.off('close', onClose);
      }
    },
  );

  api.post(
    '/v1/placements',
    {
      schema: {
        summary: 'Where a workload would run, and why (a dry run: nothing is created)',
        description:
          'Every node this node knows, each filter\'s verdict on it (excluded, driver, labels, region, reputation, rtt, capacity, free) and, for the nodes that fit, ' +
          'each score term and their rank. `summary` says how many fit and what excluded the others.',
        tags: ['runs'],
        body: Workload,
        response: { 200: PlacementExplanationSchema, ...errors },
      },
    },
    async (req) => node.explainPlacement(req.body),
  );

  api.get(
    '/v1/runs',
    { schema: { summary: 'List runs, newest first', tags: ['runs'], querystring: ListQuery, response: { 200: RunList, ...errors } } },
    async (req) => {
      const q: Parameters<VmeshNode['listRuns']>[0] = {};
      if (req.query.state !== undefined) q.state = req.query.state;
      if (req.query.limit !== undefined) q.limit = req.query.limit;
      if (req.query.before !== undefined) q.before = req.query.before;
      return { runs: node.listRuns(q) };
    },
  );

  api.get(
    '/v1/runs/:id',
    { schema: { summary: 'One run, with its result once ended', tags: ['runs'], params: RunIdParams, response: { 200: Run, ...errors } } },
    async (req) => node.getRun(req.params.id),
  );

  api.get(
    '/v1/runs/:id/outputs',
    {
      schema: {
        summary: "Download a run's declared outputs as one tar",
        description:
          'The archive is deterministic (walk order, epoch times, modes 0644/0755), so its `ETag` is the blob hash in `result.outputsArchive.blob`. ' +
          'Symlinks, devices and files over the cap are never in it; `result.outputsSkipped` says why each was left out.',
        tags: ['runs'],
        params: RunIdParams,
        produces: ['application/x-tar'],
        response: { 200: Type.Unsafe<ReadStream>({ type: 'string', format: 'binary', description: 'a POSIX tar' }), ...errors },
      },
    },
    async (req, reply) => {
      const { file, blob, bytes } = await node.outputsArchive(req.params.id);
      return reply
        .header('content-type', 'application/x-tar')
        .header('content-length', bytes)
        .header('etag', `"${blob}"`)
        .header('content-disposition', `attachment; filename="${req.params.id}-outputs.tar"`)
        .send(createReadStream(file));
    },
  );

  api.post(
    '/v1/runs/:id/cancel',
    {
      schema: {
        summary: 'Cancel a live run',
        tags: ['runs'],
        params: RunIdParams,
        response: { 202: Run, ...errors },
      },
    },
    async (req, reply) => reply.status(202).send(node.cancel(req.params.id)),
  );

  for (const [op, summary] of [
    ['pause', "Freeze a running run's sandbox (its resources stay reserved; the timeout keeps counting)"],
    ['resume', 'Let a paused run go on'],
  ] as const) {
    api.post(
      `/v1/runs/:id/${op}`,
      { schema: { summary, tags: ['runs'], params: RunIdParams, response: { 200: Run, ...errors } } },
      async (req) => (op === 'pause' ? node.pause(req.params.id) : node.resume(req.params.id)),
    );
  }

  api.post(
    '/v1/runs/:id/snapshot',
    {
      schema: {
        summary: "Capture a running microVM's whole state into the blob store; the run is left paused",
        description: 'Submit `{ "kind": "microvm", "source": { "snapshot": "<id>" } }` to continue it, on this node or on any node holding its blobs.',
        tags: ['runs'],
        params: RunIdParams,
        response: { 200: SnapshotInfoSchema, ...errors },
      },
    },
    async (req) => {
      const gone = new AbortController();
      const onClose = () => gone.abort(new Error('client went away'));
      req.raw.on('close', onClose);
      try {
        return await node.snapshot(req.params.id, gone.signal);
      } finally {
        req.raw.off('close', onClose);
      }
    },
  );

  api.get(
    '/v1/runs/:id/logs',
    {
      schema: {
        summary: 'Stream a run\'s output and state changes (server-sent events)',
        description:
          'Events: `stdout` and `stderr` with `{ text }`, `state` with `{ state, reason? }`, and a final `end` with `{ state }`. ' +
          'Replays what was stored, then follows the live run unless `follow=false`. Honours `Last-Event-ID`.',
        tags: ['runs'],
        params: RunIdParams,
        querystring: LogsQuery,
        response: { 200: Type.String({ description: 'text/event-stream' }), ...errors },
      },
    },
    async (req, reply) => {
      const id = req.params.id;
      node.getRun(id); // 404 before the stream starts
      const follow = req.query.follow ?? true;
      const lastEventId = Number.parseInt(String(req.headers['last-event-id'] ?? '0'), 10) || 0;
      reply.hijack();
      streamRunEvents(node, id, follow, lastEventId, reply.raw);
    },
  );

  api.get(
    '/v1/events',
    {
      schema: {
        summary: 'Follow every run state change on this node (server-sent events)',
        tags: ['runs'],
        response: { 200: Type.String({ description: 'text/event-stream' }), ...errors },
      },
    },
    async (_req, reply) => {
      reply.hijack();
      const onState = (e: StateEvent) => sse.send('state', e, e.eventId);
      const sse = new SseStream(reply.raw, () => node.events.off('state', onState));
      node.events.on('state', onState);
    },
  );
}

type Delivered = { id: number; type: 'state'; state: RunState; reason?: string } | { id: number; type: 'stdout' | 'stderr'; text: string };

function fromStored(e: StoredEvent): Delivered {
  if (e.type === 'state') {
    const d = JSON.parse(e.data.toString('utf8')) as { state: RunState; reason?: string };
    return { id: e.id, type: 'state', ...d };
  }
  return { id: e.id, type: e.type, text: e.data.toString('utf8') };
}

/**
 * Replays a run's stored events after `lastEventId`, then (when following) delivers live ones in order
 * without gaps or repeats: live events that arrive during the replay are held and released after it.
 */
function streamRunEvents(node: VmeshNode, id: string, follow: boolean, lastEventId: number, res: ServerResponse): void {
  let last = lastEventId;
  let replaying = true;
  const held: Delivered[] = [];
  const deliver = (d: Delivered) => {
    if (d.id <= last || sse.isClosed) return;
    last = d.id;
    if (d.type === 'state') {
      const data = d.reason === undefined ? { state: d.state } : { state: d.state, reason: d.reason };
      sse.send('state', data, d.id);
      if (isTerminal(d.state)) {
        sse.send('end', { state: d.state });
        sse.end();
      }
    } else {
      sse.send(d.type, { text: d.text }, d.id);
    }
  };
  const onLive = (d: Delivered) => (replaying ? held.push(d) : deliver(d));
  const onLog = (e: LogEvent) => {
    if (e.runId === id) onLive({ id: e.eventId, type: e.stream, text: Buffer.from(e.data).toString('utf8') });
  };
  const onState = (e: StateEvent) => {
    if (e.runId !== id) return;
    onLive(e.reason === undefined ? { id: e.eventId, type: 'state', state: e.state } : { id: e.eventId, type: 'state', state: e.state, reason: e.reason });
  };
  const unsubscribe = () => {
    node.events.off('log', onLog);
    node.events.off('state', onState);
  };
  const sse = new SseStream(res, unsubscribe);
  if (follow) {
    node.events.on('log', onLog);
    node.events.on('state', onState);
  }
  for (;;) {
    const page = node.store.eventsAfter(id, last, 1000);
    for (const e of page) deliver(fromStored(e));
    if (page.length < 1000 || sse.isClosed) break;
  }
  replaying = false;
  for (const d of held.splice(0)) deliver(d);
  if (!follow && !sse.isClosed) {
    sse.send('end', { state: node.getRun(id).state });
    sse.end();
  }
}
