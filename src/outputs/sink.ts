import type { BlobStore } from '../blobs/blob-store.ts';
import type { OutputSink } from './pack.ts';

/** Output archives kept in a blob store, content-addressed like every other blob. */
export function blobSink(blobs: BlobStore, limits: { maxBytes: number; inlineBytes: number }): OutputSink {
  return {
    maxBytes: limits.maxBytes,
    inlineBytes: limits.inlineBytes,
    tempPath: () => blobs.tempPath(),
    adopt: (file, sha256) => blobs.adopt(file, sha256),
  };
}
