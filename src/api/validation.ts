import type { FastifySchemaCompiler } from 'fastify';
import type { TSchema } from 'typebox';
import { Compile } from 'typebox/compile';
import { Value } from 'typebox/value';
import { explainSchemaErrors, InvalidInputError, type SchemaError } from '../spec/index.ts';

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
    const { field, message } = explainSchemaErrors([...compiled.Errors(value)] as SchemaError[], value, prefix);
    return { error: new InvalidInputError(message, { field }) };
  };
};
