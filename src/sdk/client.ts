import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { Agent, fetch, type Dispatcher } from 'undici';
import type { NodeInfo, SnapshotInfo } from '../node/node.ts';
import type { DriverChoice, DriverStatus } from '../drivers/registry.ts';
import type { MeshNode } from '../mesh/mesh.ts';
import type { Offence } from '../mesh/peer-guard.ts';
import type { Run, RunState, Workload } from '../spec/index.ts';
import type { PlacementExplanation } from '../placement/index.ts';
import { ApiError, NodeUnreachableError } from './errors.ts';

export { ApiError, NodeUnreachableError } from './errors.ts';

export type LogEvent =
  | { event: 'stdout' | 'stderr'; id: number; text: string }
  | { event: 'state'; id: number; state: RunState; reason?: string }
  | { event: 'end'; state: RunState };

export interface MeshView {
  self: string;
  mesh: { enabled: boolean; addresses: string[] };
  /** Each with the reputation this node holds of it (time-decayed; 1 for itself). */
  nodes: Array<
    MeshNode & {
      reputation: { score: number; local: number; good: number; bad: number; counts: Record<string, number>; reports: { counted: number; good: number; bad: number } };
    }
  >;
  /** Peers this node refuses, and what each did. */
  banned: Offence[];
}

export interface BlobList {
  /** Most recently used first; `held` ones are read by a live run and cannot be evicted. */
  blobs: Array<{ hash: string; bytes: number; held: boolean; pinnedUntil?: string }>;
  usage: { bytes: number; blobs: number; maxBytes: number; heldBytes: number; pinnedBytes: number };
}

export interface ClientOptions {
  /** Base URL of a node's API, e.g. http://127.0.0.1:7420 */
  url: string;
  token: string;
}

export interface ListRunsOptions {
  state?: RunState;
  limit?: number;
  before?: string;
}

/**
 * The typed client of a vmesh node's HTTP API. The CLI and the dashboard use it too.
 * Runs can take long, so the client has no response timeout of its own: pass an AbortSignal.
 */
export class VmeshClient {
  private readonly base: string;
  private readonly dispatcher: Dispatcher;

  constructor(private readonly options: ClientOptions) {
    this.base = options.url.replace(/\/+$/, '');
    this.dispatcher = new Agent({ headersTimeout: 0, bodyTimeout: 0, keepAliveTimeout: 10_000 });
  }

  /** Submits a workload; with `wait` (the default) resolves once the run has ended. */
  run(workload: Workload, opts: { wait?: boolean; explain?: boolean; signal?: AbortSignal } = {}): Promise<Run> {
    const query = new URLSearchParams();
    if (opts.wait === false) query.set('wait', 'false');
    if (opts.explain === true) query.set('explain', 'true');
    const qs = query.size > 0 ? `?${query}` : '';
    return this.request<Run>('POST', `/v1/runs${qs}`, workload, opts.signal);
  }

  /** Where the workload would run and why, without running it (a dry run). */
  explainPlacement(workload: Workload, signal?: AbortSignal): Promise<PlacementExplanation> {
    return this.request<PlacementExplanation>('POST', '/v1/placements', workload, signal);
  }

  getRun(id: string, signal?: AbortSignal): Promise<Run> {
    return this.request<Run>('GET', `/v1/runs/${encodeURIComponent(id)}`, undefined, signal);
  }

  async listRuns(opts: ListRunsOptions = {}, signal?: AbortSignal): Promise<Run[]> {
    const q = new URLSearchParams();
    if (opts.state !== undefined) q.set('state', opts.state);
    if (opts.limit !== undefined) q.set('limit', String(opts.limit));
    if (opts.before !== undefined) q.set('before', opts.before);
    const qs = q.size > 0 ? `?${q}` : '';
    return (await this.request<{ runs: Run[] }>('GET', `/v1/runs${qs}`, undefined, signal)).runs;
  }

  cancel(id: string, signal?: AbortSignal): Promise<Run> {
    return this.request<Run>('POST', `/v1/runs/${encodeURIComponent(id)}/cancel`, undefined, signal);
  }

  /** Freezes a running run's sandbox; `resume` lets it go on. */
  pause(id: string, signal?: AbortSignal): Promise<Run> {
    return this.request<Run>('POST', `/v1/runs/${encodeURIComponent(id)}/pause`, undefined, signal);
  }

  resume(id: string, signal?: AbortSignal): Promise<Run> {
    return this.request<Run>('POST', `/v1/runs/${encodeURIComponent(id)}/resume`, undefined, signal);
  }

  /** Captures a running microVM into the node's blob store (the run is left paused). */
  snapshot(id: string, signal?: AbortSignal): Promise<SnapshotInfo> {
    return this.request<SnapshotInfo>('POST', `/v1/runs/${encodeURIComponent(id)}/snapshot`, undefined, signal);
  }

  /** Continues a snapshot as a new run (on a node that holds its blobs). */
  restore(snapshot: string, opts: { wait?: boolean; timeoutMs?: number; signal?: AbortSignal } = {}): Promise<Run> {
    const workload: Workload = { kind: 'microvm', source: { snapshot }, ...(opts.timeoutMs === undefined ? {} : { resources: { timeoutMs: opts.timeoutMs } }) };
    return this.run(workload, { ...(opts.wait === undefined ? {} : { wait: opts.wait }), ...(opts.signal === undefined ? {} : { signal: opts.signal }) });
  }

  node(signal?: AbortSignal): Promise<NodeInfo> {
    return this.request<NodeInfo>('GET', '/v1/node', undefined, signal);
  }

  /** The mesh as the node sees it: itself first, then every node whose adverts it holds. */
  async nodes(signal?: AbortSignal): Promise<MeshView> {
    return this.request<MeshView>('GET', '/v1/nodes', undefined, signal);
  }

  async drivers(signal?: AbortSignal): Promise<DriverStatus[]> {
    return (await this.driverReport(signal)).drivers;
  }

  /** The drivers in preference order, and the driver each kind of workload goes to with why the others were passed over. */
  driverReport(signal?: AbortSignal): Promise<{ drivers: DriverStatus[]; choices: DriverChoice[] }> {
    return this.request('GET', '/v1/drivers', undefined, signal);
  }

  health(signal?: AbortSignal): Promise<{ status: string; node: string }> {
    return this.request('GET', '/healthz', undefined, signal);
  }

  /** The tar of a run's declared outputs, as a stream of bytes (see `result.outputsArchive`). */
  async outputs(id: string, signal?: AbortSignal): Promise<WebReadableStream<Uint8Array>> {
    const res = await this.send('GET', `/v1/runs/${encodeURIComponent(id)}/outputs`, undefined, signal, { accept: 'application/x-tar' });
    if (res.body === null) throw new Error(`GET /v1/runs/${id}/outputs returned no body`);
    return res.body as WebReadableStream<Uint8Array>;
  }

  /**
   * Stores bytes in the node's blob store and returns their hash. A stream is sent as it is read; give
   * `size` with it so that the node can refuse a blob that does not fit before it is sent.
   */
  async putBlob(
    body: Uint8Array | AsyncIterable<Uint8Array>,
    opts: { size?: number; expect?: string; signal?: AbortSignal } = {},
  ): Promise<{ blob: string; bytes: number; created: boolean }> {
    const size = body instanceof Uint8Array ? body.byteLength : opts.size;
    const query = opts.expect === undefined ? '' : `?expect=${encodeURIComponent(opts.expect)}`;
    const res = await this.send('POST', `/v1/blobs${query}`, undefined, opts.signal, {
      'content-type': 'application/octet-stream',
      ...(size === undefined ? {} : { 'content-length': String(size) }),
    }, body);
    return (await res.json()) as { blob: string; bytes: number; created: boolean };
  }

  /**
   * A blob's bytes as a stream, with its size and, when the node fetched it from the mesh first, the
   * node it came from. `local` keeps the node from asking the mesh.
   */
  async getBlob(hash: string, opts: { local?: boolean; signal?: AbortSignal } = {}): Promise<{ body: WebReadableStream<Uint8Array>; bytes: number; from?: string }> {
    const res = await this.send('GET', `/v1/blobs/${encodeURIComponent(hash)}${opts.local === true ? '?local=true' : ''}`, undefined, opts.signal, { accept: 'application/octet-stream' });
    if (res.body === null) throw new Error(`GET /v1/blobs/${hash} returned no body`);
    const from = res.headers.get('x-vmesh-from');
    return { body: res.body as WebReadableStream<Uint8Array>, bytes: Number(res.headers.get('content-length')), ...(from === null ? {} : { from }) };
  }

  /** The size of a blob the node holds itself, or undefined (the mesh is not asked). */
  async blobSize(hash: string, signal?: AbortSignal): Promise<number | undefined> {
    try {
      const res = await this.send('HEAD', `/v1/blobs/${encodeURIComponent(hash)}`, undefined, signal);
      return Number(res.headers.get('content-length'));
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) return undefined;
      throw err;
    }
  }

  /** The blobs the node holds, most recently used first, and how full its store is. */
  listBlobs(opts: { limit?: number; signal?: AbortSignal } = {}): Promise<BlobList> {
    return this.request<BlobList>('GET', `/v1/blobs${opts.limit === undefined ? '' : `?limit=${opts.limit}`}`, undefined, opts.signal);
  }

  /** Deletes a blob from the node (not from other nodes); refused while a live run holds it. */
  async deleteBlob(hash: string, signal?: AbortSignal): Promise<void> {
    await this.send('DELETE', `/v1/blobs/${encodeURIComponent(hash)}`, undefined, signal);
  }

  /** A run's output and state changes: the stored ones first, then live ones until the run ends. */
  async *logs(id: string, opts: { follow?: boolean; signal?: AbortSignal } = {}): AsyncGenerator<LogEvent> {
    const follow = opts.follow ?? true;
    const res = await this.send('GET', `/v1/runs/${encodeURIComponent(id)}/logs${follow ? '' : '?follow=false'}`, undefined, opts.signal, {
      accept: 'text/event-stream',
    });
    if (res.body === null) return;
    const decoder = new TextDecoder();
    let buffer = '';
    for await (const chunk of res.body) {
      buffer += decoder.decode(chunk as Uint8Array, { stream: true });
      let cut: number;
      while ((cut = buffer.indexOf('\n\n')) >= 0) {
        const frame = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const event = parseFrame(frame);
        if (event === undefined) continue;
        yield event;
        if (event.event === 'end') return;
      }
    }
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }

  private async request<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    const res = await this.send(method, path, body, signal);
    return (await res.json()) as T;
  }

  /** One request; `body` is sent as JSON, `raw` (bytes or a stream) as it is. Throws `ApiError` for an error answer. */
  private async send(
    method: string,
    path: string,
    body: unknown,
    signal: AbortSignal | undefined,
    headers: Record<string, string> = {},
    raw?: Uint8Array | AsyncIterable<Uint8Array>,
  ) {
    const url = `${this.base}${path}`;
    let res;
    try {
      res = await fetch(url, {
        method,
        headers: {
          authorization: `Bearer ${this.options.token}`,
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          ...headers,
        },
        body: raw ?? (body === undefined ? null : JSON.stringify(body)),
        ...(raw === undefined || raw instanceof Uint8Array ? {} : { duplex: 'half' as const }),
        dispatcher: this.dispatcher,
        signal: signal ?? null,
      });
    } catch (err) {
      if (signal?.aborted) throw err;
      throw new NodeUnreachableError(this.base, err);
    }
    if (!res.ok) {
      const text = await res.text();
      let parsed: { error?: { code?: string; message?: string; field?: string } } = {};
      try {
        parsed = JSON.parse(text) as typeof parsed;
      } catch {
        /* not JSON: keep the text */
      }
      const e = parsed.error;
      throw new ApiError(res.status, e?.code ?? `http_${res.status}`, e?.message ?? (text || res.statusText), e?.field);
    }
    return res;
  }
}

function parseFrame(frame: string): LogEvent | undefined {
  let event = 'message';
  let id: number | undefined;
  const data: string[] = [];
  for (const line of frame.split('\n')) {
    if (line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'event') event = value;
    else if (field === 'id') id = Number(value);
    else if (field === 'data') data.push(value);
  }
  if (data.length === 0) return undefined;
  const payload = JSON.parse(data.join('\n')) as Record<string, unknown>;
  if (event === 'end') return { event: 'end', state: payload.state as RunState };
  if (event === 'state') {
    const e: LogEvent = { event: 'state', id: id ?? 0, state: payload.state as RunState };
    if (typeof payload.reason === 'string') e.reason = payload.reason;
    return e;
  }
  if (event === 'stdout' || event === 'stderr') return { event, id: id ?? 0, text: String(payload.text ?? '') };
  return undefined;
}
