import type { PrivateKey } from '@libp2p/interface';
import type { TSchema, Static } from 'typebox';
import { Compile } from 'typebox/compile';
import { explainSchemaErrors, VmeshError, type SchemaError } from '../spec/index.ts';
import { NotAKeyError, verifyEd25519 } from './signer.ts';

/**
 * A signed envelope: JSON bytes, the id of the node that signed them, and its ed25519 signature over
 * the domain and the bytes. The domain ("vmesh-advert/1", "vmesh-receipt/1", ...) keeps a signature made
 * for one purpose from being replayed as another. The signer's public key is inside its peer id, so an
 * envelope can be checked offline with nothing but itself.
 */
export interface Envelope {
  signer: string;
  /** The signed JSON, exactly as signed. */
  payload: string;
  /** base64 of the ed25519 signature over `${domain}\n${payload}`. */
  signature: string;
}

/** An envelope that does not parse, is too big, is not for this domain, or whose signature does not check. */
export class BadEnvelopeError extends VmeshError {
  readonly code = 'bad_signature';
  readonly status = 400;
}

const encoder = new TextEncoder();

function signedBytes(domain: string, payload: string): Uint8Array {
  return encoder.encode(`${domain}\n${payload}`);
}

export async function seal(key: PrivateKey, signer: string, domain: string, value: unknown): Promise<Envelope> {
  const payload = JSON.stringify(value);
  const signature = await key.sign(signedBytes(domain, payload));
  return { signer, payload, signature: Buffer.from(signature).toString('base64') };
}

/**
 * Parses and checks an envelope; returns its signer and its payload parsed as JSON (for the caller to
 * validate against its own schema). Throws BadEnvelopeError for anything else.
 */
export async function open(bytes: Uint8Array | string, domain: string, maxBytes: number): Promise<{ signer: string; value: unknown }> {
  const size = typeof bytes === 'string' ? Buffer.byteLength(bytes) : bytes.byteLength;
  if (size > maxBytes) throw new BadEnvelopeError(`envelope: ${size} bytes, more than the ${maxBytes} allowed`);
  let env: Partial<Envelope>;
  try {
    env = JSON.parse(typeof bytes === 'string' ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8')) as Partial<Envelope>;
  } catch {
    throw new BadEnvelopeError('envelope: not JSON');
  }
  if (env === null || typeof env !== 'object' || typeof env.signer !== 'string' || typeof env.payload !== 'string' || typeof env.signature !== 'string') {
    throw new BadEnvelopeError('envelope: expected {signer, payload, signature} strings');
  }
  const signature = Buffer.from(env.signature, 'base64');
  let good: boolean;
  try {
    good = verifyEd25519(env.signer, signedBytes(domain, env.payload), signature);
  } catch (err) {
    if (err instanceof NotAKeyError) throw new BadEnvelopeError(`envelope.signer: ${err.message}`);
    throw err;
  }
  if (!good) throw new BadEnvelopeError(`envelope.signature: does not verify for ${env.signer} in domain ${domain}`);
  let value: unknown;
  try {
    value = JSON.parse(env.payload);
  } catch {
    throw new BadEnvelopeError('envelope.payload: not JSON');
  }
  return { signer: env.signer, value };
}

/**
 * `open` for statements made by a node about itself (adverts, receipts): the payload must match `schema`,
 * and its `node` field must be the envelope's signer, so that nobody can sign a statement in another
 * node's name. Throws BadEnvelopeError.
 */
export function signedStatement<S extends TSchema>(schema: S, domain: string, maxBytes: number, what: string) {
  const check = Compile(schema);
  return async (bytes: Uint8Array | string): Promise<Static<S>> => {
    const { signer, value } = await open(bytes, domain, maxBytes);
    if (!check.Check(value)) {
      const { message } = explainSchemaErrors([...check.Errors(value)] as SchemaError[], value, what);
      throw new BadEnvelopeError(message);
    }
    const node = (value as { node?: unknown }).node;
    if (node !== signer) throw new BadEnvelopeError(`${what}.node: ${String(node)} is not its signer ${signer}`);
    return value;
  };
}
