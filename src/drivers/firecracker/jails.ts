import { promises as fs } from 'node:fs';
import path from 'node:path';
import { findCommand, run } from '../../util/exec.ts';
import type { VmmSandbox } from '../vmm/api-vmm-driver.ts';
import {
  chrootDir,
  DEFAULT_JAIL_IDS,
  jailedSocket,
  JAILED_API_SOCKET,
  jailerArgs,
  jailerVersion,
  JailIds,
  jailOwnerProblem,
  stageJail,
  takeFromJail,
  untrustedDirectory,
  type JailerOptions,
  type JailFile,
  type JailOwner,
} from './jailer.ts';
import { firecrackerId } from './requests.ts';

/** The chroot base inside a sandbox directory, and where a snapshot's files wait on their way out. */
const BASE = 'jail';
const STAGING = 'from-jail';

/**
 * The jails of one Firecracker driver (`drivers.firecracker.jailer`): what the probe checks, each
 * sandbox's chroot and user, the jailer's command line, and the files that cross the jail's wall. The
 * jail's user owns the chroot's `/` (the jailer gives it), so nothing vmesh reads back from inside is
 * trusted by its name alone.
 */
export class Jails {
  private execFile: string | undefined;
  private readonly ids: JailIds;
  /** Each staged sandbox's user, by sandbox directory. */
  private readonly owners = new Map<string, JailOwner>();

  constructor(
    private readonly j: JailerOptions,
    private readonly firecracker: string,
    private readonly sandboxRoot: string,
  ) {
    this.ids = new JailIds(j);
  }

  get binary(): string {
    return this.j.binary ?? 'jailer';
  }

  /** What `vmesh drivers` shows. */
  describe(): string {
    const last = (this.j.ids ?? DEFAULT_JAIL_IDS) - 1;
    return `uid ${this.j.uid}–${this.j.uid + last}, gid ${this.j.gid}–${this.j.gid + last}`;
  }

  /** Why the jails cannot be used here (not root, another release's jailer, ...), or undefined. */
  async problem(firecrackerVersion: string): Promise<string | undefined> {
    const owner = jailOwnerProblem(this.j);
    if (owner !== undefined) return owner;
    if (process.getuid?.() !== 0) return 'the jailer (drivers.firecracker.jailer) must be started as root: run the node as root, or leave the jailer out';
    let printed: string;
    try {
      printed = (await run(this.binary, ['--version'], { timeoutMs: 10_000 })).stdout;
    } catch {
      return `the jailer ${this.binary} was not found (it ships in Firecracker's release archive beside firecracker)`;
    }
    const version = jailerVersion(printed);
    if (version !== firecrackerVersion) {
      return `the jailer ${this.binary} is ${version === undefined ? 'not Firecracker\'s jailer' : `v${version}`}, not v${firecrackerVersion} like firecracker: use the two binaries of one release`;
    }
    try {
      await this.firecrackerPath();
    } catch (err) {
      return (err as Error).message;
    }
    return untrustedDirectory(this.sandboxRoot);
  }

  /** The firecracker binary as the jailer names it: absolute, its links resolved (the chroot is named after it). */
  async firecrackerPath(): Promise<string> {
    if (this.execFile === undefined) {
      const found = await findCommand(this.firecracker);
      if (found === undefined) throw new Error(`the firecracker binary ${this.firecracker} could not be found for the jailer`);
      this.execFile = await fs.realpath(found);
    }
    return this.execFile;
  }

  /** The sandbox's user, taken for it on first ask (its tap is made before its files). */
  owner(p: VmmSandbox): JailOwner {
    let owner = this.owners.get(p.dir);
    if (owner === undefined) {
      owner = this.ids.take();
      this.owners.set(p.dir, owner);
    }
    return owner;
  }

  /** Gives the sandbox's user back, once nothing of its jail is left. */
  release(p: VmmSandbox): void {
    const owner = this.owners.get(p.dir);
    if (owner === undefined) return;
    this.owners.delete(p.dir);
    this.ids.give(owner);
  }

  chroot(p: VmmSandbox): string {
    if (this.execFile === undefined) throw new Error('firecracker: the jail was not staged');
    return chrootDir(path.join(p.dir, BASE), this.execFile, firecrackerId(p.request.runId));
  }

  /**
   * The chroot, made before the jailer runs (it leaves an existing one as it is), with `files` in it, and
   * `socketLink` in the sandbox directory pointing at the API socket (a Unix socket's path is limited to
   * 107 bytes, which the chroot's path can pass).
   */
  async stage(p: VmmSandbox, files: readonly JailFile[], socketLink: string): Promise<void> {
    const untrusted = await untrustedDirectory(this.sandboxRoot);
    if (untrusted !== undefined) throw new Error(`firecracker: ${untrusted}`);
    await this.firecrackerPath();
    const chroot = this.chroot(p);
    await fs.mkdir(path.join(p.dir, BASE), { mode: 0o700 });
    await stageJail(chroot, this.owner(p), files);
    await fs.symlink(path.relative(p.dir, jailedSocket(chroot)), socketLink);
  }

  /** The jailer's command line, Firecracker's API socket at /run/firecracker.socket inside the chroot. */
  command(p: VmmSandbox): { command: string; args: string[]; joinsNetwork: true } {
    if (this.execFile === undefined) throw new Error('firecracker: the jail was not staged');
    const owner = this.owner(p);
    const args = jailerArgs({
      id: firecrackerId(p.request.runId),
      execFile: this.execFile,
      ...owner,
      chrootBase: path.join(p.dir, BASE),
      ...(p.network === undefined ? {} : { netns: p.network.netnsPath }),
      firecrackerArgs: ['--api-sock', JAILED_API_SOCKET],
    });
    return { command: this.binary, args, joinsNetwork: true };
  }

  /**
   * Before vmesh talks to a VM that has run guest code: the socket is still a socket of the jail's user
   * in a real /run, not a link that a Firecracker which escaped its guest put there to send vmesh's
   * requests elsewhere. (Checked by name: a swap between this check and the connection is not excluded.)
   */
  async checkSocket(p: VmmSandbox): Promise<void> {
    const chroot = this.chroot(p);
    const runDir = await fs.lstat(path.join(chroot, 'run')).catch(() => undefined);
    const socket = await fs.lstat(jailedSocket(chroot)).catch(() => undefined);
    if (runDir?.isDirectory() !== true || socket?.isSocket() !== true || socket.uid !== this.owner(p).uid) {
      throw new Error('firecracker: the jail\'s API socket is not the one its Firecracker made (replaced by a link?); the VM is not spoken to');
    }
  }

  /** Takes the files `names` that the jailed Firecracker wrote at its chroot's top out into `dir`, each checked (takeFromJail). */
  async takeSnapshot(p: VmmSandbox, names: readonly string[], dir: string): Promise<void> {
    const staging = path.join(p.dir, STAGING);
    await fs.mkdir(staging, { mode: 0o700 });
    try {
      for (const name of names) await takeFromJail(this.chroot(p), name, staging, path.join(dir, name), this.owner(p));
    } finally {
      await fs.rm(staging, { recursive: true, force: true });
    }
  }

  /**
   * What ties a leftover process to the sandbox directory `dirName` (`firecracker-<run>-XXXXXX`): the jailer
   * execs Firecracker with `--id <id>` as two arguments (env.rs; docs/jailer.md writes `--id=<id>`), and
   * its command line names no directory.
   */
  leftoverMarks(dirName: string, driver: string): string[] {
    const runId = dirName.slice(`${driver}-`.length, -'-XXXXXX'.length);
    return runId === '' ? [] : [`--id\0${firecrackerId(runId)}`];
  }

  /** The jailed process's name: the binary's own file name, links resolved. */
  async leftoverBinary(): Promise<string> {
    return path.basename(await this.firecrackerPath().catch(() => this.firecracker));
  }
}
