/** Reads a number from the environment: the fallback when unset, an error when malformed. */
export function envNumber(name: string, fallback: number, { min = 0, integer = false } = {}): number {
  const raw = process.env[name]?.trim();
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min || (integer && !Number.isInteger(value))) {
    throw new Error(`${name}=${raw}: expected ${integer ? 'an integer' : 'a number'} >= ${min}`);
  }
  return value;
}

/** Reads a comma-separated list of integers from the environment, e.g. BENCH_MESH_NODES=10,20,50. */
export function envList(name: string, fallback: number[], { min = 0 } = {}): number[] {
  const raw = process.env[name]?.trim();
  if (raw === undefined || raw === '') return fallback;
  const values = raw.split(',').map((v) => Number(v.trim()));
  if (values.some((v) => !Number.isInteger(v) || v < min)) throw new Error(`${name}=${raw}: expected integers >= ${min}, separated by commas`);
  return values;
}

/** Reads an on/off switch from the environment: 0, false, no and off are off. */
export function envFlag(name: string, fallback: boolean): boolean {
  const raw = process.env[name]?.trim().toLowerCase();
  if (raw === undefined || raw === '') return fallback;
  return !['0', 'false', 'no', 'off'].includes(raw);
}
