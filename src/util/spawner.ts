import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, constants, existsSync, open, openSync, promises as fs, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline';

/**
 * Starts programs for the node through a small long-lived shell, instead of from the node itself.
 *
 * Linux forks a process by copying its page tables, so a spawn costs in proportion to the parent's
 * memory, and Node.js forks on its main thread: `/bin/true` took 5.0 ms from a 50 MiB Node.js
 * process and 11 ms from a 150 MiB one (p50 of 100, 2026-12-02; see docs/development.md). A shell of a
 * few hundred KiB forks in a fraction of that, and the node only writes a line to it.
 *
 * The protocol, one line each way per program:
 * - the node writes `<id> <dir>`, where `dir` holds `spawn.sh` (the program as one `exec` line, every
 *   argument single-quoted) and, when the program gets input, `stdin`;
 * - the shell answers `ready <id>`: the program's output goes to the FIFOs `<id>.out` and `<id>.err` in
 *   the spawner's own directory, made while the previous program started (a mkfifo is a process
 *   start too), whose reading ends the node then opens;
 * - when the program ends, the shell answers `exit <id> <status>` (128 + n for a signal n, as sh says).
 * The program inherits nothing of the shell's but its environment.
 */
const SPAWNER = `
spool=$1 n=1
mkfifo "$spool/1.out" "$spool/1.err" || exit 1
while read -r id dir; do
  [ "$id" = "$n" ] || { echo "failed $id"; continue; }
  echo "ready $id"
  input=/dev/null
  [ ! -e "$dir/stdin" ] || input="$dir/stdin"
  { ( . "$dir/spawn.sh" ) <"$input" >"$spool/$n.out" 2>"$spool/$n.err"; echo "exit $id $?"; } &
  n=$((n + 1))
  mkfifo "$spool/$n.out" "$spool/$n.err" || exit 1
done
`;

/** One program started by the spawner. */
export interface SpawnedProgram {
  readonly stdout: net.Socket;
  readonly stderr: net.Socket;
  /** The exit status once the program ended and its output was read to the end; null when the spawner died first. */
  readonly exited: Promise<number | null>;
  /** True once `exited` has settled. */
  readonly ended: boolean;
}

interface Pending {
  /** The shell said `ready`: from then on, the program's own waiter reports its end. */
  started?: boolean;
  ready: (ok: boolean) => void;
  exit: (status: number | null) => void;
}

/** The spawner's shell went away (it is started again for the next program). */
export class SpawnerGoneError extends Error {
  override name = 'SpawnerGoneError';
}

/** Single-quotes `s` for sh: nothing in it is expanded. */
export function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** One run of the spawner's shell: its process, its FIFO directory, the programs it has still to report on. */
interface Shell {
  readonly child: ChildProcess;
  readonly spool: string;
  readonly pending: Map<string, Pending>;
  seq: number;
}

export class Spawner {
  private shell: Shell | undefined;
  private starting: Promise<Shell> | undefined;
  private generation = 0;

  /**
   * `spool`: a directory of the spawner's own for the FIFOs (each run of its shell a subdirectory);
   * `command`: a POSIX shell with mkfifo on its PATH (e.g. a static busybox's sh).
   */
  constructor(
    private readonly spool: string,
    private readonly command: readonly [string, ...string[]] = ['/bin/sh'],
  ) {}

  /** A shell for the spawner: a static busybox's where the host has one, which starts without a loader. */
  static defaultShell(busybox: string): [string, ...string[]] {
    return existsSync(busybox) ? [busybox, 'sh'] : ['/bin/sh'];
  }

  /**
   * Starts `argv` with its output on two streams and `stdin` (if any) as its input. `dir` must be a
   * directory of the caller's that nobody else writes (a sandbox's bundle): the program's script and
   * input go there.
   */
  async run(dir: string, argv: readonly string[], stdin?: Uint8Array): Promise<SpawnedProgram> {
    if (argv.length === 0) throw new Error('spawner: no program to run');
    if (/[\n\r]/.test(dir)) throw new Error(`spawner: ${JSON.stringify(dir)} has a line break in it`);
    // Written synchronously: a program's start is waited on, and an async write waited about 0.5 ms for
    // libuv's thread pool here, against tens of µs for the system call.
    writeFileSync(path.join(dir, 'spawn.sh'), `exec ${argv.map(shellQuote).join(' ')}\n`, { mode: 0o600 });
    if (stdin !== undefined) writeFileSync(path.join(dir, 'stdin'), stdin, { mode: 0o600 });
    // Not tried again on a new shell: a shell that died just after it said `ready` may have started it.
    const started = await this.handOver(dir);
    if (started === undefined) throw new SpawnerGoneError(`spawner: ${argv[0]} was not started: the spawner's shell died (the next program gets a new one)`);
    const { status, fifos, early } = started;
    const [stdout, stderr] = early ?? ((await Promise.all(fifos.map(openFifo))) as [net.Socket, net.Socket]);
    const drained = (s: net.Socket) => new Promise<void>((resolve) => (s.once('close', () => resolve()), s.once('error', () => resolve())));
    const program = { stdout, stderr, ended: false, exited: Promise.resolve<number | null>(null) };
    program.exited = Promise.all([status, drained(stdout), drained(stderr)]).then(async ([code]) => {
      await Promise.all(fifos.map((f) => fs.rm(f, { force: true })));
      program.ended = true;
      return code;
    });
    return program;
  }

  /**
   * Asks the shell to start the program in `dir`; undefined when the shell died before it did. The
   * program's FIFOs are opened before the shell hears of it where they are made already (the shell makes
   * the next pair as it starts a program): the program cannot start before its output has a reader, and
   * opening them after the shell's `ready` put a round trip to the shell and back in every start (1.5 ms
   * here). A FIFO's reader sees no end before a writer has come and gone, so opening early loses nothing.
   */
  private async handOver(dir: string): Promise<{ status: Promise<number | null>; fifos: string[]; early: [net.Socket, net.Socket] | undefined } | undefined> {
    const shell = await this.started();
    const id = String(++shell.seq);
    const fifos = [path.join(shell.spool, `${id}.out`), path.join(shell.spool, `${id}.err`)];
    const early = openFifosNow(fifos);
    let exit!: (status: number | null) => void;
    const status = new Promise<number | null>((resolve) => (exit = resolve));
    const ready = await new Promise<boolean>((resolve) => {
      shell.pending.set(id, { ready: resolve, exit });
      holdLoop(shell);
      shell.child.stdin!.write(`${id} ${dir}\n`);
    });
    if (!ready) for (const s of early ?? []) s.destroy();
    return ready ? { status, fifos, early } : undefined;
  }

  /** Stops the spawner's shell and removes its FIFOs; programs it started go on (their owners stop them). */
  async close(): Promise<void> {
    this.shell?.child.stdin?.end();
    this.shell = undefined;
    await fs.rm(this.spool, { recursive: true, force: true });
  }

  private started(): Promise<Shell> {
    const shell = this.shell;
    if (shell !== undefined && shell.child.exitCode === null && shell.child.signalCode === null) return Promise.resolve(shell);
    this.starting ??= this.start().finally(() => (this.starting = undefined));
    return this.starting;
  }

  private async start(): Promise<Shell> {
    if (this.generation === 0) await fs.rm(this.spool, { recursive: true, force: true }); // what a crashed process left
    const spool = path.join(this.spool, String(++this.generation));
    await fs.mkdir(spool, { recursive: true, mode: 0o700 });
    const [command, ...args] = this.command;
    const child = spawn(command, [...args, '-c', SPAWNER, 'vmesh-spawner', spool], { stdio: ['pipe', 'pipe', 'ignore'] });
    const shell: Shell = { child, spool, pending: new Map(), seq: 0 };
    this.shell = shell;
    child.stdin!.on('error', () => {});
    createInterface({ input: child.stdout! }).on('line', (line) => answer(shell, line));
    // 'close' comes once nothing holds the shell's output open: the shell and the waiters it forked, one
    // per program, each of which reports its program's end first. What is still pending then never will be.
    child.once('close', () => {
      for (const p of shell.pending.values()) {
        p.ready(false);
        p.exit(null);
      }
      shell.pending.clear();
      if (this.shell === shell) this.shell = undefined;
      void fs.rm(spool, { recursive: true, force: true });
    });
    // A program the shell had not started yet never will be.
    child.once('exit', () => {
      for (const [id, p] of shell.pending) {
        if (p.started) continue;
        shell.pending.delete(id);
        p.ready(false);
        p.exit(null);
      }
      holdLoop(shell);
    });
    // The shell alone keeps no process alive: only programs still to report do (holdLoop).
    child.unref();
    (child.stdin as net.Socket | null)?.unref();
    holdLoop(shell);
    return shell;
  }
}

/** Keeps the event loop alive while a program is still to report, and only then. */
function holdLoop(shell: Shell): void {
  const out = shell.child.stdout as net.Socket | null;
  if (shell.pending.size > 0) out?.ref();
  else out?.unref();
}

function answer(shell: Shell, line: string): void {
  const [what, id, status] = line.split(' ');
  const p = shell.pending.get(id ?? '');
  if (p === undefined) return;
  if (what === 'ready') {
    p.started = true;
    p.ready(true);
  }
  else if (what === 'failed') p.ready(false);
  else if (what === 'exit') {
    shell.pending.delete(id!);
    holdLoop(shell);
    p.exit(Number(status));
  }
}

/** Both reading ends at once, or undefined when the shell has not made them yet (another program is starting). */
function openFifosNow(files: string[]): [net.Socket, net.Socket] | undefined {
  const fds: number[] = [];
  try {
    for (const file of files) fds.push(openSync(file, constants.O_RDONLY | constants.O_NONBLOCK));
  } catch {
    for (const fd of fds) closeSync(fd);
    return undefined;
  }
  return fds.map((fd) => new net.Socket({ fd, readable: true, writable: false })) as [net.Socket, net.Socket];
}

/** The reading end of a FIFO as a stream (opened without waiting for its writer). */
function openFifo(file: string): Promise<net.Socket> {
  return new Promise((resolve, reject) =>
    open(file, constants.O_RDONLY | constants.O_NONBLOCK, (err, fd) => (err ? reject(err) : resolve(new net.Socket({ fd, readable: true, writable: false })))),
  );
}
