import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PeerId, PrivateKey } from '@libp2p/interface';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { InvalidInputError } from '../spec/index.ts';

/** The node's key file under its home: an ed25519 private key in libp2p's protobuf encoding. */
export const IDENTITY_FILE = 'identity.key';

export interface NodeIdentity {
  privateKey: PrivateKey;
  peerId: PeerId;
  /** The peer id as a string: the node id everywhere (API, CLI, store, receipts). */
  id: string;
}

/**
 * Loads the node's ed25519 key from `$home/identity.key`, creating it (mode 0600) at first start. A key
 * file that others can read is made private again; one that is not an ed25519 key is refused rather
 * than replaced, because replacing it would give the node a new identity.
 */
export async function loadOrCreateIdentity(home: string): Promise<NodeIdentity> {
  const file = path.join(home, IDENTITY_FILE);
  if (!existsSync(file)) {
    const key = await generateKeyPair('Ed25519');
    writeFileSync(file, privateKeyToProtobuf(key), { mode: 0o600, flag: 'wx' });
    return identityOf(key);
  }
  if ((statSync(file).mode & 0o077) !== 0) chmodSync(file, 0o600);
  let key: PrivateKey;
  try {
    key = privateKeyFromProtobuf(readFileSync(file));
  } catch (err) {
    throw new InvalidInputError(`${file} is not a libp2p private key (${(err as Error).message}); move it away to make a new identity`, { field: 'identity' });
  }
  if (key.type !== 'Ed25519') throw new InvalidInputError(`${file} holds a ${key.type} key; vmesh node keys are Ed25519`, { field: 'identity' });
  return identityOf(key);
}

function identityOf(privateKey: PrivateKey): NodeIdentity {
  const peerId = peerIdFromPrivateKey(privateKey);
  return { privateKey, peerId, id: peerId.toString() };
}
