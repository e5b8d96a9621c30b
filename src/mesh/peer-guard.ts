import type { ConnectionGater, PeerId } from '@libp2p/interface';
import type { Logger } from 'pino';

export interface Offence {
  peer: string;
  reason: string;
  at: string;
}

export interface PeerGuardOptions {
  /** How long a peer that broke the protocol stays shut out. */
  banMs: number;
  now?: () => number;
}

/**
 * Remembers peers that broke the protocol (oversized or malformed frames, badly signed adverts) and
 * keeps them out: their connections are closed at once and refused, both ways, until the ban ends.
 * Honest peers never trip it, so one offence is enough.
 */
export class PeerGuard {
  private readonly banned = new Map<string, { until: number; offence: Offence }>();
  private hangUp: (peer: string) => void = () => {};

  constructor(
    private readonly o: PeerGuardOptions,
    private readonly logger: Logger,
  ) {}

  /** Called once the host exists, to close a banned peer's connections. */
  onBan(hangUp: (peer: string) => void): void {
    this.hangUp = hangUp;
  }

  offence(peer: string, reason: string): void {
    const now = (this.o.now ?? Date.now)();
    const offence = { peer, reason, at: new Date(now).toISOString() };
    this.banned.set(peer, { until: now + this.o.banMs, offence });
    this.logger.warn({ peer, reason, banMs: this.o.banMs }, 'peer broke the mesh protocol: disconnected and refused');
    this.hangUp(peer);
  }

  isBanned(peer: string): boolean {
    const ban = this.banned.get(peer);
    if (ban === undefined) return false;
    if (ban.until > (this.o.now ?? Date.now)()) return true;
    this.banned.delete(peer);
    return false;
  }

  /** Peers shut out now, with what each did. */
  list(): Offence[] {
    return [...this.banned.keys()].filter((p) => this.isBanned(p)).map((p) => this.banned.get(p)!.offence);
  }

  gater(): ConnectionGater {
    const deny = (peer: PeerId) => this.isBanned(peer.toString());
    return {
      denyDialPeer: deny,
      denyInboundEncryptedConnection: deny,
      denyOutboundEncryptedConnection: deny,
    };
  }
}
