import type { TSchema, Static } from 'typebox';
import { Compile } from 'typebox/compile';
import { InvalidInputError } from './errors.ts';
import { Source, Workload } from './workload.ts';

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

export interface SchemaError {
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
  } else if (err.keyword === 'boolean') {
    msg = 'is not a known field'; // TypeBox reports additionalProperties: false as a false schema on the field
  } else if (err.keyword === 'additionalProperties' && Array.isArray(err.params.additionalProperties)) {
    path = `${path}/${String(err.params.additionalProperties[0])}`;
    msg = 'is not a known field';
  }
  const field = fieldName(path, prefix);
  return { field, message: `${field}: ${msg}` };
}

/**
 * The one error to report from a list of schema errors: the deepest field, and there, every alternative
 * the schema would have taken (`must be one of "function", "container", "microvm", "unikernel"`).
 */
export function reportSchemaErrors(errors: SchemaError[], prefix = ''): { field: string; message: string } {
  const deepest = [...errors].sort((a, b) => b.instancePath.length - a.instancePath.length);
  const first = deepest[0];
  if (first === undefined) return { field: '(root)', message: 'invalid input' };
  const here = deepest.filter((e) => e.instancePath === first.instancePath);
  const allowed = here.filter((e) => e.keyword === 'const').map((e) => JSON.stringify(e.params.allowedValue));
  if (allowed.length > 0) {
    const types = here.filter((e) => e.keyword === 'type').map((e) => `a value of type ${String(e.params.type)}`);
    const field = fieldName(first.instancePath, prefix);
    return { field, message: `${field}: must be one of ${[...allowed, ...types].join(', ')}` };
  }
  return describeSchemaError(here.find((e) => e.keyword !== 'anyOf') ?? first, prefix);
}

/**
 * Unions of objects that are told apart by a key of their own (`source`: inline, file, blob, kernel,
 * snapshot, guest). TypeBox reports errors from the first branches it tried, so a bad `source.append`
 * came out as "source.kernel: is not a known field"; for these, the errors are taken from the branch
 * that the value's own keys pick.
 */
const DISCRIMINATED: ReadonlyArray<{ pointer: string; union: TSchema }> = [{ pointer: '/source', union: Source }];

interface Branch {
  key: string;
  check: ReturnType<typeof Compile>;
}
const branchCache = new Map<TSchema, Branch[]>();

function branchesOf(union: TSchema): Branch[] {
  let branches = branchCache.get(union);
  if (branches === undefined) {
    const anyOf = (union as { anyOf?: Array<TSchema & { required?: string[] }> }).anyOf ?? [];
    branches = anyOf.flatMap((b) => (b.required?.[0] === undefined ? [] : [{ key: b.required[0], check: Compile(b) }]));
    branchCache.set(union, branches);
  }
  return branches;
}

/** The errors of the branch a discriminated union's value picks, when the first error lies inside one. */
function narrowToBranch(errors: SchemaError[], value: unknown): SchemaError[] {
  for (const { pointer, union } of DISCRIMINATED) {
    if (!errors.some((e) => e.instancePath === pointer || e.instancePath.startsWith(`${pointer}/`))) continue;
    const inner = pointer
      .split('/')
      .slice(1)
      .reduce<unknown>((v, key) => (v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[key] : undefined), value);
    if (inner === null || typeof inner !== 'object' || Array.isArray(inner)) continue;
    const branch = branchesOf(union).find((b) => b.key in inner);
    if (branch === undefined || branch.check.Check(inner)) continue;
    return ([...branch.check.Errors(inner)] as SchemaError[]).map((e) => ({ ...e, instancePath: `${pointer}${e.instancePath}` }));
  }
  return errors;
}

/**
 * The one error to report for a value that failed `schema`'s check, with the discriminated unions narrowed
 * to the branch the value picked.
 */
export function explainSchemaErrors(errors: SchemaError[], value: unknown, prefix = ''): { field: string; message: string } {
  return reportSchemaErrors(narrowToBranch(errors, value), prefix);
}

/** A compiled validator that throws InvalidInputError naming the first bad field. */
export function validator<S extends TSchema>(schema: S, prefix = '') {
  const compiled = Compile(schema);
  return (value: unknown): Static<S> => {
    if (compiled.Check(value)) return value as Static<S>;
    const { field, message } = explainSchemaErrors([...compiled.Errors(value)] as SchemaError[], value, prefix);
    throw new InvalidInputError(message, { field });
  };
}

export const parseWorkload = validator(Workload);
