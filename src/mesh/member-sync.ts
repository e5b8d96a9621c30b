import type { PeerId, Stream } from '@libp2p/interface';
import { RateLimiter } from '@libp2p/utils';
import type { Logger } from 'pino';
import Type from 'typebox';
import { claimOf, MAX_ADVERT_BYTES, openAdvert } from './adverts.ts';
import { frameChecker, JsonFrames, ProtocolError } from './frames.ts';
import type { MeshHost } from './host.ts';
import type { HeldAdvert, Membership } from './membership.ts';
import type { PeerGuard } from './peer-guard.ts';

/**
 * `/vmesh/members/1`: a node that joins asks a peer for every advert it holds, so that it knows the
 * whole mesh at once instead of as each member's next regular advert comes (10 s by default). The peer
 * answers with a count, then each advert as its signer sealed it with how long ago it came; the asker
 * checks every signature itself, as it does for adverts on the gossip topic. What the asker sends is
 * nothing: the protocol gives out only what the gossip topic carries to everyone anyway.
 */
export const MEMBERS_PROTOCOL = '/vmesh/members/1';
/** At most this many adverts are handed on, and taken, in one answer. */
export const MAX_HANDED_ON = 4096;
/** Asks one peer may make per minute. */
const ASKS_PER_MINUTE = 6;
/** How long one answer may take to arrive whole. */
const ANSWER_TIMEOUT_MS = 10_000;

const encoder = new TextEncoder();
const Count = Type.Object({ count: Type.Integer({ minimum: 0, maximum: MAX_HANDED_ON }) }, { additionalProperties: false });
const Handed = Type.Object(
  { ageMs: Type.Integer({ minimum: 0 }), advert: Type.String({ maxLength: MAX_ADVERT_BYTES }) },
  { additionalProperties: false },
);
const readCount = frameChecker(Count, 'count');
const readHanded = frameChecker(Handed, 'advert');
/** An advert as a JSON string, escapes and all, with its age around it. */
const MAX_FRAME = 2 * MAX_ADVERT_BYTES + 128;

/** Answers `/vmesh/members/1` with `held()`, to any connected peer that is not refused, a few times a minute. */
export async function serveMembers(host: MeshHost, held: () => HeldAdvert[], logger: Logger): Promise<void> {
  const limiter = new RateLimiter({ points: ASKS_PER_MINUTE, duration: 60 });
  const decoder = new TextDecoder();
  await host.handle(
    MEMBERS_PROTOCOL,
    async (stream, connection) => {
      const peer = connection.remotePeer.toString();
      const frames = new JsonFrames(stream, MAX_FRAME);
      try {
        try {
          limiter.consume(peer);
        } catch {
          // Not an offence: an honest node that reconnects often asks often. It learns by gossip meanwhile.
          stream.abort(new Error(`more than ${ASKS_PER_MINUTE} asks a minute`));
          return;
        }
        const adverts = held().slice(0, MAX_HANDED_ON);
        const signal = AbortSignal.timeout(ANSWER_TIMEOUT_MS);
        await frames.write({ count: adverts.length }, signal);
        for (const a of adverts) await frames.write({ ageMs: Math.round(a.ageMs), advert: decoder.decode(a.sealed) }, signal);
        await stream.close();
      } catch (err) {
        logger.debug({ err, peer }, 'members answer ended early');
        stream.abort(err as Error);
      }
    },
    { maxInboundStreams: 4 },
  );
}

export interface MembersTaken {
  /** Adverts the peer handed on. */
  handed: number;
  /** Of those, members this node did not know, and newer adverts of members it did. */
  joined: number;
  updated: number;
}

/**
 * Asks `peer` for the adverts it holds and takes each into `membership` after checking its signature.
 * A peer that hands on a badly signed advert, or breaks the protocol, is an offender: an honest node
 * holds only adverts it has checked. Throws when the peer does not speak the protocol or the ask fails.
 */
export async function askMembers(host: MeshHost, guard: PeerGuard, membership: Membership, self: string, peer: PeerId, signal?: AbortSignal): Promise<MembersTaken> {
  const limit = AbortSignal.timeout(ANSWER_TIMEOUT_MS);
  const both = signal === undefined ? limit : AbortSignal.any([signal, limit]);
  const stream: Stream = await host.dialProtocol(peer, MEMBERS_PROTOCOL, { signal: both });
  const frames = new JsonFrames(stream, MAX_FRAME);
  const taken: MembersTaken = { handed: 0, joined: 0, updated: 0 };
  try {
    const { count } = await frames.read(readCount, both);
    for (let i = 0; i < count; i++) {
      const { ageMs, advert } = await frames.read(readHanded, both);
      taken.handed++;
      const sealed = encoder.encode(advert);
      const claim = claimOf(sealed);
      if (claim !== undefined && !membership.isNews(claim.node, claim.seq)) continue;
      const opened = await openAdvert(sealed).catch((err: Error) => {
        throw new ProtocolError(`handed on a bad advert: ${err.message}`);
      });
      if (opened.node === self) continue;
      const done = membership.accept(opened, sealed, ageMs);
      if (done === 'joined') taken.joined++;
      else if (done === 'updated') taken.updated++;
    }
    await stream.close().catch(() => undefined);
    return taken;
  } catch (err) {
    if (err instanceof ProtocolError) guard.offence(peer.toString(), `${MEMBERS_PROTOCOL}: ${err.message}`);
    stream.abort(err as Error);
    throw err;
  }
}
