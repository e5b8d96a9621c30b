import os from 'node:os';
import path from 'node:path';

/** The API port a node listens on unless told otherwise. */
export const DEFAULT_PORT = 7420;

/** The TCP port the mesh listens on unless told otherwise (loopback only until the operator opens it). */
export const DEFAULT_MESH_PORT = 7421;

/** Where a node keeps its store, token and logs: $VMESH_HOME, else ~/.vmesh. */
export function defaultHome(): string {
  return process.env.VMESH_HOME || path.join(os.homedir(), '.vmesh');
}
