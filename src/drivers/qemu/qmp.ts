import net from 'node:net';
import { AbortedError } from '../../spec/index.ts';

/** QEMU refused a QMP command: its error class and description. */
export class QmpError extends Error {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    desc: string,
  ) {
    super(`qmp ${command}: ${errorClass}: ${desc}`);
    this.name = 'QmpError';
  }
}

const MAX_MESSAGE = 1024 * 1024;
/** The pending entry the greeting resolves (command ids are numbers). */
const GREETING = 'greeting';

interface Pending {
  command: string;
  resolve(value: unknown): void;
  reject(err: Error): void;
}

/**
 * A client of QEMU's machine protocol (QMP) on its Unix socket: one JSON object per line each way. After
 * the greeting and `qmp_capabilities`, commands carry an `id` that QEMU echoes in its answer; events
 * (lines with `event`) arrive in between and are ignored.
 */
export class QmpClient {
  private buffer = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private closed: Error | undefined;

  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => this.fail(new Error('qmp: QEMU closed its socket')));
  }

  /** Connects (retrying while QEMU has not yet made the socket) and negotiates capabilities. */
  static async connect(socketPath: string, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<QmpClient> {
    const deadline = Date.now() + (options.timeoutMs ?? 10_000);
    for (;;) {
      if (options.signal?.aborted) throw new AbortedError('qmp connect was aborted');
      try {
        const socket = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.createConnection(socketPath, () => resolve(s));
          s.once('error', reject);
        });
        const client = new QmpClient(socket);
        await client.greeting();
        await client.execute('qmp_capabilities');
        return client;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`qmp: could not connect to ${socketPath}: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, 25));
      }
    }
  }

  /** QEMU's first line, `{"QMP": …}`, answers this. */
  private greeting(): Promise<unknown> {
    return new Promise((resolve, reject) => this.pending.set(GREETING, { command: 'greeting', resolve, reject }));
  }

  /** Runs one command and resolves with its `return` value; rejects with QmpError when QEMU refuses it. */
  execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    if (this.closed !== undefined) return Promise.reject(this.closed);
    const id = String(this.nextId++);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { command, resolve, reject });
      this.socket.write(`${JSON.stringify({ execute: command, ...(args === undefined ? {} : { arguments: args }), id })}\n`);
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    if (this.buffer.length > MAX_MESSAGE) return this.fail(new Error('qmp: a message over 1 MiB'));
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line === '') continue;
      let message: { QMP?: unknown; id?: string; return?: unknown; error?: { class: string; desc: string }; event?: string };
      try {
        message = JSON.parse(line);
      } catch {
        return this.fail(new Error(`qmp: not JSON: ${line.slice(0, 200)}`));
      }
      const id = message.QMP !== undefined ? GREETING : message.id;
      if (id === undefined) continue; // an event
      const pending = this.pending.get(id);
      if (pending === undefined) continue;
      this.pending.delete(id);
      if (message.error !== undefined) pending.reject(new QmpError(pending.command, message.error.class, message.error.desc));
      else pending.resolve(message.QMP ?? message.return);
    }
  }

  private fail(err: Error): void {
    if (this.closed !== undefined) return;
    this.closed = err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    this.socket.destroy();
  }
}

/** The QMP socket's name in a VM's sandbox directory. */
export const QMP_SOCKET = 'qmp.sock';

/** A VM's QMP connection, made on first use and kept on `holder` (dropped when it fails, so the next use connects again). */
export function qmpOf(holder: { qmp?: Promise<QmpClient> }, socketPath: string, signal?: AbortSignal): Promise<QmpClient> {
  holder.qmp ??= QmpClient.connect(socketPath, signal === undefined ? {} : { signal });
  holder.qmp.catch(() => (holder.qmp = undefined));
  return holder.qmp;
}

/** Closes a VM's QMP connection, if it has one. */
export function closeQmp(holder: { qmp?: Promise<QmpClient> }): void {
  void holder.qmp?.then((q) => q.close()).catch(() => {});
}
