import { EventEmitter } from 'node:events';
import type { NodeAdvert } from '../spec/index.ts';

export interface Member {
  id: string;
  /** The newest signed advert this node has accepted from the member. */
  advert: NodeAdvert;
  /** Local clock (ms since the epoch) when the member was first seen and when its last advert came. */
  firstSeenAt: number;
  lastAdvertAt: number;
}

interface MembershipEvents {
  join: [Member];
  update: [Member];
  leave: [{ id: string; reason: string }];
}

/**
 * The mesh as this node sees it: the latest verified advert of every other node, dropped when its
 * adverts stop for `ttlMs`. Freshness is judged on this node's own clock, never on the sender's.
 */
export class Membership extends EventEmitter<MembershipEvents> {
  private readonly members = new Map<string, Member>();

  constructor(
    private readonly ttlMs: number,
    private readonly now: () => number = Date.now,
  ) {
    super();
  }

  /** Takes a verified advert; returns what it did with it. An advert older than the one held is ignored. */
  accept(advert: NodeAdvert): 'joined' | 'updated' | 'stale' {
    const at = this.now();
    const held = this.members.get(advert.node);
    if (held === undefined) {
      const member: Member = { id: advert.node, advert, firstSeenAt: at, lastAdvertAt: at };
      this.members.set(member.id, member);
      this.emit('join', member);
      return 'joined';
    }
    if (advert.seq <= held.advert.seq) return 'stale';
    held.advert = advert;
    held.lastAdvertAt = at;
    this.emit('update', held);
    return 'updated';
  }

  /** Drops every member whose last advert is older than the TTL; returns their ids. */
  expire(): string[] {
    const cutoff = this.now() - this.ttlMs;
    const gone: string[] = [];
    for (const [id, m] of this.members) {
      if (m.lastAdvertAt < cutoff) {
        this.remove(id, `no advert for ${this.ttlMs} ms`);
        gone.push(id);
      }
    }
    return gone;
  }

  remove(id: string, reason: string): void {
    if (this.members.delete(id)) this.emit('leave', { id, reason });
  }

  get(id: string): Member | undefined {
    return this.members.get(id);
  }

  list(): Member[] {
    return [...this.members.values()];
  }

  get size(): number {
    return this.members.size;
  }
}
