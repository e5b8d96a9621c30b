import type { FastifySchemaCompiler } from 'fastify';
import type { TSchema } from 'typebox';
import { Compile } from 'typebox/compile';
import { Value } from 'typebox/value';
import { InvalidInputError, describeSchemaError } from '../spec/index.ts';

const PREFIX: Record<string, string> = { body: '', querystring: 'query', params: 'params', headers: 'headers' };

/**
 * Validates requests with TypeBox instead of Fastify's default Ajv set-up, which strips unknown fields
 * and coerces types in bodies. Bodies are checked strictly (an unknown field is an error); query
 * strings and path parameters are converted from text first. Errors name the field.
 */
export const typeboxValidatorCompiler: FastifySchemaCompiler<TSchema> = ({ schema, httpPart }) => {
  const compiled = Compile(schema);
  const prefix = PREFIX[httpPart ?? 'body'] ?? '';
  return (data: unknown) => {
    const value = httpPart === 'body' ? data : Value.Convert(schema, data);
    if (compiled.Check(value)) return { value };
    const errors = [...compiled.Errors(value)] as Parameters<typeof describeSchemaError>[0][];
    errors.sort((a, b) => b.instancePath.length - a.instancePath.length);
    const first = errors[0];
    if (first === undefined) return { error: new InvalidInputError('invalid request') };
    const { field, message } = describeSchemaError(first, prefix);
    return { error: new InvalidInputError(message, { field }) };
  };
};
