import { EventEmitter } from 'node:events';
import type { NodeAdvert } from '../spec/index.ts';

export interface Member {
  id: string;
  /** The newest signed advert this node has accepted from the member. */
  advert: NodeAdvert;
  /** That advert as its signer sealed it, to hand on to nodes that join (`/vmesh/members/1`). */
  sealed: Uint8Array;
  /** Local clock (ms since the epoch) when the member was first seen and when its last advert came. */
  firstSeenAt: number;
  lastAdvertAt: number;
}

/** A held advert as it is handed on: its sealed bytes, and how long ago it came, by this node's clock. */
export interface HeldAdvert {
  sealed: Uint8Array;
  ageMs: number;
}

interface MembershipEvents {
  join: [Member];
  update: [Member];
  leave: [{ id: string; reason: string }];
}

/** How many TTLs a departed member's last seq is remembered, so that its old adverts cannot bring it back. */
const DEPARTED_TTLS = 10;
/** At most this many departed members are remembered (the oldest go first). */
const MAX_DEPARTED = 10_000;

/**
 * The mesh as this node sees it: the latest verified advert of every other node, dropped when its
 * adverts stop for `ttlMs`. Freshness is judged on this node's own clock, never on the sender's.
 *
 * A signed advert stays valid for ever, so anyone may send an old one again. An advert is only taken if
 * its seq is above the one held, and above the last one of a member that left: a replayed advert can
 * neither roll a member back nor bring a departed one back. An advert handed on by a peer (on join) comes
 * with the age the peer gives it; a lying peer can make it look at most one TTL fresher than it is.
 */
export class Membership extends EventEmitter<MembershipEvents> {
  private readonly members = new Map<string, Member>();
  /** Members that left: the seq of their last advert, and when they left. */
  private readonly departed = new Map<string, { seq: number; at: number }>();

  constructor(
    private readonly ttlMs: number,
    private readonly now: () => number = Date.now,
  ) {
    super();
  }

  /**
   * Takes a verified advert and its sealed bytes, `ageMs` old when it came through another node; returns
   * what it did with it. An advert no newer than the one held, from a member that has left since, or older
   * than the TTL is ignored ('stale').
   */
  accept(advert: NodeAdvert, sealed: Uint8Array, ageMs = 0): 'joined' | 'updated' | 'stale' {
    const now = this.now();
    const age = Math.max(0, ageMs);
    if (age >= this.ttlMs) return 'stale';
    const gone = this.departed.get(advert.node);
    if (gone !== undefined && advert.seq <= gone.seq) return 'stale';
    const at = now - age;
    const held = this.members.get(advert.node);
    if (held === undefined) {
      this.departed.delete(advert.node);
      const member: Member = { id: advert.node, advert, sealed, firstSeenAt: now, lastAdvertAt: at };
      this.members.set(member.id, member);
      this.emit('join', member);
      return 'joined';
    }
    if (advert.seq <= held.advert.seq) return 'stale';
    held.advert = advert;
    held.sealed = sealed;
    held.lastAdvertAt = Math.max(held.lastAdvertAt, at);
    this.emit('update', held);
    return 'updated';
  }

  /** Whether an advert of `node` numbered `seq` would be taken (it is newer than any held or departed). */
  isNews(node: string, seq: number): boolean {
    return seq > (this.members.get(node)?.advert.seq ?? this.departed.get(node)?.seq ?? Number.NEGATIVE_INFINITY);
  }

  /** Drops every member whose last advert is older than the TTL; returns their ids. */
  expire(): string[] {
    const now = this.now();
    const cutoff = now - this.ttlMs;
    const gone: string[] = [];
    for (const [id, m] of this.members) {
      if (m.lastAdvertAt < cutoff) {
        this.remove(id, `no advert for ${this.ttlMs} ms`);
        gone.push(id);
      }
    }
    // Insertion order is departure order: the oldest are first.
    for (const [id, d] of this.departed) {
      if (d.at >= now - DEPARTED_TTLS * this.ttlMs && this.departed.size <= MAX_DEPARTED) break;
      this.departed.delete(id);
    }
    return gone;
  }

  remove(id: string, reason: string): void {
    const m = this.members.get(id);
    if (m === undefined) return;
    this.members.delete(id);
    this.departed.delete(id); // to the end of the departure order
    this.departed.set(id, { seq: m.advert.seq, at: this.now() });
    this.emit('leave', { id, reason });
  }

  get(id: string): Member | undefined {
    return this.members.get(id);
  }

  list(): Member[] {
    return [...this.members.values()];
  }

  /** Every advert held within the TTL, as it is handed on to a node that joins. */
  held(): HeldAdvert[] {
    const now = this.now();
    return this.list()
      .map((m) => ({ sealed: m.sealed, ageMs: now - m.lastAdvertAt }))
      .filter((h) => h.ageMs < this.ttlMs);
  }

  get size(): number {
    return this.members.size;
  }
}
