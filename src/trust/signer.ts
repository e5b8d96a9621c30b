import { createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import type { PrivateKey } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import type { Envelope } from './envelope.ts';

/** SPKI DER header of an ed25519 public key; the 32-byte key follows it. */
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
/** Public keys of recent signers, ready for node:crypto: parsing a peer id and importing its key cost more than the check. */
const publicKeys = new Map<string, KeyObject>();
const MAX_CACHED_KEYS = 4096;

/** Why a signer's name holds no key to check with. */
export class NotAKeyError extends Error {
  override name = 'NotAKeyError';
}

/**
 * The ed25519 public key inside a peer id, imported once and kept. Throws NotAKeyError where `signer` is
 * not a peer id, or not an ed25519 one.
 */
function publicKeyOf(signer: string): KeyObject {
  let key = publicKeys.get(signer);
  if (key !== undefined) return key;
  let publicKey;
  try {
    publicKey = peerIdFromString(signer).publicKey;
  } catch {
    throw new NotAKeyError(`${JSON.stringify(signer.slice(0, 80))} is not a peer id`);
  }
  if (publicKey === undefined || publicKey.type !== 'Ed25519') throw new NotAKeyError('not an ed25519 peer id');
  key = createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, publicKey.raw]), format: 'der', type: 'spki' });
  if (publicKeys.size >= MAX_CACHED_KEYS) publicKeys.delete(publicKeys.keys().next().value!);
  publicKeys.set(signer, key);
  return key;
}

/**
 * Checks an ed25519 signature by the node named `signer` (its key is inside its peer id) synchronously:
 * the same answer as libp2p's verify, without its per-call peer id parse and key import (by CPU profile,
 * most of a remote run's receipt check). Throws NotAKeyError where `signer` names no ed25519 key.
 */
export function verifyEd25519(signer: string, data: Uint8Array, signature: Uint8Array): boolean {
  const key = publicKeyOf(signer);
  return signature.byteLength === 64 && verify(null, data, key, signature);
}

/** PKCS#8 DER header of an ed25519 private key; the 32-byte seed follows it. */
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

/**
 * Signs envelopes with the node's ed25519 key synchronously (node:crypto), so that a receipt can be made in
 * the same turn as the run's end, before anyone hears of it. Signatures are the same as libp2p's, so
 * `open` (and any ed25519 verifier) checks them.
 */
export class EnvelopeSigner {
  private readonly key: KeyObject;

  constructor(
    privateKey: PrivateKey,
    readonly signer: string,
  ) {
    if (privateKey.type !== 'Ed25519') throw new Error(`envelopes are signed with ed25519 keys, not ${privateKey.type}`);
    const seed = privateKey.raw.subarray(0, 32);
    this.key = createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
  }

  seal(domain: string, value: unknown): Envelope {
    const payload = JSON.stringify(value);
    const signature = sign(null, Buffer.from(`${domain}\n${payload}`), this.key);
    return { signer: this.signer, payload, signature: signature.toString('base64') };
  }
}
