import type { PrivateKey } from '@libp2p/interface';
import { ADVERT_FORMAT, NodeAdvert } from '../spec/index.ts';
import { seal, signedStatement } from '../trust/envelope.ts';

/** The gossip topic adverts travel on. */
export const ADVERT_TOPIC = 'vmesh/adverts/1';
/** Signature domain of adverts. */
const DOMAIN = ADVERT_FORMAT;
/** No honest advert comes near this; a bigger message is refused unread. */
export const MAX_ADVERT_BYTES = 32 * 1024;
/** A free resource that moved by this share of its capacity is news worth an early advert. */
export const CHANGE_THRESHOLD = 0.1;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export async function sealAdvert(key: PrivateKey, advert: NodeAdvert): Promise<Uint8Array> {
  return encoder.encode(JSON.stringify(await seal(key, advert.node, DOMAIN, advert)));
}

/**
 * Checks a received advert: size, envelope signature, schema, and that the node it describes is the
 * node that signed it. Whoever passed it on does not matter: only its signer can have made it. Throws
 * BadEnvelopeError.
 */
export const openAdvert: (bytes: Uint8Array) => Promise<NodeAdvert> = signedStatement(NodeAdvert, DOMAIN, MAX_ADVERT_BYTES, 'advert');

/**
 * The node and seq an advert claims, read without checking its signature (undefined where they cannot be
 * read): enough to skip an advert no newer than the one held, which is most of those a joining node is
 * handed, before spending a signature check on it. Nothing read here is believed otherwise.
 */
export function claimOf(bytes: Uint8Array): { node: string; seq: number } | undefined {
  if (bytes.byteLength > MAX_ADVERT_BYTES) return undefined;
  try {
    const envelope = JSON.parse(decoder.decode(bytes)) as { payload?: unknown };
    if (typeof envelope.payload !== 'string') return undefined;
    const { node, seq } = JSON.parse(envelope.payload) as { node?: unknown; seq?: unknown };
    return typeof node === 'string' && typeof seq === 'number' ? { node, seq } : undefined;
  } catch {
    return undefined;
  }
}

/** Whether `next` says something the mesh should hear before the next regular advert. */
export function changedEnough(prev: NodeAdvert | undefined, next: NodeAdvert): boolean {
  if (prev === undefined) return true;
  for (const k of ['vcpus', 'memoryMiB', 'diskMiB', 'egressMbps', 'ingressMbps'] as const) {
    const cap = next.capacity[k];
    if (cap !== prev.capacity[k]) return true;
    if (cap > 0 && Math.abs(next.free[k] - prev.free[k]) >= CHANGE_THRESHOLD * cap) return true;
  }
  const drivers = (a: NodeAdvert) => a.drivers.map((d) => `${d.name}:${d.available}`).join(',');
  return (
    drivers(prev) !== drivers(next) ||
    prev.addresses.join(',') !== next.addresses.join(',') ||
    JSON.stringify(prev.labels) !== JSON.stringify(next.labels) ||
    JSON.stringify(prev.location) !== JSON.stringify(next.location)
  );
}
