import type { BlobStore } from '../blobs/blob-store.ts';
import { decodeInline } from './source.ts';
import type { StreamName } from '../drivers/driver.ts';
import type { NodeAdvert, Run, RunState, Workload } from '../spec/index.ts';
import type { RunPatch } from '../store/store.ts';
import { checkReceiptFor } from '../trust/receipt.ts';

/** One update from the node that executes a remote run. */
export type RemoteUpdate =
  | { type: 'state'; state: RunState; patch: RunPatch }
  | { type: 'log'; stream: StreamName; data: Uint8Array; ts: string }
  /** Facts about the run that are not a change of state (it moved to another node). */
  | { type: 'patch'; patch: RunPatch }
  /** Its place in the executing node's queue (undefined once it left the queue). */
  | { type: 'position'; position: number | undefined }
  | { type: 'end'; run: Run };

/** A run that executes on another node, as seen from the node that asked for it. */
export interface RemoteFeed {
  /** The executing node's id. */
  node: string;
  /** Its updates in order, ending after `end`; throws when contact with it is lost. */
  updates: AsyncIterable<RemoteUpdate>;
  /** Asks the executing node to cancel the run; its `end` follows. */
  cancel(reason: string): void;
}

/** How the node reaches other nodes (the mesh provides it; a node outside any mesh has none). */
export interface RemoteDispatch {
  /**
   * Asks node `target` to run `workload` under run id `id`; resolves once that node has accepted it,
   * and throws the typed error it refused with otherwise.
   */
  start(target: string, id: string, workload: Workload, options?: RemoteStartOptions): Promise<RemoteFeed>;
  /** The other nodes of the mesh as this node sees them: their signed adverts and measured round trips. */
  members(): MemberView[];
  /** How many other nodes the mesh has (cheaper than `members().length`). */
  memberCount(): number;
  /** The lowest recent round trip to node `id`, in ms, once measured. */
  rttOf(id: string): number | undefined;
  /** Fetches a blob into this node's store from the mesh, trying the nodes in `hints` first. */
  fetchBlob(hash: string, hints?: string[], signal?: AbortSignal): Promise<void>;
  /** Places `copies` more copies of a blob this node holds on other nodes of the mesh, nearest first. */
  keepCopies(hash: string, copies: number, signal?: AbortSignal): Promise<CopiesPlaced>;
}

export interface RemoteStartOptions {
  /** Refuse (no_room) rather than queue when the run does not fit now. */
  mustFitNow?: boolean;
  /** Ask for a beat every `everyMs`, and take the node for gone after `timeoutMs` without a word. */
  heartbeat?: { everyMs: number; timeoutMs: number };
  signal?: AbortSignal;
}

export interface MemberView {
  advert: NodeAdvert;
  /** The lowest recent round trip to it, in ms, once measured. */
  rttMs?: number;
  connected: boolean;
}

/** Where the copies of a blob went, and why the nodes that took none did not. */
export interface CopiesPlaced {
  nodes: string[];
  refused: Array<{ node: string; reason: string }>;
}

/** Inline data above this size travels as a blob the executing node fetches, not inside the request. */
export const INLINE_REMOTE_BYTES = 256 * 1024;

/**
 * The workload as it is sent to another node: inline source and input files larger than 256 KiB are put
 * in this node's blob store and sent by hash (the executing node fetches them from here), so that the
 * request itself stays small.
 */
export async function remoteSpec(workload: Workload, blobs: BlobStore): Promise<Workload> {
  let spec = workload;
  if ('inline' in spec.source && spec.source.inline.length > INLINE_REMOTE_BYTES) {
    spec = { ...spec, source: { blob: await blobs.put(decodeInline(spec.source.inline, spec.source.encoding, 'source.inline')) } };
  }
  if (spec.inputs?.some((i) => i.inline !== undefined && i.inline.length > INLINE_REMOTE_BYTES)) {
    const inputs = await Promise.all(
      spec.inputs.map(async (i, n) =>
        i.inline !== undefined && i.inline.length > INLINE_REMOTE_BYTES
          ? { path: i.path, blob: await blobs.put(decodeInline(i.inline, i.encoding, `inputs[${n}].inline`)) }
          : i,
      ),
    );
    spec = { ...spec, inputs };
  }
  return spec;
}

/** Every blob a workload refers to (a snapshot's files are found through its index). */
export function blobsOf(workload: Workload): string[] {
  const out: string[] = [];
  if ('blob' in workload.source) out.push(workload.source.blob);
  if ('snapshot' in workload.source) out.push(workload.source.snapshot);
  for (const i of workload.inputs ?? []) if (i.blob !== undefined) out.push(i.blob);
  return out;
}

/**
 * The feed of a remote run with its end checked: the receipt must be signed by the node the run was sent
 * to, for this run, for exactly the spec sent, over the result that came with it. A run whose receipt does
 * not check ends `failed` without its result, and `onBad` hears why.
 */
export function receiptChecked(feed: RemoteFeed, expect: { run: string; specHash: string }, onBad: (problem: string) => void): RemoteFeed {
  const updates = (async function* (): AsyncGenerator<RemoteUpdate> {
    for await (const u of feed.updates) {
      if (u.type !== 'end') {
        yield u;
        continue;
      }
      const problem = await receiptProblem(u.run, feed.node, expect);
      if (problem === undefined) yield u;
      else {
        onBad(problem);
        const { result: _dropped, receipt: _bad, ...run } = u.run;
        yield { type: 'end', run: { ...run, state: 'failed', reason: `node ${feed.node} sent back a run whose receipt does not check: ${problem}` } };
      }
      return;
    }
  })();
  return { ...feed, updates };
}

async function receiptProblem(run: Run, node: string, expect: { run: string; specHash: string }): Promise<string | undefined> {
  if (run.receipt === undefined) return 'it has no receipt';
  try {
    await checkReceiptFor(run.receipt, { node, ...expect, ...(run.result === undefined ? {} : { result: run.result }) });
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}
