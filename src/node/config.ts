import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Type, { type Static } from 'typebox';
import { DEFAULT_SANDBOX_RANGE } from '../net/host.ts';
import { DEFAULT_PORT, defaultHome } from './home.ts';
import { InvalidInputError, validator, type ResolvedResources, type WorkloadKind } from '../spec/index.ts';

const CapacityOverrides = Type.Object(
  {
    vcpus: Type.Optional(Type.Number({ exclusiveMinimum: 0 })),
    memoryMiB: Type.Optional(Type.Integer({ minimum: 1 })),
    diskMiB: Type.Optional(Type.Integer({ minimum: 0 })),
    egressMbps: Type.Optional(Type.Number({ minimum: 0 })),
    ingressMbps: Type.Optional(Type.Number({ minimum: 0 })),
  },
  { additionalProperties: false },
);

/** `$VMESH_HOME/config.json`: every field optional; command-line flags override it. */
export const ConfigFile = Type.Object(
  {
    api: Type.Optional(
      Type.Object(
        { host: Type.Optional(Type.String()), port: Type.Optional(Type.Integer({ minimum: 0, maximum: 65535 })) },
        { additionalProperties: false },
      ),
    ),
    capacity: Type.Optional(CapacityOverrides),
    executor: Type.Optional(
      Type.Object(
        {
          maxConcurrent: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })),
          queueLimit: Type.Optional(Type.Integer({ minimum: 0, maximum: 10_000_000 })),
          queueTimeoutMs: Type.Optional(Type.Integer({ minimum: 1 })),
        },
        { additionalProperties: false },
      ),
    ),
    limits: Type.Optional(
      Type.Object(
        {
          outputBytes: Type.Optional(Type.Integer({ minimum: 1, maximum: 256 * 2 ** 20, description: 'bytes kept of each of stdout and stderr' })),
          inlineOutputBytes: Type.Optional(
            Type.Integer({ minimum: 0, maximum: 64 * 2 ** 20, description: 'output files returned inline in the result, in total' }),
          ),
          outputsArchiveBytes: Type.Optional(
            Type.Integer({ minimum: 1024, maximum: 4 * 2 ** 30, description: 'cap on the tar of a run\'s declared outputs' }),
          ),
          requestBytes: Type.Optional(Type.Integer({ minimum: 1024, maximum: 1024 * 2 ** 20 })),
        },
        { additionalProperties: false },
      ),
    ),
    workers: Type.Optional(Type.Integer({ minimum: 1, maximum: 256, description: 'worker threads per function driver' })),
    workerIdleMs: Type.Optional(Type.Integer({ minimum: 1, description: 'an idle worker thread ends after this long' })),
    fileRoots: Type.Optional(Type.Array(Type.String({ minLength: 1 }))),
    network: Type.Optional(
      Type.Object(
        { range: Type.Optional(Type.String({ pattern: '^(\\d{1,3}\\.){3}\\d{1,3}/\\d{1,2}$', description: 'IPv4 range sandbox links are cut from' })) },
        { additionalProperties: false },
      ),
    ),
    logLevel: Type.Optional(
      Type.Union([
        Type.Literal('fatal'),
        Type.Literal('error'),
        Type.Literal('warn'),
        Type.Literal('info'),
        Type.Literal('debug'),
        Type.Literal('trace'),
        Type.Literal('silent'),
      ]),
    ),
  },
  { additionalProperties: false },
);
export type ConfigFile = Static<typeof ConfigFile>;
export { DEFAULT_PORT, defaultHome } from './home.ts';

export interface NodeConfig {
  home: string;
  api: { host: string; port: number };
  capacity: Static<typeof CapacityOverrides>;
  executor: { maxConcurrent: number; queueLimit: number; queueTimeoutMs: number };
  limits: { outputBytes: number; inlineOutputBytes: number; outputsArchiveBytes: number; requestBytes: number };
  workers: number;
  workerIdleMs: number;
  fileRoots: string[];
  network: { range: string };
  logLevel: string;
}

/** Resources a run gets for each field it leaves out. Functions are small by default. */
export function defaultResources(kind: WorkloadKind): ResolvedResources {
  return kind === 'function'
    ? { vcpus: 0.1, memoryMiB: 64, diskMiB: 16, timeoutMs: 30_000, network: { egressMbps: 0, ingressMbps: 0 } }
    : { vcpus: 1, memoryMiB: 256, diskMiB: 1024, timeoutMs: 300_000, network: { egressMbps: 0, ingressMbps: 0 } };
}

const parseConfigFile = validator(ConfigFile, 'config');

/** Reads `$home/config.json` (if any) and applies `overrides` on top. */
export function loadConfig(home: string = defaultHome(), overrides: ConfigFile = {}): NodeConfig {
  const file = path.join(home, 'config.json');
  let fromFile: ConfigFile = {};
  if (existsSync(file)) {
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      throw new InvalidInputError(`${file} is not valid JSON: ${(err as Error).message}`, { field: 'config' });
    }
    fromFile = parseConfigFile(raw);
  }
  parseConfigFile(overrides);
  const pick = <K extends keyof ConfigFile>(k: K): ConfigFile[K] => overrides[k] ?? fromFile[k];
  return {
    home,
    api: { host: '127.0.0.1', port: DEFAULT_PORT, ...fromFile.api, ...overrides.api },
    capacity: { ...fromFile.capacity, ...overrides.capacity },
    executor: { maxConcurrent: 256, queueLimit: 10_000, queueTimeoutMs: 60_000, ...fromFile.executor, ...overrides.executor },
    limits: { outputBytes: 1 * 2 ** 20, inlineOutputBytes: 1 * 2 ** 20, outputsArchiveBytes: 256 * 2 ** 20, requestBytes: 48 * 2 ** 20, ...fromFile.limits, ...overrides.limits },
    workers: pick('workers') ?? Math.max(2, os.availableParallelism()),
    workerIdleMs: pick('workerIdleMs') ?? 30_000,
    fileRoots: (pick('fileRoots') ?? []).map((r) => path.resolve(home, r)),
    network: { range: DEFAULT_SANDBOX_RANGE, ...fromFile.network, ...overrides.network },
    logLevel: pick('logLevel') ?? 'info',
  };
}
