// The client's errors, apart from the client itself, so that catching them does not load the HTTP stack.

/** The API refused a request; `code` and `field` come from its error body. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** Nothing answered at the node's address. */
export class NodeUnreachableError extends Error {
  constructor(
    readonly url: string,
    cause: unknown,
  ) {
    super(`no vmesh node answers at ${url} (is it running? start one with \`vmesh up\`)`, { cause });
    this.name = 'NodeUnreachableError';
  }
}
