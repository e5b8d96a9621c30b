import { rmSync, writeFileSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { pino, type Logger } from 'pino';
import { loadOrCreateToken } from '../api/auth.ts';
import { buildApi } from '../api/server.ts';
import type { NodeConfig } from '../node/config.ts';
import { VmeshNode } from '../node/node.ts';
import { Mesh } from '../mesh/mesh.ts';
import { daemonInfoPath, readDaemonInfo, type DaemonInfo } from './info.ts';

export interface Daemon {
  node: VmeshNode;
  /** The node's place in the mesh; absent when `mesh.enabled` is false. */
  mesh: Mesh | undefined;
  api: FastifyInstance;
  url: string;
  token: string;
  close(): Promise<void>;
}

/** Starts a node, its place in the mesh and its HTTP API; `close` stops all three and removes node.json. */
export async function startDaemon(config: NodeConfig, logger: Logger = pino({ level: config.logLevel })): Promise<Daemon> {
  const node = await VmeshNode.start({ config, logger });
  const token = loadOrCreateToken(config.home);
  let api: FastifyInstance;
  let url: string;
  let mesh: Mesh | undefined;
  try {
    if (config.mesh.enabled) {
      mesh = await Mesh.start({
        identity: node.identity,
        config: config.mesh,
        logger,
        describe: () => node.describe(),
        blobs: node.blobs,
        maxBlobBytes: config.limits.blobBytes,
        onBlobFetched: (via) => node.metrics.blobFetches.inc({ via }),
      });
      const m = mesh;
      await mesh.serve(node);
      node.events.on('state', () => m.nudge());
      logger.info({ nodeId: node.id, addresses: mesh.addresses() }, 'mesh listening');
    }
    api = await buildApi({ node, mesh, token, logger });
    await api.listen({ host: config.api.host, port: config.api.port });
    const addr = api.server.address();
    const port = typeof addr === 'object' && addr !== null ? addr.port : config.api.port;
    const host = config.api.host.includes(':') ? `[${config.api.host}]` : config.api.host;
    url = `http://${host}:${port}`;
  } catch (err) {
    await mesh?.stop();
    await node.stop();
    throw err;
  }
  const info: DaemonInfo = { pid: process.pid, url, nodeId: node.id, startedAt: node.startedAt, mesh: mesh?.addresses() ?? [] };
  writeFileSync(daemonInfoPath(config.home), `${JSON.stringify(info, null, 2)}\n`, { mode: 0o600 });
  logger.info({ url, nodeId: node.id }, 'API listening');
  let closing: Promise<void> | undefined;
  return {
    node,
    mesh,
    api,
    url,
    token,
    close: () =>
      (closing ??= (async () => {
        await node.drain(); // waiting requests and log streams see their runs end
        await api.close();
        await mesh?.stop();
        await node.stop();
        const current = readDaemonInfo(config.home);
        if (current?.pid === process.pid) rmSync(daemonInfoPath(config.home), { force: true });
      })()),
  };
}
