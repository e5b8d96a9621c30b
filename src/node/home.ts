import os from 'node:os';
import path from 'node:path';

/** The API port a node listens on unless told otherwise. */
export const DEFAULT_PORT = 7420;

/** Where a node keeps its store, token and logs: $VMESH_HOME, else ~/.vmesh. */
export function defaultHome(): string {
  return process.env.VMESH_HOME || path.join(os.homedir(), '.vmesh');
}
