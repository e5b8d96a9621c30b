import { EventEmitter } from 'node:events';
import type { RunState } from '../spec/index.ts';
import type { StreamName } from '../drivers/driver.ts';

export interface StateEvent {
  runId: string;
  eventId: number;
  state: RunState;
  reason?: string;
  ts: string;
}

export interface LogEvent {
  runId: string;
  eventId: number;
  stream: StreamName;
  data: Uint8Array;
  ts: string;
}

interface NodeEventMap {
  state: [StateEvent];
  log: [LogEvent];
}

/** The node's live event stream: run state changes and log chunks, as they are stored. */
export class NodeEvents extends EventEmitter<NodeEventMap> {
  constructor() {
    super();
    this.setMaxListeners(0); // one listener per following client; they remove themselves
  }
}
