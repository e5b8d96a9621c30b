import { readFileSync } from 'node:fs';
import path from 'node:path';

/** What a running daemon writes to `$VMESH_HOME/node.json` so that the CLI can find it. */
export interface DaemonInfo {
  pid: number;
  url: string;
  nodeId: string;
  startedAt: string;
  /** The node's mesh addresses (empty when it keeps out of the mesh). */
  mesh?: string[];
}

export function daemonInfoPath(home: string): string {
  return path.join(home, 'node.json');
}

export function readDaemonInfo(home: string): DaemonInfo | undefined {
  try {
    return JSON.parse(readFileSync(daemonInfoPath(home), 'utf8')) as DaemonInfo;
  } catch {
    return undefined;
  }
}
