import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream } from 'node:fs';
import { isIPv6, type AddressInfo, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tls from 'node:tls';
import type { Logger } from 'pino';
import Type, { type Static } from 'typebox';

/**
 * The blob lane: blob bytes on a TCP port of their own, beside the mesh connection, for a throughput
 * that noise and yamux in JavaScript do not reach (every 64 KiB crosses several async iterators there).
 *
 * TLS 1.2 with a pre-shared key: the key is random, good for one transfer, and reaches the fetching
 * node inside the mesh's own connection, which noise already authenticated. So each end knows the other
 * without a certificate, and the bytes are encrypted on the wire (AES-GCM, in OpenSSL). Whether they are
 * the blob asked for is checked by its hash as they arrive, as over the mesh connection.
 */
const TLS = { ciphers: 'PSK-AES128-GCM-SHA256', minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' } as const;
/** An offer not taken up within this long is withdrawn. */
const OFFER_TTL_MS = 15_000;
/** Offers open at once; a node asked for more sends over the mesh connection. */
const MAX_OFFERS = 64;
/** Offers open at once for one peer, so that one peer cannot take every offer. */
const MAX_OFFERS_PER_PEER = 8;
const HANDSHAKE_TIMEOUT_MS = 5_000;
/** A transfer that moves no byte for this long is ended. */
const IDLE_TIMEOUT_MS = 30_000;
const READ_CHUNK = 1 << 20;

/** What a node that offers a blob over its lane hands the fetching node, inside the mesh connection. */
export const LaneTicket = Type.Object(
  {
    port: Type.Integer({ minimum: 1, maximum: 65_535 }),
    id: Type.String({ pattern: '^[0-9a-f]{32}$' }),
    key: Type.String({ pattern: '^[0-9a-f]{64}$' }),
  },
  { additionalProperties: false },
);
export type LaneTicket = Static<typeof LaneTicket>;

interface Offer {
  file: string;
  size: number;
  key: Buffer;
  release: () => void;
  timer: NodeJS.Timeout;
  peer: string;
}

/** The sending end: TLS servers on the addresses the mesh listens on, each transfer one offer. */
export class BlobLane {
  private readonly offers = new Map<string, Offer>();
  private readonly sockets = new Set<Socket>();
  /** Which offer each connection showed the key of. */
  private readonly shown = new WeakMap<tls.TLSSocket, string>();
  private readonly servers = new Map<string, tls.Server>();

  private constructor(private readonly logger: Logger) {}

  /**
   * Listens on `port` of each address in `ips`, the IP addresses the mesh listens on; with port 0, on the
   * port the system gives the first, so that one port holds whichever address a peer reached.
   */
  static async open(ips: string[], port: number, logger: Logger): Promise<BlobLane> {
    const lane = new BlobLane(logger);
    try {
      for (const ip of ips) {
        lane.servers.set(ip, await lane.listen(ip, port));
        port = lane.port!;
      }
    } catch (err) {
      await lane.close();
      throw err;
    }
    return lane;
  }

  private async listen(ip: string, port: number): Promise<tls.Server> {
    const server = tls.createServer(
      {
        ...TLS,
        handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
        // An unknown identity or the wrong key fails the handshake: the connection never gets a byte.
        pskCallback: (socket, identity) => {
          const offer = this.offers.get(identity);
          if (offer === undefined) return null;
          this.shown.set(socket, identity);
          return offer.key;
        },
      },
      (socket) => this.send(socket),
    );
    server.maxConnections = MAX_OFFERS;
    server.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
    server.on('tlsClientError', (err) => this.logger.debug({ err }, 'blob lane: a connection failed its handshake'));
    // A wildcard IPv6 address takes IPv4 too unless told not to, and then clashes with 0.0.0.0 on the same port.
    server.listen({ port, host: ip, ipv6Only: isIPv6(ip) });
    await once(server, 'listening');
    // After listening, an error (a failed accept) is logged rather than left to end the process.
    server.on('error', (err) => this.logger.warn({ err, ip }, 'blob lane: the listener failed'));
    return server;
  }

  /** The lane's port, the same on every address; undefined once closed. */
  get port(): number | undefined {
    const server = this.servers.values().next().value;
    return server === undefined ? undefined : (server.address() as AddressInfo).port;
  }

  /**
   * Offers the first `size` bytes of `file` to whoever shows the ticket, once, within OFFER_TTL_MS;
   * `release` runs when the transfer is over or the offer withdrawn. Undefined (and `release` run) when
   * the lane is closed or too many offers are open, in all or for `peer` (the node the ticket goes to).
   */
  offer(file: string, size: number, release: () => void, peer = ''): LaneTicket | undefined {
    const port = this.port;
    const forPeer = [...this.offers.values()].filter((o) => o.peer === peer).length;
    if (port === undefined || this.offers.size >= MAX_OFFERS || forPeer >= MAX_OFFERS_PER_PEER) {
      release();
      return undefined;
    }
    const id = randomBytes(16).toString('hex');
    const key = randomBytes(32);
    const timer = setTimeout(() => this.withdraw(id), OFFER_TTL_MS).unref();
    this.offers.set(id, { file, size, key, release, timer, peer });
    return { port, id, key: key.toString('hex') };
  }

  /** Withdraws an offer nobody took up; one under way goes on. */
  withdraw(id: string): void {
    this.take(id)?.release();
  }

  private take(id: string): Offer | undefined {
    const offer = this.offers.get(id);
    if (offer !== undefined) {
      this.offers.delete(id);
      clearTimeout(offer.timer);
    }
    return offer;
  }

  private send(socket: tls.TLSSocket): void {
    const id = this.shown.get(socket);
    // A second connection with the same key, after the first took the offer: one transfer per offer.
    const offer = id === undefined ? undefined : this.take(id);
    if (offer === undefined) return void socket.destroy();
    socket.setTimeout(IDLE_TIMEOUT_MS, () => socket.destroy(new Error(`no byte moved for ${IDLE_TIMEOUT_MS} ms`)));
    // Exactly the offered bytes (`end` is inclusive), even if the file grew meanwhile.
    const bytes = offer.size === 0 ? Readable.from([]) : createReadStream(offer.file, { highWaterMark: READ_CHUNK, end: offer.size - 1 });
    pipeline(bytes, socket)
      .catch((err: Error) => this.logger.debug({ err, file: offer.file }, 'blob lane: a transfer ended early'))
      .finally(offer.release);
  }

  /** Withdraws every offer, ends every transfer and stops listening. */
  async close(): Promise<void> {
    for (const id of [...this.offers.keys()]) this.withdraw(id);
    for (const socket of this.sockets) socket.destroy();
    await Promise.all([...this.servers.values()].map((s) => new Promise((resolve) => s.close(resolve))));
    this.servers.clear();
  }
}

/**
 * The listening addresses' IPs a lane goes on: every IPv4 or IPv6 address of a TCP multiaddr, once, and
 * none that a wildcard of its family (0.0.0.0, ::) already covers.
 */
export function laneAddresses(listen: Array<{ getComponents(): Array<{ name: string; value?: string }> }>): string[] {
  const ips = new Set<string>();
  for (const ma of listen) {
    const parts = ma.getComponents();
    const ip = parts.find((c) => c.name === 'ip4' || c.name === 'ip6')?.value;
    if (ip !== undefined && parts.some((c) => c.name === 'tcp')) ips.add(ip);
  }
  const covered = (ip: string) => (isIPv6(ip) ? ip !== '::' && ips.has('::') : ip !== '0.0.0.0' && ips.has('0.0.0.0'));
  return [...ips].filter((ip) => !covered(ip));
}

/**
 * The fetching end: a TLS connection to the lane on `host`, keyed by `ticket`; resolves once the
 * handshake proved that both ends hold the key, and rejects otherwise (within HANDSHAKE_TIMEOUT_MS).
 */
export async function openLane(host: string, ticket: LaneTicket, signal?: AbortSignal): Promise<tls.TLSSocket> {
  const psk = Buffer.from(ticket.key, 'hex');
  const socket = tls.connect({
    ...TLS,
    host,
    port: ticket.port,
    pskCallback: () => ({ identity: ticket.id, psk }),
    // The key is the server's identity: only the node that made the ticket holds it.
    checkServerIdentity: () => undefined,
  });
  try {
    await once(socket, 'secureConnect', { signal: AbortSignal.any([AbortSignal.timeout(HANDSHAKE_TIMEOUT_MS), ...(signal === undefined ? [] : [signal])]) });
  } catch (err) {
    socket.destroy();
    throw err;
  }
  socket.setTimeout(IDLE_TIMEOUT_MS, () => socket.destroy(new Error(`no byte came over the blob lane for ${IDLE_TIMEOUT_MS} ms`)));
  // Its reader comes a moment later and learns of an error from the socket's state; until then an
  // 'error' without a listener would end the process.
  socket.on('error', () => {});
  return socket;
}
