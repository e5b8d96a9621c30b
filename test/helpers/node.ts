import { pino } from 'pino';
import { loadConfig, type ConfigFile } from '../../src/node/config.ts';
import { VmeshNode } from '../../src/node/node.ts';
import { tempDir } from './tmp.ts';

/** A real node on a temporary home (its own SQLite file), quiet logs, small worker pools. */
export async function startTestNode(overrides: ConfigFile = {}, home?: string): Promise<{ node: VmeshNode; home: string; remove: () => Promise<void> }> {
  const tmp = home === undefined ? tempDir('vmesh-node-') : { dir: home, remove: () => {} };
  const config = loadConfig(tmp.dir, { logLevel: 'silent', workers: 2, ...overrides });
  const node = await VmeshNode.start({ config, logger: pino({ level: 'silent' }) });
  return {
    node,
    home: tmp.dir,
    remove: async () => {
      await node.stop();
      tmp.remove();
    },
  };
}
