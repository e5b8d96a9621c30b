import { InvalidArgumentError } from 'commander';

/** `500ms`, `10s`, `2m`, `1h`, or a plain number of milliseconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (m === null) throw new InvalidArgumentError(`expected a duration such as 500ms, 10s or 2m, got ${JSON.stringify(text)}`);
  const factor = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 'ms') as 'ms'];
  return Math.round(Number(m[1]) * factor);
}

/** `512`, `512M`, `512MiB`, `2G`, `2GiB` → MiB. */
export function parseMiB(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(m|mi|mib|mb|g|gi|gib|gb)?$/i.exec(text.trim());
  if (m === null) throw new InvalidArgumentError(`expected a size in MiB such as 256 or 2GiB, got ${JSON.stringify(text)}`);
  const unit = (m[2] ?? 'm').toLowerCase();
  return Math.round(Number(m[1]) * (unit.startsWith('g') ? 1024 : 1));
}

export function parseNumber(text: string): number {
  const n = Number(text);
  if (!Number.isFinite(n)) throw new InvalidArgumentError(`expected a number, got ${JSON.stringify(text)}`);
  return n;
}

export function parseInteger(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n)) throw new InvalidArgumentError(`expected a whole number, got ${JSON.stringify(text)}`);
  return n;
}

/** Collects a repeatable `--env KEY=VALUE` into a record. */
export function collectEnv(text: string, into: Record<string, string> = {}): Record<string, string> {
  const eq = text.indexOf('=');
  if (eq <= 0) throw new InvalidArgumentError(`expected KEY=VALUE, got ${JSON.stringify(text)}`);
  into[text.slice(0, eq)] = text.slice(eq + 1);
  return into;
}

export function collect(text: string, into: string[] = []): string[] {
  into.push(text);
  return into;
}

export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new InvalidArgumentError(`expected JSON: ${(err as Error).message}`);
  }
}
