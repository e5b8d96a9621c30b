import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { isVmeshError } from '../spec/index.ts';

export interface ApiErrorBody {
  error: { code: string; message: string; field?: string };
}

/** Every error leaves the API as `{ error: { code, message, field? } }` with a fitting status. */
export function errorHandler(err: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  if (isVmeshError(err)) {
    void reply.status(err.status).send({ error: err.toJSON() } satisfies ApiErrorBody);
    return;
  }
  const status = err.statusCode ?? 500;
  if (status >= 500) request.log.error({ err }, 'request failed');
  let code = 'internal';
  let message = status >= 500 ? 'internal error' : err.message;
  if (err.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || (err instanceof SyntaxError && status === 400)) {
    code = 'invalid_json';
    message = `the request body is not valid JSON: ${err.message}`;
  } else if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
    code = 'too_large';
    message = 'the request body is over the size limit (limits.requestBytes)';
  } else if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
    code = 'unsupported_media_type';
  } else if (status < 500) {
    code = 'bad_request';
  }
  void reply.status(status).send({ error: { code, message } } satisfies ApiErrorBody);
}
