import type { TSchema, Static } from 'typebox';
import { Compile } from 'typebox/compile';
import { InvalidInputError } from './errors.ts';
import { Workload } from './workload.ts';

/** Turns a JSON pointer such as `/resources/memoryMiB` into the dotted field name users see. */
export function fieldName(instancePath: string, prefix = ''): string {
  const parts = instancePath
    .split('/')
    .slice(1)
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  const joined = parts.map((p) => (/^\d+$/.test(p) ? `[${p}]` : `.${p}`)).join('');
  const name = `${prefix}${joined}`.replace(/^\./, '');
  return name === '' ? '(root)' : name;
}

interface SchemaError {
  instancePath: string;
  message?: string;
  keyword: string;
  params: Record<string, unknown>;
}

/** One readable sentence for one schema error: names the field and says what was expected. */
export function describeSchemaError(err: SchemaError, prefix = ''): { field: string; message: string } {
  let path = err.instancePath;
  let msg = err.message ?? 'is invalid';
  if (err.keyword === 'required' && Array.isArray(err.params.requiredProperties)) {
    path = `${path}/${String(err.params.requiredProperties[0])}`;
    msg = 'is required';
  } else if (err.keyword === 'additionalProperties' && Array.isArray(err.params.additionalProperties)) {
    path = `${path}/${String(err.params.additionalProperties[0])}`;
    msg = 'is not a known field';
  }
  const field = fieldName(path, prefix);
  return { field, message: `${field}: ${msg}` };
}

/** A compiled validator that throws InvalidInputError naming the first bad field. */
export function validator<S extends TSchema>(schema: S, prefix = '') {
  const compiled = Compile(schema);
  return (value: unknown): Static<S> => {
    if (compiled.Check(value)) return value as Static<S>;
    const errors = [...compiled.Errors(value)] as SchemaError[];
    // anyOf failures list every branch; the most specific error is the deepest path.
    errors.sort((a, b) => b.instancePath.length - a.instancePath.length);
    const first = errors[0];
    if (first === undefined) throw new InvalidInputError('invalid input');
    const { field, message } = describeSchemaError(first, prefix);
    throw new InvalidInputError(message, { field });
  };
}

export const parseWorkload = validator(Workload);
