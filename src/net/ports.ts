import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';

/**
 * Host ports for published sandbox ports: the next one in the range that this node has not handed out
 * and that nothing on the host is bound to right now.
 */
export class PortAllocator {
  private readonly taken = new Set<number>();
  private next: number;

  constructor(
    readonly from: number,
    readonly to: number,
  ) {
    if (!(Number.isInteger(from) && Number.isInteger(to) && from >= 1024 && to <= 65_535 && from <= to)) {
      throw new Error(`host port range ${from}-${to} must lie within 1024-65535`);
    }
    this.next = from;
  }

  async take(protocol: 'tcp' | 'udp'): Promise<number> {
    for (let tried = 0; tried <= this.to - this.from; tried++) {
      const port = this.next;
      this.next = port === this.to ? this.from : port + 1;
      if (this.taken.has(port)) continue;
      this.taken.add(port); // claimed before the await, so concurrent takes never get the same port
      if (await isFree(port, protocol)) return port;
      this.taken.delete(port);
    }
    throw new Error(`no free host port in ${this.from}-${this.to}`);
  }

  give(port: number): void {
    this.taken.delete(port);
  }
}

function isFree(port: number, protocol: 'tcp' | 'udp'): Promise<boolean> {
  return new Promise((resolve) => {
    if (protocol === 'udp') {
      const socket = createSocket('udp4');
      socket.once('error', () => resolve(false));
      socket.bind(port, () => socket.close(() => resolve(true)));
      return;
    }
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, () => server.close(() => resolve(true)));
  });
}
