import type { BlobStore } from '../blobs/blob-store.ts';
import { decodeInline } from './source.ts';
import type { RemoteFeed } from './executor.ts';
import type { Workload } from '../spec/index.ts';

/** How the node reaches other nodes (the mesh provides it; a node outside any mesh has none). */
export interface RemoteDispatch {
  /**
   * Asks node `target` to run `workload` under run id `id`; resolves once that node has accepted it,
   * and throws the typed error it refused with otherwise.
   */
  start(target: string, id: string, workload: Workload, signal?: AbortSignal): Promise<RemoteFeed>;
  /** Fetches a blob into this node's store from the mesh, trying the nodes in `hints` first. */
  fetchBlob(hash: string, hints?: string[], signal?: AbortSignal): Promise<void>;
  /** Places `copies` more copies of a blob this node holds on other nodes of the mesh, nearest first. */
  keepCopies(hash: string, copies: number, signal?: AbortSignal): Promise<CopiesPlaced>;
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
