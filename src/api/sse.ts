import type { ServerResponse } from 'node:http';

/** A server-sent-events stream on a hijacked Fastify reply. */
export class SseStream {
  private closed = false;
  private readonly keepAlive: NodeJS.Timeout;

  constructor(private readonly res: ServerResponse, onClose: () => void) {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    res.flushHeaders();
    this.keepAlive = setInterval(() => this.comment('keep-alive'), 15_000);
    this.keepAlive.unref();
    res.on('close', () => {
      this.closed = true;
      clearInterval(this.keepAlive);
      onClose();
    });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  send(event: string, data: unknown, id?: number): void {
    if (this.closed) return;
    const lines = [`event: ${event}`];
    if (id !== undefined) lines.push(`id: ${id}`);
    lines.push(`data: ${JSON.stringify(data)}`, '', '');
    this.res.write(lines.join('\n'));
  }

  comment(text: string): void {
    if (!this.closed) this.res.write(`: ${text}\n\n`);
  }

  end(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.keepAlive);
    this.res.end();
  }
}
