/**
 * Typed errors: one class per condition. Every error carries a stable `code` that the API returns,
 * an HTTP status, and (where one input is to blame) the `field` path that names it.
 */
export abstract class VmeshError extends Error {
  abstract readonly code: string;
  abstract readonly status: number;
  readonly field?: string;

  constructor(message: string, options?: { field?: string; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    if (options?.field !== undefined) this.field = options.field;
  }

  toJSON(): { code: string; message: string; field?: string } {
    return this.field === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, field: this.field };
  }
}

/** A request or spec failed validation; `field` names the offending input. */
export class InvalidInputError extends VmeshError {
  readonly code = 'invalid_input';
  readonly status = 400;
}

/** The workload's source is not what its kind needs (e.g. bytes that are not a wasm module). */
export class InvalidSourceError extends VmeshError {
  readonly code = 'invalid_source';
  readonly status = 422;
}

/** No driver on this node can run the workload; the message says why each candidate cannot. */
export class NoDriverError extends VmeshError {
  readonly code = 'no_driver';
  readonly status = 422;
}

/** The request can never fit on this node (asks for more than its total capacity). */
export class CapacityExceededError extends VmeshError {
  readonly code = 'capacity_exceeded';
  readonly status = 422;
}

/** The node has no room free for the run now, and was asked not to queue it (placement tries another node). */
export class NoRoomError extends VmeshError {
  readonly code = 'no_room';
  readonly status = 503;
}

/** Placement found no node for the run; the message says what excluded how many nodes, and what would fit. */
export class NoNodeFitsError extends VmeshError {
  readonly code = 'no_node_fits';
  readonly status = 422;
}

/** The queue is full; try again later. */
export class QueueFullError extends VmeshError {
  readonly code = 'queue_full';
  readonly status = 503;
}

/** A run with this id exists already (another node asked for the same run twice). */
export class RunExistsError extends VmeshError {
  readonly code = 'run_exists';
  readonly status = 409;
}

/** Another node refused or failed a request; carries that node's own error code and status. */
export class PeerError extends VmeshError {
  readonly code: string;
  readonly status: number;
  constructor(error: { code: string; message: string; status: number; field?: string }, peer: string) {
    super(`node ${peer}: ${error.message}`, error.field === undefined ? undefined : { field: error.field });
    this.code = error.code;
    this.status = error.status;
  }
}

export class RunNotFoundError extends VmeshError {
  readonly code = 'run_not_found';
  readonly status = 404;
  constructor(id: string) {
    super(`no run with id ${JSON.stringify(id)}`, { field: 'id' });
  }
}

/** The run declared no outputs, has not ended yet, or its archive is no longer held by this node. */
export class OutputsNotFoundError extends VmeshError {
  readonly code = 'outputs_not_found';
  readonly status = 404;
}

/** The run is already in a terminal state, so it cannot be cancelled. */
export class RunFinishedError extends VmeshError {
  readonly code = 'run_finished';
  readonly status = 409;
}

/** The run is live, but not in a state the operation needs (pause a queued run, resume a running one). */
export class RunStateError extends VmeshError {
  readonly code = 'run_state';
  readonly status = 409;
}

/** The run's driver cannot do the operation (pause a wasm function, snapshot a container). */
export class UnsupportedError extends VmeshError {
  readonly code = 'unsupported';
  readonly status = 422;
}

export class UnauthorizedError extends VmeshError {
  readonly code = 'unauthorized';
  readonly status = 401;
}

/** An operation was aborted through its AbortSignal. */
export class AbortedError extends VmeshError {
  readonly code = 'aborted';
  readonly status = 499;
  constructor(message = 'the operation was aborted') {
    super(message);
  }
}

/** The node agent is shutting down and takes no new work. */
export class NodeStoppingError extends VmeshError {
  readonly code = 'node_stopping';
  readonly status = 503;
}

/** Bytes that a sandbox produced could not be understood (a worker protocol fault). */
export class SandboxFaultError extends VmeshError {
  readonly code = 'sandbox_fault';
  readonly status = 500;
}

export function isVmeshError(err: unknown): err is VmeshError {
  return err instanceof VmeshError;
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new AbortedError(reasonText(signal.reason));
}

function reasonText(reason: unknown): string {
  if (reason instanceof Error) return reason.message;
  if (typeof reason === 'string') return reason;
  return 'the operation was aborted';
}
