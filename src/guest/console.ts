import type { StreamName } from '../drivers/driver.ts';

/** What the agent reported over the console (see AGENT_SCRIPT for the frames). */
export type AgentEvent =
  | { type: 'ready' }
  | { type: 'output'; stream: StreamName; data: Buffer }
  | { type: 'outputs' }
  | { type: 'exit'; code: number }
  | { type: 'oom'; kills: number }
  | { type: 'log'; text: string };

const MARK = '@vmesh:';
/** A console line longer than this is not a frame the agent wrote (its chunks are 4 KiB of base64): dropped. */
const MAX_LINE = 16 * 1024;

/**
 * Splits the guest console into agent frames and everything else. Program output only arrives base64-
 * encoded inside frames, so it cannot forge one; the kernel's own lines are kept (capped) as the console
 * log, which explains a guest that died before it reported.
 */
export class ConsoleParser {
  private pending = '';
  private dropping = false;
  private readonly noise: string[] = [];
  private noiseBytes = 0;

  constructor(
    private readonly onEvent: (e: AgentEvent) => void,
    private readonly noiseCapBytes = 16 * 1024,
  ) {}

  feed(chunk: Buffer): void {
    this.pending += chunk.toString('latin1');
    let nl: number;
    while ((nl = this.pending.indexOf('\n')) >= 0) {
      const line = this.pending.slice(0, nl).replace(/\r$/, '');
      this.pending = this.pending.slice(nl + 1);
      if (this.dropping) this.dropping = false;
      else this.line(line);
    }
    if (this.pending.length > MAX_LINE) {
      this.pending = '';
      this.dropping = true; // the rest of this overlong line is dropped too
    }
  }

  /** The last console lines that were not frames (the kernel's messages, a panic). */
  tail(): string {
    return this.noise.join('\n');
  }

  private line(line: string): void {
    const at = line.indexOf(MARK);
    if (at < 0) return this.keepNoise(line);
    const frame = line.slice(at + MARK.length);
    const colon = frame.indexOf(':');
    const kind = colon < 0 ? frame : frame.slice(0, colon);
    const payload = colon < 0 ? '' : frame.slice(colon + 1);
    if (kind === 'o' || kind === 'e') {
      this.onEvent({ type: 'output', stream: kind === 'o' ? 'stdout' : 'stderr', data: Buffer.from(payload, 'base64') });
    } else if (kind === 'exit' && /^\d{1,3}$/.test(payload)) {
      this.onEvent({ type: 'exit', code: Number(payload) });
    } else if (kind === 'oom' && /^\d{1,9}$/.test(payload)) {
      this.onEvent({ type: 'oom', kills: Number(payload) });
    } else if (kind === 'ready' || kind === 'outputs') {
      this.onEvent({ type: kind });
    } else if (kind === 'log') {
      this.onEvent({ type: 'log', text: Buffer.from(payload, 'latin1').toString('utf8') });
    } else {
      this.keepNoise(line);
    }
  }

  private keepNoise(line: string): void {
    if (line.trim() === '') return;
    this.noise.push(line);
    this.noiseBytes += line.length + 1;
    while (this.noiseBytes > this.noiseCapBytes && this.noise.length > 1) this.noiseBytes -= this.noise.shift()!.length + 1;
  }
}
