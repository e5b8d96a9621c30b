import http from 'node:http';
import { AbortedError } from '../../spec/index.ts';

/** One request to a VMM's REST API: what Firecracker and Cloud Hypervisor both take over their Unix socket. */
export interface ApiCall {
  method: 'GET' | 'PUT' | 'PATCH';
  /** The request path, e.g. `/machine-config` or `/api/v1/vm.boot`. */
  path: string;
  /** Sent as JSON; no body when undefined. */
  body?: unknown;
}

/** The VMM refused a request: its HTTP status and what it said (Firecracker's `fault_message`, else the body). */
export class VmmApiError extends Error {
  constructor(
    readonly call: ApiCall,
    readonly status: number,
    readonly fault: string,
  ) {
    super(`${call.method} ${call.path} was refused (${status}): ${fault || 'no reason given'}`);
    this.name = 'VmmApiError';
  }
}

export interface ApiOptions {
  /** Per request (default 10 s). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** A response body larger than this is not an answer these APIs give: the request fails. */
const MAX_RESPONSE_BYTES = 1024 * 1024;

/**
 * Sends one call over the VMM's Unix socket and returns the parsed JSON answer (undefined for 204).
 * A status of 300 or more rejects with VmmApiError; a dead socket, a timeout or an abort reject too.
 */
export function callApi(socketPath: string, call: ApiCall, options: ApiOptions = {}): Promise<unknown> {
  const payload = call.body === undefined ? undefined : Buffer.from(JSON.stringify(call.body));
  return new Promise((resolve, reject) => {
    if (options.signal?.aborted) return reject(new AbortedError(`${call.method} ${call.path} was aborted`));
    const req = http.request(
      {
        socketPath,
        method: call.method,
        path: call.path,
        headers: { Accept: 'application/json', ...(payload === undefined ? {} : { 'Content-Type': 'application/json', 'Content-Length': payload.byteLength }) },
        timeout: options.timeoutMs ?? 10_000,
        ...(options.signal === undefined ? {} : { signal: options.signal }),
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.byteLength;
          if (size > MAX_RESPONSE_BYTES) return req.destroy(new Error(`${call.method} ${call.path}: the answer passed ${MAX_RESPONSE_BYTES} bytes`));
          chunks.push(chunk);
        });
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const status = res.statusCode ?? 0;
          let parsed: unknown;
          try {
            parsed = text.trim() === '' ? undefined : JSON.parse(text);
          } catch {
            parsed = undefined;
          }
          if (status >= 300) return reject(new VmmApiError(call, status, faultOf(parsed) ?? text.trim().slice(0, 2048)));
          resolve(parsed);
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${call.method} ${call.path}: no answer within ${options.timeoutMs ?? 10_000} ms`)));
    req.on('error', (err) => reject(options.signal?.aborted ? new AbortedError(`${call.method} ${call.path} was aborted`) : err));
    req.end(payload);
  });
}

function faultOf(body: unknown): string | undefined {
  if (typeof body === 'object' && body !== null && 'fault_message' in body) return String((body as { fault_message: unknown }).fault_message);
  return undefined;
}
