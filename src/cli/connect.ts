import { readFileSync } from 'node:fs';
import { tokenPath } from '../api/auth.ts';
import { readDaemonInfo } from '../daemon/info.ts';
import { DEFAULT_PORT, defaultHome } from '../node/home.ts';
import type { Command } from 'commander';
import type { VmeshClient } from '../sdk/client.ts';

export interface GlobalOptions {
  home?: string;
  api?: string;
  token?: string;
  json?: boolean;
}

/** A client for the node this CLI talks to: --api/VMESH_API, else the one running in $VMESH_HOME. */
/**
 * A client for the node this CLI talks to. The HTTP client is loaded here, on first use, so that
 * `vmesh up` (which never talks to a node through it) keeps it out of the node's memory.
 */
export async function connect(opts: GlobalOptions): Promise<VmeshClient> {
  const { VmeshClient } = await import('../sdk/client.ts');
  const home = opts.home ?? defaultHome();
  const url = opts.api ?? process.env.VMESH_API ?? readDaemonInfo(home)?.url ?? `http://127.0.0.1:${DEFAULT_PORT}`;
  let token = opts.token ?? process.env.VMESH_TOKEN;
  if (token === undefined) {
    try {
      token = readFileSync(tokenPath(home), 'utf8').trim();
    } catch {
      token = ''; // the API will answer 401, which says where the token lives
    }
  }
  return new VmeshClient({ url, token });
}

/** Runs a command's body with a client for the node and the command's global options; closes the client after. */
export async function withClient<T>(cmd: Command, body: (client: VmeshClient, global: GlobalOptions) => Promise<T>): Promise<T> {
  const global = cmd.optsWithGlobals<GlobalOptions>();
  const client = await connect(global);
  try {
    return await body(client, global);
  } finally {
    await client.close();
  }
}
