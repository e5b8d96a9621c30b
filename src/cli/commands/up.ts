import { spawn } from 'node:child_process';
import { mkdirSync, openSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { readDaemonInfo } from '../../daemon/info.ts';
import type { ConfigFile } from '../../node/config.ts';
import { defaultHome } from '../../node/home.ts';
import http from 'node:http';
import { tokenPath } from '../../api/auth.ts';
import { EXIT } from '../exit-codes.ts';
import { InvalidArgumentError } from 'commander';
import { collect, collectEnv, parseInteger, parseMiB, parseNumber } from '../parse.ts';
import type { GlobalOptions } from '../connect.ts';

const BIN = fileURLToPath(new URL('../../../bin/vmesh.js', import.meta.url));

interface UpOptions {
  host?: string;
  port?: number;
  detach?: boolean;
  logLevel?: string;
  workers?: number;
  vcpus?: number;
  memory?: number;
  listen?: string[];
  join?: string[];
  mdns?: boolean;
  mesh: boolean;
  label?: Record<string, string>;
  region?: string;
  location?: { latitude: number; longitude: number };
  readyTimeout: number;
}

/** `53.35,-6.26` → latitude and longitude. */
function parseLocation(text: string): { latitude: number; longitude: number } {
  const m = /^(-?\d+(?:\.\d+)?),(-?\d+(?:\.\d+)?)$/.exec(text.trim());
  const [latitude, longitude] = m === null ? [NaN, NaN] : [Number(m[1]), Number(m[2])];
  if (!(Math.abs(latitude) <= 90 && Math.abs(longitude) <= 180)) {
    throw new InvalidArgumentError(`expected LATITUDE,LONGITUDE in degrees such as 53.35,-6.26, got ${JSON.stringify(text)}`);
  }
  return { latitude, longitude };
}

function meshOverrides(opts: UpOptions): ConfigFile['mesh'] {
  const mesh: NonNullable<ConfigFile['mesh']> = {};
  if (!opts.mesh) mesh.enabled = false;
  if (opts.listen !== undefined) mesh.listen = opts.listen;
  if (opts.join !== undefined) mesh.join = opts.join;
  if (opts.mdns !== undefined) mesh.mdns = opts.mdns;
  if (opts.label !== undefined) mesh.labels = opts.label;
  if (opts.region !== undefined || opts.location !== undefined) {
    mesh.location = { ...(opts.region === undefined ? {} : { region: opts.region }), ...opts.location };
  }
  return Object.keys(mesh).length === 0 ? undefined : mesh;
}

export function upCommand(program: Command): void {
  program
    .command('up')
    .description('start a single-node vmesh (store in $VMESH_HOME, API on 127.0.0.1)')
    .option('--host <host>', 'address the API listens on (default 127.0.0.1)')
    .option('--port <port>', 'API port (default 7420; 0 picks a free one)', parseInteger)
    .option('-d, --detach', 'run in the background and return once the node answers')
    .option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent')
    .option('--workers <n>', 'worker threads per function driver', parseInteger)
    .option('--vcpus <n>', 'vCPUs this node hands out (default: all cores)', parseNumber)
    .option('--memory <MiB>', 'memory this node hands out (default: all but 512 MiB)', parseMiB)
    .option('--listen <multiaddr>', 'mesh address to listen on, repeatable (default /ip4/127.0.0.1/tcp/7421; /ip4/0.0.0.0/tcp/7421 lets other machines join)', collect)
    .option('--join <multiaddr>', "a mesh node to join through, repeatable: its address ending in /p2p/<node id> (see `vmesh nodes`)", collect)
    .option('--mdns', 'find other nodes on the local network by multicast DNS')
    .option('--no-mesh', 'keep this node out of any mesh')
    .option('--label <key=value>', 'a label in this node\'s adverts, repeatable', collectEnv)
    .option('--region <name>', 'the region this node says it is in')
    .option('--location <lat,lon>', 'where this node says it is, in degrees', parseLocation)
    .option('--ready-timeout <ms>', 'with --detach: how long to wait for the node', parseInteger, 60_000)
    .action(async (opts: UpOptions, cmd: Command) => {
      const global = cmd.optsWithGlobals<GlobalOptions>();
      const home = path.resolve(global.home ?? defaultHome());
      mkdirSync(home, { recursive: true, mode: 0o700 });
      const running = await runningNode(home);
      if (running !== undefined) {
        report(global, { status: 'already running', ...running }, `vmesh node ${running.nodeId} is already running at ${running.url}`);
        return;
      }
      const overrides: ConfigFile = {};
      if (opts.host !== undefined || opts.port !== undefined) {
        overrides.api = {};
        if (opts.host !== undefined) overrides.api.host = opts.host;
        if (opts.port !== undefined) overrides.api.port = opts.port;
      }
      const mesh = meshOverrides(opts);
      if (mesh !== undefined) overrides.mesh = mesh;
      if (opts.logLevel !== undefined) overrides.logLevel = opts.logLevel as ConfigFile['logLevel'];
      if (opts.workers !== undefined) overrides.workers = opts.workers;
      if (opts.vcpus !== undefined || opts.memory !== undefined) {
        overrides.capacity = {};
        if (opts.vcpus !== undefined) overrides.capacity.vcpus = opts.vcpus;
        if (opts.memory !== undefined) overrides.capacity.memoryMiB = opts.memory;
      }
      const { loadConfig } = await import('../../node/config.ts');
      const config = loadConfig(home, overrides);
      if (opts.detach) {
        await detach(home, global, opts.readyTimeout);
        return;
      }
      const { startDaemon } = await import('../../daemon/daemon.ts'); // the heavy part: only for `up`
      const daemon = await startDaemon(config);
      process.stderr.write(`vmesh node ${daemon.node.id} listening on ${daemon.url} (token in ${tokenPath(home)})\n`);
      if (daemon.mesh !== undefined) process.stderr.write(`mesh: ${daemon.mesh.addresses().join(' ')}\n`);
      const shutdown = (signal: string) => {
        daemon.node.logger.info({ signal }, 'shutting down');
        daemon.close().then(
          () => process.exit(EXIT.ok),
          () => process.exit(1),
        );
      };
      process.once('SIGINT', shutdown);
      process.once('SIGTERM', shutdown);
    });
}

async function runningNode(home: string): Promise<{ nodeId: string; url: string; pid: number } | undefined> {
  const info = readDaemonInfo(home);
  if (info === undefined || !alive(info.pid)) return undefined;
  return (await healthy(info.url)) ? { nodeId: info.nodeId, url: info.url, pid: info.pid } : undefined;
}

/** Whether `GET /healthz` answers 200 within 2 s (plain node:http: `up` keeps the HTTP client out of the node). */
function healthy(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get(`${url}/healthz`, { timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Starts `vmesh up` again in the background with the same flags and waits until it answers. */
async function detach(home: string, global: GlobalOptions, readyTimeoutMs: number): Promise<void> {
  const logFile = path.join(home, 'node.log');
  const log = openSync(logFile, 'a', 0o600);
  const args = process.argv.slice(2).filter((a) => a !== '-d' && a !== '--detach');
  const child = spawn(process.execPath, [BIN, ...args], { detached: true, stdio: ['ignore', log, log], env: { ...process.env, VMESH_HOME: home } });
  child.unref();
  let exited: number | null = null;
  child.once('exit', (code) => (exited = code ?? 1));
  const deadline = Date.now() + readyTimeoutMs;
  while (Date.now() < deadline) {
    if (exited !== null) {
      const tail = readFileSync(logFile, 'utf8').trim().split('\n').slice(-10).join('\n');
      process.stderr.write(`vmesh: the node exited with code ${exited} while starting; the end of ${logFile}:\n${tail}\n`);
      process.exit(EXIT.runFailed);
    }
    const info = readDaemonInfo(home);
    if (info?.pid === child.pid) {
      const up = await runningNode(home);
      if (up !== undefined) {
        report(global, { status: 'started', ...up, log: logFile }, `vmesh node ${up.nodeId} started at ${up.url} (pid ${up.pid}, log ${logFile})`);
        return;
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  process.stderr.write(`vmesh: the node did not answer within ${readyTimeoutMs} ms; see ${logFile}\n`);
  process.exit(EXIT.unreachable);
}

function report(global: GlobalOptions, json: object, human: string): void {
  if (global.json) process.stdout.write(`${JSON.stringify(json)}\n`);
  else process.stdout.write(`${human}\n`);
}
