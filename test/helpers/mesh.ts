import { pino } from 'pino';
import { startDaemon, type Daemon } from '../../src/daemon/daemon.ts';
import { loadConfig, type ConfigFile } from '../../src/node/config.ts';
import { tempDir } from './tmp.ts';

/** Mesh timings short enough for tests: adverts twice a second, peers gone after 3 s of silence. */
export const FAST_MESH = { advertIntervalMs: 500, peerTtlMs: 3000, pingIntervalMs: 300 } as const;

export interface TestDaemon {
  daemon: Daemon;
  home: string;
  /** Stops the daemon (its home stays, so that it can be started again). */
  stop(): Promise<void>;
  /** Stops it and removes its home. */
  remove(): Promise<void>;
}

/** A real daemon (node, mesh on loopback, API on a free port) on a temporary or given home. */
export async function startMeshDaemon(mesh: NonNullable<ConfigFile['mesh']> = {}, home?: string, overrides: ConfigFile = {}): Promise<TestDaemon> {
  const tmp = home === undefined ? tempDir('vmesh-mesh-') : { dir: home, remove: () => {} };
  const config = loadConfig(tmp.dir, {
    api: { port: 0 },
    logLevel: 'silent',
    workers: 2,
    ...overrides,
    mesh: { listen: ['/ip4/127.0.0.1/tcp/0'], ...FAST_MESH, ...mesh },
  });
  const daemon = await startDaemon(config, pino({ level: process.env.VMESH_TEST_LOG ?? 'silent' }));
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await daemon.close();
  };
  return { daemon, home: tmp.dir, stop, remove: async () => (await stop(), tmp.remove()) };
}

/** Polls `check` every 50 ms until it returns true or `ms` pass; returns the time it took. */
export async function until(check: () => boolean, ms: number, what: string): Promise<number> {
  const start = performance.now();
  while (!check()) {
    if (performance.now() - start > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return performance.now() - start;
}
