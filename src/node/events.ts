import { EventEmitter } from 'node:events';
import type { RunState } from '../spec/index.ts';
import type { RunRecord } from '../store/store.ts';
import type { StreamName } from '../drivers/driver.ts';

export interface StateEvent {
  runId: string;
  eventId: number;
  state: RunState;
  reason?: string;
  ts: string;
  /** The run as it stands after this change (the executor's own copy: read, do not modify). */
  run?: RunRecord;
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
