import { createPrivateKey, sign, type KeyObject } from 'node:crypto';
import type { PrivateKey } from '@libp2p/interface';
import type { Envelope } from './envelope.ts';

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
